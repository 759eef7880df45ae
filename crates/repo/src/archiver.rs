//! The backup pipeline: walk sources, chunk, deduplicate, compress, pack, encrypt, upload.
//!
//! Threads, for two cores:
//! - the walker (the calling thread) reads files, chunks and hashes them in order, builds the
//!   trees, and hands every chunk the repository lacks to the workers;
//! - workers compress chunks and append them to their own data and tree packs, encrypting as
//!   they go;
//! - uploaders put finished packs and record them in the index, which is written out every few
//!   packs so a killed backup leaves what it uploaded findable for the next one.
//!
//! Order of writes: packs, then the index objects naming them, then the snapshot. A snapshot is
//! written only after everything it references is stored and indexed, so a crash at any moment
//! leaves every snapshot complete.

pub mod cache;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::chunker::Chunker;
use crate::crypto::Tag;
use crate::error::{Error, Result};
use crate::id::{ChunkId, SnapshotId};
use crate::index::{Index, IndexFile, IndexPack};
use crate::pack::{self, PackWriter, SealedPack};
use crate::snapshot::{PluginRecord, Snapshot, Summary};
use crate::tree::{Node, NodeKind, Tree};
use crate::Repository;
use cache::{CacheEntry, FilesCache};

/// What to back up and how.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub app: Option<String>,
    /// Folder for the files cache; `None` disables it (every file is read).
    pub cache_dir: Option<PathBuf>,
}

/// How a file's bytes are cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cut {
    /// Content-defined, but pages for a file that starts like a SQLite database.
    #[default]
    Auto,
    /// Content-defined.
    Content,
    /// Fixed pieces of this many bytes.
    Pages(usize),
    /// The largest pieces the repository allows, no boundary search.
    Whole,
}

/// Live counters, read by whoever shows progress.
#[derive(Debug, Default)]
pub struct Counters {
    pub files: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_seen: AtomicU64,
    pub bytes_added: AtomicU64,
    /// Set by whoever runs the backup (a daemon shutting down, a job cancelled): the archiver
    /// stops at the next chunk or file with [`Error::Cancelled`] and saves no snapshot. What it
    /// uploaded so far is unreferenced data, which prune removes.
    pub cancel: std::sync::atomic::AtomicBool,
    /// Where the time goes, in nanoseconds summed over threads: reading files, finding chunk
    /// boundaries, hashing chunks (ids), compressing, encrypting packs (and their id hash),
    /// writing packs to the store.
    pub stages: Stages,
}

/// Nanoseconds per stage of a backup, summed over the threads doing it.
#[derive(Debug, Default)]
pub struct Stages {
    pub read_ns: AtomicU64,
    pub chunk_ns: AtomicU64,
    pub hash_ns: AtomicU64,
    pub compress_ns: AtomicU64,
    pub encrypt_ns: AtomicU64,
    pub write_ns: AtomicU64,
}

impl Stages {
    /// Seconds per stage, for reports.
    pub fn secs(&self) -> [(&'static str, f64); 6] {
        let s = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e9;
        [
            ("read", s(&self.read_ns)),
            ("chunk", s(&self.chunk_ns)),
            ("hash", s(&self.hash_ns)),
            ("compress", s(&self.compress_ns)),
            ("encrypt", s(&self.encrypt_ns)),
            ("write", s(&self.write_ns)),
        ]
    }
}

/// Adds the time since `t` to `a`.
fn spent(a: &AtomicU64, t: std::time::Instant) {
    a.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

#[derive(Debug)]
pub struct BackupResult {
    pub snapshot: SnapshotId,
    pub summary: Summary,
    pub warnings: Vec<String>,
}

struct Job {
    id: ChunkId,
    tag: Tag,
    data: Vec<u8>,
}

/// Index entries of uploaded packs not yet written out.
struct Indexer {
    repo: Arc<Repository>,
    pending: Mutex<(IndexFile, Instant)>,
    /// Every pack this backup uploaded (the snapshot relies on them; see `check_commit`).
    uploaded: Mutex<Vec<crate::id::PackId>>,
}

impl Indexer {
    const MAX_PACKS: usize = 8;
    const MAX_AGE: Duration = Duration::from_secs(10);

    fn add(&self, p: IndexPack) -> Result<()> {
        self.uploaded.lock().unwrap().push(p.id);
        let mut g = self.pending.lock().unwrap();
        g.0.packs.push(p);
        if g.0.packs.len() >= Self::MAX_PACKS || g.1.elapsed() >= Self::MAX_AGE {
            let file = std::mem::take(&mut g.0);
            g.1 = Instant::now();
            drop(g);
            self.repo.save_index(&file)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let file = std::mem::take(&mut self.pending.lock().unwrap().0);
        if !file.packs.is_empty() {
            self.repo.save_index(&file)?;
        }
        Ok(())
    }
}

/// Runs one backup of plain files and folders and saves its snapshot.
///
/// Fails if a source cannot be read at all, or the repository cannot be written; unreadable files
/// inside a source become warnings and the snapshot is saved without them.
pub fn backup(
    repo: &Arc<Repository>,
    opts: &BackupOptions,
    counters: Arc<Counters>,
) -> Result<BackupResult> {
    if opts.paths.is_empty() {
        return Err(Error::Invalid(
            "nothing to back up: give at least one path".into(),
        ));
    }
    // A source that cannot be read is a warning, as a file inside one is: the others are still
    // backed up (the command then exits "incomplete"). Only when none can be read is it an error.
    let mut sources = vec![];
    let mut skipped = vec![];
    let mut first_error = None;
    for p in &opts.paths {
        let abs = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
        match std::fs::symlink_metadata(&abs) {
            Ok(_) => sources.push(abs),
            Err(e) => {
                let e = Error::io(&abs, e);
                skipped.push(format!("skipped: {e}"));
                first_error.get_or_insert(e);
            }
        }
    }
    if let (true, Some(e)) = (sources.is_empty(), first_error) {
        return Err(e);
    }
    let cache_path = opts.cache_dir.as_ref().map(|d| {
        FilesCache::path(
            d,
            &repo.config().id,
            &sources.iter().map(|s| s.as_path()).collect::<Vec<_>>(),
        )
    });
    let mut session = Session::start(repo.clone(), cache_path, counters)?;
    for abs in &sources {
        let name = abs
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "root".into());
        if session.has_item(Path::new(&name)) {
            return Err(Error::Invalid(format!(
                "two sources are named '{}': back them up separately or give their parent folder",
                name.to_string_lossy()
            )));
        }
        session.add_path(Path::new(&name), abs)?;
    }
    session.walker.warnings.extend(skipped);
    session.finish(SnapshotInfo {
        paths: sources
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect(),
        tags: opts.tags.clone(),
        host: opts.host.clone(),
        app: opts.app.clone(),
        ..Default::default()
    })
}

/// What a finished session records in its snapshot besides the tree.
#[derive(Debug, Clone, Default)]
pub struct SnapshotInfo {
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub app: Option<String>,
    pub plugin: Option<PluginRecord>,
    pub metadata: Option<serde_json::Value>,
}

/// A top-level entry of the snapshot being built: a captured node, or a folder that exists only
/// to hold items (`db` in `db/main.db`).
enum ItemEntry {
    Node(Node),
    Dir(BTreeMap<OsString, ItemEntry>),
}

/// Why [`insert_entry`] could not place an entry.
enum Clash {
    /// A path component above it is a file.
    UnderFile,
    /// Something is already at its place.
    Taken,
}

/// Puts `entry` at `path` (non-empty) in a tree of items, creating folders on the way.
fn insert_entry(
    mut level: &mut BTreeMap<OsString, ItemEntry>,
    path: &[OsString],
    entry: ItemEntry,
) -> std::result::Result<(), Clash> {
    let (last, parents) = path.split_last().expect("a path has a last component");
    for p in parents {
        level = match level
            .entry(p.clone())
            .or_insert_with(|| ItemEntry::Dir(BTreeMap::new()))
        {
            ItemEntry::Dir(children) => children,
            ItemEntry::Node(_) => return Err(Clash::UnderFile),
        };
    }
    if level.contains_key(last) {
        return Err(Clash::Taken);
    }
    level.insert(last.clone(), entry);
    Ok(())
}

/// A node coffer makes itself (a stream, an object, a folder holding items): owned by the user
/// coffer runs as.
fn own_node(kind: NodeKind, mode: u32, mtime_ns: i64) -> Node {
    let mut n = Node::new(kind);
    n.mode = mode;
    n.uid = nix::unistd::geteuid().as_raw();
    n.gid = nix::unistd::getegid().as_raw();
    n.mtime_ns = mtime_ns;
    n
}

/// One backup in progress: items are added one by one (files and folders, streams, generated
/// bytes), then [`Session::finish`] writes the snapshot. Plugins drive a session through the
/// host's capabilities; `backup` drives one for plain paths.
pub struct Session {
    repo: Arc<Repository>,
    walker: Walker,
    items: BTreeMap<OsString, ItemEntry>,
    item_paths: Vec<String>,
    threads: Vec<std::thread::JoinHandle<()>>,
    indexer: Arc<Indexer>,
    failure: Arc<Mutex<Option<Error>>>,
    counters: Arc<Counters>,
    cache_path: Option<PathBuf>,
    warnings: Vec<String>,
    start: Instant,
    time: chrono::DateTime<chrono::Utc>,
}

impl Session {
    /// Loads the index and starts the compress and upload threads.
    pub fn start(
        repo: Arc<Repository>,
        cache_path: Option<PathBuf>,
        counters: Arc<Counters>,
    ) -> Result<Session> {
        let start = Instant::now();
        let time = chrono::Utc::now();
        let (index, index_errors) = repo.load_index()?;
        let warnings: Vec<String> = index_errors
            .iter()
            .map(|(id, e)| {
                format!(
                    "index {} unreadable, its chunks will be stored again: {e}",
                    id.short()
                )
            })
            .collect();
        let old_cache = cache_path
            .as_deref()
            .map(FilesCache::load)
            .unwrap_or_default();
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 8);
        let (job_tx, job_rx) = bounded::<Job>(workers * 2);
        let (pack_tx, pack_rx) = bounded::<SealedPack>(0);
        let (pool_tx, pool_rx) = bounded::<Vec<u8>>(workers * 2);
        let failure: Arc<Mutex<Option<Error>>> = Arc::default();
        let indexer = Arc::new(Indexer {
            repo: repo.clone(),
            pending: Mutex::new((IndexFile::default(), Instant::now())),
            uploaded: Mutex::default(),
        });
        let chunker = Arc::new(Chunker::new(
            repo.config().chunker,
            repo.secrets().chunker_seed,
        ));
        let mut threads = vec![];
        // Remote stores hide their latency behind uploads in flight (`COFFER_S3_UPLOADS`); a
        // local one is written by the workers themselves.
        let uploaders = match std::env::var("COFFER_LOCAL_UPLOADS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            Some(n) if repo.is_local() => n,
            _ if repo.is_local() => 0,
            _ => repo.upload_parallelism(),
        };
        for _ in 0..workers {
            let (repo, rx, tx, pool, failure, counters, indexer) = (
                repo.clone(),
                job_rx.clone(),
                pack_tx.clone(),
                pool_tx.clone(),
                failure.clone(),
                counters.clone(),
                indexer.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let sink = if uploaders == 0 {
                    Sink::Inline(&indexer, &counters)
                } else {
                    Sink::Uploaders(tx)
                };
                worker(&repo, rx, sink, pool, &failure, &counters.stages)
            }));
        }
        for _ in 0..uploaders {
            let (repo, rx, indexer, counters, failure) = (
                repo.clone(),
                pack_rx.clone(),
                indexer.clone(),
                counters.clone(),
                failure.clone(),
            );
            threads.push(std::thread::spawn(move || {
                uploader(&repo, rx, &indexer, &counters, &failure)
            }));
        }
        let walker = Walker {
            repo: repo.clone(),
            index: Arc::new(index),
            buf: chunker.buffer(),
            chunker,
            pending: HashSet::new(),
            tx: Some(job_tx),
            failure: failure.clone(),
            old_cache,
            new_cache: FilesCache::default(),
            summary: Summary::default(),
            counters: counters.clone(),
            warnings: vec![],
            hardlinks: HashMap::new(),
            pool: pool_rx,
            racy_after_ns: time.timestamp_nanos_opt().unwrap_or(i64::MAX) - 1_000_000_000,
            cut: Cut::default(),
        };
        Ok(Session {
            repo,
            walker,
            items: BTreeMap::new(),
            item_paths: vec![],
            threads,
            indexer,
            failure,
            counters,
            cache_path,
            warnings,
            start,
            time,
        })
    }

    /// Lets the workers drain and joins every thread; then whatever failed in them, if anything.
    fn stop_threads(&mut self) -> Result<()> {
        self.walker.tx = None;
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        match self.failure.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `r`, with the pipeline's own failure (the store refused an upload, say) in place of the
    /// `Interrupted` that failure made the walker see: the user is told the real cause.
    fn checked<T>(&mut self, r: Result<T>) -> Result<T> {
        match r {
            Err(Error::Interrupted) => match self.stop_threads() {
                Err(real) => Err(real),
                Ok(()) => Err(Error::Interrupted),
            },
            r => r,
        }
    }

    /// No prune may have doomed what this snapshot relies on (see `Repository::check_commit`).
    fn check_commit(&self) -> Result<()> {
        let uploaded = self.indexer.uploaded.lock().unwrap().clone();
        self.repo.check_commit(&self.walker.index, &uploaded)
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Whether an item (or an item below it) exists at `item`.
    pub fn has_item(&self, item: &Path) -> bool {
        let mut level = &self.items;
        let comps: Vec<_> = item.components().collect();
        for (i, c) in comps.iter().enumerate() {
            match level.get(c.as_os_str()) {
                None => return false,
                Some(ItemEntry::Node(_)) => return i == comps.len() - 1,
                Some(ItemEntry::Dir(children)) => level = children,
            }
        }
        true
    }

    fn place(&mut self, item: &Path, mut node: Node) -> Result<()> {
        let comps: Vec<OsString> = item
            .components()
            .map(|c| match c {
                std::path::Component::Normal(n) => Ok(n.to_os_string()),
                _ => Err(Error::Invalid(format!(
                    "item '{}' must be a relative path without '..'",
                    item.display()
                ))),
            })
            .collect::<Result<_>>()?;
        let Some(last) = comps.last() else {
            return Err(Error::Invalid("an item needs a name".into()));
        };
        node.set_name(last);
        insert_entry(&mut self.items, &comps, ItemEntry::Node(node)).map_err(|c| {
            Error::Invalid(match c {
                Clash::UnderFile => format!("item '{}' lies inside another item", item.display()),
                Clash::Taken => format!("item '{}' was captured twice", item.display()),
            })
        })?;
        self.item_paths.push(item.to_string_lossy().into_owned());
        Ok(())
    }

    /// [`Session::add_path`], its files cut as `cut` says.
    pub fn add_path_cut(&mut self, item: &Path, path: &Path, cut: Cut) -> Result<u64> {
        if let Cut::Pages(n) = cut {
            if !(512..=65536).contains(&n) || !n.is_power_of_two() {
                return Err(Error::Invalid(format!(
                    "pages of {n} bytes: a page size is a power of two from 512 to 65536"
                )));
            }
        }
        let before = std::mem::replace(&mut self.walker.cut, cut);
        let r = self.add_path(item, path);
        self.walker.cut = before;
        r
    }

    /// Captures a file or folder (recursively) as `item`; returns the bytes it holds.
    pub fn add_path(&mut self, item: &Path, path: &Path) -> Result<u64> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
        let before = self.walker.summary.total_bytes;
        let saved = self
            .walker
            .save_node(path, path.file_name().unwrap_or_default(), meta);
        let node = self
            .checked(saved)?
            .ok_or_else(|| Error::Invalid(format!("{} could not be read", path.display())))?;
        self.place(item, node)?;
        Ok(self.walker.summary.total_bytes - before)
    }

    /// Captures everything `reader` yields as the file `item` (a dump, a download).
    pub fn add_reader(&mut self, item: &Path, reader: impl Read) -> Result<u64> {
        let chunked = self.walker.chunk_stream(item, reader);
        let (content, size) = self.checked(chunked)?;
        let mut node = own_node(
            NodeKind::File,
            0o600,
            self.time.timestamp_nanos_opt().unwrap_or(0),
        );
        node.content = content;
        node.size = size;
        self.walker.summary.total_bytes += size;
        self.walker.summary.files_new += 1;
        self.place(item, node)?;
        Ok(size)
    }

    /// Captures streams as the files of one folder item (an S3 bucket's objects): each object is
    /// its path below the folder (`/`-separated), modification time in ns, and content. Folder
    /// markers (keys ending in `/`) are skipped; a path with an empty, `.` or `..` segment, or
    /// one that is both a file and a folder, fails the capture. Returns (objects, bytes).
    pub fn add_folder<R: Read>(
        &mut self,
        item: &Path,
        objects: impl IntoIterator<Item = Result<(String, i64, R)>>,
    ) -> Result<(u64, u64)> {
        let mut root: BTreeMap<OsString, ItemEntry> = BTreeMap::new();
        let (mut count, mut bytes) = (0u64, 0u64);
        for object in objects {
            let (key, mtime_ns, reader) = object?;
            if key.ends_with('/') {
                continue;
            }
            let segs: Vec<OsString> = key.split('/').map(OsString::from).collect();
            if segs.iter().any(|s| s.is_empty() || s == "." || s == "..") {
                return Err(Error::Invalid(format!(
                    "object '{key}' cannot be restored as a file (its path has an empty, '.' or '..' part)"
                )));
            }
            let chunked = self.walker.chunk_stream(Path::new(&key), reader);
            let (content, size) = self.checked(chunked)?;
            let mut node = own_node(NodeKind::File, 0o644, mtime_ns);
            node.content = content;
            node.size = size;
            node.set_name(segs.last().expect("split gives one part at least"));
            insert_entry(&mut root, &segs, ItemEntry::Node(node)).map_err(|_| {
                Error::Invalid(format!("object '{key}' is both a file and a folder"))
            })?;
            count += 1;
            bytes += size;
        }
        let mut dir = own_node(
            NodeKind::Dir,
            0o755,
            self.time.timestamp_nanos_opt().unwrap_or(0),
        );
        let saved = self.walker.save_items(root, self.time);
        dir.subtree = Some(self.checked(saved)?);
        self.walker.summary.total_bytes += bytes;
        self.walker.summary.files_new += count;
        self.place(item, dir)?;
        Ok((count, bytes))
    }

    /// Stores bytes that are not an item (the plugin's wasm); returns their chunks.
    pub fn store_blob(&mut self, data: &[u8]) -> Result<Vec<ChunkId>> {
        let chunked = self.walker.chunk_stream(Path::new("(blob)"), data);
        Ok(self.checked(chunked)?.0)
    }

    /// Stores one chunk as it is (no re-chunking), if the repository lacks it; returns its id.
    /// Copies between repositories use this: chunk ids are keyed per repository.
    pub fn add_chunk(&mut self, tag: Tag, data: Vec<u8>) -> Result<ChunkId> {
        let id = ChunkId(self.repo.secrets().id(tag, &data));
        if self.walker.is_new(&id) {
            if tag == Tag::Data {
                self.walker.summary.bytes_read += data.len() as u64;
            }
            let sent = self.walker.send(id, tag, data);
            self.checked(sent)?;
        }
        Ok(id)
    }

    /// Stores every pack and index entry, then `snapshot` as given (a copy keeps the original's
    /// time, host and summary; its tree was built with [`Session::add_chunk`]).
    pub fn finish_as(mut self, snapshot: Snapshot) -> Result<(SnapshotId, Summary)> {
        self.stop_threads()?;
        self.indexer.flush()?;
        let mut summary = std::mem::take(&mut self.walker.summary);
        summary.bytes_added = self.counters.bytes_added.load(Ordering::Relaxed);
        summary.duration_secs = self.start.elapsed().as_secs_f64();
        self.check_commit()?;
        Ok((self.repo.save_snapshot(&snapshot)?, summary))
    }

    /// Writes the trees and the snapshot, after every pack and index entry is stored.
    pub fn finish(mut self, info: SnapshotInfo) -> Result<BackupResult> {
        let items = std::mem::take(&mut self.items);
        let root = self.walker.save_items(items, self.time);
        // The threads' failure first: it is the cause of an `Interrupted` from the walker.
        self.stop_threads()?;
        let root = root?;
        self.indexer.flush()?;
        let mut summary = std::mem::take(&mut self.walker.summary);
        summary.errors = self.walker.warnings.len() as u64;
        summary.duration_secs = self.start.elapsed().as_secs_f64();
        summary.bytes_added = self.counters.bytes_added.load(Ordering::Relaxed);
        // A write-only key writes for the host it was made for, and no other.
        let hostname = match (self.repo.bound_host(), info.host) {
            (Some(bound), Some(asked)) if bound != asked => {
                return Err(Error::Invalid(format!(
                    "this write-only key writes snapshots for host {bound} only, not {asked}: make a key for {asked} with `coffer key add --write-only --host {asked}`"
                )))
            }
            (Some(bound), _) => bound,
            (None, asked) => asked.unwrap_or_else(crate::hostname),
        };
        let snap = Snapshot {
            username: std::env::var("USER").unwrap_or_default(),
            tags: info.tags,
            app: info.app,
            plugin: info.plugin,
            items: std::mem::take(&mut self.item_paths),
            metadata: info.metadata,
            summary: Some(summary.clone()),
            ..Snapshot::new(self.time, hostname, info.paths, root)
        };
        self.check_commit()?;
        let id = self.repo.save_snapshot(&snap)?;
        let mut warnings = std::mem::take(&mut self.warnings);
        if let Some(p) = &self.cache_path {
            if let Err(e) = self.walker.new_cache.save(p) {
                warnings.push(format!("files cache not saved ({}): {e}", p.display()));
            }
        }
        warnings.append(&mut self.walker.warnings);
        Ok(BackupResult {
            snapshot: id,
            summary,
            warnings,
        })
    }
}

impl Drop for Session {
    /// An abandoned session (a failed capture) stops its threads; what they uploaded stays
    /// indexed for the next backup, and no snapshot is written.
    fn drop(&mut self) {
        let _ = self.stop_threads();
        let _ = self.indexer.flush();
    }
}

fn fail(failure: &Mutex<Option<Error>>, e: Error) {
    let mut f = failure.lock().unwrap();
    if f.is_none() {
        *f = Some(e);
    }
}

/// Where a worker's sealed packs go: to the uploader threads, or (a local store, where a write
/// is quick and no latency needs hiding) stored by the worker itself, so no sealed pack waits
/// in memory for an uploader.
enum Sink<'a> {
    Uploaders(Sender<SealedPack>),
    Inline(&'a Indexer, &'a Counters),
}

fn worker(
    repo: &Repository,
    rx: Receiver<Job>,
    sink: Sink,
    pool: Sender<Vec<u8>>,
    failure: &Mutex<Option<Error>>,
    stages: &Stages,
) {
    let target = repo.config().pack_size as u64;
    let recipient = &repo.secrets().data_recipient;
    let mut data: Option<PackWriter> = None;
    let mut trees: Option<PackWriter> = None;
    let mut encoder = pack::ChunkEncoder::new(repo.config().compression);
    let mut frame = Vec::new();
    let seal = |sealed: SealedPack| match &sink {
        Sink::Uploaders(tx) => {
            if tx.send(sealed).is_err() {
                fail(failure, Error::Invalid("uploaders stopped".into()));
            }
        }
        Sink::Inline(indexer, counters) => store_pack(repo, sealed, indexer, counters, failure),
    };
    for job in rx {
        let t = std::time::Instant::now();
        encoder.encode_into(&job.data, &mut frame);
        spent(&stages.compress_ns, t);
        let t = std::time::Instant::now();
        let slot = if job.tag == Tag::Tree {
            &mut trees
        } else {
            &mut data
        };
        let w = slot.get_or_insert_with(|| PackWriter::new(recipient, target as usize));
        w.add(job.id, job.tag, &frame, job.data.len());
        let _ = pool.try_send(job.data);
        let full = w.size() >= target;
        let sealed = full.then(|| slot.take().expect("just used").finish());
        spent(&stages.encrypt_ns, t);
        if let Some(sealed) = sealed {
            seal(sealed);
        }
    }
    for w in [data, trees].into_iter().flatten() {
        seal(w.finish());
    }
}

fn uploader(
    repo: &Repository,
    rx: Receiver<SealedPack>,
    indexer: &Indexer,
    counters: &Counters,
    failure: &Mutex<Option<Error>>,
) {
    for p in rx {
        store_pack(repo, p, indexer, counters, failure);
    }
}

/// Uploads and indexes a sealed pack; after a failure, drops it (so nobody ever blocks).
fn store_pack(
    repo: &Repository,
    p: SealedPack,
    indexer: &Indexer,
    counters: &Counters,
    failure: &Mutex<Option<Error>>,
) {
    if failure.lock().unwrap().is_some() {
        return;
    }
    let size = p.bytes.len() as u64;
    let t = std::time::Instant::now();
    let r = repo.upload_pack(p).and_then(|entry| indexer.add(entry));
    spent(&counters.stages.write_ns, t);
    match r {
        Ok(()) => {
            counters.bytes_added.fetch_add(size, Ordering::Relaxed);
        }
        Err(e) => fail(failure, e),
    }
}

struct Walker {
    repo: Arc<Repository>,
    index: Arc<Index>,
    chunker: Arc<Chunker>,
    /// Chunks handed to the workers in this backup.
    pending: HashSet<ChunkId>,
    /// `None` once the session is finishing: the workers then drain and stop.
    tx: Option<Sender<Job>>,
    failure: Arc<Mutex<Option<Error>>>,
    old_cache: FilesCache,
    new_cache: FilesCache,
    summary: Summary,
    counters: Arc<Counters>,
    warnings: Vec<String>,
    hardlinks: HashMap<(u64, u64), Vec<ChunkId>>,
    /// The chunker's read buffer, reused for every file.
    buf: Vec<u8>,
    /// Chunk buffers the workers are done with, to fill again (fresh ones cost page faults).
    pool: Receiver<Vec<u8>>,
    /// Files modified after this instant are not cached: a write in the same timestamp tick as
    /// our read would go unnoticed next time.
    racy_after_ns: i64,
    /// How the item being captured is cut.
    cut: Cut,
}

fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec())
}

fn ctime_ns(m: &std::fs::Metadata) -> i64 {
    m.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.ctime_nsec())
}

impl Walker {
    fn check_failed(&self) -> Result<()> {
        if self.failure.lock().unwrap().is_some() {
            return Err(Error::Interrupted);
        }
        if self.counters.cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// Whether a chunk is neither stored nor already handed to the workers; claims it if so.
    fn is_new(&mut self, id: &ChunkId) -> bool {
        !self.index.reuse(id) && self.pending.insert(*id)
    }

    fn send(&mut self, id: ChunkId, tag: Tag, data: Vec<u8>) -> Result<()> {
        self.summary.chunks_added += 1;
        let tx = self.tx.as_ref().ok_or(Error::Interrupted)?;
        tx.send(Job { id, tag, data })
            .map_err(|_| Error::Interrupted)
    }

    /// Saves the trees of the item hierarchy bottom-up; returns the root tree.
    fn save_items(
        &mut self,
        items: BTreeMap<OsString, ItemEntry>,
        time: chrono::DateTime<chrono::Utc>,
    ) -> Result<ChunkId> {
        let mut nodes = vec![];
        for (name, e) in items {
            let node = match e {
                ItemEntry::Node(n) => n,
                ItemEntry::Dir(children) => {
                    let mut n = own_node(
                        NodeKind::Dir,
                        0o755,
                        time.timestamp_nanos_opt().unwrap_or(0),
                    );
                    n.set_name(&name);
                    n.subtree = Some(self.save_items(children, time)?);
                    n
                }
            };
            nodes.push(node);
        }
        nodes.sort_by_key(|n| n.os_name());
        self.save_tree(Tree { nodes })
    }

    fn save_tree(&mut self, tree: Tree) -> Result<ChunkId> {
        self.summary.entries += tree.nodes.len() as u64;
        let bytes = tree.to_bytes();
        if bytes.len() > crate::pack::MAX_TREE_CHUNK {
            return Err(Error::Invalid(format!(
                "a folder of {} entries lists to more than {} MiB, more than a restore reads in one piece: split it",
                tree.nodes.len(),
                crate::pack::MAX_TREE_CHUNK >> 20
            )));
        }
        let id = ChunkId(self.repo.secrets().id(Tag::Tree, &bytes));
        if self.is_new(&id) {
            self.send(id, Tag::Tree, bytes)?;
        }
        Ok(id)
    }

    fn warn(&mut self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings.push(msg);
    }

    fn save_node(
        &mut self,
        path: &Path,
        name: &OsStr,
        meta: std::fs::Metadata,
    ) -> Result<Option<Node>> {
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            NodeKind::File
        } else if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_symlink() {
            NodeKind::Symlink
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else if ft.is_char_device() {
            NodeKind::Chardev
        } else if ft.is_block_device() {
            NodeKind::Blockdev
        } else {
            NodeKind::Socket
        };
        let mut node = Node::new(kind);
        node.set_name(name);
        node.mode = meta.mode() & 0o7777;
        node.uid = meta.uid();
        node.gid = meta.gid();
        node.mtime_ns = mtime_ns(&meta);
        match kind {
            NodeKind::File => {
                if meta.nlink() > 1 {
                    node.hardlink = Some((meta.dev(), meta.ino()));
                }
                match self.save_file(path, &meta) {
                    Ok((content, size)) => {
                        node.content = content;
                        node.size = size;
                    }
                    Err(e @ Error::Io { .. }) => {
                        self.warn(format!("skipped: {e}"));
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                }
            }
            NodeKind::Dir => match self.save_dir(path) {
                Ok(id) => {
                    node.subtree = Some(id);
                    self.summary.dirs += 1;
                }
                Err(e @ Error::Io { .. }) => {
                    self.warn(format!("skipped: {e}"));
                    return Ok(None);
                }
                Err(e) => return Err(e),
            },
            NodeKind::Symlink => match std::fs::read_link(path) {
                Ok(t) => node.set_target(t.as_os_str()),
                Err(e) => {
                    self.warn(format!("skipped: {}: {e}", path.display()));
                    return Ok(None);
                }
            },
            NodeKind::Chardev | NodeKind::Blockdev => node.rdev = Some(meta.rdev()),
            NodeKind::Fifo | NodeKind::Socket => {}
        }
        Ok(Some(node))
    }

    fn save_dir(&mut self, path: &Path) -> Result<ChunkId> {
        self.check_failed()?;
        let mut entries = vec![];
        for e in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
            let e = e.map_err(|e| Error::io(path, e))?;
            entries.push(e.file_name());
        }
        entries.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut nodes = Vec::with_capacity(entries.len());
        for name in entries {
            let child = path.join(&name);
            let meta = match std::fs::symlink_metadata(&child) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(format!("skipped: {}: {e}", child.display()));
                    continue;
                }
            };
            if let Some(n) = self.save_node(&child, &name, meta)? {
                nodes.push(n);
            }
        }
        self.save_tree(Tree { nodes })
    }

    /// Chunks a file (or reuses the files cache); returns its chunks and the bytes it holds.
    fn save_file(&mut self, path: &Path, meta: &std::fs::Metadata) -> Result<(Vec<ChunkId>, u64)> {
        self.check_failed()?;
        self.counters.files.fetch_add(1, Ordering::Relaxed);
        self.summary.total_bytes += meta.len();
        self.counters
            .bytes_seen
            .fetch_add(meta.len(), Ordering::Relaxed);
        let entry = CacheEntry {
            size: meta.len(),
            mtime_ns: mtime_ns(meta),
            ctime_ns: ctime_ns(meta),
            inode: meta.ino(),
            chunks: vec![],
        };
        let key = path.as_os_str().as_bytes();
        let old = self.old_cache.get(key);
        if let Some(old) = old {
            if old.same_file(&entry)
                && old
                    .chunks
                    .iter()
                    .all(|c| self.pending.contains(c) || self.index.reuse(c))
            {
                self.summary.files_unchanged += 1;
                self.new_cache.insert(key, old.clone());
                return Ok((old.chunks.clone(), meta.len()));
            }
        }
        let link_key = (meta.dev(), meta.ino());
        if meta.nlink() > 1 {
            if let Some(chunks) = self.hardlinks.get(&link_key) {
                return Ok((chunks.clone(), meta.len()));
            }
        }
        if old.is_some() {
            self.summary.files_changed += 1;
        } else {
            self.summary.files_new += 1;
        }
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let (chunks, size) = self.chunk_stream(path, file)?;
        let after = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
        let changed = after.len() != size || mtime_ns(&after) != entry.mtime_ns;
        if changed {
            self.warn(format!(
                "{}: changed while it was read; this snapshot holds a mix",
                path.display()
            ));
        } else if entry.mtime_ns < self.racy_after_ns && ctime_ns(&after) < self.racy_after_ns {
            self.new_cache.insert(
                key,
                CacheEntry {
                    chunks: chunks.clone(),
                    ..entry
                },
            );
        }
        if meta.nlink() > 1 {
            self.hardlinks.insert(link_key, chunks.clone());
        }
        Ok((chunks, size))
    }

    /// Chunks a stream, hands new chunks to the workers; returns the chunk list and size. A
    /// stream that starts like a SQLite database is cut at its pages, anything else by content.
    fn chunk_stream(&mut self, path: &Path, mut source: impl Read) -> Result<(Vec<ChunkId>, u64)> {
        let mut head = [0u8; 100];
        let mut n = 0;
        while n < head.len() {
            match source.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        let page = match self.cut {
            Cut::Auto => crate::chunker::page_size_of(&head[..n]),
            Cut::Content => None,
            Cut::Pages(size) => Some(size),
            Cut::Whole => Some(usize::MAX),
        };
        let source = std::io::Cursor::new(&head[..n]).chain(source);
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.chunk_into(path, source, &mut buf, page);
        self.buf = buf;
        r
    }

    fn chunk_into(
        &mut self,
        path: &Path,
        source: impl Read,
        buf: &mut [u8],
        page: Option<usize>,
    ) -> Result<(Vec<ChunkId>, u64)> {
        let chunker = self.chunker.clone();
        let mut stream = match page {
            Some(size) => chunker.stream_fixed(source, buf, size),
            None => chunker.stream(source, buf),
        };
        let mut chunks = vec![];
        let mut size = 0u64;
        let stages = self.counters.clone();
        // Each `next_chunk` reads and cuts; the stream tells how much was reading (asked once
        // the chunk it lent is gone), the rest was finding the cut.
        let account = |stream: &mut crate::chunker::ChunkStream<'_, _>, total: u64| {
            let read = stream.take_read_ns();
            stages.stages.read_ns.fetch_add(read, Ordering::Relaxed);
            stages
                .stages
                .chunk_ns
                .fetch_add(total.saturating_sub(read), Ordering::Relaxed);
        };
        let mut last = 0u64;
        loop {
            account(&mut stream, last);
            let t = std::time::Instant::now();
            let next = stream.next_chunk().map_err(|e| Error::io(path, e))?;
            last = t.elapsed().as_nanos() as u64;
            let Some(data) = next else { break };
            size += data.len() as u64;
            self.summary.bytes_read += data.len() as u64;
            self.counters
                .bytes_read
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            let t = std::time::Instant::now();
            let id = ChunkId(self.repo.secrets().id(Tag::Data, data));
            spent(&stages.stages.hash_ns, t);
            chunks.push(id);
            if self.is_new(&id) {
                let mut owned = self.pool.try_recv().unwrap_or_default();
                owned.clear();
                owned.extend_from_slice(data);
                self.send(id, Tag::Data, owned)?;
            }
            self.check_failed()?;
        }
        account(&mut stream, last);
        Ok((chunks, size))
    }
}
