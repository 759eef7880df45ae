//! The object_store adaptor: one blocking [`Backend`] over any `object_store` store, with
//! whole-object reads into reused buffers for local folders, multipart uploads for big objects,
//! and streaming reads and writes for objects too big to hold in memory (an app's bucket).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::deferred::Deferred;
use crate::{Backend, BackendError, ObjectInfo};

/// A backend over any `object_store` store.
pub struct StoreBackend {
    store: Arc<dyn ObjectStore>,
    pub(crate) runtime: tokio::runtime::Runtime,
    location: String,
    /// For a local folder: its path, so whole-object reads go straight into a reused buffer
    /// (restore reads every pack; a fresh 16 MiB buffer each time cost more in page faults than
    /// the read itself).
    pub(crate) local_root: Option<PathBuf>,
    /// Objects above this size are uploaded in parts of `part_size`.
    pub(crate) multipart_threshold: usize,
    pub(crate) part_size: usize,
    pub(crate) parallelism: usize,
    /// A local folder's packs written but not yet flushed to disk.
    deferred: Deferred,
}

impl StoreBackend {
    pub fn new(store: Arc<dyn ObjectStore>, location: String) -> Result<Self, BackendError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("coffer-io")
            .build()
            .map_err(|e| BackendError::Open {
                location: location.clone(),
                message: e.to_string(),
            })?;
        Ok(Self {
            store,
            runtime,
            location,
            local_root: None,
            multipart_threshold: usize::MAX,
            part_size: 16 << 20,
            parallelism: 2,
            deferred: Deferred::default(),
        })
    }

    /// A local folder. It is created if `create` is set; otherwise it must exist.
    pub fn local(path: &Path, create: bool) -> Result<Self, BackendError> {
        let location = path.display().to_string();
        if create {
            std::fs::create_dir_all(path).map_err(|e| BackendError::Open {
                location: location.clone(),
                message: e.to_string(),
            })?;
        } else if !path.is_dir() {
            return Err(BackendError::Missing { location });
        }
        let store = object_store::local::LocalFileSystem::new_with_prefix(path)
            .map_err(|e| BackendError::Open {
                location: location.clone(),
                message: e.to_string(),
            })?
            // A backup that says it saved must survive a power cut too.
            .with_fsync(true)
            .with_automatic_cleanup(false);
        let mut b = Self::new(Arc::new(store), location)?;
        b.local_root = Some(path.to_path_buf());
        Ok(b)
    }

    /// An in-memory store, for tests and dry runs.
    pub fn memory() -> Self {
        Self::new(
            Arc::new(object_store::memory::InMemory::new()),
            "memory".into(),
        )
        .expect("a runtime can be built")
    }

    fn err(&self, key: &str, e: object_store::Error) -> BackendError {
        // S3 says 404 for a missing bucket too: not a missing object, and no repository at all.
        if e.to_string().contains("NoSuchBucket") {
            return BackendError::NoBucket {
                location: self.location.clone(),
            };
        }
        match e {
            object_store::Error::NotFound { .. } => BackendError::NotFound {
                key: key.to_string(),
            },
            e @ (object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }) => BackendError::Denied {
                key: key.to_string(),
                message: tidy(&e.to_string()),
            },
            other => {
                let message = tidy(&other.to_string());
                match http_status(&message) {
                    // Client errors other than timeouts and throttling do not heal by waiting.
                    Some(s) if (400..500).contains(&s) && s != 408 && s != 429 => {
                        BackendError::Rejected {
                            key: key.to_string(),
                            message,
                        }
                    }
                    _ => BackendError::Store {
                        key: key.to_string(),
                        message,
                    },
                }
            }
        }
    }
}

impl Backend for StoreBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn open_read(
        &self,
        key: &str,
        from: u64,
    ) -> Result<Box<dyn std::io::Read + Send>, BackendError> {
        // A local object is read straight from its file (object_store's stream hands a local
        // file over in small pieces through the runtime).
        if let Some(mut f) = self.open_local(key)? {
            use std::io::Seek;
            f.seek(std::io::SeekFrom::Start(from))
                .map_err(|e| BackendError::Store {
                    key: key.to_string(),
                    message: e.to_string(),
                })?;
            return Ok(Box::new(f));
        }
        Ok(Box::new(self.get_reader(key, from)?))
    }

    fn put_stream(&self, key: &str, reader: &mut dyn std::io::Read) -> Result<u64, BackendError> {
        self.put_reader(key, reader)
    }

    fn put(&self, key: &str, data: Vec<u8>) -> Result<(), BackendError> {
        self.put_bytes(key, Bytes::from(data))
    }

    fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        let path = StorePath::from(key);
        if data.len() > self.multipart_threshold {
            return self.put_multipart(key, &path, data);
        }
        self.runtime
            .block_on(self.store.put(&path, PutPayload::from(data)))
            .map(|_| ())
            .map_err(|e| self.err(key, e))
    }

    fn put_deferred(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        let Some(root) = &self.local_root else {
            return self.put_bytes(key, data);
        };
        self.deferred
            .write(root, key, &data)
            .map_err(|e| BackendError::Store {
                key: key.to_string(),
                message: e.to_string(),
            })
    }

    fn sync(&self, keys: &[String]) -> Result<(), BackendError> {
        if self.local_root.is_none() {
            return Ok(());
        }
        self.deferred.flush(keys).map_err(|e| BackendError::Store {
            key: keys.first().cloned().unwrap_or_default(),
            message: format!("flushing to disk: {e}"),
        })
    }

    fn remove_abandoned(
        &self,
        older_than: std::time::Duration,
        dry_run: bool,
    ) -> Result<crate::Abandoned, BackendError> {
        let Some(root) = &self.local_root else {
            return Ok(crate::Abandoned::default());
        };
        crate::deferred::remove_abandoned(root, older_than, dry_run).map_err(|e| {
            BackendError::Store {
                key: self.location.clone(),
                message: format!("removing staged files abandoned by interrupted writes: {e}"),
            }
        })
    }

    fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        let path = StorePath::from(key);
        let (bytes, size) = self
            .runtime
            .block_on(async {
                let r = self.store.get(&path).await?;
                let size = r.meta.size;
                Ok::<_, object_store::Error>((r.bytes().await?, size))
            })
            .map_err(|e| self.err(key, e))?;
        // A body cut short without an error from the transport must not pass as the object.
        if bytes.len() as u64 != size {
            return Err(BackendError::Store {
                key: key.to_string(),
                message: format!("short read: {} of {size} bytes", bytes.len()),
            });
        }
        Ok(bytes)
    }

    fn parallelism(&self) -> usize {
        self.parallelism
    }

    fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        let path = StorePath::from(key);
        self.runtime
            .block_on(self.store.get_range(&path, range))
            .map_err(|e| self.err(key, e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        use futures_util::TryStreamExt;
        let path = StorePath::from(prefix.trim_end_matches('/'));
        let objects: Vec<_> = self
            .runtime
            .block_on(self.store.list(Some(&path)).try_collect())
            .map_err(|e| self.err(prefix, e))?;
        Ok(objects
            .into_iter()
            .map(|m| ObjectInfo {
                key: m.location.to_string(),
                size: m.size,
                modified: Some(m.last_modified),
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        let path = StorePath::from(key);
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn get_into(&self, key: &str, out: &mut Vec<u8>) -> Result<(), BackendError> {
        let Some(mut f) = self.open_local(key)? else {
            let b = self.get(key)?;
            out.clear();
            out.extend_from_slice(&b);
            return Ok(());
        };
        use std::io::Read;
        out.clear();
        f.read_to_end(out).map_err(|e| BackendError::Store {
            key: key.to_string(),
            message: e.to_string(),
        })?;
        Ok(())
    }

    fn stat(&self, key: &str) -> Result<ObjectInfo, BackendError> {
        let path = StorePath::from(key);
        self.runtime
            .block_on(self.store.head(&path))
            .map(|m| ObjectInfo {
                key: key.to_string(),
                size: m.size,
                modified: Some(m.last_modified),
            })
            .map_err(|e| self.err(key, e))
    }
}

/// An S3 error body (`<?xml …><Error><Code>SlowDown</Code><Message>…</Message>…`) shortened to
/// `SlowDown: …`, so the one error line stays readable.
fn tidy(message: &str) -> String {
    let Some(start) = message.find("<?xml").or_else(|| message.find("<Error>")) else {
        return message.to_string();
    };
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let from = message[start..].find(&open)? + start + open.len();
        let to = message[from..].find("</")? + from;
        Some(message[from..to].to_string())
    };
    let (Some(code), text) = (tag("Code"), tag("Message").unwrap_or_default()) else {
        return message.to_string();
    };
    let end = message[start..]
        .find("</Error>")
        .map(|i| start + i + "</Error>".len())
        .unwrap_or(message.len());
    format!("{}{code}: {text}{}", &message[..start], &message[end..])
}

/// The HTTP status in an object_store error message ("... status code: 400 Bad Request ...").
fn http_status(message: &str) -> Option<u16> {
    let rest = message.split("status code: ").nth(1)?;
    rest.get(..3)?.parse().ok()
}

/// A streaming read of one object (its body arrives as the reader is read).
pub struct ObjectReader {
    runtime: tokio::runtime::Handle,
    stream: futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>,
    buf: Bytes,
    key: String,
}

impl std::io::Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use futures_util::StreamExt;
        while self.buf.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => {
                    return Err(std::io::Error::other(format!("reading {}: {e}", self.key)))
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

impl StoreBackend {
    /// A local object's file, opened; `None` for a remote store.
    fn open_local(&self, key: &str) -> Result<Option<std::fs::File>, BackendError> {
        let Some(root) = &self.local_root else {
            return Ok(None);
        };
        std::fs::File::open(root.join(key))
            .map(Some)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => BackendError::NotFound {
                    key: key.to_string(),
                },
                _ => BackendError::Store {
                    key: key.to_string(),
                    message: e.to_string(),
                },
            })
    }

    /// Streams one object from byte `from` on: for objects too big to hold in memory (a
    /// bucket's files).
    pub fn get_reader(&self, key: &str, from: u64) -> Result<ObjectReader, BackendError> {
        let path = StorePath::from(key);
        let opts = object_store::GetOptions {
            range: (from > 0).then_some(object_store::GetRange::Offset(from)),
            ..Default::default()
        };
        let r = self
            .runtime
            .block_on(self.store.get_opts(&path, opts))
            .map_err(|e| self.err(key, e))?;
        Ok(ObjectReader {
            runtime: self.runtime.handle().clone(),
            stream: r.into_stream(),
            buf: Bytes::new(),
            key: key.to_string(),
        })
    }

    /// Uploads everything `reader` yields as one object, holding at most one part in memory:
    /// one PUT when it is smaller than the multipart threshold, parts otherwise.
    pub fn put_reader(
        &self,
        key: &str,
        reader: &mut dyn std::io::Read,
    ) -> Result<u64, BackendError> {
        let io_err = |e: std::io::Error| BackendError::Source {
            key: key.to_string(),
            message: e.to_string(),
        };
        let fill =
            |reader: &mut dyn std::io::Read, limit: usize| -> Result<Vec<u8>, BackendError> {
                let mut buf = Vec::new();
                reader
                    .take(limit as u64)
                    .read_to_end(&mut buf)
                    .map_err(io_err)?;
                Ok(buf)
            };
        use std::io::Read;
        let threshold = self.multipart_threshold.min(self.part_size.max(5 << 20));
        let first = fill(reader, threshold.saturating_add(1))?;
        if first.len() <= threshold {
            let n = first.len() as u64;
            self.put(key, first)?;
            return Ok(n);
        }
        let path = StorePath::from(key);
        let part_size = self.part_size;
        // A failing source ends the upload (aborted, so no half object lingers) with its own
        // error: reading it again would not help.
        let mut source_failed = None;
        let sent = self.runtime.block_on(async {
            let mut upload = self.store.put_multipart(&path).await?;
            let mut total = 0u64;
            let mut pending = first;
            loop {
                // Parts of exactly part_size, the last one shorter: `fill` reads up to its
                // limit or to the end.
                if pending.len() < part_size {
                    match fill(reader, part_size - pending.len()) {
                        Ok(more) => pending.extend_from_slice(&more),
                        Err(e) => {
                            let _ = upload.abort().await;
                            source_failed = Some(e);
                            return Ok(total);
                        }
                    }
                }
                if pending.is_empty() {
                    break;
                }
                let rest = if pending.len() > part_size {
                    pending.split_off(part_size)
                } else {
                    Vec::new()
                };
                total += pending.len() as u64;
                if let Err(e) = upload.put_part(PutPayload::from(pending)).await {
                    let _ = upload.abort().await;
                    return Err(e);
                }
                pending = rest;
            }
            upload.complete().await.map(|_| total)
        });
        if let Some(e) = source_failed {
            return Err(e);
        }
        sent.map_err(|e| self.err(key, e))
    }

    /// One object in parts: for packs larger than a single PUT should carry. A failed part
    /// aborts the whole upload (the retry layer then sends it again from the start), so a
    /// half-written object is never visible under its name.
    fn put_multipart(&self, key: &str, path: &StorePath, data: Bytes) -> Result<(), BackendError> {
        let part_size = self.part_size;
        self.runtime
            .block_on(async {
                let mut upload = self.store.put_multipart(path).await?;
                let mut parts = vec![];
                for start in (0..data.len()).step_by(part_size) {
                    let end = (start + part_size).min(data.len());
                    parts.push(upload.put_part(PutPayload::from(data.slice(start..end))));
                }
                let sent = futures_util::future::try_join_all(parts).await;
                match sent {
                    Ok(_) => upload.complete().await.map(|_| ()),
                    Err(e) => {
                        let _ = upload.abort().await;
                        Err(e)
                    }
                }
            })
            .map_err(|e| self.err(key, e))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_status_is_read_from_store_messages() {
        let m = "Generic S3 error: Error performing PUT http://x/y in 1ms - Server returned non-2xx status code: 503 Service Unavailable: <Error>";
        assert_eq!(super::http_status(m), Some(503));
        assert_eq!(super::http_status("connection reset by peer"), None);
        assert_eq!(
            super::tidy(m),
            "Generic S3 error: Error performing PUT http://x/y in 1ms - Server returned non-2xx status code: 503 Service Unavailable: <Error>"
        );
        let xml = "status code: 503 Service Unavailable: <?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Reduce your rate</Message><Resource>/b/k</Resource></Error> (gave up)";
        assert_eq!(
            super::tidy(xml),
            "status code: 503 Service Unavailable: SlowDown: Reduce your rate (gave up)"
        );
    }
}
