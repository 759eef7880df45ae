//! `coffer restore SNAPSHOT --target DIR`: write a snapshot back to disk.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use coffer::ExitCode;
use coffer_repo::restorer::{self, RestoreOptions};

use super::{human, print_json, Global, Progress};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot id (a prefix is enough) or `latest`
    pub snapshot: String,
    /// Folder to restore the snapshot's files into (created if missing). Without it, an app
    /// snapshot is restored into its app by the plugin stored in the snapshot
    #[arg(long, short)]
    pub target: Option<PathBuf>,
    /// App restore: only these top-level items (repeatable), e.g. `--only db`
    #[arg(long)]
    pub only: Vec<String>,
    /// App restore: into this folder instead of the app's `dir` (a drill, a second machine)
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// App restore: a setting for this restore only, over coffer.toml's (repeatable), e.g.
    /// `--set replace_database=true`
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Restore only this path of the snapshot (repeatable)
    #[arg(long)]
    pub include: Vec<PathBuf>,
    /// Restore symlinks that point outside the target as they were
    #[arg(long)]
    pub allow_outside_symlinks: bool,
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let repo = g.open()?;
    repo.secrets().data_identity("restore")?;
    let (id, snap) = repo.find_snapshot(&a.snapshot)?;
    let Some(target) = a.target.clone() else {
        anyhow::ensure!(
            snap.app.is_some(),
            "snapshot {} holds plain files: give --target DIR",
            id.short()
        );
        return run_app(g, a, Arc::new(repo), id, snap);
    };
    anyhow::ensure!(
        a.only.is_empty() && a.dir.is_none() && a.set.is_empty(),
        "--only, --dir and --set are for app restores (without --target)"
    );
    let (index, index_errors) = repo.load_index()?;
    for (i, e) in &index_errors {
        eprintln!("coffer: warning: index {} unreadable: {e}", i.short());
    }
    let opts = RestoreOptions {
        target: target.clone(),
        include: a.include.clone(),
        allow_outside_symlinks: a.allow_outside_symlinks,
    };
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    let progress = Progress::start("restore", move || {
        format!("{} written", human(d.load(Ordering::Relaxed)))
    });
    let r = restorer::restore(&repo, &index, &snap, &opts, &done);
    drop(progress);
    let s = r?;
    for e in &s.errors {
        eprintln!("coffer: error: {e}");
    }
    if g.json {
        let mut v = serde_json::to_value(&s)?;
        v["snapshot"] = id.to_hex().into();
        print_json(&v);
    } else {
        println!(
            "restored snapshot {} to {}: {} files ({}), {} dirs, {} symlinks in {:.1}s",
            id.short(),
            target.display(),
            s.files,
            human(s.bytes),
            s.dirs,
            s.links,
            s.duration_secs
        );
        if !s.errors.is_empty() {
            println!(
                "{} entries could not be restored (see above); run `coffer check --read-data`",
                s.errors.len()
            );
        }
    }
    Ok(if s.errors.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::Integrity
    })
}

fn run_app(
    g: &Global,
    a: &Args,
    repo: Arc<coffer_repo::Repository>,
    id: coffer_repo::id::SnapshotId,
    snap: coffer_repo::snapshot::Snapshot,
) -> Result<ExitCode> {
    let app = snap.app.clone().unwrap_or_default();
    let mut config = g
        .config()?
        .ok_or_else(|| anyhow::anyhow!("snapshot {} is of app {app}: restoring it needs its [apps.{app}] in coffer.toml (or use --target DIR for plain files)", id.short()))?
        .clone();
    if let Some(settings) = config.apps.get_mut(&app).map(|a| &mut a.settings) {
        for kv in &a.set {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--set takes KEY=VALUE, not '{kv}'"))?;
            settings.insert(k.trim().to_string(), toml::Value::String(v.to_string()));
        }
    }
    let cache = g.cache_dir();
    let report = coffer::ops::app::restore(
        &repo,
        &config,
        &id,
        snap,
        &a.only,
        a.dir.as_deref(),
        Some(&cache),
        &super::CliEvents::shared(),
    )?;
    if g.json {
        let mut v = serde_json::to_value(&report)?;
        v["verified"] = report.verified().into();
        v["healthy"] = report.healthy().into();
        print_json(&v);
    } else {
        println!(
            "restored snapshot {} of app {} into {}{} with plugin {}",
            id.short(),
            report.app,
            report.dir.display(),
            if a.only.is_empty() {
                String::new()
            } else {
                format!(" (only {})", a.only.join(", "))
            },
            report.plugin
        );
        for (kind, checks) in [("verify", &report.verify), ("health", &report.health)] {
            for c in checks {
                println!(
                    "  {kind:<6} {} {}: {}",
                    if c.ok { "ok  " } else { "FAIL" },
                    c.name,
                    c.detail
                );
            }
        }
    }
    Ok(if !report.verified() {
        ExitCode::Integrity
    } else if !report.healthy() {
        ExitCode::Unhealthy
    } else {
        ExitCode::Ok
    })
}
