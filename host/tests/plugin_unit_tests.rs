//! The plugins' own unit tests (plugins/ is a workspace of its own, built for wasm by
//! host/build.rs): run natively here so `cargo test --workspace` runs them too. Their pure
//! logic (env files, table comparisons, tags) needs no host.

use std::path::Path;
use std::process::Command;

#[test]
fn the_plugins_unit_tests_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = root.join("target/plugin-unit-tests");
    let out = Command::new(env!("CARGO"))
        .args(["test", "--workspace", "--manifest-path"])
        .arg(root.join("plugins/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        // The outer test run's flags are for the host.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "plugin unit tests failed:\n{stdout}\n{stderr}"
    );
    let passed: usize = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split_whitespace().next()?.parse::<usize>().ok())
        .sum();
    assert!(
        passed >= 3,
        "the plugins' unit tests ran ({passed} passed):\n{stdout}"
    );
    eprintln!("{passed} plugin unit tests passed");
}
