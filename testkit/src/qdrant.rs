//! A STAND-IN for Qdrant, not Qdrant: Qdrant cannot be installed on these machines, so this
//! server speaks the documented Qdrant HTTP API that coffer's zhiyun plugin uses, with the
//! real request and response shapes (`{"result": …, "status": "ok", "time": …}`, errors as
//! `{"status": {"error": …}}`), and the behaviour of Qdrant 1.18 seen against the real server:
//!
//! - `GET /collections`, `GET|PUT|DELETE /collections/{c}`, `PUT /collections/{c}/points`,
//!   `POST /collections/{c}/points/count`
//! - `POST /collections/{c}/snapshots` (create), `GET /collections/{c}/snapshots` (list),
//!   `GET|DELETE /collections/{c}/snapshots/{name}` (download, delete)
//! - `POST /collections/{c}/snapshots/upload?priority=…` (multipart field `snapshot`) and
//!   `PUT /collections/{c}/snapshots/recover` (`{"location": "file:///…", "priority": …}`)
//!
//! As the real server: snapshots are tar archives, files in a snapshots folder
//! (`<dir>/<collection>/<name>`) with a `<name>.checksum` file (SHA-256, hex) beside each, the
//! checksum also in the create and list answers; names carry the time to the second
//! (`{collection}-{peer}-{YYYY-MM-DD-HH-MM-SS}.snapshot`), so two snapshots of one collection
//! within a second share a name and the second replaces the first; an uploaded snapshot is
//! kept in the snapshots folder as a snapshot of the collection (listed, and surviving a
//! delete of the collection); recover reads `file://` locations only inside the snapshots
//! folder (403 otherwise); `wait=false` answers 202 and finishes later.
//!
//! The gap: inside the tar is one JSON document of the collection's config and points, not
//! segment files. The plugin never looks inside, so nothing it does depends on the difference.
//! Points are kept in memory; vectors are not searched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use sha2::Digest;

use crate::http::{Request, Response, Server};

/// The peer id in snapshot names (a single-node Qdrant has one).
const PEER: u64 = 2_470_289_742_178_718;

#[derive(Default)]
struct State {
    /// name → {"config": …, "points": {id: point}}
    collections: BTreeMap<String, Value>,
}

struct Shared {
    state: Mutex<State>,
    snapshots: PathBuf,
    /// The next snapshot download sends only this many bytes, then resets the connection.
    cut_next_download: AtomicUsize,
    requests: Mutex<Vec<String>>,
}

pub struct Qdrant {
    server: Server,
    shared: Arc<Shared>,
    _dir: Option<tempfile::TempDir>,
}

fn ok(result: Value) -> Response {
    Response::json(
        200,
        &json!({ "result": result, "status": "ok", "time": 0.000_2 }),
    )
}

fn accepted() -> Response {
    Response::json(
        202,
        &json!({ "result": null, "status": "accepted", "time": 0.000_1 }),
    )
}

fn error(status: u16, msg: &str) -> Response {
    Response::json(
        status,
        &json!({ "status": { "error": msg }, "time": 0.000_1 }),
    )
}

fn not_found(c: &str) -> Response {
    error(404, &format!("Not found: Collection `{c}` doesn't exist!"))
}

static SEQ: AtomicU64 = AtomicU64::new(1);

impl Qdrant {
    /// A stand-in with its snapshots folder in a temporary folder.
    pub fn start() -> Qdrant {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Qdrant::start_in(dir.path());
        q._dir = Some(dir);
        q
    }

    /// A stand-in whose snapshots folder is `snapshots` (as `/qdrant/snapshots` is a mounted
    /// folder of the app's deployment).
    pub fn start_in(snapshots: &Path) -> Qdrant {
        std::fs::create_dir_all(snapshots).unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            snapshots: snapshots.canonicalize().unwrap(),
            cut_next_download: AtomicUsize::new(usize::MAX),
            requests: Mutex::new(vec![]),
        });
        let s = shared.clone();
        let server = Server::start(Arc::new(move |req: Request| {
            s.requests
                .lock()
                .unwrap()
                .push(format!("{} {}", req.method, req.path));
            handle(&s, req)
        }));
        Qdrant {
            server,
            shared,
            _dir: None,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The snapshots folder: the only place recover reads `file://` locations from.
    pub fn snapshots_dir(&self) -> &Path {
        &self.shared.snapshots
    }

    /// The next snapshot download breaks after `bytes` (the server going down mid-download).
    pub fn cut_next_download(&self, bytes: usize) {
        self.shared.cut_next_download.store(bytes, Ordering::SeqCst);
    }

    /// Snapshots the server holds now (created or uploaded), as (collection, name).
    pub fn snapshots(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        let Ok(cols) = std::fs::read_dir(&self.shared.snapshots) else {
            return out;
        };
        for c in cols.flatten() {
            for (name, _) in list(&c.path()) {
                out.push((c.file_name().to_string_lossy().into_owned(), name));
            }
        }
        out.sort();
        out
    }

    /// Every request so far, as "METHOD /path".
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Points of a collection, by id (for comparing before and after a restore).
    pub fn points(&self, c: &str) -> Option<Value> {
        self.shared
            .state
            .lock()
            .unwrap()
            .collections
            .get(c)
            .map(|v| v["points"].clone())
    }
}

/// Snapshot files of one collection's folder, with their checksums.
fn list(dir: &Path) -> Vec<(String, String)> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".checksum") {
            continue;
        }
        let sum = std::fs::read_to_string(dir.join(format!("{name}.checksum"))).unwrap_or_default();
        out.push((name, sum.trim().to_string()));
    }
    out.sort();
    out
}

/// Writes a snapshot file with its checksum file beside it; returns the checksum.
fn store(dir: &Path, name: &str, content: &[u8]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let sum = hex::encode(sha2::Sha256::digest(content));
    std::fs::write(dir.join(name), content).unwrap();
    std::fs::write(dir.join(format!("{name}.checksum")), &sum).unwrap();
    sum
}

fn handle(sh: &Arc<Shared>, req: Request) -> Response {
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let wait = req.param("wait") != Some("false");
    let col_dir = |c: &str| sh.snapshots.join(c);
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["collections"]) => {
            let st = sh.state.lock().unwrap();
            ok(json!({
                "collections": st.collections.keys().map(|n| json!({ "name": n })).collect::<Vec<_>>()
            }))
        }
        ("GET", ["collections", c]) => match sh.state.lock().unwrap().collections.get(*c) {
            None => not_found(c),
            Some(col) => {
                let n = col["points"].as_object().map_or(0, |p| p.len());
                ok(json!({
                    "status": "green",
                    "optimizer_status": "ok",
                    "indexed_vectors_count": 0,
                    "points_count": n,
                    "segments_count": 1,
                    "config": { "params": { "vectors": col["config"]["vectors"].clone(), "shard_number": 1 } },
                    "payload_schema": {}
                }))
            }
        },
        ("PUT", ["collections", c]) => {
            let mut st = sh.state.lock().unwrap();
            if st.collections.contains_key(*c) {
                return error(
                    409,
                    &format!("Wrong input: Collection `{c}` already exists!"),
                );
            }
            if body["vectors"].is_null() {
                return error(400, "Wrong input: missing field `vectors`");
            }
            st.collections
                .insert(c.to_string(), json!({ "config": body, "points": {} }));
            ok(json!(true))
        }
        ("DELETE", ["collections", c]) => {
            // Its snapshots stay in the snapshots folder, as Qdrant keeps them.
            ok(json!(sh
                .state
                .lock()
                .unwrap()
                .collections
                .remove(*c)
                .is_some()))
        }
        ("PUT", ["collections", c, "points"]) => {
            let mut st = sh.state.lock().unwrap();
            let Some(col) = st.collections.get_mut(*c) else {
                return not_found(c);
            };
            let Some(points) = body["points"].as_array() else {
                return error(400, "Wrong input: missing field `points`");
            };
            for p in points {
                col["points"][p["id"].to_string()] = p.clone();
            }
            ok(json!({ "operation_id": SEQ.fetch_add(1, Ordering::SeqCst), "status": "completed" }))
        }
        ("POST", ["collections", c, "points", "count"]) => {
            match sh.state.lock().unwrap().collections.get(*c) {
                None => not_found(c),
                Some(col) => {
                    ok(json!({ "count": col["points"].as_object().map_or(0, |p| p.len()) }))
                }
            }
        }
        ("POST", ["collections", c, "snapshots"]) => {
            if !sh.state.lock().unwrap().collections.contains_key(*c) {
                return not_found(c);
            }
            let create = {
                let (sh, c) = (sh.clone(), c.to_string());
                move || {
                    let st = sh.state.lock().unwrap();
                    let col = &st.collections[&c];
                    let doc = json!({ "collection": c, "config": col["config"], "points": col["points"] });
                    let content = tar(&[("collection.json", doc.to_string().as_bytes())]);
                    let now = chrono::Utc::now();
                    // To the second: a second snapshot within it replaces the first.
                    let name = format!("{c}-{PEER}-{}.snapshot", now.format("%Y-%m-%d-%H-%M-%S"));
                    let sum = store(&sh.snapshots.join(&c), &name, &content);
                    json!({
                        "name": name,
                        "creation_time": now.format("%Y-%m-%dT%H:%M:%S").to_string(),
                        "size": content.len(),
                        "checksum": sum,
                    })
                }
            };
            if wait {
                ok(create())
            } else {
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    create();
                });
                accepted()
            }
        }
        ("GET", ["collections", c, "snapshots"]) => {
            let dir = col_dir(c);
            ok(Value::Array(
                list(&dir)
                    .into_iter()
                    .map(|(n, sum)| {
                        let size = std::fs::metadata(dir.join(&n)).map_or(0, |m| m.len());
                        json!({ "name": n, "creation_time": null, "size": size, "checksum": sum })
                    })
                    .collect(),
            ))
        }
        ("GET", ["collections", c, "snapshots", name]) => {
            match std::fs::read(col_dir(c).join(name)) {
                Err(_) => error(404, &format!("Not found: Snapshot {name} not found")),
                Ok(v) => {
                    let n = sh.cut_next_download.swap(usize::MAX, Ordering::SeqCst);
                    if n < v.len() {
                        Response::Cut(v, n)
                    } else {
                        Response::Full(200, "application/octet-stream", v)
                    }
                }
            }
        }
        ("DELETE", ["collections", c, "snapshots", name]) => {
            let dir = col_dir(c);
            match std::fs::remove_file(dir.join(name)) {
                Err(_) => error(404, &format!("Not found: Snapshot {name} not found")),
                Ok(()) => {
                    let _ = std::fs::remove_file(dir.join(format!("{name}.checksum")));
                    ok(json!(true))
                }
            }
        }
        ("POST", ["collections", c, "snapshots", "upload"]) => {
            let Some((filename, content)) = multipart_field(&req, "snapshot") else {
                return error(400, "Wrong input: no multipart field `snapshot`");
            };
            // Qdrant keeps the uploaded file as a snapshot of the collection.
            let name = filename
                .filter(|n| !n.is_empty() && !n.contains('/'))
                .unwrap_or_else(|| {
                    format!("{c}-upload-{}.snapshot", SEQ.fetch_add(1, Ordering::SeqCst))
                });
            store(&col_dir(c), &name, &content);
            let priority = req.param("priority").map(String::from);
            finish(sh, c, content, priority, wait)
        }
        ("PUT", ["collections", c, "snapshots", "recover"]) => {
            let Some(loc) = body["location"].as_str() else {
                return error(400, "Wrong input: missing field `location`");
            };
            let Some(path) = loc.strip_prefix("file://") else {
                return error(400, "the stand-in recovers from file:// locations only");
            };
            let inside = Path::new(path)
                .canonicalize()
                .is_ok_and(|p| p.starts_with(&sh.snapshots));
            if !inside {
                return error(
                    403,
                    &format!(
                        "Forbidden: snapshot file {path} must be inside the snapshots folder {}",
                        sh.snapshots.display()
                    ),
                );
            }
            match std::fs::read(path) {
                Ok(content) => {
                    let priority = body["priority"].as_str().map(String::from);
                    finish(sh, c, content, priority, wait)
                }
                Err(e) => error(
                    400,
                    &format!("Service internal error: cannot read snapshot {loc}: {e}"),
                ),
            }
        }
        _ => error(404, &format!("no route for {} {}", req.method, req.path)),
    }
}

/// Recovers collection `c` now (`wait`), or later with a 202 now.
fn finish(
    sh: &Arc<Shared>,
    c: &str,
    content: Vec<u8>,
    priority: Option<String>,
    wait: bool,
) -> Response {
    if wait {
        return recover(
            &mut sh.state.lock().unwrap(),
            c,
            &content,
            priority.as_deref(),
        );
    }
    let (sh, c) = (sh.clone(), c.to_string());
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        recover(
            &mut sh.state.lock().unwrap(),
            &c,
            &content,
            priority.as_deref(),
        );
    });
    accepted()
}

/// Replaces collection `c` with a snapshot's content (priority `snapshot`: the snapshot's data
/// wins over whatever the collection held).
fn recover(st: &mut State, c: &str, content: &[u8], priority: Option<&str>) -> Response {
    if !matches!(
        priority,
        None | Some("snapshot") | Some("replica") | Some("no_sync")
    ) {
        return error(400, "Wrong input: unknown priority");
    }
    let Some(snap) =
        untar(content, "collection.json").and_then(|d| serde_json::from_slice::<Value>(&d).ok())
    else {
        return error(
            400,
            "Service internal error: the snapshot is not a valid snapshot archive",
        );
    };
    st.collections.insert(
        c.to_string(),
        json!({ "config": snap["config"], "points": snap["points"] }),
    );
    ok(json!(true))
}

/// A ustar archive of the given files.
fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = vec![];
    for (name, data) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// The content of file `want` in a ustar archive.
fn untar(mut t: &[u8], want: &str) -> Option<Vec<u8>> {
    while t.len() >= 512 && t[0] != 0 {
        let h = &t[..512];
        let name_end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = std::str::from_utf8(&h[..name_end]).ok()?;
        let size_text = std::str::from_utf8(&h[124..136]).ok()?;
        let size =
            usize::from_str_radix(size_text.trim_matches(|c: char| c == '\0' || c == ' '), 8)
                .ok()?;
        let data = t.get(512..512 + size)?;
        if name == want {
            return Some(data.to_vec());
        }
        t = t.get(512 + size.div_ceil(512) * 512..)?;
    }
    None
}

/// The file name and content of multipart field `name`.
fn multipart_field(req: &Request, name: &str) -> Option<(Option<String>, Vec<u8>)> {
    let ct = req.header("content-type")?;
    let boundary = ct.split("boundary=").nth(1)?.trim_matches('"');
    let delim = format!("--{boundary}").into_bytes();
    let body = &req.body;
    let mut starts = vec![];
    let mut i = 0;
    while i + delim.len() <= body.len() {
        if body[i..].starts_with(&delim) {
            starts.push(i);
            i += delim.len();
        } else {
            i += 1;
        }
    }
    for w in starts.windows(2) {
        let part = &body[w[0] + delim.len()..w[1]];
        let head_end = part.windows(4).position(|x| x == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&part[..head_end]);
        if head.contains(&format!("name=\"{name}\"")) {
            let filename = head
                .split("filename=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(String::from);
            let content = &part[head_end + 4..];
            return Some((
                filename,
                content.strip_suffix(b"\r\n").unwrap_or(content).to_vec(),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_round_trips_and_stock_tar_reads_it() {
        let t = tar(&[("collection.json", b"{\"a\":1}")]);
        assert_eq!(untar(&t, "collection.json").unwrap(), b"{\"a\":1}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.tar");
        std::fs::write(&f, &t).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-tf")
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "collection.json"
        );
    }
}
