//! A coffer plugin for Notes, a small fictional app that keeps one Markdown file per note under
//! `notes/` and its settings in `notes.json`.
//!
//! Capture takes both, and records how many notes there were; verify checks a restored folder
//! holds as many; restore puts both back (`--only notes` or `--only settings` for one of them).

use coffer_plugin_sdk::prelude::*;

#[derive(Default)]
struct Notes;

fn count_notes() -> Result<u64> {
    let dir = std::path::Path::new("/app/notes");
    if !dir.exists() {
        return Ok(0);
    }
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        if e?.path().extension().is_some_and(|x| x == "md") {
            n += 1;
        }
    }
    Ok(n)
}

impl Plugin for Notes {
    fn describe() -> PluginInfo {
        PluginInfo::new("notes", env!("CARGO_PKG_VERSION"), "Notes: Markdown notes and their settings")
            .setting_or("health_url", "the app's health endpoint (empty: no health check)", "")
            .http("setting:health_url")
            .item("notes")
            .item("settings")
    }

    fn capture(_settings: &Settings) -> Result<Json> {
        let notes = count_notes()?;
        host::capture_path("notes", "notes")?;
        if std::path::Path::new("/app/notes.json").exists() {
            host::capture_path("settings/notes.json", "notes.json")?;
        }
        host::info(format!("captured {notes} notes"));
        Ok(json!({ "notes": notes }))
    }

    fn restore(_settings: &Settings, snapshot: &Snapshot, only: &[String]) -> Result<()> {
        let all = only.is_empty();
        if all || only.iter().any(|o| o == "notes") {
            host::restore_item("notes", "notes")?;
        }
        if (all || only.iter().any(|o| o == "settings")) && snapshot.has("settings/notes.json") {
            host::restore_item("settings/notes.json", "notes.json")?;
        }
        Ok(())
    }

    fn verify(_settings: &Settings, snapshot: Option<&Snapshot>) -> Result<Vec<Check>> {
        let found = count_notes()?;
        Ok(match snapshot.and_then(|s| s.metadata["notes"].as_u64()) {
            Some(expected) => vec![Check::new("note count", found == expected, format!("{found} of {expected}"))],
            None => vec![Check::pass("note count", format!("{found}"))],
        })
    }

    fn health(settings: &Settings) -> Result<Vec<Check>> {
        match settings.get("health_url").filter(|u| !u.is_empty()) {
            None => Ok(vec![]),
            Some(url) => {
                let ok = Request::get(url).send().map(|r| r.status == 200).unwrap_or(false);
                Ok(vec![Check::new("health", ok, url)])
            }
        }
    }
}

export_plugin!(Notes);
