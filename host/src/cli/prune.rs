//! `coffer prune`: delete data no snapshot needs, in two phases (see `coffer_repo::prune`).

use std::sync::Arc;

use anyhow::Result;
use coffer::ExitCode;
use coffer_repo::prune::{PruneOptions, PruneSummary};

use super::{human, print_json, Global};

#[derive(clap::Args, Clone)]
pub struct Args {
    #[command(flatten)]
    pub knobs: Knobs,
    /// Say what would be marked and deleted; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// The settings `forget --prune` shares.
#[derive(clap::Args, Clone)]
pub struct Knobs {
    /// How long marked data waits before it is deleted (90s, 30min, 12h, 7d); longer than any
    /// backup takes
    #[arg(long, default_value = "24h", value_parser = coffer_repo::prune::parse_grace)]
    pub grace: std::time::Duration,
    /// Repack a partly used pack when at least this many percent of it is unused (0: any unused
    /// byte)
    #[arg(long, default_value_t = 25.0)]
    pub repack_unused: f64,
}

impl Knobs {
    pub fn options(&self, dry_run: bool) -> Result<PruneOptions> {
        anyhow::ensure!(
            (0.0..=100.0).contains(&self.repack_unused),
            "--repack-unused is a percentage between 0 and 100"
        );
        Ok(PruneOptions {
            grace: self.grace,
            repack_unused: self.repack_unused / 100.0,
            dry_run,
        })
    }
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let opts = a.knobs.options(a.dry_run)?;
    let repo = Arc::new(g.open()?);
    let sum = coffer_repo::prune::prune(&repo, &opts)?;
    report(g, &sum);
    Ok(ExitCode::Ok)
}

pub fn report(g: &Global, s: &PruneSummary) {
    if g.json {
        print_json(s);
        return;
    }
    let would = if s.dry_run { "would be " } else { "" };
    out!(
        "{} snapshot(s) read; {} mark(s) past their grace period: {} pack(s) ({}) {would}deleted, {} kept because a snapshot needs them",
        s.snapshots,
        s.marks_swept,
        s.packs_deleted,
        human(s.bytes_deleted),
        s.packs_recovered
    );
    out!(
        "{} pack(s) ({}) {would}marked for deletion after the grace period, {} of them repacked first ({} still needed copied out); {} too young to judge",
        s.packs_marked,
        human(s.bytes_marked),
        s.packs_repacked,
        human(s.bytes_repacked),
        s.packs_too_young
    );
    if let Some(t) = s.too_young_until {
        out!(
            "  the first of the {} pack(s) too young to judge can be marked from {} (run prune again then, or pass a shorter --grace)",
            s.packs_too_young,
            t.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    for (key, left) in &s.marks_waiting {
        out!("  {key}: {left} s of grace left");
    }
    if s.abandoned_files > 0 {
        out!(
            "{} staged file(s) ({}) that interrupted writes left {would}removed",
            s.abandoned_files,
            human(s.abandoned_bytes)
        );
    }
    out!(
        "index objects: {} -> {}",
        s.index_objects_before,
        s.index_objects_after
    );
}
