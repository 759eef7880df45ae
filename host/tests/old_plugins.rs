//! Plugins stored in old snapshots keep loading: a snapshot carries the plugin that made it, and
//! a restore years later runs that very plugin on a newer host. `plugins/legacy-0.1.0` is built
//! against the first published WIT, coffer:plugin@0.1.0, kept verbatim beside it; the current
//! host must describe it, back up with it and restore with it.

mod common;

use std::path::Path;

use common::*;

#[test]
fn plugin_built_against_wit_0_1_0_backs_up_and_restores() {
    let wasm = Path::new(env!("COFFER_TEST_PLUGIN_DIR")).join("coffer_plugin_legacy.wasm");
    let env = Env::new();
    let info = env.json(&["plugin", "inspect", wasm.to_str().unwrap()]);
    assert_eq!(info["wit"], "0.1.0", "{info}");
    assert_eq!(info["name"], "legacy", "{info}");

    let app = env.path("app");
    std::fs::create_dir_all(app.join("data/nested")).unwrap();
    std::fs::write(app.join("data/marker.txt"), "here\n").unwrap();
    std::fs::write(app.join("data/nested/rows.bin"), noise(300_000, 11)).unwrap();
    let cfg = env.app_config("coffer.toml", "legacy", &wasm, &app, "");
    let cfg = cfg.to_str().unwrap();
    let before = manifest(&app.join("data"));
    let snap = env.json(&["--config", cfg, "backup", "legacy"]);
    assert_eq!(snap["plugin"]["name"], "legacy", "{snap}");
    let id = snap["snapshot"].as_str().unwrap();

    // The app loses its data; the plugin stored in the snapshot puts it back and verifies it.
    std::fs::remove_file(app.join("data/marker.txt")).unwrap();
    std::fs::write(app.join("data/nested/rows.bin"), b"overwritten").unwrap();
    let report = env.json(&["--config", cfg, "restore", id]);
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["verify"][0]["name"], "marker", "{report}");
    assert_same(&before, &manifest(&app.join("data")));
}
