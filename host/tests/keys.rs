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

/// The scrypt work factors of the repository's passphrase keys, in order.
fn key_log_ns(env: &Env) -> Vec<u8> {
    let mut v: Vec<u8> = env
        .open_repo()
        .list_keys()
        .unwrap()
        .iter()
        .filter_map(|k| k.file.scrypt_log_n())
        .collect();
    v.sort();
    v
}

/// Decrypts a key file's sealed secrets with the stock `age` tool, typing the passphrase at its
/// prompt (age reads it from a terminal only: a pseudo-terminal here).
fn stock_age_opens(key_json: &[u8], passphrase: &str, dir: &std::path::Path) -> bool {
    let f: serde_json::Value = serde_json::from_slice(key_json).unwrap();
    let sealed = dir.join("sealed.age");
    std::fs::write(&sealed, f["secrets"].as_str().unwrap()).unwrap();
    let script = format!(
        "import os, pty, sys, time\npid, fd = pty.fork()\nif pid == 0:\n    os.execvp('age', ['age', '-d', '-o', '{out}', '{inp}'])\nbuf, sent, end = b'', False, time.time() + 30\nwhile time.time() < end:\n    try:\n        c = os.read(fd, 1024)\n    except OSError:\n        break\n    if not c:\n        break\n    buf += c\n    if b'passphrase' in buf.lower() and not sent:\n        os.write(fd, b'{passphrase}\\n')\n        sent = True\nsys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n",
        out = dir.join("secrets.json").display(),
        inp = sealed.display(),
    );
    let ok = std::process::Command::new("python3")
        .args(["-c", &script])
        .status()
        .unwrap()
        .success();
    ok && std::fs::read(dir.join("secrets.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["data_identity"].is_string())
}

/// Issue 14, unlocking: a new passphrase key's KDF takes 64 MiB (scrypt 2^16), not age's
/// calibrated second (2^19–2^20, 512 MiB–1 GiB); a key made before still opens, says so, and
/// `key upgrade` re-seals it (same secrets, same signer: its snapshots stay signed); `key passwd`
/// changes the passphrase. The stock `age` tool decrypts the key files with the passphrase.
#[test]
fn passphrase_keys_unlock_in_64_mib_and_old_keys_are_resealed() {
    let env = Env::uninit();
    assert!(
        std::process::Command::new("age")
            .arg("--version")
            .output()
            .is_ok(),
        "the age tool is needed: apt-get install age (.ci/run does)"
    );
    // An "old" key: made at 2^18 (256 MiB), as age's default made them.
    succeed(env.cmd(&["init"]).env("COFFER_KDF_LOG_N", "18"));
    assert_eq!(key_log_ns(&env), [18]);
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), noise(100_000, 3)).unwrap();
    env.backup(&src);
    let out = env.run(&["snapshots"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("256 MiB") && stderr.contains("coffer key upgrade"),
        "{stderr}"
    );

    // Re-sealed with the same passphrase at the capped work factor (no COFFER_KDF_LOG_N).
    let out = succeed(
        env.cmd(&["--json", "key", "upgrade"])
            .env_remove("COFFER_KDF_LOG_N"),
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            r["kdf_log_n"].as_u64(),
            r["kdf_mib"].as_u64(),
            r["previous_kdf_log_n"].as_u64()
        ),
        (Some(16), Some(64), Some(18))
    );
    assert_eq!(
        key_log_ns(&env),
        [16],
        "one key, re-sealed; the old file is gone"
    );
    let out = env.run(&["snapshots"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("coffer key upgrade"));
    let snaps = env.json(&["snapshots"]);
    assert!(
        snaps[0]["written_by"].to_string().contains("signed"),
        "still signed: {snaps}"
    );
    let key = env.objects("keys").pop().unwrap();
    assert!(stock_age_opens(
        &std::fs::read(&key).unwrap(),
        &env.password,
        env.dir.path()
    ));

    // A new passphrase; the old one opens nothing after.
    std::fs::write(env.path("new-pass"), "a new passphrase\n").unwrap();
    let newp = env.path("new-pass");
    succeed(
        env.cmd(&[
            "key",
            "passwd",
            "--new-password-file",
            newp.to_str().unwrap(),
        ])
        .env_remove("COFFER_KDF_LOG_N"),
    );
    env.fails(&["snapshots"], WRONG_KEY);
    let out = succeed(
        env.cmd(&["--json", "snapshots"])
            .env("COFFER_PASSWORD", "a new passphrase"),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("signed"));

    // A repository made today: 2^16 from the start; unlocking it, measured.
    let fresh = Env::uninit();
    succeed(fresh.cmd(&["init"]).env_remove("COFFER_KDF_LOG_N"));
    assert_eq!(key_log_ns(&fresh), [16]);
    let begun = std::time::Instant::now();
    succeed(fresh.cmd(&["snapshots"]).env_remove("COFFER_KDF_LOG_N"));
    eprintln!(
        "unlock + snapshots with a 2^16 passphrase key: {:.2} s",
        begun.elapsed().as_secs_f64()
    );
}
