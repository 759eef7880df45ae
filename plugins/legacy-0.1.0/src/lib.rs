//! A plugin as a third party built it against the first published WIT, coffer:plugin@0.1.0
//! (kept verbatim in `wit/` beside this crate, never updated). The host must load it, back an
//! app up with it and restore with it for as long as 0.1.x lasts: snapshots carry their plugin.
//!
//! It captures the app's `data` folder as the item `data`, restores it in place, and verifies
//! that `data/marker.txt` is back.

wit_bindgen::generate!({
    path: "wit",
    world: "app",
});

use coffer::plugin::host;
use coffer::plugin::types::Capability;

struct Legacy;

impl Guest for Legacy {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "legacy".into(),
            version: "0.1.0".into(),
            description: "built against coffer:plugin@0.1.0 (tests only)".into(),
            settings: vec![],
            capabilities: Vec::<Capability>::new(),
            items: vec!["data".into()],
        }
    }

    fn capture(_settings: Vec<KeyValue>) -> Result<String, String> {
        let bytes = host::capture_path("data", "data")?;
        host::log(host::LogLevel::Info, &format!("captured {bytes} bytes"));
        Ok(format!("{{\"bytes\": {bytes}}}"))
    }

    fn restore(
        _settings: Vec<KeyValue>,
        snapshot: SnapshotInfo,
        _only: Vec<String>,
    ) -> Result<(), String> {
        let aside = host::restore_item("data", "data")?;
        host::log(
            host::LogLevel::Info,
            &format!("restored snapshot {} (old data: {aside:?})", snapshot.id),
        );
        Ok(())
    }

    fn verify(
        _settings: Vec<KeyValue>,
        _snapshot: Option<SnapshotInfo>,
    ) -> Result<Vec<Check>, String> {
        let ok = std::fs::metadata("/app/data/marker.txt").is_ok();
        Ok(vec![Check {
            name: "marker".into(),
            ok,
            detail: "data/marker.txt is present".into(),
        }])
    }

    fn health(_settings: Vec<KeyValue>) -> Result<Vec<Check>, String> {
        Ok(vec![])
    }

    fn upgrade(_settings: Vec<KeyValue>, _to: String) -> Result<(), String> {
        Err("not supported".into())
    }
}

export!(Legacy);
