//! A coffer plugin for {{name}}, made by `coffer plugin new`.
//!
//! It captures the app's `data` folder (the `data_dir` setting) as the item `data`, restores it
//! in place and checks it is there. Make it yours: capture what your app needs to come back
//! (`host::sqlite_backup` for a SQLite database, `host::run_to_item` for a dump), record row
//! counts or versions in the metadata `capture` returns, and compare them in `verify`. Every host
//! function is documented in wit/world.wit; docs/PLUGINS.md in coffer has an example of each.
//!
//! Build: `cargo build --release --target wasm32-wasip2`, then
//! `coffer plugin inspect target/wasm32-wasip2/release/{{crate_file}}.wasm`.

wit_bindgen::generate!({
    path: "wit",
    world: "app",
});

use coffer::plugin::host;
use coffer::plugin::types::{Capability, SettingSpec};

struct Plugin;

fn setting<'a>(settings: &'a [KeyValue], name: &str, default: &'a str) -> &'a str {
    settings
        .iter()
        .find(|kv| kv.key == name)
        .map(|kv| kv.value.as_str())
        .unwrap_or(default)
}

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "{{name}}".into(),
            version: "0.1.0".into(),
            description: "{{name}}: its data folder".into(),
            settings: vec![SettingSpec {
                name: "data_dir".into(),
                description: "the app's data folder, under the app folder".into(),
                required: false,
                default_value: Some("data".into()),
            }],
            // What the plugin asks to be granted in coffer.toml: programs it runs, HTTP
            // origins it calls (`Capability::Http("setting:health_url".into())`), S3 endpoints.
            capabilities: Vec::<Capability>::new(),
            items: vec!["data".into()],
        }
    }

    fn capture(settings: Vec<KeyValue>) -> Result<String, String> {
        let dir = setting(&settings, "data_dir", "data");
        let bytes = host::capture_path("data", dir)?;
        host::log(host::LogLevel::Info, &format!("captured {dir} ({bytes} bytes)"));
        Ok(format!("{{\"bytes\": {bytes}}}"))
    }

    fn restore(
        settings: Vec<KeyValue>,
        _snapshot: SnapshotInfo,
        only: Vec<String>,
    ) -> Result<(), String> {
        if only.is_empty() || only.iter().any(|o| o == "data") {
            let dir = setting(&settings, "data_dir", "data");
            if let Some(aside) = host::restore_item("data", dir)? {
                host::log(host::LogLevel::Info, &format!("the replaced {dir} is kept as {aside}"));
            }
        }
        Ok(())
    }

    fn verify(
        settings: Vec<KeyValue>,
        _snapshot: Option<SnapshotInfo>,
    ) -> Result<Vec<Check>, String> {
        // The plugin reads its app folder (read-only) at /app.
        let dir = setting(&settings, "data_dir", "data");
        let ok = std::fs::metadata(format!("/app/{dir}")).is_ok_and(|m| m.is_dir());
        Ok(vec![Check {
            name: "data".into(),
            ok,
            detail: format!("{dir} is {}", if ok { "there" } else { "missing" }),
        }])
    }

    fn health(_settings: Vec<KeyValue>) -> Result<Vec<Check>, String> {
        // An HTTP health check: `host::http(&host::HttpRequest { method: "GET".into(), url, ..})`
        // with the origin declared in `capabilities` and granted in coffer.toml.
        Ok(vec![])
    }

    fn upgrade(_settings: Vec<KeyValue>, _to: String) -> Result<(), String> {
        Err("{{name}} has no upgrade step yet".into())
    }
}

export!(Plugin);
