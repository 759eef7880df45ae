//! Plugin sandbox and plugin storage: hostile plugins are stopped and named, the host survives
//! and the repository stays valid; a snapshot restores with the plugin stored in it after the
//! plugin file is gone; a plugin file is pinned by its BLAKE3.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const PLUGIN: i32 = 16;

fn hostile_wasm() -> PathBuf {
    Path::new(env!("COFFER_TEST_PLUGIN_DIR")).join("coffer_plugin_hostile.wasm")
}

/// An app using the hostile plugin (copied to `wasm`), with `attack` and extra app lines.
fn config(env: &Env, wasm: &Path, attack: &str, extra: &str) -> PathBuf {
    let app = env.path("app");
    std::fs::create_dir_all(app.join("sub")).unwrap();
    std::fs::write(app.join("sub/file.txt"), b"app data").unwrap();
    let rest = format!("{extra}\n[apps.evil.settings]\nattack = \"{attack}\"\n");
    env.app_config(&format!("coffer-{attack}.toml"), "evil", wasm, &app, &rest)
}

fn local_copy(env: &Env) -> PathBuf {
    let p = env.path("hostile.wasm");
    std::fs::copy(hostile_wasm(), &p).unwrap();
    p
}

#[test]
fn hostile_plugins_are_stopped_and_named() {
    let env = Env::new();
    let wasm = local_copy(&env);
    let outside = env.path("outside");
    let cases: [(&str, &str, &[&str]); 7] = [
        (
            "loop",
            "time_limit_secs = 2",
            &["time limit of 2 s", "time_limit_secs"],
        ),
        (
            "memory",
            "memory_limit_mib = 64",
            &["memory limit of 64 MiB", "memory_limit_mib"],
        ),
        (
            "read-passwd",
            "",
            &["/etc/passwd", "sees only its app folder"],
        ),
        ("run", "", &["'id'", "not granted", "programs"]),
        ("spawn", "", &["'sh'", "not granted", "programs"]),
        ("http", "", &["http://127.0.0.1:9", "not granted", "`http`"]),
        (
            "capture-outside",
            "",
            &["../outside", "outside the app folder"],
        ),
    ];
    for (attack, extra, expect) in cases {
        let cfg = config(&env, &wasm, attack, extra);
        let t = Instant::now();
        let err = env.fails(
            &["--config", cfg.to_str().unwrap(), "backup", "evil"],
            PLUGIN,
        );
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{attack}: took {:?}",
            t.elapsed()
        );
        for e in expect {
            assert!(err.contains(e), "{attack}: error does not say {e:?}: {err}");
        }
        assert!(
            !err.contains("root:x:0:0"),
            "{attack}: leaked /etc/passwd: {err}"
        );
        eprintln!("{attack}: {}", err.trim());
    }
    // Restoring to ../outside is refused too, and writes nothing there.
    let cfg = config(&env, &wasm, "ok", "");
    let snap = env.json(&["--config", cfg.to_str().unwrap(), "backup", "evil"])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let cfg = config(&env, &wasm, "restore-outside", "");
    let err = env.fails(
        &["--config", cfg.to_str().unwrap(), "restore", &snap],
        PLUGIN,
    );
    assert!(err.contains("outside the app folder"), "{err}");
    assert!(!outside.exists());
    // No failed attempt left a snapshot behind, and the repository is sound.
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
    env.ok(&["check", "--read-data"]);
}

#[test]
fn snapshot_restores_with_its_stored_plugin_after_the_file_is_gone() {
    let env = Env::new();
    let wasm = local_copy(&env);
    let cfg = config(&env, &wasm, "ok", "");
    let snap = env.json(&["--config", cfg.to_str().unwrap(), "backup", "evil"]);
    assert_eq!(snap["plugin"]["name"], "hostile");
    let id = snap["snapshot"].as_str().unwrap().to_string();
    std::fs::remove_file(&wasm).unwrap();
    // The config still names the missing file; restore does not need it.
    let r = env.json(&["--config", cfg.to_str().unwrap(), "restore", &id]);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(
        std::fs::read(env.path("app/restored/sub/file.txt")).unwrap(),
        b"app data"
    );
    // But a new backup needs the file, and says so.
    let err = env.fails(
        &["--config", cfg.to_str().unwrap(), "backup", "evil"],
        PLUGIN,
    );
    assert!(err.contains("hostile.wasm"), "{err}");
}

#[test]
fn plugin_files_are_pinned_by_blake3() {
    let env = Env::new();
    let wasm = local_copy(&env);
    let cfg = config(&env, &wasm, "ok", "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let bad = env.path("bad.toml");
    let hash = blake3::hash(&std::fs::read(&wasm).unwrap())
        .to_hex()
        .to_string();
    std::fs::write(&bad, text.replace(&hash, &"0".repeat(64))).unwrap();
    let err = env.fails(
        &["--config", bad.to_str().unwrap(), "backup", "evil"],
        PLUGIN,
    );
    assert!(err.contains("pins") && err.contains(&hash), "{err}");
    std::fs::write(&bad, text.replace(&format!("blake3 = \"{hash}\"\n"), "")).unwrap();
    let err = env.fails(
        &["--config", bad.to_str().unwrap(), "backup", "evil"],
        PLUGIN,
    );
    assert!(
        err.contains("must be pinned") && err.contains(&hash),
        "{err}"
    );
    // inspect shows what the plugin asks for, and the hash to pin.
    let info = env.json(&["plugin", "inspect", wasm.to_str().unwrap()]);
    assert_eq!(info["name"], "hostile");
    assert_eq!(info["blake3"], hash);
    assert_eq!(info["wit"], "0.1.3");
    let x = env.json(&["plugin", "inspect", "xianyu"]);
    let caps: Vec<String> = x["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}={}", c[0].as_str().unwrap(), c[1].as_str().unwrap()))
        .collect();
    assert_eq!(
        caps,
        [
            "run=setting:stop_command",
            "run=setting:start_command",
            "run=setting:upgrade_command",
            "http=setting:health_url"
        ]
    );
}
