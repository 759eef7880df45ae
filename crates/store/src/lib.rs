//! coffer-store: where repository objects are stored, a narrow, blocking interface over
//! `object_store`, and the wrappers that add behaviour around any store (retries).
//!
//! The repository only ever needs to put a whole object, get one (or a byte range of one), list a
//! prefix and delete. Everything is immutable and named after its content, so there is no
//! update, rename or lock here. Engines run on plain threads; this layer owns a small tokio
//! runtime and blocks on it, so the async store never leaks into the rest of the host.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

mod deferred;
mod parallel;
mod retry;
pub mod s3;
mod store;

pub use deferred::Abandoned;
pub use parallel::parallel_map;
pub use retry::{RetryPolicy, Retrying};
pub use s3::S3Config;
pub use store::{ObjectReader, StoreBackend};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("object {key} does not exist in the repository")]
    NotFound { key: String },
    #[error("storage error on {key}: {message}")]
    Store { key: String, message: String },
    #[error("no coffer repository at {location}: run `coffer init` to create one, or point --repo / COFFER_REPOSITORY at an existing one")]
    Missing { location: String },
    #[error("the bucket of {location} does not exist (or these credentials cannot see it): create it first, then run the command again")]
    NoBucket { location: String },
    #[error("cannot open storage at {location}: {message}")]
    Open { location: String, message: String },
    /// The store refused the credentials or the permission: retrying cannot help.
    #[error("the store refused access to {key}: {message} (check the credentials, e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and the bucket's grants)")]
    Denied { key: String, message: String },
    /// Reading the content to be stored failed (the source, not the store): sending it again
    /// cannot help.
    #[error("reading what was to be stored as {key} failed: {message}")]
    Source { key: String, message: String },
    /// A 4xx answer other than a timeout or throttling: the request itself is wrong.
    #[error("the store rejected the request for {key}: {message}")]
    Rejected { key: String, message: String },
}

impl BackendError {
    /// Whether the same request may succeed if sent again (a 5xx, a timeout, a dropped
    /// connection). Never true for a missing object or refused credentials.
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Store { .. })
    }
}

/// One stored object as a listing returns it.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// When the store last wrote it, on the store's clock (listings and HEAD report it).
    pub modified: Option<DateTime<Utc>>,
}

/// The few operations a repository needs from a store.
pub trait Backend: Send + Sync {
    /// Human-readable location, for messages.
    fn location(&self) -> String;
    fn put(&self, key: &str, data: Vec<u8>) -> Result<(), BackendError>;
    /// [`Backend::put`] of shared bytes (a retry sends the same buffer again without a copy).
    fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        self.put(key, data.to_vec())
    }
    /// [`Backend::put_bytes`] whose durability may wait: the object is readable when this
    /// returns, but it is sure to survive a power cut only once [`Backend::sync`] named it. For
    /// packs, found only through the index object written after them: a local store flushes
    /// the batch an index object names once, before storing it, instead of each pack as it is
    /// written (which kept the compressing threads waiting on the disk in turn). Stores whose
    /// every put is durable take it as a plain put.
    fn put_deferred(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        self.put_bytes(key, data)
    }
    /// Makes the [`Backend::put_deferred`] of each of `keys` durable; a key put durably, or
    /// flushed already, needs nothing. An error if flushing one of them failed, now or before.
    fn sync(&self, keys: &[String]) -> Result<(), BackendError> {
        let _ = keys;
        Ok(())
    }
    fn get(&self, key: &str) -> Result<Bytes, BackendError>;
    /// Removes what writes cut off by a crash left behind, where a store keeps such leftovers
    /// apart from its objects: a local folder's staged files (`<key>#<digits>`, skipped by
    /// listings) that nothing touched for `older_than`. With `dry_run`, only counts them.
    fn remove_abandoned(
        &self,
        older_than: std::time::Duration,
        dry_run: bool,
    ) -> Result<Abandoned, BackendError> {
        let _ = (older_than, dry_run);
        Ok(Abandoned::default())
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError>;
    /// Every object whose key starts with `prefix` (a folder such as `index/`), recursively.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError>;
    fn delete(&self, key: &str) -> Result<(), BackendError>;
    fn exists(&self, key: &str) -> Result<bool, BackendError> {
        match self.stat(key) {
            Ok(_) => Ok(true),
            Err(BackendError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
    /// Size and modification time of one object.
    fn stat(&self, key: &str) -> Result<ObjectInfo, BackendError>;
    fn head(&self, key: &str) -> Result<u64, BackendError> {
        Ok(self.stat(key)?.size)
    }
    /// How many uploads may run at once (a documented knob for remote stores).
    fn parallelism(&self) -> usize {
        2
    }
    /// Whether the store is a folder on this machine: writes are quick and need no uploads in
    /// flight to hide their latency.
    fn is_local(&self) -> bool {
        false
    }
    /// The store's own clock: the time it stamps on a small object written now. Prune measures
    /// its grace period on this clock, so hosts with skewed clocks cannot shorten it.
    fn now(&self) -> Result<DateTime<Utc>, BackendError> {
        let key = format!("clock/{}", hex::encode(rand::random::<[u8; 16]>()));
        self.put(&key, Vec::new())?;
        let info = self.stat(&key);
        let _ = self.delete(&key);
        info?.modified.ok_or_else(|| BackendError::Store {
            key,
            message: "the store reports no modification time".into(),
        })
    }
    /// Streams one object from byte `from` on, for objects too big to hold in memory (an app's
    /// bucket). Stores that can stream override it; this one reads the object whole.
    fn open_read(
        &self,
        key: &str,
        from: u64,
    ) -> Result<Box<dyn std::io::Read + Send>, BackendError> {
        let b = self.get(key)?;
        let from = (from as usize).min(b.len());
        Ok(Box::new(std::io::Cursor::new(b.slice(from..))))
    }
    /// Uploads everything `reader` yields as one object; returns its size. Stores that can
    /// stream override it (holding one part in memory); this one reads it whole first.
    fn put_stream(&self, key: &str, reader: &mut dyn std::io::Read) -> Result<u64, BackendError> {
        let mut buf = Vec::new();
        reader
            .read_to_end(&mut buf)
            .map_err(|e| BackendError::Source {
                key: key.to_string(),
                message: e.to_string(),
            })?;
        let n = buf.len() as u64;
        self.put(key, buf)?;
        Ok(n)
    }
    /// [`Backend::put_stream`] of what `open` yields; `open` is called again for each attempt,
    /// so a wrapper that retries can send the content anew.
    fn put_from(
        &self,
        key: &str,
        open: &mut dyn FnMut() -> std::io::Result<Box<dyn std::io::Read + Send>>,
    ) -> Result<u64, BackendError> {
        let mut r = open().map_err(|e| BackendError::Source {
            key: key.to_string(),
            message: e.to_string(),
        })?;
        self.put_stream(key, &mut r)
    }
    /// [`Backend::get`] into a reusable buffer (cleared first); stores that can avoid a fresh
    /// allocation per object override it.
    fn get_into(&self, key: &str, out: &mut Vec<u8>) -> Result<(), BackendError> {
        let b = self.get(key)?;
        out.clear();
        out.extend_from_slice(&b);
        Ok(())
    }
}

/// Opens the store a repository string names: a local path (`/srv/backup`, `file:///srv/backup`),
/// `s3://BUCKET/PREFIX` (settings from `AWS_*` and `s3`), or `memory:`.
pub fn open(location: &str, create: bool, s3: &S3Config) -> Result<Arc<dyn Backend>, BackendError> {
    if location.starts_with("s3://") {
        let store = s3::open(location, s3)?;
        return Ok(Arc::new(Retrying::new(store, s3.retry_policy())));
    }
    let path = location.strip_prefix("file://").unwrap_or(location);
    if location.contains("://") && !location.starts_with("file://") {
        return Err(BackendError::Open {
            location: location.to_string(),
            message:
                "unsupported repository scheme: use a local path, file:// or s3://BUCKET/PREFIX"
                    .into(),
        });
    }
    if location == "memory:" {
        return Ok(Arc::new(StoreBackend::memory()));
    }
    Ok(Arc::new(StoreBackend::local(&PathBuf::from(path), create)?))
}

#[doc(hidden)]
pub mod conformance;
