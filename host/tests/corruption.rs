//! Corruption: one flipped byte in a pack, an index or a snapshot is found by `check --read-data`,
//! which names the object and the snapshots it hurts; restore refuses the damaged files without
//! writing a bad byte and restores the rest.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use coffer_repo::id::ChunkId;
use common::*;

const INTEGRITY: i32 = 13;

on_each_store!(
    flipped_byte_in_a_pack_is_named_and_contained,
    flipped_byte_in_an_index_is_named_with_its_snapshots,
    flipped_byte_in_a_snapshot_is_named,
);

/// Flips one bit of a stored object, `from_end` bytes before its end (in a folder or a bucket).
fn flip(env: &Env, key: &str, from_end: usize) {
    let repo = env.open_repo();
    let mut b = repo.backend().get(key).unwrap().to_vec();
    let at = b.len().saturating_sub(from_end.max(1));
    b[at] ^= 0x40;
    repo.backend().put(key, b).unwrap();
}

fn setup(env: Env) -> (Env, String, String) {
    env.ok(&["init", "--pack-size", "1"]);
    let a = env.path("a");
    std::fs::create_dir(&a).unwrap();
    for i in 0..6 {
        std::fs::write(a.join(format!("f{i}")), noise(700_000, 100 + i)).unwrap();
    }
    let snap_a = env.backup(&a)["snapshot"].as_str().unwrap().to_string();
    let b = env.path("b");
    std::fs::create_dir(&b).unwrap();
    std::fs::write(b.join("only-b"), noise(900_000, 7)).unwrap();
    let snap_b = env.backup(&b)["snapshot"].as_str().unwrap().to_string();
    (env, snap_a, snap_b)
}

fn no_temp_files(dir: &Path) {
    for e in walkdir(dir) {
        assert!(
            !e.to_string_lossy().contains(".coffer-restore"),
            "temporary file left: {}",
            e.display()
        );
    }
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walkdir(&p));
            }
            out.push(p);
        }
    }
    out
}

fn flipped_byte_in_a_pack_is_named_and_contained(env: Env) {
    let (env, snap_a, snap_b) = setup(env);
    env.ok(&["check", "--read-data"]);
    let repo = env.open_repo();
    let files = files_of(&repo, &snap_a);
    let (index, _) = repo.load_index().unwrap();
    // The pack holding f2's first chunk.
    let (pack, _) = index.get(&files["a/f2"][0]).unwrap();
    let in_pack: HashSet<ChunkId> = index
        .chunks()
        .filter(|(_, p, _)| *p == pack)
        .map(|(c, _, _)| c)
        .collect();
    let hurt: Vec<&String> = files
        .iter()
        .filter(|(_, cs)| cs.iter().any(|c| in_pack.contains(c)))
        .map(|(f, _)| f)
        .collect();
    assert!(
        hurt.len() < files.len(),
        "every file lies in one pack; the test needs more packs"
    );
    let size = repo.backend().head(&coffer_repo::pack::key(&pack)).unwrap() as usize;
    flip(&env, &coffer_repo::pack::key(&pack), size / 2);

    let out = env.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(INTEGRITY));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(&pack.to_hex()))
        .unwrap_or_else(|| panic!("pack not named: {text}"));
    assert!(line.contains(&snap_a[..8]), "{line}");
    assert!(!line.contains(&snap_b[..8]), "{line}");
    // The structural check alone cannot see it: it reads no data.
    env.ok(&["check"]);

    let target = env.path("restored");
    let out = env.run(&["restore", &snap_a, "--target", target.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(INTEGRITY),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for f in files.keys() {
        let restored = target.join(f);
        if hurt.contains(&f) {
            assert!(
                !restored.exists(),
                "{f} was written despite a damaged chunk"
            );
            assert!(stderr.contains(f.as_str()), "{f} not reported: {stderr}");
        } else {
            assert_eq!(hash_file(&restored), hash_file(&env.path(f)), "{f}");
        }
    }
    no_temp_files(&target);
    // The other snapshot is untouched.
    let b = env.restore(&snap_b, "b");
    assert_eq!(
        hash_file(&b.join("only-b")),
        hash_file(&env.path("b/only-b"))
    );
}

fn flipped_byte_in_an_index_is_named_with_its_snapshots(env: Env) {
    let (env, snap_a, snap_b) = setup(env);
    let repo = env.open_repo();
    // Find the index object that lists the packs of snapshot b's file.
    let b_chunk = files_of(&repo, &snap_b)["b/only-b"][0];
    let victim = repo
        .list_index_ids()
        .unwrap()
        .into_iter()
        .find(|id| {
            repo.load_index_file(id)
                .unwrap()
                .packs
                .iter()
                .any(|p| p.chunks.iter().any(|c| c.id == b_chunk))
        })
        .unwrap();
    flip(&env, &coffer_repo::index::key(&victim), 30);
    let out = env.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(INTEGRITY));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("index/{}", victim.to_hex())),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("not in any index") && l.contains(&snap_b[..8])),
        "{text}"
    );
    // Snapshot a, whose data is indexed elsewhere, still restores.
    let a = env.restore(&snap_a, "a");
    assert_eq!(hash_file(&a.join("f0")), hash_file(&env.path("a/f0")));
}

fn flipped_byte_in_a_snapshot_is_named(env: Env) {
    let (env, snap_a, snap_b) = setup(env);
    flip(&env, &format!("snapshots/{snap_b}"), 20);
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(INTEGRITY));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("snapshots/{snap_b}")), "{text}");
    // Listing shows the good one and warns about the bad one.
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(INTEGRITY));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&snap_a[..8]));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&snap_b));
    let err = env.fails(
        &[
            "restore",
            &snap_b[..10],
            "--target",
            env.path("x").to_str().unwrap(),
        ],
        INTEGRITY,
    );
    assert!(err.contains("damaged"), "{err}");
    assert!(!env.path("x").exists());
}
