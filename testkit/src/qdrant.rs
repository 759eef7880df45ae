//! A STAND-IN for Qdrant, not Qdrant: Qdrant cannot be installed on these machines, so this
//! server speaks the documented Qdrant HTTP API that coffer's zhiyun plugin uses, with the
//! real request and response shapes (`{"result": …, "status": "ok", "time": …}`, errors as
//! `{"status": {"error": …}}`):
//!
//! - `GET /collections`, `GET|PUT|DELETE /collections/{c}`, `PUT /collections/{c}/points`,
//!   `POST /collections/{c}/points/count`
//! - `POST /collections/{c}/snapshots` (create), `GET /collections/{c}/snapshots` (list),
//!   `GET|DELETE /collections/{c}/snapshots/{name}` (download, delete)
//! - `POST /collections/{c}/snapshots/upload?priority=…` (multipart field `snapshot`) and
//!   `PUT /collections/{c}/snapshots/recover` (`{"location": "file:///…", "priority": …}`)
//!
//! The gap: a real snapshot is a tar of segment files; here it is a JSON document of the
//! collection's config and points. The plugin never looks inside, so nothing it does depends
//! on the difference. Points are kept in memory; vectors are not searched.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::http::{Request, Response, Server};

#[derive(Default)]
struct State {
    /// name → {"config": …, "points": {id: point}}
    collections: BTreeMap<String, Value>,
    /// (collection, snapshot name) → content
    snapshots: BTreeMap<(String, String), Vec<u8>>,
}

pub struct Qdrant {
    server: Server,
    state: Arc<Mutex<State>>,
    /// The next snapshot download sends only this many bytes, then resets the connection.
    cut_next_download: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

fn ok(result: Value) -> Response {
    Response::json(
        200,
        &json!({ "result": result, "status": "ok", "time": 0.000_2 }),
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

static SNAPSHOT_SEQ: AtomicU64 = AtomicU64::new(1);

impl Qdrant {
    pub fn start() -> Qdrant {
        let state = Arc::new(Mutex::new(State::default()));
        let cut = Arc::new(AtomicUsize::new(usize::MAX));
        let requests = Arc::new(Mutex::new(vec![]));
        let (s, c, log) = (state.clone(), cut.clone(), requests.clone());
        let server = Server::start(Arc::new(move |req: Request| {
            log.lock()
                .unwrap()
                .push(format!("{} {}", req.method, req.path));
            handle(&s, &c, req)
        }));
        Qdrant {
            server,
            state,
            cut_next_download: cut,
            requests,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The next snapshot download breaks after `bytes` (the server going down mid-download).
    pub fn cut_next_download(&self, bytes: usize) {
        self.cut_next_download.store(bytes, Ordering::SeqCst);
    }

    /// Snapshots the server holds now, as (collection, name).
    pub fn snapshots(&self) -> Vec<(String, String)> {
        self.state
            .lock()
            .unwrap()
            .snapshots
            .keys()
            .cloned()
            .collect()
    }

    /// Every request so far, as "METHOD /path".
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Points of a collection, by id (for comparing before and after a restore).
    pub fn points(&self, c: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .collections
            .get(c)
            .map(|v| v["points"].clone())
    }
}

fn handle(state: &Mutex<State>, cut: &AtomicUsize, req: Request) -> Response {
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let mut st = state.lock().unwrap();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["collections"]) => ok(json!({
            "collections": st.collections.keys().map(|n| json!({ "name": n })).collect::<Vec<_>>()
        })),
        ("GET", ["collections", c]) => match st.collections.get(*c) {
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
            if st.collections.contains_key(*c) {
                return error(409, &format!("Wrong input: Collection `{c}` already exists!"));
            }
            if body["vectors"].is_null() {
                return error(400, "Wrong input: missing field `vectors`");
            }
            st.collections.insert(c.to_string(), json!({ "config": body, "points": {} }));
            ok(json!(true))
        }
        ("DELETE", ["collections", c]) => ok(json!(st.collections.remove(*c).is_some())),
        ("PUT", ["collections", c, "points"]) => {
            let Some(col) = st.collections.get_mut(*c) else { return not_found(c) };
            let Some(points) = body["points"].as_array() else {
                return error(400, "Wrong input: missing field `points`");
            };
            for p in points {
                col["points"][p["id"].to_string()] = p.clone();
            }
            ok(json!({ "operation_id": SNAPSHOT_SEQ.fetch_add(1, Ordering::SeqCst), "status": "completed" }))
        }
        ("POST", ["collections", c, "points", "count"]) => match st.collections.get(*c) {
            None => not_found(c),
            Some(col) => ok(json!({ "count": col["points"].as_object().map_or(0, |p| p.len()) })),
        },
        ("POST", ["collections", c, "snapshots"]) => {
            let Some(col) = st.collections.get(*c) else { return not_found(c) };
            let content = serde_json::to_vec(&json!({ "collection": c, "config": col["config"], "points": col["points"] })).unwrap();
            let name = format!("{c}-{}-2026-11-24-08-00-00.snapshot", SNAPSHOT_SEQ.fetch_add(1, Ordering::SeqCst));
            let size = content.len();
            st.snapshots.insert((c.to_string(), name.clone()), content);
            ok(json!({ "name": name, "creation_time": "2026-11-24T08:00:00", "size": size, "checksum": null }))
        }
        ("GET", ["collections", c, "snapshots"]) => ok(Value::Array(
            st.snapshots
                .iter()
                .filter(|((col, _), _)| col == c)
                .map(|((_, n), v)| json!({ "name": n, "creation_time": "2026-11-24T08:00:00", "size": v.len() }))
                .collect(),
        )),
        ("GET", ["collections", c, "snapshots", name]) => {
            match st.snapshots.get(&(c.to_string(), name.to_string())) {
                None => error(404, &format!("Not found: Snapshot {name} not found")),
                Some(v) => {
                    let n = cut.swap(usize::MAX, Ordering::SeqCst);
                    if n < v.len() {
                        Response::Cut(v.clone(), n)
                    } else {
                        Response::Full(200, "application/octet-stream", v.clone())
                    }
                }
            }
        }
        ("DELETE", ["collections", c, "snapshots", name]) => {
            match st.snapshots.remove(&(c.to_string(), name.to_string())) {
                None => error(404, &format!("Not found: Snapshot {name} not found")),
                Some(_) => ok(json!(true)),
            }
        }
        ("POST", ["collections", c, "snapshots", "upload"]) => {
            let Some(content) = multipart_field(&req, "snapshot") else {
                return error(400, "Wrong input: no multipart field `snapshot`");
            };
            recover(&mut st, c, &content, req.param("priority"))
        }
        ("PUT", ["collections", c, "snapshots", "recover"]) => {
            let Some(loc) = body["location"].as_str() else {
                return error(400, "Wrong input: missing field `location`");
            };
            let Some(path) = loc.strip_prefix("file://") else {
                return error(400, "the stand-in recovers from file:// locations only");
            };
            match std::fs::read(path) {
                Ok(content) => recover(&mut st, c, &content, body["priority"].as_str()),
                Err(e) => error(400, &format!("Service internal error: cannot read snapshot {loc}: {e}")),
            }
        }
        _ => error(404, &format!("no route for {} {}", req.method, req.path)),
    }
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
    let Ok(snap) = serde_json::from_slice::<Value>(content) else {
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

/// The content of multipart field `name`.
fn multipart_field(req: &Request, name: &str) -> Option<Vec<u8>> {
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
            let content = &part[head_end + 4..];
            return Some(content.strip_suffix(b"\r\n").unwrap_or(content).to_vec());
        }
    }
    None
}
