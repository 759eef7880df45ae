//! scale: a repository of ten million chunks and a thousand snapshots, generated directly (no
//! 10 TB backup), then coffer's commands on it with their time and peak memory.
//!
//! ```text
//! cargo build --release -p coffer -p coffer-bench
//! COFFER_BIN=target/release/coffer target/release/scale --dir /tmp/scale [--chunks 10000000]
//! ```
//!
//! The repository looks like a server backed up daily for three years whose data rotates: each
//! day adds a folder of 100 files of 100 chunks (10,000 chunks), and each day's snapshot holds the
//! last 30 days' folders. Chunks are 64 bytes, so that ten million of them fit on this machine's
//! disk: the index, the trees and the snapshots are full size, the packs hold 8,192 chunks each.
//! Then, each step in its own process, timed, with its peak RSS:
//!
//! 1. `check` (reads every index object and tree; writes the index table to the cache);
//! 2. a first and an incremental backup of a 64 MiB folder into that repository;
//! 3. restoring one file of a generated snapshot;
//! 4. `forget --keep-last 100` and `prune` twice (marks, then deletes: the older days' data is
//!    gone, most packs with it), then `check` again.
//!
//! Goals (issue 14): incremental backup ≤ 256 MiB peak RSS; one-file restore ≤ 5 s; check and
//! prune within 2 GiB.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use coffer_repo::crypto::Tag;
use coffer_repo::id::ChunkId;
use coffer_repo::index::{IndexFile, IndexPack};
use coffer_repo::keyfile::Unlocker;
use coffer_repo::pack;
use coffer_repo::snapshot::Snapshot;
use coffer_repo::tree::{Node, NodeKind, Tree};
use coffer_repo::Repository;

const PASSWORD: &str = "scale benchmark passphrase";
const CHUNKS_PER_FILE: u64 = 100;
const FILES_PER_DAY: u64 = 100;
const DAYS_KEPT: u64 = 30;
const CHUNKS_PER_PACK: u64 = 8192;
const PACKS_PER_INDEX: usize = 4;

struct Args {
    dir: PathBuf,
    chunks: u64,
    coffer: PathBuf,
}

fn args() -> Result<Args> {
    let mut dir = PathBuf::from("/tmp/coffer-scale");
    let mut chunks = 10_000_000u64;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = it.next().context("--dir needs a folder")?.into(),
            "--chunks" => chunks = it.next().context("--chunks needs a number")?.parse()?,
            other => bail!("unknown argument {other} (--dir D, --chunks N)"),
        }
    }
    let coffer = std::env::var_os("COFFER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/coffer"));
    Ok(Args {
        dir,
        chunks,
        coffer,
    })
}

/// 64 bytes unique to `n`.
fn content(n: u64) -> [u8; 64] {
    let mut b = [0u8; 64];
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xC0FF_EE00;
    for (i, c) in b.chunks_exact_mut(8).enumerate() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&(x ^ n ^ i as u64).to_le_bytes());
    }
    b[..8].copy_from_slice(&n.to_le_bytes());
    b
}

struct Generator {
    repo: Arc<Repository>,
    writer: Option<pack::PackWriter>,
    in_pack: u64,
    pending: Vec<IndexPack>,
    packs: u64,
    objects: u64,
}

impl Generator {
    fn add(&mut self, id: ChunkId, tag: Tag, data: &[u8]) -> Result<()> {
        let frame = if tag == Tag::Data {
            pack::raw_frame(data)
        } else {
            pack::encode_chunk(data, 3)
        };
        let repo = self.repo.clone();
        let w = self
            .writer
            .get_or_insert_with(|| pack::PackWriter::new(&repo.secrets().data_recipient, 1 << 20));
        w.add(id, tag, &frame, data.len());
        self.in_pack += 1;
        if self.in_pack == CHUNKS_PER_PACK || w.size() > 8 << 20 {
            self.seal()?;
        }
        Ok(())
    }

    fn seal(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            self.pending.push(self.repo.upload_pack(w.finish())?);
            self.packs += 1;
            self.in_pack = 0;
        }
        if self.pending.len() >= PACKS_PER_INDEX {
            self.flush_index()?;
        }
        Ok(())
    }

    fn flush_index(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            self.repo.save_index(&IndexFile {
                packs: std::mem::take(&mut self.pending),
            })?;
            self.objects += 1;
        }
        Ok(())
    }

    fn tree(&mut self, t: &Tree) -> Result<ChunkId> {
        let bytes = t.to_bytes();
        let id = ChunkId(self.repo.secrets().id(Tag::Tree, &bytes));
        self.add(id, Tag::Tree, &bytes)?;
        Ok(id)
    }
}

fn dir_node(name: &str, subtree: ChunkId, mtime_ns: i64) -> Node {
    let mut n = Node::new(NodeKind::Dir);
    n.name = name.into();
    n.mode = 0o755;
    n.mtime_ns = mtime_ns;
    n.subtree = Some(subtree);
    n
}

fn generate(a: &Args, repo_dir: &Path) -> Result<()> {
    let backend = coffer_store::open(&repo_dir.display().to_string(), false, &Default::default())?;
    let repo = Arc::new(Repository::open(
        backend,
        &Unlocker::Passphrase(PASSWORD.to_string().into()),
    )?);
    let mut g = Generator {
        repo: repo.clone(),
        writer: None,
        in_pack: 0,
        pending: vec![],
        packs: 0,
        objects: 0,
    };
    let per_day = CHUNKS_PER_FILE * FILES_PER_DAY;
    let days = a.chunks / per_day;
    let start = Instant::now();
    let base = chrono::Utc::now() - chrono::Duration::days(days as i64);
    let mut day_trees: Vec<ChunkId> = vec![];
    for day in 0..days {
        let time = base + chrono::Duration::days(day as i64);
        let mtime = time.timestamp_nanos_opt().unwrap_or(0);
        let mut files = Tree::default();
        for f in 0..FILES_PER_DAY {
            let mut node = Node::new(NodeKind::File);
            node.name = format!("file-{f:03}.dat");
            node.mode = 0o644;
            node.mtime_ns = mtime;
            node.size = CHUNKS_PER_FILE * 64;
            for c in 0..CHUNKS_PER_FILE {
                let n = day * per_day + f * CHUNKS_PER_FILE + c;
                let data = content(n);
                let id = ChunkId(repo.secrets().id(Tag::Data, &data));
                g.add(id, Tag::Data, &data)?;
                node.content.push(id);
            }
            files.nodes.push(node);
        }
        day_trees.push(g.tree(&files)?);
        let mut days_tree = Tree::default();
        for d in day.saturating_sub(DAYS_KEPT - 1)..=day {
            days_tree.nodes.push(dir_node(
                &format!("day-{d:04}"),
                day_trees[d as usize],
                mtime,
            ));
        }
        let days_id = g.tree(&days_tree)?;
        let root = Tree {
            nodes: vec![dir_node("data", days_id, mtime)],
        };
        let root_id = g.tree(&root)?;
        // A snapshot is saved only once the index names its chunks.
        g.seal()?;
        g.flush_index()?;
        repo.save_snapshot(&Snapshot {
            username: "root".into(),
            program_version: "scale generator".into(),
            ..Snapshot::new(time, "scale".into(), vec!["/srv/data".into()], root_id)
        })?;
        if day % 100 == 99 {
            eprintln!(
                "  day {}: {} chunks, {} packs, {} index objects, {:.0} s",
                day + 1,
                (day + 1) * per_day,
                g.packs,
                g.objects,
                start.elapsed().as_secs_f64()
            );
        }
    }
    g.seal()?;
    g.flush_index()?;
    println!(
        "generated {} data chunks + {} trees in {} packs, {} index objects, {days} snapshots: {:.1} s",
        days * per_day,
        days * 3,
        g.packs,
        g.objects,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs coffer with the benchmark's passphrase and cache; returns (seconds, peak RSS in MiB).
fn step(a: &Args, label: &str, args: &[&str]) -> Result<(f64, f64)> {
    let cache = a.dir.join("cache");
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg(&a.coffer)
        .args(["--repo", &a.dir.join("repo").display().to_string()])
        .args(["--cache-dir", &cache.display().to_string()])
        .args(args)
        .env("COFFER_PASSWORD", PASSWORD)
        .output()
        .with_context(|| format!("running {} (GNU time at /usr/bin/time)", a.coffer.display()))?;
    let secs = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kib: f64 = stderr
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(f64::NAN);
    if !out.status.success() {
        bail!(
            "{label}: coffer {args:?} failed: {}\n{}",
            out.status,
            stderr
        );
    }
    let mib = kib / 1024.0;
    println!("{label:<34} {secs:>8.2} s  {mib:>8.1} MiB peak RSS");
    Ok((secs, mib))
}

fn write_folder(dir: &Path, seed: u64, files: u64, size: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for f in 0..files {
        let mut data = Vec::with_capacity(size);
        let mut n = seed.wrapping_mul(1_000_003) + f;
        while data.len() < size {
            data.extend_from_slice(&content(n));
            n = n.wrapping_add(0x1_0000_0000);
        }
        data.truncate(size);
        std::fs::write(dir.join(format!("f{f:03}")), data)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let a = args()?;
    if a.dir.exists() {
        std::fs::remove_dir_all(&a.dir).with_context(|| format!("clearing {}", a.dir.display()))?;
    }
    std::fs::create_dir_all(&a.dir)?;
    let repo_dir = a.dir.join("repo");
    step(&a, "init", &["init"])?;
    generate(&a, &repo_dir)?;
    let du = Command::new("du").arg("-sh").arg(&repo_dir).output()?;
    print!("repository: {}", String::from_utf8_lossy(&du.stdout));

    let (_, check_rss) = step(&a, "check (builds the index table)", &["check"])?;
    let src = a.dir.join("src");
    write_folder(&src, 1, 64, 1 << 20)?;
    let src_s = src.display().to_string();
    step(&a, "backup of 64 MiB, first", &["backup", &src_s])?;
    write_folder(&src.join("new"), 2, 4, 1 << 20)?;
    std::fs::write(src.join("f000"), b"changed")?;
    let (_, incr_rss) = step(&a, "backup, incremental (+4 MiB)", &["backup", &src_s])?;
    step(&a, "backup, no change", &["backup", &src_s])?;

    let list = Command::new(&a.coffer)
        .args([
            "--repo",
            &repo_dir.display().to_string(),
            "--json",
            "snapshots",
        ])
        .args(["--host", "scale"])
        .env("COFFER_PASSWORD", PASSWORD)
        .env("COFFER_CACHE_DIR", a.dir.join("cache"))
        .output()?;
    let snaps: serde_json::Value = serde_json::from_slice(&list.stdout)
        .with_context(|| String::from_utf8_lossy(&list.stderr).into_owned())?;
    let some = snaps
        .as_array()
        .and_then(|v| v.last())
        .and_then(|s| s["id"].as_str())
        .context("no generated snapshot listed")?
        .to_string();
    let target = a.dir.join("restored");
    let (restore_secs, _) = step(
        &a,
        "restore one file",
        &[
            "restore",
            &some,
            "--target",
            &target.display().to_string(),
            "--include",
            &format!(
                "data/day-{:04}/file-042.dat",
                a.chunks / (CHUNKS_PER_FILE * FILES_PER_DAY) - 1
            ),
        ],
    )?;
    step(
        &a,
        "forget --keep-last 100",
        &["forget", "--host", "scale", "--keep-last", "100"],
    )?;
    // The first prune marks the unused packs, the second deletes them (grace 0: no backup runs).
    let (_, mark_rss) = step(&a, "prune (marks)", &["prune", "--grace", "0s"])?;
    let (_, sweep_rss) = step(&a, "prune (deletes)", &["prune", "--grace", "0s"])?;
    let prune_rss = mark_rss.max(sweep_rss);
    let (_, check2_rss) = step(&a, "check after prune", &["check"])?;

    let verdict = |ok: bool| if ok { "MET" } else { "NOT MET" };
    println!();
    println!(
        "incremental backup peak RSS {incr_rss:.0} MiB (goal <= 256): {}",
        verdict(incr_rss <= 256.0)
    );
    println!(
        "one-file restore {restore_secs:.2} s (goal <= 5): {}",
        verdict(restore_secs <= 5.0)
    );
    let worst = check_rss.max(prune_rss).max(check2_rss);
    println!(
        "check and prune peak RSS {worst:.0} MiB (goal <= 2048): {}",
        verdict(worst <= 2048.0)
    );
    Ok(())
}
