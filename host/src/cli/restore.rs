//! `coffer restore SNAPSHOT --target DIR`: write a snapshot back to disk.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use coffer::ExitCode;
use coffer_repo::restorer::{self, OutsideLinks, RestoreOptions};

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
    /// App restore: run the plugin stored in the snapshot even if it has this BLAKE3 and is not a
    /// built-in plugin or the app's pin (repeatable)
    #[arg(long = "trust-plugin", value_name = "BLAKE3")]
    pub trust_plugin: Vec<String>,
    /// Restore a snapshot even though its signature does not verify (see `coffer snapshots`):
    /// only when you know where it came from
    #[arg(long)]
    pub ignore_signature: bool,
    /// Leave out symlinks that point outside the target (by default every symlink is restored
    /// as it was; none is ever followed while restoring)
    #[arg(long)]
    pub skip_outside_symlinks: bool,
    /// Accepted for scripts written before symlinks were restored by default; no effect
    #[arg(long, hide = true)]
    pub allow_outside_symlinks: bool,
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let repo = g.open()?;
    repo.secrets().data_identity("restore")?;
    let (id, snap) = repo.find_snapshot(&a.snapshot)?;
    // A forged snapshot (bad signature, or a write-only key writing for another host) is not
    // restored; one merely unverified is, by id, with a warning.
    match repo.writer(&snap) {
        coffer_repo::snapshot::Writer::Forged { reason } if !a.ignore_signature => {
            return Err(coffer_repo::Error::Unsafe(format!(
                "snapshot {} is forged ({reason}); see `coffer snapshots` (--ignore-signature restores it anyway, if you know where it came from)",
                id.short()
            ))
            .into())
        }
        coffer_repo::snapshot::Writer::Forged { reason } => eout!(
            "coffer: warning: snapshot {} is forged ({reason}); restoring it as --ignore-signature asks",
            id.short()
        ),
        coffer_repo::snapshot::Writer::Unverified { reason } if repo.signatures_required() => {
            eout!(
                "coffer: warning: snapshot {} is not verified ({reason}); restoring it because it was named by id",
                id.short()
            )
        }
        _ => {}
    }
    let Some(target) = a.target.clone() else {
        anyhow::ensure!(
            snap.app.is_some(),
            "snapshot {} holds plain files: give --target DIR",
            id.short()
        );
        return run_app(g, a, Arc::new(repo), id, snap);
    };
    anyhow::ensure!(
        a.only.is_empty() && a.dir.is_none() && a.set.is_empty() && a.trust_plugin.is_empty(),
        "--only, --dir, --set and --trust-plugin are for app restores (without --target)"
    );
    let (index, index_errors) = repo.load_index()?;
    for (i, e) in &index_errors {
        eout!("coffer: warning: index {} unreadable: {e}", i.short());
    }
    let opts = RestoreOptions {
        target: target.clone(),
        include: a.include.clone(),
        outside_links: if a.skip_outside_symlinks {
            OutsideLinks::Skip
        } else {
            OutsideLinks::Restore
        },
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
        eout!("coffer: error: {e}");
    }
    if g.json {
        let mut v = serde_json::to_value(&s)?;
        v["snapshot"] = id.to_hex().into();
        print_json(&v);
    } else {
        out!(
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
            out!(
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
    if let Some(c) = config.apps.get_mut(&app) {
        c.trusted_plugins.extend(a.trust_plugin.iter().cloned());
    }
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
        match a.dir.as_deref() {
            Some(d) => coffer::ops::app::Target::Dir(d),
            None => coffer::ops::app::Target::Live,
        },
        Some(&cache),
        &super::CliEvents::shared(g.json),
    )?;
    if g.json {
        let mut v = serde_json::to_value(&report)?;
        v["verified"] = report.verified().into();
        v["healthy"] = report.healthy().into();
        print_json(&v);
    } else {
        out!(
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
                out!(
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
