//! The index: which chunk lives in which pack, at which offset.
//!
//! Index objects (`index/<id>`) are zstd-compressed JSON, age-encrypted to the index recipient,
//! and named by the keyed BLAKE3 of their plaintext JSON. A backup writes one every few packs, so a
//! backup killed midway leaves its finished packs indexed and the next backup reuses them.
//! Indexes may overlap (two hosts uploading the same chunk): the first location found is the
//! chunk's place, the others are kept as alternates, to read from when that place turns out to be
//! damaged.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::crypto::Tag;
use crate::id::{ChunkId, PackId};
use crate::pack::PackEntry;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexPack {
    pub id: PackId,
    /// Stored (encrypted) size of the pack in bytes.
    pub size: u64,
    pub chunks: Vec<PackEntry>,
}

/// The plaintext of one index object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IndexFile {
    pub packs: Vec<IndexPack>,
}

/// Packs per index object when the whole index is written anew (prune's compaction, repair).
pub const PACKS_PER_OBJECT: usize = 2000;

pub fn key(id: &crate::id::IndexId) -> String {
    format!("index/{}", id.to_hex())
}

/// Where a chunk is, as the in-memory index keeps it.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    pack: u32,
    pub entry: PackEntry,
}

/// The in-memory union of index objects.
///
/// Packs named by a prune mark are *doomed*: they can still be read (a snapshot saved before the
/// mark may need them until the prune that sweeps them keeps them), but a backup never
/// deduplicates against them ([`Index::reuse`]), and a chunk stored in a doomed and a live pack is
/// found in the live one.
#[derive(Default)]
pub struct Index {
    packs: Vec<(PackId, u64)>,
    pack_pos: HashMap<PackId, u32>,
    chunks: HashMap<ChunkId, Location>,
    /// Further places of chunks stored more than once (concurrent backups of the same data).
    alternates: HashMap<ChunkId, Vec<Location>>,
    doomed: HashSet<PackId>,
    /// Per pack: whether [`Index::reuse`] answered yes for one of its chunks.
    relied: Vec<AtomicBool>,
    /// Keys of the prune marks known when this index was loaded.
    pub marks_seen: HashSet<String>,
}

impl Index {
    /// An empty index that treats `doomed` packs as about to be deleted.
    pub fn with_doomed(doomed: HashSet<PackId>, marks_seen: HashSet<String>) -> Index {
        Index {
            doomed,
            marks_seen,
            ..Index::default()
        }
    }

    /// Whether a backup may reference this stored chunk instead of storing it: it is indexed in
    /// a pack no prune has marked. Remembers the pack as relied upon (see
    /// [`Index::relied_packs`]).
    pub fn reuse(&self, id: &ChunkId) -> bool {
        match self.chunks.get(id) {
            Some(l) if !self.doomed.contains(&self.packs[l.pack as usize].0) => {
                self.relied[l.pack as usize].store(true, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Packs [`Index::reuse`] let a backup rely on.
    pub fn relied_packs(&self) -> Vec<PackId> {
        self.relied
            .iter()
            .enumerate()
            .filter(|(_, r)| r.load(Ordering::Relaxed))
            .map(|(i, _)| self.packs[i].0)
            .collect()
    }

    pub fn add_file(&mut self, f: &IndexFile) {
        for p in &f.packs {
            self.add_pack(p.id, p.size, &p.chunks);
        }
    }

    pub fn add_pack(&mut self, id: PackId, size: u64, chunks: &[PackEntry]) {
        let pos = *self.pack_pos.entry(id).or_insert_with(|| {
            self.packs.push((id, size));
            self.relied.push(AtomicBool::new(false));
            (self.packs.len() - 1) as u32
        });
        let live = !self.doomed.contains(&id);
        for e in chunks {
            let here = Location {
                pack: pos,
                entry: *e,
            };
            match self.chunks.entry(e.id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(here);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    if o.get().pack == pos {
                        continue;
                    }
                    let other =
                        if live && self.doomed.contains(&self.packs[o.get().pack as usize].0) {
                            o.insert(here)
                        } else {
                            here
                        };
                    let alts = self.alternates.entry(e.id).or_default();
                    if !alts.iter().any(|a| a.pack == other.pack) {
                        alts.push(other);
                    }
                }
            }
        }
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.chunks.contains_key(id)
    }

    pub fn get(&self, id: &ChunkId) -> Option<(PackId, PackEntry)> {
        self.chunks
            .get(id)
            .map(|l| (self.packs[l.pack as usize].0, l.entry))
    }

    /// The other places of a chunk stored more than once (after [`Index::get`]'s).
    pub fn alternates(&self, id: &ChunkId) -> Vec<(PackId, PackEntry)> {
        self.alternates
            .get(id)
            .map(|v| {
                v.iter()
                    .map(|l| (self.packs[l.pack as usize].0, l.entry))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every place of every chunk stored more than once, beside the one [`Index::chunks`] gives.
    pub fn alternate_places(&self) -> impl Iterator<Item = (ChunkId, PackId)> + '_ {
        self.alternates
            .iter()
            .flat_map(move |(id, v)| v.iter().map(move |l| (*id, self.packs[l.pack as usize].0)))
    }

    pub fn packs(&self) -> impl Iterator<Item = (PackId, u64)> + '_ {
        self.packs.iter().copied()
    }

    pub fn pack_size(&self, id: &PackId) -> Option<u64> {
        self.pack_pos.get(id).map(|p| self.packs[*p as usize].1)
    }

    pub fn chunks(&self) -> impl Iterator<Item = (ChunkId, PackId, PackEntry)> + '_ {
        self.chunks
            .iter()
            .map(|(id, l)| (*id, self.packs[l.pack as usize].0, l.entry))
    }

    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    pub fn count(&self, tag: Tag) -> usize {
        self.chunks.values().filter(|l| l.entry.tag == tag).count()
    }
}
