//! What changed between two snapshots, path by path.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use coffer_repo::id::ChunkId;
use coffer_repo::tree::{Node, NodeKind};
use coffer_repo::{ChunkReader, Repository};
use serde::Serialize;

use crate::error::Result;

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// `+` added, `-` removed, `M` content changed, `T` type changed, `U` metadata only
    pub change: &'static str,
    pub path: String,
}

/// The changes from snapshot `a` to snapshot `b` (id prefixes or `latest`), in path order.
/// Subtrees that are the same chunk in both are skipped unread.
pub fn diff(repo: &Repository, a: &str, b: &str) -> Result<Vec<Change>> {
    let (_, sa) = repo.find_snapshot(a)?;
    let (_, sb) = repo.find_snapshot(b)?;
    let (index, _) = repo.load_index()?;
    let reader = ChunkReader::new(repo, &index);
    let mut out = vec![];
    // Work items, handled last-in first-out and pushed in reverse so paths come out in order.
    enum Work {
        Emit(&'static str, PathBuf),
        Compare(Option<ChunkId>, Option<ChunkId>, PathBuf),
        Whole(Node, PathBuf, &'static str),
    }
    let mut stack = vec![Work::Compare(Some(sa.tree), Some(sb.tree), PathBuf::new())];
    while let Some(work) = stack.pop() {
        let mut next = vec![];
        match work {
            Work::Emit(sign, path) => out.push(change(sign, &path)),
            Work::Whole(node, path, sign) => {
                out.push(change(sign, &path));
                if node.kind == NodeKind::Dir {
                    for (name, n) in nodes(&reader, node.subtree)? {
                        next.push(Work::Whole(n, path.join(name), sign));
                    }
                }
            }
            Work::Compare(a, b, dir) => {
                if a == b {
                    continue;
                }
                let (mut na, mut nb) = (nodes(&reader, a)?, nodes(&reader, b)?);
                let mut names: Vec<OsString> = na.keys().chain(nb.keys()).cloned().collect();
                names.sort();
                names.dedup();
                for name in names {
                    let path = dir.join(&name);
                    match (na.remove(&name), nb.remove(&name)) {
                        (Some(x), None) => next.push(Work::Whole(x, path, "-")),
                        (None, Some(y)) => next.push(Work::Whole(y, path, "+")),
                        (Some(x), Some(y)) => {
                            let kind = if x.kind != y.kind {
                                Some("T")
                            } else if x.content != y.content
                                || x.target != y.target
                                || x.size != y.size
                            {
                                Some("M")
                            } else if (x.mode, x.uid, x.gid, x.mtime_ns)
                                != (y.mode, y.uid, y.gid, y.mtime_ns)
                                && x.kind != NodeKind::Dir
                            {
                                Some("U")
                            } else {
                                None
                            };
                            if let Some(k) = kind {
                                next.push(Work::Emit(k, path.clone()));
                            }
                            if x.kind == NodeKind::Dir && y.kind == NodeKind::Dir {
                                next.push(Work::Compare(x.subtree, y.subtree, path));
                            }
                        }
                        (None, None) => unreachable!("name came from one side"),
                    }
                }
            }
        }
        stack.extend(next.into_iter().rev());
    }
    Ok(out)
}

fn change(sign: &'static str, path: &std::path::Path) -> Change {
    Change {
        change: sign,
        path: path.display().to_string(),
    }
}

fn nodes(reader: &ChunkReader, id: Option<ChunkId>) -> Result<BTreeMap<OsString, Node>> {
    let Some(id) = id else {
        return Ok(BTreeMap::new());
    };
    Ok(reader
        .tree(&id)?
        .nodes
        .into_iter()
        .map(|n| (n.os_name().unwrap_or_default(), n))
        .collect())
}
