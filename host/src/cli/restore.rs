//! `coffer restore SNAPSHOT --target DIR`: write a snapshot back to disk.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use coffer::restorer::{self, RestoreOptions};
use coffer::ExitCode;

use super::{human, print_json, Global, Progress};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot id (a prefix is enough) or `latest`
    pub snapshot: String,
    /// Folder to restore into (created if missing)
    #[arg(long, short)]
    pub target: PathBuf,
    /// Restore only this path of the snapshot (repeatable)
    #[arg(long)]
    pub include: Vec<PathBuf>,
    /// Restore symlinks that point outside the target as they were
    #[arg(long)]
    pub allow_outside_symlinks: bool,
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let repo = g.open()?;
    repo.secrets.data_identity("restore")?;
    let (id, snap) = repo.find_snapshot(&a.snapshot)?;
    let (index, index_errors) = repo.load_index()?;
    for (i, e) in &index_errors {
        eprintln!("coffer: warning: index {} unreadable: {e}", i.short());
    }
    let opts = RestoreOptions {
        target: a.target.clone(),
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
            a.target.display(),
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
