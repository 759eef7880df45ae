//! `prune`: delete the data no snapshot needs, without locks, while backups keep running.
//!
//! Two phases, with a grace period between them measured on the store's clock:
//!
//! 1. **Mark.** Packs no snapshot needs (and packs left by killed backups), older than the grace
//!    period, are named in a new pending mark (`prune/<id>`, see [`crate::marks`]).
//!    Packs that are partly needed, above the repack threshold, have their needed chunks copied
//!    into new packs first (indexed at once), and are then marked too. From the moment a mark
//!    exists, backups stop deduplicating against its packs.
//! 2. **Sweep** (a later prune, once a mark is older than its grace period). Snapshots are listed
//!    again; a marked pack holding a chunk that some snapshot now needs and that no surviving
//!    pack holds is recovered (kept), the rest are deleted. In order: compacted index objects
//!    without the deleted packs are written, the old index objects removed, then the packs, then
//!    the mark is replaced by a swept mark, removed in turn once no index object names its packs.
//!
//! A backup that loaded its index before a mark appeared and relies on a marked pack refuses to
//! save its snapshot if the grace period could end before the snapshot is visible
//! ([`crate::Repository::check_commit`]), so a sweep never deletes what a saved snapshot
//! needs. Every step leaves a valid repository when killed: at worst an index names a pack twice,
//! or a pack is in no index and is marked again by the next prune.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::crypto::Tag;
use crate::error::{Error, Result};
use crate::id::{ChunkId, IndexId, PackId};
use crate::index::{self, ChunkSet, Index, IndexFile, IndexPackRef};
use crate::marks::{Mark, MarkState, StoredMark};
use crate::pack::{self, PackEntry, PackWriter};
use crate::tree::Node;
use crate::walk::{walk, Visitor};
use crate::{ChunkReader, Repository};
use coffer_store::BackendError;

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// How long marked packs wait before deletion; longer than any backup should take.
    pub grace: Duration,
    /// Repack a partly used pack when at least this share of its bytes is unused (0..=1; a pack
    /// wholly used is never repacked, so 0 means "any unused byte").
    pub repack_unused: f64,
    /// Report what would happen; change nothing.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: Duration::from_secs(24 * 3600),
            repack_unused: 0.25,
            dry_run: false,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct PruneSummary {
    pub dry_run: bool,
    pub snapshots: usize,
    /// Phase 2: marks whose grace period had passed.
    pub marks_swept: usize,
    pub packs_deleted: usize,
    pub bytes_deleted: u64,
    /// Marked packs kept because a snapshot saved since needs them.
    pub packs_recovered: usize,
    /// Marks still waiting, with seconds left.
    pub marks_waiting: Vec<(String, i64)>,
    /// Phase 1: packs marked now (unused, or repacked).
    pub packs_marked: usize,
    pub bytes_marked: u64,
    pub packs_repacked: usize,
    /// Needed bytes copied out of repacked packs into new ones.
    pub bytes_repacked: u64,
    /// Packs skipped because they are younger than the grace period (perhaps a running backup's).
    pub packs_too_young: usize,
    /// When the first of those is old enough to be judged (on the store's clock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub too_young_until: Option<chrono::DateTime<chrono::Utc>>,
    pub index_objects_before: usize,
    pub index_objects_after: usize,
    pub swept_marks_retired: usize,
    /// Staged files (a local folder's `<key>#<digits>`) that writes cut off by a crash left and
    /// nothing touched for the grace period: removed (counted, in a dry run).
    pub abandoned_files: u64,
    pub abandoned_bytes: u64,
}

/// Parses a grace period: `90s`, `30min`, `12h`, `7d`, or plain seconds.
pub fn parse_grace(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration: use 90s, 30min, 12h or 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "min" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => {
            return Err(format!(
                "'{s}' is not a duration: use 90s, 30min, 12h or 7d"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}

pub fn prune(repo: &Arc<Repository>, opts: &PruneOptions) -> Result<PruneSummary> {
    let mut sum = sweep(repo, opts)?;
    // Listings skip staged files, so the unreferenced-pack rules never see what a write killed
    // before its rename left; the grace period, longer than any write, tells them apart here.
    let left = repo.remove_abandoned(opts.grace, opts.dry_run)?;
    sum.abandoned_files = left.files;
    sum.abandoned_bytes = left.bytes;
    // A compacted index leaves the cached index table stale: the next command would rebuild it
    // from every index object, at the cost of holding them all; do that here, where memory was
    // budgeted for the whole index anyway.
    if !opts.dry_run {
        repo.refresh_index_table()?;
    }
    Ok(sum)
}

fn sweep(repo: &Arc<Repository>, opts: &PruneOptions) -> Result<PruneSummary> {
    repo.secrets()
        .data_identity("prune (it must read every snapshot)")?;
    let grace = chrono::Duration::from_std(opts.grace)
        .map_err(|_| Error::Invalid("grace period out of range".into()))?;
    let mut sum = PruneSummary {
        dry_run: opts.dry_run,
        ..PruneSummary::default()
    };
    // The store's clock first: every snapshot listed after this instant is seen by this sweep.
    let now = repo.store_now()?;
    let (marks, mark_errors) = repo.load_marks()?;
    if let Some((key, e)) = mark_errors.first() {
        tracing::warn!("prune mark {key} unreadable, left alone: {e}");
    }

    // Snapshots before the index: a snapshot is saved only after the index objects naming its
    // chunks, so every chunk a listed snapshot needs is in the index read next.
    let snapshots = repo.list_snapshots()?;
    let (files, index_errors) = repo.load_index_files()?;
    if let Some((id, e)) = index_errors.first() {
        return Err(Error::Invalid(format!(
            "index {} is damaged ({e}): prune cannot tell what its packs hold; run `coffer repair index`, then prune again",
            index::key(id)
        )));
    }
    let mut full = Index::default();
    for (_, f) in &files {
        full.add_file_unsorted(f);
    }
    full.sort();
    let needed = needed_chunks(repo, snapshots, &full, &mut sum)?;
    // A needed chunk no index lists lies in a pack prune would take for a killed backup's
    // leftover and delete: stop instead (the packs' own tables of contents can rebuild it).
    let unindexed = needed.unindexed();
    if unindexed > 0 {
        return Err(Error::Invalid(format!(
            "{unindexed} chunk(s) that snapshots need are in no index object (one was lost or damaged): prune deletes nothing until `coffer repair index` has rebuilt the index from the packs"
        )));
    }

    // Where each chunk is stored, and what each pack holds.
    let stored: HashMap<PackId, (u64, Option<chrono::DateTime<chrono::Utc>>)> = repo
        .list_packs()?
        .into_iter()
        .map(|p| (p.id, (p.size, p.modified)))
        .collect();
    // (Borrowed from the index objects read: at ten million chunks a copy is half a GiB.)
    let mut contents: HashMap<PackId, (u64, &[PackEntry])> = HashMap::new();
    for (_, f) in &files {
        for p in &f.packs {
            contents.entry(p.id).or_insert((p.size, &p.chunks));
        }
    }
    // The stored packs holding a chunk (asked of the index: a map of every needed chunk to its
    // packs took more memory than the rest of prune).
    let holders = |c: &ChunkId| -> Vec<PackId> {
        let mut h = full.places(c);
        h.retain(|p| stored.contains_key(p) && contents.contains_key(p));
        h
    };

    // ----- phase 2: sweep marks whose grace period has passed -----
    let mut delete: HashSet<PackId> = HashSet::new();
    let mut swept: Vec<&StoredMark> = vec![];
    // Packs checked against their ids in this run: true when intact.
    let mut verified: HashMap<PackId, bool> = HashMap::new();
    // Whole-second clocks on some stores: one second more before anything is deleted.
    for m in marks.iter().filter(|m| m.mark.state == MarkState::Pending) {
        let left = (m.deadline() + chrono::Duration::seconds(1) - now).num_seconds();
        if left > 0 {
            sum.marks_waiting.push((m.key.clone(), left));
            continue;
        }
        swept.push(m);
        for p in &m.mark.packs {
            if !stored.contains_key(p) || delete.contains(p) {
                continue;
            }
            // Deletable if every needed chunk in it survives in another pack, verified intact
            // (its bytes hash to its name) before this copy goes: never keep a rotten copy and
            // delete the good one.
            let mut keep = false;
            for e in contents.get(p).map(|(_, es)| *es).unwrap_or(&[]) {
                if !needed.contains(&e.id) {
                    continue;
                }
                let mut survives = false;
                for h in &holders(&e.id) {
                    if h != p && !delete.contains(h) && intact(repo, &mut verified, h)? {
                        survives = true;
                        break;
                    }
                }
                if !survives {
                    keep = true;
                    break;
                }
            }
            if keep {
                sum.packs_recovered += 1;
            } else {
                delete.insert(*p);
                sum.packs_deleted += 1;
                sum.bytes_deleted += stored[p].0;
            }
        }
    }
    sum.marks_swept = swept.len();

    // ----- phase 1: mark what is unused now -----
    let in_marks: HashSet<PackId> = marks
        .iter()
        .flat_map(|m| m.mark.packs.iter().copied())
        .collect();
    // Each needed chunk counts as used in one pack: a live one that is not being deleted.
    let home = |c: &ChunkId| -> Option<PackId> {
        if !needed.contains(c) {
            return None;
        }
        // A pack found damaged above is nobody's home: its chunks' other copies are kept, and
        // it is marked in turn as unused.
        holders(c)
            .into_iter()
            .filter(|h| !delete.contains(h) && verified.get(h) != Some(&false))
            .min_by_key(|h| (in_marks.contains(h), *h))
    };
    let old_enough = |p: &PackId| stored[p].1.is_some_and(|t| t + grace <= now);
    let mut to_mark: Vec<PackId> = vec![];
    let mut to_repack: Vec<PackId> = vec![];
    let mut candidates: Vec<&PackId> = stored
        .keys()
        .filter(|p| !in_marks.contains(p) && !delete.contains(p))
        .collect();
    candidates.sort();
    for p in candidates {
        let (size, used) = match contents.get(p) {
            // In no index: left by a killed backup, or a running backup's newest pack.
            None => (stored[p].0, 0),
            Some((size, entries)) => (
                *size,
                entries
                    .iter()
                    .filter(|e| home(&e.id) == Some(*p))
                    .map(|e| e.length as u64)
                    .sum::<u64>(),
            ),
        };
        let total: u64 = contents
            .get(p)
            .map(|(_, es)| es.iter().map(|e| e.length as u64).sum())
            .unwrap_or(size)
            .max(1);
        // A pack wholly used is never repacked, so a threshold of 0 means "any unused byte" and
        // not "rewrite the repository on every prune".
        let unused_share = 1.0 - used as f64 / total as f64;
        if used == 0 || (used < total && unused_share >= opts.repack_unused) {
            if !old_enough(p) {
                sum.packs_too_young += 1;
                let ready = stored[p].1.map(|t| t + grace);
                if let Some(r) = ready {
                    sum.too_young_until = Some(sum.too_young_until.map_or(r, |u| u.min(r)));
                }
                continue;
            }
            if used == 0 {
                to_mark.push(*p);
            } else {
                to_repack.push(*p);
            }
            sum.bytes_marked += size;
        }
    }
    sum.packs_marked = to_mark.len() + to_repack.len();
    sum.packs_repacked = to_repack.len();
    sum.index_objects_before = files.len();

    if opts.dry_run {
        let home = &home;
        sum.bytes_repacked = to_repack
            .iter()
            .flat_map(|p| {
                contents[p]
                    .1
                    .iter()
                    .filter(move |e| home(&e.id) == Some(*p))
            })
            .map(|e| e.length as u64)
            .sum();
        sum.index_objects_after = files.len();
        return Ok(sum);
    }

    // Repack: the needed chunks of partly used packs go into new, indexed packs first.
    if !to_repack.is_empty() {
        sum.bytes_repacked = repack(repo, &to_repack, &contents, &home)?;
    }
    // The whole index is not needed past here: freed before compaction writes it out again.
    drop(needed);
    drop(full);

    // Compact the index when packs go, when entries name packs that are gone, or when backups
    // have left many small objects.
    let gone = contents.keys().any(|p| !stored.contains_key(p));
    let chunks: usize = contents.values().map(|(_, es)| es.len()).sum();
    let fragmented =
        files.len() > 1 + (contents.len() / 256).max(chunks / (index::CHUNKS_PER_OBJECT / 8));
    let mut written: HashSet<IndexId> = HashSet::new();
    if !delete.is_empty() || gone || fragmented {
        let mut packs: Vec<IndexPackRef> = contents
            .iter()
            .filter(|(id, _)| stored.contains_key(id) && !delete.contains(id))
            .map(|(id, (size, entries))| IndexPackRef {
                id: *id,
                size: *size,
                chunks: entries,
            })
            .collect();
        packs.sort_by_key(|p| p.id);
        written = repo.save_index_groups(&packs)?;
        let old: Vec<IndexId> = files
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !written.contains(id))
            .collect();
        repo.delete_index_files(&old)?;
        sum.index_objects_after = repo.list_index_ids()?.len();
    } else {
        sum.index_objects_after = files.len();
    }

    // Then the packs, then the marks that named them.
    let doomed: Vec<PackId> = delete.iter().copied().collect();
    repo.delete_packs(&doomed)?;
    for m in &swept {
        let gone: Vec<PackId> = m
            .mark
            .packs
            .iter()
            .filter(|p| delete.contains(p) || !stored.contains_key(p))
            .copied()
            .collect();
        if !gone.is_empty() {
            repo.save_mark(&Mark::new(MarkState::Swept, m.mark.grace_secs, gone))?;
        }
        repo.delete_mark(&m.key)?;
    }
    sum.swept_marks_retired = retire_swept(repo, &marks, &files, &written)?;

    // Finally the new mark: from now on backups store these packs' chunks anew.
    let mut new_mark: Vec<PackId> = to_mark;
    new_mark.extend(to_repack);
    if !new_mark.is_empty() {
        repo.save_mark(&Mark::new(
            MarkState::Pending,
            opts.grace.as_secs(),
            new_mark,
        ))?;
    }
    Ok(sum)
}

/// Whether a pack's stored bytes still hash to its name (no key needed); remembered per run.
fn intact(repo: &Repository, verified: &mut HashMap<PackId, bool>, p: &PackId) -> Result<bool> {
    if let Some(ok) = verified.get(p) {
        return Ok(*ok);
    }
    let ok = repo.pack_intact(p)?;
    if !ok {
        tracing::warn!(
            "{} is damaged: the other copies of its chunks are kept",
            crate::pack::key(p)
        );
    }
    verified.insert(*p, ok);
    Ok(ok)
}

/// Every chunk a snapshot needs: trees, file contents and stored plugins. A snapshot that cannot
/// be read stops the prune, since what it needs is unknown; one forgotten meanwhile is skipped.
fn needed_chunks<'i>(
    repo: &Repository,
    snapshots: Vec<(crate::id::SnapshotId, Result<crate::snapshot::Snapshot>)>,
    index: &'i Index,
    sum: &mut PruneSummary,
) -> Result<ChunkSet<'i>> {
    let reader = ChunkReader::new(repo, index);
    let mut needed = index.chunk_set();
    for (id, s) in snapshots {
        let snap = match s {
            Ok(s) => s,
            Err(Error::Backend(BackendError::NotFound { .. })) => continue,
            Err(e) => {
                return Err(Error::Invalid(format!(
                    "snapshot {} cannot be read ({e}): prune cannot tell what it needs; run `coffer check`, and `coffer forget {}` if it is beyond repair",
                    id.short(),
                    id.short()
                )))
            }
        };
        sum.snapshots += 1;
        if let Some(p) = &snap.plugin {
            for c in &p.content {
                needed.insert(c);
            }
        }
        walk(
            &reader,
            snap.tree,
            Path::new(""),
            &mut Needed {
                needed: &mut needed,
                snapshot: id,
            },
        )?;
    }
    Ok(needed)
}

/// Collects what one snapshot needs; a tree already collected (shared with another folder or
/// snapshot) is not read again.
struct Needed<'a, 'i> {
    needed: &'a mut ChunkSet<'i>,
    snapshot: crate::id::SnapshotId,
}

impl Visitor for Needed<'_, '_> {
    type Error = Error;

    fn tree(&mut self, id: &ChunkId, _: &Path) -> bool {
        self.needed.insert(id)
    }

    fn unreadable(&mut self, _: &ChunkId, _: &Path, e: Error) -> Result<()> {
        Err(Error::Invalid(format!(
            "a tree of snapshot {} cannot be read ({e}): prune stops rather than guess; run `coffer check`",
            self.snapshot.short()
        )))
    }

    fn node(&mut self, _: &ChunkId, _: &Path, node: Node) -> Result<bool> {
        for c in &node.content {
            self.needed.insert(c);
        }
        Ok(true)
    }
}

/// Copies the chunks whose home is one of `packs` into new packs (frames as stored, each
/// verified first), uploads and indexes them; returns the bytes copied.
fn repack(
    repo: &Repository,
    packs: &[PackId],
    contents: &HashMap<PackId, (u64, &[PackEntry])>,
    home: &dyn Fn(&ChunkId) -> Option<PackId>,
) -> Result<u64> {
    let target = repo.config().pack_size as u64;
    let mut writers: BTreeMap<bool, PackWriter> = BTreeMap::new();
    let mut copied = 0;
    // Each pack goes up as soon as it is full (at most one per kind in memory); one index object
    // names them all at the end.
    let mut index_file = IndexFile::default();
    for p in packs {
        let plain = repo.read_pack(p)?;
        for e in contents[p].1 {
            if home(&e.id) != Some(*p) {
                continue;
            }
            // Never copy a damaged chunk into a new pack: decode and verify it first.
            pack::extract(&plain, e, repo.secrets(), p)?;
            let frame = &plain[e.offset as usize..(e.offset + e.length) as usize];
            let is_tree = e.tag == Tag::Tree;
            let w = writers.entry(is_tree).or_insert_with(|| {
                PackWriter::new(&repo.secrets().data_recipient, target as usize)
            });
            w.add(e.id, e.tag, frame, e.raw_length as usize);
            copied += e.length as u64;
            if w.size() >= target {
                let w = writers.remove(&is_tree).expect("just used");
                index_file.packs.push(repo.upload_pack(w.finish())?);
            }
        }
    }
    for (_, w) in std::mem::take(&mut writers) {
        if !w.is_empty() {
            index_file.packs.push(repo.upload_pack(w.finish())?);
        }
    }
    if !index_file.packs.is_empty() {
        repo.save_index(&index_file)?;
    }
    Ok(copied)
}

/// Removes swept marks none of whose packs any index object still names (index objects written
/// by someone else since this prune read the index are read to make sure).
fn retire_swept(
    repo: &Repository,
    marks: &[StoredMark],
    files: &[(IndexId, IndexFile)],
    written: &HashSet<IndexId>,
) -> Result<usize> {
    let swept: Vec<&StoredMark> = marks
        .iter()
        .filter(|m| m.mark.state == MarkState::Swept)
        .collect();
    if swept.is_empty() {
        return Ok(0);
    }
    let known: HashSet<IndexId> = files.iter().map(|(id, _)| *id).collect();
    let mut named: HashSet<PackId> = HashSet::new();
    for id in repo.list_index_ids()? {
        if written.contains(&id) {
            // Written by this prune from the survivors: it names no deleted pack... unless the
            // compaction kept a stale entry, which it does not (gone packs are dropped).
            continue;
        }
        let f = if known.contains(&id) {
            files.iter().find(|(i, _)| *i == id).map(|(_, f)| f.clone())
        } else {
            match repo.load_index_file(&id) {
                Ok(f) => Some(f),
                Err(Error::Backend(BackendError::NotFound { .. })) => None,
                Err(e) => return Err(e),
            }
        };
        if let Some(f) = f {
            named.extend(f.packs.iter().map(|p| p.id));
        }
    }
    let mut retired = 0;
    for m in swept {
        if m.mark.packs.iter().all(|p| !named.contains(p)) {
            repo.delete_mark(&m.key)?;
            retired += 1;
        }
    }
    Ok(retired)
}
