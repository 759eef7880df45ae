//! The daemon's HTTP side: the job API, live logs, `/metrics`, the web page, and SsalgTen's
//! updater contract on the same port.
//!
//! Every route but `/health` wants the token: `Authorization: Bearer <token>`, or the
//! `coffer_token` cookie the page sets when opened as `/?token=<token>`. Tokens are compared as
//! SHA-256 digests in constant time, so neither a token's length nor its first wrong byte shows
//! in the time an answer takes. The updater's routes take `X-Updater-Token` the same way. Every
//! answer is JSON but logs (text, or a stream of server-sent events).

// Handlers answer early with a ready `Response` as their error, axum's idiom.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::jobs::{Job, KINDS};
use super::{submit, Daemon};

type D = State<Arc<Daemon>>;

pub fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Whether `given` is the token whose digest is `want`: constant time, whatever `given` is.
pub fn token_matches(want: &Option<[u8; 32]>, given: Option<&str>) -> bool {
    let given = digest(given.unwrap_or("").as_bytes());
    match want {
        Some(w) => bool::from(w.ct_eq(&given)),
        None => {
            // No token configured: nothing matches, after the same work.
            let _ = [0u8; 32].ct_eq(&given);
            false
        }
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("coffer_token="))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn json_error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

/// `Ok` when the request carries the API token.
fn auth(d: &Daemon, headers: &HeaderMap) -> Result<(), Response> {
    let given = bearer(headers).or_else(|| cookie_token(headers));
    if token_matches(&d.token, given) {
        Ok(())
    } else {
        Err(json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized: send Authorization: Bearer <token> (the token in [serve] token_file)",
        ))
    }
}

pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/", get(page))
        .route("/api/v1/apps", get(apps))
        .route("/api/v1/snapshots", get(snapshots))
        .route("/api/v1/jobs", get(list_jobs).post(create_job))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/api/v1/jobs/{id}/log", get(job_log))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/update", post(updater_update))
        .route("/jobs", get(updater_jobs))
        .route("/jobs/{id}", get(updater_log))
        .fallback(not_found)
        .with_state(d)
}

/// Unknown routes: 401 without the token too (nothing about the routes shows without it).
async fn not_found(State(d): D, headers: HeaderMap) -> Response {
    match auth(&d, &headers) {
        Ok(()) => json_error(StatusCode::NOT_FOUND, "no such route"),
        Err(r) => r,
    }
}

/// `{"ok":true}`: the daemon runs (also the updater's own health answer).
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "ok": true }))
}

#[derive(serde::Deserialize)]
struct PageQuery {
    token: Option<String>,
}

const PAGE: &str = include_str!("page.html");

/// The page; `/?token=…` sets the token as a same-site, HTTP-only cookie and redirects to `/`.
async fn page(State(d): D, headers: HeaderMap, Query(q): Query<PageQuery>) -> Response {
    if let Some(t) = q.token {
        if !token_matches(&d.token, Some(&t)) {
            return json_error(StatusCode::UNAUTHORIZED, "unauthorized: wrong token");
        }
        let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
        let cookie = format!("coffer_token={t}; HttpOnly; SameSite=Strict; Path=/");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        return r;
    }
    if let Err(r) = auth(&d, &headers) {
        return r;
    }
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

/// Each app with its schedules, snapshots and last jobs of each kind.
async fn apps(State(d): D, headers: HeaderMap) -> Response {
    if let Err(r) = auth(&d, &headers) {
        return r;
    }
    let facts = d.facts.lock().unwrap().clone();
    let drills = coffer::ops::drill::recorded(&d.cache, &d.repo);
    let jobs: Vec<_> = d.jobs.all().iter().map(|j| j.snapshot()).collect();
    let mut out = vec![];
    for (name, app) in &d.config.apps {
        let last = |kind: &str| {
            jobs.iter()
                .rev()
                .find(|j| j.app.as_deref() == Some(name) && j.kind == kind)
                .cloned()
        };
        let schedules: Vec<_> = d
            .schedules
            .list
            .iter()
            .filter(|s| s.app.as_deref() == Some(name))
            .map(|s| json!({ "kind": s.kind, "cron": s.cron.text(), "time_zone": s.cron.tz.to_string(), "next": *s.next.lock().unwrap() }))
            .collect();
        out.push(json!({
            "name": name,
            "plugin": app.plugin,
            "dir": app.dir,
            "snapshots": facts.snapshots.get(name).copied().unwrap_or(0),
            "last_backup": last("backup"),
            "last_drill_job": last("drill"),
            "last_upgrade": last("upgrade"),
            "drill": drills.apps.get(name).and_then(|a| a.last.clone()),
            "schedules": schedules,
            "busy": jobs.iter().any(|j| j.app.as_deref() == Some(name) && !j.state.done()),
        }));
    }
    Json(json!({ "apps": out, "stored_bytes": facts.stored_bytes })).into_response()
}

#[derive(serde::Deserialize)]
struct SnapQuery {
    app: Option<String>,
}

async fn snapshots(State(d): D, headers: HeaderMap, Query(q): Query<SnapQuery>) -> Response {
    if let Err(r) = auth(&d, &headers) {
        return r;
    }
    let repo = d.repo.clone();
    let list = tokio::task::spawn_blocking(move || repo.list_snapshots()).await;
    match list {
        Ok(Ok(list)) => {
            let v: Vec<_> = list
                .into_iter()
                .filter_map(|(id, s)| s.ok().map(|s| (id, s)))
                .filter(|(_, s)| q.app.is_none() || s.app == q.app)
                .map(|(id, s)| json!({ "id": id.to_hex(), "time": s.time, "app": s.app, "host": s.hostname, "tags": s.tags, "summary": s.summary }))
                .collect();
            Json(json!({ "snapshots": v })).into_response()
        }
        Ok(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn list_jobs(State(d): D, headers: HeaderMap) -> Response {
    if let Err(r) = auth(&d, &headers) {
        return r;
    }
    let jobs: Vec<_> = d.jobs.all().iter().rev().map(|j| j.snapshot()).collect();
    Json(json!({ "jobs": jobs })).into_response()
}

#[derive(serde::Deserialize)]
struct NewJob {
    kind: String,
    app: Option<String>,
    #[serde(default)]
    args: serde_json::Value,
}

async fn create_job(State(d): D, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = auth(&d, &headers) {
        return r;
    }
    let req: NewJob = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("the body must be {{\"kind\", \"app\", \"args\"}}: {e}"),
            )
        }
    };
    if !KINDS.contains(&req.kind.as_str()) {
        return json_error(
            StatusCode::BAD_REQUEST,
            &format!("kind '{}' is not one of {}", req.kind, KINDS.join(", ")),
        );
    }
    let repo_wide = matches!(req.kind.as_str(), "check" | "prune");
    match (&req.app, repo_wide) {
        (Some(a), false) if d.config.apps.contains_key(a) => {}
        (None, true) => {}
        (Some(a), false) => {
            return json_error(
                StatusCode::NOT_FOUND,
                &format!("no app '{a}' in coffer.toml"),
            )
        }
        (None, false) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("a {} job needs an app", req.kind),
            )
        }
        (Some(_), true) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "a {} job is for the whole repository: give no app",
                    req.kind
                ),
            )
        }
    }
    if d.shutdown.load(std::sync::atomic::Ordering::SeqCst) {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping");
    }
    let args = if req.args.is_null() {
        json!({})
    } else {
        req.args
    };
    match submit(&d, &req.kind, req.app, args, "api", true) {
        Ok(job) => (StatusCode::ACCEPTED, Json(json!(job.snapshot()))).into_response(),
        Err(busy) => (
            StatusCode::CONFLICT,
            Json(json!({ "error": format!("{} is busy with job {} ({})", busy.0.app.as_deref().unwrap_or("the repository"), busy.0.id, busy.0.kind), "job": busy.0 })),
        )
            .into_response(),
    }
}

fn find(d: &Daemon, id: &str) -> Result<Arc<Job>, Response> {
    d.jobs
        .get(id)
        .ok_or_else(|| json_error(StatusCode::NOT_FOUND, &format!("no job {id}")))
}

async fn get_job(State(d): D, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = auth(&d, &headers) {
        return r;
    }
    match find(&d, &id) {
        Ok(j) => Json(json!(j.snapshot())).into_response(),
        Err(r) => r,
    }
}

async fn cancel_job(State(d): D, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = auth(&d, &headers) {
        return r;
    }
    match find(&d, &id) {
        Ok(j) => {
            if j.snapshot().state.done() {
                return json_error(StatusCode::CONFLICT, &format!("job {id} has ended"));
            }
            j.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
            j.counters
                .cancel
                .store(true, std::sync::atomic::Ordering::SeqCst);
            j.line(&format!(
                "{} coffer: cancel asked: stopping at the next safe point",
                chrono::Utc::now().format("%H:%M:%S")
            ));
            (StatusCode::ACCEPTED, Json(json!(j.snapshot()))).into_response()
        }
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
struct TailQuery {
    tail: Option<String>,
}

/// The last `tail` lines (0: all).
fn tail_of(lines: Vec<String>, tail: usize) -> String {
    let from = if tail == 0 {
        0
    } else {
        lines.len().saturating_sub(tail)
    };
    let mut s = lines[from..].join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// A job's log: text (`?tail=N`), or live as server-sent events (`Accept: text/event-stream`):
/// one `data:` per line, then an `end` event with the job.
async fn job_log(
    State(d): D,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TailQuery>,
) -> Response {
    if let Err(r) = auth(&d, &headers) {
        return r;
    }
    let job = match find(&d, &id) {
        Ok(j) => j,
        Err(r) => return r,
    };
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !sse {
        let tail = q.tail.and_then(|t| t.parse().ok()).unwrap_or(0);
        return text(tail_of(job.lines_from(0), tail));
    }
    let rx = job.changed.subscribe();
    let stream = futures_util::stream::unfold(
        (job, rx, 0usize, false),
        |(job, mut rx, sent, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let lines = job.lines_from(sent);
                if !lines.is_empty() {
                    let n = lines.len();
                    let ev = Event::default().data(lines.join("\n"));
                    return Some((Ok::<_, Infallible>(ev), (job, rx, sent + n, false)));
                }
                let st = job.snapshot();
                if st.state.done() {
                    let ev = Event::default().event("end").data(json!(st).to_string());
                    return Some((Ok(ev), (job, rx, sent, true)));
                }
                // Woken by a new line or the end; a timeout guards against a missed wake-up.
                let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Prometheus' text format.
async fn metrics(State(d): D, headers: HeaderMap) -> Response {
    if let Err(r) = auth(&d, &headers) {
        return r;
    }
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            if labels.is_empty() {
                out.push_str(&format!("{name} {value}\n"));
            } else {
                out.push_str(&format!("{name}{{{labels}}} {value}\n"));
            }
        }
    };
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let lk = |app: &str, kind: &str| format!("app=\"{}\",kind=\"{}\"", esc(app), esc(kind));
    let (kinds, bytes_read, bytes_added, rollbacks) = {
        let m = d.metrics.lock().unwrap();
        let kinds: Vec<_> = m
            .kinds
            .iter()
            .map(|((a, k), s)| {
                (
                    a.clone(),
                    k.clone(),
                    s.runs,
                    s.failures,
                    s.last_duration,
                    s.last_success,
                )
            })
            .collect();
        (kinds, m.bytes_read, m.bytes_added, m.rollbacks.clone())
    };
    family(
        "coffer_build_info",
        "gauge",
        "The coffer version serving.",
        vec![(
            format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
            "1".into(),
        )],
    );
    family(
        "coffer_start_time_seconds",
        "gauge",
        "When the daemon started (Unix time).",
        vec![(String::new(), d.started.timestamp().to_string())],
    );
    family(
        "coffer_job_runs_total",
        "counter",
        "Jobs ended, per app and kind.",
        kinds
            .iter()
            .map(|k| (lk(&k.0, &k.1), k.2.to_string()))
            .collect(),
    );
    family(
        "coffer_job_failures_total",
        "counter",
        "Jobs that did not succeed (failed, rolled back or cancelled), per app and kind.",
        kinds
            .iter()
            .map(|k| (lk(&k.0, &k.1), k.3.to_string()))
            .collect(),
    );
    family(
        "coffer_job_duration_seconds",
        "gauge",
        "How long the last job of each app and kind took.",
        kinds
            .iter()
            .map(|k| (lk(&k.0, &k.1), format!("{:.3}", k.4)))
            .collect(),
    );
    family(
        "coffer_last_success_timestamp_seconds",
        "gauge",
        "When the last successful job of each app and kind ended (Unix time).",
        kinds
            .iter()
            .filter_map(|k| k.5.map(|t| (lk(&k.0, &k.1), t.to_string())))
            .collect(),
    );
    family(
        "coffer_read_bytes_total",
        "counter",
        "Bytes read by backups since the daemon started.",
        vec![(String::new(), bytes_read.to_string())],
    );
    family(
        "coffer_added_bytes_total",
        "counter",
        "Bytes backups added to the repository since the daemon started.",
        vec![(String::new(), bytes_added.to_string())],
    );
    family(
        "coffer_rollbacks_total",
        "counter",
        "Upgrades that failed and were rolled back, per app.",
        rollbacks
            .iter()
            .map(|(a, n)| (format!("app=\"{}\"", esc(a)), n.to_string()))
            .collect(),
    );
    let facts = d.facts.lock().unwrap().clone();
    family(
        "coffer_snapshots",
        "gauge",
        "Snapshots in the repository, per app.",
        facts
            .snapshots
            .iter()
            .map(|(a, n)| (format!("app=\"{}\"", esc(a)), n.to_string()))
            .collect(),
    );
    family(
        "coffer_repository_size_bytes",
        "gauge",
        "Bytes stored in the repository's packs.",
        vec![(String::new(), facts.stored_bytes.to_string())],
    );
    let drills = coffer::ops::drill::recorded(&d.cache, &d.repo);
    family(
        "coffer_last_drill_timestamp_seconds",
        "gauge",
        "When the last drill of each app ended (Unix time), and whether it passed.",
        drills
            .apps
            .iter()
            .filter_map(|(a, r)| {
                let last = r.last.as_ref()?;
                let t = chrono::DateTime::parse_from_rfc3339(&last.at)
                    .ok()?
                    .timestamp();
                Some((
                    format!("app=\"{}\",ok=\"{}\"", esc(a), last.ok),
                    t.to_string(),
                ))
            })
            .collect(),
    );
    family(
        "coffer_schedule_next_run_timestamp_seconds",
        "gauge",
        "When each schedule fires next (Unix time).",
        d.schedules
            .list
            .iter()
            .filter_map(|s| {
                let next = (*s.next.lock().unwrap())?;
                Some((
                    lk(super::jobs::key_of(s.app.as_deref()), &s.kind),
                    next.timestamp().to_string(),
                ))
            })
            .collect(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

// SsalgTen's updater contract (docs/SERVE.md): the shapes its backend and admin page expect.

fn updater_auth(d: &Daemon, headers: &HeaderMap) -> Result<String, Response> {
    let Some(u) = &d.config.serve.updater else {
        return Err(json_error(
            StatusCode::NOT_FOUND,
            "no [serve.updater] in coffer.toml",
        ));
    };
    let given = headers.get("x-updater-token").and_then(|v| v.to_str().ok());
    if token_matches(&d.updater_token, given) {
        Ok(u.app.clone())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "unauthorized" })),
        )
            .into_response())
    }
}

async fn updater_update(State(d): D, headers: HeaderMap, body: Bytes) -> Response {
    let app = match updater_auth(&d, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    if body.len() > 1 << 20 {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({ "error": "payload too large" })),
        )
            .into_response();
    }
    let req: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({ "error": "invalid json" })),
                )
                    .into_response()
            }
        }
    };
    let to = ["version", "tag", "to"]
        .iter()
        .find_map(|k| req[*k].as_str().map(str::to_string))
        .or_else(|| d.config.serve.updater.as_ref().and_then(|u| u.to.clone()));
    let Some(to) = to else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "started": false, "error": "no version to update to: send {\"version\": \"…\"} or set `to` under [serve.updater]" })),
        )
            .into_response();
    };
    match submit(&d, "upgrade", Some(app), json!({ "to": to }), "updater", true) {
        Ok(job) => {
            let st = job.snapshot();
            (StatusCode::ACCEPTED, Json(json!({ "started": true, "job": { "id": st.id, "logfile": st.logfile } }))).into_response()
        }
        Err(busy) => (
            StatusCode::CONFLICT,
            Json(json!({ "started": false, "error": "an update is already running", "job": { "id": busy.0.id, "logfile": busy.0.logfile } })),
        )
            .into_response(),
    }
}

async fn updater_jobs(State(d): D, headers: HeaderMap) -> Response {
    if let Err(r) = updater_auth(&d, &headers) {
        return r;
    }
    let mut jobs = vec![];
    if let Ok(dir) = std::fs::read_dir(&d.jobs.dir) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".log") else {
                continue;
            };
            let Ok(meta) = e.metadata() else { continue };
            let updated: chrono::DateTime<chrono::Utc> = meta
                .modified()
                .map(Into::into)
                .unwrap_or_else(|_| chrono::Utc::now());
            jobs.push(json!({ "id": id, "sizeBytes": meta.len(), "updatedAt": updated.to_rfc3339_opts(chrono::SecondsFormat::Millis, true) }));
        }
    }
    jobs.sort_by(|a, b| b["id"].as_str().cmp(&a["id"].as_str()));
    Json(json!({ "success": true, "jobs": jobs })).into_response()
}

async fn updater_log(
    State(d): D,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TailQuery>,
) -> Response {
    if let Err(r) = updater_auth(&d, &headers) {
        return r;
    }
    if !(8..=20).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_digit()) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "success": false, "error": "invalid_job_id" })),
        )
            .into_response();
    }
    let tail = q
        .tail
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(500)
        .min(5000);
    let lines = match d.jobs.get(&id) {
        Some(j) => j.lines_from(0),
        None => match std::fs::read_to_string(d.jobs.dir.join(format!("{id}.log"))) {
            Ok(t) => t.lines().map(str::to_string).collect(),
            Err(_) => {
                return (
                    StatusCode::NOT_FOUND,
                    Json(json!({ "success": false, "error": "log not found" })),
                )
                    .into_response()
            }
        },
    };
    text(tail_of(lines, tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_digest() {
        let want = Some(digest(b"a-long-enough-token-1234"));
        assert!(token_matches(&want, Some("a-long-enough-token-1234")));
        assert!(!token_matches(&want, Some("a-long-enough-token-1235")));
        assert!(!token_matches(&want, Some("")));
        assert!(!token_matches(&want, None));
        assert!(!token_matches(&None, Some("")));
    }

    #[test]
    fn tails() {
        let l = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(tail_of(l(5), 2), "3\n4\n");
        assert_eq!(tail_of(l(3), 0), "0\n1\n2\n");
        assert_eq!(tail_of(l(0), 3), "");
    }
}
