//! A plugin written in Python (examples/plugin-python), built the README's way with
//! componentize-py and loaded by the same host as the Rust plugins: backup, restore, verify and
//! health of its small app (tasks_app.py: a SQLite database written through its HTTP API, and an
//! attachments folder). componentize-py must be installed (`pip install componentize-py`;
//! .ci/run does it): without it this test fails, it does not skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

use coffer_testkit::free_port;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/plugin-python")
}

/// `componentize-py -d ../../wit -w app componentize app -o OUT`, as the README says.
fn build(out: &Path) {
    let begun = Instant::now();
    let r = Command::new("componentize-py")
        .args(["-d", "../../wit", "-w", "app", "componentize", "app", "-o"])
        .arg(out)
        .current_dir(example())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("componentize-py is needed for this test (pip install componentize-py==0.25.1): {e}")
        });
    assert!(
        r.status.success(),
        "componentize-py failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    eprintln!(
        "componentize-py built {} ({:.1} MB) in {:.1} s",
        out.display(),
        std::fs::metadata(out).unwrap().len() as f64 / 1e6,
        begun.elapsed().as_secs_f64()
    );
}

struct App(Child);

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tasks_app(args: &[&str]) -> Command {
    let mut c = Command::new("python3");
    c.arg(example().join("tasks_app.py")).args(args);
    c
}

fn serve(dir: &Path, port: u16) -> App {
    let app = App(
        tasks_app(&["serve", dir.to_str().unwrap(), "--port", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if coffer_testkit::compose::http("GET", port, "/health").is_ok_and(|(s, _)| s == 200) {
            return app;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("tasks_app.py did not answer on port {port}");
}

fn tasks(db: &Path) -> String {
    coffer_runtime::caps::query(db, "SELECT count(*) FROM tasks").unwrap()[0][0].clone()
}

#[test]
fn a_python_plugin_backs_up_restores_verifies_and_checks_health() {
    let env = Env::new();
    let wasm = env.path("tasks.wasm");
    build(&wasm);

    // A compiled component is cached: the first load compiles it, the next ones read the cache.
    let timed = |what: &str| {
        let begun = Instant::now();
        let out = env.json(&["plugin", "inspect", wasm.to_str().unwrap()]);
        let secs = begun.elapsed().as_secs_f64();
        eprintln!("plugin inspect ({what}): {secs:.2} s");
        (out, secs)
    };
    let (info, first) = timed("first load, compiles");
    assert_eq!(info["name"], "tasks", "{info}");
    assert_eq!(info["items"], serde_json::json!(["db", "attachments"]));
    let (_, cached) = timed("second load, cached");
    assert!(
        cached < first,
        "the cached load ({cached:.2} s) is no quicker than compiling ({first:.2} s)"
    );

    let dir = env.path("tasks");
    let ok = tasks_app(&["init", dir.to_str().unwrap(), "--tasks", "20"])
        .status()
        .unwrap();
    assert!(ok.success());
    let port = free_port();
    let _app = serve(&dir, port);
    let cfg = env.app_config(
        "coffer.toml",
        "tasks",
        &wasm,
        &dir,
        &format!(
            "[apps.tasks.settings]\nhealth_url = \"http://127.0.0.1:{port}/health\"\n[apps.tasks.grants]\nhttp = [\"http://127.0.0.1:{port}\"]\n"
        ),
    );
    let cfg = cfg.to_str().unwrap();
    let b = env.json(&["--config", cfg, "backup", "tasks"]);
    let snap = b["snapshot"].as_str().unwrap().to_string();
    let snaps = env.json(&["--config", cfg, "snapshots", "--app", "tasks"]);
    assert_eq!(snaps[0]["metadata"]["tasks"], 20, "{snaps}");
    assert_eq!(snaps[0]["metadata"]["attachments"], 20, "{snaps}");
    let before = manifest(&dir.join("attachments"));

    // The app carries on (a task added through its API), then loses its data.
    let (s, _) =
        coffer_testkit::compose::http_body("POST", port, "/tasks", b"after the backup").unwrap();
    assert_eq!(s, 201);
    assert_eq!(tasks(&dir.join("data/tasks.db")), "21");
    std::fs::remove_dir_all(dir.join("attachments")).unwrap();
    std::fs::write(dir.join("data/tasks.db"), b"not a database").unwrap();

    let r = env.json(&["--config", cfg, "restore", &snap]);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["healthy"], true, "{r}");
    let names = check_names(&r["verify"]);
    assert_eq!(names, ["integrity", "tasks", "attachments"], "{r}");
    assert_eq!(tasks(&dir.join("data/tasks.db")), "20");
    assert_same(&before, &manifest(&dir.join("attachments")));

    // Verify fails, naming the check, when the data does not match the snapshot.
    std::fs::remove_file(dir.join("attachments/task-3.txt")).unwrap();
    let v = env
        .json_exit(&["--config", cfg, "restore", &snap, "--only", "db"], 13)
        .0;
    assert_eq!(v["verified"], false, "{v}");
    let bad: Vec<&serde_json::Value> = v["verify"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    assert_eq!(bad.len(), 1, "{v}");
    assert_eq!(bad[0]["name"], "attachments");
    assert!(
        bad[0]["detail"].as_str().unwrap().contains("task-3.txt"),
        "{v}"
    );
}
