//! Restore: put a snapshot's files back on disk, byte for byte, with their metadata.
//!
//! The plan comes first: the whole tree is read and checked before anything is written, so a
//! snapshot with an unsafe entry (a name such as `..` or `a/b`, a duplicate name, a symlink that
//! points outside the target) is refused without touching the disk. Then:
//! 1. folders are created, never through a symlink (an existing symlink where a folder should be
//!    is an error);
//! 2. each file is created under a temporary name beside its final one;
//! 3. packs are read one at a time, in parallel; each chunk is verified against its id before it
//!    is written to every place that needs it (chunks of zeros are left as holes: sparse files);
//! 4. a file whose chunks all arrived gets its metadata and is renamed into place; a file with a
//!    damaged or missing chunk is deleted and reported, and the others are unaffected;
//! 5. symlinks, special files and hard links follow, then folder metadata, deepest first.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};
use crate::index::Index;
use crate::pack::{self, PackEntry};
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind};
use crate::walk::{walk_bounded, Limits, Visitor};
use crate::{parallel_map, ChunkReader, Repository};

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Restore only these paths (relative to the snapshot root) and what lies under them.
    pub include: Vec<PathBuf>,
    /// What to do with symlinks whose target leaves the restore target.
    pub outside_links: OutsideLinks,
}

/// Symlinks pointing outside the restore target (absolute, `..` past the root, or through
/// another link of the snapshot). Symlinks are data: by default they are restored as they were.
/// Safety does not come from refusing them but from never following one while restoring: every
/// link is created after every file and folder, into a folder the restore made itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutsideLinks {
    /// Restore them as they were (restic, borg and tar do the same).
    #[default]
    Restore,
    /// Leave them out, counted in the summary.
    Skip,
    /// Refuse the whole restore before writing anything (a plugin's item restore).
    Refuse,
}

#[derive(Debug, Default, Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    /// Partial files an earlier, killed restore left in these folders, removed.
    pub temp_files_removed: u64,
    /// Symlinks left out because they point outside the target (`OutsideLinks::Skip`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links_skipped: Vec<String>,
    pub others: u64,
    pub bytes: u64,
    pub errors: Vec<String>,
    pub duration_secs: f64,
}

/// A chunk and every (file job, offset) it is written to.
type ChunkPlaces = (PackEntry, Vec<(usize, u64)>);

/// One entry of the plan.
struct Item {
    rel: PathBuf,
    node: Node,
}

/// What a restore will write, gathered by one walk of the snapshot's tree.
struct Plan<W> {
    wanted: W,
    items: Vec<Item>,
    /// Folders whose listing (tree) could not be read: restore goes on with everything else
    /// and names these.
    unreadable: Vec<String>,
    /// The names of the folder being read, to refuse one that appears twice in it.
    seen: HashSet<OsString>,
}

impl<W: Fn(&Path) -> bool> Visitor for Plan<W> {
    type Error = Error;

    fn tree(&mut self, _: &ChunkId, _: &Path) -> bool {
        self.seen.clear();
        true
    }

    fn unreadable(&mut self, id: &ChunkId, path: &Path, e: Error) -> Result<()> {
        self.unreadable.push(format!(
            "/{}: nothing in this folder restored, its listing (tree {}) cannot be read: {e}",
            path.display(),
            id.short()
        ));
        Ok(())
    }

    fn node(&mut self, tree: &ChunkId, dir: &Path, node: Node) -> Result<bool> {
        let name = node
            .os_name()
            .ok_or_else(|| Error::corrupt(format!("tree {}", tree.short()), "bad name encoding"))?;
        check_name(&name, dir)?;
        let rel = dir.join(&name);
        if !self.seen.insert(name) {
            return Err(Error::Unsafe(format!(
                "{} appears twice in one folder of the snapshot",
                rel.display()
            )));
        }
        if !(self.wanted)(&rel) {
            return Ok(false);
        }
        self.items.push(Item { rel, node });
        Ok(true)
    }
}

/// Walks the snapshot's tree and checks it; fails before anything is written.
/// Also returns the symlinks left out ([`OutsideLinks::Skip`]) and the folders that could not
/// be read.
fn plan(
    reader: &ChunkReader,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
) -> Result<(Vec<Item>, Vec<String>, Vec<String>)> {
    let include: Vec<PathBuf> = opts
        .include
        .iter()
        .map(|p| {
            p.components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .collect()
        })
        .collect();
    let wanted = |rel: &Path| {
        include.is_empty()
            || include
                .iter()
                .any(|inc| rel.starts_with(inc) || inc.starts_with(rel))
    };
    let mut plan = Plan {
        wanted,
        items: vec![],
        unreadable: vec![],
        seen: HashSet::new(),
    };
    walk_bounded(
        reader,
        snapshot.tree,
        Path::new(""),
        Limits::of(snapshot),
        &mut plan,
    )?;
    let mut items = plan.items;
    let unreadable = plan.unreadable;
    // Each --include must name something: the folders above it alone do not count.
    let unmatched: Vec<String> = include
        .iter()
        .filter(|inc| !items.iter().any(|i| i.rel.starts_with(inc)))
        .map(|inc| inc.display().to_string())
        .collect();
    if !unmatched.is_empty() && unreadable.is_empty() {
        return Err(Error::Invalid(format!(
            "nothing in the snapshot matches --include {}: see `coffer ls SNAPSHOT` for its paths",
            unmatched.join(", ")
        )));
    }
    let mut skipped = vec![];
    if opts.outside_links != OutsideLinks::Restore {
        let is_link = |i: &&Item| i.node.kind == NodeKind::Symlink;
        let links: HashSet<PathBuf> = items
            .iter()
            .filter(is_link)
            .map(|i| i.rel.clone())
            .collect();
        let target = |i: &Item| PathBuf::from(i.node.os_target().unwrap_or_default());
        let leaving: HashSet<PathBuf> = items
            .iter()
            .filter(is_link)
            .filter(|i| escapes(i.rel.parent().unwrap_or(Path::new("")), &target(i), &links))
            .map(|i| i.rel.clone())
            .collect();
        let outside: Vec<String> = items
            .iter()
            .filter(|i| leaving.contains(&i.rel))
            .map(|i| format!("{} -> {}", i.rel.display(), target(i).display()))
            .collect();
        if !outside.is_empty() && opts.outside_links == OutsideLinks::Refuse {
            return Err(Error::Unsafe(format!(
                "{} symlink(s) point outside the target ({}{})",
                outside.len(),
                outside[..outside.len().min(3)].join(", "),
                if outside.len() > 3 { ", ..." } else { "" }
            )));
        }
        items.retain(|i| !leaving.contains(&i.rel));
        skipped = outside;
    }
    // Parents before children.
    items.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((items, skipped, unreadable))
}

fn check_name(name: &OsStr, dir: &Path) -> Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(Error::Unsafe(format!(
            "the snapshot holds an entry named {:?} in '{}', which would write outside the target",
            name,
            dir.display()
        )));
    }
    Ok(())
}

/// Whether a symlink in `dir` (relative to the target) pointing at `target` leaves the target,
/// given the paths of every symlink being restored: a path that goes on through another link
/// (`d/e -> ..` where `d` is itself a link) is taken as leaving, since where it ends depends on
/// that link. Lexical otherwise: no file system is consulted.
fn escapes(dir: &Path, target: &Path, links: &HashSet<PathBuf>) -> bool {
    if target.is_absolute() {
        return true;
    }
    let mut at: Vec<std::ffi::OsString> = dir
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    // Every place the path passes through or ends at (below the folder the link lies in) must
    // not be another link of the snapshot.
    let through_link = |at: &[std::ffi::OsString]| {
        !at.is_empty() && links.contains(&at.iter().collect::<PathBuf>())
    };
    for c in target.components() {
        match c {
            // Going up out of a link, or above the target, leaves; otherwise the guard has popped.
            Component::ParentDir if through_link(&at) || at.pop().is_none() => return true,
            Component::ParentDir => {}
            Component::Normal(n) => {
                at.push(n.to_os_string());
                if through_link(&at) {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// Files being restored are written under this name (with the restoring process's id and the
/// file's number) and renamed into place when complete.
const TEMP_PREFIX: &str = ".coffer-restore-";

/// Removes the partial files a killed restore left in `dir` (those of a process no longer
/// running: a restore running beside this one keeps its own); returns how many.
fn remove_stale_temp_files(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        let alive = !pid.is_empty() && Path::new("/proc").join(pid).exists();
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if is_file && !alive && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::warn!(
            "removed {removed} partial file(s) an interrupted restore left in {}",
            dir.display()
        );
    }
    removed
}

/// Creates `path` as a folder, or accepts an existing real folder there; never follows a symlink.
fn ensure_dir(path: &Path) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let m = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
            if m.is_dir() {
                Ok(())
            } else {
                Err(Error::Unsafe(format!(
                    "{} exists and is not a folder",
                    path.display()
                )))
            }
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

struct FileJob {
    idx: usize,
    tmp: PathBuf,
    path: PathBuf,
    /// Chunk places not yet written; the thread that takes it to zero finishes the file.
    remaining: AtomicUsize,
    failed: AtomicBool,
    /// Whether the temporary file exists yet.
    created: Mutex<bool>,
}

/// What the pack threads share while writing files.
struct WriteCtx<'a> {
    items: &'a [Item],
    jobs: &'a [FileJob],
    errors: &'a Mutex<Vec<String>>,
    as_root: bool,
}

impl WriteCtx<'_> {
    fn report(&self, j: usize, why: &str) {
        if !self.jobs[j].failed.swap(true, Ordering::AcqRel) {
            self.errors.lock().unwrap().push(format!(
                "{}: {why}",
                self.items[self.jobs[j].idx].rel.display()
            ));
        }
    }

    /// A chunk for file `j` could not be had: the file will not be restored.
    fn fail(&self, j: usize, why: &str, restored: &[AtomicBool]) {
        self.report(j, why);
        self.settle(j, None, restored);
    }

    /// Writes one chunk (`None`: a hole, or an empty file) at `off` of file `j`.
    fn place(&self, j: usize, data: Option<&[u8]>, off: u64, restored: &[AtomicBool]) {
        let job = &self.jobs[j];
        if job.failed.load(Ordering::Acquire) {
            self.settle(j, None, restored);
            return;
        }
        let r = self.open(job).and_then(|f| {
            if let Some(d) = data {
                f.write_all_at(d, off)?;
            }
            Ok(f)
        });
        match r {
            Ok(f) => self.settle(j, Some(f), restored),
            Err(e) => self.fail(j, &e.to_string(), restored),
        }
    }

    fn open(&self, job: &FileJob) -> std::io::Result<std::fs::File> {
        let mut created = job.created.lock().unwrap();
        if *created {
            return std::fs::OpenOptions::new().write(true).open(&job.tmp);
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&job.tmp)?;
        if let Err(e) = f.set_len(self.items[job.idx].node.size) {
            // Not left behind: nothing else knows it exists.
            let _ = std::fs::remove_file(&job.tmp);
            return Err(e);
        }
        *created = true;
        Ok(f)
    }

    /// Counts one place of file `j` done; the last one finishes or removes the file.
    fn settle(&self, j: usize, handle: Option<std::fs::File>, restored: &[AtomicBool]) {
        let job = &self.jobs[j];
        let content = &self.items[job.idx].node.content;
        let last = content.is_empty() || job.remaining.fetch_sub(1, Ordering::AcqRel) == 1;
        if !last {
            return;
        }
        if job.failed.load(Ordering::Acquire) {
            if *job.created.lock().unwrap() {
                let _ = std::fs::remove_file(&job.tmp);
            }
            return;
        }
        let node = &self.items[job.idx].node;
        let r = match handle {
            Some(f) => Ok(f),
            None => self.open(job),
        }
        .and_then(|f| set_meta_fd(&f, node, self.as_root))
        .and_then(|_| std::fs::rename(&job.tmp, &job.path));
        match r {
            Ok(()) => restored[j].store(true, Ordering::Release),
            Err(e) => {
                let _ = std::fs::remove_file(&job.tmp);
                self.report(j, &e.to_string());
            }
        }
    }
}

/// Owner, mode and mtime of a regular file, through its open handle.
fn set_meta_fd(f: &std::fs::File, node: &Node, as_root: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if as_root {
        std::os::unix::fs::fchown(f, Some(node.uid), Some(node.gid))?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(node.mode & 0o7777))?;
    let t = filetime::FileTime::from_unix_time(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_file_handle_times(f, Some(t), Some(t))
}

fn set_meta(path: &Path, node: &Node, is_link: bool, as_root: bool) -> std::io::Result<()> {
    if as_root {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))?;
    }
    if !is_link {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode & 0o7777))?;
    }
    let t = filetime::FileTime::from_unix_time(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_symlink_file_times(path, t, t)
}

/// Restores `snapshot` (or part of it) under `opts.target`.
///
/// Fails before writing anything if the snapshot is unsafe or its trees cannot be read. Damaged
/// file content does not fail the restore: those files are reported in `errors` and left out.
pub fn restore(
    repo: &Repository,
    index: &Index,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    bytes_done: &AtomicU64,
) -> Result<RestoreSummary> {
    let start = std::time::Instant::now();
    repo.secrets().data_identity("restore")?;
    let reader = ChunkReader::new(repo, index);
    let (items, links_skipped, unreadable) = plan(&reader, snapshot, opts)?;
    let target = &opts.target;
    std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let as_root = nix::unistd::geteuid().is_root();
    let mut summary = RestoreSummary {
        links_skipped,
        ..RestoreSummary::default()
    };
    let errors = Mutex::new(unreadable);

    // 1. folders, and what a killed restore left in them
    summary.temp_files_removed += remove_stale_temp_files(target);
    // Folders made sure of (created, or found to be real folders): each is checked once, not
    // once per file in it (three system calls per file and level, before any data was written).
    let mut folders: HashSet<PathBuf> = HashSet::new();
    for it in items.iter().filter(|i| i.node.kind == NodeKind::Dir) {
        let dir = target.join(&it.rel);
        ensure_dir(&dir)?;
        summary.temp_files_removed += remove_stale_temp_files(&dir);
        folders.insert(dir);
    }
    // 2. plan the files; each is created under a temporary name by whichever thread writes its
    //    first chunk, and finished by the one that writes its last.
    let mut jobs: Vec<FileJob> = vec![];
    let mut link_first: HashMap<(u64, u64), usize> = HashMap::new();
    let mut later_links: Vec<usize> = vec![];
    let pid = std::process::id();
    for (idx, it) in items.iter().enumerate() {
        if it.node.kind != NodeKind::File {
            continue;
        }
        if let Some(k) = it.node.hardlink {
            if link_first.contains_key(&k) {
                later_links.push(idx);
                continue;
            }
            link_first.insert(k, idx);
        }
        let path = target.join(&it.rel);
        let parent = path.parent().expect("under target");
        ensure_dir_chain(target, parent, &mut folders)?;
        let tmp = parent.join(format!("{TEMP_PREFIX}{pid}-{idx}"));
        jobs.push(FileJob {
            idx,
            tmp,
            path,
            remaining: AtomicUsize::new(it.node.content.len()),
            failed: AtomicBool::new(false),
            created: Mutex::new(false),
        });
    }
    // 3. chunks, pack by pack
    let mut by_pack: HashMap<PackId, HashMap<ChunkId, ChunkPlaces>> = HashMap::new();
    let mut empty = vec![];
    for (j, job) in jobs.iter().enumerate() {
        let content = &items[job.idx].node.content;
        if content.is_empty() {
            empty.push(j);
        }
        let mut offset = 0u64;
        for c in content {
            match index.get(c) {
                Some((pack_id, entry)) => {
                    by_pack
                        .entry(pack_id)
                        .or_default()
                        .entry(*c)
                        .or_insert((entry, vec![]))
                        .1
                        .push((j, offset));
                    offset += entry.raw_length as u64;
                }
                None => {
                    if !job.failed.swap(true, Ordering::Relaxed) {
                        errors.lock().unwrap().push(format!(
                            "{}: {}",
                            items[job.idx].rel.display(),
                            Error::MissingChunk { chunk: c.to_hex() }
                        ));
                    }
                }
            }
        }
    }
    let packs: Vec<_> = by_pack.into_iter().collect();
    let ctx = WriteCtx {
        items: &items,
        jobs: &jobs,
        errors: &errors,
        as_root,
    };
    let restored: Vec<AtomicBool> = jobs.iter().map(|_| AtomicBool::new(false)).collect();
    parallel_map(&empty, |j| ctx.place(*j, None, 0, &restored));
    thread_local! {
        // A pack's plaintext and one chunk, reused: fresh 16 MiB buffers per pack cost more in
        // page faults than decryption did.
        static BUFS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    // One decoded chunk written to every place that wants it.
    let deliver = |data: &[u8], places: &[(usize, u64)]| {
        let zero = data.iter().all(|b| *b == 0);
        for (j, off) in places {
            ctx.place(*j, (!zero).then_some(data), *off, &restored);
        }
        bytes_done.fetch_add(data.len() as u64 * places.len() as u64, Ordering::Relaxed);
    };
    // A chunk whose pack fails is read from another copy where the index knows one (a few
    // packs cached: these are big).
    let elsewhere = ChunkReader::with_capacity(repo, index, 2);
    let rescue =
        |c: &ChunkId, places: &[(usize, u64)], e: Error| match elsewhere.chunk_elsewhere(c, e) {
            Ok(data) => deliver(&data, places),
            Err(e) => places
                .iter()
                .for_each(|(j, _)| ctx.fail(*j, &e.to_string(), &restored)),
        };
    parallel_map(&packs, |(pack_id, chunks)| {
        BUFS.with_borrow_mut(|(plain, data)| {
            let wanted = chunks.values().map(|c| &c.0);
            if let Err(e) = repo.read_pack_for(pack_id, index.pack_size(pack_id), wanted, plain) {
                for (c, (_, places)) in chunks {
                    rescue(c, places, Error::Invalid(e.to_string()));
                }
                return;
            }
            for (c, (entry, places)) in chunks {
                match pack::extract_into(plain, entry, repo.secrets(), pack_id, data) {
                    Ok(()) => deliver(data, places),
                    Err(e) => rescue(c, places, e),
                }
            }
        })
    });
    // 4. files with a missing chunk never finished: remove what was started
    let mut restored_at: HashMap<usize, PathBuf> = HashMap::new();
    for (j, job) in jobs.iter().enumerate() {
        if restored[j].load(Ordering::Relaxed) {
            summary.files += 1;
            summary.bytes += items[job.idx].node.size;
            restored_at.insert(job.idx, job.path.clone());
        } else if *job.created.lock().unwrap() {
            let _ = std::fs::remove_file(&job.tmp);
        }
    }
    // 5. hard links, symlinks and special files
    for idx in later_links {
        let it = &items[idx];
        let first = link_first[&it.node.hardlink.expect("link")];
        let path = target.join(&it.rel);
        match restored_at.get(&first) {
            Some(src) => {
                let r = replace_with(&path, |tmp| std::fs::hard_link(src, tmp));
                match r {
                    Ok(()) => summary.files += 1,
                    Err(e) => errors
                        .lock()
                        .unwrap()
                        .push(format!("{}: {e}", path.display())),
                }
            }
            None => errors.lock().unwrap().push(format!(
                "{}: not restored, its hard-link source {} failed",
                path.display(),
                items[first].rel.display()
            )),
        }
    }
    for it in &items {
        let path = target.join(&it.rel);
        let r = match it.node.kind {
            NodeKind::Symlink => {
                let t = it.node.os_target().unwrap_or_default();
                replace_with(&path, |tmp| std::os::unix::fs::symlink(&t, tmp))
                    .and_then(|_| set_meta(&path, &it.node, true, as_root))
                    .map(|_| summary.links += 1)
            }
            NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev | NodeKind::Socket => {
                make_special(&path, &it.node)
                    .and_then(|_| set_meta(&path, &it.node, false, as_root))
                    .map(|_| summary.others += 1)
            }
            _ => Ok(()),
        };
        if let Err(e) = r {
            errors
                .lock()
                .unwrap()
                .push(format!("{}: {e}", path.display()));
        }
    }
    // 6. folder metadata, deepest first (writing into a folder changes its mtime)
    for it in items.iter().rev().filter(|i| i.node.kind == NodeKind::Dir) {
        let path = target.join(&it.rel);
        match set_meta(&path, &it.node, false, as_root) {
            Ok(()) => summary.dirs += 1,
            Err(e) => errors
                .lock()
                .unwrap()
                .push(format!("{}: {e}", path.display())),
        }
    }
    summary.errors = errors.into_inner().unwrap();
    summary.duration_secs = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// Folders between the target and `dir` that the plan did not list (partial restores) are made
/// here, each checked not to be a symlink.
fn ensure_dir_chain(target: &Path, dir: &Path, sure: &mut HashSet<PathBuf>) -> Result<()> {
    if sure.contains(dir) {
        return Ok(());
    }
    let rel = dir.strip_prefix(target).expect("under target");
    let mut p = target.to_path_buf();
    for c in rel.components() {
        p.push(c);
        if !sure.contains(&p) {
            ensure_dir(&p)?;
            sure.insert(p.clone());
        }
    }
    Ok(())
}

/// Creates something at a temporary name with `make`, then renames it over `path`.
fn replace_with(
    path: &Path,
    make: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let parent = path.parent().expect("under target");
    let mut name = OsString::from(".coffer-restore-");
    name.push(std::process::id().to_string());
    name.push("-");
    name.push(path.file_name().unwrap_or_default());
    let tmp = parent.join(name);
    let _ = std::fs::remove_file(&tmp);
    make(&tmp)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn make_special(path: &Path, node: &Node) -> std::io::Result<()> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    let kind = match node.kind {
        NodeKind::Fifo => SFlag::S_IFIFO,
        NodeKind::Chardev => SFlag::S_IFCHR,
        NodeKind::Blockdev => SFlag::S_IFBLK,
        _ => SFlag::S_IFSOCK,
    };
    let _ = std::fs::remove_file(path);
    mknod(
        path,
        kind,
        Mode::from_bits_truncate(node.mode & 0o777),
        node.rdev.unwrap_or(0),
    )
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_escape_rules() {
        let none = HashSet::new();
        assert!(escapes(Path::new(""), Path::new("/etc/passwd"), &none));
        assert!(escapes(Path::new(""), Path::new("../x"), &none));
        assert!(escapes(Path::new("a"), Path::new("../../x"), &none));
        assert!(!escapes(Path::new("a"), Path::new("../b"), &none));
        assert!(!escapes(Path::new("a/b"), Path::new("c/../../d"), &none));
    }

    #[test]
    fn a_link_through_another_link_counts_as_leaving() {
        // d -> ../.. leaves; x -> d/e/.. reads lexically as "d", but goes through d.
        let links: HashSet<PathBuf> = [PathBuf::from("d"), PathBuf::from("x")].into();
        assert!(escapes(Path::new(""), Path::new("d/e/.."), &links));
        assert!(escapes(Path::new(""), Path::new("d/.."), &links));
        assert!(escapes(Path::new("q"), Path::new("../d"), &links));
        assert!(!escapes(Path::new("q"), Path::new("e"), &links));
        assert!(!escapes(Path::new(""), Path::new("f/g"), &links));
    }

    #[test]
    fn unsafe_names_are_refused() {
        for n in ["..", ".", "", "a/b", "../x", "/etc/x"] {
            assert!(check_name(OsStr::new(n), Path::new("")).is_err(), "{n}");
        }
        assert!(check_name(OsStr::new("..."), Path::new("")).is_ok());
    }
}
