//! A throw-away PostgreSQL cluster from Debian's packages (`postgresql`), on a free loopback
//! port, with password (SCRAM) authentication over TCP. Run as root, the server runs as the
//! `postgres` user through `runuser` (initdb refuses root). A watchdog stops the server and
//! removes its folder when the process that started it exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    /// The superuser `postgres`'s password.
    pub password: String,
}

/// The newest server's bin folder: /usr/lib/postgresql/<version>/bin, else initdb on PATH.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, b)) = found.pop() {
        return b;
    }
    let which = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output();
    match which {
        Ok(o) if o.status.success() => Path::new(String::from_utf8_lossy(&o.stdout).trim())
            .parent()
            .unwrap()
            .to_path_buf(),
        _ => panic!(
            "the PostgreSQL server is not installed (no initdb): `apt-get install postgresql` \
             (.ci/run does this on a fresh machine)"
        ),
    }
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// `program` from the server's bin folder, as the `postgres` user when we are root.
fn server_cmd(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

fn must(o: std::io::Result<Output>, what: &str) -> Output {
    let o = o.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        o.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = bin_dir();
        // Run as root, the server runs as `postgres`, which must reach its folder: /tmp is
        // open to every user, a $TMPDIR under /root may not be.
        let base = if is_root() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "coffer-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let password = format!("pg-{:016x}", rand::random::<u64>());
        std::fs::write(dir.join("pwfile"), format!("{password}\n")).unwrap();
        if is_root() {
            must(
                Command::new("chown")
                    .args(["-R", "postgres:"])
                    .arg(&dir)
                    .output(),
                "chown to postgres",
            );
        }
        must(
            server_cmd(&bin, "initdb")
                .arg("-D")
                .arg(dir.join("data"))
                .args([
                    "-U",
                    "postgres",
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                ])
                .arg(format!("--pwfile={}", dir.join("pwfile").display()))
                .output(),
            "initdb",
        );
        let mut port = 0;
        for _ in 0..5 {
            port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let started = server_cmd(&bin, "pg_ctl")
                .arg("-D")
                .arg(dir.join("data"))
                .arg("-l")
                .arg(dir.join("log"))
                .arg("-o")
                .arg(format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=60",
                    dir.display()
                ))
                .args(["-w", "-t", "60", "start"])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if started.status.success() {
                break;
            }
            port = 0;
        }
        assert!(
            port != 0,
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        // Stop it when this process goes, however it goes.
        let stop = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {runuser}'{ctl}' -D '{data}' stop -m immediate; rm -rf '{dir}'",
            pid = std::process::id(),
            runuser = if is_root() { "runuser -u postgres -- " } else { "" },
            ctl = bin.join("pg_ctl").display(),
            data = dir.join("data").display(),
            dir = dir.display(),
        );
        let mut dog = Command::new("bash");
        dog.args(["-c", &stop])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut dog, 0);
        std::mem::forget(dog.spawn().expect("watchdog starts"));
        Postgres {
            dir,
            bin,
            port,
            password,
        }
    }

    /// libpq variables for the superuser.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), "127.0.0.1".into()),
            ("PGPORT".into(), self.port.to_string()),
            ("PGUSER".into(), "postgres".into()),
            ("PGPASSWORD".into(), self.password.clone()),
        ]
    }

    /// `psql -c sql` on `db` as the superuser; unaligned, tuples only. `Err` with stderr.
    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let o = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-c",
                sql,
            ])
            .envs(self.env())
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }

    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A program from the server's bin folder (pgbench…), as a client with the superuser's
    /// variables.
    pub fn client(&self, program: &str) -> Command {
        let p = self.bin.join(program);
        let mut c = Command::new(if p.exists() {
            p
        } else {
            PathBuf::from(program)
        });
        c.envs(self.env());
        c
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = server_cmd(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["stop", "-m", "immediate"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
