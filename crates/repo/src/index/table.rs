//! The index table: the union of a repository's index objects as one sorted file in the local
//! cache, so that a command need not fetch, decrypt and parse every index object to start.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! magic "coffer-index-t1\0" | objects u64 | packs u64 | records u64
//! object ids (32 bytes each, sorted)       which index objects the table holds
//! packs (id 32 | stored size u64)          in the index's pack numbering
//! fanout (65536 × u32)                     end of each first-two-bytes bucket of records
//! records (id 32 | pack u32 | offset u32 | length u32 | raw length u32 | tag u8), sorted by
//!   (id, pack)
//! BLAKE3 keyed with a key derived from the repository's id key, of everything before
//! ```
//!
//! It is a cache: a table whose objects are not all still listed (a prune compacted the index) or
//! whose hash does not match is rebuilt from the store. Small tables are read into memory whole;
//! large ones (see [`IN_MEMORY_RECORDS`]) stay on disk and a lookup reads its bucket, so that a
//! repository of ten million chunks does not need ten million chunks' worth of memory.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::crypto::Tag;
use crate::id::{ChunkId, IndexId, PackId};

use super::Record;

const MAGIC: &[u8; 16] = b"coffer-index-t1\0";
const HEADER: u64 = 16 + 24;
const FANOUT: usize = 1 << 16;
pub(crate) const RECORD: usize = 32 + 16 + 1;

/// Tables with more records than this stay on disk (49 bytes a record: 64 MiB).
pub const IN_MEMORY_RECORDS: u64 = 1 << 20;

/// An opened table: its objects and packs in memory, its records in memory or on disk.
pub(crate) struct Table {
    pub objects: HashSet<IndexId>,
    pub packs: Vec<(PackId, u64)>,
    pub records: Records,
}

pub(crate) enum Records {
    Memory(Vec<Record>),
    Disk(Disk),
}

/// The records of a large table, left in its file.
pub(crate) struct Disk {
    file: File,
    fanout: Box<[u32]>,
    start: u64,
    count: u64,
    /// Packs the table lists: a record naming another is malformed.
    packs: u64,
}

fn tag_byte(t: Tag) -> u8 {
    match t {
        Tag::Data => 0,
        Tag::Tree => 1,
        Tag::Index => 2,
        Tag::Snapshot => 3,
        Tag::Mark => 4,
    }
}

fn byte_tag(b: u8) -> Option<Tag> {
    Some(match b {
        0 => Tag::Data,
        1 => Tag::Tree,
        2 => Tag::Index,
        3 => Tag::Snapshot,
        4 => Tag::Mark,
        _ => return None,
    })
}

fn encode(r: &Record, out: &mut [u8]) {
    out[..32].copy_from_slice(&r.id.0);
    out[32..36].copy_from_slice(&r.pack.to_le_bytes());
    out[36..40].copy_from_slice(&r.offset.to_le_bytes());
    out[40..44].copy_from_slice(&r.length.to_le_bytes());
    out[44..48].copy_from_slice(&r.raw_length.to_le_bytes());
    out[48] = tag_byte(r.tag);
}

/// A record of a table listing `packs` packs.
fn decode(b: &[u8], packs: u64) -> std::io::Result<Record> {
    let u = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let (pack, tag) = (u(32), byte_tag(b[48]));
    match tag {
        Some(tag) if (pack as u64) < packs => Ok(Record {
            id: ChunkId(b[..32].try_into().expect("32 bytes")),
            pack,
            offset: u(36),
            length: u(40),
            raw_length: u(44),
            tag,
        }),
        _ => Err(bad(
            "a record names a pack it does not list, or an unknown type",
        )),
    }
}

/// The table's buckets: the first two bytes of the id.
fn bucket(id: &ChunkId) -> usize {
    super::bucket(id, 16)
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("index table: {what}"),
    )
}

/// Writes a table to `path` (through a temporary file renamed over it, so a reader never sees
/// half of one). `records` must come sorted by (id, pack).
pub(crate) fn write(
    path: &Path,
    key: &[u8; 32],
    objects: &HashSet<IndexId>,
    packs: &[(PackId, u64)],
    records: impl Iterator<Item = Record>,
) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| bad("no folder"))?;
    std::fs::create_dir_all(dir)?;
    // Unique per writer: the daemon's jobs may write at once (the last rename wins; both whole).
    static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".index.table.{}.{n}.tmp", std::process::id()));
    remove_abandoned(dir);
    let result = (|| {
        // Read back to hash it once the fanout is in place.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(MAGIC)?;
        out.write_all(&(objects.len() as u64).to_le_bytes())?;
        out.write_all(&(packs.len() as u64).to_le_bytes())?;
        // The record count, the fanout and the hash are filled in once the records are written.
        out.write_all(&0u64.to_le_bytes())?;
        let mut ids: Vec<&IndexId> = objects.iter().collect();
        ids.sort();
        for id in ids {
            out.write_all(&id.0)?;
        }
        for (id, size) in packs {
            out.write_all(&id.0)?;
            out.write_all(&size.to_le_bytes())?;
        }
        let fanout_at = HEADER + objects.len() as u64 * 32 + packs.len() as u64 * 40;
        out.write_all(&[0u8; FANOUT * 4])?;
        let mut fanout = vec![0u32; FANOUT];
        let mut count = 0u64;
        let mut buf = [0u8; RECORD];
        let mut last: Option<(ChunkId, u32)> = None;
        for r in records {
            if last.is_some_and(|l| l >= (r.id, r.pack)) {
                return Err(bad("records out of order"));
            }
            last = Some((r.id, r.pack));
            encode(&r, &mut buf);
            out.write_all(&buf)?;
            fanout[bucket(&r.id)] += 1;
            count += 1;
        }
        super::cumulate(&mut fanout);
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.write_all_at(&count.to_le_bytes(), HEADER - 8)?;
        let fanout_bytes: Vec<u8> = fanout.iter().flat_map(|f| f.to_le_bytes()).collect();
        file.write_all_at(&fanout_bytes, fanout_at)?;
        // The hash covers what was filled in: hash the file as written.
        let end = fanout_at + FANOUT as u64 * 4 + count * RECORD as u64;
        let mac = hash_prefix(&file, key, end)?;
        file.write_all_at(mac.as_bytes(), end)?;
        Ok(())
    })();
    match result {
        Ok(()) => std::fs::rename(&tmp, path),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Removes what writers killed mid-way left: temporary tables untouched for an hour (writing
/// even a table of ten million records takes seconds).
fn remove_abandoned(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let abandoned = name.starts_with(".index.table.")
            && name.ends_with(".tmp")
            && e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 3600));
        if abandoned {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn hash_prefix(file: &File, key: &[u8; 32], len: u64) -> std::io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new_keyed(key);
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hasher.finalize())
}

/// Opens the table at `path` if it is whole (its hash matches) and every object it holds is in
/// `listed`; `Ok(None)` when there is none or it is stale.
pub(crate) fn open(
    path: &Path,
    key: &[u8; 32],
    listed: &HashSet<IndexId>,
    in_memory: u64,
) -> std::io::Result<Option<Table>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut head = [0u8; HEADER as usize];
    if len < HEADER + 32 {
        return Err(bad("shorter than its header"));
    }
    file.read_exact_at(&mut head, 0)?;
    if &head[..16] != MAGIC {
        return Err(bad("not an index table of this version"));
    }
    let n = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("8 bytes"));
    let (objects, packs, count) = (n(16), n(24), n(32));
    let expect = objects
        .checked_mul(32)
        .and_then(|o| packs.checked_mul(40)?.checked_add(o))
        .and_then(|s| count.checked_mul(RECORD as u64)?.checked_add(s))
        .and_then(|s| s.checked_add(HEADER + FANOUT as u64 * 4 + 32));
    if expect != Some(len) || count > u32::MAX as u64 {
        return Err(bad("its size does not match its header"));
    }
    let body = len - 32;
    let mut mac = [0u8; 32];
    file.read_exact_at(&mut mac, body)?;
    if hash_prefix(&file, key, body)? != blake3::Hash::from_bytes(mac) {
        return Err(bad("damaged (its hash does not match)"));
    }
    let mut r = BufReader::with_capacity(1 << 20, &file);
    r.seek_relative(HEADER as i64)?;
    let mut ids = HashSet::with_capacity(objects as usize);
    let mut b32 = [0u8; 32];
    for _ in 0..objects {
        r.read_exact(&mut b32)?;
        ids.insert(IndexId(b32));
    }
    if !ids.is_subset(listed) {
        return Ok(None);
    }
    let mut pack_list = Vec::with_capacity(packs as usize);
    let mut b40 = [0u8; 40];
    for _ in 0..packs {
        r.read_exact(&mut b40)?;
        pack_list.push((
            PackId(b40[..32].try_into().expect("32 bytes")),
            u64::from_le_bytes(b40[32..].try_into().expect("8 bytes")),
        ));
    }
    let mut fanout = vec![0u32; FANOUT];
    let mut b4 = [0u8; 4];
    for f in fanout.iter_mut() {
        r.read_exact(&mut b4)?;
        *f = u32::from_le_bytes(b4);
    }
    if fanout.windows(2).any(|w| w[0] > w[1]) || fanout[FANOUT - 1] as u64 != count {
        return Err(bad("its fanout is not ascending"));
    }
    let start = HEADER + objects * 32 + packs * 40 + FANOUT as u64 * 4;
    let records = if count <= in_memory {
        let mut v = Vec::with_capacity(count as usize);
        let mut b = [0u8; RECORD];
        for _ in 0..count {
            r.read_exact(&mut b)?;
            v.push(decode(&b, packs)?);
        }
        Records::Memory(v)
    } else {
        Records::Disk(Disk {
            file,
            fanout: fanout.into_boxed_slice(),
            start,
            count,
            packs,
        })
    };
    Ok(Some(Table {
        objects: ids,
        packs: pack_list,
        records,
    }))
}

impl Disk {
    pub fn len(&self) -> u64 {
        self.count
    }

    /// The records of one chunk id (several when it is stored more than once), by pack.
    pub fn group(&self, id: &ChunkId) -> Vec<Record> {
        let span = super::bucket_span(&self.fanout, bucket(id));
        match self.read_group(span.start as u64, span.end as u64, id) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!("index table unreadable ({e}): chunk taken as absent");
                vec![]
            }
        }
    }

    /// Every record in order.
    pub fn iter(&self) -> impl Iterator<Item = Record> + '_ {
        let mut r = BufReader::with_capacity(1 << 20, &self.file);
        let mut pos = 0u64;
        let mut failed = false;
        if let Err(e) = std::io::Seek::seek(&mut r, std::io::SeekFrom::Start(self.start)) {
            tracing::warn!("index table unreadable: {e}");
            failed = true;
        }
        std::iter::from_fn(move || {
            if failed || pos >= self.count {
                return None;
            }
            let mut b = [0u8; RECORD];
            match r.read_exact(&mut b).and_then(|()| decode(&b, self.packs)) {
                Ok(rec) => {
                    pos += 1;
                    Some(rec)
                }
                Err(e) => {
                    tracing::warn!("index table unreadable: {e}");
                    failed = true;
                    None
                }
            }
        })
    }

    /// Binary search in a bucket of records `from..to`, reading the bucket whole when it is
    /// small (it holds ~150 records at ten million chunks) and record by record when it is not.
    fn read_group(&self, from: u64, to: u64, id: &ChunkId) -> std::io::Result<Vec<Record>> {
        let at = |i: u64| self.start + i * RECORD as u64;
        if to - from <= 4096 {
            let mut buf = vec![0u8; ((to - from) as usize) * RECORD];
            self.file.read_exact_at(&mut buf, at(from))?;
            let recs: Vec<Record> = buf
                .chunks_exact(RECORD)
                .map(|b| decode(b, self.packs))
                .collect::<std::io::Result<_>>()?;
            return Ok(super::group_of(&recs, id).to_vec());
        }
        let read = |i: u64| -> std::io::Result<Record> {
            let mut b = [0u8; RECORD];
            self.file.read_exact_at(&mut b, at(i))?;
            decode(&b, self.packs)
        };
        let (mut lo, mut hi) = (from, to);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if read(mid)?.id < *id {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut out = vec![];
        while lo < to {
            let r = read(lo)?;
            if r.id != *id {
                break;
            }
            out.push(r);
            lo += 1;
        }
        Ok(out)
    }
}
