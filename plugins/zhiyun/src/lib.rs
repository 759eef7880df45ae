//! zhiyun (智云) smart customer service: its data lives in three servers, and this plugin
//! captures each consistently and puts them back in the operations manual's disaster-recovery
//! order (database, files, vectors), then verifies and checks health.
//!
//! - PostgreSQL, database `zhiyun`: a psql session opens a read-only repeatable-read transaction
//!   and exports its snapshot; `pg_dump --snapshot` streams the dump (plain SQL by default: it
//!   deduplicates best day to day) into `db/`, and the same session then counts and checksums
//!   every table at that very snapshot, so the metadata describes exactly what the dump holds
//!   even while the app writes.
//! - Qdrant: each collection (all by default) through the snapshot API into `vectors/`; the
//!   server-side snapshot is deleted afterwards, also when the download fails.
//! - MinIO (any S3 store): the bucket (prefix) as a tree of objects in `files/`.

mod qdrant;

use coffer_plugin_sdk::compose::{env_value, with_env_value};
use coffer_plugin_sdk::host::Bucket;
use coffer_plugin_sdk::prelude::*;

use coffer_plugin_sdk::pg::{Format, Pg};
use qdrant::Qdrant;

const ITEMS: [&str; 3] = ["db", "files", "vectors"];

#[derive(Default)]
struct Zhiyun;

/// The app's own services to stop around a restore when it runs under Compose.
fn app_services(settings: &Settings) -> Option<(Project, Vec<String>)> {
    let project = settings.get_or("db_compose_project", "").trim();
    let services = settings.list("app_compose_services");
    if project.is_empty() || services.is_empty() {
        return None;
    }
    Some((Project::new(project, settings.get_or("db_compose_dir", "")), services))
}

/// Under Compose with `image_tag_var` set: the project's `.env` (relative to the app folder) and
/// the variable.
fn image_tag_env(settings: &Settings) -> Option<(String, String)> {
    let var = settings.get_or("image_tag_var", "").trim().to_string();
    app_services(settings)?;
    if var.is_empty() {
        return None;
    }
    let dir = settings.get_or("db_compose_dir", "").trim_matches('/');
    Some((if dir.is_empty() { ".env".into() } else { format!("{dir}/.env") }, var))
}

fn flag(settings: &Settings, name: &str) -> bool {
    matches!(settings.get_or(name, "false").trim(), "true" | "yes" | "1")
}

/// The MinIO bucket, or `None` when `minio_bucket` is empty (no file storage to capture).
fn bucket(settings: &Settings) -> Result<Option<Bucket>> {
    let name = settings.get_or("minio_bucket", "").trim();
    if name.is_empty() {
        return Ok(None);
    }
    Ok(Some(Bucket {
        endpoint: settings
            .get_or("minio_endpoint", "http://127.0.0.1:9000")
            .to_string(),
        region: settings.get_or("minio_region", "us-east-1").to_string(),
        name: name.to_string(),
        prefix: settings.get_or("minio_prefix", "").to_string(),
        access_key_id: settings.require("minio_access_key")?.to_string(),
        secret_access_key: settings.require("minio_secret_key")?.to_string(),
    }))
}

/// The collections to capture: the setting's list, else every one the server has.
fn collections(settings: &Settings, q: &Qdrant) -> Result<Vec<String>> {
    let listed = settings.list("qdrant_collections");
    if listed.is_empty() {
        q.collections()
    } else {
        Ok(listed)
    }
}

impl Plugin for Zhiyun {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "zhiyun",
            env!("CARGO_PKG_VERSION"),
            "zhiyun smart customer service: PostgreSQL dumped at one snapshot, Qdrant collection snapshots, MinIO files",
        )
        .setting_or("db_host", "PostgreSQL host", "127.0.0.1")
        .setting_or("db_port", "PostgreSQL port", "5432")
        .setting_or("db_user", "PostgreSQL user (needs CREATEDB to restore into a missing database)", "postgres")
        .setting_or("db_password", "PostgreSQL password; give it as { env = \"VAR\" } or { file = \"PATH\" }", "")
        .setting_or("db_name", "the app's database", "zhiyun")
        .setting_or("db_maintenance", "database to connect to for CREATE/ALTER DATABASE", "postgres")
        .setting_or("dump_format", "plain (SQL, restored with psql; added 24% less than custom over three days of 1% changes) or custom (pg_dump -Fc -Z0, pg_restore)", "plain")
        .setting_or("replace_database", "restore over a non-empty database by renaming it aside (true/false)", "false")
        .setting_or("qdrant_url", "Qdrant HTTP API", "http://127.0.0.1:6333")
        .setting_or("qdrant_api_key", "Qdrant api-key header, if the server wants one", "")
        .setting_or("qdrant_collections", "collections to capture, comma-separated; empty: all", "")
        .setting_or("qdrant_recover_dir", "restore by recover instead of upload: folder under the app folder to put snapshots in; it must lie inside Qdrant's own snapshots folder (Qdrant refuses other file:// locations with 403)", "")
        .setting_or("qdrant_recover_location", "that folder as Qdrant reads it (file:///qdrant/snapshots/…)", "")
        .setting_or("minio_endpoint", "MinIO (S3) endpoint", "http://127.0.0.1:9000")
        .setting_or("minio_region", "S3 region", "us-east-1")
        .setting_or("minio_bucket", "bucket of uploaded files; empty: no file storage", "zhiyun")
        .setting_or("minio_prefix", "only objects under this prefix", "")
        .setting_or("minio_access_key", "S3 access key id", "")
        .setting_or("minio_secret_key", "S3 secret key; give it as { env = \"VAR\" } or { file = \"PATH\" }", "")
        .setting_or("health_url", "the app's health endpoint", "http://127.0.0.1:8000/api/health")
        .setting_or("db_compose_project", "when PostgreSQL runs in a Compose project: its name (psql and pg_dump then run in its service through exec, as the manual's `docker-compose exec db pg_dump`); empty: on this host", "")
        .setting_or("db_compose_dir", "that project's folder under the app folder", "")
        .setting_or("db_compose_service", "PostgreSQL's service in that project", "db")
        .setting_or("app_compose_services", "services of that project to stop during a restore and start after it (web, worker), comma-separated", "")
        .setting_or("stop_command", "command that stops the app before a restore (empty: leave it)", "")
        .setting_or("start_command", "command that starts the app after a restore", "")
        .setting_or("image_tag_var", "under Compose: the variable of the project's .env that names the app's image tag; `coffer upgrade` sets it and starts app_compose_services", "")
        .setting_or("upgrade_command", "otherwise: the command that upgrades the app (\"{version}\" replaced by the version)", "")
        .drills()
        .runs("pg_dump")
        .runs("psql")
        .runs("pg_restore")
        .compose("setting:db_compose_project")
        .compose_exec("setting:db_compose_project", "setting:db_compose_service")
        .runs("setting:stop_command")
        .runs("setting:start_command")
        .runs("setting:upgrade_command")
        .http("setting:qdrant_url")
        .http("setting:health_url")
        .s3("setting:minio_endpoint")
        .item("db")
        .item("files")
        .item("vectors")
    }

    fn capture(settings: &Settings) -> Result<Json> {
        let pg = Pg::from(settings, ("postgres", "zhiyun", "db"))?;
        let format = Format::parse(settings.get_or("dump_format", "plain"))?;
        let q = Qdrant::from(settings);
        // Reach Qdrant before moving data, so a wrong setting fails in seconds. The database
        // goes first, then files, then vectors: every upload a row names is then in the
        // capture (a file newer than the dump is only an orphan, never a dangling reference).
        let names = collections(settings, &q)?;
        let database = pg.capture(format)?;

        let mut meta = json!({ "database": database, "items": ["db"] });
        if let Some((path, var)) = image_tag_env(settings) {
            let env = std::fs::read_to_string(format!("/app/{path}")).unwrap_or_default();
            meta["app_version"] = env_value(&env, &var).into();
        }
        if let Some(b) = bucket(settings)? {
            let n = host::capture_bucket("files", &b)
                .map_err(|e| Error(format!("MinIO files: {e}")))?;
            host::info(format!("captured {n} objects of bucket {}", b.name));
            meta["files"] = json!({ "bucket": b.name, "prefix": b.prefix, "objects": n });
            meta["items"]
                .as_array_mut()
                .expect("array")
                .push("files".into());
        }
        let mut cols = JsonMap::new();
        for c in &names {
            let (before, after) = q.capture(c, &format!("vectors/{c}.snapshot"))?;
            if before != after {
                host::warn(format!(
                    "collection {c} changed while it was captured ({before} → {after} points)"
                ));
            }
            host::info(format!("captured collection {c} ({after} points)"));
            cols.insert(
                c.clone(),
                json!({ "points_min": before.min(after), "points_max": before.max(after) }),
            );
        }
        if !cols.is_empty() {
            meta["items"]
                .as_array_mut()
                .expect("array")
                .push("vectors".into());
        }
        meta["collections"] = cols.into();
        Ok(meta)
    }

    fn restore(settings: &Settings, snapshot: &Snapshot, only: &[String]) -> Result<()> {
        for o in only {
            if !ITEMS.contains(&o.as_str()) {
                bail!("unknown item `{o}`: zhiyun has db, files and vectors");
            }
        }
        if settings.drill() {
            return drill_restore(settings, snapshot);
        }
        let app = app_services(settings);
        if let Some((p, services)) = &app {
            host::info(format!("stopping {} of project {}", services.join(", "), p.name()));
            p.stop(&services.iter().map(String::as_str).collect::<Vec<_>>(), std::time::Duration::from_secs(30))?;
        }
        host::run_setting(settings, "stop_command")?;
        let result = restore_parts(settings, snapshot, only);
        // Start the app again whatever happened: a failed restore must not leave it down.
        let mut started = host::run_setting(settings, "start_command");
        if let Some((p, services)) = &app {
            started = started.and(p.up(&services.iter().map(String::as_str).collect::<Vec<_>>(), std::time::Duration::from_secs(300)).map(|_| ()));
        }
        result.and(started)
    }

    fn verify(settings: &Settings, snapshot: Option<&Snapshot>) -> Result<Vec<Check>> {
        if let (true, Some(s)) = (settings.drill(), snapshot) {
            return drill_verify(settings, s);
        }
        let mut checks = vec![];
        let meta = snapshot.map(|s| &s.metadata);
        let restored = |item: &str| snapshot.is_none_or(|s| s.has(item));
        if restored("db") {
            let pg = Pg::from(settings, ("postgres", "zhiyun", "db"))?;
            match pg.facts_now() {
                Err(e) => checks.push(Check::fail("database", e.0)),
                Ok(now) => {
                    match meta.and_then(|m| m["database"]["tables"].as_object()) {
                        None => checks.push(Check::pass(
                            "database",
                            format!("{} tables readable", now.len()),
                        )),
                        Some(expected) => {
                            let mut bad = vec![];
                            let mut rows = 0;
                            for (t, exp) in expected {
                                match now.get(t) {
                                    None => bad.push(format!("{t} missing")),
                                    Some(f) if f != exp => bad.push(format!(
                                        "{t}: expected {} rows (checksum {}), found {} ({})",
                                        exp["rows"], exp["checksum"], f["rows"], f["checksum"]
                                    )),
                                    Some(f) => rows += f["rows"].as_u64().unwrap_or(0),
                                }
                            }
                            checks.push(if bad.is_empty() {
                            Check::pass("database rows", format!("{} tables, {rows} rows, every count and checksum as captured", expected.len()))
                        } else {
                            Check::fail("database rows", bad.join("; "))
                        });
                        }
                    }
                }
            }
        }
        if restored("vectors") {
            let q = Qdrant::from(settings);
            if let Some(cols) = meta.and_then(|m| m["collections"].as_object()) {
                for (c, exp) in cols {
                    let (lo, hi) = (
                        exp["points_min"].as_u64().unwrap_or(0),
                        exp["points_max"].as_u64().unwrap_or(0),
                    );
                    checks.push(match q.points(c) {
                        Ok(n) if (lo..=hi).contains(&n) => Check::pass(
                            &format!("collection {c}"),
                            format!("{n} points, as captured"),
                        ),
                        Ok(n) => Check::fail(
                            &format!("collection {c}"),
                            format!(
                                "{n} points, expected {}",
                                if lo == hi {
                                    lo.to_string()
                                } else {
                                    format!("{lo}..{hi}")
                                }
                            ),
                        ),
                        Err(e) => Check::fail(&format!("collection {c}"), e.0),
                    });
                }
            }
        }
        Ok(checks)
    }

    /// Under Compose: the image tag in the project's `.env` (`image_tag_var`), then the app's
    /// services up (they migrate as they start). Otherwise the deployment's own
    /// `upgrade_command`. The host snapshots before and rolls back when health fails.
    fn upgrade(settings: &Settings, to: &str) -> Result<()> {
        let (Some((path, var)), Some((project, services))) = (image_tag_env(settings), app_services(settings)) else {
            return host::run_upgrade_command(settings, "upgrade_command", to);
        };
        let env = std::fs::read_to_string(format!("/app/{path}")).map_err(|e| Error(format!("{path}: {e}")))?;
        host::info(format!("{var} {} → {to} in {path}", env_value(&env, &var).unwrap_or_default()));
        host::write_file(&path, with_env_value(&env, &var, to))?;
        let services: Vec<&str> = services.iter().map(String::as_str).collect();
        project.up(&services, std::time::Duration::from_secs(300))?;
        Ok(())
    }

    fn health(settings: &Settings) -> Result<Vec<Check>> {
        let url = settings.get_or("health_url", "http://127.0.0.1:8000/api/health");
        let r = match Request::get(url)
            .timeout(std::time::Duration::from_secs(10))
            .send()
        {
            Err(e) => return Ok(vec![Check::fail("health", format!("GET {url}: {e}"))]),
            Ok(r) => r,
        };
        let body = r.json().unwrap_or(Json::Null);
        let mut checks = vec![Check::new(
            "health",
            r.status == 200 && body["status"] == "healthy",
            format!("GET {url}: HTTP {}, status {}", r.status, body["status"]),
        )];
        if let Some(components) = body["components"].as_object() {
            for (name, state) in components {
                checks.push(Check::new(
                    &format!("component {name}"),
                    state == "healthy",
                    state.as_str().unwrap_or("?").to_string(),
                ));
            }
        }
        Ok(checks)
    }
}

/// Database, then files, then vectors: the manual's disaster-recovery order.
/// The dump's item and form in a snapshot.
fn dump_of(pg: &Pg, snapshot: &Snapshot) -> Result<(String, Format)> {
    let format = Format::parse(snapshot.metadata["database"]["format"].as_str().unwrap_or("plain"))?;
    let item = snapshot.metadata["database"]["item"].as_str().map(String::from).unwrap_or_else(|| format.item(&pg.database));
    if !snapshot.has(&item) {
        bail!("the snapshot has no database dump ({item})");
    }
    Ok((item, format))
}

/// A drill touches no live service: the dump goes into a scratch database on the same server,
/// the MinIO files and Qdrant snapshots into the scratch folder; no stop or start.
fn drill_restore(settings: &Settings, snapshot: &Snapshot) -> Result<()> {
    let pg = Pg::from(settings, ("postgres", "zhiyun", "db"))?;
    let (item, format) = dump_of(&pg, snapshot)?;
    if snapshot.has("files") {
        host::restore_item("files", "files")?;
    }
    if snapshot.has("vectors") {
        host::restore_item("vectors", "vectors")?;
    }
    pg.drill_load(&item, format)
}

/// The scratch database against the snapshot (every table's rows and checksum), then dropped;
/// the files and vector snapshots counted in the scratch folder.
fn drill_verify(settings: &Settings, snapshot: &Snapshot) -> Result<Vec<Check>> {
    let pg = Pg::from(settings, ("postgres", "zhiyun", "db"))?;
    let scratch = pg.drill_scratch()?;
    let facts = scratch.facts_now();
    pg.drop_scratch(&scratch)?;
    let now = facts?;
    let meta = &snapshot.metadata;
    let mut checks = vec![];
    if let Some(expected) = meta["database"]["tables"].as_object() {
        let bad: Vec<String> = expected
            .iter()
            .filter(|(t, exp)| now.get(*t) != Some(*exp))
            .map(|(t, exp)| format!("{t}: expected {} rows (checksum {}), found {}", exp["rows"], exp["checksum"], now.get(t).map(|f| format!("{} ({})", f["rows"], f["checksum"])).unwrap_or_else(|| "nothing".into())))
            .collect();
        checks.push(if bad.is_empty() {
            Check::pass("database rows", format!("{} tables in the scratch database, every count and checksum as captured", expected.len()))
        } else {
            Check::fail("database rows", bad.join("; "))
        });
    }
    if let Some(want) = meta["files"]["objects"].as_u64() {
        let got = count_files(std::path::Path::new("/app/files"));
        checks.push(Check::new("files", got == want, format!("{got} objects restored, {want} captured")));
    }
    if let Some(cols) = meta["collections"].as_object() {
        for c in cols.keys() {
            let f = std::path::Path::new("/app/vectors").join(format!("{c}.snapshot"));
            let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
            checks.push(Check::new(&format!("collection {c}"), size > 0, format!("snapshot file of {size} bytes restored")));
        }
    }
    Ok(checks)
}

fn count_files(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| if e.file_type().is_ok_and(|t| t.is_dir()) { count_files(&e.path()) } else { 1 })
        .sum()
}

fn restore_parts(settings: &Settings, snapshot: &Snapshot, only: &[String]) -> Result<()> {
    if wanted(only, "db") {
        let pg = Pg::from(settings, ("postgres", "zhiyun", "db"))?;
        let (item, format) = dump_of(&pg, snapshot)?;
        pg.restore(&item, format, flag(settings, "replace_database"))?;
        host::info(format!("restored database {}", pg.database));
    }
    if wanted(only, "files") && snapshot.has("files") {
        let b = bucket(settings)?.ok_or_else(|| Error::msg("the snapshot holds files but `minio_bucket` is empty: name the bucket to restore them into"))?;
        let n =
            host::restore_bucket("files", &b).map_err(|e| Error(format!("MinIO files: {e}")))?;
        host::info(format!("restored {n} objects into bucket {}", b.name));
    }
    if wanted(only, "vectors") {
        let q = Qdrant::from(settings);
        let dir = settings
            .get_or("qdrant_recover_dir", "")
            .trim_end_matches('/')
            .to_string();
        let location = settings
            .get_or("qdrant_recover_location", "")
            .trim_end_matches('/')
            .to_string();
        if dir.is_empty() != location.is_empty() {
            bail!("set both `qdrant_recover_dir` and `qdrant_recover_location` (or neither, to upload)");
        }
        let cols: Vec<String> = snapshot.metadata["collections"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for c in cols {
            let item = format!("vectors/{c}.snapshot");
            if dir.is_empty() {
                q.upload(&c, &item)?;
            } else {
                let file = format!("{dir}/{c}.snapshot");
                host::restore_item(&item, &file)?;
                let r = q.recover(&c, &format!("{location}/{c}.snapshot"));
                host::remove_file(&file)?;
                r?;
            }
            host::info(format!("restored collection {c}"));
        }
    }
    Ok(())
}

export_plugin!(Zhiyun);
