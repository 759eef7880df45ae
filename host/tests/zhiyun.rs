//! The zhiyun plugin end to end, against:
//! - PostgreSQL: a real throw-away cluster from Debian's packages (testkit::Postgres);
//! - MinIO's role: the real Garage S3 server (testkit::Garage), bucket per test;
//! - Qdrant: a STAND-IN (testkit::Qdrant), since Qdrant cannot be installed here. It speaks the
//!   documented snapshot API with Qdrant's request and response shapes, but its snapshots are
//!   JSON rather than Qdrant's tar archives; the plugin never looks inside them;
//! - the app's /api/health: examples/zhiyun/health_sim.py, a stand-in that checks the database
//!   and Qdrant the way the app does.
//!
//! The dataset comes from examples/zhiyun/make-dataset.sh; the write load from pgbench running
//! examples/zhiyun/writer.pgbench (the app's message write path).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use coffer_testkit::{Garage, Postgres, Qdrant};
use common::*;

const APP_PASSWORD: &str = "zhiyun-app-pw";

fn example(f: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/zhiyun")
        .join(f)
        .canonicalize()
        .unwrap()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The three servers with a dataset in them, the app's health endpoint, and coffer.toml.
struct Stack {
    pg: Postgres,
    qdrant: Qdrant,
    garage: &'static Garage,
    bucket: String,
    app: PathBuf,
    health_port: u16,
    _health: Killed,
}

impl Stack {
    fn start(env: &Env, messages: u32) -> Stack {
        let pg = Postgres::start();
        pg.sql(
            "postgres",
            &format!("CREATE ROLE zhiyun LOGIN CREATEDB PASSWORD '{APP_PASSWORD}'"),
        );
        let app = env.path("zhiyun");
        std::fs::create_dir_all(&app).unwrap();
        // Qdrant's snapshots folder is a folder of the deployment, as a compose file mounts it.
        let qdrant = Qdrant::start_in(&app.join("qdrant/snapshots"));
        let garage = Garage::shared();
        let bucket = format!("zhiyun{}", rand_suffix());
        garage.create_bucket(&bucket);
        let out = Command::new("bash")
            .arg(example("make-dataset.sh"))
            .envs(app_env(&pg))
            .env("ZHIYUN_MESSAGES", messages.to_string())
            .env("ZHIYUN_FILES", "12")
            .env("QDRANT_URL", qdrant.url())
            .env("S3_ENDPOINT", garage.endpoint())
            .env("S3_BUCKET", &bucket)
            .envs(garage.client_env())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make-dataset.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let health_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut health = Command::new("python3")
            .arg(example("health_sim.py"))
            .args([
                "--port",
                &health_port.to_string(),
                "--qdrant",
                &qdrant.url(),
            ])
            .envs(app_env(&pg))
            .env("PGDATABASE", "zhiyun")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(health.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        Stack {
            pg,
            qdrant,
            garage,
            bucket,
            app,
            health_port,
            _health: Killed(health),
        }
    }

    /// coffer.toml for the app; `settings` lines override the defaults written here.
    fn config(&self, env: &Env, file: &str, settings: &[(&str, &str)]) -> PathBuf {
        let mut s: BTreeMap<&str, String> = BTreeMap::new();
        s.insert("db_host", "\"127.0.0.1\"".into());
        s.insert("db_port", self.pg.port.to_string());
        s.insert("db_user", "\"zhiyun\"".into());
        s.insert(
            "db_password",
            "{ env = \"ZHIYUN_TEST_DB_PASSWORD\" }".into(),
        );
        s.insert("qdrant_url", format!("\"{}\"", self.qdrant.url()));
        s.insert("minio_endpoint", format!("\"{}\"", self.garage.endpoint()));
        s.insert("minio_bucket", format!("\"{}\"", self.bucket));
        s.insert(
            "minio_access_key",
            format!("\"{}\"", self.garage.env["AWS_ACCESS_KEY_ID"]),
        );
        let secret = env.path("minio-secret");
        std::fs::write(
            &secret,
            format!("{}\n", self.garage.env["AWS_SECRET_ACCESS_KEY"]),
        )
        .unwrap();
        s.insert(
            "minio_secret_key",
            format!("{{ file = \"{}\" }}", secret.display()),
        );
        s.insert(
            "health_url",
            format!("\"http://127.0.0.1:{}/api/health\"", self.health_port),
        );
        for (k, v) in settings {
            s.insert(k, v.to_string());
        }
        let settings: String = s.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let p = env.path(file);
        std::fs::write(
            &p,
            format!(
                "[apps.zhiyun]\nplugin = \"zhiyun\"\ndir = \"{}\"\n[apps.zhiyun.settings]\n{settings}\
                 [apps.zhiyun.grants]\nprograms = [\"pg_dump\", \"psql\", \"pg_restore\"]\n\
                 http = [\"{}\", \"http://127.0.0.1:{}\"]\ns3 = [\"{}\"]\n",
                self.app.display(),
                self.qdrant.url(),
                self.health_port,
                self.garage.endpoint()
            ),
        )
        .unwrap();
        p
    }

    fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        let b = self.open_bucket();
        b.list("")
            .unwrap()
            .into_iter()
            .map(|o| {
                let v = b.get(&o.key).unwrap().to_vec();
                (o.key, v)
            })
            .collect()
    }

    fn open_bucket(&self) -> std::sync::Arc<dyn coffer_store::Backend> {
        coffer_store::s3::open_bucket(
            self.garage.endpoint(),
            "us-east-1",
            &self.bucket,
            "",
            &self.garage.env["AWS_ACCESS_KEY_ID"],
            &self.garage.env["AWS_SECRET_ACCESS_KEY"],
        )
        .unwrap()
    }
}

/// A test environment whose coffer runs get the app's database password in the variable the
/// test configs name.
fn coffer_env() -> Env {
    let mut env = Env::new();
    env.set_env("ZHIYUN_TEST_DB_PASSWORD", APP_PASSWORD);
    env
}

/// `args` run with the app config `cfg`.
fn with_config<'a>(cfg: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["--config", cfg.to_str().unwrap()];
    a.extend_from_slice(args);
    a
}

/// Runs with --json and expects success.
fn ok(env: &Env, cfg: &Path, args: &[&str]) -> serde_json::Value {
    env.json(&with_config(cfg, args))
}

/// Runs and expects the plugin to fail (exit 16) with one clear line; returns stderr.
fn fails(env: &Env, cfg: &Path, args: &[&str]) -> String {
    let err = env.fails(&with_config(cfg, args), 16);
    eprintln!("coffer {args:?} failed as it should:\n{}", err.trim_end());
    err
}

/// libpq variables for the app's role.
fn app_env(pg: &Postgres) -> Vec<(String, String)> {
    vec![
        ("PGHOST".into(), "127.0.0.1".into()),
        ("PGPORT".into(), pg.port.to_string()),
        ("PGUSER".into(), "zhiyun".into()),
        ("PGPASSWORD".into(), APP_PASSWORD.into()),
        ("PGDATABASE".into(), "zhiyun".into()),
    ]
}

const TABLES: [&str; 4] = [
    "customers",
    "conversations",
    "messages",
    "knowledge_documents",
];

/// Row count and md5 of every row in key order, per table.
fn table_sums(pg: &Postgres, db: &str) -> BTreeMap<String, String> {
    TABLES
        .iter()
        .map(|t| {
            (
                t.to_string(),
                pg.sql(
                    db,
                    &format!("SELECT count(*) || ' ' || md5(coalesce(string_agg(r::text, E'\\n' ORDER BY id), '')) FROM {t} r"),
                ),
            )
        })
        .collect()
}

/// What the source held at the dump's snapshot `snap` (a txid_snapshot), computed afterwards
/// from the live source: messages visible in the snapshot, conversations with the counter
/// minus the messages committed after it, the other tables unchanged.
fn sums_at_snapshot(pg: &Postgres, snap: &str) -> BTreeMap<String, String> {
    let visible = format!("txid_visible_in_snapshot(m.xid, '{snap}'::txid_snapshot)");
    let mut out = table_sums(pg, "zhiyun");
    out.insert(
        "messages".into(),
        pg.sql(
            "zhiyun",
            &format!("SELECT count(*) || ' ' || md5(coalesce(string_agg(m::text, E'\\n' ORDER BY id), '')) FROM messages m WHERE {visible}"),
        ),
    );
    out.insert(
        "conversations".into(),
        pg.sql(
            "zhiyun",
            &format!(
                "SELECT count(*) || ' ' || md5(coalesce(string_agg(r::text, E'\\n' ORDER BY id), '')) FROM (\
                   SELECT c.id, c.customer_id, c.title, c.status, \
                          c.message_count - (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND NOT {visible})::int AS message_count, \
                          c.created_at FROM conversations c) r"
            ),
        ),
    );
    out
}

fn writer(pg: &Postgres, clients: &str, args: &[&str]) -> Command {
    let mut c = pg.client("pgbench");
    c.args(["-n", "-f"])
        .arg(example("writer.pgbench"))
        .args(["-c", clients, "-D", "conversations=25000"])
        .args(args)
        .arg("zhiyun")
        .envs(app_env(pg))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

#[test]
fn dump_under_write_load_is_consistent_and_dedups_day_to_day() {
    let env = coffer_env();
    let stack = Stack::start(&env, 200_000);
    let cfg = stack.config(&env, "coffer.toml", &[]);

    // Day 1, while the app writes: two pgbench clients running the app's write path.
    let before = stack.pg.sql("zhiyun", "SELECT count(*) FROM messages");
    let load = Killed(writer(&stack.pg, "2", &["-T", "600"]).spawn().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let day1 = ok(&env, &cfg, &["backup", "zhiyun"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(load);
    let after = stack.pg.sql("zhiyun", "SELECT count(*) FROM messages");
    let snap1 = day1["snapshot"].as_str().unwrap().to_string();
    let db = &day1["metadata"]["database"];
    let xids = db["xid_snapshot"]
        .as_str()
        .expect("metadata holds the dump's txid snapshot");
    let dumped: u64 = db["tables"]["public.messages"]["rows"].as_u64().unwrap();
    eprintln!("messages: {before} before the backup, {dumped} in the dump, {after} after the load stopped");
    assert!(
        dumped > before.parse::<u64>().unwrap() && dumped < after.parse::<u64>().unwrap(),
        "the writer must have committed both before and after the dump's snapshot"
    );

    // The dump restores into a fresh database; every table equals the source at the snapshot.
    let restored = ok(
        &env,
        &cfg,
        &[
            "restore",
            &snap1,
            "--only",
            "db",
            "--set",
            "db_name=zhiyun_restored",
        ],
    );
    assert_eq!(restored["verified"], true, "{restored}");
    let expected = sums_at_snapshot(&stack.pg, xids);
    let got = table_sums(&stack.pg, "zhiyun_restored");
    assert_eq!(
        got, expected,
        "restored tables differ from the source at the dump's snapshot"
    );
    assert_eq!(
        stack.pg.sql("zhiyun_restored", "SELECT (SELECT sum(message_count) FROM conversations) = (SELECT count(*) FROM messages)"),
        "t",
        "the app's invariant holds in the restored copy"
    );
    eprintln!("restored at snapshot {xids}: {got:?}");

    // Days 2-4: each day 1% of the rows change the way the app changes them (new messages,
    // counters of the conversations they land in); each backup adds a small fraction of the
    // dump. Plain SQL and the custom format (-Fc -Z0) side by side, from the same states.
    let custom = coffer_env();
    let cfg_custom = stack.config(&env, "custom.toml", &[("dump_format", "\"custom\"")]);
    ok(&env, &cfg, &["backup", "zhiyun"]);
    ok(&custom, &cfg_custom, &["backup", "zhiyun"]);
    let size = |m: &serde_json::Value| m["total_bytes"].as_f64().unwrap();
    let added = |m: &serde_json::Value| m["bytes_added"].as_f64().unwrap();
    let (mut plain_added, mut custom_added, mut plain_size, mut custom_size) = (0.0, 0.0, 0.0, 0.0);
    for day in 2..=4 {
        let rows: u64 = stack.pg.sql("zhiyun", "SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM conversations) + (SELECT count(*) FROM customers)").parse().unwrap();
        // Each transaction inserts a message and updates its conversation: two rows.
        let out = writer(&stack.pg, "1", &["-t", &(rows / 200).to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let p = ok(&env, &cfg, &["backup", "zhiyun"]);
        let c = ok(&custom, &cfg_custom, &["backup", "zhiyun"]);
        eprintln!(
            "day {day} ({} of {rows} rows changed): plain SQL {:.1} MB, added {:.0} kB ({:.1}%); custom -Fc -Z0 {:.1} MB, added {:.0} kB ({:.1}%)",
            rows / 100,
            size(&p) / 1e6,
            added(&p) / 1e3,
            100.0 * added(&p) / size(&p),
            size(&c) / 1e6,
            added(&c) / 1e3,
            100.0 * added(&c) / size(&c),
        );
        assert!(
            added(&p) < 0.25 * size(&p),
            "day {day} added {} bytes of {}: the dump does not deduplicate",
            added(&p),
            size(&p)
        );
        (plain_added, custom_added, plain_size, custom_size) = (
            plain_added + added(&p),
            custom_added + added(&c),
            size(&p),
            size(&c),
        );
    }
    // The custom form restores too (pg_restore from the item on stdin), equal to the source.
    let r = ok(
        &custom,
        &cfg_custom,
        &[
            "restore",
            "latest",
            "--only",
            "db",
            "--set",
            "db_name=zhiyun_custom",
        ],
    );
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(
        table_sums(&stack.pg, "zhiyun_custom"),
        table_sums(&stack.pg, "zhiyun")
    );
    eprintln!(
        "days 2-4 added: plain SQL {:.0} kB, custom {:.0} kB; last day's capture: plain {:.1} MB, custom {:.1} MB",
        plain_added / 1e3,
        custom_added / 1e3,
        plain_size / 1e6,
        custom_size / 1e6
    );
}

#[test]
fn disaster_recovery_and_failure_paths() {
    let env = coffer_env();
    let stack = Stack::start(&env, 20_000);
    let cfg = stack.config(&env, "coffer.toml", &[]);

    // The plugin asks for exactly what it uses, resolved from the settings.
    let inspect = ok(&env, &cfg, &["plugin", "inspect", "zhiyun"]);
    assert_eq!(inspect["not_granted"], serde_json::json!([]), "{inspect}");
    let asked = inspect["capabilities"].to_string();
    for want in [
        "pg_dump",
        "psql",
        "pg_restore",
        "setting:qdrant_url",
        "setting:health_url",
        "setting:minio_endpoint",
    ] {
        assert!(asked.contains(want), "inspect lists {want}: {asked}");
    }
    let no_s3 = env.path("no-s3.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &no_s3,
        text.replace(
            &format!("s3 = [\"{}\"]", stack.garage.endpoint()),
            "s3 = []",
        ),
    )
    .unwrap();
    let err = fails(&env, &no_s3, &["backup", "zhiyun"]);
    assert!(
        err.contains("s3") && err.contains(stack.garage.endpoint()),
        "{err}"
    );

    // Back up all three.
    let sums = table_sums(&stack.pg, "zhiyun");
    let objects = stack.objects();
    let points = stack.qdrant.points("knowledge").unwrap();
    assert!(objects.len() == 13 && points.as_object().unwrap().len() == 300);
    let b = ok(&env, &cfg, &["backup", "zhiyun"]);
    let snap = b["snapshot"].as_str().unwrap().to_string();
    assert_eq!(b["metadata"]["files"]["objects"], 13, "{b}");
    assert_eq!(b["metadata"]["collections"]["knowledge"]["points_max"], 300);
    assert!(
        stack.qdrant.snapshots().is_empty(),
        "server-side snapshots are deleted after download"
    );
    let snapshots = |env: &Env| env.json(&["snapshots"]).as_array().unwrap().len();
    assert_eq!(snapshots(&env), 1);

    // A drill first: the dump into a scratch database on the same server, the files and vector
    // snapshots into scratch space, compared with the snapshot and cleaned up; nothing live is
    // touched (the live database's sums, the bucket, the collection, the server's snapshots).
    let live = table_sums(&stack.pg, "zhiyun");
    let d = ok(&env, &cfg, &["drill", "zhiyun"]);
    assert_eq!(d["ok"], true, "{d}");
    let checks = d["verify"].as_array().unwrap();
    for name in ["database rows", "files", "collection knowledge"] {
        assert!(
            checks.iter().any(|c| c["name"] == name && c["ok"] == true),
            "{name}: {d}"
        );
    }
    assert_eq!(table_sums(&stack.pg, "zhiyun"), live);
    assert_eq!(
        stack
            .pg
            .sql(
                "postgres",
                "SELECT count(*) FROM pg_database WHERE datname LIKE 'zhiyun_drill_%'"
            )
            .trim(),
        "0",
        "the scratch database is dropped"
    );
    assert_eq!(stack.objects().len(), 13);
    assert_eq!(
        stack
            .qdrant
            .points("knowledge")
            .unwrap()
            .as_object()
            .unwrap()
            .len(),
        300
    );
    assert!(stack.qdrant.snapshots().is_empty());

    // Disaster: the database dropped, the bucket emptied, the collection deleted.
    stack
        .pg
        .sql("postgres", "DROP DATABASE zhiyun WITH (FORCE)");
    let bucket = stack.open_bucket();
    for o in bucket.list("").unwrap() {
        bucket.delete(&o.key).unwrap();
    }
    let r = ureq::delete(&format!("{}/collections/knowledge", stack.qdrant.url()))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    let down = ureq::get(&format!(
        "http://127.0.0.1:{}/api/health",
        stack.health_port
    ))
    .call();
    assert!(
        down.is_err(),
        "the app reports unhealthy while its data is gone"
    );

    let mut args = vec!["--json"];
    args.extend(with_config(&cfg, &["restore", &snap]));
    let out = env.run(&args);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The manual's disaster-recovery order: database, files, vectors.
    let at = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("no '{what}' in {log}"))
    };
    assert!(
        at("restored database zhiyun") < at("objects into bucket")
            && at("objects into bucket") < at("restored collection knowledge"),
        "{log}"
    );
    assert_eq!(
        (r["verified"].as_bool(), r["healthy"].as_bool()),
        (Some(true), Some(true)),
        "{r}"
    );
    let names = check_names(&r["verify"]);
    assert_eq!(names, ["database rows", "collection knowledge"], "{r}");
    let health = check_names(&r["health"]);
    assert_eq!(
        health,
        ["health", "component database", "component qdrant"],
        "{r}"
    );
    assert_eq!(table_sums(&stack.pg, "zhiyun"), sums);
    assert_eq!(stack.objects(), objects);
    assert_eq!(stack.qdrant.points("knowledge").unwrap(), points);
    let order: Vec<String> = stack
        .qdrant
        .requests()
        .into_iter()
        .filter(|r| r.contains("/snapshots/upload"))
        .collect();
    assert_eq!(order.len(), 1, "vectors restored by one upload: {order:?}");
    // Qdrant keeps an uploaded snapshot as a full copy: the plugin deletes it.
    assert_eq!(
        stack.qdrant.snapshots(),
        Vec::<(String, String)>::new(),
        "the copy Qdrant keeps of the upload is deleted"
    );

    // Restoring over the now non-empty database is refused, and changes nothing.
    stack.pg.sql(
        "zhiyun",
        "INSERT INTO customers (name, channel) VALUES ('after the restore', 'web')",
    );
    let changed = table_sums(&stack.pg, "zhiyun");
    let err = fails(&env, &cfg, &["restore", &snap, "--only", "db"]);
    assert!(
        err.contains("not empty") && err.contains("replace_database=true"),
        "{err}"
    );
    assert_eq!(table_sums(&stack.pg, "zhiyun"), changed);
    // Asked to, it renames the current one aside (never drops it) and restores.
    let r = ok(
        &env,
        &cfg,
        &[
            "restore",
            &snap,
            "--only",
            "db",
            "--set",
            "replace_database=true",
        ],
    );
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(table_sums(&stack.pg, "zhiyun"), sums);
    let aside = stack.pg.sql(
        "postgres",
        "SELECT datname FROM pg_database WHERE datname LIKE 'zhiyun_replaced_%'",
    );
    assert_eq!(
        table_sums(&stack.pg, &aside),
        changed,
        "the replaced database is kept whole as {aside}"
    );

    // A partial restore verifies only what it restored (the database has moved on since).
    stack.pg.sql(
        "zhiyun",
        "INSERT INTO customers (name, channel) VALUES ('later', 'app')",
    );
    let r = ok(&env, &cfg, &["restore", &snap, "--only", "vectors"]);
    let names = check_names(&r["verify"]);
    assert_eq!(names, ["collection knowledge"], "{r}");

    // Vectors by recover from a location the server reads, files alone: each part restores on
    // its own. Qdrant reads file:// locations only inside its snapshots folder (403 otherwise).
    ureq::delete(&format!("{}/collections/knowledge", stack.qdrant.url()))
        .call()
        .unwrap();
    stack.open_bucket().delete("uploads/3.jpg").unwrap();
    let outside = format!(
        "--set=qdrant_recover_location=file://{}/qdrant-restore",
        stack.app.display()
    );
    let err = fails(
        &env,
        &cfg,
        &[
            "restore",
            &snap,
            "--only",
            "vectors",
            "--set",
            "qdrant_recover_dir=qdrant-restore",
            &outside,
        ],
    );
    assert!(
        err.contains("403") && err.contains("snapshots folder"),
        "{err}"
    );
    let location = format!(
        "--set=qdrant_recover_location=file://{}/qdrant/snapshots/coffer-restore",
        stack.app.display()
    );
    let r = ok(
        &env,
        &cfg,
        &[
            "restore",
            &snap,
            "--only",
            "vectors",
            "--only",
            "files",
            "--set",
            "qdrant_recover_dir=qdrant/snapshots/coffer-restore",
            &location,
        ],
    );
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(stack.qdrant.points("knowledge").unwrap(), points);
    assert_eq!(stack.objects(), objects);
    assert!(stack
        .qdrant
        .requests()
        .iter()
        .any(|r| r.ends_with("/snapshots/recover")));
    assert!(
        !stack
            .app
            .join("qdrant/snapshots/coffer-restore/knowledge.snapshot")
            .exists(),
        "the recovered snapshot file is removed"
    );

    // A restore whose load fails half-way leaves no half-loaded database behind: a table in
    // template1 makes the new database clash with the dump's CREATE TABLE messages.
    stack
        .pg
        .sql("template1", "CREATE TABLE public.messages (clash int)");
    let err = fails(
        &env,
        &cfg,
        &[
            "restore",
            &snap,
            "--only",
            "db",
            "--set",
            "db_name=zhiyun_new",
        ],
    );
    stack.pg.sql("template1", "DROP TABLE public.messages");
    assert!(
        err.contains("nothing of it was kept") && err.contains("dropped the database zhiyun_new"),
        "{err}"
    );
    assert_eq!(
        stack.pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'zhiyun_new'"
        ),
        "0"
    );

    // Failure paths of capture: each fails with one clear line and saves no snapshot.
    let wrong_pw = stack.config(
        &env,
        "wrong-pw.toml",
        &[("db_password", "\"not-the-password\"")],
    );
    let err = fails(&env, &wrong_pw, &["backup", "zhiyun"]);
    assert!(
        err.contains("password authentication failed") && err.contains("db_password"),
        "{err}"
    );

    stack.qdrant.cut_next_download(2000);
    let err = fails(&env, &cfg, &["backup", "zhiyun"]);
    assert!(
        err.contains("knowledge") && err.contains("was deleted"),
        "{err}"
    );
    assert!(
        stack.qdrant.snapshots().is_empty(),
        "the server-side snapshot is deleted after a broken download"
    );

    let no_bucket = stack.config(
        &env,
        "no-bucket.toml",
        &[("minio_bucket", "\"no-such-bucket\"")],
    );
    let err = fails(&env, &no_bucket, &["backup", "zhiyun"]);
    assert!(err.contains("no-such-bucket"), "{err}");

    assert_eq!(snapshots(&env), 1, "no failed capture saved a snapshot");
    env.ok(&["check", "--read-data"]);

    // Qdrant names snapshots by the second: another capture of the same collection within it
    // replaces the file under the same name. Another client makes such snapshots, with the
    // points changing in between, all through a backup: the backup either keeps its own
    // snapshot (checked against the SHA-256 Qdrant gave) or fails saying why.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let (stop, url) = (stop.clone(), stack.qdrant.url());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let point = serde_json::json!({ "points": [{ "id": 999_999, "vector": [0.5], "payload": { "n": n } }] });
                let _ = ureq::put(&format!("{url}/collections/knowledge/points"))
                    .header("content-type", "application/json")
                    .send(point.to_string());
                let _ = ureq::post(&format!("{url}/collections/knowledge/snapshots?wait=true"))
                    .send_empty();
                std::thread::sleep(std::time::Duration::from_millis(15));
            }
            n
        })
    };
    let out = env.run(&with_config(&cfg, &["--json", "backup", "zhiyun"]));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let made = hammer.join().unwrap();
    assert!(made > 3, "the other client made {made} snapshots");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        assert!(stderr.contains("same second"), "{stderr}");
    }
    env.ok(&["check", "--read-data"]);
}
