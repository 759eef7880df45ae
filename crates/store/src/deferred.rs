//! Local writes whose flush to disk waits for the index object that names them (see
//! [`Backend::put_deferred`](crate::Backend::put_deferred)).
//!
//! A pack is written to a staged file, renamed into place (no reader ever sees part of it) and
//! its writeback started; its descriptor waits here. Before an index object naming packs is
//! stored, [`Deferred::flush`] fsyncs those packs and their folders. A pack is findable only
//! through an index object, so a power cut can leave a written pack unflushed only where
//! nothing names it: unreferenced data, which prune removes like any a killed backup left.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How many written files may wait with their descriptors open; the write past it flushes them
/// all (a prune's repack writes many packs before their index object).
const MAX_WAITING: usize = 64;

#[derive(Default)]
pub(crate) struct Deferred {
    waiting: Mutex<HashMap<String, Waiting>>,
    /// Keys whose flush failed: after a failed fsync a file's state is unknown, so naming it in
    /// an index object is refused from then on (a retried fsync would report success).
    failed: Mutex<HashSet<String>>,
    /// Held through a whole flush, so a flush asked for a key another thread is flushing waits
    /// for that flush to end instead of taking the key for done.
    flushing: Mutex<()>,
    /// Held while a folder is looked for and, if missing, created and its name flushed: a write
    /// into a folder another thread just created must not be flushed (and named by an index
    /// object) before that folder's own name is durable.
    folders: Mutex<()>,
}

struct Waiting {
    file: File,
    /// The file's folder, flushed with it (its entry names the file).
    dir: PathBuf,
}

impl Deferred {
    /// Writes `data` as `key` under `root`, starting its writeback without waiting for it.
    pub fn write(&self, root: &Path, key: &str, data: &[u8]) -> io::Result<()> {
        let path = root.join(key);
        let dir = path.parent().unwrap_or(root);
        {
            let _one = self.folders.lock().unwrap();
            if !dir.is_dir() {
                std::fs::create_dir_all(dir)?;
                // A folder's name is an entry in its parent: flushed now, once per folder.
                for parent in dir.ancestors().skip(1).take_while(|a| a.starts_with(root)) {
                    File::open(parent)?.sync_all()?;
                }
            }
        }
        // The suffix `#` and digits is object_store's staging name: its listings skip such files.
        let mut staged = path.clone().into_os_string();
        staged.push(format!("#{}", rand::random::<u32>()));
        let staged = PathBuf::from(staged);
        let written = (|| -> io::Result<File> {
            let mut file = File::options().write(true).create_new(true).open(&staged)?;
            file.write_all(data)?;
            start_writeback(&file);
            std::fs::rename(&staged, &path)?;
            Ok(file)
        })();
        let file = written.inspect_err(|_| {
            let _ = std::fs::remove_file(&staged);
        })?;
        let full = {
            let mut w = self.waiting.lock().unwrap();
            w.insert(
                key.to_string(),
                Waiting {
                    file,
                    dir: dir.to_path_buf(),
                },
            );
            w.len() > MAX_WAITING
        };
        if full {
            self.flush_all()?;
        }
        Ok(())
    }

    /// Flushes the waiting writes of `keys` and their folders. A key not waiting was flushed
    /// already or never deferred; one whose flush failed, now or before, is an error.
    pub fn flush(&self, keys: &[impl AsRef<str>]) -> io::Result<()> {
        let _one = self.flushing.lock().unwrap();
        let taken = {
            let failed = self.failed.lock().unwrap();
            if let Some(key) = keys.iter().map(AsRef::as_ref).find(|k| failed.contains(*k)) {
                return Err(io::Error::other(format!(
                    "{key} was written but flushing it to disk failed earlier, so it cannot be relied on"
                )));
            }
            let mut waiting = self.waiting.lock().unwrap();
            keys.iter()
                .filter_map(|k| waiting.remove_entry(k.as_ref()))
                .collect()
        };
        self.flush_taken(taken)
    }

    /// Flushes everything waiting.
    fn flush_all(&self) -> io::Result<()> {
        let _one = self.flushing.lock().unwrap();
        let taken = self.waiting.lock().unwrap().drain().collect();
        self.flush_taken(taken)
    }

    /// Fsyncs `taken` and their folders (the caller holds `flushing`); on failure their keys are
    /// refused from then on.
    fn flush_taken(&self, taken: Vec<(String, Waiting)>) -> io::Result<()> {
        let dirs: BTreeSet<&Path> = taken.iter().map(|(_, w)| w.dir.as_path()).collect();
        let flushed = taken
            .iter()
            .try_for_each(|(_, w)| w.file.sync_all())
            .and_then(|()| dirs.iter().try_for_each(|d| File::open(d)?.sync_all()));
        if flushed.is_err() {
            self.failed
                .lock()
                .unwrap()
                .extend(taken.into_iter().map(|(k, _)| k));
        }
        flushed
    }
}

/// What [`remove_abandoned`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Abandoned {
    pub files: u64,
    pub bytes: u64,
}

/// Whether `name` is a staged name: a key followed by `#` and digits (ours above, and
/// object_store's for every other put). No key coffer writes contains a `#`.
fn is_staged(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .and_then(|n| n.rsplit_once('#'))
        .is_some_and(|(key, digits)| {
            !key.is_empty() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Removes (or with `dry_run` only counts) the staged files under `root` that nothing has
/// touched for `older_than`: a write killed between writing its staged file and renaming it
/// leaves one, and listings skip them, so nothing else ever would. A write in progress touches
/// its file within moments; the caller passes a period longer than any write takes.
pub(crate) fn remove_abandoned(
    root: &Path,
    older_than: std::time::Duration,
    dry_run: bool,
) -> io::Result<Abandoned> {
    let mut found = Abandoned::default();
    let cutoff = std::time::SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(std::time::UNIX_EPOCH);
    let mut folders = vec![root.to_path_buf()];
    while let Some(dir) = folders.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if dir == root => return Err(e),
            // Not one of ours (a `lost+found` where the repository is a filesystem's root):
            // coffer never writes into a folder it cannot read.
            Err(e) => {
                tracing::debug!("not looking for staged files in {}: {e}", dir.display());
                continue;
            }
        };
        for entry in entries {
            let entry = entry?;
            // Not followed: a link is not the repository's own folder.
            let kind = entry.file_type()?;
            if kind.is_dir() {
                folders.push(entry.path());
                continue;
            }
            if !kind.is_file() || !is_staged(&entry.file_name()) {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Renamed into place or removed since the listing: not abandoned.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.modified()? > cutoff {
                continue;
            }
            if !dry_run {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    // Left for a prune with the rights to remove it; this one's work stands.
                    Err(e) => {
                        tracing::warn!(
                            "could not remove {}, a staged file an interrupted write left: {e}",
                            entry.path().display()
                        );
                        continue;
                    }
                }
            }
            found.files += 1;
            found.bytes += meta.len();
        }
    }
    Ok(found)
}

/// Starts writing `file`'s pages to the disk and returns at once, so by the time an index object
/// asks for them to be flushed most are there already.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a descriptor `file` keeps open; it touches no memory of
    // ours. Its result is only a head start (the flush before the index object is what makes
    // the file durable), so a failure is ignored.
    unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(d: &Deferred) -> Vec<String> {
        let mut keys: Vec<_> = d.waiting.lock().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    #[test]
    fn a_flush_takes_the_named_keys_and_a_failed_one_stays_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = Deferred::default();
        for k in ["data/00/a", "data/00/b", "data/01/c"] {
            d.write(dir.path(), k, k.as_bytes()).unwrap();
        }
        assert_eq!(
            std::fs::read(dir.path().join("data/01/c")).unwrap(),
            b"data/01/c"
        );
        d.flush(&["data/00/b", "data/01/c", "data/02/never"])
            .unwrap();
        assert_eq!(waiting(&d), ["data/00/a"]);

        // A key whose flush failed is refused from then on, alone or among others.
        d.failed.lock().unwrap().insert("data/00/a".into());
        let e = d.flush(&["data/00/b", "data/00/a"]).unwrap_err();
        assert!(e.to_string().contains("data/00/a"), "{e}");
        // Nothing named with it was taken for flushed.
        d.write(dir.path(), "data/00/d", b"d").unwrap();
        assert!(d.flush(&["data/00/d", "data/00/a"]).is_err());
        assert_eq!(waiting(&d), ["data/00/a", "data/00/d"]);
        assert!(d.flush(&["data/00/d"]).is_ok());
        assert_eq!(waiting(&d), ["data/00/a"]);
    }

    #[test]
    fn staged_files_untouched_for_the_period_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400);
        let put = |name: &str, old: bool| {
            let p = root.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let f = File::create(&p).unwrap();
            f.set_len(10).unwrap();
            if old {
                f.set_modified(day_ago).unwrap();
            }
        };
        put("data/00/aa#123", true); // abandoned pack
        put("index/bb#7", true); // abandoned object_store put
        put("data/00/cc#99", false); // a write in progress
        put("data/00/aa", true); // objects, however old
        put("data/00/dd#x1", true);
        put("data/00/#12", true);
        put("data/00/ee#", true);
        let day = std::time::Duration::from_secs(86400);

        let counted = remove_abandoned(root, day, true).unwrap();
        assert_eq!(
            counted,
            Abandoned {
                files: 2,
                bytes: 20
            }
        );
        assert!(
            root.join("data/00/aa#123").exists(),
            "a dry run removes nothing"
        );

        assert_eq!(remove_abandoned(root, day, false).unwrap(), counted);
        assert!(!root.join("data/00/aa#123").exists());
        assert!(!root.join("index/bb#7").exists());
        for kept in [
            "data/00/cc#99",
            "data/00/aa",
            "data/00/dd#x1",
            "data/00/#12",
            "data/00/ee#",
        ] {
            assert!(root.join(kept).exists(), "{kept} must stay");
        }
        assert_eq!(
            remove_abandoned(root, day, false).unwrap(),
            Abandoned::default()
        );
    }

    #[test]
    fn writes_past_the_limit_flush_what_waits() {
        let dir = tempfile::tempdir().unwrap();
        let d = Deferred::default();
        for i in 0..=MAX_WAITING {
            d.write(dir.path(), &format!("data/{:02x}/{i}", i % 3), b"x")
                .unwrap();
        }
        assert!(waiting(&d).is_empty());
        d.write(dir.path(), "data/00/last", b"x").unwrap();
        assert_eq!(waiting(&d), ["data/00/last"]);
    }
}
