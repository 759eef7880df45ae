//! Snapshots (`snapshots/<id>`): one per backup, naming the root tree and saying what was taken.
//!
//! Stored as zstd-compressed JSON, age-encrypted to the data recipient (file names and paths are
//! data), named by the keyed BLAKE3 of the JSON.

use serde::{Deserialize, Serialize};

use crate::id::{ChunkId, SnapshotId};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub time: chrono::DateTime<chrono::Utc>,
    pub hostname: String,
    #[serde(default)]
    pub username: String,
    /// The sources as given, made absolute. Each is a top-level entry of `tree`.
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub tree: ChunkId,
    /// The app this snapshot captured, for app backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    pub program_version: String,
}

/// What the backup that made a snapshot did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub dirs: u64,
    pub bytes_read: u64,
    /// Size of everything captured (unchanged files included).
    pub total_bytes: u64,
    pub chunks_added: u64,
    /// Stored bytes the backup added after dedup and compression.
    pub bytes_added: u64,
    pub duration_secs: f64,
    pub errors: u64,
}

pub fn key(id: &SnapshotId) -> String {
    format!("snapshots/{}", id.to_hex())
}
