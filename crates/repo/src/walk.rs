//! The one tree walk every engine uses: depth-first, iterative (a deep tree cannot overflow the
//! stack), children in the order the tree holds them.
//!
//! A [`Visitor`] sees each tree before it is read (and may skip it: that is how walks that only
//! need chunk ids read a subtree shared by many folders, or many snapshots, once), each tree that
//! cannot be read, and each node, deciding whether to descend into a folder.
//!
//! Trees are content-addressed, so a folder may name the same subtree twice (two identical
//! folders), and a crafted tree can do it at every level: 30 levels of such folders stand for
//! 2^30 paths (a "DAG bomb"). Walks that need chunk ids skip trees they have seen; walks that
//! need every path (restore, ls, diff) are bounded by [`Limits`]: no more entries than the
//! snapshot recorded, no deeper than any real file system allows. Past either, the tree is
//! reported as damaged instead of eating the machine.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::id::ChunkId;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind};
use crate::ChunkReader;

pub trait Visitor {
    type Error: From<Error>;

    /// Tree `id`, the folder at `path`, is about to be read; `false` skips it and all below.
    fn tree(&mut self, _id: &ChunkId, _path: &Path) -> bool {
        true
    }

    /// Tree `id` could not be read: an error stops the walk (the default); `Ok` skips it.
    fn unreadable(&mut self, _id: &ChunkId, _path: &Path, e: Error) -> Result<(), Self::Error> {
        Err(e.into())
    }

    /// A node of tree `tree`, the folder at `dir`, handed over to keep; `true` descends into it
    /// when it is a folder (at `dir` joined with its name). The nodes of one tree come one after
    /// another, right after [`Visitor::tree`] said yes to it.
    fn node(&mut self, tree: &ChunkId, dir: &Path, node: Node) -> Result<bool, Self::Error>;
}

/// How far a walk may go before the tree counts as damaged.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Nodes handed to the visitor, in all.
    pub entries: u64,
    /// Folders below the root.
    pub depth: usize,
}

/// Deeper than any path Linux can name (PATH_MAX is 4096 bytes: at most 2048 `a/` levels).
const MAX_DEPTH: usize = 2048;
/// Entries of a snapshot that recorded no count (made before coffer counted them).
const MAX_ENTRIES: u64 = 50_000_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            entries: MAX_ENTRIES,
            depth: MAX_DEPTH,
        }
    }
}

impl Limits {
    /// The bounds of a walk over a snapshot's whole tree: the entries its backup counted
    /// (never more than the hard cap: the count is the writer's word).
    pub fn of(snapshot: &Snapshot) -> Limits {
        let recorded = snapshot
            .summary
            .as_ref()
            .map(|s| s.entries)
            .filter(|n| *n > 0);
        Limits {
            entries: recorded.map_or(MAX_ENTRIES, |n| n.min(MAX_ENTRIES)),
            depth: MAX_DEPTH,
        }
    }

    /// The error for a walk that went past these bounds.
    pub fn exceeded(root: &ChunkId, what: String) -> Error {
        Error::corrupt(
            format!("tree {}", root.short()),
            format!("{what}: a damaged or crafted tree, not walked further"),
        )
    }
}

/// Walks the tree `root` (the folder at `base`) with `v`, within the hard [`Limits`].
pub fn walk<V: Visitor>(
    reader: &ChunkReader,
    root: ChunkId,
    base: &Path,
    v: &mut V,
) -> Result<(), V::Error> {
    walk_bounded(reader, root, base, Limits::default(), v)
}

/// Walks the tree `root` (the folder at `base`) with `v`; going past `limits` is an error
/// ([`Error::Corrupt`] naming the root tree).
pub fn walk_bounded<V: Visitor>(
    reader: &ChunkReader,
    root: ChunkId,
    base: &Path,
    limits: Limits,
    v: &mut V,
) -> Result<(), V::Error> {
    let mut stack = vec![(root, base.to_path_buf(), 0usize)];
    let mut entries = 0u64;
    while let Some((id, dir, depth)) = stack.pop() {
        if depth > limits.depth {
            return Err(Limits::exceeded(
                &root,
                format!("folders nest more than {} deep", limits.depth),
            )
            .into());
        }
        if !v.tree(&id, &dir) {
            continue;
        }
        let tree = match reader.tree(&id) {
            Ok(t) => t,
            Err(e) => {
                v.unreadable(&id, &dir, e)?;
                continue;
            }
        };
        entries += tree.nodes.len() as u64;
        if entries > limits.entries {
            return Err(Limits::exceeded(
                &root,
                format!(
                    "its folders hold more than the {} entries the snapshot recorded",
                    limits.entries
                ),
            )
            .into());
        }
        let mut below: Vec<(ChunkId, PathBuf, usize)> = vec![];
        for node in tree.nodes {
            let sub = node.subtree.filter(|_| node.kind == NodeKind::Dir);
            let name = sub.and_then(|_| node.os_name());
            if v.node(&id, &dir, node)? {
                if let Some(sub) = sub {
                    below.push((sub, dir.join(name.unwrap_or_default()), depth + 1));
                }
            }
        }
        stack.extend(below.into_iter().rev());
    }
    Ok(())
}
