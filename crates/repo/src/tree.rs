//! Trees: one JSON document per directory, stored as a chunk of type `tree`.
//!
//! A snapshot's root tree holds one entry per captured item (a backed-up folder or file, later a
//! database dump or a bucket). Entries keep what `tar czfp` keeps: type, mode, owner, times,
//! symlink targets, device numbers, hard-link identity and size. Names and symlink targets that
//! are not UTF-8 are kept byte for byte in a hex field beside a lossy display form.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use serde::{Deserialize, Serialize};

use crate::id::ChunkId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Chardev,
    Blockdev,
    Socket,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The name, or its lossy UTF-8 form when `name_raw` is set.
    pub name: String,
    /// Hex of the name's bytes, present only when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_raw: Option<String>,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits and set-id/sticky bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    #[serde(default)]
    pub size: u64,
    /// File content, chunk by chunk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<ChunkId>,
    /// A directory's own tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<ChunkId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// For a file with more than one link: (device, inode) identifying its link group within the
    /// snapshot, so restore links the copies again instead of writing them twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardlink: Option<(u64, u64)>,
}

fn encode(b: &OsStr) -> (String, Option<String>) {
    match std::str::from_utf8(b.as_bytes()) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            b.to_string_lossy().into_owned(),
            Some(hex::encode(b.as_bytes())),
        ),
    }
}

fn decode(s: &str, raw: &Option<String>) -> Option<OsString> {
    match raw {
        None => Some(OsString::from(s)),
        Some(h) => hex::decode(h).ok().map(OsString::from_vec),
    }
}

impl Node {
    pub fn set_name(&mut self, name: &OsStr) {
        (self.name, self.name_raw) = encode(name);
    }

    /// The exact name; `None` if the stored hex is malformed.
    pub fn os_name(&self) -> Option<OsString> {
        decode(&self.name, &self.name_raw)
    }

    pub fn set_target(&mut self, target: &OsStr) {
        let (t, raw) = encode(target);
        self.target = Some(t);
        self.target_raw = raw;
    }

    pub fn os_target(&self) -> Option<OsString> {
        self.target
            .as_ref()
            .and_then(|t| decode(t, &self.target_raw))
    }

    pub fn new(kind: NodeKind) -> Self {
        Node {
            name: String::new(),
            name_raw: None,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            size: 0,
            content: vec![],
            subtree: None,
            target: None,
            target_raw: None,
            rdev: None,
            hardlink: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("tree serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_names_round_trip() {
        let mut n = Node::new(NodeKind::File);
        let raw = OsStr::from_bytes(b"caf\xe9.txt");
        n.set_name(raw);
        assert!(n.name_raw.is_some());
        let t = Tree { nodes: vec![n] };
        let back: Tree = serde_json::from_slice(&t.to_bytes()).unwrap();
        assert_eq!(back.nodes[0].os_name().unwrap(), raw);
    }
}
