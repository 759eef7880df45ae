//! Data safety on the bad day: each test is named after a defect found by probing the landed
//! code (issue 10), reproduces it, and fails on the code before the fix.

mod common;

use std::collections::HashSet;
use std::path::Path;

use coffer_repo::crypto::Tag;
use coffer_repo::id::{ChunkId, PackId};
use coffer_repo::snapshot::{Snapshot, Summary};
use coffer_repo::tree::{Node, Tree};
use coffer_repo::Repository;
use common::*;

const INTEGRITY: i32 = 13;
const FAILURE: i32 = 1;

/// Flips one bit in the middle of a stored object.
fn flip(repo: &Repository, key: &str) {
    let mut b = repo.backend().get(key).unwrap().to_vec();
    let at = b.len() / 2;
    b[at] ^= 0x40;
    repo.backend().put(key, b).unwrap();
}

/// A folder of a few files, some of them the same, some of them links.
fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}")), noise(300_000, 10 + i)).unwrap();
    }
    std::fs::write(src.join("sub/g"), noise(200_000, 99)).unwrap();
    src
}

/// Data packs (holding only data chunks), by the index.
fn data_packs(repo: &Repository) -> Vec<PackId> {
    let (files, _) = repo.load_index_files().unwrap();
    let mut out: Vec<PackId> = files
        .iter()
        .flat_map(|(_, f)| f.packs.iter())
        .filter(|p| p.chunks.iter().all(|c| c.tag == Tag::Data))
        .map(|p| p.id)
        .collect();
    out.sort();
    out.dedup();
    out
}

fn prune_twice(env: &Env) {
    settle();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    env.ok(&["prune", "--grace", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    env.ok(&["prune", "--grace", "1s"]);
}

// ----- 1. prune after an index object is lost -----

#[test]
fn prune_never_deletes_packs_an_index_object_no_longer_lists() {
    let env = Env::new();
    let src = source(&env);
    let snap = env.backup(&src)["snapshot"].as_str().unwrap().to_string();
    let before = manifest(&src);
    // One index object for the data packs, one for the tree packs; then the first is lost.
    let repo = env.open_repo();
    let (files, _) = repo.load_index_files().unwrap();
    let all: Vec<_> = files.iter().flat_map(|(_, f)| f.packs.clone()).collect();
    let (data, trees): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|p| p.chunks.iter().all(|c| c.tag == Tag::Data));
    assert!(!data.is_empty() && !trees.is_empty());
    let data_index = repo
        .save_index(&coffer_repo::index::IndexFile {
            packs: data.clone(),
        })
        .unwrap();
    repo.save_index(&coffer_repo::index::IndexFile { packs: trees })
        .unwrap();
    let old: Vec<_> = files.iter().map(|(id, _)| *id).collect();
    repo.delete_index_files(&old).unwrap();
    let lost = repo
        .backend()
        .get(&coffer_repo::index::key(&data_index))
        .unwrap();
    repo.delete_index_files(&[data_index]).unwrap();

    settle();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    for _ in 0..2 {
        let err = env.fails(&["prune", "--grace", "1s"], FAILURE);
        assert!(err.contains("coffer repair index"), "{err}");
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    for p in &data {
        assert!(
            repo.backend()
                .exists(&coffer_repo::pack::key(&p.id))
                .unwrap(),
            "prune deleted a pack the lost index object listed"
        );
    }
    // Putting the lost object back leaves a sound repository ...
    repo.backend()
        .put(&coffer_repo::index::key(&data_index), lost.to_vec())
        .unwrap();
    env.ok(&["check", "--read-data"]);
    // ... and so does rebuilding it from the packs instead.
    repo.delete_index_files(&[data_index]).unwrap();
    let r = env.json(&["repair", "index"]);
    assert_eq!(r["packs_indexed"], data.len(), "{r}");
    env.ok(&["check", "--read-data"]);
    env.ok(&["prune", "--grace", "1s"]);
    assert_same(&before, &manifest(&env.restore(&snap, "src")));
}

// ----- 2. a rotten copy and a good one -----

/// A repository holding every chunk of `src` twice, as two backups that ran at once leave it:
/// the second backup sees no index, so it stores everything again.
fn stored_twice(env: &Env) -> (String, Vec<PackId>) {
    let src = source(env);
    env.backup(&src);
    let aside = env.path("index-aside");
    std::fs::create_dir(&aside).unwrap();
    let first: Vec<_> = env.objects("index");
    for (i, f) in first.iter().enumerate() {
        std::fs::rename(f, aside.join(i.to_string())).unwrap();
    }
    let other = env.sharing();
    let snap = other.backup(&src)["snapshot"].as_str().unwrap().to_string();
    for (i, f) in first.iter().enumerate() {
        std::fs::rename(aside.join(i.to_string()), f).unwrap();
    }
    let repo = env.open_repo();
    let packs = data_packs(&repo);
    let (index, _) = repo.load_index().unwrap();
    let twice = index
        .chunks()
        .filter(|(_, _, e)| e.tag == Tag::Data)
        .all(|(c, _, _)| !index.alternates(&c).is_empty());
    assert!(twice, "every data chunk is stored twice");
    (snap, packs)
}

#[test]
fn prune_keeps_the_good_copy_when_the_one_it_would_keep_is_rotten() {
    let env = Env::new();
    let (snap, packs) = stored_twice(&env);
    let before = manifest(&env.path("src"));
    let repo = env.open_repo();
    // Prune keeps the lowest pack id as the home of a chunk stored twice: rot that one, and
    // prune deletes or repacks the other copies of its chunks.
    let rotten = packs[0];
    flip(&repo, &coffer_repo::pack::key(&rotten));
    prune_twice(&env);
    assert_same(&before, &manifest(&env.restore(&snap, "src")));
    // Prune goes on healing: the rotten copy is nobody's home now, so it goes next.
    prune_twice(&env);
    prune_twice(&env);
    assert!(!repo
        .backend()
        .exists(&coffer_repo::pack::key(&rotten))
        .unwrap());
    env.ok(&["check", "--read-data"]);
    assert_same(&before, &manifest(&env.restore(&snap, "src")));
}

#[test]
fn restore_and_check_read_another_copy_of_a_chunk_whose_pack_is_rotten() {
    let env = Env::new();
    let (snap, _) = stored_twice(&env);
    let before = manifest(&env.path("src"));
    let repo = env.open_repo();
    // Rot the copy the index reads first.
    let (index, _) = repo.load_index().unwrap();
    let (_, s) = repo.find_snapshot(&snap).unwrap();
    let reader = coffer_repo::ChunkReader::new(&repo, &index);
    let root = reader.tree(&s.tree).unwrap();
    let dir = reader.tree(&root.nodes[0].subtree.unwrap()).unwrap();
    let file = dir.nodes.iter().find(|n| n.name == "f0").unwrap();
    let (first, _) = index.get(&file.content[0]).unwrap();
    flip(&repo, &coffer_repo::pack::key(&first));

    assert_same(&before, &manifest(&env.restore(&snap, "src")));
    let out = env.run(&["--json", "check", "--read-data"]);
    assert_eq!(out.status.code(), Some(INTEGRITY));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert!(problems[0]["object"]
        .as_str()
        .unwrap()
        .contains(&first.to_hex()));
    assert_eq!(
        problems[0]["snapshots"].as_array().unwrap().len(),
        0,
        "no snapshot loses data while a sound copy exists: {report}"
    );
}

/// Check walks a tree shared by many snapshots once, yet a damaged pack still names every
/// snapshot that needs it (found through the graph of trees), and no other.
#[test]
fn a_damaged_pack_names_every_snapshot_sharing_its_tree_and_no_other() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("shared")).unwrap();
    std::fs::write(src.join("shared/big"), noise(1 << 20, 7)).unwrap();
    std::fs::write(src.join("a"), b"one").unwrap();
    let first = env.backup(&src)["snapshot"].as_str().unwrap()[..8].to_string();
    std::fs::write(src.join("a"), b"two").unwrap();
    let second = env.backup(&src)["snapshot"].as_str().unwrap()[..8].to_string();
    let other = env.path("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("b"), noise(1 << 20, 8)).unwrap();
    let third = env.backup(&other)["snapshot"].as_str().unwrap()[..8].to_string();

    // The pack holding `shared/big`: written by the first backup, reused by the second.
    let repo = env.open_repo();
    let big = files_of(&repo, &second)["src/shared/big"][0];
    let (index, _) = repo.load_index().unwrap();
    let (pack, _) = index.get(&big).unwrap();
    flip(&repo, &coffer_repo::pack::key(&pack));

    let out = env.run(&["--json", "check", "--read-data"]);
    assert_eq!(out.status.code(), Some(INTEGRITY));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    let named: Vec<&str> = problems[0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        named.contains(&first.as_str()) && named.contains(&second.as_str()),
        "both snapshots holding shared/big must be named: {report}"
    );
    assert!(!named.contains(&third.as_str()), "{report}");
}

// ----- 3. and 4. keys -----

#[test]
fn one_damaged_key_file_does_not_lock_out_the_others() {
    let env = Env::new();
    let repo = env.open_repo();
    let keys = repo.backend().list("keys/").unwrap();
    let good = repo.backend().get(&keys[0].key).unwrap();
    // A key file of this repository whose sealed secrets are broken, listed before the good one.
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["secrets"] =
        "-----BEGIN AGE ENCRYPTED FILE-----\nAAAA\n-----END AGE ENCRYPTED FILE-----\n".into();
    // Several, so that one is tried before the good one whatever order the store lists in.
    for i in 0..8 {
        let damaged = format!("keys/{i}{}", "0".repeat(63));
        repo.backend()
            .put(&damaged, serde_json::to_vec(&v).unwrap())
            .unwrap();
    }
    let out = env.run(&["snapshots"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&"0".repeat(63)),
        "the damaged keys are named: {stderr}"
    );
}

#[test]
fn key_add_refuses_a_passphrase_that_already_opens_a_key() {
    let env = Env::new();
    let same = env.path("same-pass");
    std::fs::write(&same, format!("{PASSWORD}\n")).unwrap();
    for args in [
        vec!["key", "add", "--write-only", "--new-password-file"],
        vec!["key", "add", "--new-password-file"],
    ] {
        let mut args = args.clone();
        args.push(same.to_str().unwrap());
        let err = env.fails(&args, FAILURE);
        assert!(err.contains("already opens"), "{err}");
    }
    // Without a file, the new key's passphrase is asked for, never taken from COFFER_PASSWORD.
    let err = env.fails(&["key", "add", "--write-only"], FAILURE);
    assert!(err.contains("--new-password-file"), "{err}");
    assert!(err.contains("write-only"), "{err}");
    assert_eq!(env.json(&["key", "list"]).as_array().unwrap().len(), 1);
}

#[test]
fn a_full_key_wins_when_one_passphrase_opens_a_write_only_key_too() {
    let env = Env::new();
    let repo = env.open_repo();
    // As `key add --write-only` left repositories before it refused a passphrase in use (a few
    // of them, so that one is tried first whatever order the store lists in).
    for _ in 0..4 {
        let file = coffer_repo::keyfile::KeyFile::seal(
            &repo.config().id,
            &repo.secrets().write_only(),
            &coffer_repo::keyfile::Protector::Passphrase {
                passphrase: age::secrecy::SecretString::from(PASSWORD.to_string()),
                log_n: Some(10),
            },
        )
        .unwrap();
        let bytes = serde_json::to_vec(&file).unwrap();
        let name = format!("keys/{}", blake3::hash(&bytes).to_hex());
        repo.backend().put(&name, bytes).unwrap();
    }
    env.ok(&["snapshots"]);
    let keys = env.json(&["key", "list"]);
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 5);
    let current: Vec<_> = keys.iter().filter(|k| k["current"] == true).collect();
    assert_eq!(current[0]["write_only"], false, "{keys:?}");
    // So the owner can remove the stray write-only keys.
    for k in keys.iter().filter(|k| k["write_only"] == true) {
        env.ok(&["key", "remove", k["id"].as_str().unwrap()]);
    }
}

// ----- 5. coffer.toml -----

#[test]
fn an_invalid_coffer_toml_stops_every_command_that_reads_it() {
    let env = Env::uninit();
    let src = source(&env);
    let repo = env.path("configured-repo");
    let cases = [
        (
            "misspelt key",
            format!("[repository]\nlocaton = \"{}\"\n", repo.display()),
            "locaton",
        ),
        (
            "misspelt section",
            format!(
                "[repository]\nlocation = \"{}\"\n[repositroy.s3]\nregion = \"x\"\n",
                repo.display()
            ),
            "repositroy",
        ),
        (
            "wrong type",
            format!(
                "[repository]\nlocation = \"{}\"\n[repository.s3]\nuploads = \"four\"\n",
                repo.display()
            ),
            "uploads",
        ),
        (
            "syntax error",
            format!("[repository\nlocation = \"{}\"\n", repo.display()),
            "line 1",
        ),
    ];
    for (what, text, names) in cases {
        std::fs::write(env.path("coffer.toml"), &text).unwrap();
        for args in [
            vec!["init"],
            vec!["backup", src.to_str().unwrap()],
            vec!["snapshots"],
        ] {
            let mut c = env.cmd(&args);
            c.env_remove("COFFER_REPOSITORY")
                .current_dir(env.dir.path());
            let out = c.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(FAILURE),
                "{what}, {args:?}: {stderr}"
            );
            assert!(stderr.contains("coffer.toml"), "{what}: {stderr}");
            assert!(stderr.contains(names), "{what}: {stderr}");
            assert!(stderr.contains("line"), "{what}: {stderr}");
        }
        assert!(
            !env.path(".local/share/coffer/repo").exists(),
            "{what}: a command went to the default repository"
        );
    }
}

// ----- 6. output -----

#[test]
fn closing_the_output_pipe_ends_quietly_and_a_full_disk_is_one_line() {
    let env = Env::new();
    let src = source(&env);
    for _ in 0..3 {
        env.backup(&src);
    }
    for args in [
        vec!["snapshots"],
        vec!["ls", "latest", "--json"],
        vec!["--json", "snapshots"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = env.cmd(&args).stdout(writer).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");

        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = env.cmd(&args).stdout(full).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(FAILURE), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("No space left"), "{stderr}");
    }
}

// ----- 7. crafted trees -----

fn node(json: serde_json::Value) -> Node {
    serde_json::from_value(json).unwrap()
}

fn dir_node(name: &str, sub: ChunkId) -> Node {
    node(serde_json::json!({
        "name": name, "type": "dir", "mode": 0o755, "uid": 0, "gid": 0, "mtime_ns": 0,
        "subtree": sub,
    }))
}

/// Saves a snapshot of the tree `root` claiming `entries` entries.
fn forged_snapshot(repo: &Repository, root: ChunkId, entries: u64) -> String {
    let snap = Snapshot {
        summary: Some(Summary {
            entries,
            ..Summary::default()
        }),
        program_version: "test".into(),
        ..Snapshot::new(
            chrono::Utc::now(),
            "crafted".into(),
            vec!["/x".into()],
            root,
        )
    };
    repo.save_snapshot(&snap).unwrap().to_hex()
}

/// Stores trees built bottom-up: `levels` trees, each naming the one below `fanout` times.
fn crafted(repo: &Repository, levels: usize, fanout: usize) -> ChunkId {
    let (index, _) = repo.load_index().unwrap();
    let leaf = Tree {
        nodes: vec![node(serde_json::json!({
            "name": "f", "type": "file", "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 0, "size": 0,
        }))],
    };
    let mut chunks = vec![(Tag::Tree, leaf.to_bytes())];
    let mut below = ChunkId(repo.secrets().id(Tag::Tree, &chunks[0].1));
    for _ in 0..levels {
        let t = Tree {
            nodes: (0..fanout)
                .map(|i| dir_node(&format!("d{i}"), below))
                .collect(),
        };
        let bytes = t.to_bytes();
        below = ChunkId(repo.secrets().id(Tag::Tree, &bytes));
        chunks.push((Tag::Tree, bytes));
    }
    repo.store_chunks(&index, &chunks).unwrap();
    below
}

#[test]
fn a_dag_bomb_or_a_tree_100000_levels_deep_is_reported_as_damaged() {
    let env = Env::new();
    let repo = env.open_repo();
    let bomb = forged_snapshot(&repo, crafted(&repo, 30, 2), 100);
    let deep = forged_snapshot(&repo, crafted(&repo, 100_000, 1), 0);
    let target = env.path("t");
    for snap in [&bomb, &deep] {
        for args in [
            vec![
                "restore",
                snap.as_str(),
                "--target",
                target.to_str().unwrap(),
            ],
            vec!["ls", snap.as_str()],
            vec![
                "diff",
                snap.as_str(),
                if snap == &bomb { &deep } else { &bomb },
            ],
        ] {
            let err = env.fails(&args, INTEGRITY);
            assert!(err.contains("crafted"), "{args:?}: {err}");
        }
    }
    // Copy reads each shared subtree once: the bomb copies in a moment; the deep tree is refused.
    let to = Env::new();
    let mut c = env.cmd(&["--json", "copy", "--to", &to.location, &bomb]);
    c.env("COFFER_TO_PASSWORD", &to.password);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = env.cmd(&["copy", "--to", &to.location, &deep]);
    c.env("COFFER_TO_PASSWORD", &to.password);
    let out = c.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(INTEGRITY),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Check reads each shared subtree once (the bomb is no trouble) and names the deep one.
    let out = env.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(INTEGRITY));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["snapshots"][0], deep[..8], "{report}");
}

// ----- 9. a damaged tree pack or index object -----

#[test]
fn a_damaged_tree_costs_only_its_folder_and_a_lost_index_costs_nothing() {
    let env = Env::new();
    let src = source(&env);
    let snap = env.backup(&src)["snapshot"].as_str().unwrap().to_string();
    let repo = env.open_repo();
    let (index, _) = repo.load_index().unwrap();
    let (_, s) = repo.find_snapshot(&snap).unwrap();
    let reader = coffer_repo::ChunkReader::new(&repo, &index);
    let top_id = reader.tree(&s.tree).unwrap().nodes[0].subtree.unwrap();
    let top = reader.tree(&top_id).unwrap();
    let sub = top
        .nodes
        .iter()
        .find(|n| n.name == "sub")
        .unwrap()
        .subtree
        .unwrap();
    // Every tree but the folder `sub`'s gets a second, sound copy; then the pack holding the
    // trees is damaged, so `sub` alone cannot be read.
    let copies = vec![
        (Tag::Tree, reader.chunk(&s.tree).unwrap()),
        (Tag::Tree, reader.chunk(&top_id).unwrap()),
    ];
    drop(reader);
    repo.store_chunks(&coffer_repo::index::Index::default(), &copies)
        .unwrap();
    let (tree_pack, _) = index.get(&sub).unwrap();
    flip(&repo, &coffer_repo::pack::key(&tree_pack));
    let target = env.path("partial");
    let out = env.run(&["restore", &snap, "--target", target.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(INTEGRITY), "{stderr}");
    assert!(stderr.contains("/src/sub"), "{stderr}");
    for i in 0..4 {
        assert_eq!(
            hash_file(&target.join(format!("src/f{i}"))),
            hash_file(&src.join(format!("f{i}")))
        );
    }
    let out = env.run(&["ls", &snap]);
    assert_eq!(out.status.code(), Some(INTEGRITY));
    assert!(String::from_utf8_lossy(&out.stdout).contains("src/f3"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/src/sub"));

    // A damaged index object: repair index rebuilds what it listed from the packs.
    let env = Env::new();
    let src = source(&env);
    let snap = env.backup(&src)["snapshot"].as_str().unwrap().to_string();
    let repo = env.open_repo();
    for id in repo.list_index_ids().unwrap() {
        flip(&repo, &coffer_repo::index::key(&id));
    }
    env.fails(
        &[
            "restore",
            &snap,
            "--target",
            env.path("x").to_str().unwrap(),
        ],
        INTEGRITY,
    );
    let r = env.json(&["repair", "index"]);
    assert!(r["packs_indexed"].as_u64().unwrap() >= 2, "{r}");
    env.ok(&["check", "--read-data"]);
    assert_same(&manifest(&src), &manifest(&env.restore(&snap, "src")));
}

// ----- 10. symlinks -----

#[test]
fn symlinks_are_restored_as_they_were_and_never_followed() {
    let env = Env::new();
    let src = env.path("etc");
    std::fs::create_dir_all(src.join("alternatives")).unwrap();
    std::fs::write(src.join("hosts"), "127.0.0.1 localhost\n").unwrap();
    std::os::unix::fs::symlink("/usr/bin/vim.basic", src.join("alternatives/editor")).unwrap();
    std::os::unix::fs::symlink("../hosts", src.join("alternatives/up")).unwrap();
    std::os::unix::fs::symlink("/etc", src.join("root-etc")).unwrap();
    // d -> .. and x -> d/d/..: lexically "d", really two levels up.
    std::os::unix::fs::symlink("..", src.join("d")).unwrap();
    std::os::unix::fs::symlink("d/d/..", src.join("x")).unwrap();
    let snap = env.backup(&src)["snapshot"].as_str().unwrap().to_string();
    let restored = env.restore(&snap, "etc");
    assert_same(&manifest(&src), &manifest(&restored));
    // Opt in to leave out links that leave the target: chains through a link count as leaving.
    let target = env.path("skipping");
    let out = env.json(&[
        "restore",
        &snap,
        "--target",
        target.to_str().unwrap(),
        "--skip-outside-symlinks",
    ]);
    let skipped: HashSet<String> = out["links_skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l.as_str()
                .unwrap()
                .split(" -> ")
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let want: HashSet<String> = ["etc/alternatives/editor", "etc/root-etc", "etc/x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(skipped, want, "{out}");
    assert!(target.join("etc/alternatives/up").is_symlink());
    assert!(target.join("etc/d").is_symlink());
}

// ----- 11. partial files -----

#[test]
fn a_rerun_restore_removes_the_partial_files_a_killed_one_left() {
    let env = Env::new();
    let src = source(&env);
    let snap = env.backup(&src)["snapshot"].as_str().unwrap().to_string();
    let target = env.path("t");
    // What a restore killed with SIGKILL leaves: partial files of a process that is gone.
    std::fs::create_dir_all(target.join("src/sub")).unwrap();
    std::fs::write(target.join("src/.coffer-restore-999999999-3"), b"partial").unwrap();
    std::fs::write(
        target.join("src/sub/.coffer-restore-999999999-4"),
        b"partial",
    )
    .unwrap();
    let out = env.json(&["restore", &snap, "--target", target.to_str().unwrap()]);
    assert_eq!(out["temp_files_removed"], 2, "{out}");
    assert_same(&manifest(&src), &manifest(&target.join("src")));
}

// ----- 13. smaller ones -----

#[test]
fn include_of_a_path_the_snapshot_lacks_fails() {
    let env = Env::new();
    let src = source(&env);
    let snap = env.backup(&src)["snapshot"].as_str().unwrap().to_string();
    let t = env.path("t");
    let err = env.fails(
        &[
            "restore",
            &snap,
            "--target",
            t.to_str().unwrap(),
            "--include",
            "src/nope",
        ],
        FAILURE,
    );
    assert!(err.contains("src/nope"), "{err}");
}

#[test]
fn an_io_error_prints_its_cause_once() {
    let env = Env::new();
    let src = source(&env);
    let snap = env.backup(&src)["snapshot"].as_str().unwrap().to_string();
    // The target's parent is a file: creating the target fails.
    std::fs::write(env.path("file"), b"x").unwrap();
    let t = env.path("file/t");
    let out = env.run(&["restore", &snap, "--target", t.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.matches("Not a directory").count(), 1, "{stderr}");
}

#[test]
fn backup_of_one_missing_path_warns_and_backs_up_the_rest() {
    let env = Env::new();
    let src = source(&env);
    let missing = env.path("gone");
    let out = env.run(&[
        "--json",
        "backup",
        src.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("gone"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let snap = v["snapshot"].as_str().unwrap();
    assert_same(&manifest(&src), &manifest(&env.restore(snap, "src")));
    // None there at all is still an error.
    env.fails(&["backup", missing.to_str().unwrap()], FAILURE);
}

#[test]
fn prune_that_frees_nothing_yet_says_when_it_can() {
    let env = Env::new();
    let src = source(&env);
    let snap = env.backup(&src)["snapshot"].as_str().unwrap().to_string();
    let repo = env.open_repo();
    let (id, _) = repo.find_snapshot(&snap).unwrap();
    repo.delete_snapshot(&id).unwrap();
    let out = env.ok(&["prune", "--grace", "1h"]);
    assert!(out.contains("can be marked from"), "{out}");
}

#[test]
fn a_plain_http_endpoint_without_allow_http_says_to_set_it() {
    let mut env = Env::uninit();
    env.location = "s3://bucket/x".into();
    env.set_env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    env.set_env("AWS_ACCESS_KEY_ID", "a");
    env.set_env("AWS_SECRET_ACCESS_KEY", "b");
    let start = std::time::Instant::now();
    let out = env.run(&["init"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("AWS_ALLOW_HTTP"), "{stderr}");
    assert!(start.elapsed().as_secs() < 5, "retried: {stderr}");
}

#[test]
fn init_in_a_missing_bucket_says_the_bucket_is_missing() {
    let garage = coffer_testkit::Garage::shared();
    let mut env = Env::s3_uninit(garage);
    env.location = format!("s3://no-such-bucket-{}/x", rand_suffix());
    let err = env.fails(&["init"], 10);
    assert!(err.contains("bucket"), "{err}");
    assert!(!err.contains("keys/"), "{err}");
}

// ----- 8. stored plugins -----

/// A snapshot that stores a plugin the operator does not trust (here: the app's pin changed
/// since, as after a forged snapshot or a plugin swapped behind the operator's back) does not
/// run it with the app's grants unless its hash is trusted explicitly.
#[test]
fn an_app_restore_runs_a_stored_plugin_only_when_its_hash_is_trusted() {
    let env = Env::new();
    let wasm = env.path("hostile.wasm");
    std::fs::copy(
        Path::new(env!("COFFER_TEST_PLUGIN_DIR")).join("coffer_plugin_hostile.wasm"),
        &wasm,
    )
    .unwrap();
    let app = env.path("app");
    std::fs::create_dir_all(app.join("sub")).unwrap();
    std::fs::write(app.join("sub/file.txt"), b"app data").unwrap();
    let rest = "\n[apps.evil.settings]\nattack = \"ok\"\n";
    let cfg = env.app_config("coffer.toml", "evil", &wasm, &app, rest);
    let snap = env.json(&["--config", cfg.to_str().unwrap(), "backup", "evil"]);
    let id = snap["snapshot"].as_str().unwrap().to_string();
    let hash = blake3::hash(&std::fs::read(&wasm).unwrap())
        .to_hex()
        .to_string();
    // The app's pin now names another build.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace(&hash, &"1".repeat(64))).unwrap();
    std::fs::remove_dir_all(&app).unwrap();
    let err = env.fails(&["--config", cfg.to_str().unwrap(), "restore", &id], 14);
    assert!(err.contains(&format!("--trust-plugin {hash}")), "{err}");
    assert!(!app.join("restored").exists(), "the plugin ran");
    let r = env.json(&[
        "--config",
        cfg.to_str().unwrap(),
        "restore",
        &id,
        "--trust-plugin",
        &hash,
    ]);
    assert_eq!(r["verified"], true, "{r}");
}

// ----- kill -9 during a restore -----

/// Killed at random moments, a restore leaves every file under its final name either absent or
/// complete (files are written under a temporary name and renamed when whole); a re-run
/// completes and removes what the killed ones left.
#[test]
fn kill_9_during_a_restore_leaves_no_half_file_and_a_rerun_completes() {
    let env = Env::new();
    let src = env.path("big");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..60 {
        std::fs::write(src.join(format!("d/f{i}")), noise(1_500_000, 200 + i)).unwrap();
    }
    let snap = env.backup(&src)["snapshot"].as_str().unwrap().to_string();
    // Kills land within the time a whole restore takes.
    let started = std::time::Instant::now();
    env.restore(&snap, "big");
    let span = (started.elapsed().as_millis() as u64).max(50);
    let target = env.path("t");
    let mut rng = Rng(11);
    let mut landed = 0;
    for _ in 0..8 {
        let t = target.to_str().unwrap();
        if kill_at_random(&env, &["restore", &snap, "--target", t], &mut rng, span) {
            landed += 1;
        }
        for e in std::fs::read_dir(target.join("big/d"))
            .into_iter()
            .flatten()
        {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(".coffer-restore-") {
                continue;
            }
            assert_eq!(
                hash_file(&p),
                hash_file(&src.join("d").join(&name)),
                "{name} is half-written"
            );
        }
    }
    assert!(landed > 0, "no kill landed mid-restore");
    let out = env.json(&["restore", &snap, "--target", target.to_str().unwrap()]);
    assert!(out["errors"].as_array().unwrap().is_empty(), "{out}");
    assert_same(&manifest(&src), &manifest(&target.join("big")));
    let left: Vec<_> = std::fs::read_dir(target.join("big/d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".coffer-restore-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

// ----- 8. signed snapshots -----

/// Saves `snap` as whoever `passphrase` opens (a write-only key can write snapshots).
fn save_as(env: &Env, passphrase: &str, snap: &Snapshot) -> String {
    let b = coffer_store::open(&env.location, false, &env.s3_config()).unwrap();
    let unlock = coffer_repo::keyfile::Unlocker::Passphrase(age::secrecy::SecretString::from(
        passphrase.to_string(),
    ));
    let repo = Repository::open(b, &unlock).unwrap();
    repo.save_snapshot(snap).unwrap().to_hex()
}

#[test]
fn a_snapshot_forged_with_write_only_secrets_is_never_latest_and_is_not_restored() {
    let env = Env::new();
    let src = source(&env);
    let full = env.backup(&src)["snapshot"].as_str().unwrap().to_string();
    // A write-only key for host app-01, used there.
    let wo = env.add_key(
        "write only passphrase",
        &["--write-only", "--host", "app-01"],
    );
    let app01 = env.path("app01");
    std::fs::create_dir_all(&app01).unwrap();
    std::fs::write(app01.join("orders.csv"), noise(100_000, 77)).unwrap();
    let own = wo.backup(&app01)["snapshot"].as_str().unwrap().to_string();
    // It cannot write for another host.
    let err = wo.fails(
        &["backup", "--host", "db-01", app01.to_str().unwrap()],
        FAILURE,
    );
    assert!(err.contains("app-01") && err.contains("db-01"), "{err}");

    // Forgeries with its secrets, dated after everything: claiming another host, and unsigned
    // (as a key made before signing, or an attacker leaving the signature out, would write).
    let repo = env.open_repo();
    let (_, template) = repo.find_snapshot(&full).unwrap();
    let mut forged = template.clone();
    forged.hostname = "db-01".into();
    forged.time = chrono::Utc::now() + chrono::Duration::hours(1);
    let forged = save_as(&env, "write only passphrase", &forged);
    let legacy = coffer_repo::keyfile::KeyFile::seal(
        &repo.config().id,
        &coffer_repo::crypto::Secrets {
            signing: None,
            ..repo.secrets().write_only()
        },
        &coffer_repo::keyfile::Protector::Passphrase {
            passphrase: age::secrecy::SecretString::from("legacy".to_string()),
            log_n: Some(10),
        },
    )
    .unwrap();
    let bytes = serde_json::to_vec(&legacy).unwrap();
    repo.backend()
        .put(&format!("keys/{}", blake3::hash(&bytes).to_hex()), bytes)
        .unwrap();
    let mut unsigned = template.clone();
    unsigned.time = chrono::Utc::now() + chrono::Duration::hours(2);
    let unsigned = save_as(&env, "legacy", &unsigned);

    let list = env.json(&["snapshots"]);
    let writer = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["written_by"]
            .clone()
    };
    assert_eq!(writer(&full)["writer"], "signed", "{list}");
    assert_eq!(writer(&full)["write_only"], false);
    assert_eq!(writer(&own)["writer"], "signed");
    assert_eq!(writer(&own)["host"], "app-01");
    assert_eq!(writer(&own)["write_only"], true);
    assert_eq!(writer(&forged)["writer"], "forged", "{list}");
    assert_eq!(writer(&unsigned)["writer"], "unverified", "{list}");
    // `latest` is the newest snapshot a trusted key wrote: the write-only key's own.
    let restored = env.restore("latest", "app01");
    assert_eq!(
        hash_file(&restored.join("orders.csv")),
        hash_file(&app01.join("orders.csv"))
    );
    let t = env.path("forged-target");
    env.fails(&["restore", &forged, "--target", t.to_str().unwrap()], 14);
    assert!(!t.exists());
    // Unless the operator, knowing better, says so.
    env.ok(&[
        "restore",
        &forged,
        "--target",
        t.to_str().unwrap(),
        "--ignore-signature",
    ]);
    // An unverified one is restored only when named, with a warning.
    let t = env.path("unsigned-target");
    let out = env.run(&["restore", &unsigned, "--target", t.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not verified"));
    // Copy signs each copy anew: it leaves both behind rather than launder them.
    let offsite = Env::new();
    let mut c = env.cmd(&["--json", "copy", "--to", &offsite.location]);
    c.env("COFFER_TO_PASSWORD", &offsite.password);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let copied: Vec<&str> = v["copied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    assert_eq!(copied.len(), 2, "{v}");
    assert!(
        copied.contains(&full.as_str()) && copied.contains(&own.as_str()),
        "{v}"
    ); // Retiring the write-only key leaves what it signed signed.
    let keys = env.json(&["key", "list"]);
    for k in keys
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["write_only"] == true)
    {
        env.ok(&["key", "remove", k["id"].as_str().unwrap()]);
    }
    let list = env.json(&["snapshots"]);
    let own_now = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == own.as_str())
        .unwrap();
    assert_eq!(own_now["written_by"]["writer"], "signed", "{list}");
}
