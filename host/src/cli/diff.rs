//! `coffer diff A B`: what changed between two snapshots.

use anyhow::Result;
use coffer::ExitCode;

use super::{print_json, Global};

#[derive(clap::Args)]
pub struct Args {
    /// The older snapshot (id prefix or `latest`)
    pub a: String,
    /// The newer snapshot
    pub b: String,
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let repo = g.open()?;
    let changes = coffer::ops::diff::diff(&repo, &a.a, &a.b)?;
    if g.json {
        print_json(&changes);
    } else {
        for c in &changes {
            out!("{:<2}{}", c.change, c.path);
        }
        let count = |k| changes.iter().filter(|c| c.change == k).count();
        out!(
            "{} added, {} removed, {} modified, {} metadata only",
            count("+"),
            count("-"),
            count("M") + count("T"),
            count("U")
        );
    }
    Ok(ExitCode::Ok)
}
