//! `coffer serve`: one process that runs the apps' schedules, answers a job API with live logs,
//! Prometheus metrics, webhooks and monitor pings, a web page, and SsalgTen's updater contract.
//!
//! The repository is opened (unlocked) once at start. Jobs run on threads of their own through
//! the same operations the command line runs (`coffer::ops`); the HTTP side only reads and
//! queues. SIGTERM (or SIGINT) cancels running jobs at a safe point (a backup stops at its next
//! chunk and saves no snapshot; the repository stays valid, as after any crash), waits a few
//! seconds for them, and exits.

mod http;
pub mod jobs;
mod notify;
mod schedule;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use coffer::config::Config;
use coffer::ops::app::BackupOptions;
use coffer::ops::Events;
use coffer::ExitCode;
use coffer_repo::Repository;

use jobs::{Job, JobEvents, Jobs, State, Status};

/// What `/metrics` counts, per app (or `repository`) and job kind.
#[derive(Default)]
pub struct KindStats {
    pub runs: u64,
    pub failures: u64,
    pub last_duration: f64,
    pub last_success: Option<i64>,
    pub last_end: Option<i64>,
}

#[derive(Default)]
pub struct Metrics {
    pub kinds: BTreeMap<(String, String), KindStats>,
    pub bytes_read: u64,
    pub bytes_added: u64,
    pub rollbacks: BTreeMap<String, u64>,
}

/// Facts of the repository, refreshed after each job (reading them is not free).
#[derive(Default, Clone)]
pub struct RepoFacts {
    pub snapshots: BTreeMap<String, u64>,
    pub stored_bytes: u64,
}

pub struct Daemon {
    pub repo: Arc<Repository>,
    pub config: &'static Config,
    pub cache: PathBuf,
    pub host: Option<String>,
    pub jobs: Jobs,
    pub metrics: Mutex<Metrics>,
    pub facts: Mutex<RepoFacts>,
    pub schedules: schedule::Schedules,
    /// SHA-256 of the API token; `None`: every route but /health is refused.
    pub token: Option<[u8; 32]>,
    pub updater_token: Option<[u8; 32]>,
    pub shutdown: AtomicBool,
    pub started: chrono::DateTime<chrono::Utc>,
}

pub struct Options {
    pub listen: Option<String>,
    pub host: Option<String>,
    /// Seconds added to the clock schedules run by (tests; hidden).
    pub clock_offset_secs: i64,
}

fn read_token(path: &Path, what: &str) -> Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{what} {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    anyhow::ensure!(
        token.len() >= 16,
        "{what} {} holds a token shorter than 16 characters: use a long random one (openssl rand -hex 32)",
        path.display()
    );
    Ok(http::digest(token.as_bytes()))
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(repo: Repository, config: &'static Config, cache: PathBuf, opts: Options) -> Result<()> {
    let serve = &config.serve;
    let listen = opts.listen.clone().unwrap_or_else(|| serve.listen.clone());
    let token = match &serve.token_file {
        Some(p) => Some(read_token(p, "[serve] token_file")?),
        None => {
            eprintln!("coffer: warning: [serve] token_file is not set: every route but /health answers 401");
            None
        }
    };
    let updater_token = match &serve.updater {
        Some(u) => {
            config.app(&u.app)?;
            Some(read_token(&u.token_file, "[serve.updater] token_file")?)
        }
        None => None,
    };
    let repo = Arc::new(repo);
    let jobs_dir = cache.join(&repo.config().id).join("jobs");
    let schedules = schedule::Schedules::new(
        config,
        &cache.join(&repo.config().id),
        opts.clock_offset_secs,
    )?;
    let d = Arc::new(Daemon {
        repo,
        config,
        cache,
        host: opts.host,
        jobs: Jobs::new(jobs_dir),
        metrics: Mutex::new(Metrics::default()),
        facts: Mutex::new(RepoFacts::default()),
        schedules,
        token,
        updater_token,
        shutdown: AtomicBool::new(false),
        started: chrono::Utc::now(),
    });
    refresh_facts(&d);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "coffer: serving on http://{addr} ({} schedule(s))",
            d.schedules.len()
        );
        let sched = {
            let d = d.clone();
            std::thread::spawn(move || schedule::run(&d))
        };
        let app = http::router(d.clone());
        let stop = {
            let d = d.clone();
            async move {
                wait_for_signal().await;
                eprintln!("coffer: stopping: cancelling running jobs at a safe point");
                d.shutdown.store(true, Ordering::SeqCst);
                for j in d.jobs.all() {
                    j.cancel.store(true, Ordering::SeqCst);
                    j.counters.cancel.store(true, Ordering::SeqCst);
                }
                let begun = Instant::now();
                while !d.jobs.running().is_empty() && begun.elapsed() < Duration::from_secs(10) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                for j in d.jobs.running() {
                    eprintln!(
                        "coffer: job {} did not stop in 10 s; exiting anyway",
                        j.id()
                    );
                }
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await?;
        let _ = sched.join();
        anyhow::Ok(())
    })?;
    // Streams still open (live logs) would hold the runtime: it goes now.
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Queues a job and starts its thread; `refuse_busy` refuses it while its app is busy.
pub fn submit(
    d: &Arc<Daemon>,
    kind: &str,
    app: Option<String>,
    args: serde_json::Value,
    trigger: &str,
    refuse_busy: bool,
) -> std::result::Result<Arc<Job>, jobs::Busy> {
    let job = d.jobs.create(kind, app, args, trigger, refuse_busy)?;
    let (d2, j2) = (d.clone(), job.clone());
    std::thread::spawn(move || run_job(&d2, &j2));
    Ok(job)
}

/// How a job ended.
struct Ended {
    state: State,
    exit: ExitCode,
    snapshot: Option<String>,
    error: Option<String>,
    result: serde_json::Value,
}

impl Ended {
    fn ok(result: serde_json::Value) -> Ended {
        Ended {
            state: State::Succeeded,
            exit: ExitCode::Ok,
            snapshot: None,
            error: None,
            result,
        }
    }

    fn failed(e: &anyhow::Error, cancelled: bool) -> Ended {
        Ended {
            state: if cancelled {
                State::Cancelled
            } else {
                State::Failed
            },
            exit: ExitCode::of_chain(e.chain()),
            snapshot: None,
            error: Some(format!("{e:#}")),
            result: serde_json::Value::Null,
        }
    }
}

fn run_job(d: &Arc<Daemon>, job: &Arc<Job>) {
    if !d.jobs.acquire(job) {
        finish(
            d,
            job,
            Ended {
                state: State::Cancelled,
                exit: ExitCode::Failure,
                snapshot: None,
                error: Some("cancelled before it started".into()),
                result: serde_json::Value::Null,
            },
            0.0,
        );
        return;
    }
    let begun = Instant::now();
    let st = {
        let mut s = job.status.lock().unwrap();
        s.state = State::Running;
        s.started = Some(chrono::Utc::now().to_rfc3339());
        s.clone()
    };
    let events: Arc<dyn Events> = Arc::new(JobEvents(job.clone()));
    events.log(
        coffer_runtime::LogLevel::Info,
        "coffer",
        &format!(
            "{} {}started ({})",
            st.kind,
            st.app
                .as_deref()
                .map(|a| format!("of {a} "))
                .unwrap_or_default(),
            st.trigger
        ),
    );
    notify::job_event(d, &st, "start");
    let ended = match execute(d, job, &st, &events) {
        Ok(e) => e,
        // A cancelled job fails wherever it stopped (in a plugin's capture, say): it was asked to.
        Err(e) => Ended::failed(&e, job.cancel.load(Ordering::SeqCst)),
    };
    if let Some(e) = &ended.error {
        events.log(coffer_runtime::LogLevel::Error, "coffer", e);
    }
    d.jobs.release(job);
    finish(d, job, ended, begun.elapsed().as_secs_f64());
}

fn finish(d: &Arc<Daemon>, job: &Arc<Job>, ended: Ended, secs: f64) {
    let code = ended.exit as i32;
    let st = {
        let mut s = job.status.lock().unwrap();
        s.state = ended.state;
        s.finished = Some(chrono::Utc::now().to_rfc3339());
        s.exit_code = Some(code);
        s.snapshot = ended.snapshot;
        s.error = ended.error;
        s.result = ended.result;
        s.clone()
    };
    {
        let mut m = d.metrics.lock().unwrap();
        let key = (st.key().to_string(), st.kind.clone());
        let k = m.kinds.entry(key).or_default();
        k.runs += 1;
        k.last_duration = secs;
        let now = chrono::Utc::now().timestamp();
        k.last_end = Some(now);
        if st.state == State::Succeeded {
            k.last_success = Some(now);
        } else {
            k.failures += 1;
        }
        m.bytes_read += job.counters.bytes_read.load(Ordering::Relaxed);
        m.bytes_added += job.counters.bytes_added.load(Ordering::Relaxed);
        if st.state == State::RolledBack {
            *m.rollbacks
                .entry(st.app.clone().unwrap_or_default())
                .or_default() += 1;
        }
    }
    let word = match st.state {
        State::Succeeded => "succeeded",
        State::RolledBack => "failed and was rolled back",
        State::Cancelled => "was cancelled",
        _ => "failed",
    };
    job.line(&format!(
        "{} {} {word} in {secs:.1} s (exit code {code})",
        chrono::Utc::now().format("%H:%M:%S"),
        st.kind
    ));
    if st.kind == "upgrade" {
        // What SsalgTen's admin page waits for at the end of an update's log.
        job.line(&format!("Update finished with code {code}"));
    }
    refresh_facts(d);
    let event = match st.state {
        State::Succeeded => "success",
        State::RolledBack => "rollback",
        _ => "failure",
    };
    notify::job_event(d, &st, event);
    job.changed.send_modify(|v| *v += 1);
}

fn execute(
    d: &Arc<Daemon>,
    job: &Arc<Job>,
    st: &Status,
    events: &Arc<dyn Events>,
) -> Result<Ended> {
    let app = || {
        st.app
            .clone()
            .ok_or_else(|| anyhow::anyhow!("a {} job needs an app", st.kind))
    };
    let cache = Some(d.cache.clone());
    Ok(match st.kind.as_str() {
        "backup" => {
            let name = app()?;
            let (r, _) = coffer::ops::app::backup(
                &d.repo,
                d.config,
                &name,
                BackupOptions {
                    tags: vec![],
                    host: d.host.clone(),
                    cache_dir: cache,
                    counters: job.counters.clone(),
                    annotate: None,
                },
                events,
            )?;
            let mut e = Ended::ok(json!({ "summary": r.summary, "warnings": r.warnings }));
            if !r.warnings.is_empty() {
                e.exit = ExitCode::Incomplete;
            }
            e.snapshot = Some(r.snapshot.to_hex());
            events.log(
                coffer_runtime::LogLevel::Info,
                "coffer",
                &format!(
                    "snapshot {} saved: {} read, {} added",
                    r.snapshot.short(),
                    r.summary.bytes_read,
                    r.summary.bytes_added
                ),
            );
            e
        }
        "forget" => {
            let name = app()?;
            let opts = coffer::ops::forget::ForgetOptions {
                app: Some(name.clone()),
                host: None,
                policy: Default::default(),
            };
            let plan = coffer::ops::forget::plan(&d.repo, Some(d.config), &opts)?;
            coffer::ops::forget::apply(&d.repo, &plan)?;
            events.log(
                coffer_runtime::LogLevel::Info,
                "coffer",
                &format!(
                    "forgot {} snapshot(s) of {name}; pruning",
                    plan.remove.len()
                ),
            );
            let p = coffer_repo::prune::prune(&d.repo, &Default::default())?;
            Ended::ok(json!({ "removed": plan.remove.len(), "prune": p }))
        }
        "prune" => {
            let p = coffer_repo::prune::prune(&d.repo, &Default::default())?;
            Ended::ok(json!({ "prune": p }))
        }
        "check" => {
            let read = match st.args["read_data_subset"].as_str() {
                Some(s) => coffer_repo::checker::ReadData::Subset(
                    s.trim_end_matches('%')
                        .parse()
                        .context("read_data_subset: a percentage such as 10%")?,
                ),
                None if st.args["read_data"] == true => coffer_repo::checker::ReadData::All,
                None => coffer_repo::checker::ReadData::None,
            };
            let r = coffer_repo::checker::check(&d.repo, read)?;
            for p in &r.problems {
                events.log(
                    coffer_runtime::LogLevel::Error,
                    "check",
                    &format!("{}: {}", p.object, p.message),
                );
            }
            let mut e = Ended::ok(serde_json::to_value(&r)?);
            if !r.problems.is_empty() {
                e.state = State::Failed;
                e.exit = ExitCode::Integrity;
                e.error = Some(format!("{} problem(s)", r.problems.len()));
            }
            e
        }
        "drill" => {
            let name = app()?;
            let r = coffer::ops::drill::drill(
                &d.repo,
                d.config,
                &name,
                st.args["snapshot"].as_str(),
                &d.cache,
                events,
            )?;
            let mut e = Ended::ok(serde_json::to_value(&r)?);
            e.snapshot = Some(r.snapshot.clone());
            if !r.ok {
                e.state = State::Failed;
                e.exit = ExitCode::DrillFailed;
                e.error = Some(r.error.clone().unwrap_or_else(|| {
                    r.verify
                        .iter()
                        .filter(|c| !c.ok)
                        .map(|c| format!("{}: {}", c.name, c.detail))
                        .collect::<Vec<_>>()
                        .join("; ")
                }));
            }
            e
        }
        "upgrade" => {
            let name = app()?;
            let to = st.args["to"]
                .as_str()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| anyhow::anyhow!("an upgrade job needs args.to, the version"))?;
            let r = coffer::ops::upgrade::upgrade(
                &d.repo,
                d.config,
                &name,
                coffer::ops::upgrade::UpgradeOptions {
                    to: to.into(),
                    force: st.args["force"] == true,
                    no_rollback: false,
                    host: d.host.clone(),
                    cache_dir: cache,
                },
                events,
            )?;
            let mut e = Ended::ok(serde_json::to_value(&r)?);
            e.snapshot = Some(r.snapshot.clone());
            use coffer::ops::upgrade::Outcome;
            match r.outcome {
                Outcome::Upgraded => {}
                Outcome::RolledBack => {
                    e.state = State::RolledBack;
                    e.exit = ExitCode::RolledBack;
                    e.error = r.error.clone();
                }
                Outcome::RollbackFailed => {
                    e.state = State::Failed;
                    e.exit = ExitCode::RollbackFailed;
                    e.error = r.error.clone();
                }
            }
            e
        }
        other => anyhow::bail!(
            "unknown job kind '{other}': one of {}",
            jobs::KINDS.join(", ")
        ),
    })
}

/// Snapshots per app and the stored size, for `/metrics` and the page.
fn refresh_facts(d: &Daemon) {
    let mut f = RepoFacts::default();
    if let Ok(list) = d.repo.list_snapshots() {
        for (_, s) in list {
            if let Ok(s) = s {
                *f.snapshots
                    .entry(s.app.clone().unwrap_or_else(|| "(paths)".into()))
                    .or_default() += 1;
            }
        }
    }
    if let Ok((index, _)) = d.repo.load_index() {
        f.stored_bytes = index.packs().map(|(_, s)| s).sum();
    }
    *d.facts.lock().unwrap() = f;
}
