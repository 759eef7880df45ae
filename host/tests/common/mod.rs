//! Shared harness for the end-to-end tests: a scratch repository driven through the real
//! `coffer` binary, and a manifest of a folder (content hash and metadata of every entry) to
//! compare a restore with its source.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs each named test body (`fn name(env: Env)`, given an uninitialised environment) twice:
/// on a local folder and on a real Garage S3 server (`name::local`, `name::s3`).
#[macro_export]
macro_rules! on_each_store {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn local() {
                super::$name(super::Env::uninit())
            }
            #[test]
            fn s3() {
                super::$name(super::Env::s3_uninit(coffer_testkit::Garage::shared()))
            }
        }
    )*};
}

pub const BIN: &str = env!("CARGO_BIN_EXE_coffer");

/// The binary the tests drive: this build's, or `COFFER_TEST_BIN` (an older build, to show that
/// a regression test fails without its fix).
pub fn bin() -> String {
    std::env::var("COFFER_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}
pub const PASSWORD: &str = "correct horse battery staple";

pub struct Env {
    pub dir: tempfile::TempDir,
    /// The repository folder (for a local repository).
    pub repo: PathBuf,
    /// What COFFER_REPOSITORY says: the folder, or `s3://bucket/prefix`.
    pub location: String,
    /// Extra environment of every command (the S3 endpoint and credentials).
    pub extra_env: Vec<(String, String)>,
    pub cache: PathBuf,
    pub password: String,
}

impl Env {
    /// A scratch folder with an initialised repository.
    pub fn new() -> Env {
        let env = Env::uninit();
        env.ok(&["init"]);
        env
    }

    pub fn uninit() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        Env {
            dir,
            location: repo.display().to_string(),
            repo,
            extra_env: vec![],
            cache,
            password: PASSWORD.into(),
        }
    }

    /// A scratch folder with an initialised repository under its own prefix of the shared
    /// Garage server's bucket.
    pub fn s3() -> Env {
        let env = Env::s3_uninit(coffer_testkit::Garage::shared());
        env.ok(&["init"]);
        env
    }

    /// Like [`Env::s3`] on a given server, without `init`.
    pub fn s3_uninit(garage: &coffer_testkit::Garage) -> Env {
        let mut env = Env::uninit();
        env.location = format!("s3://{}/{}", garage.bucket(), rand_prefix());
        env.extra_env = garage.client_env();
        env
    }

    /// Another scratch folder (own cache, own HOME) on the same repository: a second host.
    pub fn sharing(&self) -> Env {
        Env {
            repo: self.repo.clone(),
            location: self.location.clone(),
            extra_env: self.extra_env.clone(),
            ..Env::uninit()
        }
    }

    /// Adds a key opened by `passphrase` (`extra`: `--write-only`, `--host H`) and returns a
    /// second host on this repository that uses it.
    pub fn add_key(&self, passphrase: &str, extra: &[&str]) -> Env {
        let file = self.path(&format!("pass-{}", rand_suffix()));
        std::fs::write(&file, format!("{passphrase}\n")).unwrap();
        let mut args = vec!["key", "add", "--new-password-file", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.ok(&args);
        let mut other = self.sharing();
        other.password = passphrase.into();
        other
    }

    /// Points the commands at another S3 endpoint (a fault proxy, another cluster node).
    pub fn set_endpoint(&mut self, endpoint: &str) {
        self.set_env("AWS_ENDPOINT_URL", endpoint);
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        self.extra_env.retain(|(k, _)| k != key);
        self.extra_env.push((key.to_string(), value.to_string()));
    }

    /// The S3 settings of this environment, for opening the repository in-process.
    pub fn s3_config(&self) -> coffer_store::S3Config {
        let get = |k: &str| {
            self.extra_env
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let secret_file = self.path("s3-secret");
        if let Some(s) = get("AWS_SECRET_ACCESS_KEY") {
            std::fs::write(&secret_file, s).unwrap();
        }
        coffer_store::S3Config {
            endpoint: get("AWS_ENDPOINT_URL"),
            region: get("AWS_REGION"),
            access_key_id: get("AWS_ACCESS_KEY_ID"),
            secret_access_key_file: Some(secret_file),
            allow_http: Some(true),
            ..Default::default()
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("COFFER_REPOSITORY", &self.location)
            .envs(self.extra_env.iter().cloned())
            .env("COFFER_PASSWORD", &self.password)
            .env("COFFER_CACHE_DIR", &self.cache)
            .env("COFFER_KDF_LOG_N", "10");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "coffer {args:?} failed ({:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs with --json and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Runs with `--json` and expects exit `code`; the JSON on stdout and what went to stderr
    /// (the live log).
    pub fn json_exit(&self, args: &[&str], code: i32) -> (serde_json::Value, String) {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "coffer {args:?}: {stderr}");
        let v = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("coffer {args:?}: stdout is not JSON ({e}): {stderr}"));
        (v, stderr)
    }

    /// Runs and expects failure with `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "coffer {args:?}: stdout {} stderr {stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "panic: {stderr}"
        );
        stderr
    }

    pub fn backup(&self, path: &Path) -> serde_json::Value {
        self.json(&["backup", path.to_str().unwrap()])
    }

    /// Restores a snapshot into a fresh folder and returns the restored copy of `name`.
    pub fn restore(&self, snap: &str, name: &str) -> PathBuf {
        let target = self.path(&format!("restore-{}", rand_suffix()));
        self.ok(&["restore", snap, "--target", target.to_str().unwrap()]);
        target.join(name)
    }

    /// The repository through the library, for tests that inspect or craft objects.
    pub fn open_repo(&self) -> coffer_repo::Repository {
        let b = coffer_store::open(&self.location, false, &self.s3_config()).unwrap();
        let unlock = coffer_repo::keyfile::Unlocker::Passphrase(age::secrecy::SecretString::from(
            self.password.clone(),
        ));
        coffer_repo::Repository::open(b, &unlock).unwrap()
    }

    /// Writes `file` (a coffer.toml) with one app using the plugin at `wasm`, pinned by its
    /// hash, in folder `dir`; `rest` is appended inside the app's section (settings, grants...).
    pub fn app_config(
        &self,
        file: &str,
        app: &str,
        wasm: &Path,
        dir: &Path,
        rest: &str,
    ) -> PathBuf {
        let hash = blake3::hash(&std::fs::read(wasm).unwrap())
            .to_hex()
            .to_string();
        let p = self.path(file);
        let text = format!(
            "[apps.{app}]\nplugin = \"{}\"\nblake3 = \"{hash}\"\ndir = \"{}\"\n{rest}",
            wasm.display(),
            dir.display()
        );
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Files of the local repository under `prefix`, a folder the format has (docs/FORMAT.md): a
    /// misspelt one would be a folder that never exists, and a test asserting it empty could not
    /// fail.
    pub fn objects(&self, prefix: &str) -> Vec<PathBuf> {
        let top = prefix.split('/').next().unwrap_or_default();
        assert!(
            [
                "config",
                "keys",
                "data",
                "index",
                "snapshots",
                "prune",
                "clock"
            ]
            .contains(&top),
            "no folder {top:?} in a repository"
        );
        let mut out = vec![];
        walk_files(&self.repo.join(prefix), &mut out);
        out.sort();
        out
    }
}

fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// A prefix no other test run uses.
/// Starts `coffer args`, kills it with SIGKILL after a random time below `span_ms`; returns
/// whether it was still running (the kill landed mid-run).
pub fn kill_at_random(env: &Env, args: &[&str], rng: &mut Rng, span_ms: u64) -> bool {
    let mut child = env
        .cmd(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(
        rng.next() % span_ms.max(1),
    ));
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    running
}

/// After a crash: `check --read-data` passes and each snapshot restores identical to its
/// manifest (the snapshot's top-level entry `name`).
pub fn assert_intact(
    env: &Env,
    what: &str,
    snapshots: &[(String, BTreeMap<Vec<u8>, Entry>)],
    name: &str,
) {
    let check = env.run(&["check", "--read-data"]);
    assert!(
        check.status.success(),
        "{what}: check failed:\n{}",
        String::from_utf8_lossy(&check.stdout)
    );
    for (snap, before) in snapshots {
        let restored = env.restore(snap, name);
        assert_same(before, &manifest(&restored));
        std::fs::remove_dir_all(restored.parent().unwrap()).unwrap();
    }
}

/// `coffer copy` from `from` into `to` (with `to`'s passphrase and S3 settings), `--json`.
pub fn copy_to(from: &Env, to: &Env, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json", "copy", "--to", &to.location];
    args.extend_from_slice(extra);
    let mut c = from.cmd(&args);
    c.env("COFFER_TO_PASSWORD", &to.password)
        .envs(to.extra_env.iter().cloned());
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn rand_prefix() -> String {
    format!("t{}-{:08x}", rand_suffix(), rand::random::<u32>())
}

pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// What [`manifest`] returns.
pub type Manifest = BTreeMap<Vec<u8>, Entry>;

/// A snapshot id with the manifest of what it holds.
pub type Saved = (String, Manifest);

/// One entry of a manifest: everything restore must reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub size: u64,
    pub content: String,
    pub target: Vec<u8>,
    /// Index of the first path sharing this inode (hard links), or none.
    pub link_group: Option<Vec<u8>>,
}

/// Every entry under `root` (root itself as ""), keyed by relative path bytes.
pub fn manifest(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    add(root, root, &mut out, &mut inodes);
    out
}

fn add(
    root: &Path,
    p: &Path,
    out: &mut BTreeMap<Vec<u8>, Entry>,
    inodes: &mut BTreeMap<(u64, u64), Vec<u8>>,
) {
    let m = std::fs::symlink_metadata(p).unwrap();
    let rel = p
        .strip_prefix(root)
        .unwrap()
        .as_os_str()
        .as_bytes()
        .to_vec();
    let ft = m.file_type();
    let kind = if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else {
        "other"
    };
    let content = if ft.is_file() {
        hash_file(p)
    } else {
        String::new()
    };
    let target = if ft.is_symlink() {
        std::fs::read_link(p)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec()
    } else {
        vec![]
    };
    let link_group = (ft.is_file() && m.nlink() > 1).then(|| {
        inodes
            .entry((m.dev(), m.ino()))
            .or_insert_with(|| rel.clone())
            .clone()
    });
    out.insert(
        rel,
        Entry {
            kind: kind.into(),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            size: if ft.is_dir() { 0 } else { m.size() },
            content,
            target,
            link_group,
        },
    );
    if ft.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            add(root, &p.join(n), out, inodes);
        }
    }
}

pub fn hash_file(p: &Path) -> String {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(p).unwrap()).unwrap();
    h.finalize().to_hex().to_string()
}

/// Asserts two manifests are equal, showing the first difference.
pub fn assert_same(a: &BTreeMap<Vec<u8>, Entry>, b: &BTreeMap<Vec<u8>, Entry>) {
    for (k, v) in a {
        match b.get(k) {
            None => panic!("{} missing from the restore", String::from_utf8_lossy(k)),
            Some(w) => assert_eq!(v, w, "entry {} differs", String::from_utf8_lossy(k)),
        }
    }
    assert_eq!(a.len(), b.len(), "the restore holds extra entries");
}

/// A xorshift64 generator: deterministic, seedable, fast.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Deterministic pseudo-random bytes, fast enough for hundreds of MiB.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Makes every file under `p` look older than the racy window of the files cache.
pub fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

/// File path (inside the snapshot) -> its chunks, read through the library.
pub fn files_of(
    repo: &coffer_repo::Repository,
    snap: &str,
) -> BTreeMap<String, Vec<coffer_repo::id::ChunkId>> {
    let (index, _) = repo.load_index().unwrap();
    let reader = coffer_repo::ChunkReader::new(repo, &index);
    let (_, s) = repo.find_snapshot(snap).unwrap();
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), s.tree)];
    while let Some((dir, t)) = stack.pop() {
        for n in reader.tree(&t).unwrap().nodes {
            let p = format!("{dir}{}", n.name);
            match n.subtree {
                Some(sub) => stack.push((format!("{p}/"), sub)),
                None => {
                    out.insert(p, n.content.clone());
                }
            }
        }
    }
    out
}

/// examples/xianyu/xianyu_sim.py: the xianyu stand-in (generate, serve, write, upgrade).
pub fn sim() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/xianyu/xianyu_sim.py")
        .canonicalize()
        .unwrap()
}

/// Runs the simulator, expecting success.
pub fn py(args: &[&str]) -> std::process::Output {
    let out = Command::new("python3")
        .arg(sim())
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "xianyu_sim {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A running simulator, stopped on drop.
pub struct Server(pub PathBuf);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("python3")
            .arg(sim())
            .args(["stop", self.0.to_str().unwrap()])
            .output();
    }
}

/// A generated xianyu folder (not running).
pub fn generated_app(env: &Env, messages: u32, images: u32) -> PathBuf {
    let app = env.path("xianyu");
    py(&[
        "generate",
        app.to_str().unwrap(),
        "--messages",
        &messages.to_string(),
        "--images",
        &images.to_string(),
    ]);
    app
}

/// A generated xianyu folder with its simulator serving on a free port (stopped on drop).
pub fn running_app(env: &Env, messages: u32, images: u32) -> (PathBuf, u16, Server) {
    let app = generated_app(env, messages, images);
    let port = coffer_testkit::free_port();
    py(&["start", app.to_str().unwrap(), "--port", &port.to_string()]);
    let server = Server(app.clone());
    (app, port, server)
}

/// Each phase's seconds and the downtime of an upgrade report, for the log.
pub fn upgrade_phases(r: &serde_json::Value) -> String {
    let list: Vec<String> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {:.1}s",
                p["name"].as_str().unwrap(),
                p["secs"].as_f64().unwrap()
            )
        })
        .collect();
    format!(
        "{}; downtime {:.1}s",
        list.join(", "),
        r["downtime_secs"].as_f64().unwrap_or(f64::NAN)
    )
}

/// Runs a prepared command, expecting success; its output.
pub fn succeed(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The names of the checks in a JSON list (a restore's or drill's `verify` or `health`).
pub fn check_names(checks: &serde_json::Value) -> Vec<&str> {
    checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}
