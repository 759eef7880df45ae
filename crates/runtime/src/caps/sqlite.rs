//! SQLite: an online backup of a live database file into an item (one consistent point in time
//! while the app writes), and read-only queries on the app's files or on the copy just taken.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Caps, R};
use crate::bindings::wit_host::DbSource;

/// Copies taken in this call, kept until the call's capabilities are dropped (the snapshot
/// holds them by then).
#[derive(Default)]
pub(super) struct Staged {
    /// Staged copies of captured SQLite databases, by item.
    pub(super) copies: HashMap<String, PathBuf>,
    pub(super) dir: Option<tempfile::TempDir>,
}

impl Caps {
    pub(super) fn sqlite_backup(&mut self, item: String, path: String) -> R<u64> {
        let src_path = self.resolve(&path)?;
        if !src_path.is_file() {
            return Err(format!("{path} is not a file"));
        }
        let staging = match &self.staged.dir {
            Some(t) => t.path().to_path_buf(),
            None => {
                let t = tempfile::tempdir().map_err(|e| e.to_string())?;
                let p = t.path().to_path_buf();
                self.staged.dir = Some(t);
                p
            }
        };
        let copy = staging.join(format!("{}.db", self.staged.copies.len()));
        online_backup(&src_path, &copy)
            .map_err(|e| format!("online backup of {path} failed: {e}"))?;
        let n = self
            .session()?
            .add_path(Path::new(&item), &copy)
            .map_err(|e| e.to_string())?;
        self.staged.copies.insert(item, copy);
        Ok(n)
    }

    pub(super) fn sqlite_query(&mut self, db: DbSource, sql: String) -> R<Vec<Vec<String>>> {
        let path =
            match &db {
                DbSource::Path(p) => self.resolve(p)?,
                DbSource::Item(i) => self.staged.copies.get(i).cloned().ok_or_else(|| {
                    format!("no SQLite copy was captured as '{i}' in this session")
                })?,
            };
        query(&path, &sql).map_err(|e| format!("query on {}: {e}", path.display()))
    }
}

/// SQLite's online backup of `src` into a new file `dst`, in one step: a single read
/// transaction, so the copy is one consistent point in time while writers carry on (WAL).
pub fn online_backup(src: &Path, dst: &Path) -> rusqlite::Result<()> {
    let source = rusqlite::Connection::open(src)?;
    source.busy_timeout(Duration::from_secs(30))?;
    let mut target = rusqlite::Connection::open(dst)?;
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut target)?;
        let mut tries = 0;
        loop {
            match backup.step(-1)? {
                rusqlite::backup::StepResult::Done => break,
                rusqlite::backup::StepResult::More => continue,
                _ if tries < 600 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(5),
                        Some("database stayed locked".into()),
                    ))
                }
            }
        }
    }
    // Fold any WAL the copy grew back into the file, so the item is one self-contained file.
    target.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    target.close().map_err(|(_, e)| e)
}

/// A read-only query; values rendered as text.
pub fn query(path: &Path, sql: &str) -> rusqlite::Result<Vec<Vec<String>>> {
    let c =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    c.busy_timeout(Duration::from_secs(30))?;
    c.execute_batch("PRAGMA query_only = ON")?;
    let mut stmt = c.prepare(sql)?;
    let cols = stmt.column_count();
    let rows = stmt.query_map([], |row| {
        (0..cols)
            .map(|i| {
                Ok(match row.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => String::new(),
                    rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                    rusqlite::types::ValueRef::Real(f) => f.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    rusqlite::types::ValueRef::Blob(b) => hex::encode(b),
                })
            })
            .collect::<rusqlite::Result<Vec<_>>>()
    })?;
    rows.collect()
}
