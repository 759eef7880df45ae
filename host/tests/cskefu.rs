//! The cskefu plugin and the Compose capability on the machine's real Docker engine (with its
//! Compose). The deployment is examples/cskefu/docker-compose.yml, the real project's shape, run
//! on stand-in images built from Debian's packages under the upstream names
//! (examples/images/build.sh): MariaDB plays MySQL 5.7, Debian's Redis plays Redis;
//! ActiveMQ and the contact-center app are NOT the real programs but stand-ins honouring their
//! contract (ports, data folders, the app's schema upgrade at start, its health endpoint, and a
//! message written as two rows in one transaction plus an upload). Without an engine these
//! tests fail, they do not skip.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coffer_testkit::compose::{image_id, running, Cskefu, Victim};
use common::*;

fn config(env: &Env, app: &Cskefu, settings: &str) -> PathBuf {
    let p = env.path("coffer.toml");
    std::fs::write(
        &p,
        format!(
            "[apps.cskefu]\nplugin = \"cskefu\"\ndir = \"{dir}\"\n[apps.cskefu.settings]\nproject = \"{project}\"\nhealth_url = \"http://127.0.0.1:{web}/actuator/health\"\nstop_timeout_secs = 10\nstart_timeout_secs = 240\n{settings}\n[apps.cskefu.grants]\nhttp = [\"http://127.0.0.1:{web}\"]\n[apps.cskefu.grants.compose]\n{project} = [\"mysql\"]\n",
            dir = app.dir.display(),
            project = app.project,
            web = app.web,
        ),
    )
    .unwrap();
    p
}

fn project_name(kind: &str) -> String {
    format!("cskefu-{kind}-{}", rand_suffix().to_lowercase())
}

/// Posts messages until stopped; how many were stored.
struct Writer {
    stop: Arc<AtomicBool>,
    stored: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(app: &Cskefu) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let stored = Arc::new(AtomicUsize::new(0));
        let (s, n, web) = (stop.clone(), stored.clone(), app.web);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match coffer_testkit::compose::http("POST", web, "/api/messages") {
                    Ok((200, _)) => {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        Writer {
            stop,
            stored,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.stored.load(Ordering::Relaxed)
    }
}

/// Polls how many of the project's containers run; the fewest seen, once stopped.
fn watch_running(app: &Cskefu) -> (Arc<AtomicBool>, std::thread::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let project = app.project.clone();
    let t = std::thread::spawn(move || {
        let mut fewest = usize::MAX;
        while !s.load(Ordering::Relaxed) {
            fewest = fewest.min(running(&project, None).len());
            std::thread::sleep(Duration::from_millis(100));
        }
        fewest
    });
    (stop, t)
}

fn count(app: &Cskefu, table: &str) -> u64 {
    app.sql(&format!("SELECT COUNT(*) FROM {table}"))
        .trim()
        .parse()
        .unwrap()
}

fn uploads(root: &Path) -> std::collections::BTreeMap<Vec<u8>, Entry> {
    manifest(&root.join("contact-center/data/uploads"))
}

#[test]
fn cold_backup_stops_the_stack_keeps_owners_and_a_disaster_restore_brings_it_back() {
    let env = Env::new();
    let app = Cskefu::new(env.dir.path(), &project_name("cold"));
    app.up();
    for _ in 0..20 {
        app.post_message().expect("the app stores messages");
    }
    let cfg = config(&env, &app, "");
    let cfg = cfg.to_str().unwrap();

    // Day 1, while the app serves and writes.
    let writer = Writer::start(&app);
    std::thread::sleep(Duration::from_millis(500));
    let (stop, watcher) = watch_running(&app);
    let day1 = env.json(&["--config", cfg, "backup", "cskefu"]);
    stop.store(true, Ordering::Relaxed);
    let fewest = watcher.join().unwrap();
    let written = writer.finish();
    assert_eq!(
        fewest, 0,
        "every container is really stopped during a cold capture"
    );
    assert!(app.healthy(), "started again and healthy after the backup");
    assert_eq!(app.running(), 4, "{:?}", app.containers());
    let meta = &day1["metadata"];
    let downtime = meta["downtime_ms"].as_u64().unwrap();
    assert!(downtime > 0, "{meta}");
    assert_eq!(meta["mode"], "cold");
    assert_eq!(meta["tag"], "4b70d05");
    for svc in ["contact-center", "mysql", "redis", "activemq"] {
        assert!(
            meta["services"][svc]["image_id"]
                .as_str()
                .unwrap()
                .starts_with("sha256:"),
            "{svc}: {meta}"
        );
    }
    let rows = meta["tables"]["cs_message"]["rows"].as_u64().unwrap();
    assert!(rows >= 20, "{meta}");
    assert_eq!(meta["tables"]["cs_audit"]["rows"].as_u64(), Some(rows));
    eprintln!(
        "cold backup: downtime {:.1} s, {} messages written meanwhile, {} bytes added",
        downtime as f64 / 1000.0,
        written,
        day1["bytes_added"]
    );

    // Owners and modes as tar -p keeps them: MySQL's files belong to the container's uid 999.
    let copy = env.path("plain");
    env.ok(&["restore", "latest", "--target", copy.to_str().unwrap()]);
    let ibdata = copy.join("deployment/database/mysql/data/ibdata1");
    let m = std::fs::metadata(&ibdata).unwrap();
    assert_eq!((m.uid(), m.gid()), (999, 999), "{}", ibdata.display());
    let live = std::fs::metadata(app.dir.join("database/mysql/data/ibdata1")).unwrap();
    assert_eq!(m.mode(), live.mode());

    // Day 2: a few more messages; only what changed is added.
    for _ in 0..10 {
        app.post_message().unwrap();
    }
    let day2 = env.json(&["--config", cfg, "backup", "cskefu"]);
    eprintln!(
        "second day's cold backup: {} bytes added of {} (downtime {} ms)",
        day2["bytes_added"], day2["total_bytes"], day2["metadata"]["downtime_ms"]
    );
    let snap_rows = day2["metadata"]["tables"]["cs_message"]["rows"]
        .as_u64()
        .unwrap();
    let snapshot_copy = env.path("day2");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        snapshot_copy.to_str().unwrap(),
    ]);
    let snapshot_uploads = uploads(&snapshot_copy.join("deployment"));

    // Restore over a living folder: it is kept aside, never deleted.
    for _ in 0..5 {
        app.post_message().unwrap();
    }
    let report = env.json(&["--config", cfg, "restore", "latest"]);
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["healthy"], true, "{report}");
    let parent = app.dir.parent().unwrap();
    let aside: Vec<PathBuf> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("cskefu.osc.backup-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the replaced folder is kept beside it");
    assert_eq!(
        uploads(&aside[0]).len(),
        snapshot_uploads.len() + 5,
        "the folder aside holds what came after the snapshot"
    );
    assert_eq!(count(&app, "cs_message"), snap_rows);
    assert_same(&snapshot_uploads, &uploads(&app.dir));

    // Disaster: the folder and the containers gone.
    app.remove();
    std::fs::remove_dir_all(&app.dir).unwrap();
    let report = env.json(&["--config", cfg, "restore", "latest"]);
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["healthy"], true, "{report}");
    let checks = report["verify"].as_array().unwrap();
    assert!(
        checks.iter().any(|c| c["name"] == "table cs_message"
            && c["detail"].as_str().unwrap().contains("checksum equal")),
        "{report}"
    );
    assert!(app.healthy());
    assert_eq!(app.running(), 4);
    assert_eq!(count(&app, "cs_message"), snap_rows);
    assert_eq!(count(&app, "cs_audit"), snap_rows);
    assert_same(&snapshot_uploads, &uploads(&app.dir));
    let m = std::fs::metadata(app.dir.join("database/mysql/data/ibdata1")).unwrap();
    assert_eq!((m.uid(), m.gid()), (999, 999));
    let still_aside = std::fs::read_dir(parent)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("cskefu.osc.backup-")
        })
        .count();
    assert_eq!(still_aside, 1, "no folder to keep aside after a disaster");
    // The app keeps working on the restored data.
    assert!(app.post_message().unwrap() > snap_rows);
}

#[test]
fn online_dump_under_a_write_load_restores_with_no_torn_transaction() {
    let env = Env::new();
    let app = Cskefu::new(env.dir.path(), &project_name("online"));
    app.up();
    let cfg = config(&env, &app, "mode = \"online\"");
    let cfg = cfg.to_str().unwrap();
    for _ in 0..20 {
        app.post_message().unwrap();
    }
    let writer = Writer::start(&app);
    std::thread::sleep(Duration::from_millis(500));
    let (stop, watcher) = watch_running(&app);
    let b = env.json(&["--config", cfg, "backup", "cskefu"]);
    stop.store(true, Ordering::Relaxed);
    assert_eq!(watcher.join().unwrap(), 4, "nothing stops in online mode");
    let written = writer.finish();
    assert!(written > 0, "the app was written to during the backup");
    let meta = &b["metadata"];
    assert_eq!(meta["mode"], "online");
    assert_eq!(meta["downtime_ms"], 0);
    assert!(meta["consistency"]["mysql"]
        .as_str()
        .unwrap()
        .contains("point in time"));
    let items = b["items"].as_array().unwrap();
    assert!(items.iter().any(|i| i == "mysql/dump.sql"), "{items:?}");
    let pieces = meta["pieces"].as_array().unwrap();
    assert!(
        !pieces
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("database/mysql/data")),
        "MySQL's live files are not copied: {pieces:?}"
    );

    // The whole thing lost; the dump brings the database back.
    app.remove();
    std::fs::remove_dir_all(&app.dir).unwrap();
    let report = env.json(&["--config", cfg, "restore", "latest"]);
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["healthy"], true, "{report}");
    let messages = count(&app, "cs_message");
    let audits = count(&app, "cs_audit");
    assert_eq!(messages, audits, "a transaction of two rows torn apart");
    let orphans = app.sql(
        "SELECT COUNT(*) FROM cs_message m LEFT JOIN cs_audit a ON a.message_id = m.id WHERE a.id IS NULL",
    );
    assert_eq!(orphans.trim(), "0");
    assert!(
        messages >= meta["tables"]["cs_message"]["rows"].as_u64().unwrap(),
        "the dump holds at least what was counted before it"
    );
    eprintln!("online backup: {written} messages written during it; restored {messages} whole");
}

#[test]
fn a_moving_tag_is_refused_with_the_running_images_digest_and_a_pinned_one_accepted() {
    let env = Env::new();
    let app = Cskefu::new(env.dir.path(), &project_name("tag"));
    app.write_env("cskefu/contact-center:develop");
    app.up();
    let cfg = config(&env, &app, "");
    let cfg = cfg.to_str().unwrap();
    // inspect shows what the plugin asks for and what the app grants.
    let shown = env.ok(&["--config", cfg, "plugin", "inspect", "cskefu"]);
    assert!(
        shown.contains("exec in service mysql of project"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "granted compose project {}, exec in mysql",
            app.project
        )),
        "{shown}"
    );
    assert!(
        shown.contains("every requested capability is granted"),
        "{shown}"
    );
    let err = env.fails(&["--config", cfg, "backup", "cskefu"], 16);
    let id = std::process::Command::new("docker")
        .args([
            "image",
            "inspect",
            "-f",
            "{{.Id}}",
            "cskefu/contact-center:develop",
        ])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    assert!(err.contains("moving tag"), "{err}");
    assert!(err.contains(&id), "names the running image: {err}");
    assert!(err.contains("CC_IMAGE=cskefu/contact-center:<id>"), "{err}");
    assert_eq!(app.running(), 4, "a refused backup touches nothing");
    assert!(env.json(&["snapshots"]).as_array().unwrap().is_empty());

    // Allowed on purpose: captured, with a warning.
    let cfg_allow = config(&env, &app, "allow_moving_tag = true");
    let b = env.json(&["--config", cfg_allow.to_str().unwrap(), "backup", "cskefu"]);
    assert_eq!(b["metadata"]["tag"], "develop");

    // Pinned: accepted.
    app.write_env("cskefu/contact-center:4b70d05");
    app.up();
    let cfg = config(&env, &app, "");
    let b = env.json(&["--config", cfg.to_str().unwrap(), "backup", "cskefu"]);
    assert_eq!(b["metadata"]["cc_image"], "cskefu/contact-center:4b70d05");
    assert!(app.healthy());
}

#[test]
fn a_failed_capture_still_starts_the_app_again() {
    let env = Env::new();
    let app = Cskefu::new(env.dir.path(), &project_name("fail"));
    app.up();
    let cfg = config(&env, &app, "");
    let cfg = cfg.to_str().unwrap();

    // The project will not go down: a container outside it holds its network.
    let net = format!("{}_default", app.project);
    let intruder = format!("{}-intruder", app.project);
    coffer_testkit::compose::run_ok(std::process::Command::new("docker").args([
        "run",
        "-d",
        "--rm",
        "--network",
        &net,
        "--name",
        &intruder,
        "--entrypoint",
        "sleep",
        "cskefu/redis:5.0.5",
        "600",
    ]));
    let err = env.fails(&["--config", cfg, "backup", "cskefu"], 16);
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &intruder])
        .output();
    assert!(err.contains("down"), "{err}");
    assert!(err.contains("started again"), "{err}");
    assert!(app.healthy());
    assert_eq!(app.running(), 4);

    // A full disk: the repository on a file system with no room for the folder, whose uploads
    // (random bytes) fill packs while the capture runs.
    let big = app.dir.join("contact-center/data/uploads/big.bin");
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    std::fs::write(&big, noise(48 << 20, 7)).unwrap();
    let small = env.path("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=4m",
            "tmpfs",
            small.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mounting a small tmpfs (the tests run as root)"
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    let mut full = Env::uninit();
    full.repo = small.join("repo");
    full.location = full.repo.display().to_string();
    full.ok(&["init"]);
    let out = full.run(&["--config", cfg, "backup", "cskefu"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a full disk fails the backup");
    assert!(err.contains("started again"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(app.healthy());
    assert_eq!(app.running(), 4);
}

/// The Compose grant reaches one project: the hostile plugin tries the others and is refused,
/// each time with the grant named; the other project runs on untouched.
#[test]
fn the_compose_grant_reaches_only_its_own_project() {
    let env = Env::new();
    let victim_name = project_name("victim");
    let victim = Victim::start(env.dir.path(), &victim_name);
    let mine = env.path("mine");
    std::fs::create_dir_all(&mine).unwrap();
    let wasm = env.path("hostile.wasm");
    std::fs::copy(
        Path::new(env!("COFFER_TEST_PLUGIN_DIR")).join("coffer_plugin_hostile.wasm"),
        &wasm,
    )
    .unwrap();
    let hash = blake3::hash(&std::fs::read(&wasm).unwrap())
        .to_hex()
        .to_string();
    for (attack, expect) in [
        ("compose-exec-other", "which is not granted"),
        (
            "compose-exec-service",
            "exec in service 'db' of Compose project 'mine', which is not granted",
        ),
        ("compose-down-other", "which is not granted"),
        ("compose-outside", "outside the app folder"),
        ("compose-escape", "a bind mount outside its folder"),
    ] {
        let cfg = env.path(&format!("{attack}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[apps.h]\nplugin = \"{}\"\nblake3 = \"{hash}\"\ndir = \"{}\"\n[apps.h.settings]\nattack = \"{attack}\"\ntarget = \"{victim_name}\"\n[apps.h.grants.compose]\nmine = [\"app\"]\n",
                wasm.display(),
                mine.display()
            ),
        )
        .unwrap();
        let err = env.fails(&["--config", cfg.to_str().unwrap(), "backup", "h"], 16);
        assert!(err.contains(expect), "{attack}: {err}");
        if attack.ends_with("-other") {
            assert!(
                err.contains(&victim_name),
                "{attack} names the project it asked for: {err}"
            );
        }
        if attack != "compose-outside" {
            assert!(
                err.contains("[apps.h.grants]") || err.contains("grant"),
                "{attack}: {err}"
            );
        }
        assert!(victim.running(), "{attack} reached the other project");
    }
    // No container was started with the host's root mounted.
    assert!(
        coffer_testkit::compose::run_ok(std::process::Command::new("docker").args([
            "ps",
            "-aq",
            "--filter",
            "label=com.docker.compose.project=mine"
        ]))
        .trim()
        .is_empty()
    );

    // A raw docker grant is refused before any plugin runs.
    let cfg = env.path("docker.toml");
    std::fs::write(
        &cfg,
        format!(
            "[apps.h]\nplugin = \"{}\"\nblake3 = \"{hash}\"\ndir = \"{}\"\n[apps.h.grants]\nprograms = [\"docker\"]\n",
            wasm.display(),
            mine.display()
        ),
    )
    .unwrap();
    let err = env.fails(&["--config", cfg.to_str().unwrap(), "backup", "h"], 1);
    assert!(err.contains("compose = {"), "{err}");
}

fn running_image(app: &Cskefu) -> String {
    let ids = running(&app.project, Some("contact-center"));
    let id = ids.first().expect("contact-center runs");
    coffer_testkit::compose::run_ok(std::process::Command::new("docker").args([
        "inspect",
        "-f",
        "{{.Image}}",
        id,
    ]))
    .trim()
    .to_string()
}

/// A guarded upgrade (issue 12's loop on cskefu): 9f3e1aa migrates the schema forward and never
/// becomes healthy, so coffer rolls back by itself, data and image; 7d2c9e4 migrates and stays.
#[test]
fn a_failing_upgrade_rolls_back_data_and_image_and_a_good_one_stays() {
    let env = Env::new();
    let app = Cskefu::new(env.dir.path(), &project_name("upgrade"));
    app.up();
    for _ in 0..10 {
        app.post_message().unwrap();
    }
    let cfg = config(&env, &app, "");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(
        "[apps.cskefu.upgrade]\nchecks = 3\ninterval_secs = 1\nfailure_limit = 0\nstart_secs = 30\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.to_str().unwrap();
    let channel = |app: &Cskefu| {
        app.sql("SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = 'cosinee' AND table_name = 'cs_message' AND column_name = 'channel'")
            .trim()
            .to_string()
    };
    assert_eq!(channel(&app), "0");
    let rows = count(&app, "cs_message");
    let v1 = image_id("cskefu/contact-center:4b70d05");
    assert_eq!(running_image(&app), v1);

    let (r, stderr) = env.json_exit(
        &["--config", cfg, "upgrade", "cskefu", "--to", "9f3e1aa"],
        17,
    );
    assert_eq!(r["outcome"], "rolled_back", "{r}");
    eprintln!("upgrade to 9f3e1aa, rolled back: {}", upgrade_phases(&r));
    assert_eq!(r["from"], "4b70d05");
    assert!(r["error"].as_str().unwrap().contains("health"), "{r}");
    assert!(stderr.contains("rolling back"), "a live log: {stderr}");
    assert_eq!(running_image(&app), v1, "v1's image runs again");
    assert_eq!(channel(&app), "0", "the forward migration is undone");
    assert_eq!(
        app.sql("SELECT COUNT(*) FROM cs_schema WHERE version = '9f3e1aa'")
            .trim(),
        "0"
    );
    assert_eq!(count(&app, "cs_message"), rows);
    assert!(app.healthy());

    let r = env.json(&["--config", cfg, "upgrade", "cskefu", "--to", "7d2c9e4"]);
    assert_eq!(r["outcome"], "upgraded", "{r}");
    assert_eq!(
        running_image(&app),
        image_id("cskefu/contact-center:7d2c9e4")
    );
    assert_eq!(channel(&app), "1");
    assert!(app.healthy());
    let snaps = env.json(&["snapshots"]);
    let pre: Vec<&serde_json::Value> = snaps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "pre-upgrade"))
        })
        .collect();
    assert_eq!(
        pre.len(),
        2,
        "one pre-upgrade snapshot per upgrade: {snaps}"
    );
    eprintln!("upgrade to 7d2c9e4: {}", upgrade_phases(&r));
}
