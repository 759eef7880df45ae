//! A power cut at any moment of a backup leaves a repository that checks clean: no index object
//! or snapshot that survived names a pack that did not.
//!
//! Packs are put *deferred* (a local store writes them without waiting for the disk) and made
//! durable in a batch before the index object naming them. The store below records every write
//! in order; a power cut after the n-th write keeps what a local store would still have on its
//! disk: every plain put (fsynced before it returns), and each deferred put that a sync named
//! before the cut. The repository rebuilt from that must open and pass `check`.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use age::secrecy::SecretString;
use bytes::Bytes;
use coffer_repo::archiver::{backup, BackupOptions, Counters};
use coffer_repo::checker::{check, ReadData};
use coffer_repo::keyfile::{Protector, Unlocker};
use coffer_repo::{InitOptions, Repository};
use coffer_store::{Backend, BackendError, ObjectInfo, StoreBackend};

enum Write {
    Put(String, Bytes),
    Deferred(String, Bytes),
    Sync(Vec<String>),
    Delete(String),
}

/// A memory store that records its writes.
struct Recording {
    inner: StoreBackend,
    writes: Mutex<Vec<Write>>,
}

impl Recording {
    fn record(&self, w: Write) {
        self.writes.lock().unwrap().push(w);
    }

    /// The store as a power cut after the first `n` writes leaves it.
    fn after_cut(&self, n: usize) -> StoreBackend {
        let disk = StoreBackend::memory();
        let mut volatile = std::collections::HashMap::new();
        for w in &self.writes.lock().unwrap()[..n] {
            match w {
                Write::Put(k, b) => disk.put_bytes(k, b.clone()).unwrap(),
                Write::Deferred(k, b) => {
                    volatile.insert(k.clone(), b.clone());
                }
                Write::Sync(keys) => {
                    for k in keys {
                        if let Some(b) = volatile.remove(k) {
                            disk.put_bytes(k, b).unwrap();
                        }
                    }
                }
                Write::Delete(k) => {
                    volatile.remove(k);
                    disk.delete(k).unwrap();
                }
            }
        }
        disk
    }
}

impl Backend for Recording {
    fn location(&self) -> String {
        "recording".into()
    }
    fn put(&self, key: &str, data: Vec<u8>) -> Result<(), BackendError> {
        self.put_bytes(key, Bytes::from(data))
    }
    fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        self.record(Write::Put(key.into(), data.clone()));
        self.inner.put_bytes(key, data)
    }
    fn put_deferred(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        self.record(Write::Deferred(key.into(), data.clone()));
        self.inner.put_bytes(key, data)
    }
    fn sync(&self, keys: &[String]) -> Result<(), BackendError> {
        self.record(Write::Sync(keys.to_vec()));
        Ok(())
    }
    fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.inner.get_range(key, range)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.record(Write::Delete(key.into()));
        self.inner.delete(key)
    }
    fn stat(&self, key: &str) -> Result<ObjectInfo, BackendError> {
        self.inner.stat(key)
    }
}

fn passphrase() -> SecretString {
    SecretString::from("power cut".to_string())
}

#[test]
fn a_power_cut_at_any_write_of_a_backup_leaves_a_repository_that_checks_clean() {
    let store = Arc::new(Recording {
        inner: StoreBackend::memory(),
        writes: Mutex::default(),
    });
    let opts = InitOptions {
        // Every chunk (0.5 to 4 MiB) fills a pack of its own: many packs, several index objects.
        pack_size: 64 << 10,
        ..Default::default()
    };
    let protector = Protector::Passphrase {
        passphrase: passphrase(),
        log_n: Some(10),
    };
    Repository::init(store.clone(), &opts, &protector).unwrap();
    let initialized = store.writes.lock().unwrap().len();

    let src = tempfile::tempdir().unwrap();
    for i in 0..6u8 {
        let mut data = vec![0; 3 << 20];
        blake3::Hasher::new()
            .update(&[i])
            .finalize_xof()
            .fill(&mut data);
        std::fs::write(src.path().join(format!("f{i}")), data).unwrap();
    }
    let backup_opts = BackupOptions {
        paths: vec![src.path().to_path_buf()],
        ..Default::default()
    };
    let unlocker = Unlocker::Passphrase(passphrase());
    let repo = Arc::new(Repository::open(store.clone(), &unlocker).unwrap());
    backup(&repo, &backup_opts, Arc::new(Counters::default())).unwrap();

    let writes = store.writes.lock().unwrap().len();
    let (deferred, indexes) = {
        let w = store.writes.lock().unwrap();
        let deferred = w
            .iter()
            .filter(|w| matches!(w, Write::Deferred(..)))
            .count();
        let indexes = w
            .iter()
            .filter(|w| matches!(w, Write::Put(k, _) if k.starts_with("index/")))
            .count();
        (deferred, indexes)
    };
    assert!(
        deferred >= 12 && indexes >= 2,
        "{deferred} packs and {indexes} index objects: too few to cut between"
    );

    let mut snapshots_seen = 0;
    for n in initialized..=writes {
        let disk: Arc<dyn Backend> = Arc::new(store.after_cut(n));
        let repo = Repository::open(disk.clone(), &unlocker).unwrap();
        let report = check(&repo, ReadData::None).unwrap();
        assert!(
            report.problems.is_empty(),
            "after a power cut at write {n} of {writes}: {:?}",
            report.problems
        );
        snapshots_seen += report.snapshots;
        // What an index object names is there; the packs cut off are simply gone.
        let (index, errors) = repo.load_index_from_store().unwrap();
        assert!(errors.is_empty());
        for (pack, size) in index.packs() {
            let key = coffer_repo::pack::key(&pack);
            assert_eq!(disk.head(&key).unwrap(), size, "{key} after write {n}");
        }
    }
    assert!(
        snapshots_seen >= 1,
        "the cut after the last write keeps the snapshot"
    );
}
