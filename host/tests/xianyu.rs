//! The xianyu plugin end to end against a live writer: a process commits transactions of two
//! rows sharing a txn id into data/xianyu_data.db (WAL) while `coffer backup xianyu` runs. The
//! app here is examples/xianyu/xianyu_sim.py: real SQLite databases with the app's tables and a
//! real HTTP /health, standing in for the real app (which needs its marketplace account).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

use coffer_testkit::free_port;

/// coffer.toml for an app folder; with `lifecycle`, restore stops and starts the app.
fn config(env: &Env, name: &str, dir: &Path, port: u16, lifecycle: bool) -> PathBuf {
    let sim = sim();
    let mut settings = format!("health_url = \"http://127.0.0.1:{port}/health\"\n");
    if lifecycle {
        settings += &format!(
            "stop_command = \"python3 {s} stop .\"\nstart_command = \"python3 {s} start . --port {port}\"\n",
            s = sim.display()
        );
    }
    let p = env.path(name);
    std::fs::write(
        &p,
        format!(
            "[apps.xianyu]\nplugin = \"xianyu\"\ndir = \"{}\"\n[apps.xianyu.settings]\n{settings}[apps.xianyu.grants]\nprograms = [\"python3\"]\nhttp = [\"http://127.0.0.1:{port}\"]\n",
            dir.display()
        ),
    )
    .unwrap();
    p
}

fn query(db: &Path, sql: &str) -> Vec<Vec<String>> {
    coffer_runtime::caps::query(db, sql).unwrap()
}

#[test]
fn live_sqlite_capture_is_consistent_and_restores() {
    let env = Env::new();
    let (app, port, _server) = running_app(&env, 5000, 5);
    let cfg = config(&env, "coffer.toml", &app, port, true);
    let cfg_s = cfg.to_str().unwrap();
    let inspect = env.json(&["--config", cfg_s, "plugin", "inspect", "xianyu"]);
    assert_eq!(inspect["not_granted"], serde_json::json!([]), "{inspect}");
    let bare = env.path("bare.toml");
    std::fs::write(
        &bare,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("programs = [\"python3\"]", "programs = []"),
    )
    .unwrap();
    let inspect = env.json(&[
        "--config",
        bare.to_str().unwrap(),
        "plugin",
        "inspect",
        "xianyu",
    ]);
    assert_eq!(
        inspect["not_granted"],
        serde_json::json!([["programs", "python3"]]),
        "{inspect}"
    );

    // The app writes continuously while the backup runs.
    let mut writer: Child = Command::new("python3")
        .arg(sim())
        .args(["write", app.to_str().unwrap(), "--seconds", "8"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let out = env.json(&["--config", cfg_s, "backup", "xianyu"]);
    let status = writer.wait().unwrap();
    assert!(status.success());
    let mut written = String::new();
    std::io::Read::read_to_string(&mut writer.stdout.take().unwrap(), &mut written).unwrap();
    let written: u64 = written.trim().parse().unwrap();
    let snap = out["snapshot"].as_str().unwrap().to_string();
    let counts = &out["metadata"]["databases"]["xianyu_data.db"]["tables"];
    assert_eq!(
        out["metadata"]["databases"]["xianyu_data.db"]["integrity"], "ok",
        "{out}"
    );

    // Restore into a fresh folder (no stop/start there: the live app keeps its folder).
    let fresh = env.path("fresh");
    let cfg2 = config(&env, "fresh.toml", &fresh, port, false);
    let r = env.json(&["--config", cfg2.to_str().unwrap(), "restore", &snap]);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["healthy"], true, "{r}");
    let db = fresh.join("data/xianyu_data.db");
    assert_eq!(
        query(&db, "PRAGMA integrity_check"),
        vec![vec!["ok".to_string()]]
    );
    // Every transaction is all there or not at all.
    let torn = query(
        &db,
        "SELECT txn, count(*) FROM messages WHERE txn > 0 GROUP BY txn HAVING count(*) != 2",
    );
    assert!(torn.is_empty(), "transactions captured half: {torn:?}");
    let live: u64 = query(
        &db,
        "SELECT count(DISTINCT txn) FROM messages WHERE txn > 0",
    )[0][0]
        .parse()
        .unwrap();
    eprintln!("writer committed {written} transactions; the capture holds {live} of them");
    assert!(
        live > 0 && live < written,
        "the capture did not happen while the writer ran ({live} of {written})"
    );
    assert_eq!(
        query(&db, "SELECT count(*) FROM messages")[0][0],
        counts["messages"].to_string()
    );
    assert_eq!(
        hash_file(&fresh.join("global_config.yml")),
        hash_file(&app.join("global_config.yml"))
    );
    assert_same(
        &manifest(&app.join("static/uploads/images")),
        &manifest(&fresh.join("static/uploads/images")),
    );

    // --only db into the live folder: the app is stopped and started, the replaced files kept.
    let before = hash_file(&app.join("data/user_stats.db"));
    let r = env.json(&["--config", cfg_s, "restore", &snap, "--only", "db"]);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["healthy"], true, "{r}");
    let aside: Vec<_> = std::fs::read_dir(app.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".coffer-replaced-"))
        .collect();
    assert_eq!(
        aside.len(),
        2,
        "replaced databases are kept aside: {aside:?}"
    );
    let kept = app.join("data").join(
        aside
            .iter()
            .find(|n| n.starts_with("user_stats.db"))
            .unwrap(),
    );
    assert_eq!(
        hash_file(&kept),
        before,
        "the copy kept aside is the replaced file"
    );
    let now: u64 = query(
        &app.join("data/xianyu_data.db"),
        "SELECT count(DISTINCT txn) FROM messages WHERE txn > 0",
    )[0][0]
        .parse()
        .unwrap();
    assert_eq!(
        now, live,
        "the live database is back at the snapshot's point"
    );
    // And the repository is sound, plugin wasm included.
    env.ok(&["check", "--read-data"]);
    let snaps = env.json(&["--config", cfg_s, "snapshots", "--app", "xianyu"]);
    assert_eq!(snaps[0]["plugin"]["name"], "xianyu");
}

/// Defect 12 of issue 10: `global_config.yml` or `static/uploads/images` that are symlinks were
/// skipped (leading outside the app folder) or stored as a bare link (inside), with exit 0. A link
/// that stays inside is followed; one that leaves fails the capture, naming it.
#[test]
fn xianyu_capture_follows_links_inside_the_app_and_refuses_links_outside() {
    let env = Env::new();
    let app = generated_app(&env, 50, 3);
    // Inside: the config and the uploads live elsewhere in the app folder, linked in place.
    std::fs::create_dir_all(app.join("shared")).unwrap();
    std::fs::rename(app.join("global_config.yml"), app.join("shared/config.yml")).unwrap();
    std::os::unix::fs::symlink("shared/config.yml", app.join("global_config.yml")).unwrap();
    let images = app.join("static/uploads/images");
    std::fs::rename(&images, app.join("shared/images")).unwrap();
    std::os::unix::fs::symlink("../../shared/images", &images).unwrap();
    let cfg = config(&env, "coffer.toml", &app, free_port(), false);
    let cfg_s = cfg.to_str().unwrap();
    let out = env.json(&["--config", cfg_s, "backup", "xianyu"]);
    let snap = out["snapshot"].as_str().unwrap().to_string();
    assert_eq!(
        out["metadata"]["items"],
        serde_json::json!(["db", "config", "uploads"]),
        "{out}"
    );
    let listing = env.ok(&["ls", "--long", &snap]);
    let line = |p: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(p))
            .unwrap_or_else(|| panic!("{p} not captured:\n{listing}"))
            .to_string()
    };
    assert!(
        line("config/global_config.yml").starts_with("file"),
        "{listing}"
    );
    assert!(line("uploads").starts_with("dir"), "{listing}");
    let images_in_snapshot = listing.lines().filter(|l| l.contains("uploads/")).count();
    assert_eq!(images_in_snapshot, 3, "{listing}");

    // Outside: the capture fails and names the link.
    let elsewhere = env.path("elsewhere.yml");
    std::fs::rename(app.join("shared/config.yml"), &elsewhere).unwrap();
    std::fs::remove_file(app.join("global_config.yml")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, app.join("global_config.yml")).unwrap();
    let err = env.fails(&["--config", cfg_s, "backup", "xianyu"], 16);
    assert!(err.contains("global_config.yml"), "{err}");
    assert!(err.contains("outside the app folder"), "{err}");
}

/// File contents under `p` (a file or a folder), by path below it.
fn contents(p: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(q) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&q) else {
            continue;
        };
        if meta.is_dir() {
            for e in std::fs::read_dir(&q).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else {
            let rel = q.strip_prefix(p).unwrap().display().to_string();
            out.insert(rel, hash_file(&q));
        }
    }
    out
}

/// Kill -9 during an app restore, at random moments, again and again: each item of the app
/// folder is always either as it was or as restored (the swap is one exchange), never missing
/// or half-written, and a final re-run completes.
#[test]
fn kill_9_during_an_app_restore_leaves_each_item_old_or_restored() {
    let env = Env::new();
    let (app, port, _server) = running_app(&env, 3000, 20);
    let cfg = config(&env, "coffer.toml", &app, port, true);
    let cfg_s = cfg.to_str().unwrap();
    let snap = env.json(&["--config", cfg_s, "backup", "xianyu"])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let items = [
        "data/xianyu_data.db",
        "data/user_stats.db",
        "global_config.yml",
        "static/uploads/images",
    ];
    // What a restore puts in place, from a restore into another folder.
    let reference = env.path("reference");
    env.ok(&[
        "--config",
        cfg_s,
        "restore",
        &snap,
        "--dir",
        reference.to_str().unwrap(),
    ]);
    let restored: Vec<_> = items.iter().map(|i| contents(&reference.join(i))).collect();
    // The live app moves on after the backup.
    std::fs::write(app.join("global_config.yml"), "changed: true\n").unwrap();
    std::fs::write(app.join("static/uploads/images/new.jpg"), noise(50_000, 5)).unwrap();
    py(&["write", app.to_str().unwrap(), "--seconds", "1"]);
    let mut rng = Rng(7);
    for round in 0..8 {
        let before: Vec<_> = items.iter().map(|i| contents(&app.join(i))).collect();
        kill_at_random(&env, &["--config", cfg_s, "restore", &snap], &mut rng, 1500);
        for (k, item) in items.iter().enumerate() {
            let now = contents(&app.join(item));
            assert!(
                now == before[k] || now == restored[k],
                "round {round}: {item} is neither as it was nor as restored"
            );
        }
    }
    let r = env.json(&["--config", cfg_s, "restore", &snap]);
    assert_eq!(r["verified"], true, "{r}");
    for (k, item) in items.iter().enumerate() {
        assert_eq!(contents(&app.join(item)), restored[k], "{item}");
    }
}

/// `coffer drill` (issue 12, part): the stored plugin restores into scratch space with its stop
/// and start commands NOT run, verify runs there, the scratch goes, the live app (process,
/// files) is untouched, and the result shows in `snapshots`. A snapshot that cannot come back
/// fails its drill (exit 19).
#[test]
fn a_drill_verifies_in_scratch_space_and_never_touches_the_live_app() {
    let env = Env::new();
    let (app, port, _server) = running_app(&env, 800, 3);
    let cfg = config(&env, "coffer.toml", &app, port, true);
    let cfg = cfg.to_str().unwrap();
    let b = env.json(&["--config", cfg, "backup", "xianyu"]);
    let pid = std::fs::read_to_string(app.join("run/xianyu.pid")).unwrap();
    // The app's files (SQLite's -shm/-wal, and so data/'s time, change under any reader, the
    // app's own included).
    let files = |app: &Path| {
        let mut m = manifest(app);
        m.retain(|k, _| {
            let k = String::from_utf8_lossy(k);
            !k.ends_with("-shm") && !k.ends_with("-wal") && !k.starts_with("run") && k != "data"
        });
        m
    };
    let live = files(&app);

    let (d, stderr) = env.json_exit(&["--config", cfg, "drill", "xianyu"], 0);
    assert_eq!(d["ok"], true, "{d}");
    assert_eq!(d["snapshot"], b["snapshot"]);
    let checks = d["verify"].as_array().unwrap();
    assert!(
        checks.len() >= 2 && checks.iter().all(|c| c["ok"] == true),
        "{d}"
    );
    assert!(
        stderr.contains("drill: not running stop_command"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(app.join("run/xianyu.pid")).unwrap(),
        pid,
        "the live app was not restarted"
    );
    assert_same(&live, &files(&app));
    let (status, _) = coffer_testkit::compose::http("GET", port, "/health").unwrap();
    assert_eq!(status, 200);
    let scratch: Vec<_> = std::fs::read_dir(env.cache.join("drills"))
        .unwrap()
        .collect();
    assert!(scratch.is_empty(), "the scratch space is removed");
    let snaps = env.json(&["--config", cfg, "snapshots", "--app", "xianyu"]);
    assert_eq!(snaps[0]["drill"]["ok"], true, "{snaps}");

    // Damage every data pack: the snapshot would not bring the app back, and the drill says so.
    for p in env.objects("data") {
        let mut bytes = std::fs::read(&p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&p, bytes).unwrap();
    }
    let (d, _) = env.json_exit(&["--config", cfg, "drill", "xianyu"], 19);
    assert_eq!(d["ok"], false, "{d}");
    let snaps = env.json(&["--config", cfg, "snapshots", "--app", "xianyu"]);
    assert_eq!(snaps[0]["drill"]["ok"], false, "{snaps}");
    assert_same(&live, &files(&app));
}

/// A guarded upgrade of an app that does not run under Compose: the deployment's own update
/// script (`upgrade_command`, here the simulator's: stop, a forward migration of the database,
/// the new `app_version`, start). A version that comes up unhealthy is rolled back by coffer:
/// the database without the migration, the old version, the app healthy; a good one stays,
/// though it answers 503 for its first 4 s: coffer gives it `start_secs` to turn healthy once
/// before its checks count.
#[test]
fn a_scripted_upgrade_rolls_back_an_unhealthy_version_and_keeps_a_good_one() {
    let env = Env::new();
    let (app, port, _server) = running_app(&env, 800, 3);
    let cfg = config(&env, "coffer.toml", &app, port, true);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[apps.xianyu.settings]\n",
        &format!(
            "[apps.xianyu.settings]\nupgrade_command = \"python3 {} upgrade . --to {{version}} --port {port}\"\n",
            sim().display()
        ),
    ) + "[apps.xianyu.upgrade]\nchecks = 2\ninterval_secs = 1\nstart_secs = 10\n";
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.to_str().unwrap();
    let db = app.join("data/xianyu_data.db");
    let migrations = |db: &Path| {
        query(
            db,
            "SELECT count(*) FROM sqlite_master WHERE name = 'app_migrations'",
        )[0][0]
            .clone()
    };
    let version = |app: &Path| {
        std::fs::read_to_string(app.join("global_config.yml"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("app_version: ").map(str::to_string))
            .unwrap()
    };
    let (r, stderr) = env.json_exit(
        &["--config", cfg, "upgrade", "xianyu", "--to", "2.0-broken"],
        17,
    );
    assert_eq!(
        (r["from"].as_str(), r["outcome"].as_str()),
        (Some("1.0"), Some("rolled_back")),
        "{r}"
    );
    assert!(
        stderr.contains("running upgrade_command for 2.0-broken"),
        "{stderr}"
    );
    assert_eq!(migrations(&db), "0", "the forward migration is undone");
    assert_eq!(version(&app), "1.0");
    let (status, _) = coffer_testkit::compose::http("GET", port, "/health").unwrap();
    assert_eq!(status, 200);

    let (r, stderr) = env.json_exit(
        &["--config", cfg, "upgrade", "xianyu", "--to", "2.0-slow"],
        0,
    );
    assert_eq!(r["outcome"], "upgraded", "{r}");
    assert!(stderr.contains("waiting for xianyu to start"), "{stderr}");
    assert!(r["downtime_secs"].as_f64().unwrap() >= 3.0, "{r}");
    assert_eq!(migrations(&db), "1");
    assert_eq!(version(&app), "2.0-slow");
    // A version that is not one argument's worth of text is refused before anything runs.
    let err = env.fails(
        &[
            "--config",
            cfg,
            "upgrade",
            "xianyu",
            "--to",
            "3.0; rm -rf .",
        ],
        1,
    );
    assert!(err.contains("may hold only"), "{err}");
    assert_eq!(version(&app), "2.0-slow");
}
