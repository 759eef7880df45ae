//! Builds the plugins in ../plugins for wasm32-wasip2 and embeds the app plugins in the binary.
//!
//! The plugins are a cargo workspace of their own, built by a nested cargo into
//! `<target>/wasm-plugins` (shared by every profile, so it is built once). The built-in plugins
//! become byte constants (`BUILTIN`); test plugins are left on disk, and their folder is passed to
//! the tests as `COFFER_TEST_PLUGIN_DIR`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugins compiled into coffer, by name and crate.
const BUILTIN: &[(&str, &str)] = &[
    ("xianyu", "coffer_plugin_xianyu"),
    ("zhiyun", "coffer_plugin_zhiyun"),
    ("cskefu", "coffer_plugin_cskefu"),
    ("ssalgten", "coffer_plugin_ssalgten"),
];
/// Plugins built for the tests only.
const TEST_ONLY: &[&str] = &[
    "coffer_plugin_hostile",
    "coffer_plugin_probe",
    "coffer_plugin_legacy",
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap();
    let plugins = root.join("plugins");
    for p in [
        "Cargo.toml",
        "Cargo.lock",
        "sdk",
        "xianyu",
        "zhiyun",
        "cskefu",
        "ssalgten",
        "hostile",
        "probe",
        "legacy-0.1.0",
    ] {
        println!("cargo:rerun-if-changed={}", plugins.join(p).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // OUT_DIR is <target>/<profile>/build/<pkg>/out.
    let target = out.ancestors().nth(4).unwrap().join("wasm-plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(plugins.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target);
    // The outer build's settings are for the host, not for wasm.
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_PROFILE_")
            || k.starts_with("CARGO_BUILD_")
            || matches!(
                k.as_str(),
                "CARGO_ENCODED_RUSTFLAGS"
                    | "RUSTFLAGS"
                    | "CARGO_TARGET_DIR"
                    | "RUSTC_WORKSPACE_WRAPPER"
            )
        {
            cmd.env_remove(k);
        }
    }
    let status = cmd.status().expect("running cargo for the plugins");
    if !status.success() {
        panic!(
            "building the plugins for wasm32-wasip2 failed (see above). Is the target installed? \
             `rustup target add wasm32-wasip2`"
        );
    }
    let built = target.join("wasm32-wasip2/release");
    let mut src = String::from("/// Plugins compiled into this binary: (name, wasm).\npub const BUILTIN: &[(&str, &[u8])] = &[\n");
    for (name, krate) in BUILTIN {
        let wasm = copy(&built, &out, krate);
        src.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            wasm.display().to_string()
        ));
    }
    src.push_str("];\n");
    for krate in TEST_ONLY {
        copy(&built, &out, krate);
    }
    std::fs::write(out.join("builtin_plugins.rs"), src).unwrap();
    println!("cargo:rustc-env=COFFER_TEST_PLUGIN_DIR={}", out.display());
}

fn copy(built: &Path, out: &Path, krate: &str) -> PathBuf {
    let from = built.join(format!("{krate}.wasm"));
    let to = out.join(format!("{krate}.wasm"));
    std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    to
}
