//! SsalgTen, deployed as its manual says: one folder (e.g. `/opt/ssalgten`) with
//! `docker-compose.yml`, `.env` and `configs/`; PostgreSQL (`ssalgten`) in the `database`
//! service; the backend's files in the named volume `ssalgten-backend-data`.
//!
//! Capture runs while the app runs: `pg_dump` inside the `database` service (through the host's
//! Compose exec) reads one exported snapshot, and every table's rows and checksum are taken at
//! that same snapshot; then the files and the backend volume. The metadata binds the snapshot to
//! the version that wrote it: `APP_VERSION`, `IMAGE_TAG`, every service's image id and digests,
//! and the last applied migration (the backend migrates forward at every start, so going back
//! needs the old database AND the old images).
//!
//! Restore stops the app services (the database stays up), puts the files back (each replaced
//! one kept beside it), loads the dump into a FRESH database (the current one is renamed aside,
//! never dropped: the app's own `--clean` dump form would drop only the objects the dump has,
//! and leave a newer migration's tables behind), puts the volume back, starts everything with
//! the snapshot's `IMAGE_TAG`, and waits for health: `pg_isready`, `GET /api/health` of the
//! backend, `/health` of the frontend.
//!
//! A drill (`coffer drill ssalgten`) touches nothing live: the files and the volume go into the
//! scratch folder, the dump into a scratch database `<db>_drill_<time>` on the same server, and
//! verify compares that database exactly (rows and checksums) with the snapshot, then drops it.

use std::time::{Duration, Instant};

use coffer_plugin_sdk::compose::{env_value, with_env_value};
use coffer_plugin_sdk::pg::{Format, Pg, Via};
use coffer_plugin_sdk::prelude::*;
use coffer_plugin_sdk::retry_until;

/// The deployment files captured when present (`configs` is a folder).
const FILES: [&str; 7] = [".env", "docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml", "docker-compose.override.yml", "configs"];
/// Tags that move: a snapshot bound to one of them cannot say which image wrote it.
const MOVING_TAGS: [&str; 5] = ["", "latest", "main", "master", "edge"];

#[derive(Default)]
struct Ssalgten;

/// The settings, read once.
struct Conf {
    project: Project,
    database: String,
    db_user: String,
    db_service: String,
    app_services: Vec<String>,
    volume: String,
    backend_url: String,
    frontend_url: String,
    grace: Duration,
    wait: Duration,
    drill: bool,
}

impl Conf {
    fn new(s: &Settings) -> Result<Conf> {
        let secs = |name: &str, default: &str| -> Result<Duration> {
            let v = s.get_or(name, default);
            v.parse::<u64>().map(Duration::from_secs).map_err(|_| Error::msg(format!("setting {name} is '{v}': a number of seconds")))
        };
        Ok(Conf {
            project: Project::new(s.get_or("project", "ssalgten"), ""),
            database: s.get_or("database", "ssalgten").into(),
            db_user: s.get_or("db_user", "ssalgten").into(),
            db_service: s.get_or("database_service", "database").into(),
            app_services: s.list("app_services"),
            volume: s.get_or("volume", "backend-data").into(),
            backend_url: s.get_or("backend_url", "http://127.0.0.1:3001").trim_end_matches('/').into(),
            frontend_url: s.get_or("frontend_url", "http://127.0.0.1:80").trim_end_matches('/').into(),
            grace: secs("stop_timeout_secs", "30")?,
            wait: secs("start_timeout_secs", "300")?,
            drill: s.drill(),
        })
    }

    /// The database, reached by psql and pg_dump inside the database service.
    fn pg(&self, env: &str) -> Result<Pg> {
        let password = env_value(env, "DB_PASSWORD").ok_or_else(|| Error::msg("DB_PASSWORD is not set in .env: SsalgTen's database password lives there"))?;
        Ok(Pg {
            via: Via::Service(self.project.clone(), self.db_service.clone()),
            host: "127.0.0.1".into(),
            port: "5432".into(),
            user: self.db_user.clone(),
            password,
            database: self.database.clone(),
            maintenance_db: "postgres".into(),
        })
    }

}

fn read_env() -> Result<String> {
    std::fs::read_to_string("/app/.env").map_err(|e| Error::msg(format!(".env of the deployment folder cannot be read ({e}): SsalgTen keeps DB_PASSWORD and IMAGE_TAG there")))
}

fn service_json(s: &Service) -> Json {
    json!({ "image": s.image, "state": s.state, "image_id": s.image_id, "repo_digests": s.repo_digests })
}

/// The newest migration applied to `pg`'s database (Prisma's table), `None` before the first.
fn last_migration(pg: &Pg) -> Result<Option<String>> {
    let exists = pg.query(&pg.database, "SELECT to_regclass('public._prisma_migrations') IS NOT NULL")?;
    if exists.first().and_then(|r| r.first()).map(String::as_str) != Some("t") {
        return Ok(None);
    }
    let rows = pg.query(&pg.database, "SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY migration_name DESC LIMIT 1")?;
    Ok(rows.into_iter().next().and_then(|r| r.into_iter().next()))
}

/// Migrations that started and never finished (Prisma leaves `finished_at` empty).
fn unfinished_migrations(pg: &Pg) -> Result<Vec<String>> {
    if last_migration(pg)?.is_none() {
        return Ok(vec![]);
    }
    let rows = pg.query(&pg.database, "SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NULL AND rolled_back_at IS NULL ORDER BY 1")?;
    Ok(rows.into_iter().filter_map(|r| r.into_iter().next()).collect())
}

fn pg_ready(c: &Conf) -> std::result::Result<(), String> {
    match c.project.exec(&c.db_service, ["pg_isready", "-U", &c.db_user, "-d", &c.database]).timeout(Duration::from_secs(20)).run() {
        Ok(o) if o.success() => Ok(()),
        Ok(o) => Err(format!("pg_isready: {}{}", o.stdout_text().trim(), o.stderr_text().trim())),
        Err(e) => Err(e.to_string()),
    }
}

/// `GET /api/health` of the backend answers 200 with `"success": true`.
fn backend_up(c: &Conf) -> std::result::Result<String, String> {
    let url = format!("{}/api/health", c.backend_url);
    match Request::get(&url).timeout(Duration::from_secs(5)).send() {
        Ok(r) if r.status == 200 => match r.json() {
            Ok(j) if j["success"] == true => Ok(j["data"]["version"].as_str().unwrap_or("?").to_string()),
            _ => Err(format!("{url} answered {}", r.text().trim())),
        },
        Ok(r) => Err(format!("{url} answered {} {}", r.status, r.text().trim())),
        Err(e) => Err(e.to_string()),
    }
}

/// `GET /health` of the frontend answers `healthy`.
fn frontend_up(c: &Conf) -> std::result::Result<(), String> {
    let url = format!("{}/health", c.frontend_url);
    match Request::get(&url).timeout(Duration::from_secs(5)).send() {
        Ok(r) if r.status == 200 && r.text().trim() == "healthy" => Ok(()),
        Ok(r) => Err(format!("{url} answered {} {}", r.status, r.text().trim())),
        Err(e) => Err(e.to_string()),
    }
}

/// The database service up, answering.
fn database_up(c: &Conf) -> Result<()> {
    c.project.up(&[c.db_service.as_str()], c.wait)?;
    retry_until(Instant::now(), c.wait, || pg_ready(c)).map_err(|e| Error::msg(format!("the database did not answer within {} s: {e}", c.wait.as_secs())))
}

/// `up -d` of everything, then health with retries until `c.wait` has passed.
fn start(c: &Conf) -> Result<()> {
    let begun = Instant::now();
    c.project.up(&[], c.wait)?;
    retry_until(begun, c.wait, || pg_ready(c).and_then(|_| backend_up(c)).and_then(|_| frontend_up(c)))
        .map_err(|e| Error::msg(format!("project {} is up but not healthy after {} s: {e}", c.project.name(), c.wait.as_secs())))
}

/// The services that are not the database (or Redis): stopped around a restore.
fn app_services(c: &Conf, running: &[Service]) -> Vec<String> {
    if !c.app_services.is_empty() {
        return c.app_services.clone();
    }
    running.iter().filter(|s| s.name != c.db_service && s.name != "redis").map(|s| s.name.clone()).collect()
}

/// Every table's rows compared with the snapshot's: `exact` (a static copy: rows and checksums
/// equal) or not (a running app: rows may have grown, never vanished). Tables the snapshot does
/// not have fail unless `extra_ok` (after an upgrade, which may add them).
fn compare_tables(recorded: &JsonMap<String, Json>, now: &JsonMap<String, Json>, exact: bool, extra_ok: bool) -> Vec<Check> {
    let mut checks = vec![];
    for (table, want) in recorded {
        let want_rows = want["rows"].as_u64().unwrap_or(0);
        let name = format!("table {table}");
        let check = match now.get(table) {
            None => Check::fail(&name, "missing"),
            Some(got) => {
                let rows = got["rows"].as_u64().unwrap_or(0);
                if exact && rows != want_rows {
                    Check::fail(&name, format!("{rows} rows, the snapshot has {want_rows}"))
                } else if exact && got["checksum"] != want["checksum"] {
                    Check::fail(&name, format!("{rows} rows, but their checksum {} differs from the snapshot's {}", got["checksum"], want["checksum"]))
                } else if rows < want_rows {
                    Check::fail(&name, format!("{rows} rows, fewer than the snapshot's {want_rows}"))
                } else if exact {
                    Check::pass(&name, format!("{rows} rows, checksum equal"))
                } else {
                    Check::pass(&name, format!("{rows} rows (≥ {want_rows})"))
                }
            }
        };
        checks.push(check);
    }
    let extra: Vec<&String> = now.keys().filter(|t| !recorded.contains_key(*t)).collect();
    if !extra.is_empty() && !extra_ok {
        checks.push(Check::fail("schema", format!("tables the snapshot does not have: {} (a migration newer than the snapshot?)", extra.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", "))));
    }
    checks
}

fn migration_check(want: Option<&str>, got: Option<String>, at_least: bool) -> Check {
    let (want, got) = (want.unwrap_or(""), got.unwrap_or_default());
    if want == got {
        Check::pass("migration", if got.is_empty() { "none applied, as in the snapshot".to_string() } else { format!("last applied {got}, as in the snapshot") })
    } else if at_least && got.as_str() > want {
        Check::pass("migration", format!("last applied {got} (the snapshot had {want})"))
    } else {
        Check::fail("migration", format!("last applied is {}, the snapshot's is {}", if got.is_empty() { "none" } else { &got }, if want.is_empty() { "none" } else { want }))
    }
}

/// Files of the snapshot (`files/NAME` items) put back under the folder; a replaced file is kept
/// beside it unless it was the same.
fn restore_files(meta: &Json) -> Result<()> {
    let names: Vec<String> = meta["files"].as_array().map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect()).unwrap_or_default();
    for name in names {
        let item = format!("files/{name}");
        if name != "configs" {
            let want = host::read_item(&item)?;
            if std::fs::read(format!("/app/{name}")).is_ok_and(|now| now == want) {
                continue;
            }
        }
        match host::restore_item(&item, &name)? {
            Some(old) => host::info(format!("{name} restored; the replaced one is kept as {old}")),
            None => host::info(format!("{name} restored")),
        }
    }
    Ok(())
}

/// A drill: files and volume into the scratch folder, the dump into a scratch database on the
/// live server (a name of its own; nothing live is stopped or written).
fn drill_restore(pg: &Pg, meta: &Json) -> Result<()> {
    for name in meta["files"].as_array().into_iter().flatten().filter_map(Json::as_str) {
        host::restore_item(&format!("files/{name}"), name)?;
    }
    if let Some(item) = meta["volume"]["item"].as_str() {
        host::restore_item(item, "volume")?;
    }
    let item = meta["db"]["item"].as_str().ok_or_else(|| Error::msg("the snapshot has no database dump"))?;
    pg.drill_load(item, Format::Plain)
}

/// A drill's verify: the scratch database against the snapshot, exactly; then it is dropped.
fn drill_verify(pg: &Pg, snap: &Snapshot) -> Result<Vec<Check>> {
    let scratch = pg.drill_scratch()?;
    let meta = &snap.metadata;
    let checked = (|| -> Result<Vec<Check>> {
        let now = scratch.facts_now()?;
        let recorded = meta["db"]["tables"].as_object().cloned().unwrap_or_default();
        let mut checks = compare_tables(&recorded, &now, true, false);
        checks.push(migration_check(meta["last_migration"].as_str(), last_migration(&scratch)?, false));
        let unfinished = unfinished_migrations(&scratch)?;
        if !unfinished.is_empty() {
            checks.push(Check::fail("migrations", format!("started and never finished: {}", unfinished.join(", "))));
        }
        Ok(checks)
    })();
    let dropped = pg.drop_scratch(&scratch);
    let mut checks = checked?;
    dropped?;
    for name in meta["files"].as_array().into_iter().flatten().filter_map(Json::as_str) {
        let there = std::path::Path::new("/app").join(name).exists();
        checks.push(Check::new(&format!("file {name}"), there, if there { "restored" } else { "missing from the restore" }));
    }
    if meta["volume"]["item"].is_string() {
        let there = std::path::Path::new("/app/volume").is_dir();
        checks.push(Check::new("volume", there, if there { "restored" } else { "missing from the restore" }));
    }
    Ok(checks)
}

impl Plugin for Ssalgten {
    fn describe() -> PluginInfo {
        PluginInfo::new("ssalgten", env!("CARGO_PKG_VERSION"), "SsalgTen: pg_dump inside its database service while it runs, its .env, compose files and configs/, the backend volume; images pinned, guarded upgrades")
            .setting_or("project", "the Compose project name (COMPOSE_PROJECT_NAME in .env)", "ssalgten")
            .setting_or("database", "the PostgreSQL database", "ssalgten")
            .setting_or("db_user", "its user (POSTGRES_USER)", "ssalgten")
            .setting_or("database_service", "the PostgreSQL service of the compose file", "database")
            .setting_or("app_services", "the services stopped around a restore (comma-separated; default: all but the database and redis)", "")
            .setting_or("volume", "the backend's data volume, by its key in the compose file", "backend-data")
            .setting_or("backend_url", "the backend's origin (GET /api/health)", "http://127.0.0.1:3001")
            .setting_or("frontend_url", "the frontend's origin (GET /health)", "http://127.0.0.1:80")
            .setting_or("stop_timeout_secs", "grace before a stopping container is killed", "30")
            .setting_or("start_timeout_secs", "how long to wait for the app to be up and healthy", "300")
            .drills()
            .compose("setting:project")
            .compose_exec("setting:project", "database")
            .http("setting:backend_url")
            .http("setting:frontend_url")
            .item("files")
            .item("db")
            .item("volume")
    }

    fn capture(settings: &Settings) -> Result<Json> {
        let c = Conf::new(settings)?;
        let env = read_env()?;
        if let Some(name) = env_value(&env, "COMPOSE_PROJECT_NAME") {
            if name != c.project.name() {
                bail!("COMPOSE_PROJECT_NAME in .env is '{name}' but the setting project is '{}': set project = \"{name}\" (and grant it)", c.project.name());
            }
        }
        let tag = env_value(&env, "IMAGE_TAG").unwrap_or_default();
        if MOVING_TAGS.contains(&tag.as_str()) {
            host::warn(format!("IMAGE_TAG is '{tag}', a moving tag: the snapshot records the image ids that ran, but a rollback can only pin images still on this host; set a fixed IMAGE_TAG"));
        }
        let running = c.project.ps()?;
        let mut services = JsonMap::new();
        for s in &running {
            services.insert(s.name.clone(), service_json(s));
        }
        let pg = c.pg(&env)?;
        pg_ready(&c).map_err(|e| Error::msg(format!("the database must be running to be dumped: {e}")))?;
        let db = pg.capture(Format::Plain)?;
        let migration = last_migration(&pg)?;
        let mut files = vec![];
        for name in FILES {
            if std::path::Path::new("/app").join(name).exists() {
                host::capture_path(&format!("files/{name}"), name)?;
                files.push(name);
            }
        }
        let item = format!("volume/{}", c.volume);
        let bytes = c.project.capture_volume(&c.volume, &item)?;
        let app_version = env_value(&env, "APP_VERSION").filter(|v| !v.is_empty()).unwrap_or_else(|| tag.clone());
        host::info(format!("SsalgTen {app_version} (IMAGE_TAG {tag}), last migration {}", migration.as_deref().unwrap_or("none")));
        Ok(json!({
            "project": c.project.name(),
            "app_version": app_version,
            "image_tag": tag,
            "services": services,
            "last_migration": migration,
            "db": db,
            "files": files,
            "volume": { "key": c.volume, "item": item, "bytes": bytes },
            "consistency": {
                "db": "one point in time: pg_dump and the row counts read the same exported snapshot",
                "volume": "copied live, file by file, after the dump",
            },
        }))
    }

    fn restore(settings: &Settings, snapshot: &Snapshot, only: &[String]) -> Result<()> {
        let c = Conf::new(settings)?;
        let meta = &snapshot.metadata;
        // The snapshot's .env, not the live one: the folder may be gone.
        let env = String::from_utf8_lossy(&host::read_item("files/.env")?).into_owned();
        let pg = c.pg(&env)?;
        if c.drill {
            return drill_restore(&pg, meta);
        }
        let (files, db, volume) = (wanted(only, "files"), wanted(only, "db"), wanted(only, "volume"));
        if !files && !db && !volume {
            bail!("nothing to restore: this snapshot's parts are files, db and volume");
        }
        // The app stops (the database stays up for the load); with the folder gone there is
        // nothing of it to stop.
        if std::path::Path::new("/app/.env").exists() {
            let running = c.project.ps()?;
            let stop = app_services(&c, &running);
            host::info(format!("stopping {}", stop.join(", ")));
            c.project.stop(&stop.iter().map(String::as_str).collect::<Vec<_>>(), c.grace)?;
        }
        if files {
            restore_files(meta)?;
        }
        if db {
            database_up(&c)?;
            let item = meta["db"]["item"].as_str().ok_or_else(|| Error::msg("the snapshot has no database dump"))?;
            host::info(format!("loading the dump into a fresh database {}", c.database));
            pg.restore(item, Format::Plain, true)?;
        }
        if volume {
            if let (Some(key), Some(item)) = (meta["volume"]["key"].as_str(), meta["volume"]["item"].as_str()) {
                host::info(format!("restoring volume {key}"));
                c.project.restore_volume(key, item)?;
            }
        }
        // The snapshot's .env pins IMAGE_TAG; the image ids are checked by verify.
        let tag = env_value(&env, "IMAGE_TAG").unwrap_or_default();
        host::info(format!("starting SsalgTen with IMAGE_TAG {tag}"));
        start(&c)
    }

    fn verify(settings: &Settings, snapshot: Option<&Snapshot>) -> Result<Vec<Check>> {
        let c = Conf::new(settings)?;
        let env = if c.drill { String::from_utf8_lossy(&std::fs::read("/app/.env")?).into_owned() } else { read_env()? };
        let pg = c.pg(&env)?;
        let Some(snap) = snapshot else {
            // The live app without a snapshot: it answers, and no migration stopped halfway.
            let mut checks = vec![match pg_ready(&c) {
                Ok(()) => Check::pass("database", "pg_isready: accepting connections"),
                Err(e) => Check::fail("database", e),
            }];
            let unfinished = unfinished_migrations(&pg)?;
            checks.push(if unfinished.is_empty() { Check::pass("migrations", "every started migration finished") } else { Check::fail("migrations", format!("started and never finished: {}", unfinished.join(", "))) });
            return Ok(checks);
        };
        if c.drill {
            return drill_verify(&pg, snap);
        }
        let meta = &snap.metadata;
        // After an upgrade (coffer_verify = at_least) the app has moved on: rows and migrations
        // may have grown. Otherwise the app runs again since the restore: rows may have grown.
        let after_upgrade = meta["coffer_verify"] == "at_least";
        let mut checks = vec![];
        if snap.has("db") {
            let recorded = meta["db"]["tables"].as_object().cloned().unwrap_or_default();
            checks.extend(compare_tables(&recorded, &pg.facts_now()?, false, after_upgrade));
            checks.push(migration_check(meta["last_migration"].as_str(), last_migration(&pg)?, after_upgrade));
        }
        if !after_upgrade {
            let ps = c.project.ps()?;
            if let Some(recorded) = meta["services"].as_object() {
                for s in &ps {
                    let want = recorded.get(&s.name).and_then(|r| r["image_id"].as_str()).unwrap_or_default();
                    if want.is_empty() || s.name == c.db_service {
                        continue;
                    }
                    checks.push(if s.image_id == want {
                        Check::pass(&format!("image {}", s.name), format!("runs {want}, as recorded"))
                    } else {
                        Check::fail(&format!("image {}", s.name), format!("runs {}, but the snapshot was written by {want}", if s.image_id.is_empty() { "nothing" } else { &s.image_id }))
                    });
                }
            }
        }
        Ok(checks)
    }

    fn health(settings: &Settings) -> Result<Vec<Check>> {
        let c = Conf::new(settings)?;
        let mut checks = vec![match pg_ready(&c) {
            Ok(()) => Check::pass("database", "pg_isready: accepting connections"),
            Err(e) => Check::fail("database", e),
        }];
        checks.push(match backend_up(&c) {
            Ok(v) => Check::pass("backend", format!("{}/api/health: running {v}", c.backend_url)),
            Err(e) => Check::fail("backend", e),
        });
        checks.push(match frontend_up(&c) {
            Ok(()) => Check::pass("frontend", format!("{}/health: healthy", c.frontend_url)),
            Err(e) => Check::fail("frontend", e),
        });
        let ps = c.project.ps()?;
        let down: Vec<String> = ps.iter().filter(|s| s.state != "running").map(|s| format!("{} {}", s.name, s.state)).collect();
        checks.push(if down.is_empty() { Check::pass("services", format!("{} running", ps.len())) } else { Check::fail("services", down.join(", ")) });
        Ok(checks)
    }

    /// SsalgTen's update: IMAGE_TAG (and APP_VERSION) set in .env, the database up, then the
    /// app up: the new backend applies its migrations as it starts (`prisma migrate deploy`).
    /// The host judges health after it and rolls back (database, files, volume, images).
    fn upgrade(settings: &Settings, to: &str) -> Result<()> {
        let c = Conf::new(settings)?;
        let env = read_env()?;
        if MOVING_TAGS.contains(&to) {
            bail!("'{to}' is a moving tag: upgrade to a fixed one so the pre-upgrade snapshot and the new version each name one image");
        }
        let from = env_value(&env, "IMAGE_TAG").unwrap_or_default();
        let pg = c.pg(&env)?;
        let before = last_migration(&pg)?;
        host::info(format!("IMAGE_TAG {from} → {to}"));
        let text = with_env_value(&with_env_value(&env, "IMAGE_TAG", to), "APP_VERSION", to);
        host::write_file(".env", text)?;
        database_up(&c)?;
        host::info(format!("starting {to}: the backend applies its migrations as it starts"));
        c.project.up(&[], c.wait)?;
        // The migration step is done once the backend answers (healthy or not).
        let begun = Instant::now();
        let _ = retry_until(begun, c.wait.min(Duration::from_secs(120)), || match backend_up(&c) {
            Err(e) if e.contains("answered") => Ok(()),
            other => other.map(|_| ()),
        });
        let after = last_migration(&pg)?;
        if after != before {
            host::info(format!("migrated: last migration {} → {}", before.as_deref().unwrap_or("none"), after.as_deref().unwrap_or("none")));
        }
        Ok(())
    }
}

export_plugin!(Ssalgten);

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: u64, sum: &str) -> Json {
        json!({ "rows": rows, "checksum": sum })
    }

    #[test]
    fn tables_compare_exactly_in_drills_and_by_growth_live() {
        let mut rec = JsonMap::new();
        rec.insert("public.nodes".into(), t(3, "a"));
        let mut now = rec.clone();
        assert!(compare_tables(&rec, &now, true, false).iter().all(|c| c.ok));
        now.insert("public.nodes".into(), t(4, "b"));
        assert!(!compare_tables(&rec, &now, true, false)[0].ok);
        assert!(compare_tables(&rec, &now, false, false)[0].ok);
        now.insert("public.nodes".into(), t(2, "b"));
        assert!(!compare_tables(&rec, &now, false, false)[0].ok);
        now.insert("public.nodes".into(), t(3, "a"));
        now.insert("public.visitor_logs".into(), t(0, "0"));
        let checks = compare_tables(&rec, &now, false, false);
        assert!(checks.iter().any(|c| c.name == "schema" && !c.ok));
        assert!(compare_tables(&rec, &now, false, true).iter().all(|c| c.ok));
        assert!(migration_check(Some("2024_a"), Some("2024_b".into()), true).ok);
        assert!(!migration_check(Some("2024_a"), Some("2024_b".into()), false).ok);
        assert!(!migration_check(Some("2024_b"), Some("2024_a".into()), true).ok);
    }
}
