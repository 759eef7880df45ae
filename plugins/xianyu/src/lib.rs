//! xianyu-auto-reply (闲鱼自动回复): two SQLite databases written live by the app
//! (`data/xianyu_data.db`, `data/user_stats.db`, WAL mode), `global_config.yml`, and uploaded
//! images under `static/uploads/images/`.
//!
//! Capture is online: the host copies each database with SQLite's backup API inside one read
//! transaction, so the app keeps writing and the copy is a consistent point in time. Integrity
//! and per-table row counts of the copies go into the snapshot's metadata. Restore stops the app
//! (a configurable command), swaps the files in (the replaced ones kept aside by the host),
//! removes stale `-wal`/`-shm` files, starts the app; the host then runs verify and health.

use coffer_plugin_sdk::prelude::*;

const DATABASES: [&str; 2] = ["xianyu_data.db", "user_stats.db"];

#[derive(Default)]
struct Xianyu;

/// Whether the app has `path`; a symlink counts even when the sandbox cannot follow it (it leads
/// outside the app folder), so that capturing it fails loudly instead of skipping it.
fn exists(path: &str) -> bool {
    std::fs::symlink_metadata(std::path::Path::new("/app").join(path)).is_ok()
}

/// `PRAGMA integrity_check` and the row count of every table.
fn inspect(query: impl Fn(&str) -> Result<Vec<Vec<String>>>) -> Result<Json> {
    let integrity = query("PRAGMA integrity_check")?.into_iter().map(|r| r.join(" ")).collect::<Vec<_>>().join("; ");
    let tables = query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?;
    let mut counts = JsonMap::new();
    for t in tables {
        let name = &t[0];
        let n = query(&format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\"")))?;
        let n: u64 = n.first().and_then(|r| r.first()).and_then(|v| v.parse().ok()).unwrap_or(0);
        counts.insert(name.clone(), n.into());
    }
    Ok(json!({ "integrity": integrity, "tables": counts }))
}

impl Plugin for Xianyu {
    fn describe() -> PluginInfo {
        PluginInfo::new("xianyu", env!("CARGO_PKG_VERSION"), "xianyu-auto-reply: SQLite databases captured live, config, uploaded images")
            .setting_or("stop_command", "command that stops the app before a restore (empty: the app is not running)", "")
            .setting_or("start_command", "command that starts the app after a restore", "")
            .setting_or("health_url", "URL answering 200 when the app is healthy", "http://127.0.0.1:8080/health")
            .setting_or("upgrade_command", "command that upgrades the app for `coffer upgrade` (\"{version}\" is replaced by the version), e.g. the deployment's own update script", "")
            .runs("setting:stop_command")
            .runs("setting:start_command")
            .runs("setting:upgrade_command")
            .http("setting:health_url")
            .drills()
            .item("db")
            .item("config")
            .item("uploads")
    }

    fn capture(_settings: &Settings) -> Result<Json> {
        let mut dbs = JsonMap::new();
        for db in DATABASES {
            let path = format!("data/{db}");
            if !exists(&path) {
                host::warn(format!("{path} does not exist; not captured"));
                continue;
            }
            let item = format!("db/{db}");
            let size = host::sqlite_backup(&item, &path)?;
            let mut facts = inspect(|sql| host::sqlite_query_item(&item, sql))?;
            if facts["integrity"] != "ok" {
                bail!("{path}: the captured copy fails PRAGMA integrity_check: {}", facts["integrity"]);
            }
            facts["bytes"] = size.into();
            host::info(format!("captured {path} ({size} bytes) online"));
            dbs.insert(db.to_string(), facts);
        }
        if dbs.is_empty() {
            bail!("neither data/xianyu_data.db nor data/user_stats.db exists: is `dir` the xianyu folder?");
        }
        let mut items = vec!["db"];
        if exists("global_config.yml") {
            host::capture_path("config/global_config.yml", "global_config.yml")?;
            items.push("config");
        }
        if exists("static/uploads/images") {
            // Images never change in part: no boundary search (WIT 0.1.3).
            host::capture_path_cut("uploads", "static/uploads/images", host::Cut::Whole)?;
            items.push("uploads");
        }
        // The version, when global_config.yml names it (`app_version: 1.4`): what an upgrade goes from.
        let version = std::fs::read_to_string("/app/global_config.yml").ok().and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("app_version:").map(|v| v.trim().trim_matches('"').to_string()))
        });
        Ok(json!({ "databases": dbs, "items": items, "app_version": version }))
    }

    fn restore(settings: &Settings, snapshot: &Snapshot, only: &[String]) -> Result<()> {
        for o in only {
            if !["db", "config", "uploads"].contains(&o.as_str()) {
                bail!("unknown item `{o}`: xianyu has db, config and uploads");
            }
        }
        host::run_setting(settings, "stop_command")?;
        let result = (|| -> Result<()> {
            if wanted(only, "db") {
                for db in DATABASES {
                    let item = format!("db/{db}");
                    if !snapshot.has(&item) {
                        continue;
                    }
                    // The app is stopped: a -wal/-shm left now belongs to the replaced database
                    // and would be replayed into the restored one.
                    for suffix in ["-wal", "-shm"] {
                        host::remove_file(&format!("data/{db}{suffix}"))?;
                    }
                    if let Some(aside) = host::restore_item(&item, &format!("data/{db}"))? {
                        host::info(format!("the replaced data/{db} is kept at {aside}"));
                    }
                }
            }
            if wanted(only, "config") && snapshot.has("config/global_config.yml") {
                host::restore_item("config/global_config.yml", "global_config.yml")?;
            }
            if wanted(only, "uploads") && snapshot.has("uploads") {
                host::restore_item("uploads", "static/uploads/images")?;
            }
            Ok(())
        })();
        // Start the app again whatever happened: a failed restore must not leave it down.
        let started = host::run_setting(settings, "start_command");
        result.and(started)
    }

    fn verify(_settings: &Settings, snapshot: Option<&Snapshot>) -> Result<Vec<Check>> {
        let mut checks = vec![];
        for db in DATABASES {
            let path = format!("data/{db}");
            let expected = snapshot.and_then(|s| s.metadata["databases"].get(db).cloned());
            if !exists(&path) {
                if expected.is_some() {
                    checks.push(Check::fail(&path, "missing"));
                }
                continue;
            }
            let facts = inspect(|sql| host::sqlite_query(&path, sql))?;
            checks.push(Check::new(&format!("{path} integrity"), facts["integrity"] == "ok", facts["integrity"].to_string()));
            if let Some(exp) = expected {
                // After an upgrade (coffer_verify = at_least) the app has moved on: tables may
                // have been added and rows may have grown, never vanished.
                let at_least = snapshot.is_some_and(|s| s.metadata["coffer_verify"] == "at_least");
                let same = if at_least {
                    exp["tables"].as_object().into_iter().flatten().all(|(t, n)| facts["tables"][t].as_u64() >= n.as_u64())
                } else {
                    exp["tables"] == facts["tables"]
                };
                checks.push(Check::new(
                    &format!("{path} row counts"),
                    same,
                    if same { format!("{}", facts["tables"]) } else { format!("expected {}{}, found {}", if at_least { "at least " } else { "" }, exp["tables"], facts["tables"]) },
                ));
            }
        }
        Ok(checks)
    }

    /// The deployment's own update script (`upgrade_command`); the host takes the snapshot before
    /// it, judges health after it and rolls back (stop, files back, start) when it fails.
    fn upgrade(settings: &Settings, to: &str) -> Result<()> {
        host::run_upgrade_command(settings, "upgrade_command", to)
    }

    fn health(settings: &Settings) -> Result<Vec<Check>> {
        let url = settings.get_or("health_url", "http://127.0.0.1:8080/health");
        let r = Request::get(url).timeout(std::time::Duration::from_secs(10)).send();
        Ok(vec![match r {
            Ok(r) if r.status == 200 => Check::pass("health", format!("GET {url}: 200")),
            Ok(r) => Check::fail("health", format!("GET {url}: HTTP {}", r.status)),
            Err(e) => Check::fail("health", format!("GET {url}: {e}")),
        }])
    }
}

export_plugin!(Xianyu);
