//! Files and items: capture a path or bytes as an item; read, restore or remove them again.
//! State: the backup session (capture) or the snapshot being read (restore, verify).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer_repo::archiver::{Cut, Session};
use coffer_repo::id::{ChunkId, PackId};
use coffer_repo::index::Index;
use coffer_repo::restorer::{self, OutsideLinks, RestoreOptions};
use coffer_repo::tree::{Node, NodeKind};
use coffer_repo::{pack, ChunkReader, Repository};

use super::{Caps, Source, R, SMALL_ITEM};

/// What the items capability works on during one call.
#[derive(Default)]
pub(super) struct Items {
    /// The backup in progress (capture only).
    pub(super) session: Option<Session>,
    /// The snapshot being restored or verified.
    pub(super) source: Option<Source>,
}

impl Caps {
    pub(super) fn session(&mut self) -> R<&mut Session> {
        self.items
            .session
            .as_mut()
            .ok_or_else(|| "capturing is only possible during capture".to_string())
    }

    pub(super) fn source(&self) -> R<&Source> {
        self.items
            .source
            .as_ref()
            .ok_or_else(|| "items can only be read during restore and verify".to_string())
    }

    pub(super) fn item_node(&self, item: &str) -> R<Node> {
        let src = self.source()?;
        let reader = ChunkReader::new(&src.repo, &src.index);
        let mut tree = reader.tree(&src.snapshot.tree).map_err(|e| e.to_string())?;
        let comps: Vec<&str> = item.split('/').filter(|c| !c.is_empty()).collect();
        for (i, c) in comps.iter().enumerate() {
            let node = tree
                .nodes
                .into_iter()
                .find(|n| n.name == *c)
                .ok_or_else(|| format!("the snapshot has no item '{item}'"))?;
            if i == comps.len() - 1 {
                return Ok(node);
            }
            let sub = node
                .subtree
                .ok_or_else(|| format!("the snapshot has no item '{item}'"))?;
            tree = reader.tree(&sub).map_err(|e| e.to_string())?;
        }
        Err(format!("the snapshot has no item '{item}'"))
    }

    pub(super) fn item_reader(&self, item: &str) -> R<ItemReader> {
        let node = self.item_node(item)?;
        if node.kind != NodeKind::File {
            return Err(format!("item '{item}' is a folder, not a file"));
        }
        self.chunks_reader(node.content)
    }

    /// Reads a file's chunks in order.
    pub(super) fn chunks_reader(&self, chunks: Vec<ChunkId>) -> R<ItemReader> {
        let src = self.source()?;
        Ok(ItemReader {
            repo: src.repo.clone(),
            index: src.index.clone(),
            chunks,
            next: 0,
            buf: vec![],
            pos: 0,
            packs: vec![],
        })
    }

    /// Captures a file or folder of the app as `item`. When `path` itself is a symlink, what it
    /// points at is captured (it must lie inside the app folder: [`Caps::resolve`] refuses
    /// otherwise, naming the link); links further down are kept as links.
    pub(super) fn capture_path(&mut self, item: String, path: String) -> R<u64> {
        self.capture_path_cut(item, path, Cut::Auto)
    }

    pub(super) fn capture_path_cut(&mut self, item: String, path: String, cut: Cut) -> R<u64> {
        let mut full = self.resolve(&path)?;
        let meta = std::fs::symlink_metadata(&full).map_err(|e| format!("{path}: {e}"))?;
        if meta.file_type().is_symlink() {
            full = full
                .canonicalize()
                .map_err(|e| format!("{path} is a symlink that leads nowhere: {e}"))?;
        }
        self.session()?
            .add_path_cut(Path::new(&item), &full, cut)
            .map_err(|e| e.to_string())
    }

    pub(super) fn capture_bytes(&mut self, item: String, data: Vec<u8>) -> R<()> {
        if data.len() as u64 > SMALL_ITEM {
            return Err("capture-bytes takes at most 16 MiB; stream bigger items with run-to-item or http-to-item".into());
        }
        self.session()?
            .add_reader(Path::new(&item), &data[..])
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Restores `item` into a fresh staging folder under `parent` (on the same file system as
    /// where it goes, so it can be renamed into place); the folder lives as long as the guard.
    pub(super) fn stage(&self, item: &str, parent: &Path) -> R<(tempfile::TempDir, PathBuf)> {
        let src = self.source()?;
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        let staging = tempfile::Builder::new()
            .prefix(".coffer-staging-")
            .tempdir_in(parent)
            .map_err(|e| format!("{}: {e}", parent.display()))?;
        let opts = RestoreOptions {
            target: staging.path().to_path_buf(),
            include: vec![PathBuf::from(item)],
            outside_links: OutsideLinks::Refuse,
        };
        let summary = restorer::restore(
            &src.repo,
            &src.index,
            &src.snapshot,
            &opts,
            &Default::default(),
        )
        .map_err(|e| format!("restoring item {item}: {e}"))?;
        if !summary.errors.is_empty() {
            return Err(format!(
                "restoring item {item}: {}",
                summary.errors.join("; ")
            ));
        }
        let staged = staging.path().join(item);
        if std::fs::symlink_metadata(&staged).is_err() {
            return Err(format!("the snapshot has no item '{item}'"));
        }
        Ok((staging, staged))
    }

    pub(super) fn restore_item(&mut self, item: String, path: String) -> R<Option<String>> {
        let dest = self.resolve(&path)?;
        let whole = dest == self.dir;
        let parent = dest.parent().ok_or("no parent folder")?.to_path_buf();
        let (_staging, staged) = self.stage(&item, &parent)?;
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        // The app folder itself, as an operator keeps it (`cskefu.osc.backup-<time>`); an
        // empty one (made for this restore) is not worth keeping.
        let (prefix, empty) = if whole {
            let empty = std::fs::read_dir(&dest).is_ok_and(|mut d| d.next().is_none());
            (format!("{name}.backup-{stamp}"), empty)
        } else {
            (format!("{name}.coffer-replaced-{stamp}"), false)
        };
        if empty {
            std::fs::remove_dir(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        }
        let mut aside = None;
        if std::fs::symlink_metadata(&dest).is_ok() {
            let mut n = 0;
            let moved = loop {
                let suffix = if n == 0 {
                    String::new()
                } else {
                    format!("-{n}")
                };
                let candidate = parent.join(format!("{prefix}{suffix}"));
                if std::fs::symlink_metadata(&candidate).is_err() {
                    break candidate;
                }
                n += 1;
            };
            swap_in(&staged, &dest, &moved)?;
            aside = Some(
                moved
                    .strip_prefix(&self.dir)
                    .unwrap_or(&moved)
                    .display()
                    .to_string(),
            );
        } else {
            std::fs::rename(&staged, &dest)
                .map_err(|e| format!("putting {} in place: {e}", dest.display()))?;
        }
        Ok(aside)
    }

    /// Writes a small file under the app folder: beside it first, synced, then renamed over it;
    /// an existing file's owner and mode carry over.
    pub(super) fn write_file(&mut self, path: String, data: Vec<u8>) -> R<()> {
        use std::io::Write;
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if data.len() as u64 > SMALL_ITEM {
            return Err("write-file takes at most 16 MiB".into());
        }
        let full = self.resolve(&path)?;
        if full == self.dir {
            return Err("write-file needs a file's path, not the app folder".into());
        }
        let old = std::fs::symlink_metadata(&full).ok();
        if old.as_ref().is_some_and(|m| !m.is_file()) {
            return Err(format!("{path} is not a regular file"));
        }
        let parent = full.parent().ok_or("no parent folder")?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".coffer-write-")
            .tempfile_in(parent)
            .map_err(|e| format!("{}: {e}", parent.display()))?;
        tmp.write_all(&data)
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| format!("writing {path}: {e}"))?;
        let mode = old.as_ref().map(|m| m.mode() & 0o7777).unwrap_or(0o644);
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{path}: {e}"))?;
        if let Some(m) = &old {
            std::os::unix::fs::chown(tmp.path(), Some(m.uid()), Some(m.gid()))
                .or_else(|e| {
                    // Not root: the file stays the writer's, which is the best it can be.
                    if e.kind() == std::io::ErrorKind::PermissionDenied {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| format!("{path}: {e}"))?;
        }
        tmp.persist(&full)
            .map_err(|e| format!("putting {path} in place: {}", e.error))?;
        Ok(())
    }

    pub(super) fn read_item(&mut self, item: String) -> R<Vec<u8>> {
        let mut r = self.item_reader(&item)?;
        let mut out = vec![];
        (&mut r)
            .take(SMALL_ITEM + 1)
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?;
        if out.len() as u64 > SMALL_ITEM {
            return Err(format!(
                "item {item} is over 16 MiB: stream it with run-from-item or http-upload-item"
            ));
        }
        Ok(out)
    }

    pub(super) fn remove_file(&mut self, path: String) -> R<bool> {
        let full = self.resolve(&path)?;
        match std::fs::symlink_metadata(&full) {
            Err(_) => Ok(false),
            Ok(m) if m.is_dir() => Err(format!(
                "{path} is a folder; remove-file removes files only"
            )),
            Ok(_) => std::fs::remove_file(&full)
                .map(|_| true)
                .map_err(|e| format!("{path}: {e}")),
        }
    }
}

/// Streams a file item's chunks, verified, in order, keeping the last decrypted pack (an item's
/// chunks mostly sit in the same few packs, one after another).
pub struct ItemReader {
    repo: Arc<Repository>,
    index: Arc<Index>,
    chunks: Vec<ChunkId>,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    /// Packs read for this item, the oldest first.
    packs: Vec<Held>,
}

/// A pack's plaintext, and the ranges of it read (`None`: all of it).
type Held = (PackId, Vec<u8>, Option<Vec<std::ops::Range<u64>>>);

impl ItemReader {
    const PACKS: usize = 4;
    /// How far ahead a pack's wanted chunks are looked for (a pack holds far fewer).
    const LOOKAHEAD: usize = 4096;

    fn load(&mut self, id: &ChunkId) -> coffer_repo::Result<()> {
        let (pack_id, entry) = self
            .index
            .get(id)
            .ok_or_else(|| coffer_repo::Error::MissingChunk { chunk: id.to_hex() })?;
        // Consecutive chunks of an item usually alternate between packs (each compressing
        // thread fills its own), so a few packs stay at hand. A pack is read for everything the
        // item still wants from it: when that is a small part of it, only that part is fetched
        // (an item of a big snapshot restored from S3).
        let (start, end) = (
            entry.offset as u64,
            entry.offset as u64 + entry.length as u64,
        );
        let held = |p: &Held| {
            p.0 == pack_id
                && p.2
                    .as_ref()
                    .is_none_or(|r| r.iter().any(|r| r.start <= start && end <= r.end))
        };
        let at = match self.packs.iter().position(held) {
            Some(i) => i,
            None => {
                self.packs.retain(|p| p.0 != pack_id);
                let wanted: Vec<pack::PackEntry> = self.chunks[self.next.saturating_sub(1)..]
                    .iter()
                    .take(ItemReader::LOOKAHEAD)
                    .filter_map(|c| self.index.get(c))
                    .filter(|(p, _)| *p == pack_id)
                    .map(|(_, e)| e)
                    .collect();
                let mut plain = if self.packs.len() >= ItemReader::PACKS {
                    self.packs.remove(0).1
                } else {
                    vec![]
                };
                let ranges = self.repo.read_pack_for(
                    &pack_id,
                    self.index.pack_size(&pack_id),
                    wanted.iter(),
                    &mut plain,
                )?;
                self.packs.push((pack_id, plain, ranges));
                self.packs.len() - 1
            }
        };
        let plain = &self.packs[at].1;
        pack::extract_into(plain, &entry, self.repo.secrets(), &pack_id, &mut self.buf)
    }
}

impl Read for ItemReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.chunks.get(self.next).copied() else {
                return Ok(0);
            };
            self.next += 1;
            self.load(&id).map_err(std::io::Error::other)?;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Puts `staged` in place of `dest` and moves the old `dest` to `aside`. The two are exchanged
/// in one step (renameat2 RENAME_EXCHANGE), so a restore killed here leaves the app with either
/// its old copy or the restored one, never neither; killed right after, the old copy waits in
/// the staging folder (`.coffer-staging-*` beside it). Where the file system cannot exchange,
/// the old copy is moved aside first.
fn swap_in(staged: &Path, dest: &Path, aside: &Path) -> R<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    match renameat2(
        AT_FDCWD,
        staged,
        AT_FDCWD,
        dest,
        RenameFlags::RENAME_EXCHANGE,
    ) {
        Ok(()) => std::fs::rename(staged, aside)
            .map_err(|e| format!("moving the old {} aside: {e}", dest.display())),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOSYS) => {
            std::fs::rename(dest, aside)
                .map_err(|e| format!("moving {} aside: {e}", dest.display()))?;
            std::fs::rename(staged, dest)
                .map_err(|e| format!("putting {} in place: {e}", dest.display()))
        }
        Err(e) => Err(format!("putting {} in place: {e}", dest.display())),
    }
}
