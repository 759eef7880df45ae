//! The one tree walk every engine uses: depth-first, iterative (a deep tree cannot overflow the
//! stack), children in the order the tree holds them.
//!
//! A [`Visitor`] sees each tree before it is read (and may skip it: that is how walks that only
//! need chunk ids read a subtree shared by many folders, or many snapshots, once), each tree that
//! cannot be read, and each node, deciding whether to descend into a folder.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::id::ChunkId;
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

/// Walks the tree `root` (the folder at `base`) with `v`.
pub fn walk<V: Visitor>(
    reader: &ChunkReader,
    root: ChunkId,
    base: &Path,
    v: &mut V,
) -> Result<(), V::Error> {
    let mut stack = vec![(root, base.to_path_buf())];
    while let Some((id, dir)) = stack.pop() {
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
        let mut below: Vec<(ChunkId, PathBuf)> = vec![];
        for node in tree.nodes {
            let sub = node.subtree.filter(|_| node.kind == NodeKind::Dir);
            let name = sub.and_then(|_| node.os_name());
            if v.node(&id, &dir, node)? {
                if let Some(sub) = sub {
                    below.push((sub, dir.join(name.unwrap_or_default())));
                }
            }
        }
        stack.extend(below.into_iter().rev());
    }
    Ok(())
}
