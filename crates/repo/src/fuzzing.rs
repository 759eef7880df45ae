//! Entry points for the fuzzers in `fuzz/` (cargo fuzz): one per parser of bytes an attacker
//! may write into a repository. A write-only key can seal any plaintext it likes, so these take
//! the plaintext that decryption would hand on and drive it through the code that reads it, as
//! restore, check and prune would. None may panic, abort or allocate without bound; each
//! returns normally whatever the input. `cargo test` replays the corpora in `fuzz/corpus/`
//! through them (`corpora_replay`), so what a fuzzer once found stays fixed.

use std::sync::OnceLock;

use crate::crypto::{Secrets, Tag};
use crate::id::{ChunkId, PackId};
use crate::index::{Index, IndexFile};
use crate::keyfile::{KeyFile, Unlocker};
use crate::snapshot::Snapshot;
use crate::tree::Tree;
use crate::walk::Limits;

fn secrets() -> &'static Secrets {
    static S: OnceLock<Secrets> = OnceLock::new();
    S.get_or_init(Secrets::generate)
}

/// A pack's plaintext: the table of contents, then every chunk it names, decoded and verified.
pub fn pack(data: &[u8]) {
    let Ok(toc) = crate::pack::read_toc(data, "fuzz") else {
        return;
    };
    let mut out = vec![];
    for e in toc.iter().take(10_000) {
        let _ = crate::pack::extract_into(data, e, secrets(), &PackId([0; 32]), &mut out);
    }
}

/// An index object's plaintext, merged into an index and looked up.
pub fn index(data: &[u8]) {
    let Ok(f) = serde_json::from_slice::<IndexFile>(data) else {
        return;
    };
    let mut index = Index::default();
    index.add_file(&f);
    index.add_file(&f);
    for p in &f.packs {
        for c in &p.chunks {
            let _ = index.get(&c.id);
            let _ = index.alternates(&c.id);
        }
    }
    let _ = index.alternate_places().count();
}

/// A snapshot's plaintext.
pub fn snapshot(data: &[u8]) {
    if let Ok(s) = serde_json::from_slice::<Snapshot>(data) {
        let _ = Limits::of(&s);
        let _ = serde_json::to_vec(&s);
        let _ = s.signed_bytes();
    }
}

/// A tree's plaintext, every node read as restore reads it.
pub fn tree(data: &[u8]) {
    let Ok(t) = serde_json::from_slice::<Tree>(data) else {
        return;
    };
    for n in &t.nodes {
        let _ = n.os_name();
        let _ = n.os_target();
        let _: Vec<&ChunkId> = n.content.iter().collect();
    }
    let _ = t.to_bytes();
}

/// A key file, opened with an identity it was not sealed to (the age parser and the armor).
pub fn keyfile(data: &[u8]) {
    static ID: OnceLock<age::x25519::Identity> = OnceLock::new();
    let Ok(f) = serde_json::from_slice::<KeyFile>(data) else {
        return;
    };
    let id = ID.get_or_init(age::x25519::Identity::generate).clone();
    let _ = f.open(&Unlocker::Identities(vec![Box::new(id)]), "fuzz");
}

/// A repository's `config` object, as every command reads it first.
pub fn config(data: &[u8]) {
    let _ = crate::config::Config::parse(data);
}

/// A sealed chunk frame of each kind, for seeding.
#[doc(hidden)]
pub fn seed_pack() -> Vec<u8> {
    let mut w = crate::pack::PackWriter::new(&secrets().data_recipient, 1 << 16);
    for (tag, text) in [
        (Tag::Data, &b"hello"[..]),
        (Tag::Tree, &b"{\"nodes\":[]}"[..]),
    ] {
        let id = ChunkId(secrets().id(tag, text));
        w.add(id, tag, &crate::pack::encode_chunk(text, 3), text.len());
    }
    let sealed = w.finish();
    let identity = secrets().data_identity.as_ref().expect("full secrets");
    crate::pack::open(&sealed.id, &sealed.bytes, identity).expect("own pack opens")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `fuzz/corpus/<target>/` through its target: what the fuzzers kept.
    #[test]
    fn corpora_replay() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        type Target = (&'static str, fn(&[u8]));
        let targets: [Target; 6] = [
            ("pack", pack),
            ("index", index),
            ("snapshot", snapshot),
            ("tree", tree),
            ("keyfile", keyfile),
            ("config", config),
        ];
        let mut n = 0;
        for (name, f) in targets {
            let dir = root.join(name);
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for e in entries {
                let data = std::fs::read(e.unwrap().path()).unwrap();
                f(&data);
                n += 1;
            }
        }
        assert!(n >= 6, "the corpora are missing");
    }

    /// `cargo test -p coffer-repo --lib write_seeds -- --ignored` writes one valid input per
    /// target into `fuzz/corpus/` (the fuzzers start from these).
    #[test]
    #[ignore = "writes the fuzz corpora's seeds"]
    fn write_seeds() {
        use crate::keyfile::Protector;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        let toc = crate::pack::read_toc(&seed_pack(), "seed").unwrap();
        let index = IndexFile {
            packs: vec![crate::index::IndexPack {
                id: PackId([7; 32]),
                size: 300,
                chunks: toc.clone(),
            }],
        };
        let leaf = serde_json::json!({ "nodes": [
            { "name": "a.db", "type": "file", "mode": 420, "uid": 0, "gid": 0, "mtime_ns": 1, "size": 5, "content": [toc[0].id] },
            { "name": "d", "type": "dir", "mode": 493, "uid": 0, "gid": 0, "mtime_ns": 1, "subtree": toc[1].id },
            { "name": "l", "type": "symlink", "mode": 511, "uid": 0, "gid": 0, "mtime_ns": 1, "target": "../x" },
            { "name": "caf\u{fffd}", "name_raw": "636166e9", "type": "fifo", "mode": 420, "uid": 0, "gid": 0, "mtime_ns": 1 }
        ]});
        let snap = serde_json::json!({
            "time": "2026-11-24T03:00:00Z", "hostname": "h", "paths": ["/srv/x"], "tree": toc[1].id,
            "app": "xianyu", "items": ["db/a.db"], "metadata": { "rows": 3 },
            "plugin": { "name": "xianyu", "version": "0.1.0", "blake3": "00", "size": 5, "content": [toc[0].id] },
            "summary": { "files_new": 1, "files_changed": 0, "files_unchanged": 0, "dirs": 1, "bytes_read": 5,
                         "total_bytes": 5, "chunks_added": 2, "bytes_added": 300, "duration_secs": 0.1, "errors": 0, "entries": 4 },
            "program_version": "0.1.0"
        });
        let key = KeyFile::seal(
            "r",
            secrets(),
            &Protector::Recipients(vec![Box::new(
                age::x25519::Identity::generate().to_public(),
            )]),
        )
        .unwrap();
        let config = crate::config::Config::new(Default::default(), 16 << 20, 3);
        let seeds: [(&str, Vec<u8>); 6] = [
            ("pack", seed_pack()),
            ("index", serde_json::to_vec(&index).unwrap()),
            ("snapshot", serde_json::to_vec(&snap).unwrap()),
            ("tree", serde_json::to_vec(&leaf).unwrap()),
            ("keyfile", serde_json::to_vec(&key).unwrap()),
            ("config", serde_json::to_vec(&config).unwrap()),
        ];
        for (name, data) in seeds {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("seed"), data).unwrap();
        }
    }

    #[test]
    fn the_seed_pack_reads_back() {
        let p = seed_pack();
        assert_eq!(crate::pack::read_toc(&p, "seed").unwrap().len(), 2);
        pack(&p);
    }
}
