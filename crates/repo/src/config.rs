//! The `config` object: plain JSON that says how to read everything else.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;

pub const FORMAT_VERSION: u32 = 1;
pub const CONFIG_KEY: &str = "config";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Format version of the repository (this document describes version 1).
    pub version: u32,
    /// Random 32-byte repository id, hex. Key files name it, so a key from one repository is not
    /// mistaken for another's.
    pub id: String,
    pub chunker: ChunkerParams,
    /// A pack is closed once its plaintext reaches this many bytes.
    pub pack_size: u32,
    /// zstd level for chunks (1..=19); chunks that do not shrink are stored raw.
    pub compression: i32,
}

impl Config {
    pub fn new(chunker: ChunkerParams, pack_size: u32, compression: i32) -> Self {
        let id: [u8; 32] = rand::random();
        Config {
            version: FORMAT_VERSION,
            id: hex::encode(id),
            chunker,
            pack_size,
            compression,
        }
    }

    /// Reads a stored config object and checks every setting is one `init` could have written:
    /// the object is plaintext and unauthenticated, so a damaged or crafted one must fail here,
    /// naming itself, rather than deep inside the chunker or a pack writer.
    pub fn parse(raw: &[u8]) -> crate::Result<Config> {
        let bad = |m: String| crate::Error::corrupt(CONFIG_KEY, m);
        let c: Config = serde_json::from_slice(raw).map_err(|e| bad(e.to_string()))?;
        if c.version != FORMAT_VERSION {
            return Err(crate::Error::UnsupportedVersion {
                found: c.version,
                supported: FORMAT_VERSION,
            });
        }
        c.chunker.validate().map_err(bad)?;
        if !(1 << 16..=1 << 30).contains(&c.pack_size) {
            return Err(bad(format!("pack size {} is out of range", c.pack_size)));
        }
        if !(1..=22).contains(&c.compression) {
            return Err(bad(format!(
                "compression level {} is out of range 1..=22",
                c.compression
            )));
        }
        Ok(c)
    }
}
