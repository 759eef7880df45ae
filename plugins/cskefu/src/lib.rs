//! cskefu (春松客服), deployed as its manual says: one folder (`cskefu.osc`) holding
//! `docker-compose.yml`, `.env` and every service's data as bind mounts (MySQL's `cosinee` in
//! `database/mysql/data`, owned by the container's uid 999; uploads in `contact-center/data`;
//! Redis and ActiveMQ beside them).
//!
//! A backup is bound to the image that wrote it: each contact-center start upgrades the schema
//! forward, so going back needs the old data AND the old image. So the image is pinned first:
//! `CC_IMAGE` in `.env` must name a fixed tag (a git short id) or a digest, and the image id and
//! repo digests of every service go into the snapshot.
//!
//! Two ways to capture:
//! - cold (the manual's way, default): the app service stops (no more writes), row counts and
//!   checksums of every table are taken, the project goes `down`, the whole folder is captured
//!   with owners, modes and times, and the project comes `up` again ALWAYS, even when the
//!   capture failed; the downtime is recorded. Everything is one point in time.
//! - online (`mode = "online"`): no downtime; `mysqldump --single-transaction` of the database
//!   through exec into an item (one point in time for InnoDB tables), plus the folder without
//!   MySQL's data folder (copied live, file by file).
//!
//! Restore goes `down`, puts the snapshot's folder back whole (the folder it replaces is kept
//! beside it as `<folder>.backup-<UTC time>`, never deleted), loads the dump in online mode,
//! pins the recorded image, goes `up` and waits for health: `GET :8035/actuator/health` UP and
//! a MySQL ping. The host then runs verify: per-table row counts (and, for cold snapshots,
//! checksums) against the snapshot, and the image the app runs against the recorded one.

use std::time::{Duration, Instant};

use coffer_plugin_sdk::compose::{env_value, with_env_value};
use coffer_plugin_sdk::prelude::*;
use coffer_plugin_sdk::retry_until;

/// Tags that move: a snapshot bound to one of them cannot say which image wrote it.
const MOVING_TAGS: [&str; 8] = ["", "develop", "latest", "master", "main", "osc", "nightly", "edge"];

#[derive(Default)]
struct Cskefu;

/// The settings, read once.
struct Conf {
    project: Project,
    mode: String,
    mysql: String,
    app: String,
    database: String,
    mysql_data: String,
    health_url: String,
    allow_moving_tag: bool,
    cold_dump: bool,
    grace: Duration,
    wait: Duration,
}

impl Conf {
    fn new(s: &Settings) -> Result<Conf> {
        let mode = s.get_or("mode", "cold").to_string();
        if mode != "cold" && mode != "online" {
            bail!("setting mode is '{mode}': it must be \"cold\" (stop, copy the folder, start) or \"online\" (mysqldump, no downtime)");
        }
        let secs = |name: &str, default: &str| -> Result<Duration> {
            let v = s.get_or(name, default);
            v.parse::<u64>().map(Duration::from_secs).map_err(|_| Error::msg(format!("setting {name} is '{v}': a number of seconds")))
        };
        let flag = |name: &str| s.get_or(name, "false") == "true";
        Ok(Conf {
            project: Project::new(s.get_or("project", "cskefu"), ""),
            mode,
            mysql: s.get_or("mysql_service", "mysql").into(),
            app: s.get_or("app_service", "contact-center").into(),
            database: s.get_or("database", "cosinee").into(),
            mysql_data: s.get_or("mysql_data", "database/mysql/data").trim_matches('/').into(),
            health_url: s.get_or("health_url", "http://127.0.0.1:8035/actuator/health").into(),
            allow_moving_tag: flag("allow_moving_tag"),
            cold_dump: flag("cold_dump"),
            grace: secs("stop_timeout_secs", "30")?,
            wait: secs("start_timeout_secs", "300")?,
        })
    }
}

fn read_env() -> Result<String> {
    std::fs::read_to_string("/app/.env").map_err(|e| Error::msg(format!(".env of the deployment folder cannot be read ({e}): cskefu keeps CC_IMAGE and DB_PASSWD there")))
}

fn db_password(env: &str) -> Result<String> {
    env_value(env, "DB_PASSWD").ok_or_else(|| Error::msg("DB_PASSWD is not set in .env: cskefu's MySQL root password lives there"))
}

/// The tag of an image reference (`repo:tag`), `None` when it is pinned by digest.
fn tag_of(image: &str) -> Option<&str> {
    if image.contains("@sha256:") {
        return None;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    Some(last.split_once(':').map(|(_, t)| t).unwrap_or(""))
}

fn service_json(s: &Service) -> Json {
    json!({ "image": s.image, "state": s.state, "image_id": s.image_id, "repo_digests": s.repo_digests })
}

/// Refuses a moving tag unless allowed; the image `CC_IMAGE` names.
fn check_pin(c: &Conf, env: &str, running: &[Service]) -> Result<String> {
    let image = env_value(env, "CC_IMAGE").unwrap_or_else(|| "cskefu/contact-center:develop".into());
    let Some(tag) = tag_of(&image) else { return Ok(image) };
    if !MOVING_TAGS.contains(&tag) {
        return Ok(image);
    }
    let app = running.iter().find(|s| s.name == c.app && !s.image_id.is_empty());
    let which = match app {
        Some(s) => format!(
            "the running {} is image {}{}",
            c.app,
            s.image_id,
            if s.repo_digests.is_empty() { " (built locally: no repo digest)".to_string() } else { format!(", digest {}", s.repo_digests.join(", ")) }
        ),
        None => format!("{} is not running, so which image it would be is unknown", c.app),
    };
    let how = match app {
        Some(s) if !s.repo_digests.is_empty() => format!("set CC_IMAGE={} in .env", s.repo_digests[0]),
        Some(s) => format!("tag it with its git short id (docker tag {} cskefu/contact-center:<id>) and set CC_IMAGE=cskefu/contact-center:<id> in .env", s.image_id),
        None => "set CC_IMAGE=cskefu/contact-center:<git short id> in .env".to_string(),
    };
    if c.allow_moving_tag {
        host::warn(format!("CC_IMAGE is {image}, a moving tag ({which}); captured anyway because allow_moving_tag is set"));
        return Ok(image);
    }
    bail!(
        "CC_IMAGE in .env is {image}, a moving tag: a cskefu backup is bound to the image that wrote it, and '{tag}' will name another image tomorrow; {which}. Pin it: {how}; or set allow_moving_tag = true to back up anyway"
    )
}

/// Rows of a query in the MySQL service (`-N -B`: tab-separated, no header).
fn mysql(c: &Conf, password: &str, sql: &str) -> Result<Vec<Vec<String>>> {
    let out = c.project.exec(&c.mysql, ["mysql", "-uroot", "-N", "-B", "-e", sql]).env("MYSQL_PWD", password).run()?.check("mysql")?;
    Ok(out.stdout_text().lines().map(|l| l.split('\t').map(str::to_string).collect()).collect())
}

/// Row count and checksum of every table of the database.
fn table_stats(c: &Conf, password: &str) -> Result<JsonMap<String, Json>> {
    let db = c.database.replace('`', "");
    let tables = mysql(c, password, &format!("SELECT table_name FROM information_schema.tables WHERE table_schema = '{}' AND table_type = 'BASE TABLE' ORDER BY table_name", db.replace('\'', "")))?;
    let mut out = JsonMap::new();
    if tables.is_empty() {
        return Ok(out);
    }
    let names: Vec<String> = tables.into_iter().filter_map(|r| r.into_iter().next()).collect();
    let counts = names.iter().map(|t| format!("SELECT '{}', COUNT(*) FROM `{db}`.`{}`", t.replace('\'', ""), t.replace('`', ""))).collect::<Vec<_>>().join(" UNION ALL ");
    let sums = format!("CHECKSUM TABLE {}", names.iter().map(|t| format!("`{db}`.`{}`", t.replace('`', ""))).collect::<Vec<_>>().join(", "));
    let rows = mysql(c, password, &format!("{counts}; {sums}"))?;
    for r in &rows {
        if r.len() < 2 {
            continue;
        }
        if let Some(table) = r[0].strip_prefix(&format!("{db}.")) {
            if let Some(Json::Object(o)) = out.get_mut(table) {
                o.insert("checksum".into(), r[1].clone().into());
            }
        } else {
            let n: u64 = r[1].parse().unwrap_or(0);
            out.insert(r[0].clone(), json!({ "rows": n }));
        }
    }
    Ok(out)
}

/// The web endpoint answers `{"status":"UP"}`.
fn web_up(c: &Conf) -> std::result::Result<(), String> {
    match Request::get(&c.health_url).timeout(Duration::from_secs(5)).send() {
        Ok(r) if r.status == 200 => match r.json() {
            Ok(j) if j["status"] == "UP" => Ok(()),
            _ => Err(format!("{} answered {}", c.health_url, r.text().trim())),
        },
        Ok(r) => Err(format!("{} answered {} {}", c.health_url, r.status, r.text().trim())),
        Err(e) => Err(e.to_string()),
    }
}

fn mysql_up(c: &Conf, password: &str) -> std::result::Result<(), String> {
    match c.project.exec(&c.mysql, ["mysqladmin", "-uroot", "ping"]).env("MYSQL_PWD", password).timeout(Duration::from_secs(20)).run() {
        Ok(o) if o.success() => Ok(()),
        Ok(o) => Err(format!("mysqladmin ping: {}{}", o.stdout_text().trim(), o.stderr_text().trim())),
        Err(e) => Err(e.to_string()),
    }
}

/// `up -d`, then health with retries until `c.wait` has passed.
fn start(c: &Conf, password: &str) -> Result<Vec<Service>> {
    let begun = Instant::now();
    let services = c.project.up(&[], c.wait)?;
    match retry_until(begun, c.wait, || mysql_up(c, password).and_then(|_| web_up(c))) {
        Ok(()) => Ok(services),
        Err(e) => bail!("project {} is up but not healthy after {} s: {e}", c.project.name(), c.wait.as_secs()),
    }
}

/// Entries of the folder to capture in online mode: everything but MySQL's data folder (and
/// coffer's own leftovers), as paths relative to the app folder.
fn pieces(rel: &str, exclude: &str, out: &mut Vec<String>) -> Result<()> {
    let dir = if rel.is_empty() { "/app".to_string() } else { format!("/app/{rel}") };
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| Error::msg(format!("{dir}: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| !n.starts_with(".coffer-"))
        .collect();
    names.sort();
    for n in names {
        let path = if rel.is_empty() { n } else { format!("{rel}/{n}") };
        if path == exclude {
            continue;
        }
        if exclude.starts_with(&format!("{path}/")) {
            pieces(&path, exclude, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn dump_args(database: &str) -> Vec<String> {
    ["mysqldump", "-uroot", "--single-transaction", "--routines", "--triggers", "--events", "--hex-blob", "--databases", database].iter().map(|s| s.to_string()).collect()
}

fn cold_capture(c: &Conf, password: &str, running: &[Service], meta: &mut JsonMap<String, Json>) -> Result<()> {
    let mysql_running = running.iter().any(|s| s.name == c.mysql && s.state == "running");
    // The app first: once it is stopped nothing writes, and the counts are those of the copy.
    let begun = Instant::now();
    let captured = (|| -> Result<()> {
        c.project.stop(&[c.app.as_str()], c.grace)?;
        if mysql_running {
            meta.insert("tables".into(), Json::Object(table_stats(c, password)?));
            if c.cold_dump {
                c.project.exec(&c.mysql, dump_args(&c.database)).env("MYSQL_PWD", password).run_to_item("mysql/dump.sql")?.check("mysqldump")?;
            }
        } else {
            host::warn(format!("{} is not running: no row counts to verify the copy against", c.mysql));
        }
        c.project.down(c.grace)?;
        let stopped = c.project.ps()?;
        if let Some(s) = stopped.iter().find(|s| s.state != "absent" && s.state != "exited") {
            bail!("service {} is still {} after down: the folder is not captured while it may write", s.name, s.state);
        }
        host::info("project down; capturing the deployment folder");
        let bytes = host::capture_path("deployment", "")?;
        meta.insert("deployment_bytes".into(), bytes.into());
        Ok(())
    })();
    // ALWAYS up again, whatever happened above: an app left down is worse than a failed backup.
    let started = start(c, password);
    let downtime = begun.elapsed();
    meta.insert("downtime_ms".into(), (downtime.as_millis() as u64).into());
    host::info(format!("downtime {:.1} s", downtime.as_secs_f64()));
    match (captured, started) {
        (Ok(()), Ok(_)) => Ok(()),
        (Err(e), Ok(_)) => bail!("{e} (the app was started again and is healthy)"),
        (Ok(()), Err(s)) => bail!("captured, but starting the app again failed: {s}"),
        (Err(e), Err(s)) => bail!("{e}; starting the app again failed too: {s}"),
    }
}

fn online_capture(c: &Conf, password: &str, meta: &mut JsonMap<String, Json>) -> Result<()> {
    mysql_up(c, password).map_err(|e| Error::msg(format!("online capture needs MySQL running: {e}")))?;
    meta.insert("tables".into(), Json::Object(table_stats(c, password)?));
    let out = c.project.exec(&c.mysql, dump_args(&c.database)).env("MYSQL_PWD", password).run_to_item("mysql/dump.sql")?;
    out.check("mysqldump")?;
    let mut list = vec![];
    pieces("", &c.mysql_data, &mut list)?;
    for p in &list {
        host::capture_path(&format!("deployment/{p}"), p)?;
    }
    meta.insert("pieces".into(), json!(list));
    Ok(())
}

/// Loads the snapshot's dump into the running MySQL (the dump drops and recreates each table).
fn load_dump(c: &Conf, password: &str) -> Result<()> {
    host::info("loading the database dump");
    c.project.exec(&c.mysql, ["mysql", "-uroot"]).env("MYSQL_PWD", password).timeout(Duration::from_secs(3600)).run_from_item("mysql/dump.sql")?.check("loading the dump with mysql")?;
    Ok(())
}

/// Waits until MySQL answers (after `up` of the mysql service alone).
fn wait_mysql(c: &Conf, password: &str) -> Result<()> {
    retry_until(Instant::now(), c.wait, || mysql_up(c, password)).map_err(|e| Error::msg(format!("MySQL did not answer within {} s: {e}", c.wait.as_secs())))
}

/// Pins CC_IMAGE in the restored `.env` to what the snapshot recorded: the repo digest when the
/// image came from a registry, else the recorded reference (its image id is checked by verify).
fn pin_image(c: &Conf, meta: &Json, env: &str) -> Result<String> {
    let recorded = meta["cc_image"].as_str().unwrap_or_default().to_string();
    let digest = meta["services"][c.app.as_str()]["repo_digests"].as_array().and_then(|d| d.first()).and_then(Json::as_str).map(str::to_string);
    let pinned = digest.unwrap_or(recorded);
    if pinned.is_empty() {
        return Ok(env.to_string());
    }
    let now = env_value(env, "CC_IMAGE");
    if now.as_deref() != Some(pinned.as_str()) {
        host::info(format!("pinning CC_IMAGE={pinned} in .env"));
        let text = with_env_value(env, "CC_IMAGE", &pinned);
        host::write_file(".env", &text)?;
        return Ok(text);
    }
    Ok(env.to_string())
}

impl Plugin for Cskefu {
    fn describe() -> PluginInfo {
        PluginInfo::new("cskefu", env!("CARGO_PKG_VERSION"), "cskefu (春松客服): its docker-compose deployment folder, cold (down, copy, up) or online (mysqldump), image pinned")
            .setting_or("project", "the Compose project name (COMPOSE_PROJECT_NAME in .env)", "cskefu")
            .setting_or("mode", "\"cold\": down, copy the whole folder, up (the manual's way, downtime); \"online\": mysqldump --single-transaction and the folder without MySQL's data, no downtime", "cold")
            .setting_or("allow_moving_tag", "back up even when CC_IMAGE names a moving tag such as develop", "false")
            .setting_or("cold_dump", "in cold mode, also capture a mysqldump taken while the app is stopped", "false")
            .setting_or("health_url", "the contact-center health endpoint", "http://127.0.0.1:8035/actuator/health")
            .setting_or("mysql_service", "the MySQL service of the compose file", "mysql")
            .setting_or("app_service", "the contact-center service of the compose file", "contact-center")
            .setting_or("database", "the MySQL database", "cosinee")
            .setting_or("mysql_data", "MySQL's data folder under the deployment folder", "database/mysql/data")
            .setting_or("stop_timeout_secs", "grace before a stopping container is killed", "30")
            .setting_or("start_timeout_secs", "how long to wait for the app to be up and healthy", "300")
            .compose("setting:project")
            .compose_exec("setting:project", "mysql")
            .http("setting:health_url")
            .item("deployment")
            .item("mysql")
    }

    fn capture(settings: &Settings) -> Result<Json> {
        let c = Conf::new(settings)?;
        let env = read_env()?;
        if let Some(name) = env_value(&env, "COMPOSE_PROJECT_NAME") {
            if name != c.project.name() {
                bail!("COMPOSE_PROJECT_NAME in .env is '{name}' but the setting project is '{}': set project = \"{name}\" (and grant it), or coffer would start a second copy of the app", c.project.name());
            }
        }
        let password = db_password(&env)?;
        let running = c.project.ps()?;
        let image = check_pin(&c, &env, &running)?;
        let mut services = JsonMap::new();
        for s in &running {
            services.insert(s.name.clone(), service_json(s));
        }
        let mut meta = JsonMap::new();
        meta.insert("mode".into(), c.mode.clone().into());
        meta.insert("project".into(), c.project.name().into());
        meta.insert("cc_image".into(), image.clone().into());
        meta.insert("tag".into(), tag_of(&image).unwrap_or("").into());
        meta.insert("services".into(), Json::Object(services));
        meta.insert("database".into(), c.database.clone().into());
        if c.mode == "cold" {
            cold_capture(&c, &password, &running, &mut meta)?;
            meta.insert("consistency".into(), json!({ "deployment": "point in time: every service was down while the folder was copied" }));
        } else {
            online_capture(&c, &password, &mut meta)?;
            meta.insert("downtime_ms".into(), 0.into());
            meta.insert(
                "consistency".into(),
                json!({
                    "mysql": "point in time for InnoDB tables (mysqldump --single-transaction); MyISAM tables are not",
                    "deployment": "copied live file by file (uploads, Redis, ActiveMQ): not one point in time",
                    "tables": "row counts taken just before the dump; the dump may hold more rows",
                }),
            );
        }
        Ok(Json::Object(meta))
    }

    fn restore(settings: &Settings, snapshot: &Snapshot, only: &[String]) -> Result<()> {
        let c = Conf::new(settings)?;
        let meta = &snapshot.metadata;
        let online = meta["mode"] == "online";
        let has_dump = snapshot.has("mysql/dump.sql");
        let files = wanted(only, "deployment");
        let dump = wanted(only, "mysql") && has_dump;
        if !files && !dump {
            bail!("nothing to restore: this snapshot's parts are deployment{}", if has_dump { " and mysql" } else { "" });
        }
        // The snapshot's .env, not the live one: the folder may be gone.
        let env = String::from_utf8_lossy(&host::read_item("deployment/.env")?).into_owned();
        let password = db_password(&env)?;
        c.project.down(c.grace)?;
        if files {
            if online && !only.is_empty() && !dump {
                // Files only, MySQL's data left as it is: each piece swapped in on its own.
                let pieces: Vec<String> = meta["pieces"].as_array().map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_string)).collect()).unwrap_or_default();
                for p in pieces {
                    if let Some(old) = host::restore_item(&format!("deployment/{p}"), &p)? {
                        host::info(format!("{p}: the replaced one is kept as {old}"));
                    }
                }
            } else {
                match host::restore_item("deployment", "")? {
                    Some(old) => host::info(format!("the replaced deployment folder is kept as {old}")),
                    None => host::info("deployment folder restored (there was none)"),
                }
            }
        }
        let env = pin_image(&c, meta, &env)?;
        let password = db_password(&env).unwrap_or(password);
        if dump && (online || !files) {
            c.project.up(&[c.mysql.as_str()], c.wait)?;
            wait_mysql(&c, &password)?;
            load_dump(&c, &password)?;
        }
        start(&c, &password)?;
        Ok(())
    }

    fn verify(settings: &Settings, snapshot: Option<&Snapshot>) -> Result<Vec<Check>> {
        let c = Conf::new(settings)?;
        let env = read_env()?;
        let password = db_password(&env)?;
        let mut checks = vec![];
        let Some(snap) = snapshot else {
            return Ok(vec![match mysql_up(&c, &password) {
                Ok(()) => Check::pass("mysql", "answers"),
                Err(e) => Check::fail("mysql", e),
            }]);
        };
        let meta = &snap.metadata;
        // After an upgrade (coffer_verify = at_least) the app has moved on: rows may have grown.
        let after_upgrade = meta["coffer_verify"] == "at_least";
        let exact = meta["mode"] != "online" && !after_upgrade;
        if let Some(recorded) = meta["tables"].as_object() {
            let now = table_stats(&c, &password)?;
            for (table, want) in recorded {
                let want_rows = want["rows"].as_u64().unwrap_or(0);
                let got = now.get(table);
                let got_rows = got.and_then(|g| g["rows"].as_u64());
                let check = match got_rows {
                    None => Check::fail(&format!("table {table}"), "missing"),
                    Some(n) if exact && n != want_rows => Check::fail(&format!("table {table}"), format!("{n} rows, the snapshot has {want_rows}")),
                    Some(n) if !exact && n < want_rows => Check::fail(&format!("table {table}"), format!("{n} rows, fewer than the {want_rows} counted before the dump")),
                    Some(n) => {
                        let (ws, gs) = (want["checksum"].as_str(), got.and_then(|g| g["checksum"].as_str()));
                        if exact && ws.is_some() && ws != gs {
                            Check::fail(&format!("table {table}"), format!("{n} rows, checksum {} where the snapshot has {}", gs.unwrap_or("?"), ws.unwrap_or("?")))
                        } else {
                            Check::pass(&format!("table {table}"), if exact { format!("{n} rows, checksum equal") } else { format!("{n} rows (≥ {want_rows})") })
                        }
                    }
                };
                checks.push(check);
            }
        }
        let want_image = meta["services"][c.app.as_str()]["image_id"].as_str().unwrap_or_default();
        if !want_image.is_empty() && !after_upgrade {
            let ps = c.project.ps()?;
            let got = ps.iter().find(|s| s.name == c.app).map(|s| s.image_id.clone()).unwrap_or_default();
            checks.push(if got == want_image {
                Check::pass("image", format!("{} runs {want_image}, as recorded", c.app))
            } else {
                Check::fail("image", format!("{} runs {}, but the snapshot was written by {want_image}: CC_IMAGE names another image now; tag {want_image} and pin it in .env", c.app, if got.is_empty() { "nothing" } else { &got }))
            });
        }
        Ok(checks)
    }

    /// The manual's upgrade: CC_IMAGE set to the new tag in .env, `up -d` (the new
    /// contact-center upgrades the schema as it starts). The host judges health after it and
    /// rolls back (folder and image) when it fails.
    fn upgrade(settings: &Settings, to: &str) -> Result<()> {
        let c = Conf::new(settings)?;
        let env = read_env()?;
        let image = env_value(&env, "CC_IMAGE").unwrap_or_else(|| "cskefu/contact-center:develop".into());
        let repo = match image.split_once('@') {
            Some((r, _)) => r.to_string(),
            None => match image.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => r.to_string(),
                _ => image.clone(),
            },
        };
        if MOVING_TAGS.contains(&to) && !c.allow_moving_tag {
            bail!("'{to}' is a moving tag: upgrade to a fixed one (a git short id) so the pre-upgrade snapshot and the new version each name one image");
        }
        let new = format!("{repo}:{to}");
        host::info(format!("CC_IMAGE {image} → {new}"));
        host::write_file(".env", with_env_value(&env, "CC_IMAGE", &new))?;
        c.project.up(&[], c.wait)?;
        Ok(())
    }

    fn health(settings: &Settings) -> Result<Vec<Check>> {
        let c = Conf::new(settings)?;
        let env = read_env()?;
        let password = db_password(&env)?;
        let mut checks = vec![];
        checks.push(match web_up(&c) {
            Ok(()) => Check::pass("web", format!("{} is UP", c.health_url)),
            Err(e) => Check::fail("web", e),
        });
        checks.push(match mysql_up(&c, &password) {
            Ok(()) => Check::pass("mysql", "mysqladmin ping: alive"),
            Err(e) => Check::fail("mysql", e),
        });
        let ps = c.project.ps()?;
        let down: Vec<String> = ps.iter().filter(|s| s.state != "running").map(|s| format!("{} {}", s.name, s.state)).collect();
        checks.push(if down.is_empty() { Check::pass("services", format!("{} running", ps.len())) } else { Check::fail("services", down.join(", ")) });
        Ok(checks)
    }
}

export_plugin!(Cskefu);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_and_tags() {
        let env = "# x\nCOMPOSE_PROJECT_NAME=cskefu\nCC_IMAGE=\"cskefu/contact-center:develop\"\n";
        assert_eq!(env_value(env, "CC_IMAGE").as_deref(), Some("cskefu/contact-center:develop"));
        assert_eq!(tag_of("cskefu/contact-center:develop"), Some("develop"));
        assert_eq!(tag_of("localhost:5000/cc"), Some(""));
        assert_eq!(tag_of("cskefu/contact-center@sha256:ab"), None);
        let set = with_env_value(env, "CC_IMAGE", "cskefu/contact-center:4b70d05");
        assert_eq!(env_value(&set, "CC_IMAGE").as_deref(), Some("cskefu/contact-center:4b70d05"));
        assert!(set.starts_with("# x\nCOMPOSE_PROJECT_NAME=cskefu\n"));
    }
}
