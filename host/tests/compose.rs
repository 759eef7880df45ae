//! The Compose capability beyond cskefu, on the machine's real Docker engine: a project's named
//! volume captured and restored (the probe test plugin), and the zhiyun plugin dumping a
//! PostgreSQL that runs in a Compose service through exec, as its manual's
//! `docker-compose exec db pg_dump` does. PostgreSQL is Debian's (15) in the image tagged
//! `postgres:16-alpine` (examples/images/build.sh); no image can be pulled here. Without an
//! engine these tests fail, they do not skip.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_testkit::compose::{compose_command, remove_project, run_ok, running, stand_in_images};
use common::*;

/// A compose project in `dir` with `yaml` as its compose file; removed on drop.
struct Project {
    dir: std::path::PathBuf,
    name: String,
}

impl Project {
    fn new(dir: &Path, name: &str, yaml: &str) -> Project {
        stand_in_images();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("docker-compose.yml"), yaml).unwrap();
        Project {
            dir: dir.to_path_buf(),
            name: name.into(),
        }
    }

    fn compose(&self, args: &[&str]) -> String {
        run_ok(&mut compose_command(&self.name, &self.dir, args))
    }

    fn running(&self, service: &str) -> bool {
        !running(&self.name, Some(service)).is_empty()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        remove_project(&self.name);
    }
}

fn name(kind: &str) -> String {
    format!("coffer-{kind}-{}", rand_suffix().to_lowercase())
}

fn probe(env: &Env) -> (std::path::PathBuf, String) {
    let wasm = env.path("probe.wasm");
    std::fs::copy(
        Path::new(env!("COFFER_TEST_PLUGIN_DIR")).join("coffer_plugin_probe.wasm"),
        &wasm,
    )
    .unwrap();
    let hash = blake3::hash(&std::fs::read(&wasm).unwrap())
        .to_hex()
        .to_string();
    (wasm, hash)
}

#[test]
fn a_projects_named_volume_is_captured_and_restored_even_after_it_was_removed() {
    let env = Env::new();
    let project = name("vol");
    let p = Project::new(
        &env.path("app"),
        &project,
        "services:\n  db:\n    image: cskefu/redis:5.0.5\n    pull_policy: never\n    volumes:\n      - data:/data\nvolumes:\n  data: {}\n",
    );
    p.compose(&["up", "-d"]);
    p.compose(&[
        "exec",
        "-T",
        "db",
        "sh",
        "-c",
        "mkdir -p /data/sub && echo kept > /data/sub/file && chown 999:998 /data/sub/file && chmod 640 /data/sub/file",
    ]);
    let (wasm, hash) = probe(&env);
    let cfg = env.path("coffer.toml");
    std::fs::write(
        &cfg,
        format!(
            "[apps.vol]\nplugin = \"{}\"\nblake3 = \"{hash}\"\ndir = \"{}\"\n[apps.vol.settings]\nserver = \"http://127.0.0.1:9\"\nvolume_project = \"{project}\"\nvolume = \"data\"\n[apps.vol.grants.compose]\n{project} = []\n",
            wasm.display(),
            p.dir.display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let b = env.json(&["--config", cfg, "backup", "vol"]);
    assert!(b["metadata"]["volume_bytes"].as_u64().unwrap() > 0, "{b}");

    // The volume lost with the project; restore makes it again, as Compose would, and fills it.
    p.compose(&["down", "-v"]);
    let report = env.json(&["--config", cfg, "restore", "latest"]);
    assert!(p.running("db"), "{report}");
    let stat = p.compose(&[
        "exec",
        "-T",
        "db",
        "stat",
        "-c",
        "%u:%g %a %s",
        "/data/sub/file",
    ]);
    assert_eq!(stat.trim(), "999:998 640 5");
    let labels = run_ok(Command::new("docker").args([
        "volume",
        "inspect",
        "-f",
        "{{ index .Labels \"com.docker.compose.project\" }}",
        &format!("{project}_data"),
    ]));
    assert_eq!(labels.trim(), project);
}

#[test]
fn zhiyun_dumps_and_restores_postgresql_through_compose_exec() {
    let env = Env::new();
    let project = name("zhiyun");
    let p = Project::new(
        &env.path("zhiyun"),
        &project,
        "services:\n  db:\n    image: postgres:16-alpine\n    pull_policy: never\n    environment:\n      POSTGRES_USER: zhiyun\n      POSTGRES_PASSWORD: pg-secret\n      POSTGRES_DB: zhiyun\n    volumes:\n      - pgdata:/var/lib/postgresql/data\n  worker:\n    image: cskefu/redis:5.0.5\n    pull_policy: never\n    entrypoint: [\"sleep\", \"infinity\"]\nvolumes:\n  pgdata: {}\n",
    );
    p.compose(&["up", "-d"]);
    let psql_args = |sql: &'static str| {
        [
            "exec",
            "-T",
            "-e",
            "PGPASSWORD=pg-secret",
            "db",
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "zhiyun",
            "-d",
            "zhiyun",
            "-X",
            "-q",
            "-A",
            "-t",
            "-c",
            sql,
        ]
    };
    let psql = |sql: &'static str| p.compose(&psql_args(sql));
    let begun = Instant::now();
    loop {
        let ready = compose_command(&project, &p.dir, &psql_args("SELECT 1"))
            .output()
            .unwrap();
        if ready.status.success() {
            break;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(120),
            "PostgreSQL did not start: {}",
            String::from_utf8_lossy(&ready.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    psql("CREATE TABLE messages (id serial PRIMARY KEY, body text NOT NULL); INSERT INTO messages (body) SELECT 'message ' || g FROM generate_series(1, 500) g;");

    let qdrant = coffer_testkit::Qdrant::start();
    // The app's health endpoint is not under test here: a fixed healthy answer.
    let health = coffer_testkit::http::Server::start(Arc::new(|_| {
        coffer_testkit::http::Response::json(
            200,
            &serde_json::json!({"status": "healthy", "components": {"database": "healthy", "qdrant": "healthy"}}),
        )
    }));
    let cfg = env.path("coffer.toml");
    std::fs::write(
        &cfg,
        format!(
            "[apps.zhiyun]\nplugin = \"zhiyun\"\ndir = \"{}\"\n[apps.zhiyun.settings]\ndb_compose_project = \"{project}\"\ndb_compose_service = \"db\"\napp_compose_services = \"worker\"\ndb_host = \"127.0.0.1\"\ndb_user = \"zhiyun\"\ndb_password = \"pg-secret\"\ndb_name = \"zhiyun\"\nminio_bucket = \"\"\nqdrant_url = \"{}\"\nhealth_url = \"{}/api/health\"\n[apps.zhiyun.grants]\nhttp = [\"{}\", \"{}\"]\n[apps.zhiyun.grants.compose]\n{project} = [\"db\"]\n",
            p.dir.display(),
            qdrant.url(),
            health.url(),
            qdrant.url(),
            health.url()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    // Nothing of PostgreSQL's client is granted on this host: it all runs in the service.
    let b = env.json(&["--config", cfg, "backup", "zhiyun"]);
    assert_eq!(
        b["metadata"]["database"]["tables"]["public.messages"]["rows"], 500,
        "{b}"
    );

    psql("DELETE FROM messages WHERE id > 100;");
    let report = env.json(&[
        "--config",
        cfg,
        "restore",
        "latest",
        "--only",
        "db",
        "--set",
        "replace_database=true",
    ]);
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(psql("SELECT count(*) FROM messages").trim(), "500");
    assert!(
        p.running("worker"),
        "the app's service started again after the restore"
    );
    let kept = psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'zhiyun_replaced_%'");
    assert_eq!(kept.trim(), "1", "the replaced database is kept aside");
}
