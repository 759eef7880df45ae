//! The index: which chunk lives in which pack, at which offset.
//!
//! Index objects (`index/<id>`) are zstd-compressed JSON, age-encrypted to the index recipient,
//! and named by the keyed BLAKE3 of their plaintext JSON. A backup writes one every few packs, so a
//! backup killed midway leaves its finished packs indexed and the next backup reuses them.
//! Indexes may overlap (two hosts uploading the same chunk): the first location found is the
//! chunk's place, the others are kept as alternates, to read from when that place turns out to be
//! damaged.

pub(crate) mod table;

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

impl IndexPack {
    pub fn borrowed(&self) -> IndexPackRef<'_> {
        IndexPackRef {
            id: self.id,
            size: self.size,
            chunks: &self.chunks,
        }
    }
}

/// The plaintext of one index object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IndexFile {
    pub packs: Vec<IndexPack>,
}

/// Packs per index object when the whole index is written anew (prune's compaction, repair).
pub const PACKS_PER_OBJECT: usize = 2000;
/// Chunks per index object then (~17 MB of JSON): packs of small files hold thousands, and two
/// thousand such packs made one object larger than a reader accepts.
pub const CHUNKS_PER_OBJECT: usize = 100_000;

/// An index object's pack, borrowed: what compaction writes without copying every entry.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IndexPackRef<'a> {
    pub id: PackId,
    pub size: u64,
    pub chunks: &'a [PackEntry],
}

#[derive(Serialize)]
pub(crate) struct IndexFileRef<'a> {
    pub packs: &'a [IndexPackRef<'a>],
}

/// Cuts `packs` into index objects of at most [`PACKS_PER_OBJECT`] packs and (unless one pack
/// alone has more) [`CHUNKS_PER_OBJECT`] chunks.
pub fn object_groups<'p, 'a>(packs: &'p [IndexPackRef<'a>]) -> Vec<&'p [IndexPackRef<'a>]> {
    let mut groups = vec![];
    let (mut start, mut chunks) = (0, 0);
    for (i, p) in packs.iter().enumerate() {
        if i > start
            && (i - start >= PACKS_PER_OBJECT || chunks + p.chunks.len() > CHUNKS_PER_OBJECT)
        {
            groups.push(&packs[start..i]);
            (start, chunks) = (i, 0);
        }
        chunks += p.chunks.len();
    }
    if start < packs.len() {
        groups.push(&packs[start..]);
    }
    groups
}

pub fn key(id: &crate::id::IndexId) -> String {
    format!("index/{}", id.to_hex())
}

/// Opens the cached index table at `path` (see [`table`]); `Ok(None)` when there is none or it
/// holds an index object no longer `listed`.
pub(crate) fn open_table(
    path: &std::path::Path,
    key: &[u8; 32],
    listed: &HashSet<crate::id::IndexId>,
) -> std::io::Result<Option<table::Table>> {
    table::open(path, key, listed, table::IN_MEMORY_RECORDS)
}

/// One place of one chunk: 52 bytes in memory (49 in the table), where a map entry of id to
/// location took over 100.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record {
    id: ChunkId,
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    tag: Tag,
}

impl Record {
    fn entry(&self) -> PackEntry {
        PackEntry {
            id: self.id,
            tag: self.tag,
            offset: self.offset,
            length: self.length,
            raw_length: self.raw_length,
        }
    }
}

/// A set of chunk ids, kept as bits over an index's records (ids it lacks in a hash set).
pub struct ChunkSet<'a> {
    index: &'a Index,
    bits: Vec<u64>,
    outside: HashSet<ChunkId>,
}

impl ChunkSet<'_> {
    fn position(&self, id: &ChunkId) -> Option<usize> {
        if self.bits.is_empty() {
            return None;
        }
        let r = self.index.mine_range(id);
        (!r.is_empty()).then_some(r.start)
    }

    /// Adds `id`; whether it was new.
    pub fn insert(&mut self, id: &ChunkId) -> bool {
        match self.position(id) {
            Some(i) => {
                let (w, b) = (i / 64, 1u64 << (i % 64));
                let new = self.bits[w] & b == 0;
                self.bits[w] |= b;
                new
            }
            None => self.outside.insert(*id),
        }
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        match self.position(id) {
            Some(i) => self.bits[i / 64] & (1 << (i % 64)) != 0,
            None => self.outside.contains(id),
        }
    }

    /// How many of the ids are not in the index.
    pub fn unindexed(&self) -> usize {
        self.outside
            .iter()
            .filter(|c| !self.index.contains(c))
            .count()
    }
}

/// The bucket of `id` among `2^bits`: its first bits.
fn bucket(id: &ChunkId, bits: u32) -> usize {
    let top = u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]);
    top.checked_shr(32 - bits).unwrap_or(0) as usize
}

/// Where the records of `id` are in a slice sorted by (id, pack).
fn id_range(sorted: &[Record], id: &ChunkId) -> std::ops::Range<usize> {
    let from = sorted.partition_point(|r| r.id < *id);
    from..from + sorted[from..].partition_point(|r| r.id == *id)
}

/// The records of `id` in a slice sorted by (id, pack).
fn group_of<'a>(sorted: &'a [Record], id: &ChunkId) -> &'a [Record] {
    &sorted[id_range(sorted, id)]
}

/// Where bucket `b`'s records are, by a fanout of where each bucket ends.
fn bucket_span(fanout: &[u32], b: usize) -> std::ops::Range<usize> {
    let from = if b == 0 { 0 } else { fanout[b - 1] as usize };
    from..fanout[b] as usize
}

/// Turns counts per bucket into where each bucket ends.
fn cumulate(fanout: &mut [u32]) {
    let mut end = 0;
    for f in fanout.iter_mut() {
        end += *f;
        *f = end;
    }
}

/// The union of index objects.
///
/// Packs named by a prune mark are *doomed*: they can still be read (a snapshot saved before the
/// mark may need them until the prune that sweeps them keeps them), but a backup never
/// deduplicates against them ([`Index::reuse`]), and a chunk stored in a doomed and a live pack is
/// found in the live one.
///
/// Chunks are kept as records sorted by id (a chunk stored in several packs has several, the
/// first-loaded pack first): those of the index table in the local cache (in memory or, for a
/// large repository, on disk; see [`table`]) and those loaded from index objects the table does
/// not hold yet.
#[derive(Default)]
pub struct Index {
    packs: Vec<(PackId, u64)>,
    pack_pos: HashMap<PackId, u32>,
    /// Records from index objects, sorted by (id, pack) once loading is done.
    records: Vec<Record>,
    /// Where each bucket of `records` ends, the bucket being the first `bits` bits of the id:
    /// a lookup searches a few records instead of the whole array (a binary search over ten
    /// million records missed the CPU cache at every step).
    fanout: Vec<u32>,
    bits: u32,
    /// The cached table the records above add to, when it is large enough to stay on disk.
    table: Option<table::Disk>,
    /// Index objects the table and the records hold.
    pub(crate) objects: HashSet<crate::id::IndexId>,
    /// Index objects loaded from the store rather than the table.
    pub(crate) fetched: usize,
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

    /// Starts from a cached table (before any index object is added).
    pub(crate) fn attach(&mut self, t: table::Table) {
        debug_assert!(self.packs.is_empty() && self.records.is_empty());
        for (id, size) in t.packs {
            self.pack_number(id, size);
        }
        self.objects = t.objects;
        match t.records {
            // A small table joins the loaded records: one sorted slice to search.
            table::Records::Memory(v) => {
                self.records = v;
                self.sort();
            }
            table::Records::Disk(disk) => self.table = Some(disk),
        }
    }

    fn pack_number(&mut self, id: PackId, size: u64) -> u32 {
        *self.pack_pos.entry(id).or_insert_with(|| {
            self.packs.push((id, size));
            self.relied.push(AtomicBool::new(false));
            (self.packs.len() - 1) as u32
        })
    }

    /// Where the loaded records of `id` are in `records`.
    fn mine_range(&self, id: &ChunkId) -> std::ops::Range<usize> {
        let span = if self.fanout.is_empty() {
            0..self.records.len()
        } else {
            bucket_span(&self.fanout, bucket(id, self.bits))
        };
        let r = id_range(&self.records[span.clone()], id);
        span.start + r.start..span.start + r.end
    }

    /// The loaded records of `id`.
    fn mine(&self, id: &ChunkId) -> &[Record] {
        &self.records[self.mine_range(id)]
    }

    /// Every pack holding `id`.
    pub fn places(&self, id: &ChunkId) -> Vec<PackId> {
        self.group(id)
            .iter()
            .map(|r| self.packs[r.pack as usize].0)
            .collect()
    }

    /// An empty set of chunks, a bit per chunk this index holds (prune's "needed": a hash set
    /// of ten million ids took half a GiB).
    pub fn chunk_set(&self) -> ChunkSet<'_> {
        ChunkSet {
            index: self,
            bits: if self.table.is_none() {
                vec![0; self.records.len().div_ceil(64)]
            } else {
                vec![]
            },
            outside: HashSet::new(),
        }
    }

    /// Every place of `id`, by pack.
    fn group(&self, id: &ChunkId) -> std::borrow::Cow<'_, [Record]> {
        let mine = self.mine(id);
        match &self.table {
            None => std::borrow::Cow::Borrowed(mine),
            Some(t) => {
                let mut g = t.group(id);
                if g.is_empty() {
                    return std::borrow::Cow::Borrowed(mine);
                }
                g.extend_from_slice(mine);
                g.sort_by_key(|r| r.pack);
                g.dedup_by_key(|r| r.pack);
                std::borrow::Cow::Owned(g)
            }
        }
    }

    fn is_doomed(&self, r: &Record) -> bool {
        self.doomed.contains(&self.packs[r.pack as usize].0)
    }

    /// Of a chunk's places, the one to read: the first in a live pack, else the first.
    fn preferred(&self, g: &[Record]) -> Option<usize> {
        if g.is_empty() {
            return None;
        }
        Some(g.iter().position(|r| !self.is_doomed(r)).unwrap_or(0))
    }

    /// Whether a backup may reference this stored chunk instead of storing it: it is indexed in
    /// a pack no prune has marked. Remembers the pack as relied upon (see
    /// [`Index::relied_packs`]).
    pub fn reuse(&self, id: &ChunkId) -> bool {
        let g = self.group(id);
        match self.preferred(&g).map(|i| g[i]) {
            Some(r) if !self.is_doomed(&r) => {
                self.relied[r.pack as usize].store(true, Ordering::Relaxed);
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

    /// Adds an index object's packs; call [`Index::sort`] before looking anything up.
    pub(crate) fn add_file_unsorted(&mut self, f: &IndexFile) {
        for p in &f.packs {
            let pack = self.pack_number(p.id, p.size);
            self.records.extend(p.chunks.iter().map(|e| Record {
                id: e.id,
                pack,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
                tag: e.tag,
            }));
        }
    }

    /// Sorts the records added since the last sort, dropping a chunk listed twice for one pack.
    pub(crate) fn sort(&mut self) {
        self.records.sort_unstable_by_key(|r| (r.id, r.pack));
        self.records.dedup_by_key(|r| (r.id, r.pack));
        self.records.shrink_to_fit();
        // About four records a bucket.
        let n = self.records.len();
        self.bits = (usize::BITS - (n / 4).leading_zeros()).min(24);
        self.fanout = vec![0; 1 << self.bits];
        for r in &self.records {
            self.fanout[bucket(&r.id, self.bits)] += 1;
        }
        cumulate(&mut self.fanout);
    }

    pub fn add_file(&mut self, f: &IndexFile) {
        self.add_file_unsorted(f);
        self.sort();
    }

    pub fn add_pack(&mut self, id: PackId, size: u64, chunks: &[PackEntry]) {
        self.add_file(&IndexFile {
            packs: vec![IndexPack {
                id,
                size,
                chunks: chunks.to_vec(),
            }],
        });
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        !self.group(id).is_empty()
    }

    pub fn get(&self, id: &ChunkId) -> Option<(PackId, PackEntry)> {
        let g = self.group(id);
        self.preferred(&g)
            .map(|i| (self.packs[g[i].pack as usize].0, g[i].entry()))
    }

    /// The other places of a chunk stored more than once (after [`Index::get`]'s).
    pub fn alternates(&self, id: &ChunkId) -> Vec<(PackId, PackEntry)> {
        let g = self.group(id);
        let Some(p) = self.preferred(&g) else {
            return vec![];
        };
        g.iter()
            .enumerate()
            .filter(|(i, _)| *i != p)
            .map(|(_, r)| (self.packs[r.pack as usize].0, r.entry()))
            .collect()
    }

    /// Every record, the table's and the loaded ones merged, sorted by (id, pack).
    fn all_records(&self) -> impl Iterator<Item = Record> + '_ {
        let mut a = self.table.iter().flat_map(|t| t.iter()).peekable();
        let mut b = self.records.iter().copied().peekable();
        std::iter::from_fn(move || match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => {
                if (x.id, x.pack) == (y.id, y.pack) {
                    b.next();
                    a.next()
                } else if (x.id, x.pack) < (y.id, y.pack) {
                    a.next()
                } else {
                    b.next()
                }
            }
            (Some(_), None) => a.next(),
            (None, _) => b.next(),
        })
    }

    /// Every chunk's places, chunk by chunk.
    fn groups(&self) -> impl Iterator<Item = Vec<Record>> + '_ {
        let mut all = self.all_records().peekable();
        std::iter::from_fn(move || {
            let first = all.next()?;
            let mut g = vec![first];
            while let Some(r) = all.next_if(|r| r.id == first.id) {
                g.push(r);
            }
            Some(g)
        })
    }

    /// Every place of every chunk stored more than once, beside the one [`Index::chunks`] gives.
    pub fn alternate_places(&self) -> impl Iterator<Item = (ChunkId, PackId)> + '_ {
        self.groups().filter(|g| g.len() > 1).flat_map(move |g| {
            let p = self.preferred(&g).unwrap_or(0);
            g.into_iter()
                .enumerate()
                .filter(move |(i, _)| *i != p)
                .map(move |(_, r)| (r.id, self.packs[r.pack as usize].0))
        })
    }

    pub fn packs(&self) -> impl Iterator<Item = (PackId, u64)> + '_ {
        self.packs.iter().copied()
    }

    pub fn pack_size(&self, id: &PackId) -> Option<u64> {
        self.pack_pos.get(id).map(|p| self.packs[*p as usize].1)
    }

    pub fn chunks(&self) -> impl Iterator<Item = (ChunkId, PackId, PackEntry)> + '_ {
        self.groups().map(move |g| {
            let r = g[self.preferred(&g).unwrap_or(0)];
            (r.id, self.packs[r.pack as usize].0, r.entry())
        })
    }

    pub fn chunk_count(&self) -> usize {
        self.groups().count()
    }

    pub fn count(&self, tag: Tag) -> usize {
        self.chunks().filter(|(_, _, e)| e.tag == tag).count()
    }

    /// Records held (a chunk stored twice counts twice): on disk, in memory.
    pub(crate) fn record_counts(&self) -> (u64, u64) {
        (
            self.table.as_ref().map_or(0, |t| t.len()),
            self.records.len() as u64,
        )
    }

    /// Writes the whole index as the table at `path`.
    pub(crate) fn save_table(&self, path: &std::path::Path, key: &[u8; 32]) -> std::io::Result<()> {
        table::write(path, key, &self.objects, &self.packs, self.all_records())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::IndexId;

    fn entry(n: u8, offset: u32) -> PackEntry {
        PackEntry {
            id: ChunkId([n; 32]),
            tag: if n % 2 == 0 { Tag::Data } else { Tag::Tree },
            offset,
            length: 10 + n as u32,
            raw_length: 20 + n as u32,
        }
    }

    fn views(i: &Index) -> Vec<String> {
        let mut out = vec![format!(
            "{} chunks, {} data",
            i.chunk_count(),
            i.count(Tag::Data)
        )];
        for n in 0..8u8 {
            let id = ChunkId([n; 32]);
            out.push(format!(
                "{n}: {:?} {:?} {} {}",
                i.get(&id)
                    .map(|(p, e)| (p, e.offset, e.length, e.raw_length, e.tag)),
                i.alternates(&id)
                    .iter()
                    .map(|(p, e)| (*p, e.offset))
                    .collect::<Vec<_>>(),
                i.contains(&id),
                i.reuse(&id),
            ));
        }
        out.extend(
            i.chunks()
                .map(|(c, p, e)| format!("{:?} {p:?} {}", c, e.offset)),
        );
        out.extend(
            i.alternate_places()
                .map(|(c, p)| format!("alt {c:?} {p:?}")),
        );
        out
    }

    /// Index objects written anew stay below what a reader accepts, however many chunks a pack
    /// holds.
    #[test]
    fn index_objects_are_cut_by_packs_and_by_chunks() {
        let big = vec![entry(1, 0); 60_000];
        let small = vec![entry(2, 0); 3];
        let refs = |n: usize, chunks: &'static [PackEntry]| -> Vec<IndexPackRef<'static>> {
            (0..n)
                .map(|i| IndexPackRef {
                    id: PackId([i as u8; 32]),
                    size: 1,
                    chunks,
                })
                .collect()
        };
        let big: &'static [PackEntry] = Box::leak(big.into_boxed_slice());
        let small: &'static [PackEntry] = Box::leak(small.into_boxed_slice());
        let sizes = |p: &[IndexPackRef]| -> Vec<usize> {
            object_groups(p).iter().map(|g| g.len()).collect()
        };
        assert_eq!(sizes(&refs(3, big)), vec![1, 1, 1]);
        assert_eq!(sizes(&refs(2001, small)), vec![2000, 1]);
        assert_eq!(sizes(&refs(0, small)), Vec::<usize>::new());
        let one_huge = vec![entry(3, 0); 150_000];
        let one_huge: &'static [PackEntry] = Box::leak(one_huge.into_boxed_slice());
        assert_eq!(sizes(&refs(1, one_huge)), vec![1]);
    }

    #[test]
    fn writing_a_table_removes_temporary_ones_abandoned_for_an_hour() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str, age_secs: u64| {
            let p = dir.path().join(name);
            let f = std::fs::File::create(&p).unwrap();
            f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs))
                .unwrap();
            p
        };
        let abandoned = at(".index.table.1.0.tmp", 7200);
        let writing = at(".index.table.2.0.tmp", 60);
        let other = at("notes.tmp", 7200);
        let index = Index::with_doomed(HashSet::new(), HashSet::new());
        index
            .save_table(&dir.path().join("index.table"), &[1; 32])
            .unwrap();
        assert!(!abandoned.exists());
        assert!(writing.exists() && other.exists());
        assert!(dir.path().join("index.table").exists());
    }

    /// The table, read back in memory or searched on disk, answers as the index it was written
    /// from: places, alternates, the live pack preferred over a doomed one, counts.
    #[test]
    fn the_table_answers_as_the_index_it_was_written_from() {
        let (a, b, c) = (PackId([1; 32]), PackId([2; 32]), PackId([3; 32]));
        let doomed: HashSet<PackId> = [a].into();
        let mut index = Index::with_doomed(doomed.clone(), HashSet::new());
        index.add_pack(a, 100, &[entry(1, 0), entry(2, 10), entry(3, 20)]);
        index.add_pack(b, 200, &[entry(2, 5), entry(4, 15), entry(4, 15)]);
        index.add_pack(c, 300, &[entry(5, 0), entry(2, 7), entry(6, 9)]);
        index.objects.insert(IndexId([9; 32]));
        let expected = views(&index);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t").join("index.table");
        let key = [7u8; 32];
        index.save_table(&path, &key).unwrap();
        let listed: HashSet<IndexId> = [IndexId([9; 32]), IndexId([8; 32])].into();
        for limit in [u64::MAX, 0] {
            let t = table::open(&path, &key, &listed, limit).unwrap().unwrap();
            assert_eq!(matches!(t.records, table::Records::Disk(_)), limit == 0);
            let mut back = Index::with_doomed(doomed.clone(), HashSet::new());
            back.attach(t);
            assert_eq!(views(&back), expected);
            // Loaded objects add to it, as a backup's index objects do.
            back.add_file(&IndexFile {
                packs: vec![IndexPack {
                    id: PackId([4; 32]),
                    size: 9,
                    chunks: vec![entry(7, 1), entry(1, 2)],
                }],
            });
            assert_eq!(back.get(&ChunkId([1; 32])).unwrap().0, PackId([4; 32]));
            assert!(back.reuse(&ChunkId([7; 32])) && back.reuse(&ChunkId([1; 32])));
            assert_eq!(back.chunk_count(), 7);
            assert_eq!(back.alternates(&ChunkId([1; 32])).len(), 1);
        }

        // An object no longer listed (a prune compacted it away): stale, not opened.
        let only_other: HashSet<IndexId> = [IndexId([8; 32])].into();
        assert!(table::open(&path, &key, &only_other, 0).unwrap().is_none());
        // Another key (another repository) or a flipped byte: an error, never wrong answers.
        assert!(table::open(&path, &[6u8; 32], &listed, 0).is_err());
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = table::open(&path, &key, &listed, 0).err().unwrap();
        assert!(err.to_string().contains("hash does not match"), "{err}");
        std::fs::write(&path, &bytes[..100]).unwrap();
        assert!(table::open(&path, &key, &listed, 0).is_err());
    }
}
