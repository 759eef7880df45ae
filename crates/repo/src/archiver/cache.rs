//! The files cache: what each file looked like at the last backup, and its chunks.
//!
//! Kept on the backing-up host, one per repository and set of sources. A file whose size, mtime,
//! ctime and inode are unchanged is not read again: its chunk list comes from here. The cache
//! holds only chunk ids (keyed hashes, meaningless without the repository key), so a write-only
//! host gets incremental backups without being able to read its earlier snapshots.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::id::ChunkId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub chunks: Vec<ChunkId>,
}

impl CacheEntry {
    pub fn same_file(&self, other: &CacheEntry) -> bool {
        self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.ctime_ns == other.ctime_ns
            && self.inode == other.inode
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FilesCache {
    version: u32,
    /// Keyed by the hex of the file's absolute path bytes.
    entries: HashMap<String, CacheEntry>,
}

impl FilesCache {
    /// Where the cache for these sources of this repository lives under `dir`.
    pub fn path(dir: &Path, repo_id: &str, sources: &[&Path]) -> PathBuf {
        let mut sorted: Vec<_> = sources.iter().map(|p| p.as_os_str()).collect();
        sorted.sort();
        let mut h = blake3::Hasher::new();
        for s in sorted {
            h.update(std::os::unix::ffi::OsStrExt::as_bytes(s));
            h.update(b"\0");
        }
        dir.join(repo_id)
            .join(format!("files-{}.json", &h.finalize().to_hex()[..16]))
    }

    /// Loads a cache; a missing or unreadable one is an empty cache (the backup reads everything).
    pub fn load(path: &Path) -> FilesCache {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!("ignoring damaged files cache {}: {e}", path.display());
                FilesCache::default()
            }),
            Err(_) => FilesCache::default(),
        }
    }

    pub fn get(&self, path: &[u8]) -> Option<&CacheEntry> {
        self.entries.get(&crate::id::hex_string(path))
    }

    pub fn insert(&mut self, path: &[u8], e: CacheEntry) {
        self.entries.insert(crate::id::hex_string(path), e);
    }

    /// Writes the cache atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().expect("cache path has a folder");
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".tmp-{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(self).expect("cache serializes"))?;
        std::fs::rename(&tmp, path)
    }
}
