//! The SsalgTen plugin, guarded upgrades and drills on the machine's real Docker engine (with its
//! Compose). The deployment is examples/ssalgten/docker-compose.yml, the real project's shape
//! (fixed container and volume names, so these tests take turns), on stand-in images built from
//! Debian's packages (examples/images/build.sh): Debian's PostgreSQL 15 plays
//! `postgres:16-alpine`, Debian's Redis plays `redis:7-alpine`, and the backend and frontend are
//! NOT SsalgTen but a stand-in honouring its contract (Prisma-style migrations applied forward at
//! start, `/api/health`, `/health`, a node stored as two rows in one transaction plus a file in
//! the backend volume). Tag v1 is healthy, v2 migrates and then fails its health check, v3
//! migrates and stays healthy. Without an engine these tests fail, they do not skip.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;

use coffer_testkit::compose::{image_id, Ssalgten};
use common::*;

fn config(env: &Env, app: &Ssalgten, upgrade: &str) -> PathBuf {
    let p = env.path("coffer.toml");
    std::fs::write(
        &p,
        format!(
            "[apps.ssalgten]\nplugin = \"ssalgten\"\ndir = \"{dir}\"\n[apps.ssalgten.settings]\nproject = \"{project}\"\nbackend_url = \"http://127.0.0.1:{b}\"\nfrontend_url = \"http://127.0.0.1:{f}\"\nstop_timeout_secs = 10\nstart_timeout_secs = 120\n[apps.ssalgten.grants]\nhttp = [\"http://127.0.0.1:{b}\", \"http://127.0.0.1:{f}\"]\n[apps.ssalgten.grants.compose]\n{project} = [\"database\"]\n[apps.ssalgten.retention]\nkeep_within = \"30d\"\nkeep_last = 7\n[apps.ssalgten.upgrade]\n{upgrade}\n",
            dir = app.dir.display(),
            project = app.project,
            b = app.backend,
            f = app.frontend,
        ),
    )
    .unwrap();
    p
}

fn started(tag: &str) -> (Env, Ssalgten) {
    let env = Env::new();
    let app = Ssalgten::new(
        env.dir.path(),
        &format!("ssalgten-{tag}-{}", rand_suffix().to_lowercase()),
    );
    app.up();
    for _ in 0..12 {
        app.post_node();
    }
    (env, app)
}

fn pre_upgrade_snapshots(env: &Env) -> Vec<serde_json::Value> {
    env.json(&["snapshots", "--app", "ssalgten"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "pre-upgrade"))
        })
        .cloned()
        .collect()
}

/// v1 → v2: v2's migration runs, its health fails, and coffer rolls back by itself: v1's images
/// run, the schema and every row are exactly as before (the migration undone), health is ok.
/// Then v1 → v3 upgrades and stays; the app's retention keeps both pre-upgrade snapshots.
#[test]
fn a_failing_upgrade_rolls_back_exactly_and_a_good_one_stays() {
    let (env, app) = started("upgrade");
    let cfg = config(
        &env,
        &app,
        "checks = 3\ninterval_secs = 1\nfailure_limit = 0\nstart_secs = 20",
    );
    let cfg = cfg.to_str().unwrap();
    let before = app.state();
    let v1 = image_id("ssalgten/backend:v1");
    assert_eq!(app.image_of("backend"), v1);

    let (r, stderr) = env.json_exit(&["--config", cfg, "upgrade", "ssalgten", "--to", "v2"], 17);
    assert_eq!(r["outcome"], "rolled_back", "{r}");
    assert_eq!(
        (r["from"].as_str(), r["to"].as_str()),
        (Some("v1"), Some("v2"))
    );
    assert!(r["error"].as_str().unwrap().contains("backend"), "{r}");
    // The live log, as JSON events on stderr: the migration ran, then the rollback.
    assert!(
        stderr.contains("20240601000000_node_location"),
        "the migration ran: {stderr}"
    );
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "log"
                && e["message"].as_str().unwrap_or("").contains("rolling back")),
        "{stderr}"
    );
    assert_eq!(app.image_of("backend"), v1, "v1's image runs again");
    assert_eq!(app.image_of("frontend"), image_id("ssalgten/frontend:v1"));
    assert_eq!(
        app.state(),
        before,
        "schema and rows exactly as before the upgrade"
    );
    assert!(app.healthy());
    assert!(
        r["rollback_health"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true),
        "{r}"
    );
    eprintln!("upgrade to v2, rolled back: {}", upgrade_phases(&r));
    // The database the failed upgrade left is kept aside, not dropped.
    let aside =
        app.sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'ssalgten_replaced_%'");
    assert_eq!(aside.trim(), "1");

    let r = env.json(&["--config", cfg, "upgrade", "ssalgten", "--to", "v3"]);
    assert_eq!(r["outcome"], "upgraded", "{r}");
    assert_eq!(app.image_of("backend"), image_id("ssalgten/backend:v3"));
    assert_eq!(
        app.sql("SELECT count(*) FROM _prisma_migrations WHERE migration_name = '20240601000000_node_location' AND finished_at IS NOT NULL")
            .trim(),
        "1"
    );
    assert!(app.healthy());
    app.post_node();
    eprintln!("upgrade to v3: {}", upgrade_phases(&r));
    let pre = pre_upgrade_snapshots(&env);
    assert_eq!(pre.len(), 2, "one pre-upgrade snapshot per upgrade");
    let to: Vec<&str> = pre
        .iter()
        .map(|s| s["metadata"]["upgrade"]["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        to,
        ["v2", "v3"],
        "the pre-upgrade snapshots say where each upgrade went"
    );
    assert!(pre.iter().all(|s| s["metadata"]["app_version"] == "v1"));

    // The app's retention (30 days, and the last 7) keeps every snapshot taken today, the
    // pre-upgrade ones among them.
    env.ok(&["--config", cfg, "backup", "ssalgten"]);
    let f = env.json(&["--config", cfg, "forget", "--app", "ssalgten"]);
    assert_eq!(f["removed"], 0, "{f}");
    let kept = f["groups"][0]["keep"].as_array().unwrap();
    assert_eq!(kept.len(), 3, "{f}");
    assert!(
        kept.iter()
            .all(|k| k["reasons"].to_string().contains("30d")),
        "{f}"
    );
    assert_eq!(pre_upgrade_snapshots(&env).len(), 2);
}

/// `coffer upgrade` killed (SIGKILL) while it watches v2's health: the app is left migrated and
/// sick, a new upgrade is refused naming the pre-upgrade snapshot, and a plain `coffer restore`
/// of that snapshot brings v1 back exactly.
#[test]
fn an_upgrade_killed_mid_way_is_undone_by_restoring_its_pre_upgrade_snapshot() {
    let begun = std::time::Instant::now();
    let (env, app) = started("killed");
    let cfg = config(
        &env,
        &app,
        "checks = 120\ninterval_secs = 1\nfailure_limit = 200\nstart_secs = 0",
    );
    let cfg = cfg.to_str().unwrap();
    let before = app.state();
    let mut child = env
        .cmd(&["--config", cfg, "upgrade", "ssalgten", "--to", "v2"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("health check 2/") {
            break;
        }
    }
    assert!(log.contains("health check 2/"), "{log}");
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!("killed at {:.1}s", begun.elapsed().as_secs_f64());
    assert_eq!(app.image_of("backend"), image_id("ssalgten/backend:v2"));
    assert_ne!(app.state(), before, "v2 migrated the database");
    assert!(!app.healthy());

    let pre = pre_upgrade_snapshots(&env);
    assert_eq!(pre.len(), 1);
    let id = pre[0]["id"].as_str().unwrap();
    let err = env.fails(&["--config", cfg, "upgrade", "ssalgten", "--to", "v3"], 1);
    assert!(
        err.contains("interrupted") && err.contains(&format!("coffer restore {}", &id[..8])),
        "{err}"
    );

    eprintln!("refused at {:.1}s", begun.elapsed().as_secs_f64());
    let r = env.json(&["--config", cfg, "restore", &id[..8]]);
    eprintln!("restored at {:.1}s", begun.elapsed().as_secs_f64());
    assert!(
        r["verify"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true),
        "{r}"
    );
    assert_eq!(app.image_of("backend"), image_id("ssalgten/backend:v1"));
    assert_eq!(app.state(), before);
    assert!(app.healthy());
    // The interrupted upgrade is settled: upgrading is allowed again (and v3 works).
    config(
        &env,
        &app,
        "checks = 2\ninterval_secs = 1\nfailure_limit = 0",
    );
    let r = env.json(&["--config", cfg, "upgrade", "ssalgten", "--to", "v3"]);
    assert_eq!(r["outcome"], "upgraded", "{r}");
}

/// A drill restores into scratch space (files, the volume, a scratch database on the live
/// server), verifies it exactly and cleans up; the live containers are never restarted. A
/// snapshot whose dump cannot be loaded (rows that break a foreign key, written with the
/// checks switched off) fails its drill, naming the constraint.
#[test]
fn a_drill_passes_on_a_good_snapshot_and_fails_on_an_inconsistent_dump() {
    let (env, app) = started("drill");
    let cfg = config(&env, &app, "");
    let cfg = cfg.to_str().unwrap();
    env.ok(&["--config", cfg, "backup", "ssalgten"]);
    let started_at = app.started_at();

    let (d, _) = env.json_exit(&["--config", cfg, "drill", "ssalgten"], 0);
    assert_eq!(d["ok"], true, "{d}");
    let checks = d["verify"].as_array().unwrap();
    for name in [
        "table public.nodes",
        "table public.heartbeat_logs",
        "migration",
        "file .env",
        "volume",
    ] {
        assert!(
            checks.iter().any(|c| c["name"] == name && c["ok"] == true),
            "{name}: {d}"
        );
    }
    assert_eq!(app.started_at(), started_at, "no live container restarted");
    let scratch_dbs =
        || app.sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'ssalgten_drill_%'");
    assert_eq!(scratch_dbs().trim(), "0", "the scratch database is dropped");

    // Orphan heartbeats, written with the foreign key's triggers off: the dump holds them and
    // cannot be loaded into a database with the constraint.
    app.sql("BEGIN; SET LOCAL session_replication_role = replica; INSERT INTO heartbeat_logs (node_id, status) VALUES (999999, 'orphan'); COMMIT;");
    env.ok(&["--config", cfg, "backup", "ssalgten"]);
    let (d, _) = env.json_exit(&["--config", cfg, "drill", "ssalgten"], 19);
    assert_eq!(d["ok"], false, "{d}");
    assert!(
        d["error"]
            .as_str()
            .unwrap_or("")
            .contains("heartbeat_logs_node_id_fkey"),
        "the drill names the broken constraint: {d}"
    );
    assert_eq!(app.started_at(), started_at, "no live container restarted");
    assert_eq!(scratch_dbs().trim(), "0");
    assert!(app.healthy());
    let snaps = env.json(&["--config", cfg, "snapshots", "--app", "ssalgten"]);
    assert_eq!(snaps[0]["drill"]["ok"], true, "{snaps}");
    assert_eq!(snaps[1]["drill"]["ok"], false, "{snaps}");
}
