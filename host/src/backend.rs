//! Where repository objects are stored: a narrow, blocking interface over `object_store`.
//!
//! The repository only ever needs to put a whole object, get one (or a byte range of one), list a
//! prefix and delete. Everything is immutable and named after its content, so there is no
//! update, rename or lock here. Engines run on plain threads; this layer owns a small tokio
//! runtime and blocks on it, so the async store never leaks into the rest of the host.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("object {key} does not exist in the repository")]
    NotFound { key: String },
    #[error("storage error on {key}: {message}")]
    Store { key: String, message: String },
    #[error("no coffer repository at {location}: run `coffer init` to create one, or point --repo / COFFER_REPOSITORY at an existing one")]
    Missing { location: String },
    #[error("cannot open storage at {location}: {message}")]
    Open { location: String, message: String },
}

/// One stored object as a listing returns it.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// The few operations a repository needs from a store.
pub trait Backend: Send + Sync {
    /// Human-readable location, for messages.
    fn location(&self) -> String;
    fn put(&self, key: &str, data: Vec<u8>) -> Result<(), BackendError>;
    fn get(&self, key: &str) -> Result<Bytes, BackendError>;
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError>;
    /// Every object whose key starts with `prefix` (a folder such as `index/`), recursively.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError>;
    fn delete(&self, key: &str) -> Result<(), BackendError>;
    fn exists(&self, key: &str) -> Result<bool, BackendError> {
        match self.head(key) {
            Ok(_) => Ok(true),
            Err(BackendError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
    fn head(&self, key: &str) -> Result<u64, BackendError>;
    /// [`Backend::get`] into a reusable buffer (cleared first); stores that can avoid a fresh
    /// allocation per object override it.
    fn get_into(&self, key: &str, out: &mut Vec<u8>) -> Result<(), BackendError> {
        let b = self.get(key)?;
        out.clear();
        out.extend_from_slice(&b);
        Ok(())
    }
}

/// A backend over any `object_store` store.
pub struct StoreBackend {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    location: String,
    /// For a local folder: its path, so whole-object reads go straight into a reused buffer
    /// (restore reads every pack; a fresh 16 MiB buffer each time cost more in page faults than
    /// the read itself).
    local_root: Option<PathBuf>,
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
        match e {
            object_store::Error::NotFound { .. } => BackendError::NotFound {
                key: key.to_string(),
            },
            other => BackendError::Store {
                key: key.to_string(),
                message: other.to_string(),
            },
        }
    }
}

impl Backend for StoreBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn put(&self, key: &str, data: Vec<u8>) -> Result<(), BackendError> {
        let path = StorePath::from(key);
        self.runtime
            .block_on(self.store.put(&path, PutPayload::from(data)))
            .map(|_| ())
            .map_err(|e| self.err(key, e))
    }

    fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        let path = StorePath::from(key);
        self.runtime
            .block_on(async {
                let r = self.store.get(&path).await?;
                r.bytes().await
            })
            .map_err(|e| self.err(key, e))
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
        let Some(root) = &self.local_root else {
            let b = self.get(key)?;
            out.clear();
            out.extend_from_slice(&b);
            return Ok(());
        };
        use std::io::Read;
        out.clear();
        let path = root.join(key);
        let mut f = std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BackendError::NotFound {
                key: key.to_string(),
            },
            _ => BackendError::Store {
                key: key.to_string(),
                message: e.to_string(),
            },
        })?;
        f.read_to_end(out).map_err(|e| BackendError::Store {
            key: key.to_string(),
            message: e.to_string(),
        })?;
        Ok(())
    }

    fn head(&self, key: &str) -> Result<u64, BackendError> {
        let path = StorePath::from(key);
        self.runtime
            .block_on(self.store.head(&path))
            .map(|m| m.size)
            .map_err(|e| self.err(key, e))
    }
}

/// Opens the store a repository string names: a local path (`/srv/backup`, `file:///srv/backup`).
pub fn open(location: &str, create: bool) -> Result<Arc<dyn Backend>, BackendError> {
    let path = location.strip_prefix("file://").unwrap_or(location);
    if location.contains("://") && !location.starts_with("file://") {
        return Err(BackendError::Open {
            location: location.to_string(),
            message: "unsupported repository scheme: use a local path or file:// URL".into(),
        });
    }
    if location == "memory:" {
        return Ok(Arc::new(StoreBackend::memory()));
    }
    Ok(Arc::new(StoreBackend::local(&PathBuf::from(path), create)?))
}

#[cfg(test)]
pub(crate) mod conformance {
    //! The storage conformance suite: every backend must pass it.
    use super::*;

    pub fn run(b: &dyn Backend) {
        assert!(matches!(
            b.get("index/nope"),
            Err(BackendError::NotFound { .. })
        ));
        assert!(!b.exists("index/nope").unwrap());
        b.put("index/aa", b"hello".to_vec()).unwrap();
        b.put("data/00/bb", vec![1, 2, 3, 4, 5]).unwrap();
        b.put("data/01/cc", vec![9; 10]).unwrap();
        assert_eq!(&b.get("index/aa").unwrap()[..], b"hello");
        assert_eq!(&b.get_range("data/00/bb", 1..3).unwrap()[..], [2, 3]);
        let mut buf = vec![7; 3];
        b.get_into("data/01/cc", &mut buf).unwrap();
        assert_eq!(buf, vec![9; 10]);
        assert!(matches!(
            b.get_into("data/01/nope", &mut buf),
            Err(BackendError::NotFound { .. })
        ));
        assert_eq!(b.head("data/01/cc").unwrap(), 10);
        let mut keys: Vec<_> = b
            .list("data/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        assert_eq!(keys, ["data/00/bb", "data/01/cc"]);
        assert!(b.list("snapshots/").unwrap().is_empty());
        // Writing the same object twice is harmless: objects are named after their content.
        b.put("index/aa", b"hello".to_vec()).unwrap();
        b.delete("index/aa").unwrap();
        b.delete("index/aa").unwrap();
        assert!(!b.exists("index/aa").unwrap());
    }

    #[test]
    fn memory_backend_conforms() {
        run(&StoreBackend::memory());
    }

    #[test]
    fn local_backend_conforms() {
        let dir = tempfile::tempdir().unwrap();
        run(&StoreBackend::local(&dir.path().join("repo"), true).unwrap());
    }
}
