//! The host capabilities a plugin calls, each checked against the app's grants.
//!
//! Everything here is an expected failure from the plugin's point of view: it comes back as a
//! WIT `result::err` with a message naming what was refused and which grant would allow it.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use super::bindings::wit;
use super::bindings::wit_host::{
    self, Bucket, Command, CommandOutput, DbSource, HttpRequest, HttpResponse,
};
use super::process::Process;
use super::runtime::State;
use crate::archiver::Session;
use crate::backend::Backend;
use crate::config::Grants;
use crate::repo::index::Index;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind};
use crate::repo::{ChunkReader, Repository};
use crate::restorer::{self, RestoreOptions};
use wasmtime::component::Resource;

/// The largest item `capture-bytes` and `read-item` move through the sandbox.
const SMALL_ITEM: u64 = 16 << 20;
const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// A snapshot being restored or verified, with what is needed to read its items.
pub struct Source {
    pub repo: Arc<Repository>,
    pub index: Arc<Index>,
    pub snapshot: Snapshot,
}

/// Log lines from a plugin go here.
pub type LogSink = Arc<dyn Fn(wit::LogLevel, &str) + Send + Sync>;

/// What one plugin call may touch.
pub struct Caps {
    pub app: String,
    /// The app folder, canonical.
    pub dir: PathBuf,
    pub grants: Grants,
    /// Settings, to resolve `setting:` capabilities.
    pub settings: Vec<(String, String)>,
    /// The backup in progress (capture only).
    pub session: Option<Session>,
    /// The snapshot being restored or verified.
    pub source: Option<Source>,
    /// Staged copies of captured SQLite databases, by item.
    pub staged: HashMap<String, PathBuf>,
    pub staging: Option<tempfile::TempDir>,
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
            session: None,
            source: None,
            staged: HashMap::new(),
            staging: None,
            log,
        })
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
        let full = self.dir.join(p);
        // The deepest existing ancestor must still be inside once symlinks are resolved.
        let mut probe = full.clone();
        loop {
            if let Ok(real) = probe.canonicalize() {
                if !real.starts_with(&self.dir) {
                    return Err(outside());
                }
                break;
            }
            if !probe.pop() {
                break;
            }
        }
        Ok(full)
    }

    fn session(&mut self) -> R<&mut Session> {
        self.session
            .as_mut()
            .ok_or_else(|| "capturing is only possible during capture".to_string())
    }

    fn source(&self) -> R<&Source> {
        self.source
            .as_ref()
            .ok_or_else(|| "items can only be read during restore and verify".to_string())
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
    pub fn resolve_declared(&self, kind: &str, value: &str) -> Option<(String, String)> {
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
            _ => self.check_origin(value, kind),
        }
    }

    fn command(&self, cmd: &Command) -> R<std::process::Command> {
        self.check_program(&cmd.program)?;
        let cwd = match &cmd.cwd {
            Some(c) => self.resolve(c)?,
            None => self.dir.clone(),
        };
        let mut c = std::process::Command::new(&cmd.program);
        c.args(&cmd.args).env_clear().current_dir(cwd);
        if let Some(path) = std::env::var_os("PATH") {
            c.env("PATH", path);
        }
        for kv in &cmd.env {
            c.env(&kv.key, &kv.value);
        }
        Ok(c)
    }

    fn item_node(&self, item: &str) -> R<Node> {
        let src = self.source()?;
        let reader = ChunkReader::new(&src.repo, &src.index);
        let mut tree = reader.tree(&src.snapshot.tree).map_err(|e| e.to_string())?;
        let comps: Vec<&str> = item.split('/').filter(|c| !c.is_empty()).collect();
        for (i, c) in comps.iter().enumerate() {
            let node = tree
                .nodes
                .into_iter()
                .find(|n| n.name == *c)
                .ok_or_else(|| format!("the snapshot has no item '{item}'"))?;
            if i == comps.len() - 1 {
                return Ok(node);
            }
            let sub = node
                .subtree
                .ok_or_else(|| format!("the snapshot has no item '{item}'"))?;
            tree = reader.tree(&sub).map_err(|e| e.to_string())?;
        }
        Err(format!("the snapshot has no item '{item}'"))
    }

    fn item_reader(&self, item: &str) -> R<ItemReader> {
        let node = self.item_node(item)?;
        if node.kind != NodeKind::File {
            return Err(format!("item '{item}' is a folder, not a file"));
        }
        self.chunks_reader(node.content)
    }

    /// Reads a file's chunks in order.
    fn chunks_reader(&self, chunks: Vec<crate::id::ChunkId>) -> R<ItemReader> {
        let src = self.source()?;
        Ok(ItemReader {
            repo: src.repo.clone(),
            index: src.index.clone(),
            chunks,
            next: 0,
            buf: vec![],
            pos: 0,
            pack: None,
        })
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

/// Streams a file item's chunks, verified, in order, keeping the last decrypted pack (an item's
/// chunks mostly sit in the same few packs, one after another).
pub struct ItemReader {
    repo: Arc<Repository>,
    index: Arc<Index>,
    chunks: Vec<crate::id::ChunkId>,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    pack: Option<(crate::id::PackId, Vec<u8>)>,
}

impl ItemReader {
    fn load(&mut self, id: &crate::id::ChunkId) -> crate::Result<()> {
        let (pack_id, entry) = self
            .index
            .get(id)
            .ok_or_else(|| crate::Error::MissingChunk { chunk: id.to_hex() })?;
        if self.pack.as_ref().map(|p| p.0) != Some(pack_id) {
            self.pack = Some((pack_id, self.repo.read_pack(&pack_id)?));
        }
        let plain = &self.pack.as_ref().expect("just loaded").1;
        crate::repo::pack::extract_into(plain, &entry, &self.repo.secrets, &pack_id, &mut self.buf)
    }
}

impl Read for ItemReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.chunks.get(self.next).copied() else {
                return Ok(0);
            };
            self.next += 1;
            self.load(&id).map_err(std::io::Error::other)?;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Kills a child if it outlives its timeout; send on (or drop) the returned sender once it has
/// been waited for.
pub(super) fn watchdog(pid: u32, timeout: Duration) -> crossbeam_channel::Sender<()> {
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    std::thread::spawn(move || {
        if let Err(crossbeam_channel::RecvTimeoutError::Timeout) = rx.recv_timeout(timeout) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    });
    tx
}

fn timeout_of(ms: u32, default: Duration) -> Duration {
    if ms == 0 {
        default
    } else {
        Duration::from_millis(ms as u64)
    }
}

/// Consumes a program's stdout.
type Drain<'a> = dyn FnMut(&mut dyn Read) -> R<()> + 'a;

/// Runs a command; `feed` writes its stdin, `drain` consumes its stdout (else it is collected).
fn run_with(
    mut c: std::process::Command,
    cmd: &Command,
    feed: Option<Box<dyn Read + Send>>,
    drain: Option<&mut Drain>,
) -> R<CommandOutput> {
    c.stdin(if feed.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", cmd.program))?;
    let dog = watchdog(child.id(), timeout_of(cmd.timeout_ms, DEFAULT_RUN_TIMEOUT));
    let stdin = child.stdin.take();
    let feeder = feed.map(|mut r| {
        std::thread::spawn(move || {
            let mut w = stdin.expect("piped");
            let _ = std::io::copy(&mut r, &mut w);
        })
    });
    let mut stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let mut stdout_pipe = child.stdout.take().expect("piped");
    let mut stdout = vec![];
    let drained = match drain {
        Some(f) => f(&mut stdout_pipe),
        None => stdout_pipe
            .read_to_end(&mut stdout)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    drop(stdout_pipe);
    if drained.is_err() {
        // Nobody reads its output any more: do not wait for the timeout.
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let _ = dog.send(());
    if let Some(f) = feeder {
        let _ = f.join();
    }
    let stderr = err_thread.join().unwrap_or_default();
    drained?;
    exit_output(&cmd.program, status, stdout, stderr)
}

/// How a waited-for program ended, as the plugin sees it: its exit code and output, or an error
/// when a signal (its timeout's watchdog, or another) ended it.
pub(super) fn exit_output(
    program: &str,
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
) -> R<CommandOutput> {
    match status.code() {
        Some(code) => Ok(CommandOutput {
            status: code,
            stdout,
            stderr,
        }),
        None => Err(format!(
            "{program} was killed (timeout or signal): {}",
            String::from_utf8_lossy(&stderr).trim()
        )),
    }
}

fn agent(timeout_ms: u32) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout_of(timeout_ms, DEFAULT_HTTP_TIMEOUT)))
            .build(),
    )
}

fn send(
    req: &HttpRequest,
    r: ureq::http::Request<impl ureq::AsSendBody>,
) -> R<ureq::http::Response<ureq::Body>> {
    agent(req.timeout_ms)
        .run(r)
        .map_err(|e| format!("{} {}: {e}", req.method, req.url))
}

impl Caps {
    /// A granted request with the body the plugin gave.
    fn http_with_body(&self, req: &HttpRequest) -> R<ureq::http::Response<ureq::Body>> {
        self.check_origin(&req.url, "http")?;
        let r = request(req)?
            .body(req.body.clone())
            .map_err(|e| e.to_string())?;
        send(req, r)
    }
}

fn request(req: &HttpRequest) -> R<ureq::http::request::Builder> {
    let mut b = ureq::http::Request::builder()
        .method(req.method.as_str())
        .uri(req.url.as_str());
    for kv in &req.headers {
        b = b.header(kv.key.as_str(), kv.value.as_str());
    }
    Ok(b)
}

fn head(r: &ureq::http::Response<ureq::Body>) -> HttpResponse {
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| wit::KeyValue {
            key: k.to_string(),
            value: v.to_str().unwrap_or("").to_string(),
        })
        .collect();
    HttpResponse {
        status: r.status().as_u16(),
        headers,
        body: vec![],
    }
}

fn response(mut r: ureq::http::Response<ureq::Body>) -> R<HttpResponse> {
    let mut out = head(&r);
    out.body = r
        .body_mut()
        .with_config()
        .limit(SMALL_ITEM)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    Ok(out)
}

impl wit::Host for State {}

impl wit_host::HostProcess for State {
    fn write(&mut self, p: Resource<Process>, data: Vec<u8>) -> R<()> {
        self.process(&p)?.write(&data)
    }

    fn read_line(&mut self, p: Resource<Process>, timeout_ms: u32) -> R<Option<String>> {
        self.process(&p)?.read_line(timeout_ms)
    }

    fn finish(&mut self, p: Resource<Process>) -> R<CommandOutput> {
        self.process(&p)?.finish()
    }

    fn drop(&mut self, p: Resource<Process>) -> wasmtime::Result<()> {
        self.table.delete(p)?; // its Drop kills the program if it still runs
        Ok(())
    }
}

impl State {
    fn process(&mut self, p: &Resource<Process>) -> R<&mut Process> {
        self.table.get_mut(p).map_err(|e| e.to_string())
    }
}

impl wit_host::Host for State {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        (self.caps.log)(level, &message);
    }

    fn capture_path(&mut self, item: String, path: String) -> R<u64> {
        let full = self.caps.resolve(&path)?;
        self.caps
            .session()?
            .add_path(Path::new(&item), &full)
            .map_err(|e| e.to_string())
    }

    fn capture_bytes(&mut self, item: String, data: Vec<u8>) -> R<()> {
        if data.len() as u64 > SMALL_ITEM {
            return Err("capture-bytes takes at most 16 MiB; stream bigger items with run-to-item or http-to-item".into());
        }
        self.caps
            .session()?
            .add_reader(Path::new(&item), &data[..])
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn sqlite_backup(&mut self, item: String, path: String) -> R<u64> {
        let src_path = self.caps.resolve(&path)?;
        if !src_path.is_file() {
            return Err(format!("{path} is not a file"));
        }
        let staging = match &self.caps.staging {
            Some(t) => t.path().to_path_buf(),
            None => {
                let t = tempfile::tempdir().map_err(|e| e.to_string())?;
                let p = t.path().to_path_buf();
                self.caps.staging = Some(t);
                p
            }
        };
        let copy = staging.join(format!("{}.db", self.caps.staged.len()));
        online_backup(&src_path, &copy)
            .map_err(|e| format!("online backup of {path} failed: {e}"))?;
        let n = self
            .caps
            .session()?
            .add_path(Path::new(&item), &copy)
            .map_err(|e| e.to_string())?;
        self.caps.staged.insert(item, copy);
        Ok(n)
    }

    fn sqlite_query(&mut self, db: DbSource, sql: String) -> R<Vec<Vec<String>>> {
        let path =
            match &db {
                DbSource::Path(p) => self.caps.resolve(p)?,
                DbSource::Item(i) => self.caps.staged.get(i).cloned().ok_or_else(|| {
                    format!("no SQLite copy was captured as '{i}' in this session")
                })?,
            };
        query(&path, &sql).map_err(|e| format!("query on {}: {e}", path.display()))
    }

    fn restore_item(&mut self, item: String, path: String) -> R<Option<String>> {
        let dest = self.caps.resolve(&path)?;
        let src = self.caps.source()?;
        let parent = dest.parent().ok_or("no parent folder")?.to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        let staging = tempfile::Builder::new()
            .prefix(".coffer-staging-")
            .tempdir_in(&parent)
            .map_err(|e| format!("{}: {e}", parent.display()))?;
        let opts = RestoreOptions {
            target: staging.path().to_path_buf(),
            include: vec![PathBuf::from(&item)],
            allow_outside_symlinks: false,
        };
        let summary = restorer::restore(
            &src.repo,
            &src.index,
            &src.snapshot,
            &opts,
            &Default::default(),
        )
        .map_err(|e| format!("restoring item {item}: {e}"))?;
        if !summary.errors.is_empty() {
            return Err(format!(
                "restoring item {item}: {}",
                summary.errors.join("; ")
            ));
        }
        let staged = staging.path().join(&item);
        if std::fs::symlink_metadata(&staged).is_err() {
            return Err(format!("the snapshot has no item '{item}'"));
        }
        let mut aside = None;
        if std::fs::symlink_metadata(&dest).is_ok() {
            let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
            let mut n = 0;
            let moved = loop {
                let name = format!(
                    "{}.coffer-replaced-{stamp}{}",
                    dest.file_name().unwrap_or_default().to_string_lossy(),
                    if n == 0 {
                        String::new()
                    } else {
                        format!("-{n}")
                    }
                );
                let candidate = parent.join(name);
                if std::fs::symlink_metadata(&candidate).is_err() {
                    break candidate;
                }
                n += 1;
            };
            std::fs::rename(&dest, &moved)
                .map_err(|e| format!("moving {} aside: {e}", dest.display()))?;
            aside = Some(
                moved
                    .strip_prefix(&self.caps.dir)
                    .unwrap_or(&moved)
                    .display()
                    .to_string(),
            );
        }
        std::fs::rename(&staged, &dest)
            .map_err(|e| format!("putting {} in place: {e}", dest.display()))?;
        Ok(aside)
    }

    fn read_item(&mut self, item: String) -> R<Vec<u8>> {
        let mut r = self.caps.item_reader(&item)?;
        let mut out = vec![];
        (&mut r)
            .take(SMALL_ITEM + 1)
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?;
        if out.len() as u64 > SMALL_ITEM {
            return Err(format!(
                "item {item} is over 16 MiB: stream it with run-from-item or http-upload-item"
            ));
        }
        Ok(out)
    }

    fn remove_file(&mut self, path: String) -> R<bool> {
        let full = self.caps.resolve(&path)?;
        match std::fs::symlink_metadata(&full) {
            Err(_) => Ok(false),
            Ok(m) if m.is_dir() => Err(format!(
                "{path} is a folder; remove-file removes files only"
            )),
            Ok(_) => std::fs::remove_file(&full)
                .map(|_| true)
                .map_err(|e| format!("{path}: {e}")),
        }
    }

    fn spawn(&mut self, cmd: Command) -> R<Resource<Process>> {
        let c = self.caps.command(&cmd)?;
        let p = Process::spawn(
            c,
            &cmd.program,
            timeout_of(cmd.timeout_ms, DEFAULT_RUN_TIMEOUT),
        )?;
        self.table.push(p).map_err(|e| e.to_string())
    }

    fn run(&mut self, cmd: Command) -> R<CommandOutput> {
        let c = self.caps.command(&cmd)?;
        run_with(c, &cmd, None, None)
    }

    fn run_to_item(&mut self, cmd: Command, item: String) -> R<CommandOutput> {
        let c = self.caps.command(&cmd)?;
        let session = self.caps.session()?;
        let mut drain = |r: &mut dyn Read| {
            session
                .add_reader(Path::new(&item), r)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        run_with(c, &cmd, None, Some(&mut drain))
    }

    fn run_from_item(&mut self, cmd: Command, item: String) -> R<CommandOutput> {
        let c = self.caps.command(&cmd)?;
        let reader = self.caps.item_reader(&item)?;
        run_with(c, &cmd, Some(Box::new(reader)), None)
    }

    fn http(&mut self, req: HttpRequest) -> R<HttpResponse> {
        response(self.caps.http_with_body(&req)?)
    }

    fn http_to_item(&mut self, req: HttpRequest, item: String) -> R<HttpResponse> {
        let resp = self.caps.http_with_body(&req)?;
        if !resp.status().is_success() {
            return response(resp);
        }
        let head = head(&resp);
        let body = resp.into_body().into_reader();
        self.caps
            .session()?
            .add_reader(Path::new(&item), body)
            .map_err(|e| format!("downloading {} into {item}: {e}", req.url))?;
        Ok(head)
    }

    fn http_upload_item(
        &mut self,
        req: HttpRequest,
        item: String,
        form_field: Option<String>,
    ) -> R<HttpResponse> {
        self.caps.check_origin(&req.url, "http")?;
        let reader = self.caps.item_reader(&item)?;
        let mut b = request(&req)?;
        let body: Box<dyn Read + Send> = match &form_field {
            None => Box::new(reader),
            Some(field) => {
                let boundary = format!("coffer-{}", hex::encode(rand::random::<[u8; 12]>()));
                b = b.header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                );
                let name = item.rsplit('/').next().unwrap_or(&item).replace('"', "");
                let head = format!(
                    "--{boundary}\r\ncontent-disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\ncontent-type: application/octet-stream\r\n\r\n"
                );
                let tail = format!("\r\n--{boundary}--\r\n");
                Box::new(
                    std::io::Cursor::new(head.into_bytes())
                        .chain(reader)
                        .chain(std::io::Cursor::new(tail.into_bytes())),
                )
            }
        };
        let r = b
            .body(ureq::SendBody::from_owned_reader(body))
            .map_err(|e| e.to_string())?;
        response(send(&req, r)?)
    }

    fn capture_bucket(&mut self, item: String, source: Bucket) -> R<u64> {
        self.caps.check_origin(&source.endpoint, "s3")?;
        let store = open_bucket(&source)?;
        let objects = store
            .list("")
            .map_err(|e| bucket_error(&source, "listing", e))?;
        let readers = objects.into_iter().map(|o| {
            let mtime = o
                .modified
                .and_then(|t| t.timestamp_nanos_opt())
                .unwrap_or(0);
            let r = store.get_reader(&o.key)?;
            Ok((o.key, mtime, r))
        });
        let (count, _) = self
            .caps
            .session()?
            .add_folder(Path::new(&item), readers)
            .map_err(|e| format!("capturing bucket {}: {e}", source.name))?;
        Ok(count)
    }

    fn restore_bucket(&mut self, item: String, target: Bucket) -> R<u64> {
        self.caps.check_origin(&target.endpoint, "s3")?;
        let node = self.caps.item_node(&item)?;
        let Some(root) = node.subtree.filter(|_| node.kind == NodeKind::Dir) else {
            return Err(format!("item '{item}' is not a folder of objects"));
        };
        let store = open_bucket(&target)?;
        let src = self.caps.source()?;
        let reader = ChunkReader::new(&src.repo, &src.index);
        let mut count = 0;
        let mut stack = vec![(root, String::new())];
        while let Some((tree, prefix)) = stack.pop() {
            let tree = reader.tree(&tree).map_err(|e| e.to_string())?;
            for n in tree.nodes {
                let key = format!("{prefix}{}", n.name);
                match (n.kind, n.subtree) {
                    (NodeKind::Dir, Some(sub)) => stack.push((sub, format!("{key}/"))),
                    (NodeKind::File, _) => {
                        let mut content = self.caps.chunks_reader(n.content)?;
                        store.put_reader(&key, &mut content).map_err(|e| {
                            bucket_error(&target, &format!("restoring {key} into"), e)
                        })?;
                        count += 1;
                    }
                    _ => {}
                }
            }
        }
        Ok(count)
    }
}

/// A bucket operation's error; a missing bucket said plainly.
fn bucket_error(b: &Bucket, what: &str, e: crate::backend::BackendError) -> String {
    let text = e.to_string();
    if text.contains("NoSuchBucket") {
        format!(
            "bucket {} does not exist at {}: create it, or fix the bucket name",
            b.name, b.endpoint
        )
    } else {
        format!("{what} bucket {}: {text}", b.name)
    }
}

/// A plugin's bucket, opened with the credentials the plugin gave (never the repository's).
fn open_bucket(b: &Bucket) -> R<Arc<crate::backend::StoreBackend>> {
    crate::backend::s3::open_bucket(
        &b.endpoint,
        &b.region,
        &b.name,
        &b.prefix,
        &b.access_key_id,
        &b.secret_access_key,
    )
    .map_err(|e| e.to_string())
}

/// SQLite's online backup of `src` into a new file `dst`, in one step: a single read
/// transaction, so the copy is one consistent point in time while writers carry on (WAL).
pub fn online_backup(src: &Path, dst: &Path) -> rusqlite::Result<()> {
    let source = rusqlite::Connection::open(src)?;
    source.busy_timeout(Duration::from_secs(30))?;
    let mut target = rusqlite::Connection::open(dst)?;
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut target)?;
        let mut tries = 0;
        loop {
            match backup.step(-1)? {
                rusqlite::backup::StepResult::Done => break,
                rusqlite::backup::StepResult::More => continue,
                _ if tries < 600 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(5),
                        Some("database stayed locked".into()),
                    ))
                }
            }
        }
    }
    // Fold any WAL the copy grew back into the file, so the item is one self-contained file.
    target.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    target.close().map_err(|(_, e)| e)
}

/// A read-only query; values rendered as text.
pub fn query(path: &Path, sql: &str) -> rusqlite::Result<Vec<Vec<String>>> {
    let c =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    c.busy_timeout(Duration::from_secs(30))?;
    c.execute_batch("PRAGMA query_only = ON")?;
    let mut stmt = c.prepare(sql)?;
    let cols = stmt.column_count();
    let rows = stmt.query_map([], |row| {
        (0..cols)
            .map(|i| {
                Ok(match row.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => String::new(),
                    rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                    rusqlite::types::ValueRef::Real(f) => f.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    rusqlite::types::ValueRef::Blob(b) => hex::encode(b),
                })
            })
            .collect::<rusqlite::Result<Vec<_>>>()
    })?;
    rows.collect()
}
