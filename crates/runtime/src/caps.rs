//! The host capabilities a plugin calls, each checked against the app's grants.
//!
//! Everything here is an expected failure from the plugin's point of view: it comes back as a
//! WIT `result::err` with a message naming what was refused and which grant would allow it.
//! One module per capability family, each with the state it needs: [`files`] (items),
//! [`programs`] (and processes), [`http`], [`buckets`], [`sqlite`]. This module holds what they
//! share (the app folder, the grants, the settings) and the one `host` interface of the WIT
//! package, which forwards each import to its family.

mod buckets;
pub mod compose;
mod files;
mod http;
pub(crate) mod programs;
mod sqlite;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use wasmtime::component::Resource;

use crate::bindings::wit;
use crate::bindings::wit_host::{
    self, Bucket, Command, CommandOutput, ComposeCommand, ComposeProject, ComposeService, DbSource,
    HttpRequest, HttpResponse,
};
use crate::process::Process;
use crate::runtime::State;
use coffer_repo::archiver::Session;
use coffer_repo::index::Index;
use coffer_repo::snapshot::Snapshot;
use coffer_repo::Repository;

pub use files::ItemReader;
pub use sqlite::{online_backup, query};

/// The largest item `capture-bytes` and `read-item` move through the sandbox.
const SMALL_ITEM: u64 = 16 << 20;

/// A snapshot being restored or verified, with what is needed to read its items.
pub struct Source {
    pub repo: Arc<Repository>,
    pub index: Arc<Index>,
    pub snapshot: Snapshot,
}

/// What the user allows an app's plugin to do beyond its own folder.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Programs it may run (argv[0] exactly as the plugin gives it).
    #[serde(default)]
    pub programs: Vec<String>,
    /// Origins (`scheme://host:port`) it may send HTTP requests to.
    #[serde(default)]
    pub http: Vec<String>,
    /// S3 endpoints (origins) it may read and write buckets at.
    #[serde(default)]
    pub s3: Vec<String>,
    /// Compose projects it may stop, start, inspect and capture the volumes of, by name, each
    /// with the services it may exec in: `compose = { cskefu = ["mysql"] }`.
    #[serde(default)]
    pub compose: BTreeMap<String, Vec<String>>,
}

/// Programs no grant may name: each is a door to the whole machine (the Docker engine is root
/// access; a shell or `sudo` runs anything). Compose apps get the `compose` grant instead.
const NEVER_GRANTED: &[&str] = &[
    "docker",
    "docker-compose",
    "podman",
    "podman-compose",
    "nerdctl",
    "kubectl",
    "ctr",
    "sh",
    "bash",
    "dash",
    "zsh",
    "ash",
    "fish",
    "ksh",
    "csh",
    "busybox",
    "env",
    "sudo",
    "su",
    "doas",
    "pkexec",
    "nsenter",
    "chroot",
    "setsid",
    "xargs",
    "nohup",
    "timeout",
];

impl Grants {
    /// Refuses grants that would hand a plugin the machine; says what to grant instead.
    pub fn check(&self, app: &str) -> R<()> {
        for p in &self.programs {
            let base = Path::new(p)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            if NEVER_GRANTED.contains(&base.as_str()) {
                let instead = if base.contains("docker")
                    || base.contains("compose")
                    || base == "podman"
                    || base == "nerdctl"
                {
                    format!("grant the app's Compose project instead: compose = {{ PROJECT = [\"SERVICE\", …] }} under [apps.{app}.grants] (stop, start, ps, volumes, and exec in the listed services only)")
                } else {
                    "grant the programs the plugin really runs (pg_dump, psql…) by name".to_string()
                };
                return Err(format!(
                    "[apps.{app}.grants] programs lists '{p}', which would let the plugin run anything as this user: {instead}"
                ));
            }
        }
        Ok(())
    }
}

/// How loud a plugin's log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Log lines from a plugin go here.
pub type LogSink = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

/// What one plugin call may touch.
pub struct Caps {
    pub app: String,
    /// The app folder, canonical.
    pub dir: PathBuf,
    pub grants: Grants,
    /// Settings, to resolve `setting:` capabilities.
    pub settings: Vec<(String, String)>,
    items: files::Items,
    staged: sqlite::Staged,
    pub log: LogSink,
}

type R<T> = Result<T, String>;

impl Caps {
    pub fn new(
        app: &str,
        dir: &Path,
        grants: Grants,
        settings: Vec<(String, String)>,
        log: LogSink,
    ) -> R<Caps> {
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("the app folder {} cannot be opened: {e}", dir.display()))?;
        Ok(Caps {
            app: app.into(),
            dir,
            grants,
            settings,
            items: Default::default(),
            staged: Default::default(),
            log,
        })
    }

    /// For a capture: the backup session the plugin's items go into.
    pub fn with_session(mut self, session: Session) -> Caps {
        self.items.session = Some(session);
        self
    }

    /// After a capture: the session, to finish it.
    pub fn take_session(&mut self) -> Option<Session> {
        self.items.session.take()
    }

    /// For a restore or verify: the snapshot whose items the plugin reads.
    pub fn with_source(mut self, source: Source) -> Caps {
        self.items.source = Some(source);
        self
    }

    /// `rel` under the app folder; refuses absolute paths, `..`, and symlinks that lead out.
    fn resolve(&self, rel: &str) -> R<PathBuf> {
        let p = Path::new(rel);
        let outside = || {
            format!(
                "it asked for '{rel}', which is outside the app folder {}: plugins may only touch files under it",
                self.dir.display()
            )
        };
        if p.is_absolute()
            || p.components()
                .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
        {
            return Err(outside());
        }
        // `""` and `.` name the app folder itself.
        let full: PathBuf = p
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .fold(self.dir.clone(), |acc, c| acc.join(c));
        // The deepest existing ancestor must still be inside once symlinks are resolved.
        let mut probe = full.clone();
        loop {
            if let Ok(real) = probe.canonicalize() {
                if !real.starts_with(&self.dir) {
                    return Err(format!(
                        "{} (through a symlink, to {})",
                        outside(),
                        real.display()
                    ));
                }
                break;
            }
            if !probe.pop() {
                break;
            }
        }
        Ok(full)
    }

    fn setting(&self, name: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn check_program(&self, program: &str) -> R<()> {
        if self.grants.programs.iter().any(|p| p == program) {
            return Ok(());
        }
        Err(format!(
            "it asked to run '{program}', which is not granted: add it to `programs` under [apps.{}.grants] in coffer.toml",
            self.app
        ))
    }

    fn check_origin(&self, url: &str, kind: &str) -> R<()> {
        let origin = origin(url).ok_or_else(|| format!("'{url}' is not an http(s) URL"))?;
        let granted = match kind {
            "s3" => &self.grants.s3,
            _ => &self.grants.http,
        };
        if granted
            .iter()
            .filter_map(|g| origin_of_grant(g))
            .any(|g| g == origin)
        {
            return Ok(());
        }
        Err(format!(
            "it asked for {url}, but the origin {origin} is not granted: add it to `{kind}` under [apps.{}.grants] in coffer.toml",
            self.app
        ))
    }

    /// A declared capability (`run`, `http`, `s3` and a value) as the grant it needs:
    /// (`programs`|`http`|`s3`, program or origin), with `setting:NAME` read from the settings.
    /// `None` when it names an empty setting (nothing to grant).
    /// `run` values `compose:PROJECT[/SERVICE]` (WIT 0.1.2) are (`compose`, project or
    /// project/service).
    pub fn resolve_declared(&self, kind: &str, value: &str) -> Option<(String, String)> {
        let compose = match kind {
            "compose" => Some(value),
            "run" => value.strip_prefix("compose:"),
            _ => None,
        };
        if let Some(rest) = compose {
            let (project, service) = match rest.rsplit_once('/') {
                Some((p, s)) => (p, Some(s)),
                None => (rest, None),
            };
            let project = match project.strip_prefix("setting:") {
                Some(name) => self.setting(name)?.trim().to_string(),
                None => project.to_string(),
            };
            if project.is_empty() {
                return None;
            }
            let value = match service {
                Some(s) => {
                    let s = match s.strip_prefix("setting:") {
                        Some(name) => self.setting(name)?.trim().to_string(),
                        None => s.to_string(),
                    };
                    format!("{project}/{s}")
                }
                None => project,
            };
            return Some(("compose".into(), value));
        }
        let kind = if kind == "run" { "programs" } else { kind };
        let value = match value.strip_prefix("setting:") {
            Some(name) => {
                let s = self.setting(name)?.trim();
                match kind {
                    "programs" => s.split_whitespace().next()?.to_string(),
                    _ => origin(s)?,
                }
            }
            None => value.to_string(),
        };
        Some((kind.to_string(), value))
    }

    /// Whether the grants allow `value` (a program, or a URL/origin) under `kind`.
    pub fn allows(&self, kind: &str, value: &str) -> R<()> {
        match kind {
            "programs" => self.check_program(value),
            "compose" => {
                let (project, service) = match value.split_once('/') {
                    Some((p, s)) => (p, Some(s)),
                    None => (value, None),
                };
                let granted = self.grants.compose.get(project).ok_or_else(|| {
                    format!(
                        "the Compose project '{project}' is not granted: add it to `compose` under [apps.{}.grants] in coffer.toml",
                        self.app
                    )
                })?;
                match service {
                    Some(s) if !granted.iter().any(|g| g == s) => Err(format!(
                        "exec in service '{s}' of Compose project '{project}' is not granted: list it under `compose` in [apps.{}.grants] ({project} = [\"{s}\"])",
                        self.app
                    )),
                    _ => Ok(()),
                }
            }
            _ => self.check_origin(value, kind),
        }
    }
}

/// `scheme://host:port` of a URL, with the default port made explicit.
fn origin(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    if !matches!(u.scheme(), "http" | "https") {
        return None;
    }
    Some(format!(
        "{}://{}:{}",
        u.scheme(),
        u.host_str()?.to_ascii_lowercase(),
        u.port_or_known_default()?
    ))
}

fn origin_of_grant(g: &str) -> Option<String> {
    origin(g.trim_end_matches('/'))
}

fn timeout_of(ms: u32, default: Duration) -> Duration {
    if ms == 0 {
        default
    } else {
        Duration::from_millis(ms as u64)
    }
}

impl wit::Host for State {}

impl wit_host::Host for State {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        let level = match level {
            wit::LogLevel::Debug => LogLevel::Debug,
            wit::LogLevel::Info => LogLevel::Info,
            wit::LogLevel::Warn => LogLevel::Warn,
            wit::LogLevel::Error => LogLevel::Error,
        };
        (self.caps.log)(level, &message);
    }

    // files and items
    fn capture_path(&mut self, item: String, path: String) -> R<u64> {
        self.caps.capture_path(item, path)
    }
    fn capture_path_cut(&mut self, item: String, path: String, cut: wit_host::Cut) -> R<u64> {
        use coffer_repo::archiver::Cut;
        let cut = match cut {
            wit_host::Cut::Content => Cut::Content,
            wit_host::Cut::Pages(n) => Cut::Pages(n as usize),
            wit_host::Cut::Whole => Cut::Whole,
        };
        self.caps.capture_path_cut(item, path, cut)
    }
    fn capture_bytes(&mut self, item: String, data: Vec<u8>) -> R<()> {
        self.caps.capture_bytes(item, data)
    }
    fn restore_item(&mut self, item: String, path: String) -> R<Option<String>> {
        self.caps.restore_item(item, path)
    }
    fn read_item(&mut self, item: String) -> R<Vec<u8>> {
        self.caps.read_item(item)
    }
    fn remove_file(&mut self, path: String) -> R<bool> {
        self.caps.remove_file(path)
    }
    fn write_file(&mut self, path: String, data: Vec<u8>) -> R<()> {
        self.caps.write_file(path, data)
    }

    // SQLite
    fn sqlite_backup(&mut self, item: String, path: String) -> R<u64> {
        self.caps.sqlite_backup(item, path)
    }
    fn sqlite_query(&mut self, db: DbSource, sql: String) -> R<Vec<Vec<String>>> {
        self.caps.sqlite_query(db, sql)
    }

    // programs and processes
    fn spawn(&mut self, cmd: Command) -> R<Resource<Process>> {
        let p = self.caps.spawn(cmd)?;
        self.table.push(p).map_err(|e| e.to_string())
    }
    fn run(&mut self, cmd: Command) -> R<CommandOutput> {
        self.caps.run(cmd)
    }
    fn run_to_item(&mut self, cmd: Command, item: String) -> R<CommandOutput> {
        self.caps.run_to_item(cmd, item)
    }
    fn run_from_item(&mut self, cmd: Command, item: String) -> R<CommandOutput> {
        self.caps.run_from_item(cmd, item)
    }

    // HTTP
    fn http(&mut self, req: HttpRequest) -> R<HttpResponse> {
        self.caps.http(req)
    }
    fn http_to_item(&mut self, req: HttpRequest, item: String) -> R<HttpResponse> {
        self.caps.http_to_item(req, item)
    }
    fn http_upload_item(
        &mut self,
        req: HttpRequest,
        item: String,
        form_field: Option<String>,
    ) -> R<HttpResponse> {
        self.caps.http_upload_item(req, item, form_field)
    }

    // buckets
    fn capture_bucket(&mut self, item: String, source: Bucket) -> R<u64> {
        self.caps.capture_bucket(item, source)
    }
    fn restore_bucket(&mut self, item: String, target: Bucket) -> R<u64> {
        self.caps.restore_bucket(item, target)
    }

    // Compose
    fn compose_ps(&mut self, project: ComposeProject) -> R<Vec<ComposeService>> {
        self.caps.compose_ps(project)
    }
    fn compose_stop(
        &mut self,
        project: ComposeProject,
        services: Vec<String>,
        timeout_ms: u32,
    ) -> R<()> {
        self.caps.compose_stop(project, services, timeout_ms)
    }
    fn compose_down(&mut self, project: ComposeProject, timeout_ms: u32) -> R<()> {
        self.caps.compose_down(project, timeout_ms)
    }
    fn compose_up(
        &mut self,
        project: ComposeProject,
        services: Vec<String>,
        wait_ms: u32,
    ) -> R<Vec<ComposeService>> {
        self.caps.compose_up(project, services, wait_ms)
    }
    fn compose_exec(&mut self, cmd: ComposeCommand) -> R<CommandOutput> {
        self.caps.compose_exec(cmd)
    }
    fn compose_exec_to_item(&mut self, cmd: ComposeCommand, item: String) -> R<CommandOutput> {
        self.caps.compose_exec_to_item(cmd, item)
    }
    fn compose_exec_from_item(&mut self, cmd: ComposeCommand, item: String) -> R<CommandOutput> {
        self.caps.compose_exec_from_item(cmd, item)
    }
    fn compose_spawn(&mut self, cmd: ComposeCommand) -> R<Resource<Process>> {
        let p = self.caps.compose_spawn(cmd)?;
        self.table.push(p).map_err(|e| e.to_string())
    }
    fn compose_capture_volume(
        &mut self,
        project: ComposeProject,
        volume: String,
        item: String,
    ) -> R<u64> {
        self.caps.compose_capture_volume(project, volume, item)
    }
    fn compose_restore_volume(
        &mut self,
        project: ComposeProject,
        volume: String,
        item: String,
    ) -> R<()> {
        self.caps.compose_restore_volume(project, volume, item)
    }
}
