//! `coffer backup PATH...`: back up files and folders into a new snapshot.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use coffer::ExitCode;
use coffer_repo::archiver::{self, BackupOptions, Counters};

use super::{human, print_json, CliEvents, Global, Progress};

#[derive(clap::Args)]
pub struct Args {
    /// Files and folders to back up; each becomes a top-level entry of the snapshot
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Record this host name instead of the machine's
    #[arg(long)]
    pub host: Option<String>,
    /// Read every file, ignoring the files cache
    #[arg(long)]
    pub no_cache: bool,
}

/// The app of coffer.toml that `paths` names, if it names one.
fn app_name(g: &Global, a: &Args) -> Result<Option<String>> {
    let [one] = a.paths.as_slice() else {
        return Ok(None);
    };
    let name = one.to_string_lossy();
    if name.contains('/') {
        return Ok(None);
    }
    Ok(g.config()?
        .filter(|c| c.apps.contains_key(name.as_ref()))
        .map(|_| name.into_owned()))
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    if let Some(app) = app_name(g, a)? {
        return run_app(g, a, &app);
    }
    let repo = g.open()?;
    let opts = BackupOptions {
        paths: a.paths.clone(),
        tags: a.tags.clone(),
        host: a.host.clone(),
        app: None,
        cache_dir: (!a.no_cache).then(|| g.cache_dir()),
    };
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    let progress = Progress::start("backup", move || {
        format!(
            "{} files, {} read, {} added",
            c.files.load(Ordering::Relaxed),
            human(c.bytes_read.load(Ordering::Relaxed)),
            human(c.bytes_added.load(Ordering::Relaxed))
        )
    });
    let result = archiver::backup(&Arc::new(repo), &opts, counters.clone());
    drop(progress);
    let r = result?;
    for w in &r.warnings {
        eout!("coffer: warning: {w}");
    }
    let s = &r.summary;
    if g.json {
        print_json(&serde_json::json!({
            "snapshot": r.snapshot.to_hex(),
            "files_new": s.files_new,
            "files_changed": s.files_changed,
            "files_unchanged": s.files_unchanged,
            "dirs": s.dirs,
            "bytes_read": s.bytes_read,
            "total_bytes": s.total_bytes,
            "chunks_added": s.chunks_added,
            "bytes_added": s.bytes_added,
            "duration_secs": s.duration_secs,
            "warnings": r.warnings,
            // Where the time went (seconds summed over threads): read, chunk, hash, compress,
            // encrypt, write.
            "stages": counters.stages.secs().iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        }));
    } else {
        out!(
            "snapshot {} saved: {} files ({} new, {} changed, {} unchanged), {} dirs",
            r.snapshot.short(),
            s.files_new + s.files_changed + s.files_unchanged,
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            s.dirs
        );
        out!(
            "read {} of {}, added {} to the repository in {:.1}s",
            human(s.bytes_read),
            human(s.total_bytes),
            human(s.bytes_added),
            s.duration_secs
        );
    }
    Ok(if r.warnings.iter().any(|w| w.starts_with("skipped")) {
        ExitCode::Incomplete
    } else {
        ExitCode::Ok
    })
}

fn run_app(g: &Global, a: &Args, name: &str) -> Result<ExitCode> {
    let config = g.config()?.expect("app_name found a config");
    let repo = Arc::new(g.open()?);
    let opts = coffer::ops::app::BackupOptions {
        tags: a.tags.clone(),
        host: a.host.clone(),
        cache_dir: (!a.no_cache).then(|| g.cache_dir()),
        counters: Arc::new(Counters::default()),
        annotate: None,
    };
    let (r, plugin) =
        coffer::ops::app::backup(&repo, config, name, opts, &CliEvents::shared(g.json))?;
    for w in &r.warnings {
        eout!("coffer: warning: {w}");
    }
    let snap = repo.load_snapshot(&r.snapshot).ok();
    let s = &r.summary;
    if g.json {
        print_json(&serde_json::json!({
            "snapshot": r.snapshot.to_hex(),
            "app": name,
            "plugin": { "name": plugin.info.name, "version": plugin.info.version, "blake3": plugin.blake3 },
            "items": snap.as_ref().map(|s| s.items.clone()),
            "metadata": snap.as_ref().and_then(|s| s.metadata.clone()),
            "bytes_read": s.bytes_read,
            "total_bytes": s.total_bytes,
            "bytes_added": s.bytes_added,
            "duration_secs": s.duration_secs,
            "warnings": r.warnings,
        }));
    } else {
        out!(
            "snapshot {} of app {name} saved by plugin {} {}: {}, added {} in {:.1}s",
            r.snapshot.short(),
            plugin.info.name,
            plugin.info.version,
            human(s.total_bytes),
            human(s.bytes_added),
            s.duration_secs
        );
        if let Some(snap) = snap {
            out!("items: {}", snap.items.join(", "));
        }
    }
    Ok(ExitCode::Ok)
}
