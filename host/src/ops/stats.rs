//! Repository figures: how much is stored, and how well it deduplicates and compresses.

use coffer_repo::crypto::Tag;
use coffer_repo::Repository;
use serde::Serialize;

use crate::error::Result;

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// `None` with a write-only key, which cannot read snapshots.
    pub snapshots: Option<usize>,
    pub packs: usize,
    pub chunks: usize,
    pub data_chunks: usize,
    pub tree_chunks: usize,
    pub stored_bytes: u64,
    pub unique_raw_bytes: u64,
    pub unique_compressed_bytes: u64,
    pub snapshot_total_bytes: u64,
    pub compression_ratio: f64,
    pub dedup_ratio: f64,
}

/// Reads the index (and, with a full key, every snapshot's summary).
pub fn stats(repo: &Repository) -> Result<Stats> {
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
    if !repo.secrets().is_write_only() {
        let list = repo.list_snapshots()?;
        logical = list
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok()?.summary.as_ref().map(|x| x.total_bytes))
            .sum();
        snapshots = Some(list.len());
    }
    Ok(Stats {
        snapshots,
        packs: index.packs().count(),
        chunks: index.chunk_count(),
        data_chunks: index.count(Tag::Data),
        tree_chunks: index.count(Tag::Tree),
        stored_bytes: stored,
        unique_raw_bytes: raw,
        unique_compressed_bytes: frames,
        snapshot_total_bytes: logical,
        compression_ratio: if frames > 0 {
            raw as f64 / frames as f64
        } else {
            1.0
        },
        dedup_ratio: if raw > 0 {
            logical as f64 / raw as f64
        } else {
            1.0
        },
    })
}
