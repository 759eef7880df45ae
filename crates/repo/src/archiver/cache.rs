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

/// The cache as the JSON earlier versions wrote (paths as hex); read once, written as binary.
#[derive(Deserialize)]
struct LegacyJson {
    entries: HashMap<String, CacheEntry>,
}

#[derive(Debug, Default)]
pub struct FilesCache {
    /// Keyed by the file's absolute path bytes.
    entries: HashMap<Vec<u8>, CacheEntry>,
}

/// The binary form: `MAGIC`, then per file its path (u32 length, bytes), size, mtime, ctime,
/// inode, the chunk count (u32) and the chunk ids; integers little-endian. A no-change backup
/// reads and writes the whole cache, and as JSON (hex paths and ids) that was a fifth of it.
const MAGIC: &[u8; 8] = b"coffer\x01\x00";

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
            .join(format!("files-{}.cache", &h.finalize().to_hex()[..16]))
    }

    /// Loads a cache; a missing or unreadable one is an empty cache (the backup reads everything).
    /// Without one at `path`, the JSON one an earlier version kept beside it (`.json`) is read.
    pub fn load(path: &Path) -> FilesCache {
        let (file, bytes) = match std::fs::read(path) {
            Ok(b) => (path.to_path_buf(), b),
            Err(_) => {
                let legacy = path.with_extension("json");
                match std::fs::read(&legacy) {
                    Ok(b) => (legacy, b),
                    Err(_) => return FilesCache::default(),
                }
            }
        };
        let parsed = if bytes.starts_with(MAGIC) {
            Self::decode(&bytes[MAGIC.len()..]).ok_or_else(|| "truncated or malformed".to_string())
        } else {
            serde_json::from_slice::<LegacyJson>(&bytes)
                .map_err(|e| e.to_string())
                .map(|l| FilesCache {
                    entries: l
                        .entries
                        .into_iter()
                        .filter_map(|(k, v)| Some((hex::decode(k).ok()?, v)))
                        .collect(),
                })
        };
        parsed.unwrap_or_else(|e| {
            tracing::warn!("ignoring damaged files cache {}: {e}", file.display());
            FilesCache::default()
        })
    }

    fn decode(mut b: &[u8]) -> Option<FilesCache> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (b.get(..n)?, b.get(n..)?);
            *b = rest;
            Some(head)
        }
        fn u64_of(b: &mut &[u8]) -> Option<u64> {
            Some(u64::from_le_bytes(take(b, 8)?.try_into().ok()?))
        }
        fn u32_of(b: &mut &[u8]) -> Option<u32> {
            Some(u32::from_le_bytes(take(b, 4)?.try_into().ok()?))
        }
        let mut entries = HashMap::new();
        while !b.is_empty() {
            let n = u32_of(&mut b)? as usize;
            let path = take(&mut b, n)?.to_vec();
            let size = u64_of(&mut b)?;
            let mtime_ns = u64_of(&mut b)? as i64;
            let ctime_ns = u64_of(&mut b)? as i64;
            let inode = u64_of(&mut b)?;
            let count = u32_of(&mut b)? as usize;
            let ids = take(&mut b, count.checked_mul(32)?)?;
            let chunks = ids
                .chunks_exact(32)
                .map(|c| ChunkId(c.try_into().expect("32 bytes")))
                .collect();
            entries.insert(
                path,
                CacheEntry {
                    size,
                    mtime_ns,
                    ctime_ns,
                    inode,
                    chunks,
                },
            );
        }
        Some(FilesCache { entries })
    }

    pub fn get(&self, path: &[u8]) -> Option<&CacheEntry> {
        self.entries.get(path)
    }

    pub fn insert(&mut self, path: &[u8], e: CacheEntry) {
        self.entries.insert(path.to_vec(), e);
    }

    /// Writes the cache atomically (temporary file, then rename), and removes the JSON one an
    /// earlier version kept.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().expect("cache path has a folder");
        std::fs::create_dir_all(dir)?;
        let mut out = Vec::with_capacity(MAGIC.len() + self.entries.len() * 128);
        out.extend_from_slice(MAGIC);
        for (p, e) in &self.entries {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            out.extend_from_slice(p);
            for v in [e.size, e.mtime_ns as u64, e.ctime_ns as u64, e.inode] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&(e.chunks.len() as u32).to_le_bytes());
            for c in &e.chunks {
                out.extend_from_slice(&c.0);
            }
        }
        let tmp = dir.join(format!(".tmp-{}", std::process::id()));
        std::fs::write(&tmp, out)?;
        std::fs::rename(&tmp, path)?;
        let legacy = path.with_extension("json");
        if legacy != path {
            let _ = std::fs::remove_file(legacy);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> CacheEntry {
        CacheEntry {
            size: 1000 + n as u64,
            mtime_ns: -5 + n as i64,
            ctime_ns: 1_700_000_000_000_000_000 + n as i64,
            inode: 42 + n as u64,
            chunks: (0..n).map(|i| ChunkId([i; 32])).collect(),
        }
    }

    #[test]
    fn the_cache_comes_back_as_saved_and_damage_empties_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = FilesCache::path(dir.path(), "repo", &[Path::new("/src")]);
        let mut c = FilesCache::default();
        c.insert(b"/src/a", entry(0));
        c.insert(b"/src/\xffodd name", entry(3));
        c.save(&path).unwrap();
        let back = FilesCache::load(&path);
        assert_eq!(back.entries.len(), 2);
        assert_eq!(back.get(b"/src/a"), Some(&entry(0)));
        assert_eq!(back.get(b"/src/\xffodd name"), Some(&entry(3)));
        // Cut short anywhere: an empty cache (the backup reads everything), never a panic.
        let bytes = std::fs::read(&path).unwrap();
        for cut in [MAGIC.len() + 1, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(FilesCache::load(&path).entries.is_empty(), "cut at {cut}");
        }
    }

    #[test]
    fn the_json_cache_of_an_earlier_version_is_read_then_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = FilesCache::path(dir.path(), "repo", &[Path::new("/src")]);
        let legacy = path.with_extension("json");
        std::fs::create_dir_all(legacy.parent().unwrap()).unwrap();
        let json = serde_json::json!({
            "version": 0,
            "entries": { hex::encode(b"/src/a"): entry(2) },
        });
        std::fs::write(&legacy, serde_json::to_vec(&json).unwrap()).unwrap();
        let c = FilesCache::load(&path);
        assert_eq!(c.get(b"/src/a"), Some(&entry(2)));
        c.save(&path).unwrap();
        assert!(!legacy.exists());
        assert_eq!(FilesCache::load(&path).get(b"/src/a"), Some(&entry(2)));
    }
}
