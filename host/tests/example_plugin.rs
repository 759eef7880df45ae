//! The third-party example plugin (examples/plugin-notes) builds with its README's command,
//! against the SDK alone, and backs up and restores its app.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn example_plugin_builds_and_backs_up_its_app() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/plugin-notes")
        .canonicalize()
        .unwrap();
    // The README's build command, with a target folder of the test's own.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("example-plugin");
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target)
        .current_dir(&example)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the example plugin failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = target.join("wasm32-wasip2/release/notes_plugin.wasm");

    let env = Env::new();
    let info = env.json(&["plugin", "inspect", wasm.to_str().unwrap()]);
    assert_eq!(info["name"], "notes");
    assert_eq!(info["items"], serde_json::json!(["notes", "settings"]));
    // inspect prints the hash to pin; app_config pins the file's hash: they must agree.
    assert_eq!(
        info["blake3"].as_str().unwrap(),
        blake3::hash(&std::fs::read(&wasm).unwrap())
            .to_hex()
            .as_str()
    );

    let app = env.path("notes-app");
    std::fs::create_dir_all(app.join("notes")).unwrap();
    for i in 0..12 {
        std::fs::write(app.join(format!("notes/{i}.md")), format!("# note {i}\n")).unwrap();
    }
    std::fs::write(app.join("notes.json"), b"{\"theme\":\"dark\"}").unwrap();
    let cfg = env.app_config("coffer.toml", "notes", &wasm, &app, "");
    let cfg = cfg.to_str().unwrap();
    let snap = env.json(&["--config", cfg, "backup", "notes"]);
    assert_eq!(snap["metadata"]["notes"], 12, "{snap}");
    let drill = env.path("drill");
    let r = env.json(&[
        "--config",
        cfg,
        "restore",
        snap["snapshot"].as_str().unwrap(),
        "--dir",
        drill.to_str().unwrap(),
    ]);
    assert_eq!(r["verified"], true, "{r}");
    assert_same(
        &manifest(&app.join("notes")),
        &manifest(&drill.join("notes")),
    );
    assert_eq!(
        hash_file(&app.join("notes.json")),
        hash_file(&drill.join("notes.json"))
    );
}
