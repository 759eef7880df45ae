//! Guarded upgrades: "upgrade app X to version V, and put it back as it was if it fails".
//!
//! The loop the seeds ask for (a versioned backup before every update, checks after it, an
//! automatic rollback, a live log) for every app with a plugin: the app must be healthy and
//! verified before; a snapshot tagged `pre-upgrade` records the from and to versions; the
//! plugin's `upgrade` step runs; the new version has `start_secs` to turn healthy once, then
//! `checks` health checks `interval_secs` apart follow (more than `failure_limit` failures fail
//! it), then verify against the pre-upgrade snapshot (rows may grow, never vanish). Any failure
//! restores the pre-upgrade snapshot, data and version (its recorded images), and checks health
//! again.
//!
//! An upgrade killed mid-way (a crash, `kill -9`, a reboot) leaves a journal on this host
//! (`<cache>/<repository id>/upgrade-<app>.json`, written once the pre-upgrade snapshot is
//! saved): the next `coffer upgrade` of that app is refused, naming the snapshot, until a
//! restore of the app settles it. `coffer restore <snapshot>` is the way back: a plain restore of
//! the pre-upgrade snapshot IS the rollback (data and version), so there is no separate resume.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use coffer_repo::archiver::Counters;
use coffer_repo::Repository;
use coffer_runtime::{Check, LogLevel};

use super::app::{backup, restore, BackupOptions, Live, Target};
use super::events::Events;
use crate::config::Config;
use crate::error::{Error, Result};

pub struct UpgradeOptions {
    pub to: String,
    /// Upgrade even when the app is unhealthy or fails verify before.
    pub force: bool,
    /// Leave a failed upgrade as it is, for a person.
    pub no_rollback: bool,
    pub host: Option<String>,
    pub cache_dir: Option<std::path::PathBuf>,
}

/// How an upgrade ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Upgraded,
    /// Failed, rolled back: the app is as before.
    RolledBack,
    /// Failed, and the rollback failed too (or was not asked for): act now.
    RollbackFailed,
}

#[derive(Debug, Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub secs: f64,
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct UpgradeReport {
    pub app: String,
    pub from: String,
    pub to: String,
    pub outcome: Outcome,
    /// The pre-upgrade snapshot.
    pub snapshot: String,
    /// Why it failed, when it did.
    pub error: Option<String>,
    pub phases: Vec<Phase>,
    /// The health checks after the upgrade step, and after a rollback.
    pub health: Vec<Check>,
    pub rollback_health: Vec<Check>,
    /// From the upgrade step's start until the app was healthy again, after the upgrade or
    /// after the rollback (an upper bound: the old version serves until its containers are
    /// replaced); `None` when it never was.
    pub downtime_secs: Option<f64>,
}

fn failing(checks: &[Check]) -> Option<String> {
    let bad: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    (!bad.is_empty()).then(|| bad.join("; "))
}

/// The version a snapshot's metadata names (the plugin's `app_version`, `version` or `tag`).
fn version_of(meta: &serde_json::Value) -> String {
    ["app_version", "version", "tag"]
        .iter()
        .find_map(|k| meta[*k].as_str().filter(|v| !v.is_empty()))
        .unwrap_or("unknown")
        .to_string()
}

/// What an upgrade in progress leaves on this host until it ends.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Journal {
    app: String,
    to: String,
    snapshot: String,
    at: String,
}

fn journal_path(cache_dir: &Path, repo: &Repository, app: &str) -> PathBuf {
    cache_dir
        .join(&repo.config().id)
        .join(format!("upgrade-{app}.json"))
}

/// The interrupted upgrade of `app`, when one left its journal.
fn interrupted(cache_dir: &Path, repo: &Repository, app: &str) -> Option<Journal> {
    let bytes = std::fs::read(journal_path(cache_dir, repo, app)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_journal(cache_dir: &Path, repo: &Repository, j: &Journal) -> Result<()> {
    let path = journal_path(cache_dir, repo, &j.app);
    let dir = path.parent().expect("has a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(".upgrade-{}.tmp", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(j).expect("serializes"))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(&path, e))
}

/// A restore of `app` on its live folder settles an interrupted upgrade of it.
pub fn settle(cache_dir: &Path, repo: &Repository, app: &str) {
    let _ = std::fs::remove_file(journal_path(cache_dir, repo, app));
}

/// Upgrades app `name`; errors only when nothing was changed (a sick app, a failed backup, an
/// earlier upgrade interrupted and not yet settled).
pub fn upgrade(
    repo: &Arc<Repository>,
    config: &Config,
    name: &str,
    opts: UpgradeOptions,
    events: &Arc<dyn Events>,
) -> Result<UpgradeReport> {
    let say = |m: String| events.log(LogLevel::Info, "coffer", &m);
    let mut phases = vec![];
    let mut timed = |name: &'static str, begun: Instant, ok: bool| {
        phases.push(Phase {
            name,
            secs: begun.elapsed().as_secs_f64(),
            ok,
        })
    };
    if opts.to.is_empty()
        || !opts
            .to
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_+".contains(c))
    {
        return Err(Error::Invalid(format!(
            "version '{}' may hold only letters, digits, '.', '-', '_' and '+' (an image tag or a release name)",
            opts.to
        )));
    }
    if let Some(j) = opts
        .cache_dir
        .as_deref()
        .and_then(|c| interrupted(c, repo, name))
    {
        let short = &j.snapshot[..j.snapshot.len().min(8)];
        return Err(Error::Invalid(format!(
            "an upgrade of {name} to {} begun at {} was interrupted after its pre-upgrade snapshot {short}: the app may be half-upgraded. Bring it back with `coffer restore {short}` (data and version), then upgrade again; if you have checked the app by hand, delete {}",
            j.to,
            j.at,
            journal_path(opts.cache_dir.as_deref().expect("checked"), repo, name).display()
        )));
    }
    let live = Live::load(config, name, opts.cache_dir.as_deref(), events)?;

    // Before: a sick app is not upgraded.
    let t = Instant::now();
    say(format!("checking {name} before the upgrade"));
    let health = live.health()?;
    let verify = live.verify(None)?;
    let problem = failing(&health).or_else(|| failing(&verify));
    timed("pre-checks", t, problem.is_none());
    if let Some(p) = problem {
        if !opts.force {
            return Err(Error::Invalid(format!(
                "{name} is not healthy before the upgrade ({p}): fix it first, or pass --force to upgrade anyway"
            )));
        }
        events.log(
            LogLevel::Warn,
            "coffer",
            &format!("{name} is not healthy ({p}); upgrading anyway (--force)"),
        );
    }

    // A versioned backup first.
    let t = Instant::now();
    say(format!("taking the pre-upgrade snapshot of {name}"));
    let (saved, _) = backup(
        repo,
        config,
        name,
        BackupOptions {
            tags: vec!["pre-upgrade".into()],
            host: opts.host.clone(),
            cache_dir: opts.cache_dir.clone(),
            counters: Arc::new(Counters::default()),
            annotate: Some((
                "upgrade".into(),
                serde_json::json!({ "to": opts.to, "at": chrono::Utc::now().to_rfc3339() }),
            )),
        },
        events,
    )?;
    timed("pre-upgrade snapshot", t, true);
    let snap_id = saved.snapshot;
    let snap = repo.load_snapshot(&snap_id)?;
    let meta = snap.metadata.clone().unwrap_or_default();
    let from = version_of(&meta);
    if let Some(c) = opts.cache_dir.as_deref() {
        write_journal(
            c,
            repo,
            &Journal {
                app: name.into(),
                to: opts.to.clone(),
                snapshot: snap_id.to_hex(),
                at: chrono::Utc::now().to_rfc3339(),
            },
        )?;
    }
    say(format!(
        "snapshot {} saved; upgrading {name} from {from} to {}",
        snap_id.short(),
        opts.to
    ));

    // The step, then the analysis.
    let t = Instant::now();
    let step_began = t;
    let mut downtime = None;
    let stepped = live.upgrade(&opts.to);
    timed("upgrade step", t, stepped.is_ok());
    let mut health = vec![];
    let result: std::result::Result<(), String> = match stepped {
        Err(e) => Err(format!("the upgrade step failed: {e}")),
        Ok(()) => {
            let t = Instant::now();
            let policy = &live.app.upgrade;
            let health_now = || {
                live.health().unwrap_or_else(|e| {
                    vec![Check {
                        name: "health".into(),
                        ok: false,
                        detail: e.to_string(),
                    }]
                })
            };
            // The start period: the new version has `start_secs` to turn healthy once (a
            // Spring Boot app migrating its schema takes a while); checks failing before then
            // do not count, like a Kubernetes startup probe or Compose's `start_period`.
            // `start_secs = 0`: no start period, the analysis counts from the first check.
            let mut outcome = Ok(());
            let mut first = None;
            let mut waited = 0u32;
            while first.is_none() {
                let checks = health_now();
                match failing(&checks) {
                    Some(b) if policy.start_secs > 0 => {
                        let elapsed = t.elapsed().as_secs();
                        if elapsed >= policy.start_secs {
                            health = checks;
                            outcome = Err(format!(
                                "{} did not turn healthy within start_secs ({} s) after the upgrade: {b}",
                                live.name, policy.start_secs
                            ));
                            break;
                        }
                        waited += 1;
                        if waited == 1 || waited % 10 == 0 {
                            say(format!(
                                "waiting for {} to start ({elapsed} s of {} s): {b}",
                                live.name, policy.start_secs
                            ));
                        }
                        std::thread::sleep(Duration::from_secs(policy.interval_secs.max(1)));
                    }
                    _ => first = Some(checks),
                }
            }
            // The analysis, counting from the first check the start period let through.
            if outcome.is_ok() {
                let mut failures = 0;
                let total = policy.checks.max(1);
                for i in 0..total {
                    let checks = match first.take() {
                        Some(checks) => checks,
                        None => {
                            std::thread::sleep(Duration::from_secs(policy.interval_secs));
                            health_now()
                        }
                    };
                    let bad = failing(&checks);
                    if bad.is_none() && downtime.is_none() {
                        downtime = Some(step_began.elapsed().as_secs_f64());
                    }
                    say(format!(
                        "health check {}/{total}: {}",
                        i + 1,
                        bad.as_deref().unwrap_or("ok")
                    ));
                    health = checks;
                    if let Some(b) = bad {
                        failures += 1;
                        if failures > policy.failure_limit {
                            outcome = Err(format!(
                                "{failures} health check(s) failed after the upgrade (failure_limit {}): {b}",
                                policy.failure_limit
                            ));
                            break;
                        }
                    }
                }
            }
            timed("health analysis", t, outcome.is_ok());
            if outcome.is_ok() {
                let t = Instant::now();
                // Against the pre-upgrade snapshot, where rows may have grown since.
                let mut against = snap.clone();
                if let Some(m) = against.metadata.as_mut().and_then(|m| m.as_object_mut()) {
                    m.insert("coffer_verify".into(), "at_least".into());
                }
                outcome = match live.verify(Some((&snap_id, &against))) {
                    Ok(checks) => match failing(&checks) {
                        None => Ok(()),
                        Some(b) => Err(format!("verify after the upgrade failed: {b}")),
                    },
                    Err(e) => Err(format!("verify after the upgrade failed: {e}")),
                };
                timed("verify", t, outcome.is_ok());
            }
            outcome
        }
    };

    let mut report = UpgradeReport {
        app: name.into(),
        from,
        to: opts.to.clone(),
        outcome: Outcome::Upgraded,
        snapshot: snap_id.to_hex(),
        error: None,
        phases: vec![],
        health,
        rollback_health: vec![],
        downtime_secs: None,
    };
    if let Err(e) = result {
        events.log(LogLevel::Error, "coffer", &e);
        report.error = Some(e);
        if opts.no_rollback {
            say("--no-rollback: leaving the app as the upgrade left it".into());
            report.outcome = Outcome::RollbackFailed;
        } else {
            let t = Instant::now();
            say(format!(
                "rolling back to snapshot {} (data and version)",
                snap_id.short()
            ));
            let back = restore(
                repo,
                config,
                &snap_id,
                snap.clone(),
                &[],
                Target::Live,
                opts.cache_dir.as_deref(),
                events,
            );
            let ok = match back {
                Ok(r) => {
                    report.rollback_health = r.health.clone();
                    r.verified() && r.healthy()
                }
                Err(e) => {
                    events.log(LogLevel::Error, "coffer", &format!("rollback failed: {e}"));
                    false
                }
            };
            timed("rollback", t, ok);
            if ok {
                downtime = Some(step_began.elapsed().as_secs_f64());
            }
            report.outcome = if ok {
                say(format!(
                    "rolled back: {name} runs {} as before",
                    report.from
                ));
                Outcome::RolledBack
            } else {
                Outcome::RollbackFailed
            };
        }
    } else {
        say(format!("upgraded {name} to {}", opts.to));
    }
    // A failed rollback (or none asked for) keeps the journal: the next upgrade waits for a person.
    if report.outcome != Outcome::RollbackFailed {
        if let Some(c) = opts.cache_dir.as_deref() {
            settle(c, repo, name);
        }
    }
    report.phases = phases;
    report.downtime_secs = downtime;
    Ok(report)
}
