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
}
