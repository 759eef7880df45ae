//! The repository's secrets and what is done with them: keyed ids and age encryption.
//!
//! A repository has three secrets, generated once at `init` and kept in key files:
//! - the *chunk-id key* (32 bytes): keys BLAKE3 for every chunk, index and snapshot id, so ids
//!   reveal nothing about content and nobody holding only the storage can forge an object;
//! - the *chunker seed*: perturbs FastCDC's gear table, so chunk boundaries do not leak which
//!   well-known files a repository holds (the unkeyed gear hash allows that fingerprinting);
//! - the *index identity* and the *data identity*, age X25519 key pairs. Indexes are encrypted to
//!   the index recipient, packs and snapshots to the data recipient.
//!
//! A write-only key carries the data *recipient* instead of the data identity.

use std::io::{Read, Write};
use std::str::FromStr;

use age::secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What an id is computed over: the type tag keeps a data chunk and a tree with the same bytes
/// apart, and an index from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tag {
    Data,
    Tree,
    Index,
    Snapshot,
    Mark,
}

impl Tag {
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Tag::Data => b"coffer:data\0",
            Tag::Tree => b"coffer:tree\0",
            Tag::Index => b"coffer:index\0",
            Tag::Snapshot => b"coffer:snapshot\0",
            Tag::Mark => b"coffer:mark\0",
        }
    }
}

fn new_signing_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

/// The repository secrets as one unlocked key holds them.
#[derive(Clone)]
pub struct Secrets {
    pub id_key: [u8; 32],
    pub chunker_seed: u64,
    pub index_identity: age::x25519::Identity,
    pub data_recipient: age::x25519::Recipient,
    /// `None` for a write-only key.
    pub data_identity: Option<age::x25519::Identity>,
    /// This key's own signing key: every snapshot it writes carries its signature, so a full key
    /// can tell who wrote a snapshot. `None` for keys made before snapshots were signed.
    pub signing: Option<ed25519_dalek::SigningKey>,
}

/// The serialized form inside a key file (before it is age-encrypted).
#[derive(Serialize, Deserialize)]
pub struct SecretsFile {
    pub id_key: String,
    pub chunker_seed: u64,
    pub index_identity: String,
    pub data_recipient: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_identity: Option<String>,
    /// Hex of the ed25519 signing key (absent in key files made before snapshots were signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
}

impl Secrets {
    pub fn generate() -> Self {
        let data_identity = age::x25519::Identity::generate();
        let mut id_key = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut id_key);
        Secrets {
            id_key,
            chunker_seed: rand::random(),
            index_identity: age::x25519::Identity::generate(),
            data_recipient: data_identity.to_public(),
            data_identity: Some(data_identity),
            signing: Some(new_signing_key()),
        }
    }

    /// These secrets for a new key of their own: the same repository secrets, a fresh signing
    /// key (each key signs as itself).
    pub fn for_new_key(&self, write_only: bool) -> Self {
        Secrets {
            data_identity: if write_only {
                None
            } else {
                self.data_identity.clone()
            },
            signing: Some(new_signing_key()),
            ..self.clone()
        }
    }

    /// The key that authenticates signer records in key files: derived from the data identity,
    /// so only a full key can vouch for a signer (a write-only key can write key files too).
    pub fn trust_key(&self) -> Option<[u8; 32]> {
        self.data_identity.as_ref().map(|i| {
            blake3::derive_key(
                "coffer 2026 signer records v1",
                i.to_string().expose_secret().as_bytes(),
            )
        })
    }

    pub fn is_write_only(&self) -> bool {
        self.data_identity.is_none()
    }

    /// The write-only subset of these secrets (same signing key; see [`Secrets::for_new_key`]
    /// for a key of its own).
    pub fn write_only(&self) -> Self {
        Secrets {
            data_identity: None,
            ..self.clone()
        }
    }

    /// The keyed id of `data` of kind `tag`.
    pub fn id(&self, tag: Tag, data: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.id_key);
        h.update(tag.bytes());
        h.update(data);
        *h.finalize().as_bytes()
    }

    pub fn data_identity(&self, action: &'static str) -> Result<&age::x25519::Identity> {
        self.data_identity
            .as_ref()
            .ok_or(Error::WriteOnly { action })
    }

    pub fn to_file(&self) -> SecretsFile {
        SecretsFile {
            id_key: hex::encode(self.id_key),
            chunker_seed: self.chunker_seed,
            index_identity: self.index_identity.to_string().expose_secret().to_string(),
            data_recipient: self.data_recipient.to_string(),
            data_identity: self
                .data_identity
                .as_ref()
                .map(|i| i.to_string().expose_secret().to_string()),
            signing_key: self.signing.as_ref().map(|k| hex::encode(k.to_bytes())),
        }
    }

    pub fn from_file(f: &SecretsFile) -> std::result::Result<Self, String> {
        let mut id_key = [0u8; 32];
        hex::decode_to_slice(&f.id_key, &mut id_key).map_err(|e| format!("id_key: {e}"))?;
        let index_identity = age::x25519::Identity::from_str(&f.index_identity)
            .map_err(|e| format!("index_identity: {e}"))?;
        let data_recipient = age::x25519::Recipient::from_str(&f.data_recipient)
            .map_err(|e| format!("data_recipient: {e}"))?;
        let data_identity = match &f.data_identity {
            Some(s) => Some(
                age::x25519::Identity::from_str(s).map_err(|e| format!("data_identity: {e}"))?,
            ),
            None => None,
        };
        let signing = match &f.signing_key {
            Some(h) => {
                let mut b = [0u8; 32];
                hex::decode_to_slice(h, &mut b).map_err(|e| format!("signing_key: {e}"))?;
                Some(ed25519_dalek::SigningKey::from_bytes(&b))
            }
            None => None,
        };
        Ok(Secrets {
            id_key,
            chunker_seed: f.chunker_seed,
            index_identity,
            data_recipient,
            data_identity,
            signing,
        })
    }
}

/// An age writer for one object, to `recipient`.
pub fn encryptor<W: Write>(
    recipient: &dyn age::Recipient,
    out: W,
) -> std::io::Result<age::stream::StreamWriter<W>> {
    let enc = age::Encryptor::with_recipients(std::iter::once(recipient))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    enc.wrap_output(out)
}

/// Encrypts a whole buffer to `recipient`.
pub fn encrypt(recipient: &dyn age::Recipient, plaintext: &[u8]) -> Vec<u8> {
    let mut w = encryptor(recipient, Vec::with_capacity(plaintext.len() + 256))
        .expect("writing to memory cannot fail");
    w.write_all(plaintext)
        .expect("writing to memory cannot fail");
    w.finish().expect("writing to memory cannot fail")
}

/// Decrypts a whole age object; `object` names it in the error.
pub fn decrypt(identity: &dyn age::Identity, ciphertext: &[u8], object: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(ciphertext.len());
    decrypt_reader_into(identity, ciphertext, object, &mut out)?;
    Ok(out)
}

/// The plaintext of the age file `ciphertext`, as a reader (seekable when `ciphertext` is).
fn plaintext<R: Read>(
    identity: &dyn age::Identity,
    ciphertext: R,
    object: &str,
) -> Result<age::stream::StreamReader<R>> {
    age::Decryptor::new(ciphertext)
        .map_err(|e| Error::corrupt(object, format!("not an age file: {e}")))?
        .decrypt(std::iter::once(identity))
        .map_err(|e| Error::corrupt(object, format!("cannot decrypt: {e}")))
}

/// Decrypts an age stream into `out` (cleared first; a reused buffer): only the plaintext is
/// held.
pub fn decrypt_reader_into<R: Read>(
    identity: &dyn age::Identity,
    ciphertext: R,
    object: &str,
    out: &mut Vec<u8>,
) -> Result<()> {
    out.clear();
    plaintext(identity, ciphertext, object)?
        .read_to_end(out)
        .map_err(|e| Error::corrupt(object, format!("authentication failed: {e}")))?;
    Ok(())
}

/// age's STREAM: plaintext in 64 KiB segments, each sealed with a 16-byte tag, after the header
/// and a 16-byte nonce. Any segment can be decrypted on its own, which is what lets a restore
/// fetch only the parts of a pack it needs.
const SEGMENT: u64 = 64 * 1024;
const SEALED_SEGMENT: u64 = SEGMENT + 16;
const NONCE_LEN: u64 = 16;

/// Where an age file's segments begin (after its header and nonce), from its first bytes; `None`
/// when the header does not end within them.
pub fn payload_start(head: &[u8]) -> Option<u64> {
    // The header's last line is "--- " and its MAC; stanza lines start "-> " or are base64.
    let mac = head.windows(5).position(|w| w == b"\n--- ")? + 5;
    let end = mac + head[mac..].iter().position(|b| *b == b'\n')? + 1;
    Some(end as u64 + NONCE_LEN)
}

/// The stored bytes of an age file of `size` bytes, its segments starting at `payload`, that
/// hold the plaintext bytes `range`.
pub fn sealed_range(payload: u64, size: u64, range: &std::ops::Range<u64>) -> std::ops::Range<u64> {
    let first = range.start / SEGMENT;
    let last = range.end.saturating_sub(1).max(range.start) / SEGMENT;
    (payload + first * SEALED_SEGMENT).min(size)..(payload + (last + 1) * SEALED_SEGMENT).min(size)
}

/// The stored bytes of an age file's last segment, which a reader decrypts to learn (and
/// authenticate) the plaintext's length before it seeks.
pub fn last_segment(payload: u64, size: u64) -> std::ops::Range<u64> {
    let sealed = size.saturating_sub(payload);
    let before = sealed.saturating_sub(1) / SEALED_SEGMENT;
    (payload + before * SEALED_SEGMENT).min(size)..size
}

/// An age file of which only some byte ranges were fetched: reading outside them is an error.
struct Parts<B> {
    size: u64,
    pos: u64,
    parts: Vec<(u64, B)>,
}

impl<B: AsRef<[u8]>> Read for Parts<B> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let pos = self.pos;
        let (start, bytes) = self
            .parts
            .iter()
            .map(|(s, b)| (*s, b.as_ref()))
            .find(|(s, b)| *s <= pos && pos < s + b.len() as u64)
            .ok_or_else(|| std::io::Error::other(format!("byte {pos} was not fetched")))?;
        let from = &bytes[(pos - start) as usize..];
        let n = from.len().min(buf.len());
        buf[..n].copy_from_slice(&from[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<B> std::io::Seek for Parts<B> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let at = match to {
            std::io::SeekFrom::Start(n) => Some(n),
            std::io::SeekFrom::End(d) => self.size.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = at.ok_or_else(|| std::io::Error::other("seek before the start"))?;
        Ok(self.pos)
    }
}

/// The plaintext bytes `ranges` (ascending, disjoint) of an age file of `size` bytes, of which
/// `parts` holds the header (with the nonce), the last segment and the segments holding the
/// ranges (see [`payload_start`], [`sealed_range`], [`last_segment`]). `out` is the plaintext
/// up to the last range's end, with zeros between the ranges. Every segment read is
/// authenticated; the length too, by the last segment.
pub fn decrypt_ranges<B: AsRef<[u8]>>(
    identity: &dyn age::Identity,
    size: u64,
    parts: Vec<(u64, B)>,
    ranges: &[std::ops::Range<u64>],
    object: &str,
    out: &mut Vec<u8>,
) -> Result<()> {
    use std::io::Seek;
    out.clear();
    let mut r = plaintext(
        identity,
        Parts {
            size,
            pos: 0,
            parts,
        },
        object,
    )?;
    let end = ranges.last().map(|r| r.end).unwrap_or(0);
    out.resize(end as usize, 0);
    for range in ranges {
        r.seek(std::io::SeekFrom::Start(range.start))
            .and_then(|_| r.read_exact(&mut out[range.start as usize..range.end as usize]))
            .map_err(|e| Error::corrupt(object, format!("authentication failed: {e}")))?;
    }
    Ok(())
}

/// The scrypt work factor (log2 N) new passphrase keys get: 2^16 with r = 8 takes 64 MiB and
/// about 0.2 s on the machines coffer was measured on. age's own default calibrates to a second
/// of CPU, which is 2^19–2^20 and 512 MiB–1 GiB on a fast core: more memory than the small
/// servers coffer's apps run on have (restic caps its KDF at 60 MiB). A key file stays a plain
/// age file that the stock `age` tool decrypts with the passphrase.
pub const DEFAULT_KDF_LOG_N: u8 = 16;

/// The memory scrypt takes at work factor 2^`log_n` (r = 8: 1 KiB per unit of N), in MiB.
pub fn kdf_mib(log_n: u8) -> u64 {
    (1024u64 << log_n) >> 20
}

/// A passphrase recipient with an explicit scrypt work factor (log2 N), [`DEFAULT_KDF_LOG_N`]
/// unless given.
pub fn passphrase_recipient(
    passphrase: &SecretString,
    log_n: Option<u8>,
) -> age::scrypt::Recipient {
    let mut r = age::scrypt::Recipient::new(passphrase.clone());
    r.set_work_factor(log_n.unwrap_or(DEFAULT_KDF_LOG_N));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_key_and_tag() {
        let a = Secrets::generate();
        let b = Secrets::generate();
        assert_ne!(a.id(Tag::Data, b"x"), b.id(Tag::Data, b"x"));
        assert_ne!(a.id(Tag::Data, b"x"), a.id(Tag::Tree, b"x"));
        assert_eq!(a.id(Tag::Data, b"x"), a.id(Tag::Data, b"x"));
        let big = vec![3u8; 1 << 20];
        let mut h = blake3::Hasher::new_keyed(&a.id_key);
        h.update(Tag::Data.bytes());
        h.update(&big);
        assert_eq!(a.id(Tag::Data, &big), *h.finalize().as_bytes());
    }

    #[test]
    fn secrets_round_trip_and_write_only() {
        let s = Secrets::generate();
        let f = serde_json::to_string(&s.to_file()).unwrap();
        let back = Secrets::from_file(&serde_json::from_str(&f).unwrap()).unwrap();
        assert_eq!(back.id_key, s.id_key);
        let wo = s.write_only();
        assert!(wo.is_write_only());
        assert!(wo.to_file().data_identity.is_none());
        assert!(matches!(
            wo.data_identity("read"),
            Err(Error::WriteOnly { .. })
        ));
    }

    #[test]
    fn encrypt_round_trip_and_tamper() {
        let s = Secrets::generate();
        let ct = encrypt(&s.data_recipient, b"hello world");
        let id = s.data_identity.as_ref().unwrap();
        assert_eq!(decrypt(id, &ct, "x").unwrap(), b"hello world");
        let mut bad = ct.clone();
        let n = bad.len() - 5;
        bad[n] ^= 1;
        assert!(matches!(decrypt(id, &bad, "x"), Err(Error::Corrupt { .. })));
    }

    /// Reading plaintext ranges from the sealed segments that hold them gives the same bytes as
    /// decrypting the whole file, at segment edges and in the last segment; a damaged segment in
    /// a range is an error, and one outside the ranges is never read.
    #[test]
    fn ranges_decrypt_from_their_segments_alone() {
        let s = Secrets::generate();
        let id = s.data_identity("test").unwrap();
        for len in [1u64, 65_535, 65_536, 65_537, 300_000, 4 * 65_536] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            let sealed = encrypt(&s.data_recipient, &plain);
            let size = sealed.len() as u64;
            let payload = payload_start(&sealed[..sealed.len().min(4096)]).unwrap();
            let cases: Vec<Vec<std::ops::Range<u64>>> = vec![
                vec![0..len],
                vec![0..1],
                vec![len - 1..len],
                vec![0..len.min(10), len / 2..len / 2 + 1, len - 1..len],
                vec![65_530.min(len - 1)..65_540.min(len)],
            ];
            for ranges in cases {
                let ranges: Vec<_> = ranges.into_iter().filter(|r| !r.is_empty()).collect();
                let mut fetch: Vec<std::ops::Range<u64>> = ranges
                    .iter()
                    .map(|r| sealed_range(payload, size, r))
                    .collect();
                fetch.push(last_segment(payload, size));
                fetch.push(0..payload);
                let parts: Vec<(u64, Vec<u8>)> = fetch
                    .iter()
                    .map(|r| (r.start, sealed[r.start as usize..r.end as usize].to_vec()))
                    .collect();
                let mut out = vec![];
                decrypt_ranges(id, size, parts.clone(), &ranges, "x", &mut out).unwrap();
                for r in &ranges {
                    let r = r.start as usize..r.end as usize;
                    assert_eq!(out[r.clone()], plain[r.clone()], "len {len} range {r:?}");
                }
                // A flipped byte inside a fetched segment of the first range fails it.
                let mut bad = parts.clone();
                let at = sealed_range(payload, size, &ranges[0]);
                let part = bad.iter_mut().find(|p| p.0 == at.start).unwrap();
                let i = part.1.len() / 2;
                part.1[i] ^= 1;
                assert!(decrypt_ranges(id, size, bad, &ranges, "x", &mut out).is_err());
            }
        }
    }
}
