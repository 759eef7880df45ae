//! Keys and the errors a user meets first: write-only keys, identities, wrong passphrases,
//! missing repositories. Each error is one line with a documented exit code, never a panic.

mod common;

use common::*;

const WRONG_KEY: i32 = 11;
const WRITE_ONLY: i32 = 12;
const NO_REPO: i32 = 10;

fn one_line(stderr: &str) {
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("coffer: error: "), "{stderr}");
}

on_each_store!(write_only_key_backs_up_with_dedup_but_reads_nothing);

fn write_only_key_backs_up_with_dedup_but_reads_nothing(env: Env) {
    env.ok(&["init"]);
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("data.bin"), noise(6_000_000, 1)).unwrap();
    env.backup(&src);
    let wo = env.add_key("write only passphrase", &["--write-only"]);
    // Same data from another host: fully deduplicated against what the full key stored.
    std::fs::write(src.join("more.bin"), noise(2_000_000, 2)).unwrap();
    settle();
    let out = wo.backup(&src);
    let added = out["bytes_added"].as_u64().unwrap();
    assert!(
        added < 2_300_000,
        "write-only backup re-uploaded known data: {out}"
    );
    assert_eq!(out["files_new"], 2, "{out}");
    let wo_snap = out["snapshot"].as_str().unwrap().to_string();
    // Incremental too: the files cache needs no snapshot.
    let again = wo.backup(&src);
    assert_eq!(again["bytes_read"], 0, "{again}");
    for args in [
        vec!["snapshots"],
        vec!["ls", &wo_snap],
        vec!["restore", &wo_snap, "--target", "/tmp/never"],
    ] {
        let err = wo.fails(&args, WRITE_ONLY);
        one_line(&err);
        assert!(err.contains("write-only"), "{err}");
    }
    assert!(!std::path::Path::new("/tmp/never").exists());
    // The full key restores what the write-only key wrote.
    let restored = env.restore(&wo_snap, "src");
    assert_same(&manifest(&src), &manifest(&restored));
    let keys = env.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert_eq!(
        keys.as_array()
            .unwrap()
            .iter()
            .filter(|k| k["write_only"] == true)
            .count(),
        1
    );
}

#[test]
fn wrong_passphrase_and_missing_repository_are_clear() {
    let env = Env::new();
    let mut bad = env.sharing();
    bad.password = "not the passphrase".into();
    let err = bad.fails(&["snapshots"], WRONG_KEY);
    one_line(&err);
    assert!(err.contains("passphrase"), "{err}");

    let missing = Env::uninit();
    let err = missing.fails(&["snapshots"], NO_REPO);
    one_line(&err);
    assert!(err.contains("coffer init"), "{err}");
    // And init refuses to overwrite an existing repository.
    let err = env.fails(&["init"], 1);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn identity_keys_open_and_keys_are_managed() {
    let env = Env::new();
    // An age identity as a second key.
    let id_file = env.path("me.key");
    let out = std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&id_file)
        .output()
        .expect("age-keygen (Debian package age)");
    assert!(out.status.success());
    let text = std::fs::read_to_string(&id_file).unwrap();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    env.ok(&["key", "add", "--recipient", &recipient]);
    let mut by_id = env.sharing();
    by_id.password = String::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"opened with an identity").unwrap();
    let snap = by_id.json(&[
        "--identity-file",
        id_file.to_str().unwrap(),
        "backup",
        src.to_str().unwrap(),
    ]);
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps[0]["id"], snap["snapshot"]);
    // A passphrase cannot remove the key it opened with, nor the last full key.
    let keys = env.json(&["key", "list"]);
    let current = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let err = env.fails(&["key", "remove", &current[..12]], 1);
    assert!(err.contains("opened with"), "{err}");
    env.ok(&["key", "remove", &other[..12]]);
    let err = by_id.fails(
        &["--identity-file", id_file.to_str().unwrap(), "snapshots"],
        WRONG_KEY,
    );
    one_line(&err);
}
