//! `coffer ls SNAPSHOT [PATH]`: list the entries of a snapshot.

use std::path::{Component, Path, PathBuf};

use anyhow::Result;
use coffer::ExitCode;
use coffer_repo::id::ChunkId;
use coffer_repo::tree::Node;
use coffer_repo::walk::{walk_bounded, Limits, Visitor};
use coffer_repo::ChunkReader;

use super::{output_failed, Global};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot id (a prefix is enough) or `latest`
    pub snapshot: String,
    /// Only this path inside the snapshot, and what lies under it
    pub path: Option<PathBuf>,
    /// Show type, mode, size and time
    #[arg(short, long)]
    pub long: bool,
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let repo = g.open()?;
    let (_, snap) = repo.find_snapshot(&a.snapshot)?;
    let (index, _) = repo.load_index()?;
    let reader = ChunkReader::new(&repo, &index);
    let filter: Option<PathBuf> = a.path.as_ref().map(|p| {
        p.components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect()
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut listing = Listing {
        filter,
        rows: vec![],
        unreadable: vec![],
    };
    walk_bounded(
        &reader,
        snap.tree,
        Path::new(""),
        Limits::of(&snap),
        &mut listing,
    )?;
    let mut rows = listing.rows;
    for u in &listing.unreadable {
        eout!("coffer: error: {u}");
    }
    rows.sort_by(|x, y| x.0.cmp(&y.0));
    use std::io::Write;
    if g.json {
        for (rel, node) in rows {
            let mut v = serde_json::to_value(&node)?;
            v["path"] = rel.to_string_lossy().into_owned().into();
            if let Some(o) = v.as_object_mut() {
                o.remove("content");
            }
            writeln!(out, "{v}").unwrap_or_else(|e| output_failed(e));
        }
    } else {
        for (rel, node) in rows {
            if a.long {
                let t = chrono::DateTime::from_timestamp_nanos(node.mtime_ns);
                writeln!(
                    out,
                    "{:<8} {:04o} {:>5}:{:<5} {:>12} {} {}{}",
                    format!("{:?}", node.kind).to_lowercase(),
                    node.mode,
                    node.uid,
                    node.gid,
                    node.size,
                    t.format("%Y-%m-%d %H:%M:%S"),
                    rel.display(),
                    node.target.map(|t| format!(" -> {t}")).unwrap_or_default()
                )
                .unwrap_or_else(|e| output_failed(e));
            } else {
                writeln!(out, "{}", rel.display()).unwrap_or_else(|e| output_failed(e));
            }
        }
    }
    out.flush().unwrap_or_else(|e| output_failed(e));
    Ok(if listing.unreadable.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::Integrity
    })
}

/// The nodes at or below the filter path, with their paths.
struct Listing {
    filter: Option<PathBuf>,
    rows: Vec<(PathBuf, Node)>,
    /// Folders whose listing could not be read: the rest is listed, these are named.
    unreadable: Vec<String>,
}

impl Visitor for Listing {
    type Error = coffer_repo::Error;

    fn unreadable(
        &mut self,
        id: &ChunkId,
        path: &Path,
        e: coffer_repo::Error,
    ) -> coffer_repo::Result<()> {
        self.unreadable.push(format!(
            "/{}: its listing (tree {}) cannot be read: {e}",
            path.display(),
            id.short()
        ));
        Ok(())
    }

    fn node(&mut self, _: &ChunkId, dir: &Path, node: Node) -> coffer_repo::Result<bool> {
        let rel = dir.join(node.os_name().unwrap_or_default());
        let inside = self.filter.as_ref().is_none_or(|f| rel.starts_with(f));
        let above = self.filter.as_ref().is_some_and(|f| f.starts_with(&rel));
        if inside {
            self.rows.push((rel, node));
        }
        Ok(inside || above)
    }
}
