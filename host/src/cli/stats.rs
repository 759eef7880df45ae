//! `coffer stats`: how much is stored, and how well it deduplicates and compresses.

use anyhow::Result;
use coffer::ExitCode;

use super::{human, print_json, Global};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(g: &Global, _a: &Args) -> Result<ExitCode> {
    let repo = g.open()?;
    let st = coffer::ops::stats::stats(&repo)?;
    if g.json {
        print_json(&st);
    } else {
        if let Some(n) = st.snapshots {
            out!(
                "snapshots:        {n} ({} in all)",
                human(st.snapshot_total_bytes)
            );
        }
        out!(
            "packs:            {} ({} stored)",
            st.packs,
            human(st.stored_bytes)
        );
        out!(
            "unique chunks:    {} ({} before compression)",
            st.chunks,
            human(st.unique_raw_bytes)
        );
        out!("compression:      {:.2}x", st.compression_ratio);
        if st.snapshots.is_some() {
            out!("deduplication:    {:.2}x", st.dedup_ratio);
        }
    }
    Ok(ExitCode::Ok)
}
