//! `repair index`: rebuild the index from the packs' own tables of contents.
//!
//! Every pack ends with a table of contents naming each chunk in it and where it lies
//! ([`crate::pack`]), so the index is a cache that can always be rebuilt: a lost or damaged index
//! object costs nothing. Packs no sound index object names are read (checked against their id and
//! decrypted: a full key is needed), their tables of contents written into new index objects,
//! and only then are the damaged index objects removed. Safe to kill and run again at any point:
//! at worst a pack is indexed twice.

use std::collections::HashSet;

use serde::Serialize;

use crate::error::Result;
use crate::id::{IndexId, PackId};
use crate::index::{self, IndexPack};
use crate::{pack, parallel_map, Repository};

#[derive(Debug, Default, Serialize)]
pub struct RepairSummary {
    pub dry_run: bool,
    /// Packs in the store.
    pub packs: usize,
    /// Packs no sound index object named.
    pub packs_unindexed: usize,
    /// Of those, packs whose table of contents went into a new index object.
    pub packs_indexed: usize,
    /// Packs that could not be read (damaged or gone): named, with why.
    pub packs_unreadable: Vec<String>,
    pub index_objects_written: usize,
    /// Damaged index objects removed once their packs were indexed again.
    pub index_objects_removed: Vec<String>,
}

pub fn repair_index(repo: &Repository, dry_run: bool) -> Result<RepairSummary> {
    repo.secrets()
        .data_identity("rebuild the index (it reads every pack's table of contents)")?;
    let mut sum = RepairSummary {
        dry_run,
        ..RepairSummary::default()
    };
    let (files, damaged) = repo.load_index_files()?;
    let known: HashSet<PackId> = files
        .iter()
        .flat_map(|(_, f)| f.packs.iter().map(|p| p.id))
        .collect();
    let stored = repo.list_packs()?;
    sum.packs = stored.len();
    let missing: Vec<(PackId, u64)> = stored
        .iter()
        .filter(|p| !known.contains(&p.id))
        .map(|p| (p.id, p.size))
        .collect();
    sum.packs_unindexed = missing.len();
    if dry_run {
        sum.index_objects_removed = damaged.iter().map(|(id, _)| index::key(id)).collect();
        return Ok(sum);
    }
    let read = parallel_map(&missing, |(id, size)| -> Result<IndexPack> {
        let plain = repo.read_pack(id)?;
        let chunks = pack::read_toc(&plain, &pack::key(id))?;
        Ok(IndexPack {
            id: *id,
            size: *size,
            chunks,
        })
    });
    let mut rebuilt = vec![];
    for ((id, _), r) in missing.iter().zip(read) {
        match r {
            Ok(p) => rebuilt.push(p),
            Err(e) => {
                tracing::warn!("{} cannot be indexed: {e}", pack::key(id));
                sum.packs_unreadable.push(format!("{}: {e}", pack::key(id)));
            }
        }
    }
    rebuilt.sort_by_key(|p| p.id);
    sum.packs_indexed = rebuilt.len();
    let refs: Vec<_> = rebuilt.iter().map(IndexPack::borrowed).collect();
    let written = repo.save_index_groups(&refs)?;
    sum.index_objects_written = written.len();
    // The damaged objects go last, when what they may have listed is indexed again; one
    // rebuilt exactly as it was has been written over with its sound content, and stays.
    let gone: Vec<IndexId> = damaged
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !written.contains(id))
        .collect();
    repo.delete_index_files(&gone)?;
    sum.index_objects_removed = gone.iter().map(index::key).collect();
    Ok(sum)
}
