//! Docker Compose deployments on the machine's real Docker engine, for the tests of the Compose
//! capability and the cskefu plugin. No image can be pulled here: the images are the stand-ins
//! `examples/images/build.sh` builds once per machine under the upstream names (MariaDB
//! from Debian in MySQL's role, Debian's Redis, and NOT-the-real-thing stand-ins for ActiveMQ
//! and the contact-center app; see that script). A test that needs the engine fails loudly when
//! it does not answer; it never skips.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The engine answers, or the test stops here with what `docker info` said.
pub fn engine() {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "these tests need the Docker engine, and `docker info` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => {
            panic!("these tests need the Docker engine and its CLI: `docker` cannot run: {e}")
        }
    }
}

/// Builds (once per machine, reused by tag) the stand-in images of cskefu, SsalgTen and the
/// databases; returns how long the
/// script took in this process (near zero when they were already built).
pub fn stand_in_images() -> Duration {
    static BUILT: OnceLock<Duration> = OnceLock::new();
    *BUILT.get_or_init(|| {
        engine();
        let begun = Instant::now();
        let out = Command::new("bash")
            .arg(root().join("examples/images/build.sh"))
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "building the stand-in images failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
        begun.elapsed()
    })
}

/// The machine's Compose: `docker compose` or `docker-compose`.
pub fn compose_argv() -> Vec<&'static str> {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if v2 {
        vec!["docker", "compose"]
    } else {
        vec!["docker-compose"]
    }
}

/// Runs a command, panicking with its output when it fails.
pub fn run_ok(c: &mut Command) -> String {
    let out = c.output().expect("spawn");
    assert!(
        out.status.success(),
        "{c:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

use crate::free_port;

/// The machine's Compose on project `project` in folder `dir`, with `args`.
pub fn compose_command(project: &str, dir: &Path, args: &[&str]) -> Command {
    let argv = compose_argv();
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..])
        .args(["-p", project])
        .args(args)
        .current_dir(dir);
    c
}

/// Ids of a project's running containers (of one service when given), by Compose's labels.
pub fn running(project: &str, service: Option<&str>) -> Vec<String> {
    let mut c = Command::new("docker");
    c.args([
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        "status=running",
    ]);
    if let Some(s) = service {
        c.args(["--filter", &format!("label=com.docker.compose.service={s}")]);
    }
    run_ok(&mut c).lines().map(str::to_string).collect()
}

/// A tiny HTTP/1.0 client: (status, body).
pub fn http(method: &str, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_body(method, port, path, b"")
}

/// [`http`] with a request body.
pub fn http_body(
    method: &str,
    port: u16,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A cskefu deployment folder (`<parent>/cskefu.osc`) of the real project's shape: the
/// example's docker-compose.yml, and a `.env` with its own project name and free ports, so
/// tests run side by side. Its containers and networks go on drop.
pub struct Cskefu {
    pub dir: PathBuf,
    pub project: String,
    pub web: u16,
    pub mysql_port: u16,
}

impl Cskefu {
    pub fn new(parent: &Path, project: &str) -> Cskefu {
        stand_in_images();
        let dir = parent.join("cskefu.osc");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            root().join("examples/cskefu/docker-compose.yml"),
            dir.join("docker-compose.yml"),
        )
        .unwrap();
        let c = Cskefu {
            dir,
            project: project.into(),
            web: free_port(),
            mysql_port: free_port(),
        };
        c.write_env("cskefu/contact-center:4b70d05");
        c
    }

    /// Writes `.env` with `CC_IMAGE` set to `image`.
    pub fn write_env(&self, image: &str) {
        std::fs::write(
            self.dir.join(".env"),
            format!(
                "COMPOSE_PROJECT_NAME={}\nCC_IMAGE={image}\nCC_WEB_PORT={}\nCC_SOCKET_PORT={}\nCC_JAVA_XMX=2048m\nDB_PASSWD=s3cret-db\nMYSQL_PORT={}\nREDIS_PORT={}\nACTIVEMQ_PORT_1={}\nACTIVEMQ_PORT_2={}\nACTIVEMQ_PORT_3={}\n",
                self.project,
                self.web,
                free_port(),
                self.mysql_port,
                free_port(),
                free_port(),
                free_port(),
                free_port()
            ),
        )
        .unwrap();
    }

    pub fn compose(&self, args: &[&str]) -> Command {
        compose_command(&self.project, &self.dir, args)
    }

    /// `up -d`, then waits until the web health endpoint says UP.
    pub fn up(&self) {
        run_ok(&mut self.compose(&["up", "-d"]));
        self.wait_healthy(Duration::from_secs(180));
    }

    pub fn healthy(&self) -> bool {
        matches!(http("GET", self.web, "/actuator/health"), Ok((200, b)) if b.contains("\"UP\""))
    }

    pub fn wait_healthy(&self, limit: Duration) {
        let begun = Instant::now();
        while !self.healthy() {
            assert!(
                begun.elapsed() < limit,
                "cskefu project {} not healthy after {limit:?}: {}",
                self.project,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn logs(&self) -> String {
        let out = self.compose(&["logs", "--tail", "20"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One message: two rows in one transaction and an upload; its id.
    pub fn post_message(&self) -> Option<u64> {
        let (status, body) = http("POST", self.web, "/api/messages").ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["id"].as_u64()
    }

    /// The project's containers: (service, state).
    pub fn containers(&self) -> Vec<(String, String)> {
        let out = Command::new("docker")
            .args([
                "ps",
                "-a",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.project),
                "--format",
                "{{.Label \"com.docker.compose.service\"}} {{.State}}",
            ])
            .output()
            .unwrap();
        let mut v: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        v.sort();
        v
    }

    pub fn running(&self) -> usize {
        running(&self.project, None).len()
    }

    /// A query in the mysql service; tab-separated rows.
    pub fn sql(&self, sql: &str) -> String {
        run_ok(&mut self.compose(&[
            "exec",
            "-T",
            "-e",
            "MYSQL_PWD=s3cret-db",
            "mysql",
            "mysql",
            "-uroot",
            "-N",
            "-B",
            "cosinee",
            "-e",
            sql,
        ]))
    }

    /// Containers and networks of the project gone (what a disaster or the end of a test
    /// leaves), by its labels.
    pub fn remove(&self) {
        remove_project(&self.project);
    }
}

impl Drop for Cskefu {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Removes every container, network and volume carrying a project's label.
pub fn remove_project(project: &str) {
    let filter = format!("label=com.docker.compose.project={project}");
    let ids = |args: &[&str]| -> Vec<String> {
        let out = Command::new("docker").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let containers = ids(&["ps", "-aq", "--filter", &filter]);
    if !containers.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&containers)
            .output();
    }
    for net in ids(&["network", "ls", "-q", "--filter", &filter]) {
        let _ = Command::new("docker")
            .args(["network", "rm", &net])
            .output();
    }
    for vol in ids(&["volume", "ls", "-q", "--filter", &filter]) {
        let _ = Command::new("docker").args(["volume", "rm", &vol]).output();
    }
}

/// A one-service project of its own (`victim`), to show another project is out of reach.
pub struct Victim {
    pub dir: PathBuf,
    pub project: String,
}

impl Victim {
    pub fn start(parent: &Path, project: &str) -> Victim {
        stand_in_images();
        let dir = parent.join("victim");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("docker-compose.yml"),
            "services:\n  db:\n    image: cskefu/redis:5.0.5\n    pull_policy: never\n    volumes:\n      - data:/data\nvolumes:\n  data: {}\n",
        )
        .unwrap();
        run_ok(&mut compose_command(project, &dir, &["up", "-d"]));
        Victim {
            dir,
            project: project.into(),
        }
    }

    pub fn running(&self) -> bool {
        !running(&self.project, None).is_empty()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        remove_project(&self.project);
    }
}

/// A SsalgTen deployment folder (`<parent>/ssalgten`): the example's docker-compose.yml (the real
/// project's shape, with its fixed container and volume names) and `configs/`, and a `.env` with
/// free ports. The fixed names allow one deployment per engine at a time: `new` holds a lock
/// until the deployment is dropped (its containers, networks and volumes removed).
pub struct Ssalgten {
    pub dir: PathBuf,
    pub project: String,
    pub backend: u16,
    pub frontend: u16,
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

impl Ssalgten {
    pub fn new(parent: &Path, project: &str) -> Ssalgten {
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let guard = ONE.lock().unwrap_or_else(|e| e.into_inner());
        stand_in_images();
        // What an earlier run killed mid-way left under the fixed names.
        for c in ["database", "redis", "backend", "frontend"] {
            let _ = Command::new("docker")
                .args(["rm", "-f", &format!("ssalgten-{c}")])
                .output();
        }
        for v in [
            "postgres-data",
            "redis-data",
            "backend-data",
            "backend-logs",
        ] {
            let _ = Command::new("docker")
                .args(["volume", "rm", &format!("ssalgten-{v}")])
                .output();
        }
        let dir = parent.join("ssalgten");
        std::fs::create_dir_all(dir.join("configs")).unwrap();
        let example = root().join("examples/ssalgten");
        std::fs::copy(
            example.join("docker-compose.yml"),
            dir.join("docker-compose.yml"),
        )
        .unwrap();
        std::fs::copy(
            example.join("configs/settings.json"),
            dir.join("configs/settings.json"),
        )
        .unwrap();
        let app = Ssalgten {
            dir,
            project: project.into(),
            backend: free_port(),
            frontend: free_port(),
            _one_at_a_time: guard,
        };
        let env = std::fs::read_to_string(example.join("env.example"))
            .unwrap()
            .replace(
                "COMPOSE_PROJECT_NAME=ssalgten",
                &format!("COMPOSE_PROJECT_NAME={project}"),
            )
            .replace(
                "BACKEND_PORT=3001",
                &format!("BACKEND_PORT={}", app.backend),
            )
            .replace(
                "FRONTEND_PORT=80",
                &format!("FRONTEND_PORT={}", app.frontend),
            )
            .replace("DB_PORT=5432", &format!("DB_PORT={}", free_port()))
            .replace("DB_PASSWORD=change-me-database", "DB_PASSWORD=s3cret-db");
        std::fs::write(app.dir.join(".env"), env).unwrap();
        app
    }

    pub fn compose(&self, args: &[&str]) -> Command {
        compose_command(&self.project, &self.dir, args)
    }

    /// `up -d`, then waits until the backend and the frontend are healthy.
    pub fn up(&self) {
        run_ok(&mut self.compose(&["up", "-d"]));
        let begun = Instant::now();
        while !self.healthy() {
            assert!(
                begun.elapsed() < Duration::from_secs(180),
                "ssalgten project {} not healthy after 180 s: {}",
                self.project,
                String::from_utf8_lossy(
                    &self
                        .compose(&["logs", "--tail", "20"])
                        .output()
                        .unwrap()
                        .stdout
                )
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn healthy(&self) -> bool {
        matches!(http("GET", self.backend, "/api/health"), Ok((200, b)) if b.contains("\"success\": true"))
            && matches!(http("GET", self.frontend, "/health"), Ok((200, b)) if b.trim() == "healthy")
    }

    /// A node and its first heartbeat (one transaction) and its file in the backend volume.
    pub fn post_node(&self) -> u64 {
        let (status, body) = http("POST", self.backend, "/api/nodes").unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
            .as_u64()
            .unwrap()
    }

    /// A PostgreSQL client program in the database service, connected to `ssalgten`; its stdout.
    fn in_database(&self, program: &str, args: &[&str]) -> String {
        let mut argv = vec![
            "exec",
            "-T",
            "-e",
            "PGPASSWORD=s3cret-db",
            "database",
            program,
            "-h",
            "127.0.0.1",
            "-U",
            "ssalgten",
            "-d",
            "ssalgten",
        ];
        argv.extend_from_slice(args);
        run_ok(&mut self.compose(&argv))
    }

    /// psql in the database service (unaligned, tuples only).
    pub fn sql(&self, sql: &str) -> String {
        self.in_database(
            "psql",
            &["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        )
    }

    /// The schema as pg_dump prints it, and every table's rows in order: what "exactly as
    /// before" compares.
    pub fn state(&self) -> String {
        let schema = self.in_database("pg_dump", &["--schema-only"]);
        let tables =
            self.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1");
        // pg_dump's `\restrict KEY` lines carry a new random key each run.
        let mut out: String = schema
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .map(|l| format!("{l}\n"))
            .collect();
        for t in tables.lines() {
            // Prisma's own table records when each migration ran: its rows, not their times.
            let order = if t == "_prisma_migrations" {
                "SELECT migration_name FROM _prisma_migrations ORDER BY 1".to_string()
            } else {
                format!("SELECT * FROM {t} ORDER BY 1")
            };
            out.push_str(&format!("-- {t}\n{}", self.sql(&order)));
        }
        out
    }

    /// The image id a service's container runs.
    pub fn image_of(&self, service: &str) -> String {
        let ids = running(&self.project, Some(service));
        let id = ids.first().unwrap_or_else(|| panic!("{service} runs"));
        run_ok(Command::new("docker").args(["inspect", "-f", "{{.Image}}", id]))
            .trim()
            .to_string()
    }

    /// When each of the project's containers started (docker's StartedAt), by service.
    pub fn started_at(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = ["database", "redis", "backend", "frontend"]
            .iter()
            .map(|s| {
                let name = format!("ssalgten-{s}");
                let at = run_ok(Command::new("docker").args([
                    "inspect",
                    "-f",
                    "{{.State.StartedAt}} {{.State.Status}}",
                    &name,
                ]));
                (s.to_string(), at.trim().to_string())
            })
            .collect();
        v.sort();
        v
    }
}

impl Drop for Ssalgten {
    fn drop(&mut self) {
        remove_project(&self.project);
    }
}

/// The image id a tag names.
pub fn image_id(tag: &str) -> String {
    run_ok(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", tag]))
        .trim()
        .to_string()
}
