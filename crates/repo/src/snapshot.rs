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
    /// The plugin that captured it; its wasm is stored in the repository too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginRecord>,
    /// Item paths an app capture added (`db/main.db`, `uploads`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
    /// What the plugin's capture returned (versions, row counts...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// For a copy: `<repository id>:<snapshot id>` of the snapshot first taken, so copying again
    /// (in either direction) finds it already there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    pub program_version: String,
    /// The writing key's ed25519 signature over this document without this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
    /// Fields this version does not know (written by a newer one): kept, so that they are
    /// signed and checked too, and survive a copy.
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Who signed a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The signing key's public key, hex.
    pub key: String,
    /// Hex.
    pub sig: String,
}

/// Who wrote a snapshot, as a full key can tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "writer", rename_all = "lowercase")]
pub enum Writer {
    /// Signed by a key a full key vouched for.
    Signed {
        key: String,
        host: String,
        write_only: bool,
    },
    /// No signature (written before snapshots were signed, or by a key made before), or a
    /// signature by a key no full key vouched for (one removed since, or an impostor).
    Unverified { reason: String },
    /// A signature that does not verify, or a write-only key writing for another host.
    Forged { reason: String },
}

impl Writer {
    /// Whether a snapshot so written counts as the repository's own: for `latest` and for copy
    /// (which signs each copy anew). Forged never; unverified only while no key signs
    /// (`signatures_required`), as in repositories made before snapshots were signed.
    pub fn counts(&self, signatures_required: bool) -> bool {
        match self {
            Writer::Signed { .. } => true,
            Writer::Unverified { .. } => !signatures_required,
            Writer::Forged { .. } => false,
        }
    }

    /// Why a snapshot does not count, for a message.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Writer::Signed { .. } => None,
            Writer::Unverified { reason } | Writer::Forged { reason } => Some(reason),
        }
    }
}

impl Snapshot {
    /// A snapshot of `paths` whose tree is `tree`, with nothing else said about it (no tags, no
    /// app, no summary), written by this version.
    pub fn new(
        time: chrono::DateTime<chrono::Utc>,
        hostname: String,
        paths: Vec<String>,
        tree: ChunkId,
    ) -> Snapshot {
        Snapshot {
            time,
            hostname,
            username: String::new(),
            paths,
            tags: vec![],
            tree,
            app: None,
            plugin: None,
            items: vec![],
            metadata: None,
            summary: None,
            original: None,
            program_version: env!("CARGO_PKG_VERSION").to_string(),
            signature: None,
            extra: Default::default(),
        }
    }

    /// The bytes a signature covers: the snapshot without its signature as canonical JSON
    /// (object keys sorted at every level), so that a version knowing more or fewer fields, or
    /// ordering them otherwise, signs and checks the same bytes.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut s = self.clone();
        s.signature = None;
        let v = serde_json::to_value(&s).expect("snapshot serializes");
        serde_json::to_vec(&canonical(v)).expect("JSON serializes")
    }
}

/// The plugin of an app snapshot, and where its wasm is stored (data chunks, like a file), so
/// a restore runs the very code that captured the data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginRecord {
    pub name: String,
    pub version: String,
    /// Plain BLAKE3 of the wasm, hex.
    pub blake3: String,
    pub size: u64,
    pub content: Vec<ChunkId>,
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
    /// Nodes in the snapshot's trees, a folder named twice counted twice (what a restore
    /// creates); walks over every path stop past it ([`crate::walk::Limits`]). 0: not counted
    /// (older snapshots).
    #[serde(default)]
    pub entries: u64,
}

pub fn key(id: &SnapshotId) -> String {
    format!("snapshots/{}", id.to_hex())
}

/// `v` with every object's keys in sorted order (whatever serde_json's map type keeps).
fn canonical(v: serde_json::Value) -> Canonical {
    match v {
        serde_json::Value::Object(m) => {
            Canonical::Object(m.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        serde_json::Value::Array(a) => Canonical::Array(a.into_iter().map(canonical).collect()),
        other => Canonical::Leaf(other),
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Canonical {
    Object(std::collections::BTreeMap<String, Canonical>),
    Array(Vec<Canonical>),
    Leaf(serde_json::Value),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot from a newer coffer, with a field this one does not know, keeps its signature
    /// valid here: unknown fields are kept and signed bytes do not depend on field order.
    #[test]
    fn signatures_cover_fields_this_version_does_not_know() {
        let doc = serde_json::json!({
            "time": "2026-11-24T03:00:00Z", "hostname": "h", "paths": ["/x"],
            "tree": ChunkId([1; 32]), "program_version": "9.0.0",
            "zzz_new": { "b": 1, "a": [2, { "y": 1, "x": 2 }] }, "aaa_new": true
        });
        let newer: Snapshot = serde_json::from_value(doc).unwrap();
        assert_eq!(newer.extra.len(), 2);
        let a = newer.signed_bytes();
        // Round trip through this version's struct: the same bytes.
        let again: Snapshot = serde_json::from_slice(&serde_json::to_vec(&newer).unwrap()).unwrap();
        assert_eq!(again.signed_bytes(), a);
        let text = String::from_utf8(a).unwrap();
        // Floats survive the round trip exactly (serde_json's float_roundtrip).
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = f64::from_bits(state >> 2) % 1e6;
            let back: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x}");
        }
        assert!(text.find("\"aaa_new\"").unwrap() < text.find("\"hostname\"").unwrap());
        assert!(text.contains(r#"{"x":2,"y":1}"#), "{text}");
    }
}
