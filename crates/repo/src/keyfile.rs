//! Key files (`keys/<id>`): the repository secrets, age-encrypted to a passphrase or to recipients.
//!
//! The file is JSON so `coffer key list` can show what each key is without opening it; the
//! secrets themselves are one ASCII-armored age file inside it, which the stock `age` tool
//! decrypts (docs/FORMAT.md, "Recovery").

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::str::FromStr;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use age::secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::crypto::{self, Secrets, SecretsFile};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Passphrase,
    Recipients,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    pub repository: String,
    pub created: chrono::DateTime<chrono::Utc>,
    pub host: String,
    pub kind: KeyKind,
    pub write_only: bool,
    /// The [`SecretsFile`] JSON, age-encrypted and armored.
    pub secrets: String,
    /// Who this key signs snapshots as, vouched for by the full key that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<SignerRecord>,
}

/// A key's public signing key and the host it writes for, with a MAC only a full key can make
/// or check ([`crate::crypto::Secrets::trust_key`]): a write-only key can write key files, but
/// cannot vouch for a signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerRecord {
    /// ed25519 public key, hex.
    pub public: String,
    /// The host whose snapshots this key writes; a write-only key may write for no other.
    pub host: String,
    pub write_only: bool,
    /// Keyed BLAKE3 (the trust key) of the fields above, hex.
    pub mac: String,
}

impl SignerRecord {
    fn digest(public: &str, host: &str, write_only: bool, trust: &[u8; 32]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(trust);
        for part in [public.as_bytes(), b"\0", host.as_bytes(), b"\0"] {
            h.update(part);
        }
        h.update(&[write_only as u8]);
        h.finalize()
    }

    pub fn new(
        public: &ed25519_dalek::VerifyingKey,
        host: &str,
        write_only: bool,
        trust: &[u8; 32],
    ) -> Self {
        let public = hex::encode(public.to_bytes());
        let mac = Self::digest(&public, host, write_only, trust)
            .to_hex()
            .to_string();
        SignerRecord {
            public,
            host: host.to_string(),
            write_only,
            mac,
        }
    }

    /// Whether a full key vouched for this record (constant-time comparison).
    pub fn verify(&self, trust: &[u8; 32]) -> bool {
        let Ok(mac) = blake3::Hash::from_hex(&self.mac) else {
            return false;
        };
        Self::digest(&self.public, &self.host, self.write_only, trust) == mac
    }
}

/// How a key file is (or is to be) protected.
pub enum Protector {
    Passphrase {
        passphrase: SecretString,
        log_n: Option<u8>,
    },
    Recipients(Vec<Box<dyn age::Recipient + Send>>),
}

/// What the user offers to open a repository with.
pub enum Unlocker {
    Passphrase(SecretString),
    Identities(Vec<Box<dyn age::Identity>>),
}

impl KeyFile {
    pub fn seal(repository: &str, secrets: &Secrets, protector: &Protector) -> Result<KeyFile> {
        let plain = serde_json::to_vec(&secrets.to_file()).expect("secrets serialize");
        let (kind, enc) = match protector {
            Protector::Passphrase { passphrase, log_n } => {
                let r = crypto::passphrase_recipient(passphrase, *log_n);
                (
                    KeyKind::Passphrase,
                    age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)),
                )
            }
            Protector::Recipients(rs) => (
                KeyKind::Recipients,
                age::Encryptor::with_recipients(
                    rs.iter().map(|r| r.as_ref() as &dyn age::Recipient),
                ),
            ),
        };
        let enc = enc.map_err(|e| Error::Invalid(format!("cannot encrypt the key: {e}")))?;
        let mut out = vec![];
        let armor = ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor).expect("memory");
        let mut w = enc.wrap_output(armor).expect("memory");
        w.write_all(&plain).expect("memory");
        w.finish().and_then(|a| a.finish()).expect("memory");
        Ok(KeyFile {
            version: 1,
            repository: repository.to_string(),
            created: chrono::Utc::now(),
            host: crate::hostname(),
            kind,
            write_only: secrets.is_write_only(),
            secrets: String::from_utf8(out).expect("armor is ASCII"),
            signer: None,
        })
    }

    /// The scrypt work factor (log2 N) of a passphrase key, read from its age header (`-> scrypt
    /// SALT LOG_N`); `None` for a key sealed to recipients, or a header that does not say.
    pub fn scrypt_log_n(&self) -> Option<u8> {
        if self.kind != KeyKind::Passphrase {
            return None;
        }
        let mut head = vec![0u8; 512];
        let mut r = ArmoredReader::new(self.secrets.as_bytes());
        let n = r.read(&mut head).ok()?;
        let text = String::from_utf8_lossy(&head[..n]);
        text.lines()
            .find_map(|l| l.strip_prefix("-> scrypt "))
            .and_then(|rest| rest.split_whitespace().nth(1)?.parse().ok())
    }

    /// Opens the key. `Ok(None)` means the unlocker does not fit this key (wrong passphrase, other
    /// identity); errors mean the key file itself is damaged.
    pub fn open(&self, unlocker: &Unlocker, object: &str) -> Result<Option<Secrets>> {
        let dec = age::Decryptor::new(ArmoredReader::new(self.secrets.as_bytes()))
            .map_err(|e| Error::corrupt(object, format!("not an age file: {e}")))?;
        let reader = match unlocker {
            Unlocker::Passphrase(p) => {
                if self.kind != KeyKind::Passphrase {
                    return Ok(None);
                }
                let id = age::scrypt::Identity::new(p.clone());
                dec.decrypt(std::iter::once(&id as &dyn age::Identity))
            }
            Unlocker::Identities(ids) => {
                if self.kind != KeyKind::Recipients {
                    return Ok(None);
                }
                dec.decrypt(ids.iter().map(|i| i.as_ref()))
            }
        };
        let mut reader = match reader {
            Ok(r) => r,
            Err(age::DecryptError::NoMatchingKeys) | Err(age::DecryptError::DecryptionFailed) => {
                return Ok(None)
            }
            Err(e) => return Err(Error::corrupt(object, format!("cannot open key: {e}"))),
        };
        let mut plain = vec![];
        reader
            .read_to_end(&mut plain)
            .map_err(|e| Error::corrupt(object, format!("key authentication failed: {e}")))?;
        let f: SecretsFile = serde_json::from_slice(&plain)
            .map_err(|e| Error::corrupt(object, format!("bad secrets: {e}")))?;
        Secrets::from_file(&f)
            .map(Some)
            .map_err(|e| Error::corrupt(object, e))
    }
}

/// Reads age identities (an age identity file or an unencrypted SSH private key).
pub fn load_identities(path: &Path) -> Result<Vec<Box<dyn age::Identity>>> {
    let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| {
        Error::Invalid(format!(
            "{}: not a usable identity file: {m}",
            path.display()
        ))
    };
    if data.starts_with(b"-----BEGIN") {
        let id = age::ssh::Identity::from_buffer(&data[..], Some(path.display().to_string()))
            .map_err(|e| bad(e.to_string()))?;
        if let age::ssh::Identity::Unsupported(k) = &id {
            return Err(bad(format!("unsupported SSH key ({k:?})")));
        }
        if matches!(id, age::ssh::Identity::Encrypted(_)) {
            return Err(bad(
                "passphrase-protected SSH keys are not supported; use an age identity".into(),
            ));
        }
        return Ok(vec![Box::new(id)]);
    }
    age::IdentityFile::from_buffer(&data[..])
        .map_err(|e| bad(e.to_string()))?
        .into_identities()
        .map_err(|e| bad(e.to_string()))
}

/// Parses recipients: one per line (or argument), age `age1…` or SSH public keys; `#` comments.
pub fn parse_recipients(
    lines: impl IntoIterator<Item = String>,
) -> Result<Vec<Box<dyn age::Recipient + Send>>> {
    let mut out: Vec<Box<dyn age::Recipient + Send>> = vec![];
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Ok(r) = age::x25519::Recipient::from_str(line) {
            out.push(Box::new(r));
        } else if let Ok(r) = age::ssh::Recipient::from_str(line) {
            out.push(Box::new(r));
        } else {
            return Err(Error::Invalid(format!(
                "'{line}' is not an age or SSH recipient"
            )));
        }
    }
    if out.is_empty() {
        return Err(Error::Invalid("no recipients given".into()));
    }
    Ok(out)
}

/// Reads a recipients file.
pub fn read_recipients_file(path: &Path) -> Result<Vec<String>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    std::io::BufReader::new(f)
        .lines()
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(path, e))
}
