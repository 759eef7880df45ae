//! `check`: is every snapshot complete and every stored byte what it claims to be?
//!
//! Structure (always): every index and snapshot object opens and matches its id; every pack the
//! index names exists with the recorded size; every tree of every snapshot reads, and every chunk
//! it references is indexed. Data (`--read-data`, or a random subset of packs): each pack is
//! downloaded, checked against its id, decrypted, and every chunk in it decoded and verified;
//! its table of contents must agree with the index. Every problem names the object and the
//! snapshots it affects.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId, SnapshotId};
use crate::index::{self, Index};
use crate::tree::{Node, NodeKind};
use crate::walk::{walk, Visitor};
use crate::{pack, parallel_map, snapshot, ChunkReader, Repository};

/// How much pack data to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// A random share of the packs, in percent.
    Subset(f64),
}

#[derive(Debug, Serialize)]
pub struct Problem {
    /// The damaged or missing object (`data/ab/ab12…`, `index/…`, `snapshots/…`, or a chunk).
    pub object: String,
    pub message: String,
    /// Snapshots that lose data because of it (short ids).
    pub snapshots: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub packs: usize,
    pub packs_read: usize,
    pub chunks: usize,
    pub problems: Vec<Problem>,
    /// Findings that lose no data (e.g. packs left by an interrupted backup).
    pub notes: Vec<String>,
}

pub fn check(repo: &Repository, read: ReadData) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let (index, index_errors) = repo.load_index_from_store()?;
    let mut damaged_index = vec![];
    for (id, e) in index_errors {
        damaged_index.push(index::key(&id));
        report.problems.push(Problem {
            object: index::key(&id),
            message: e.to_string(),
            snapshots: vec![],
        });
    }
    report.chunks = index.chunk_count();

    // Packs: present with the indexed size?
    let stored: HashMap<String, u64> = repo
        .list_packs()?
        .into_iter()
        .map(|p| (pack::key(&p.id), p.size))
        .collect();
    let mut indexed = HashSet::new();
    let mut bad_packs: HashMap<PackId, String> = HashMap::new();
    for (id, size) in index.packs() {
        report.packs += 1;
        let key = pack::key(&id);
        indexed.insert(key.clone());
        match stored.get(&key) {
            None => {
                bad_packs.insert(id, format!("{key} is indexed but missing from the store"));
            }
            Some(s) if *s != size => {
                bad_packs.insert(id, format!("{key} has {s} bytes, the index says {size}"));
            }
            _ => {}
        }
    }
    // Packs a prune marked: present until a later prune sweeps them.
    let (marks, _) = repo.load_marks()?;
    for m in &marks {
        if m.mark.state == crate::marks::MarkState::Pending {
            let present = m
                .mark
                .packs
                .iter()
                .filter(|p| stored.contains_key(&pack::key(p)))
                .count();
            report.notes.push(format!(
                "{present} pack(s) marked by a prune at {}: deleted by a prune after {} unless a snapshot needs them",
                m.time.format("%Y-%m-%d %H:%M:%S"),
                m.deadline().format("%Y-%m-%d %H:%M:%S UTC")
            ));
        }
    }
    let orphans = stored.keys().filter(|k| !indexed.contains(*k)).count();
    if orphans > 0 && damaged_index.is_empty() {
        report.notes.push(format!(
            "{orphans} pack(s) are in no index (left by interrupted backups; no snapshot uses them)"
        ));
    } else if orphans > 0 {
        report.notes.push(format!(
            "{orphans} pack(s) are in no readable index: the damaged index object(s) may have listed them"
        ));
    }

    // Snapshots and their trees, each tree walked once however many snapshots share it (a
    // thousand daily snapshots share most of theirs): which trees each snapshot reaches, and
    // which chunks no index holds.
    let mut walked = Walked::default();
    let mut roots: Vec<(String, ChunkId)> = vec![];
    // Chunks snapshots use outside trees (stored plugins), by snapshot.
    let mut direct: HashMap<ChunkId, Vec<u32>> = HashMap::new();
    if repo.secrets().is_write_only() {
        report
            .notes
            .push("write-only key: snapshots and trees were not checked".into());
    } else {
        let reader = ChunkReader::new(repo, &index);
        for (id, s) in repo.list_snapshots()? {
            report.snapshots += 1;
            let snap = match s {
                Ok(s) => s,
                Err(e) => {
                    report.problems.push(Problem {
                        object: snapshot::key(&id),
                        message: e.to_string(),
                        snapshots: vec![id.short()],
                    });
                    continue;
                }
            };
            let n = roots.len() as u32;
            roots.push((id.short(), snap.tree));
            walk_snapshot(
                &reader,
                &id,
                &snap.tree,
                &mut walked,
                &mut report,
                &damaged_index,
            );
            // The stored plugin is part of what the snapshot needs to be restored.
            if let Some(p) = &snap.plugin {
                for c in &p.content {
                    direct.entry(*c).or_default().push(n);
                    if !index.contains(c) {
                        report.problems.push(Problem {
                            object: format!("chunk {}", c.short()),
                            message: format!(
                                "the stored plugin {} needs a chunk that is not in any index",
                                p.name
                            ),
                            snapshots: vec![id.short()],
                        });
                    }
                }
            }
        }
    }
    // Which snapshots reach each tree.
    let reach = walked.reach(&roots);
    let snapshots_of = |trees: &mut dyn Iterator<Item = ChunkId>,
                        also: &mut dyn Iterator<Item = u32>| {
        let mut s: Vec<u32> = trees
            .filter_map(|t| reach.get(&t))
            .flatten()
            .copied()
            .chain(also)
            .collect();
        s.sort();
        s.dedup();
        s.into_iter()
            .map(|i| roots[i as usize].0.clone())
            .collect::<Vec<String>>()
    };
    // A missing chunk or unreadable tree many snapshots share affects them all.
    for (i, tree) in std::mem::take(&mut walked.missing_in) {
        report.problems[i].snapshots =
            snapshots_of(&mut std::iter::once(tree), &mut std::iter::empty());
    }
    // Data.
    let mut to_read: Vec<PackId> = index
        .packs()
        .map(|(id, _)| id)
        .filter(|id| !bad_packs.contains_key(id))
        .collect();
    match read {
        ReadData::None => to_read.clear(),
        ReadData::All => {}
        ReadData::Subset(pct) => {
            use rand::seq::SliceRandom;
            to_read.shuffle(&mut rand::thread_rng());
            let n = ((to_read.len() as f64 * pct / 100.0).ceil() as usize).min(to_read.len());
            to_read.truncate(n);
        }
    }
    report.packs_read = to_read.len();
    let read_set: HashSet<PackId> = to_read.iter().copied().collect();
    let mut entries_of: HashMap<PackId, Vec<pack::PackEntry>> = HashMap::new();
    for (_, p, e) in index.chunks() {
        if read_set.contains(&p) {
            entries_of.entry(p).or_default().push(e);
        }
    }
    let results = parallel_map(&to_read, |id| {
        read_pack(
            repo,
            id,
            entries_of.get(id).map(Vec::as_slice).unwrap_or(&[]),
        )
    });
    for (id, r) in to_read.iter().zip(results) {
        if let Err(msg) = r {
            bad_packs.insert(*id, msg);
        }
    }
    let mut bad: Vec<_> = bad_packs.into_iter().collect();
    bad.sort_by_key(|(id, _)| *id);
    let bad_set: HashSet<PackId> = bad.iter().map(|(id, _)| *id).collect();
    // What each damaged pack holds, by the index (where it is a chunk's place or one of its
    // copies), and which trees hold those chunks: one pass over the index and one more walk over
    // the trees for all damaged packs together.
    let mut held: HashMap<PackId, Vec<ChunkId>> = HashMap::new();
    if !bad_set.is_empty() {
        let places = index
            .chunks()
            .map(|(c, p, _)| (c, p))
            .chain(index.alternate_places());
        for (c, p) in places.filter(|(_, p)| bad_set.contains(p)) {
            held.entry(p).or_default().push(c);
        }
    }
    let wanted: HashSet<ChunkId> = held.values().flatten().copied().collect();
    let mut holding = Holding {
        wanted: &wanted,
        trees: HashMap::new(),
        seen: HashSet::new(),
    };
    if !wanted.is_empty() {
        let reader = ChunkReader::new(repo, &index);
        for (_, root) in &roots {
            let _ = walk(&reader, *root, Path::new(""), &mut holding);
        }
    }
    // The snapshots using any of `chunks`.
    let affected = |chunks: &[ChunkId]| -> Vec<String> {
        let mut trees = chunks
            .iter()
            .filter_map(|c| holding.trees.get(c))
            .flatten()
            .copied();
        let mut also = chunks
            .iter()
            .filter_map(|c| direct.get(c))
            .flatten()
            .copied();
        snapshots_of(&mut trees, &mut also)
    };
    for (id, mut msg) in bad {
        // A chunk with a copy in a sound pack is not lost: restore reads that copy.
        let held = held.remove(&id).unwrap_or_default();
        let lost: Vec<ChunkId> = held
            .iter()
            .copied()
            .filter(|c| {
                index.get(c).is_none_or(|(p, _)| bad_set.contains(&p))
                    && index.alternates(c).iter().all(|(p, _)| bad_set.contains(p))
            })
            .collect();
        let snapshots = affected(&lost);
        if snapshots.is_empty() && !affected(&held).is_empty() {
            msg.push_str(
                "; every chunk of it that snapshots use has a sound copy in another pack, which restore reads (`coffer prune` drops the damaged copy)",
            );
        }
        report.problems.push(Problem {
            object: pack::key(&id),
            message: msg,
            snapshots,
        });
    }
    Ok(report)
}

/// What walking the snapshots found: the trees (each walked once) and the trees below each, and
/// the problems about missing chunks with the tree that named them.
#[derive(Default)]
struct Walked {
    seen: HashSet<ChunkId>,
    children: HashMap<ChunkId, Vec<ChunkId>>,
    missing_in: Vec<(usize, ChunkId)>,
}

impl Walked {
    /// For every tree, the snapshots (numbers into `roots`) whose walk reaches it.
    fn reach(&self, roots: &[(String, ChunkId)]) -> HashMap<ChunkId, Vec<u32>> {
        let mut reach: HashMap<ChunkId, Vec<u32>> = HashMap::new();
        for (n, (_, root)) in roots.iter().enumerate() {
            let mut stack = vec![*root];
            let mut mine = HashSet::new();
            while let Some(t) = stack.pop() {
                if !mine.insert(t) {
                    continue;
                }
                reach.entry(t).or_default().push(n as u32);
                stack.extend(self.children.get(&t).into_iter().flatten());
            }
        }
        reach
    }
}

/// Walks one snapshot's trees that no earlier snapshot's walk read, noting every tree it cannot
/// read and chunk no index holds as a problem.
struct SnapshotUse<'a> {
    index: &'a Index,
    snapshot: &'a SnapshotId,
    walked: &'a mut Walked,
    report: &'a mut CheckReport,
    damaged_index: &'a [String],
    missing: usize,
}

impl Visitor for SnapshotUse<'_> {
    type Error = Error;

    fn tree(&mut self, id: &ChunkId, _: &Path) -> bool {
        self.walked.seen.insert(*id)
    }

    fn unreadable(&mut self, id: &ChunkId, path: &Path, e: Error) -> Result<()> {
        self.walked
            .missing_in
            .push((self.report.problems.len(), *id));
        self.report.problems.push(Problem {
            object: format!("tree {} (/{})", id.short(), path.display()),
            message: e.to_string(),
            snapshots: vec![self.snapshot.short()],
        });
        Ok(())
    }

    fn node(&mut self, tree: &ChunkId, dir: &Path, node: Node) -> Result<bool> {
        if let Some(sub) = node.subtree.filter(|_| node.kind == NodeKind::Dir) {
            self.walked.children.entry(*tree).or_default().push(sub);
        }
        for c in &node.content {
            if !self.index.contains(c) {
                self.missing += 1;
                if self.missing <= 5 {
                    let path = dir.join(&node.name);
                    self.walked
                        .missing_in
                        .push((self.report.problems.len(), *tree));
                    self.report.problems.push(Problem {
                        object: format!("chunk {}", c.short()),
                        message: format!(
                            "/{} needs a chunk that is not in any index{}",
                            path.display(),
                            if self.damaged_index.is_empty() {
                                String::new()
                            } else {
                                format!(" (damaged: {})", self.damaged_index.join(", "))
                            }
                        ),
                        snapshots: vec![self.snapshot.short()],
                    });
                }
            }
        }
        Ok(true)
    }
}

/// Finds, for each of the `wanted` chunks, the trees that hold it (as content, or are it).
struct Holding<'a> {
    wanted: &'a HashSet<ChunkId>,
    trees: HashMap<ChunkId, Vec<ChunkId>>,
    seen: HashSet<ChunkId>,
}

impl Visitor for Holding<'_> {
    type Error = Error;

    fn tree(&mut self, id: &ChunkId, _: &Path) -> bool {
        if self.wanted.contains(id) {
            self.trees.entry(*id).or_default().push(*id);
        }
        self.seen.insert(*id)
    }

    fn unreadable(&mut self, _: &ChunkId, _: &Path, _: Error) -> Result<()> {
        Ok(())
    }

    fn node(&mut self, tree: &ChunkId, _: &Path, node: Node) -> Result<bool> {
        for c in node.content.iter().filter(|c| self.wanted.contains(c)) {
            self.trees.entry(*c).or_default().push(*tree);
        }
        Ok(true)
    }
}

fn walk_snapshot(
    reader: &ChunkReader,
    id: &SnapshotId,
    root: &ChunkId,
    walked: &mut Walked,
    report: &mut CheckReport,
    damaged_index: &[String],
) {
    let mut v = SnapshotUse {
        index: reader.index(),
        snapshot: id,
        walked,
        report,
        damaged_index,
        missing: 0,
    };
    // A walk that stops (a tree nested past any file system's depth) is a damaged snapshot.
    if let Err(e) = walk(reader, *root, Path::new(""), &mut v) {
        v.report.problems.push(Problem {
            object: format!("tree {}", root.short()),
            message: e.to_string(),
            snapshots: vec![id.short()],
        });
    }
    let missing = v.missing;
    if missing > 5 {
        report.problems.push(Problem {
            object: "chunks".into(),
            message: format!("{} more missing chunks", missing - 5),
            snapshots: vec![id.short()],
        });
    }
}

/// Reads one pack whole and verifies it; `Err` describes the first problem.
fn read_pack(repo: &Repository, id: &PackId, indexed: &[pack::PackEntry]) -> Result<(), String> {
    let plain = repo.read_pack(id).map_err(|e| match e {
        Error::Corrupt { object, reason } => format!("{object}: {reason}"),
        other => other.to_string(),
    })?;
    let name = pack::key(id);
    let toc = pack::read_toc(&plain, &name).map_err(|e| e.to_string())?;
    let in_toc: HashMap<ChunkId, pack::PackEntry> = toc.iter().map(|e| (e.id, *e)).collect();
    for e in indexed {
        if in_toc.get(&e.id) != Some(e) {
            return Err(format!(
                "{name}: the index lists chunk {} at a place its table of contents does not",
                e.id.short()
            ));
        }
    }
    for e in &toc {
        pack::extract(&plain, e, repo.secrets(), id).map_err(|e| e.to_string())?;
    }
    Ok(())
}
