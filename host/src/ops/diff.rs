//! What changed between two snapshots, path by path.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use coffer_repo::id::ChunkId;
use coffer_repo::tree::{Node, NodeKind};
use coffer_repo::walk::Limits;
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
    // Bounded like every walk over paths: a crafted tree of folders naming one subtree twice
    // at each level stands for billions of paths. Each side's entries are counted against what
    // its snapshot recorded.
    let limits = [Limits::of(&sa), Limits::of(&sb)];
    let mut seen = [0u64; 2];
    let mut count = |side: usize, n: usize, root: &ChunkId| -> Result<()> {
        seen[side] += n as u64;
        if seen[side] > limits[side].entries {
            return Err(Limits::exceeded(
                root,
                format!(
                    "its folders hold more than the {} entries the snapshot recorded",
                    limits[side].entries
                ),
            )
            .into());
        }
        Ok(())
    };
    let roots = [sa.tree, sb.tree];
    let side = |sign: &str| usize::from(sign == "+");
    let mut stack = vec![Work::Compare(Some(sa.tree), Some(sb.tree), PathBuf::new())];
    while let Some(work) = stack.pop() {
        if let Work::Compare(_, _, p) | Work::Whole(_, p, _) = &work {
            if p.components().count() > limits[0].depth {
                return Err(Limits::exceeded(
                    &sb.tree,
                    format!("folders nest more than {} deep", limits[0].depth),
                )
                .into());
            }
        }
        let mut next = vec![];
        match work {
            Work::Emit(sign, path) => out.push(change(sign, &path)),
            Work::Whole(node, path, sign) => {
                out.push(change(sign, &path));
                if node.kind == NodeKind::Dir {
                    let below = nodes(&reader, node.subtree)?;
                    count(side(sign), below.len(), &roots[side(sign)])?;
                    for (name, n) in below {
                        next.push(Work::Whole(n, path.join(name), sign));
                    }
                }
            }
            Work::Compare(a, b, dir) => {
                if a == b {
                    continue;
                }
                let (mut na, mut nb) = (nodes(&reader, a)?, nodes(&reader, b)?);
                count(0, na.len(), &roots[0])?;
                count(1, nb.len(), &roots[1])?;
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
