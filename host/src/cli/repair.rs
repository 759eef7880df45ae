//! `coffer repair index`: rebuild the index from the packs' own tables of contents.

use anyhow::Result;
use coffer::ExitCode;

use super::{print_json, Global};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Index every pack no sound index object names (from its own table of contents), then
    /// remove the damaged index objects. Needs a full key.
    Index {
        /// Say what would be done; change nothing
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(g: &Global, c: &Command) -> Result<ExitCode> {
    let Command::Index { dry_run } = c;
    let repo = g.open()?;
    let s = coffer_repo::repair::repair_index(&repo, *dry_run)?;
    if g.json {
        print_json(&s);
    } else {
        let would = if s.dry_run { "would be " } else { "" };
        out!(
            "{} pack(s) in the store, {} in no sound index object: {} {would}indexed from their tables of contents",
            s.packs,
            s.packs_unindexed,
            if s.dry_run { s.packs_unindexed } else { s.packs_indexed }
        );
        for p in &s.packs_unreadable {
            out!("  not indexed (unreadable): {p}");
        }
        for o in &s.index_objects_removed {
            out!("  damaged index object {would}removed: {o}");
        }
    }
    Ok(if s.packs_unreadable.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::Integrity
    })
}
