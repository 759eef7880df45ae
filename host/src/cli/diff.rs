//! `coffer diff A B`: what changed between two snapshots.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Result;
use coffer::id::ChunkId;
use coffer::repo::tree::{Node, NodeKind};
use coffer::repo::ChunkReader;
use coffer::ExitCode;
use serde::Serialize;

use super::{print_json, Global};

#[derive(clap::Args)]
pub struct Args {
    /// The older snapshot (id prefix or `latest`)
    pub a: String,
    /// The newer snapshot
    pub b: String,
}

#[derive(Serialize)]
struct Change {
    /// `+` added, `-` removed, `M` content changed, `T` type changed, `U` metadata only
    change: &'static str,
    path: String,
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let repo = g.open()?;
    let (_, sa) = repo.find_snapshot(&a.a)?;
    let (_, sb) = repo.find_snapshot(&a.b)?;
    let (index, _) = repo.load_index()?;
    let reader = ChunkReader::new(&repo, &index);
    let mut changes = vec![];
    diff_tree(
        &reader,
        Some(sa.tree),
        Some(sb.tree),
        Path::new(""),
        &mut changes,
    )?;
    if g.json {
        print_json(&changes);
    } else {
        for c in &changes {
            println!("{:<2}{}", c.change, c.path);
        }
        let count = |k| changes.iter().filter(|c| c.change == k).count();
        println!(
            "{} added, {} removed, {} modified, {} metadata only",
            count("+"),
            count("-"),
            count("M") + count("T"),
            count("U")
        );
    }
    Ok(ExitCode::Ok)
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

fn all_below(
    reader: &ChunkReader,
    node: &Node,
    path: &Path,
    sign: &'static str,
    out: &mut Vec<Change>,
) -> Result<()> {
    out.push(Change {
        change: sign,
        path: path.display().to_string(),
    });
    if node.kind == NodeKind::Dir {
        for (name, n) in nodes(reader, node.subtree)? {
            all_below(reader, &n, &path.join(name), sign, out)?;
        }
    }
    Ok(())
}

fn diff_tree(
    reader: &ChunkReader,
    a: Option<ChunkId>,
    b: Option<ChunkId>,
    dir: &Path,
    out: &mut Vec<Change>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let (na, nb) = (nodes(reader, a)?, nodes(reader, b)?);
    let mut names: Vec<&OsString> = na.keys().chain(nb.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let path: PathBuf = dir.join(name);
        match (na.get(name), nb.get(name)) {
            (Some(x), None) => all_below(reader, x, &path, "-", out)?,
            (None, Some(y)) => all_below(reader, y, &path, "+", out)?,
            (Some(x), Some(y)) => {
                if x.kind != y.kind {
                    out.push(Change {
                        change: "T",
                        path: path.display().to_string(),
                    });
                } else if x.content != y.content || x.target != y.target || x.size != y.size {
                    out.push(Change {
                        change: "M",
                        path: path.display().to_string(),
                    });
                } else if (x.mode, x.uid, x.gid, x.mtime_ns) != (y.mode, y.uid, y.gid, y.mtime_ns)
                    && x.kind != NodeKind::Dir
                {
                    out.push(Change {
                        change: "U",
                        path: path.display().to_string(),
                    });
                }
                if x.kind == NodeKind::Dir && y.kind == NodeKind::Dir {
                    diff_tree(reader, x.subtree, y.subtree, &path, out)?;
                }
            }
            (None, None) => unreachable!("name came from one side"),
        }
    }
    Ok(())
}
