//! Copy: snapshots from one repository into another (a local repository to an offsite one).
//!
//! Chunks are not cut again: each chunk's plaintext moves as it is, re-identified with the
//! destination's key (ids are keyed per repository, so two repositories with different keys
//! share no ids), and stored only if the destination lacks it. Trees are rewritten bottom-up with
//! the new ids. Each copy records the `<repository id>:<snapshot id>` it came from (or the
//! original's, for a copy of a copy), so running copy again, in either direction, copies nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::archiver::{Counters, Session};
use crate::crypto::Tag;
use crate::error::Result;
use crate::id::{ChunkId, SnapshotId};
use crate::snapshot::Snapshot;
use crate::tree::Tree;
use crate::walk::Limits;
use crate::{ChunkReader, Repository};

#[derive(Debug, Default, Serialize)]
pub struct CopySummary {
    /// (source id, destination id) of each snapshot copied.
    pub copied: Vec<(String, String)>,
    /// Snapshots the destination already had.
    pub skipped: usize,
    pub chunks_sent: u64,
    /// Stored bytes added to the destination.
    pub bytes_added: u64,
}

/// The identity of a snapshot across copies.
fn origin(repo: &Repository, id: &SnapshotId, s: &Snapshot) -> String {
    s.original
        .clone()
        .unwrap_or_else(|| format!("{}:{}", repo.config().id, id.to_hex()))
}

/// Copies the given snapshots of `src` that `dst` does not hold yet.
pub fn copy(
    src: &Repository,
    dst: &Arc<Repository>,
    snapshots: &[(SnapshotId, Snapshot)],
) -> Result<CopySummary> {
    let mut have: HashSet<String> = HashSet::new();
    for (id, s) in dst.list_snapshots()? {
        if let Ok(s) = s {
            have.insert(origin(dst, &id, &s));
        }
    }
    let (index, _) = src.load_index()?;
    let reader = ChunkReader::with_capacity(src, &index, 4);
    let mut summary = CopySummary::default();
    for (id, s) in snapshots {
        let key = origin(src, id, s);
        if have.contains(&key) {
            summary.skipped += 1;
            continue;
        }
        let counters = Arc::new(Counters::default());
        let mut session = Session::start(dst.clone(), None, counters)?;
        let mut done: HashMap<ChunkId, ChunkId> = HashMap::new();
        let root = copy_tree(&reader, &mut session, &s.tree, &mut done)?;
        let mut copy = s.clone();
        copy.tree = root;
        copy.original = Some(key.clone());
        if let Some(p) = &mut copy.plugin {
            p.content = p
                .content
                .iter()
                .map(|c| session.add_chunk(Tag::Data, reader.chunk(c)?))
                .collect::<Result<_>>()?;
        }
        let (new_id, stats) = session.finish_as(copy)?;
        summary.chunks_sent += stats.chunks_added;
        summary.bytes_added += stats.bytes_added;
        summary.copied.push((id.to_hex(), new_id.to_hex()));
        have.insert(key);
    }
    Ok(summary)
}

/// Copies one tree and everything under it; returns its id in the destination.
///
/// Iterative, children before parents (a tree's new id depends on its children's): a crafted
/// tree thousands of levels deep cannot overflow the stack, nor nest deeper than any file
/// system allows, and a subtree named many times (a "DAG bomb") is copied once.
fn copy_tree(
    reader: &ChunkReader,
    session: &mut Session,
    root: &ChunkId,
    done: &mut HashMap<ChunkId, ChunkId>,
) -> Result<ChunkId> {
    struct Frame {
        id: ChunkId,
        tree: Tree,
        /// The next node to copy.
        next: usize,
    }
    if let Some(new) = done.get(root) {
        return Ok(*new);
    }
    let depth = Limits::default().depth;
    let mut stack = vec![Frame {
        id: *root,
        tree: reader.tree(root)?,
        next: 0,
    }];
    loop {
        let top = stack.last_mut().expect("the root is popped last");
        if top.next < top.tree.nodes.len() {
            let node = &mut top.tree.nodes[top.next];
            top.next += 1;
            for c in &mut node.content {
                *c = match done.get(c) {
                    Some(new) => *new,
                    None => {
                        let new = session.add_chunk(Tag::Data, reader.chunk(c)?)?;
                        done.insert(*c, new);
                        new
                    }
                };
            }
            let Some(sub) = node.subtree else { continue };
            match done.get(&sub) {
                Some(new) => node.subtree = Some(*new),
                None => {
                    if stack.len() > depth {
                        return Err(Limits::exceeded(
                            root,
                            format!("folders nest more than {depth} deep"),
                        ));
                    }
                    let tree = reader.tree(&sub)?;
                    stack.push(Frame {
                        id: sub,
                        tree,
                        next: 0,
                    });
                }
            }
        } else {
            let f = stack.pop().expect("not empty");
            let new = session.add_chunk(Tag::Tree, f.tree.to_bytes())?;
            done.insert(f.id, new);
            match stack.last_mut() {
                // The parent's node that named this tree is the one before its `next`.
                Some(parent) => parent.tree.nodes[parent.next - 1].subtree = Some(new),
                None => return Ok(new),
            }
        }
    }
}
