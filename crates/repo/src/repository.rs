//! The repository: config, keys, packs, indexes, snapshots and trees in one store.
//!
//! This layer knows nothing of the CLI or of plugins. It opens a repository with a key, reads and
//! writes its objects, and checks everything it reads against its id before handing it on.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

use coffer_store::{parallel_map, Backend, BackendError};

use crate::chunker::ChunkerParams;
use crate::config::{Config, CONFIG_KEY};
use crate::crypto::{self, Secrets, Tag};
use crate::error::{Error, Result};
use crate::id::{ChunkId, IndexId, KeyId, PackId, SnapshotId};
use crate::index::{self, Index, IndexFile};
use crate::keyfile::{self, KeyFile, Protector, Unlocker};
use crate::marks::{self, Mark, MarkState, StoredMark};
use crate::pack;
use crate::snapshot::{self, Snapshot};
use crate::tree::Tree;

/// A reader that hashes what passes through it, and remembers the first error of the store
/// beneath (which is the store's failure, not the data's).
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
    failed: Option<String>,
}

impl<R: std::io::Read> std::io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                self.failed.get_or_insert_with(|| e.to_string());
                Err(e)
            }
        }
    }
}

/// Settings fixed at `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    pub compression: i32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            pack_size: 8 << 20,
            // Level 3 cost ~10 % more CPU in a first backup for ~1 % fewer bytes (coffer-bench).
            compression: 1,
        }
    }
}

/// A key as `coffer key list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: KeyId,
    pub current: bool,
    #[serde(flatten)]
    pub file: KeyFile,
}

/// A pack as the store lists it.
#[derive(Debug, Clone, Copy)]
pub struct StoredPack {
    pub id: PackId,
    pub size: u64,
    /// When the store wrote it, on the store's clock.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// An open repository: the one owner of the object layout in its store. Engines reach packs,
/// index objects, snapshots, marks and keys only through it.
pub struct Repository {
    backend: Arc<dyn Backend>,
    config: Config,
    secrets: Secrets,
    key_id: KeyId,
    /// Signer records of the key files this repository was opened with (not yet checked).
    key_signers: Vec<keyfile::SignerRecord>,
    /// Signers full keys vouched for, checked once (see [`Repository::writer`]).
    signers: std::sync::OnceLock<Vec<keyfile::SignerRecord>>,
    /// The scrypt work factor of the key this repository was opened with, if a passphrase key.
    key_kdf_log_n: Option<u8>,
    /// Where this repository's index table is cached (see [`Repository::set_cache_dir`]).
    index_table: Option<PathBuf>,
}

/// Largest index object or snapshot a reader decompresses (prune writes index objects of at most
/// 100,000 chunks: about 17 MiB).
const MAX_DOCUMENT: usize = 512 << 20;

fn key_object(id: &KeyId) -> String {
    format!("keys/{}", id.to_hex())
}

impl Repository {
    /// Creates a repository in an empty store.
    ///
    /// Fails if the store already holds a `config`.
    pub fn init(
        backend: Arc<dyn Backend>,
        opts: &InitOptions,
        protector: &Protector,
    ) -> Result<Self> {
        opts.chunker.validate().map_err(Error::Invalid)?;
        if !(1..=22).contains(&opts.compression) {
            return Err(Error::Invalid(format!(
                "compression level {} is out of range 1..=22",
                opts.compression
            )));
        }
        if backend.exists(CONFIG_KEY)? {
            return Err(Error::AlreadyInitialized {
                location: backend.location(),
            });
        }
        let config = Config::new(opts.chunker, opts.pack_size, opts.compression);
        let secrets = Secrets::generate();
        let mut repo = Repository {
            backend,
            config,
            secrets,
            key_id: KeyId([0; 32]),
            key_signers: vec![],
            signers: Default::default(),
            key_kdf_log_n: match protector {
                Protector::Passphrase { log_n, .. } => {
                    Some(log_n.unwrap_or(crate::crypto::DEFAULT_KDF_LOG_N))
                }
                Protector::Recipients(_) => None,
            },
            index_table: None,
        };
        // The first key holds exactly the secrets this repository object signs with.
        let (key_id, signer) = repo.store_key(repo.secrets.clone(), protector, None)?;
        repo.key_id = key_id;
        repo.key_signers.extend(signer);
        // The config goes last: a store with keys but no config is not yet a repository, so an
        // interrupted init can simply be run again.
        let cfg = serde_json::to_vec_pretty(&repo.config).expect("config serializes");
        repo.backend.put(CONFIG_KEY, cfg)?;
        Ok(repo)
    }

    /// Opens an existing repository with a passphrase or identities.
    ///
    /// Fails with [`Error::NoRepository`] when the store holds no config, and with
    /// [`Error::WrongKey`] when no key file opens.
    pub fn open(backend: Arc<dyn Backend>, unlocker: &Unlocker) -> Result<Self> {
        let config = Self::read_config(backend.as_ref())?;
        let keys = Self::read_key_files(backend.as_ref(), &config)?;
        let mut kinds_seen = (false, false);
        let mut damaged: Vec<String> = vec![];
        // Full keys first: should one passphrase open a full and a write-only key (made before
        // `key add` refused that), its owner gets the full one.
        let mut fitting: Vec<&(String, KeyId, KeyFile)> = keys
            .iter()
            .filter(|(_, _, file)| {
                match file.kind {
                    keyfile::KeyKind::Passphrase => kinds_seen.0 = true,
                    keyfile::KeyKind::Recipients => kinds_seen.1 = true,
                }
                matches!(
                    (&file.kind, unlocker),
                    (keyfile::KeyKind::Passphrase, Unlocker::Passphrase(_))
                        | (keyfile::KeyKind::Recipients, Unlocker::Identities(_))
                )
            })
            .collect();
        fitting.sort_by(|(a, _, fa), (b, _, fb)| (fa.write_only, a).cmp(&(fb.write_only, b)));
        let tried = fitting.len();
        for (name, key_id, file) in fitting {
            // One damaged key file must not lock out the others: try each, warn of the bad ones.
            match file.open(unlocker, name) {
                Ok(Some(secrets)) => {
                    let key_signers = keys
                        .iter()
                        .filter_map(|(_, _, f)| f.signer.clone())
                        .collect();
                    return Ok(Repository {
                        backend,
                        config,
                        secrets,
                        key_id: *key_id,
                        key_signers,
                        signers: Default::default(),
                        key_kdf_log_n: file.scrypt_log_n(),
                        index_table: None,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("key file {name} is damaged, skipped: {e}");
                    damaged.push(name.clone());
                }
            }
        }
        if tried == 0 {
            return Err(match unlocker {
                Unlocker::Passphrase(_) if kinds_seen.1 => Error::NoUsableKey {
                    what: "a passphrase",
                    hint: "its keys are sealed to age/SSH recipients; pass --identity-file",
                },
                Unlocker::Identities(_) if kinds_seen.0 => Error::NoUsableKey {
                    what: "an identity file",
                    hint: "its keys are sealed with a passphrase; give it via COFFER_PASSWORD_FILE or the prompt",
                },
                _ => Error::WrongKey { tried },
            });
        }
        if !damaged.is_empty() && damaged.len() == tried {
            return Err(Error::corrupt(
                damaged.join(", "),
                "every key file that could open with this passphrase or identity is damaged",
            ));
        }
        Err(Error::WrongKey { tried })
    }

    /// Every key file of this repository that parses, with its object name and id. Unreadable
    /// ones, and ones of another repository, are skipped with a warning: one damaged key file
    /// must not stop the others from opening.
    fn read_key_files(
        backend: &dyn Backend,
        config: &Config,
    ) -> Result<Vec<(String, KeyId, KeyFile)>> {
        let mut out = vec![];
        for k in backend.list("keys/")? {
            let bytes = match backend.get(&k.key) {
                Ok(b) => b,
                // Removed since the listing.
                Err(BackendError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let file: KeyFile = match serde_json::from_slice(&bytes) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!("key file {} is damaged, skipped: {e}", k.key);
                    continue;
                }
            };
            if file.repository != config.id {
                tracing::warn!(
                    "skipping key file {}: it belongs to another repository",
                    k.key
                );
                continue;
            }
            out.push((k.key, KeyId(*blake3::hash(&bytes).as_bytes()), file));
        }
        Ok(out)
    }

    pub fn read_config(backend: &dyn Backend) -> Result<Config> {
        let raw = match backend.get(CONFIG_KEY) {
            Ok(r) => r,
            Err(BackendError::NotFound { .. }) => {
                return Err(Error::NoRepository {
                    location: backend.location(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let config = Config::parse(&raw)?;
        Ok(config)
    }

    /// The raw store, reaching around the repository format. Not for engines: tests that damage
    /// objects on purpose use it.
    #[doc(hidden)]
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The repository's config object (id, chunker and pack parameters).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The secrets of the key this repository was opened with.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Keeps the index as a table under `dir` (the cache folder; this repository's subfolder
    /// of it), so that [`Repository::load_index`] fetches only the index objects written since.
    pub fn set_cache_dir(&mut self, dir: &Path) {
        self.index_table = Some(dir.join(&self.config.id).join("index.table"));
    }

    /// The key of the index table's hash: a table made for another repository, or damaged,
    /// does not open.
    fn table_key(&self) -> [u8; 32] {
        let mut m = Vec::with_capacity(64);
        m.extend_from_slice(&self.secrets.id_key);
        m.extend_from_slice(self.config.id.as_bytes());
        blake3::derive_key("coffer index table v1", &m)
    }

    /// The key file this repository was opened with.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// How many pack uploads may run at once (a knob of remote stores).
    pub fn upload_parallelism(&self) -> usize {
        self.backend.parallelism()
    }

    /// Whether the store is a folder on this machine (see [`Backend::is_local`]).
    pub fn is_local(&self) -> bool {
        self.backend.is_local()
    }

    /// The store's own clock (see [`Backend::now`]).
    pub fn store_now(&self) -> Result<chrono::DateTime<chrono::Utc>> {
        Ok(self.backend.now()?)
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// Removes (or with `dry_run` counts) what writes cut off by a crash left in the store and
    /// nothing touched for `older_than` (see [`Backend::remove_abandoned`]).
    pub fn remove_abandoned(
        &self,
        older_than: std::time::Duration,
        dry_run: bool,
    ) -> Result<coffer_store::Abandoned> {
        Ok(self.backend.remove_abandoned(older_than, dry_run)?)
    }

    // ----- keys -----

    /// Writes a new key file holding this repository's secrets (or their write-only subset),
    /// with a signing key of its own that this (full) key vouches for. A write-only key may
    /// write snapshots for `host` only (default: this machine).
    ///
    /// Refuses a passphrase that already opens a key of this repository: one passphrase must
    /// open one key, or its owner could meet the write-only key where they expected the full one.
    pub fn add_key(
        &self,
        protector: &Protector,
        write_only: bool,
        host: Option<&str>,
    ) -> Result<KeyId> {
        if let Protector::Passphrase { passphrase, .. } = protector {
            let unlocker = Unlocker::Passphrase(passphrase.clone());
            for (name, id, file) in Self::read_key_files(self.backend.as_ref(), &self.config)? {
                if file.kind != keyfile::KeyKind::Passphrase {
                    continue;
                }
                if let Ok(Some(_)) = file.open(&unlocker, &name) {
                    return Err(Error::Invalid(format!(
                        "this passphrase already opens {} key {}: choose another, so that each passphrase opens exactly one key",
                        if file.write_only { "write-only" } else { "full" },
                        id.short()
                    )));
                }
            }
        }
        Ok(self
            .store_key(self.secrets.for_new_key(write_only), protector, host)?
            .0)
    }

    /// Re-seals the key this repository was opened with under `protector` (a new passphrase, or
    /// the same one at today's KDF work factor): the new key file holds the same secrets and the
    /// same signer record, so every snapshot the key signed stays signed; then the old key file
    /// goes. A passphrase that opens another key is refused, as for `add_key`.
    pub fn reseal_key(&self, protector: &Protector) -> Result<KeyId> {
        let keys = Self::read_key_files(self.backend.as_ref(), &self.config)?;
        let (old_name, _, old) = keys
            .iter()
            .find(|(_, id, _)| *id == self.key_id)
            .ok_or_else(|| {
                Error::Invalid("the key in use is no longer in the repository".into())
            })?;
        if let Protector::Passphrase { passphrase, .. } = protector {
            let unlocker = Unlocker::Passphrase(passphrase.clone());
            for (name, id, file) in &keys {
                if *id == self.key_id || file.kind != keyfile::KeyKind::Passphrase {
                    continue;
                }
                if let Ok(Some(_)) = file.open(&unlocker, name) {
                    return Err(Error::Invalid(format!(
                        "this passphrase already opens {} key {}: choose another, so that each passphrase opens exactly one key",
                        if file.write_only { "write-only" } else { "full" },
                        id.short()
                    )));
                }
            }
        }
        let mut file = KeyFile::seal(&self.config.id, &self.secrets, protector)?;
        file.signer = old.signer.clone();
        file.host = old.host.clone();
        file.created = old.created;
        let bytes = serde_json::to_vec_pretty(&file).expect("key file serializes");
        let id = KeyId(*blake3::hash(&bytes).as_bytes());
        if id == self.key_id {
            return Ok(id);
        }
        // The new one first: a crash in between leaves two files that open the same secrets.
        self.backend.put(&key_object(&id), bytes)?;
        self.backend.delete(old_name)?;
        Ok(id)
    }

    /// The scrypt work factor (log2 N) of the passphrase key this repository was opened with;
    /// `None` for a key sealed to recipients.
    pub fn key_kdf_log_n(&self) -> Option<u8> {
        self.key_kdf_log_n
    }

    /// Seals `secrets` into a key file (with its signer record, when this key can vouch);
    /// returns its id and that record.
    fn store_key(
        &self,
        secrets: Secrets,
        protector: &Protector,
        host: Option<&str>,
    ) -> Result<(KeyId, Option<keyfile::SignerRecord>)> {
        let mut file = KeyFile::seal(&self.config.id, &secrets, protector)?;
        if let (Some(sk), Some(trust)) = (&secrets.signing, self.secrets.trust_key()) {
            let host = host.map(String::from).unwrap_or_else(crate::hostname);
            file.signer = Some(keyfile::SignerRecord::new(
                &sk.verifying_key(),
                &host,
                secrets.is_write_only(),
                &trust,
            ));
            file.host = host;
        }
        let bytes = serde_json::to_vec_pretty(&file).expect("key file serializes");
        let id = KeyId(*blake3::hash(&bytes).as_bytes());
        self.backend.put(&key_object(&id), bytes)?;
        Ok((id, file.signer))
    }

    /// The signers full keys vouched for: the records of the key files read at opening and
    /// those of removed keys, each checked once.
    fn signers(&self) -> &[keyfile::SignerRecord] {
        self.signers.get_or_init(|| {
            let Some(trust) = self.secrets.trust_key() else {
                return vec![];
            };
            let mut records = self.key_signers.clone();
            // Records of removed keys.
            for o in self.backend.list("signers/").unwrap_or_default() {
                if let Some(r) = self
                    .backend
                    .get(&o.key)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                {
                    records.push(r);
                }
            }
            records.retain(|r| r.verify(&trust));
            records
        })
    }

    /// Who wrote `snap`, as far as this (full) key can tell: its signature checked against
    /// the signers full keys vouched for, and a write-only signer against the host it may
    /// write for.
    pub fn writer(&self, snap: &Snapshot) -> snapshot::Writer {
        use snapshot::Writer;
        let Some(sig) = &snap.signature else {
            return Writer::Unverified {
                reason: "unsigned".into(),
            };
        };
        let Some(signer) = self.signers().iter().find(|r| r.public == sig.key) else {
            return Writer::Unverified {
                reason: "signed by a key no full key vouches for (removed, or an impostor)".into(),
            };
        };
        let verified = (|| {
            let mut pk = [0u8; 32];
            hex::decode_to_slice(&sig.key, &mut pk).ok()?;
            let mut sb = [0u8; 64];
            hex::decode_to_slice(&sig.sig, &mut sb).ok()?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&pk).ok()?;
            key.verify_strict(
                &snap.signed_bytes(),
                &ed25519_dalek::Signature::from_bytes(&sb),
            )
            .ok()
        })();
        if verified.is_none() {
            return Writer::Forged {
                reason: "its signature does not verify".into(),
            };
        }
        if signer.write_only && signer.host != snap.hostname {
            return Writer::Forged {
                reason: format!(
                    "the write-only key of host {} wrote it for host {}",
                    signer.host, snap.hostname
                ),
            };
        }
        Writer::Signed {
            key: sig.key[..16].to_string(),
            host: signer.host.clone(),
            write_only: signer.write_only,
        }
    }

    /// Whether snapshots must be signed to count: once any key signs (a full key vouched for
    /// one), an unsigned or unvouched snapshot could be a forgery and is never `latest`.
    pub fn signatures_required(&self) -> bool {
        !self.signers().is_empty()
    }

    /// The host this key may write snapshots for, when it is a write-only key bound to one.
    pub fn bound_host(&self) -> Option<String> {
        let sk = self.secrets.signing.as_ref()?;
        if !self.secrets.is_write_only() {
            return None;
        }
        let public = hex::encode(sk.verifying_key().to_bytes());
        self.key_signers
            .iter()
            .find(|r| r.public == public)
            .map(|r| r.host.clone())
    }

    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out: Vec<KeyInfo> = Self::read_key_files(self.backend.as_ref(), &self.config)?
            .into_iter()
            .map(|(_, id, file)| KeyInfo {
                id,
                current: id == self.key_id,
                file,
            })
            .collect();
        out.sort_by_key(|k| k.file.created);
        Ok(out)
    }

    /// Removes a key. Refuses to remove the key in use and the last full key.
    pub fn remove_key(&self, prefix: &str) -> Result<KeyId> {
        let keys = self.list_keys()?;
        let key = match by_prefix(keys.iter(), prefix, |k| k.id.to_hex()).as_slice() {
            [k] => *k,
            [] => {
                return Err(Error::Invalid(format!(
                    "no key matches '{prefix}': see `coffer key list`"
                )))
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "'{prefix}' matches more than one key: give more digits"
                )))
            }
        };
        if key.current {
            return Err(Error::Invalid(
                "refusing to remove the key this command was opened with; open with another key first".into(),
            ));
        }
        if !key.file.write_only && keys.iter().filter(|k| !k.file.write_only).count() <= 1 {
            return Err(Error::Invalid(
                "refusing to remove the last full key: the data would be lost".into(),
            ));
        }
        // The signer record outlives the key: snapshots it signed stay signed (a retired key is
        // not a forger). It carries its full key's MAC, so keeping it trusts nothing new.
        if let Some(r) = &key.file.signer {
            let json = serde_json::to_vec_pretty(r).expect("signer record serializes");
            self.backend.put(&format!("signers/{}", r.public), json)?;
        }
        self.backend.delete(&key_object(&key.id))?;
        Ok(key.id)
    }

    // ----- documents: index and snapshot objects -----

    fn seal_doc<T: Serialize>(
        &self,
        tag: Tag,
        value: &T,
        recipient: &dyn age::Recipient,
    ) -> ([u8; 32], Vec<u8>) {
        let json = serde_json::to_vec(value).expect("document serializes");
        let id = self.secrets.id(tag, &json);
        let compressed = zstd::bulk::compress(&json, 3).expect("zstd into memory");
        (id, crypto::encrypt(recipient, &compressed))
    }

    fn open_doc<T: DeserializeOwned>(
        &self,
        tag: Tag,
        id: &[u8; 32],
        stored: &[u8],
        identity: &dyn age::Identity,
        name: &str,
    ) -> Result<T> {
        let compressed = crypto::decrypt(identity, stored, name)?;
        // Bounded: a write-only key can write index objects, and a small zstd frame can claim
        // gigabytes.
        let mut json = vec![];
        zstd::stream::Decoder::new(&compressed[..])
            .and_then(|d| {
                use std::io::Read;
                d.take(MAX_DOCUMENT as u64 + 1).read_to_end(&mut json)
            })
            .map_err(|e| Error::corrupt(name, format!("does not decompress: {e}")))?;
        if json.len() > MAX_DOCUMENT {
            return Err(Error::corrupt(
                name,
                "decompresses to more than 512 MiB: no index object or snapshot coffer writes is that large",
            ));
        }
        if &self.secrets.id(tag, &json) != id {
            return Err(Error::corrupt(name, "content does not match its id"));
        }
        serde_json::from_slice(&json).map_err(|e| Error::corrupt(name, format!("malformed: {e}")))
    }

    // ----- index -----

    pub fn save_index(&self, file: &IndexFile) -> Result<IndexId> {
        self.put_index(file.packs.iter().map(|p| p.id), file)
    }

    /// Seals and stores one index object naming `packs` (owned or borrowed entries serialize
    /// alike), once the packs themselves are durable: the index object is what makes them
    /// findable, so it must never outlive them in a power cut.
    fn put_index(
        &self,
        packs: impl Iterator<Item = PackId>,
        doc: &impl Serialize,
    ) -> Result<IndexId> {
        let keys: Vec<String> = packs.map(|p| pack::key(&p)).collect();
        self.backend.sync(&keys)?;
        let (id, bytes) = self.seal_doc(Tag::Index, doc, &self.secrets.index_identity.to_public());
        let id = IndexId(id);
        self.backend.put(&index::key(&id), bytes)?;
        Ok(id)
    }

    /// Saves `packs` as index objects cut by [`index::object_groups`] (a compacted or rebuilt
    /// index); returns their ids.
    pub fn save_index_groups(&self, packs: &[index::IndexPackRef]) -> Result<HashSet<IndexId>> {
        index::object_groups(packs)
            .into_iter()
            .map(|group| {
                self.put_index(
                    group.iter().map(|p| p.id),
                    &index::IndexFileRef { packs: group },
                )
            })
            .collect()
    }

    pub fn load_index_file(&self, id: &IndexId) -> Result<IndexFile> {
        let name = index::key(id);
        let stored = self.backend.get(&name)?;
        self.open_doc(
            Tag::Index,
            &id.0,
            &stored,
            &self.secrets.index_identity,
            &name,
        )
    }

    pub fn list_index_ids(&self) -> Result<Vec<IndexId>> {
        Ok(self
            .backend
            .list("index/")?
            .iter()
            .filter_map(|o| o.key.rsplit('/').next()?.parse().ok())
            .collect())
    }

    /// Every index object with its id. One deleted between listing and reading (a prune
    /// compacting the index) is skipped after a fresh listing picks up its replacement.
    /// Damaged ones come back as errors beside the rest.
    #[allow(clippy::type_complexity)]
    pub fn load_index_files(&self) -> Result<(Vec<(IndexId, IndexFile)>, Vec<(IndexId, Error)>)> {
        let mut files = vec![];
        let errors = self.each_index_file(&HashSet::new(), |id, f| files.push((id, f)))?;
        Ok((files, errors))
    }

    /// Reads every index object not in `skip`, a few at a time in parallel, handing each to `f`
    /// (so that a large index never sits in memory twice, as objects and as an index).
    fn each_index_file(
        &self,
        skip: &HashSet<IndexId>,
        mut f: impl FnMut(IndexId, IndexFile),
    ) -> Result<Vec<(IndexId, Error)>> {
        let mut errors = vec![];
        let mut done: HashSet<IndexId> = HashSet::new();
        for _ in 0..3 {
            let ids: Vec<IndexId> = self
                .list_index_ids()?
                .into_iter()
                .filter(|id| !done.contains(id) && !skip.contains(id))
                .collect();
            let mut vanished = false;
            for batch in ids.chunks(32) {
                let results = parallel_map(batch, |id| self.load_index_file(id));
                for (id, r) in batch.iter().copied().zip(results) {
                    match r {
                        Ok(file) => {
                            done.insert(id);
                            f(id, file);
                        }
                        Err(Error::Backend(BackendError::NotFound { .. })) => vanished = true,
                        Err(Error::Backend(e)) => return Err(e.into()),
                        Err(e) => {
                            done.insert(id);
                            errors.push((id, e));
                        }
                    }
                }
            }
            if !vanished {
                break;
            }
        }
        Ok(errors)
    }

    /// Loads the prune marks, then the index: from the cached table (when a cache folder is set
    /// and the table is whole and current) and the index objects it does not hold, else from
    /// every index object; an index that keeps backups off marked packs. Damaged index objects
    /// are returned beside the index, not fatal: a backup can still run (it re-uploads what it
    /// cannot find) and `check` reports them.
    pub fn load_index(&self) -> Result<(Index, Vec<(IndexId, Error)>)> {
        self.load_index_with(self.index_table.as_deref())
    }

    /// [`Repository::load_index`] from the index objects alone, the cached table not read (it
    /// is written anew): what `check` verifies.
    pub fn load_index_from_store(&self) -> Result<(Index, Vec<(IndexId, Error)>)> {
        let (index, errors) = self.load_index_with(None)?;
        self.save_table(&index);
        Ok((index, errors))
    }

    fn load_index_with(&self, table: Option<&Path>) -> Result<(Index, Vec<(IndexId, Error)>)> {
        // Marks first: a mark written after this listing is caught by `check_commit`.
        let (marks, mark_errors) = self.load_marks()?;
        for (key, e) in &mark_errors {
            tracing::warn!("prune mark {key} unreadable, ignored: {e}");
        }
        let doomed = marks
            .iter()
            .flat_map(|m| m.mark.packs.iter().copied())
            .collect();
        let seen = marks.iter().map(|m| m.key.clone()).collect();
        let mut index = Index::with_doomed(doomed, seen);
        if let Some(path) = table {
            let listed: HashSet<IndexId> = self.list_index_ids()?.into_iter().collect();
            match index::open_table(path, &self.table_key(), &listed) {
                Ok(Some(t)) => index.attach(t),
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    "{}: {e}; rebuilding it from the index objects",
                    path.display()
                ),
            }
        }
        let have = index.objects.clone();
        let before = index.record_counts().1;
        let errors = self.each_index_file(&have, |id, f| {
            index.add_file_unsorted(&f);
            index.objects.insert(id);
            index.fetched += 1;
        })?;
        index.sort();
        if table.is_some() && index.fetched > 0 {
            let (on_disk, in_memory) = index.record_counts();
            let added = in_memory.saturating_sub(before);
            // A table kept on disk is rewritten once enough has piled up beside it; a small one
            // whenever anything was added.
            if on_disk == 0 || added * 16 > on_disk || index.fetched >= 64 {
                self.save_table(&index);
            }
        }
        Ok((index, errors))
    }

    /// Brings the cached index table up to date (if a cache folder is set).
    pub fn refresh_index_table(&self) -> Result<()> {
        if let Some(path) = &self.index_table {
            self.load_index_with(Some(path))?;
        }
        Ok(())
    }

    /// Writes the index table, if a cache folder is set. A failure costs only speed: warned.
    pub fn save_table(&self, index: &Index) {
        if let Some(path) = &self.index_table {
            if let Err(e) = index.save_table(path, &self.table_key()) {
                tracing::warn!("could not write the index table {}: {e}", path.display());
            }
        }
    }

    // ----- prune marks -----

    pub fn save_mark(&self, mark: &Mark) -> Result<String> {
        let (id, bytes) = self.seal_doc(Tag::Mark, mark, &self.secrets.index_identity.to_public());
        let key = marks::key(&id);
        self.backend.put(&key, bytes)?;
        Ok(key)
    }

    /// Every prune mark with the store's time of writing it; unreadable ones beside them.
    #[allow(clippy::type_complexity)]
    pub fn load_marks(&self) -> Result<(Vec<StoredMark>, Vec<(String, Error)>)> {
        self.read_marks(self.backend.list("prune/")?)
    }

    /// Reads the listed marks (see [`Repository::load_marks`]).
    #[allow(clippy::type_complexity)]
    fn read_marks(
        &self,
        listed: Vec<coffer_store::ObjectInfo>,
    ) -> Result<(Vec<StoredMark>, Vec<(String, Error)>)> {
        let loaded = parallel_map(&listed, |o| -> Result<StoredMark> {
            let mut id = [0u8; 32];
            hex::decode_to_slice(o.key.rsplit('/').next().unwrap_or_default(), &mut id)
                .map_err(|_| Error::corrupt(&o.key, "not a mark name"))?;
            let stored = self.backend.get(&o.key)?;
            let mark: Mark = self.open_doc(
                Tag::Mark,
                &id,
                &stored,
                &self.secrets.index_identity,
                &o.key,
            )?;
            let time = match o.modified {
                Some(t) => t,
                None => self
                    .backend
                    .stat(&o.key)?
                    .modified
                    .unwrap_or_else(chrono::Utc::now),
            };
            Ok(StoredMark {
                key: o.key.clone(),
                time,
                mark,
            })
        });
        let mut out = vec![];
        let mut errors = vec![];
        for (o, r) in listed.iter().zip(loaded) {
            match r {
                Ok(m) => out.push(m),
                // Removed by a prune since the listing: nothing to fence off any more.
                Err(Error::Backend(BackendError::NotFound { .. })) => {}
                Err(Error::Backend(e)) => return Err(e.into()),
                Err(e) => errors.push((o.key.clone(), e)),
            }
        }
        Ok((out, errors))
    }

    /// Before a snapshot is saved: may it rely on these packs (reused through `index`, or
    /// uploaded by this backup)? Not if a prune marked one of them after the index was loaded
    /// and the mark's grace period ends too soon for this snapshot to be seen by the prune that
    /// sweeps it. Then the snapshot is refused, and the next backup stores that data anew.
    pub fn check_commit(&self, index: &Index, own_packs: &[PackId]) -> Result<()> {
        // Only marks written since the index was loaded can name packs this backup relies on.
        let new: Vec<_> = self
            .backend
            .list("prune/")?
            .into_iter()
            .filter(|o| !index.marks_seen.contains(&o.key))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut relied: std::collections::HashSet<PackId> =
            index.relied_packs().into_iter().collect();
        relied.extend(own_packs.iter().copied());
        let (marks, _) = self.read_marks(new)?;
        let mut now = None;
        for m in &marks {
            let hit = m.mark.packs.iter().filter(|p| relied.contains(p)).count();
            if hit == 0 {
                continue;
            }
            if m.mark.state == MarkState::Swept {
                return Err(Error::PruneRace {
                    detail: format!("{hit} of its packs were already deleted by a prune"),
                });
            }
            let now = match now {
                Some(n) => n,
                None => *now.insert(self.backend.now()?),
            };
            // Margin: the snapshot upload itself (2 s at least), and one more second for stores
            // whose clock (HTTP Last-Modified) has whole seconds.
            let margin =
                chrono::Duration::seconds((m.mark.grace_secs as i64 / 4).clamp(2, 600) + 1);
            if now + margin >= m.deadline() {
                return Err(Error::PruneRace {
                    detail: format!(
                        "a prune marked {hit} pack(s) it relies on at {}, and their grace period of {} s ends at {}",
                        m.time.format("%H:%M:%S"),
                        m.mark.grace_secs,
                        m.deadline().format("%H:%M:%S")
                    ),
                });
            }
        }
        Ok(())
    }

    // ----- packs and chunks -----

    /// Every pack in the store.
    pub fn list_packs(&self) -> Result<Vec<StoredPack>> {
        Ok(self
            .backend
            .list("data/")?
            .into_iter()
            .filter_map(|o| {
                let id: PackId = o.key.rsplit('/').next()?.parse().ok()?;
                Some(StoredPack {
                    id,
                    size: o.size,
                    modified: o.modified,
                })
            })
            .collect())
    }

    /// Uploads a sealed pack; returns its index entry, to be saved in an index object by the
    /// caller (a pack is findable only once an index object names it).
    pub fn upload_pack(&self, p: pack::SealedPack) -> Result<index::IndexPack> {
        let size = p.bytes.len() as u64;
        // Durable once an index object names it (`put_index`).
        self.backend
            .put_deferred(&pack::key(&p.id), p.bytes.into())?;
        Ok(index::IndexPack {
            id: p.id,
            size,
            chunks: p.entries,
        })
    }

    /// Deletes packs (a prune's sweep); deleting a gone one succeeds.
    pub fn delete_packs(&self, ids: &[PackId]) -> Result<()> {
        self.delete_objects(ids.iter().map(pack::key).collect())
    }

    /// Deletes index objects (after their entries were written again, compacted).
    pub fn delete_index_files(&self, ids: &[IndexId]) -> Result<()> {
        self.delete_objects(ids.iter().map(index::key).collect())
    }

    /// Deletes objects several at a time; the first failure is the answer.
    fn delete_objects(&self, keys: Vec<String>) -> Result<()> {
        parallel_map(&keys, |k| self.backend.delete(k))
            .into_iter()
            .collect::<std::result::Result<Vec<()>, BackendError>>()?;
        Ok(())
    }

    /// Deletes a prune mark by its object name.
    pub fn delete_mark(&self, key: &str) -> Result<()> {
        Ok(self.backend.delete(key)?)
    }

    /// Whether a pack is stored and its bytes hash to its id (no key needed). A store failure is
    /// an error, not a verdict.
    pub fn pack_intact(&self, id: &PackId) -> Result<bool> {
        let mut stored = vec![];
        match self.backend.get_into(&pack::key(id), &mut stored) {
            Ok(()) => Ok(blake3::hash(&stored).as_bytes() == &id.0),
            Err(BackendError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Downloads a pack, checks it against its id and decrypts it.
    pub fn read_pack(&self, id: &PackId) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_pack_into(id, &mut out)?;
        Ok(out)
    }

    /// [`Repository::read_pack`] into a reusable buffer. The pack is decrypted as it streams in
    /// and hashed on the way, so only its plaintext is held (a restore or check thread holds one
    /// pack, not two); nothing it returns has escaped the check against its name.
    pub fn read_pack_into(&self, id: &PackId, out: &mut Vec<u8>) -> Result<()> {
        let identity = self.secrets.data_identity("read data")?;
        let name = pack::key(id);
        let mut r = Hashing {
            inner: self.backend.open_read(&name, 0)?,
            hasher: blake3::Hasher::new(),
            failed: None,
        };
        let decrypted = crypto::decrypt_reader_into(identity, &mut r, &name, out);
        // Whatever decryption made of it, the stored bytes must hash to the pack's name; a
        // mismatch is the finding that explains a failed decryption too. A store that failed
        // mid-way is that, not damage.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
        if let Some(message) = r.failed {
            out.clear();
            return Err(Error::Backend(BackendError::Store { key: name, message }));
        }
        if r.hasher.finalize().as_bytes() != &id.0 {
            out.clear();
            return Err(pack::not_its_id(&name));
        }
        decrypted
    }

    /// A pack's plaintext, for reading `entries` from it: the whole pack, or only their ranges
    /// when they make up less than half of its `size` (`restore --only`, a few files of a big
    /// snapshot); see [`Repository::read_pack_ranges_into`]. Without a size, the whole pack.
    /// Returns the ranges read, `None` for the whole pack.
    pub fn read_pack_for<'e>(
        &self,
        id: &PackId,
        size: Option<u64>,
        entries: impl Iterator<Item = &'e pack::PackEntry>,
        out: &mut Vec<u8>,
    ) -> Result<Option<Vec<std::ops::Range<u64>>>> {
        match size.and_then(|size| pack::partial_ranges(size, entries).map(|r| (size, r))) {
            Some((size, ranges)) => self
                .read_pack_ranges_into(id, size, &ranges, out)
                .map(|()| Some(ranges)),
            None => self.read_pack_into(id, out).map(|()| None),
        }
    }

    /// Only the plaintext bytes `ranges` (ascending, disjoint) of a pack of `size` stored bytes,
    /// into `out` at their own offsets (zeros between): ranged reads of the pack's header, of the
    /// encrypted segments that hold the ranges and of its last segment, so a restore that needs a
    /// small part of a pack downloads little more than that part. The pack's id (a hash of all
    /// its bytes) cannot be checked this way; every segment's tag and, after this, every chunk's
    /// id still are.
    pub fn read_pack_ranges_into(
        &self,
        id: &PackId,
        size: u64,
        ranges: &[std::ops::Range<u64>],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let identity = self.secrets.data_identity("read data")?;
        let key = pack::key(id);
        let head = self.backend.get_range(&key, 0..size.min(4096))?;
        let Some(payload) = crypto::payload_start(&head) else {
            // A header this long is not one coffer writes; read it whole, which checks it all.
            return self.read_pack_into(id, out);
        };
        // The byte ranges to fetch beyond the head, merged where they touch.
        let want: Vec<std::ops::Range<u64>> = ranges
            .iter()
            .map(|r| crypto::sealed_range(payload, size, r))
            .chain(std::iter::once(crypto::last_segment(payload, size)))
            .map(|r| r.start.max(head.len() as u64)..r.end)
            .filter(|r| !r.is_empty())
            .collect();
        let mut parts = vec![(0, head)];
        for r in pack::merge_ranges(want, 0) {
            let bytes = self.backend.get_range(&key, r.clone())?;
            if bytes.len() as u64 != r.end - r.start {
                return Err(Error::corrupt(
                    &key,
                    format!(
                        "{} bytes where {} were asked for",
                        bytes.len(),
                        r.end - r.start
                    ),
                ));
            }
            parts.push((r.start, bytes));
        }
        crypto::decrypt_ranges(identity, size, parts, ranges, &key, out)
    }

    /// Stores a few chunks the index lacks in one new pack and indexes it; returns their ids.
    /// For small generated items (crafted trees in tests, metadata); backups use the archiver.
    pub fn store_chunks(&self, index: &Index, chunks: &[(Tag, Vec<u8>)]) -> Result<Vec<ChunkId>> {
        let mut w = pack::PackWriter::new(&self.secrets.data_recipient, 1 << 20);
        let mut ids = vec![];
        let mut seen = std::collections::HashSet::new();
        for (tag, data) in chunks {
            let id = ChunkId(self.secrets.id(*tag, data));
            ids.push(id);
            if !index.reuse(&id) && seen.insert(id) {
                w.add(
                    id,
                    *tag,
                    &pack::encode_chunk(data, self.config.compression),
                    data.len(),
                );
            }
        }
        if !w.is_empty() {
            let entry = self.upload_pack(w.finish())?;
            self.save_index(&IndexFile { packs: vec![entry] })?;
        }
        Ok(ids)
    }

    // ----- snapshots -----

    /// Saves a snapshot, signed by this key (a copy's signature is replaced by this key's).
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        use ed25519_dalek::Signer;
        let mut snap = snap.clone();
        snap.signature = None;
        if let Some(sk) = &self.secrets.signing {
            // Sign what a reader will see: the snapshot as parsed back from its JSON (a float
            // such as `duration_secs` must not differ by a rounding between writer and reader).
            let as_read: Snapshot =
                serde_json::from_slice(&serde_json::to_vec(&snap).expect("snapshot serializes"))
                    .expect("a snapshot parses back");
            let sig = sk.sign(&as_read.signed_bytes());
            snap.signature = Some(snapshot::Signature {
                key: hex::encode(sk.verifying_key().to_bytes()),
                sig: hex::encode(sig.to_bytes()),
            });
        }
        let (id, bytes) = self.seal_doc(Tag::Snapshot, &snap, &self.secrets.data_recipient);
        let id = SnapshotId(id);
        self.backend.put(&snapshot::key(&id), bytes)?;
        Ok(id)
    }

    /// Removes a snapshot (forget); the data only it used stays until prune.
    pub fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
        Ok(self.backend.delete(&snapshot::key(id))?)
    }

    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let identity = self.secrets.data_identity("read snapshots")?;
        let name = snapshot::key(id);
        let stored = self.backend.get(&name)?;
        self.open_doc(Tag::Snapshot, &id.0, &stored, identity, &name)
    }

    pub fn list_snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .backend
            .list("snapshots/")?
            .iter()
            .filter_map(|o| o.key.rsplit('/').next()?.parse().ok())
            .collect())
    }

    /// Every snapshot, oldest first; damaged ones come back as errors in place.
    pub fn list_snapshots(&self) -> Result<Vec<(SnapshotId, Result<Snapshot>)>> {
        self.secrets.data_identity("list snapshots")?;
        let ids = self.list_snapshot_ids()?;
        let loaded = parallel_map(&ids, |id| self.load_snapshot(id));
        let mut out: Vec<_> = ids.into_iter().zip(loaded).collect();
        out.sort_by_key(|(id, s)| (s.as_ref().map(|s| s.time).ok(), *id));
        Ok(out)
    }

    /// Finds a snapshot by id prefix, or `latest`.
    pub fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        self.secrets.data_identity("read snapshots")?;
        if spec == "latest" {
            // Only a snapshot a trusted key wrote can be `latest`: a write-only key could
            // otherwise put its own forgery first.
            let strict = self.signatures_required();
            let all = self.list_snapshots()?;
            return all
                .into_iter()
                .rev()
                .filter_map(|(id, s)| s.ok().map(|s| (id, s)))
                .find(|(_, s)| self.writer(s).counts(strict))
                .ok_or_else(|| Error::NoSuchSnapshot(spec.into()));
        }
        match by_prefix(self.list_snapshot_ids()?.into_iter(), spec, |id| {
            id.to_hex()
        })
        .as_slice()
        {
            [id] => Ok((*id, self.load_snapshot(id)?)),
            [] => Err(Error::NoSuchSnapshot(spec.into())),
            _ => Err(Error::AmbiguousSnapshot(spec.into())),
        }
    }
}

/// The items whose id (in hex) starts with `prefix`: one is a match, none or several are for
/// the caller to name.
fn by_prefix<T>(
    items: impl Iterator<Item = T>,
    prefix: &str,
    hex: impl Fn(&T) -> String,
) -> Vec<T> {
    items.filter(|i| hex(i).starts_with(prefix)).collect()
}

/// Reads trees (and single chunks) through a cache of decrypted packs.
pub struct ChunkReader<'a> {
    repo: &'a Repository,
    index: &'a Index,
    cache: Mutex<HashMap<PackId, Arc<Vec<u8>>>>,
    capacity: usize,
}

impl<'a> ChunkReader<'a> {
    /// A reader caching up to 64 decrypted packs: right for trees, whose packs are small.
    pub fn new(repo: &'a Repository, index: &'a Index) -> Self {
        Self::with_capacity(repo, index, 64)
    }

    /// A reader caching up to `packs` decrypted packs (data packs are 16 MiB each).
    pub fn with_capacity(repo: &'a Repository, index: &'a Index, packs: usize) -> Self {
        ChunkReader {
            repo,
            index,
            cache: Mutex::new(HashMap::new()),
            capacity: packs.max(1),
        }
    }

    /// A chunk, verified. When its place fails (a damaged or missing pack), each other place
    /// the index knows is tried before the first error is returned.
    pub fn chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let (pack_id, entry) = self
            .index
            .get(id)
            .ok_or_else(|| Error::MissingChunk { chunk: id.to_hex() })?;
        match self.chunk_at(&pack_id, &entry) {
            Ok(c) => Ok(c),
            Err(e) => self.chunk_elsewhere(id, e),
        }
    }

    /// The chunk from one of its alternate places, after its own place failed with `first`.
    pub fn chunk_elsewhere(&self, id: &ChunkId, first: Error) -> Result<Vec<u8>> {
        for (pack_id, entry) in self.index.alternates(id) {
            if let Ok(c) = self.chunk_at(&pack_id, &entry) {
                tracing::warn!(
                    "chunk {} read from its copy in {} ({first})",
                    id.short(),
                    pack::key(&pack_id)
                );
                return Ok(c);
            }
        }
        Err(first)
    }

    fn chunk_at(&self, pack_id: &PackId, entry: &pack::PackEntry) -> Result<Vec<u8>> {
        let cached = self.cache.lock().unwrap().get(pack_id).cloned();
        let plain = match cached {
            Some(p) => p,
            None => {
                let p = Arc::new(self.repo.read_pack(pack_id)?);
                let mut cache = self.cache.lock().unwrap();
                // Tree packs are small and read again and again; data packs are big, keep few.
                if cache.len() >= self.capacity {
                    cache.clear();
                }
                cache.insert(*pack_id, p.clone());
                p
            }
        };
        pack::extract(&plain, entry, &self.repo.secrets, pack_id)
    }

    pub fn index(&self) -> &Index {
        self.index
    }

    pub fn tree(&self, id: &ChunkId) -> Result<Tree> {
        let data = self.chunk(id)?;
        serde_json::from_slice(&data)
            .map_err(|e| Error::corrupt(format!("tree {}", id.short()), e.to_string()))
    }
}
