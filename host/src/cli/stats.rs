//! `coffer stats`: how much is stored, and how well it deduplicates and compresses.

use anyhow::Result;
use coffer::crypto::Tag;
use coffer::ExitCode;

use super::{human, print_json, Global};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(g: &Global, _a: &Args) -> Result<ExitCode> {
    let repo = g.open()?;
    let (index, _) = repo.load_index()?;
    let stored: u64 = index.packs().map(|(_, s)| s).sum();
    let mut raw = 0u64;
    let mut frames = 0u64;
    for (_, _, e) in index.chunks() {
        raw += e.raw_length as u64;
        frames += e.length as u64;
    }
    let mut snapshots = None;
    let mut logical = 0u64;
    if !repo.secrets.is_write_only() {
        let list = repo.list_snapshots()?;
        logical = list
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok()?.summary.as_ref().map(|x| x.total_bytes))
            .sum();
        snapshots = Some(list.len());
    }
    let v = serde_json::json!({
        "snapshots": snapshots,
        "packs": index.packs().count(),
        "chunks": index.chunk_count(),
        "data_chunks": index.count(Tag::Data),
        "tree_chunks": index.count(Tag::Tree),
        "stored_bytes": stored,
        "unique_raw_bytes": raw,
        "unique_compressed_bytes": frames,
        "snapshot_total_bytes": logical,
        "compression_ratio": if frames > 0 { raw as f64 / frames as f64 } else { 1.0 },
        "dedup_ratio": if raw > 0 { logical as f64 / raw as f64 } else { 1.0 },
    });
    if g.json {
        print_json(&v);
    } else {
        if let Some(n) = snapshots {
            println!("snapshots:        {n} ({} in all)", human(logical));
        }
        println!(
            "packs:            {} ({} stored)",
            index.packs().count(),
            human(stored)
        );
        println!(
            "unique chunks:    {} ({} before compression)",
            index.chunk_count(),
            human(raw)
        );
        println!(
            "compression:      {:.2}x",
            v["compression_ratio"].as_f64().unwrap_or(1.0)
        );
        if snapshots.is_some() {
            println!(
                "deduplication:    {:.2}x",
                v["dedup_ratio"].as_f64().unwrap_or(1.0)
            );
        }
    }
    Ok(ExitCode::Ok)
}
