//! `coffer serve`, as a process driven over HTTP: schedules (with the daemon's clock set a few
//! seconds before a slot), the job API and its 409, the token on every route, live logs over
//! server-sent events, `/metrics` through Prometheus' own `promtool`, SsalgTen's updater
//! contract ending in a rollback, the web page in headless Chromium, and SIGTERM mid-backup.
//! The app is xianyu on its simulator (examples/xianyu/xianyu_sim.py).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "test-token-0123456789abcdef";
const UPDATER_TOKEN: &str = "updater-token-0123456789";

struct Daemon {
    child: Child,
    port: u16,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    fn start(env: &Env, cfg: &Path, extra_env: &[(&str, &str)]) -> Daemon {
        let port = coffer_testkit::free_port();
        let mut cmd = env.cmd(&[
            "--config",
            cfg.to_str().unwrap(),
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ]);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let l2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l2.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let d = Daemon { child, port, log };
        let begun = Instant::now();
        while d.get("/health", None).map(|r| r.0) != Some(200) {
            assert!(
                begun.elapsed() < Duration::from_secs(30),
                "serve did not answer: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into()
    }

    /// (status, body) of a GET with the API token (`Some`) or none.
    fn get(&self, path: &str, token: Option<&str>) -> Option<(u16, String)> {
        let mut req = Self::agent().get(&self.url(path));
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut r = req.call().ok()?;
        let status = r.status().as_u16();
        Some((status, r.body_mut().read_to_string().unwrap_or_default()))
    }

    fn api(&self, path: &str) -> serde_json::Value {
        let (s, b) = self.get(path, Some(TOKEN)).unwrap();
        assert_eq!(s, 200, "{path}: {b}");
        serde_json::from_str(&b).unwrap()
    }

    fn post(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = Self::agent()
            .post(&self.url(path))
            .header("Content-Type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut r = req.send(body).unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap_or_default())
    }

    fn job(&self, kind: &str, app: Option<&str>) -> (u16, serde_json::Value) {
        let body = serde_json::json!({ "kind": kind, "app": app }).to_string();
        let (s, b) = self.post(
            "/api/v1/jobs",
            &body,
            &[("Authorization", &format!("Bearer {TOKEN}"))],
        );
        (s, serde_json::from_str(&b).unwrap_or_default())
    }

    /// The first job the daemon has, polled every 20 ms until `limit` has passed since `begun`.
    fn first_job(&self, begun: Instant, limit: Duration) -> serde_json::Value {
        loop {
            let jobs = self.api("/api/v1/jobs");
            if let Some(j) = jobs["jobs"].as_array().unwrap().first() {
                return j.clone();
            }
            assert!(
                begun.elapsed() < limit,
                "no job after {limit:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_job(&self, id: &str, limit: Duration) -> serde_json::Value {
        let begun = Instant::now();
        loop {
            let j = self.api(&format!("/api/v1/jobs/{id}"));
            if !matches!(j["state"].as_str(), Some("queued" | "running")) {
                return j;
            }
            assert!(
                begun.elapsed() < limit,
                "job {id} still {}: {}",
                j["state"],
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn sigterm(&mut self) -> Duration {
        let begun = Instant::now();
        nix_kill(self.child.id(), "TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited {status:?}: {}", self.log());
        begun.elapsed()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nix_kill(pid: u32, sig: &str) {
    Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
}

/// coffer.toml: app xianyu (its simulator on `port`) and `[serve]` with `extra` appended.
fn config(env: &Env, app: &Path, port: u16, app_extra: &str, extra: &str) -> PathBuf {
    let token = env.path("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::write(env.path("updater-token"), format!("{UPDATER_TOKEN}\n")).unwrap();
    let p = env.path("coffer.toml");
    std::fs::write(
        &p,
        format!(
            "[apps.xianyu]\nplugin = \"xianyu\"\ndir = \"{dir}\"\n[apps.xianyu.settings]\nhealth_url = \"http://127.0.0.1:{port}/health\"\nstop_command = \"python3 {sim} stop .\"\nstart_command = \"python3 {sim} start . --port {port}\"\nupgrade_command = \"python3 {sim} upgrade . --to {{version}} --port {port}\"\n[apps.xianyu.grants]\nprograms = [\"python3\"]\nhttp = [\"http://127.0.0.1:{port}\"]\n[apps.xianyu.upgrade]\nchecks = 2\ninterval_secs = 1\nstart_secs = 5\n{app_extra}\n[serve]\ntoken_file = \"token\"\n{extra}\n",
            dir = app.display(),
            sim = sim().display(),
        ),
    )
    .unwrap();
    p
}

/// The schedule fires on time: the daemon's clock is set four seconds before a minute's start,
/// so `* * * * *` fires about four seconds after the daemon starts, not before. A second
/// trigger while it runs gets 409. A missed run (the last one recorded two days ago) runs once
/// when the daemon starts.
#[test]
fn a_schedule_fires_on_time_overlaps_are_refused_and_a_missed_run_runs_once() {
    let env = Env::new();
    let (app, port, _server) = running_app(&env, 2000, 400);
    let cfg = config(
        &env,
        &app,
        port,
        "[[apps.xianyu.schedule]]\nkind = \"backup\"\ncron = \"* * * * *\"\n",
        "",
    );
    // The daemon's clock four seconds (whole) before a minute's start; the slot in real time:
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let now = now_ms / 1000;
    let offset = 60 - now % 60 - 4;
    let slot_daemon_ms = ((now_ms + offset * 1000) / 60_000 + 1) * 60_000;
    let slot_in = Duration::from_millis((slot_daemon_ms - offset * 1000 - now_ms) as u64);
    let started = Instant::now();
    let d = Daemon::start(
        &env,
        &cfg,
        &[("COFFER_CLOCK_OFFSET_SECS", &offset.to_string())],
    );
    let fired = d.first_job(started, Duration::from_secs(20));
    let fired = (fired, started.elapsed());
    let late = fired.1.as_secs_f64() - slot_in.as_secs_f64();
    eprintln!(
        "the schedule's slot came {:.2} s after start; the job appeared {late:+.3} s from it",
        slot_in.as_secs_f64()
    );
    assert!(
        late > -0.05 && late < 1.5,
        "fired {late:+.3} s from its slot"
    );
    assert_eq!(fired.0["trigger"], "schedule");
    // While it runs, another backup of the app is refused.
    // (The scheduled backup of 45 MB takes a good part of a second; this comes milliseconds
    // after it appeared.)
    let (status, body) = d.job("backup", Some("xianyu"));
    let id = fired.0["id"].as_str().unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["job"]["id"], id, "{body}");
    let j = d.wait_job(id, Duration::from_secs(120));
    assert_eq!(j["state"], "succeeded", "{j}");
    assert!(j["snapshot"].is_string());
    drop(d);

    // Two days away: the state says it last ran then; one run at start, not one per minute missed.
    let state = env
        .cache
        .read_dir()
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("schedules.json"))
        .find(|p| p.exists())
        .expect("the schedule state is kept");
    let text = std::fs::read_to_string(&state).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let two_days_ago = chrono::Utc::now() - chrono::Duration::days(2);
    for (_, t) in v.as_object_mut().unwrap() {
        *t = two_days_ago.to_rfc3339().into();
    }
    std::fs::write(&state, v.to_string()).unwrap();
    // The next slot is far (a minute's start is 40+ s away): only the missed run can fire.
    let now = chrono::Utc::now().timestamp();
    let offset = 60 - now % 60 - 50;
    let d = Daemon::start(
        &env,
        &cfg,
        &[("COFFER_CLOCK_OFFSET_SECS", &offset.to_string())],
    );
    let begun = Instant::now();
    let missed = d.first_job(begun, Duration::from_secs(10));
    assert_eq!(missed["trigger"], "missed");
    d.wait_job(missed["id"].as_str().unwrap(), Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        d.api("/api/v1/jobs")["jobs"].as_array().unwrap().len(),
        1,
        "one run for all missed slots"
    );
    assert!(d.log().contains("missed"), "{}", d.log());
}

/// Every route but /health wants the token; a wrong token is refused in about the time a right
/// one is (figures printed: the comparison is of SHA-256 digests in constant time).
#[test]
fn without_the_token_every_route_but_health_is_401() {
    let env = Env::new();
    let app = generated_app(&env, 50, 1);
    let cfg = config(&env, &app, coffer_testkit::free_port(), "", "");
    let d = Daemon::start(&env, &cfg, &[]);
    assert_eq!(
        d.get("/health", None).unwrap(),
        (200, "{\"ok\":true}".into())
    );
    for path in [
        "/metrics",
        "/",
        "/api/v1/apps",
        "/api/v1/jobs",
        "/api/v1/jobs/1",
        "/api/v1/jobs/1/log",
        "/api/v1/snapshots",
        "/nope",
    ] {
        for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
            let (s, b) = d.get(path, token).unwrap();
            assert_eq!(s, 401, "{path} with {token:?}: {b}");
        }
    }
    let (s, _) = d.post(
        "/api/v1/jobs",
        "{\"kind\":\"backup\",\"app\":\"xianyu\"}",
        &[],
    );
    assert_eq!(s, 401);
    let (s, _) = d.post(
        "/api/v1/jobs/1/cancel",
        "",
        &[("Authorization", "Bearer nope")],
    );
    assert_eq!(s, 401);
    assert_eq!(d.get("/api/v1/apps", Some(TOKEN)).unwrap().0, 200);
    // The updater's routes are not configured here: 404 whatever the token.
    assert_eq!(
        d.post("/update", "{}", &[("X-Updater-Token", UPDATER_TOKEN)])
            .0,
        404
    );

    // Timing: the median of 300 requests each, wrong in the first byte, wrong in the last, and
    // right (same route, so the same work after the check but the answer), interleaved so a
    // change in the machine's load touches all three alike.
    let mut first = TOKEN.to_string();
    first.replace_range(0..1, "X");
    let mut last = TOKEN.to_string();
    last.pop();
    last.push('X');
    let mut times: [Vec<Duration>; 3] = Default::default();
    for _ in 0..300 {
        for (i, token) in [&first, &last, &TOKEN.to_string()].into_iter().enumerate() {
            let t = Instant::now();
            d.get("/api/v1/jobs/none", Some(token)).unwrap();
            times[i].push(t.elapsed());
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let [mut f, mut l, mut r] = times;
    let (wf, wl, right) = (median(&mut f), median(&mut l), median(&mut r));
    eprintln!(
        "median answer: wrong first byte {:.0} µs, wrong last byte {:.0} µs, right token (404) {:.0} µs",
        wf.as_secs_f64() * 1e6,
        wl.as_secs_f64() * 1e6,
        right.as_secs_f64() * 1e6
    );
    let ratio = wf.as_secs_f64().max(wl.as_secs_f64()) / wf.as_secs_f64().min(wl.as_secs_f64());
    assert!(ratio < 2.0, "wrong tokens answered in {wf:?} and {wl:?}");
}

/// A live log over SSE gets lines while the backup runs, then an `end` event with the result.
#[test]
fn a_live_log_streams_while_a_backup_runs_and_ends_with_its_result() {
    let env = Env::new();
    let (app, port, _server) = running_app(&env, 5000, 800);
    let cfg = config(&env, &app, port, "", "");
    let d = Daemon::start(&env, &cfg, &[]);
    let (s, j) = d.job("backup", Some("xianyu"));
    assert_eq!(s, 202, "{j}");
    let id = j["id"].as_str().unwrap().to_string();
    let mut r = Daemon::agent()
        .get(&d.url(&format!("/api/v1/jobs/{id}/log")))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .header("Accept", "text/event-stream")
        .call()
        .unwrap();
    assert!(r
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    // (event name, data) per `data:` line; a log batch may span several.
    let mut events: Vec<(String, String)> = vec![];
    let mut running_seen = false;
    let mut reader = BufReader::new(r.body_mut().as_reader());
    let (mut line, mut name) = (String::new(), "data".to_string());
    while reader.read_line(&mut line).unwrap() > 0 {
        let l = line.trim_end().to_string();
        line.clear();
        if let Some(n) = l.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(data) = l.strip_prefix("data: ") {
            if name == "data" && !running_seen {
                running_seen = d.api(&format!("/api/v1/jobs/{id}"))["state"] == "running";
            }
            events.push((name.clone(), data.to_string()));
        } else if l.is_empty() {
            name = "data".into();
        }
    }
    let lines: Vec<&str> = events
        .iter()
        .filter(|e| e.0 == "data")
        .map(|e| e.1.as_str())
        .collect();
    assert!(
        running_seen,
        "lines arrived while the backup ran: {events:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("backup of xianyu started")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("snapshot") && l.contains("saved")),
        "{lines:?}"
    );
    let end = events.last().expect("events");
    assert_eq!(end.0, "end", "{events:?}");
    let job: serde_json::Value = serde_json::from_str(&end.1).unwrap();
    assert_eq!(
        (job["state"].as_str(), job["exit_code"].as_i64()),
        (Some("succeeded"), Some(0))
    );
    // The text form, tailed.
    let (s, text) = d
        .get(&format!("/api/v1/jobs/{id}/log?tail=1"), Some(TOKEN))
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("succeeded"), "{text}");
}

fn promtool() -> PathBuf {
    let p = PathBuf::from("/usr/bin/promtool");
    assert!(
        p.exists(),
        "this test needs promtool (Debian's `prometheus` package; .ci/run installs it)"
    );
    p
}

fn metric(text: &str, name_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_labels) && l[name_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `/metrics` passes `promtool check metrics`, and its figures are those of the jobs run.
#[test]
fn metrics_parse_with_promtool_and_match_the_jobs() {
    let env = Env::new();
    let (app, port, _server) = running_app(&env, 500, 5);
    let cfg = config(
        &env,
        &app,
        port,
        "[[apps.xianyu.schedule]]\nkind = \"drill\"\ncron = \"0 3 * * *\"\n",
        "[[serve.schedule]]\nkind = \"check\"\ncron = \"0 4 * * 0\"\n",
    );
    let d = Daemon::start(&env, &cfg, &[]);
    for kind in ["backup", "backup", "drill"] {
        let (s, j) = d.job(kind, Some("xianyu"));
        assert_eq!(s, 202, "{j}");
        let j = d.wait_job(j["id"].as_str().unwrap(), Duration::from_secs(120));
        assert_eq!(j["state"], "succeeded", "{j}");
    }
    let (s, j) = d.job("check", None);
    assert_eq!(s, 202, "{j}");
    d.wait_job(j["id"].as_str().unwrap(), Duration::from_secs(120));
    let (s, text) = d.get("/metrics", Some(TOKEN)).unwrap();
    assert_eq!(s, 200);
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let m = |k: &str| metric(&text, k).unwrap_or_else(|| panic!("{k} missing:\n{text}"));
    assert_eq!(
        m("coffer_job_runs_total{app=\"xianyu\",kind=\"backup\"}"),
        2.0
    );
    assert_eq!(
        m("coffer_job_failures_total{app=\"xianyu\",kind=\"backup\"}"),
        0.0
    );
    assert_eq!(
        m("coffer_job_runs_total{app=\"xianyu\",kind=\"drill\"}"),
        1.0
    );
    assert_eq!(
        m("coffer_job_runs_total{app=\"repository\",kind=\"check\"}"),
        1.0
    );
    assert_eq!(m("coffer_snapshots{app=\"xianyu\"}"), 2.0);
    assert!(m("coffer_read_bytes_total") > 0.0 && m("coffer_added_bytes_total") > 0.0);
    assert!(m("coffer_repository_size_bytes") > 0.0);
    let now = chrono::Utc::now().timestamp() as f64;
    let last = m("coffer_last_success_timestamp_seconds{app=\"xianyu\",kind=\"backup\"}");
    assert!((now - last).abs() < 120.0);
    assert!(
        text.contains("coffer_last_drill_timestamp_seconds{app=\"xianyu\",ok=\"true\"}"),
        "{text}"
    );
    assert!(m("coffer_schedule_next_run_timestamp_seconds{app=\"xianyu\",kind=\"drill\"}") > now);
    assert!(
        m("coffer_schedule_next_run_timestamp_seconds{app=\"repository\",kind=\"check\"}") > now
    );
    assert!(text.contains("coffer_build_info{version="));
}

/// SsalgTen's updater contract: the requests its backend sends, answered in its shapes; an
/// update whose new version fails health ends rolled back, and its log says so last.
#[test]
fn the_updater_contract_runs_a_guarded_upgrade_that_rolls_back() {
    let env = Env::new();
    let (app, port, _server) = running_app(&env, 300, 3);
    let cfg = config(
        &env,
        &app,
        port,
        "",
        "[serve.updater]\napp = \"xianyu\"\ntoken_file = \"updater-token\"\nto = \"2.0-broken\"\n",
    );
    let d = Daemon::start(&env, &cfg, &[]);
    assert_eq!(
        d.get("/health", None).unwrap(),
        (200, "{\"ok\":true}".into())
    );
    let (s, b) = d.post("/update", "{}", &[]);
    assert_eq!((s, b.as_str()), (401, "{\"error\":\"unauthorized\"}"));
    let (s, b) = d.post(
        "/update",
        "{\"async\":true}",
        &[("X-Updater-Token", "wrong-updater-token")],
    );
    assert_eq!(s, 401, "{b}");
    let tok = [
        ("X-Updater-Token", UPDATER_TOKEN),
        ("Prefer", "respond-async"),
    ];
    let (s, b) = d.post("/update", "{\"async\":true}", &tok);
    assert_eq!(s, 202, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["started"], true);
    let id = v["job"]["id"].as_str().unwrap().to_string();
    assert!(
        (8..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()),
        "{id}"
    );
    assert!(v["job"]["logfile"]
        .as_str()
        .unwrap()
        .ends_with(&format!("{id}.log")));
    // A second update while the first runs is refused (the original would run both).
    let (s, b) = d.post("/update", "{}", &tok);
    assert_eq!(s, 409, "{b}");
    let get = |path: &str| {
        let mut r = Daemon::agent()
            .get(&d.url(path))
            .header("X-Updater-Token", UPDATER_TOKEN)
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    // The admin page polls the tail until the last line says how it ended.
    let begun = Instant::now();
    let log = loop {
        let (s, text) = get(&format!("/jobs/{id}?tail=5"));
        assert_eq!(s, 200);
        if text.contains("Update finished with code") {
            break text;
        }
        assert!(begun.elapsed() < Duration::from_secs(180), "{text}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(log.lines().count() <= 5);
    assert_eq!(
        log.lines().last(),
        Some("Update finished with code 17"),
        "{log}"
    );
    let (_, all) = get(&format!("/jobs/{id}?tail=0"));
    assert!(all.contains("rolling back"), "{all}");
    assert!(all.lines().count() > 5);
    let (s, jobs) = get("/jobs");
    assert_eq!(s, 200);
    let jobs: serde_json::Value = serde_json::from_str(&jobs).unwrap();
    assert_eq!(jobs["success"], true);
    let j = &jobs["jobs"][0];
    assert_eq!(j["id"], id);
    assert!(
        j["sizeBytes"].as_u64().unwrap() > 0 && j["updatedAt"].is_string(),
        "{jobs}"
    );
    let parsed =
        |(s, b): (u16, String)| (s, serde_json::from_str::<serde_json::Value>(&b).unwrap());
    assert_eq!(
        parsed(get("/jobs/123")),
        (
            400,
            serde_json::json!({"success": false, "error": "invalid_job_id"})
        )
    );
    assert_eq!(
        parsed(get("/jobs/12345678")),
        (
            404,
            serde_json::json!({"success": false, "error": "log not found"})
        )
    );
    // The app is as before: version 1.0, healthy; the job API tells the same story.
    let job = d.api(&format!("/api/v1/jobs/{id}"));
    assert_eq!(
        (job["state"].as_str(), job["exit_code"].as_i64()),
        (Some("rolled_back"), Some(17)),
        "{job}"
    );
    let cfgtext = std::fs::read_to_string(app.join("global_config.yml")).unwrap();
    assert!(cfgtext.contains("app_version: 1.0"), "{cfgtext}");
    let (s, m) = d.get("/metrics", Some(TOKEN)).unwrap();
    assert_eq!(s, 200);
    assert_eq!(
        metric(&m, "coffer_rollbacks_total{app=\"xianyu\"}"),
        Some(1.0)
    );
}

/// SIGTERM during a backup: the daemon exits within seconds, the repository passes
/// `check --read-data`, and the next backup succeeds.
#[test]
fn sigterm_during_a_backup_exits_quickly_and_leaves_the_repository_valid() {
    let env = Env::new();
    // About 450 MB of uploads: a backup of a second or more on these machines.
    let (app, port, _server) = running_app(&env, 5000, 4000);
    let cfg = config(&env, &app, port, "", "");
    let mut d = Daemon::start(&env, &cfg, &[]);
    let (s, j) = d.job("backup", Some("xianyu"));
    assert_eq!(s, 202, "{j}");
    let id = j["id"].as_str().unwrap().to_string();
    let begun = Instant::now();
    loop {
        let (_, text) = d
            .get(&format!("/api/v1/jobs/{id}/log"), Some(TOKEN))
            .unwrap();
        if text.contains("backup begins") {
            break;
        }
        assert!(begun.elapsed() < Duration::from_secs(30), "{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = d.sigterm();
    eprintln!("serve stopped {:.2} s after SIGTERM", took.as_secs_f64());
    assert!(took < Duration::from_secs(12), "{took:?}: {}", d.log());
    assert!(d.log().contains("cancelling running jobs"), "{}", d.log());
    let log = std::fs::read_to_string(
        env.cache
            .read_dir()
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path().join(format!("jobs/{id}.log")))
            .find(|p| p.exists())
            .unwrap(),
    )
    .unwrap();
    assert!(log.contains("was cancelled"), "{log}");
    env.ok(&["check", "--read-data"]);
    assert_eq!(
        env.json(&["snapshots"]).as_array().unwrap().len(),
        0,
        "a cancelled backup saves nothing"
    );
    let d = Daemon::start(&env, &cfg, &[]);
    let (s, j) = d.job("backup", Some("xianyu"));
    assert_eq!(s, 202);
    let j = d.wait_job(j["id"].as_str().unwrap(), Duration::from_secs(180));
    assert_eq!(j["state"], "succeeded", "{j}");
    env.ok(&["check", "--read-data"]);
}

/// 50 API clients polling jobs (each once a second, as SsalgTen's admin page polls its update
/// log) while a backup runs: the backup's time with and without them, interleaved runs each
/// storing 200 MB of new uploads (figures printed; the goal is under 10 % slower).
#[test]
fn fifty_polling_clients_barely_slow_a_backup() {
    let env = Env::new();
    let (app, port, _server) = running_app(&env, 5000, 100);
    let cfg = config(&env, &app, port, "", "");
    let d = Daemon::start(&env, &cfg, &[]);
    let run = |d: &Daemon, round: u64| {
        // New data for each run: the previous round's uploads go, 200 MB of new ones come.
        let dir = app.join("static/uploads/images");
        let _ = std::fs::remove_dir_all(dir.join(format!("round-{}", round.wrapping_sub(1))));
        std::fs::create_dir_all(dir.join(format!("round-{round}"))).unwrap();
        for i in 0..100u64 {
            std::fs::write(
                dir.join(format!("round-{round}/{i}.jpg")),
                noise(2 << 20, round * 1000 + i),
            )
            .unwrap();
        }
        let (s, j) = d.job("backup", Some("xianyu"));
        assert_eq!(s, 202, "{j}");
        let begun = Instant::now();
        let j = d.wait_job(j["id"].as_str().unwrap(), Duration::from_secs(300));
        assert_eq!(j["state"], "succeeded", "{j}");
        begun.elapsed()
    };
    run(&d, 100); // warm: the plugin compiled, the app's own data stored once
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let polling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let polls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = (0..50u64)
        .map(|i| {
            let (stop, polling, polls, url) = (
                stop.clone(),
                polling.clone(),
                polls.clone(),
                d.url("/api/v1/jobs"),
            );
            std::thread::spawn(move || {
                let agent = Daemon::agent();
                // Spread over the second, as independent clients would be.
                std::thread::sleep(Duration::from_millis(i * 20));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if polling.load(std::sync::atomic::Ordering::Relaxed)
                        && agent
                            .get(&url)
                            .header("Authorization", &format!("Bearer {TOKEN}"))
                            .call()
                            .is_ok()
                    {
                        polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        })
        .collect();
    // Interleaved: quiet, polled, quiet, polled, quiet, polled.
    let (mut quiet, mut busy) = (vec![], vec![]);
    for round in 0..6u64 {
        polling.store(round % 2 == 1, std::sync::atomic::Ordering::Relaxed);
        let t = run(&d, round);
        if round % 2 == 1 {
            busy.push(t)
        } else {
            quiet.push(t)
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let n = polls.load(std::sync::atomic::Ordering::Relaxed);
    let mean = |v: &[Duration]| v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64;
    let (q, b) = (mean(&quiet), mean(&busy));
    eprintln!(
        "backup of 200 MB new (mean of 3): alone {q:.2} s; with 50 clients polling ({n} answers) {b:.2} s: {:+.1} %",
        (b / q - 1.0) * 100.0
    );
    assert!(n >= 50, "the clients were answered ({n})");
}

fn chromium() -> PathBuf {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("this test needs Chromium (Debian's `chromium` package; .ci/run installs it)");
}

fn headless(args: &[&str], url: &str, lang: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--lang={lang}"),
            &format!("--accept-lang={lang}"),
            "--virtual-time-budget=60000",
            "--window-size=1280,900",
        ])
        .args(args)
        .arg(url)
        .env("LANGUAGE", lang)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The web page in headless Chromium: it lists the apps, starts a backup (the link a monitor's
/// alert would carry, `#run=backup:xianyu`), and shows its live log until the end; in Chinese
/// for a Chinese browser. A screenshot is written to target/serve-page.png.
#[test]
fn the_web_page_lists_apps_runs_a_backup_and_shows_its_live_log() {
    let env = Env::new();
    let (app, port, _server) = running_app(&env, 500, 20);
    let cfg = config(&env, &app, port, "", "");
    let d = Daemon::start(&env, &cfg, &[]);
    let dom = headless(
        &["--dump-dom"],
        &d.url(&format!("/?token={TOKEN}#run=backup:xianyu")),
        "en-US",
    );
    assert!(
        dom.contains("data-app=\"xianyu\""),
        "the app is listed: {dom}"
    );
    assert!(dom.contains("Back up"), "{dom}");
    assert!(
        dom.contains("backup of xianyu started"),
        "the live log: {dom}"
    );
    assert!(
        dom.contains("data-state=\"succeeded\""),
        "the end of the job: {dom}"
    );
    let jobs = d.api("/api/v1/jobs");
    assert_eq!(jobs["jobs"][0]["kind"], "backup");
    assert_eq!(jobs["jobs"][0]["state"], "succeeded");
    let id = jobs["jobs"][0]["id"].as_str().unwrap().to_string();
    let dom = headless(
        &["--dump-dom"],
        &d.url(&format!("/?token={TOKEN}#job={id}")),
        "zh-CN",
    );
    assert!(
        dom.contains("立即备份") && dom.contains("最近备份"),
        "Chinese for a Chinese browser: {dom}"
    );
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/serve-page.png");
    headless(
        &[&format!("--screenshot={}", shot.display())],
        &d.url(&format!("/?token={TOKEN}#job={id}")),
        "zh-CN",
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a screenshot"
    );
    // Without the token, the page is refused.
    assert_eq!(d.get("/", None).unwrap().0, 401);
}

/// One request a [`Receiver`] got: method, path, headers (lowercase names), body.
type Request = (String, String, Vec<(String, String)>, Vec<u8>);

/// A tiny HTTP receiver: records each request and answers with `statuses` in turn (then 200).
struct Receiver {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start(statuses: Vec<u16>) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            let mut statuses = statuses.into_iter();
            for stream in listener.incoming().flatten() {
                let mut r = BufReader::new(stream);
                let mut first = String::new();
                if r.read_line(&mut first).is_err() {
                    continue;
                }
                let mut headers = vec![];
                let mut len = 0usize;
                loop {
                    let mut l = String::new();
                    r.read_line(&mut l).unwrap_or(0);
                    let l = l.trim_end().to_string();
                    if l.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.split_once(": ") {
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.parse().unwrap_or(0);
                        }
                        headers.push((k.to_ascii_lowercase(), v.to_string()));
                    }
                }
                let mut body = vec![0u8; len];
                std::io::Read::read_exact(&mut r, &mut body).unwrap_or(());
                let mut parts = first.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                );
                s2.lock().unwrap().push((method, path, headers, body));
                let status = statuses.next().unwrap_or(200);
                let _ = std::io::Write::write_all(
                    r.get_mut(),
                    format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
            }
        });
        Receiver { port, seen }
    }
}

/// Webhooks: the job as JSON, signed with HMAC-SHA256, retried after a failure; a schedule's
/// monitor gets `/start` then the success ping; an unreachable monitor is a warning in the job's
/// log and the backup still succeeds.
#[test]
fn webhooks_are_signed_and_retried_and_an_unreachable_monitor_fails_nothing() {
    let env = Env::new();
    let (app, port, _server) = running_app(&env, 200, 2);
    let hook = Receiver::start(vec![500]); // the first delivery fails, the retry lands
    let monitor = Receiver::start(vec![]);
    std::fs::write(env.path("hook-secret"), "s3cret-hook\n").unwrap();
    let dead = coffer_testkit::free_port(); // nothing listens there
    let cfg = config(
        &env,
        &app,
        port,
        &format!(
            "[[apps.xianyu.schedule]]\nkind = \"backup\"\ncron = \"* * * * *\"\nping_url = \"http://127.0.0.1:{}/ping/abc\"\n",
            monitor.port
        ),
        &format!(
            "[[serve.schedule]]\nkind = \"check\"\ncron = \"* * * * *\"\nping_url = \"http://127.0.0.1:{dead}/ping\"\n[[serve.webhooks]]\nurl = \"http://127.0.0.1:{}/hook\"\nsecret_file = \"hook-secret\"\nevents = [\"start\", \"success\"]\n",
            hook.port
        ),
    );
    let now = chrono::Utc::now().timestamp();
    let d = Daemon::start(
        &env,
        &cfg,
        &[("COFFER_CLOCK_OFFSET_SECS", &(60 - now % 60 - 2).to_string())],
    );
    let begun = Instant::now();
    let done = loop {
        let jobs = d.api("/api/v1/jobs")["jobs"].as_array().unwrap().clone();
        let finished: Vec<_> = jobs
            .iter()
            .filter(|j| !matches!(j["state"].as_str(), Some("queued" | "running")))
            .cloned()
            .collect();
        if finished.len() == 2 {
            break finished;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(60),
            "{jobs:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(done.iter().all(|j| j["state"] == "succeeded"), "{done:?}");
    // Deliveries: start and success of each job, the first one retried once.
    std::thread::sleep(Duration::from_secs(4));
    let seen = hook.seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        5,
        "4 events and one retry: {:?}",
        seen.iter()
            .map(|s| String::from_utf8_lossy(&s.3).into_owned())
            .collect::<Vec<_>>()
    );
    for (method, path, headers, body) in &seen {
        assert_eq!((method.as_str(), path.as_str()), ("POST", "/hook"));
        let sig = headers
            .iter()
            .find(|h| h.0 == "x-coffer-signature")
            .map(|h| h.1.clone())
            .unwrap();
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cret-hook").unwrap();
        mac.update(body);
        assert_eq!(
            sig,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert!(v["event"] == "start" || v["event"] == "success", "{v}");
        assert!(
            v["job"]["kind"] == "backup" || v["job"]["kind"] == "check",
            "{v}"
        );
    }
    let pings: Vec<String> = monitor
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.1.clone())
        .collect();
    assert_eq!(pings, ["/ping/abc/start", "/ping/abc"], "{pings:?}");
    let check = done.iter().find(|j| j["kind"] == "check").unwrap();
    let (_, log) = d
        .get(
            &format!("/api/v1/jobs/{}/log", check["id"].as_str().unwrap()),
            Some(TOKEN),
        )
        .unwrap();
    assert!(log.contains("warning: ping http://127.0.0.1:"), "{log}");
}
