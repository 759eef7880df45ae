//! `coffer plugin new` writes skeletons that build as they are, pass `plugin inspect`, and back
//! an app up and restore it: Rust (wit-bindgen from crates.io, `cargo build --target
//! wasm32-wasip2`) and Python (componentize-py, which the Python plugin test needs too).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

#[test]
fn rust_and_python_skeletons_build_inspect_back_up_and_restore() {
    let env = Env::new();
    let parent = env.path("plugins");
    std::fs::create_dir_all(&parent).unwrap();
    let parent_s = parent.to_str().unwrap();
    for (lang, name) in [("rust", "shop"), ("python", "blog")] {
        let r = env.json(&["plugin", "new", name, "--lang", lang, "--dir", parent_s]);
        let dir = PathBuf::from(r["dir"].as_str().unwrap());
        let build = r["build"].as_str().unwrap();
        let argv: Vec<&str> = build.split_whitespace().collect();
        let begun = std::time::Instant::now();
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .current_dir(&dir)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .unwrap_or_else(|e| panic!("{build}: {e}"));
        assert!(
            out.status.success(),
            "{lang} skeleton: `{build}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "{lang} skeleton built in {:.1} s",
            begun.elapsed().as_secs_f64()
        );
        let wasm = PathBuf::from(r["wasm"].as_str().unwrap());
        let info = env.json(&["plugin", "inspect", wasm.to_str().unwrap()]);
        assert_eq!(info["name"], name, "{info}");
        assert_eq!(info["items"], serde_json::json!(["data"]), "{info}");

        // It works as written: a backup of an app's data folder, lost and restored.
        let app = env.path(&format!("app-{name}"));
        std::fs::create_dir_all(app.join("data/sub")).unwrap();
        std::fs::write(app.join("data/sub/a.txt"), format!("{name} data")).unwrap();
        let cfg = env.app_config(&format!("{name}.toml"), name, &wasm, &app, "");
        let cfg = cfg.to_str().unwrap();
        let snap = env.json(&["--config", cfg, "backup", name])["snapshot"]
            .as_str()
            .unwrap()
            .to_string();
        std::fs::remove_dir_all(app.join("data")).unwrap();
        let v = env.json(&["--config", cfg, "restore", &snap]);
        assert_eq!(v["verified"], true, "{v}");
        assert_eq!(
            std::fs::read_to_string(app.join("data/sub/a.txt")).unwrap(),
            format!("{name} data")
        );
    }
    // A name that is taken, or not a name, is refused.
    let err = env.fails(&["plugin", "new", "shop", "--dir", parent_s], 1);
    assert!(err.contains("already exists"), "{err}");
    let err = env.fails(&["plugin", "new", "Shop/x", "--dir", parent_s], 1);
    assert!(err.contains("cannot name a plugin"), "{err}");
}
