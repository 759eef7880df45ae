//! A real Garage S3 server (single node or a 3-node cluster) on loopback, for tests and benchmarks.
//!
//! Started through `scripts/garage-up.sh` / `scripts/garage-cluster-up.sh`, which build Garage from
//! crates.io when `garage --version` does not answer (once per machine, ~10 min; serialized with
//! a file lock so parallel test binaries do not build it twice). Every server gets its own folder
//! and free ports, and a watchdog stops it when the process that started it exits.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub struct Garage {
    dir: PathBuf,
    script: PathBuf,
    /// Variables for the script (folder, ports) so `stop`, `kill N`, `restart N` find the server.
    script_env: Vec<(String, String)>,
    /// What the server printed: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...
    pub env: BTreeMap<String, String>,
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

use crate::free_port;

fn ports_free(ports: &[u16]) -> bool {
    ports
        .iter()
        .all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
}

/// The garage binary: where `cargo install` puts it, else from PATH.
fn garage_bin() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    match home.map(|h| h.join("bin/garage")) {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("garage"),
    }
}

/// Builds Garage unless it already answers; one build at a time on this machine.
pub fn install() {
    let script = scripts_dir().join("garage-up.sh");
    let status = Command::new("flock")
        .arg("/tmp/coffer-garage-install.lock")
        .arg("bash")
        .arg(&script)
        .arg("install")
        .status()
        .expect("flock and bash run");
    assert!(
        status.success(),
        "installing garage failed (see the log above)"
    );
}

impl Garage {
    /// A single-node server (replication factor 1) with bucket `test`.
    pub fn single() -> Garage {
        install();
        let dir = std::env::temp_dir().join(format!(
            "coffer-garage-{}-{}",
            std::process::id(),
            free_port()
        ));
        let script_env = vec![
            ("GARAGE_DIR".to_string(), dir.display().to_string()),
            ("GARAGE_S3_PORT".into(), free_port().to_string()),
            ("GARAGE_RPC_PORT".into(), free_port().to_string()),
            ("GARAGE_ADMIN_PORT".into(), free_port().to_string()),
        ];
        Self::start(dir, scripts_dir().join("garage-up.sh"), script_env)
    }

    /// Three nodes on loopback, replication factor 3 (any one may be down).
    pub fn cluster() -> Garage {
        install();
        let base = loop {
            let base = 20000 + 100 * rand::Rng::gen_range(&mut rand::thread_rng(), 0..400u16);
            let ports: Vec<u16> = (1..=3)
                .flat_map(|i| [0, 1, 3].map(|k| base + 10 * i + k))
                .collect();
            if ports_free(&ports) {
                break base;
            }
        };
        let dir = std::env::temp_dir().join(format!(
            "coffer-garage-cluster-{}-{base}",
            std::process::id()
        ));
        let script_env = vec![
            ("GARAGE_CLUSTER_DIR".to_string(), dir.display().to_string()),
            ("GARAGE_CLUSTER_PORT_BASE".into(), base.to_string()),
        ];
        Self::start(dir, scripts_dir().join("garage-cluster-up.sh"), script_env)
    }

    fn start(dir: PathBuf, script: PathBuf, script_env: Vec<(String, String)>) -> Garage {
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .envs(script_env.iter().cloned())
            .stderr(Stdio::inherit())
            .output()
            .expect("bash runs");
        assert!(out.status.success(), "garage did not start (log above)");
        let mut env = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                env.insert(k.to_string(), v.trim_matches('"').to_string());
            }
        }
        assert!(
            env.contains_key("AWS_ENDPOINT_URL"),
            "no endpoint in {env:?}"
        );
        // Stop the server when this process ends, however it ends.
        let mut watchdog = Command::new("bash");
        watchdog
            .arg("-c")
            .arg(format!(
                "while kill -0 {} 2>/dev/null; do sleep 0.5; done; exec bash '{}' stop",
                std::process::id(),
                script.display()
            ))
            .envs(script_env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut watchdog, 0);
        // Deliberately not waited for: it outlives this process to stop the server after it.
        let child = watchdog.spawn().expect("watchdog starts");
        std::mem::forget(child);
        Garage {
            dir,
            script,
            script_env,
            env,
        }
    }

    /// One server per test process, shared by its tests (each uses its own prefix).
    pub fn shared() -> &'static Garage {
        static SHARED: OnceLock<Garage> = OnceLock::new();
        SHARED.get_or_init(Garage::single)
    }

    pub fn endpoint(&self) -> &str {
        &self.env["AWS_ENDPOINT_URL"]
    }

    /// Every endpoint (three for a cluster), from `GARAGE_S3_ENDPOINTS`.
    pub fn endpoints(&self) -> Vec<String> {
        match self.env.get("GARAGE_S3_ENDPOINTS") {
            Some(e) => e.split_whitespace().map(String::from).collect(),
            None => vec![self.endpoint().to_string()],
        }
    }

    pub fn bucket(&self) -> &str {
        &self.env["AWS_BUCKET"]
    }

    /// The `AWS_*` variables a client needs (without AWS_BUCKET: coffer takes it from the URL).
    pub fn client_env(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter(|(k, _)| k.starts_with("AWS_") && *k != "AWS_BUCKET")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn script(&self, args: &[&str]) {
        let status = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .envs(self.script_env.iter().cloned())
            .stdout(Stdio::null())
            .status()
            .expect("bash runs");
        assert!(status.success(), "garage script {args:?} failed");
    }

    /// Single node only: a new bucket the printed key may read and write.
    pub fn create_bucket(&self, name: &str) {
        let cfg = self.dir.join("garage.toml");
        for args in [
            vec!["bucket", "create", name],
            vec![
                "bucket", "allow", "--read", "--write", "--owner", name, "--key", "ci-key",
            ],
        ] {
            let out = Command::new(garage_bin())
                .arg("-c")
                .arg(&cfg)
                .args(&args)
                .output()
                .expect("garage runs");
            assert!(
                out.status.success(),
                "garage {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Cluster only: SIGKILL node `n` (1..=3).
    pub fn kill_node(&self, n: u32) {
        self.script(&["kill", &n.to_string()]);
    }

    /// Cluster only: start node `n` again and reconnect it.
    pub fn restart_node(&self, n: u32) {
        self.script(&["restart", &n.to_string()]);
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .envs(self.script_env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
