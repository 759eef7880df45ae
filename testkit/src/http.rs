//! A small HTTP/1.1 server for stand-ins of services that cannot be installed here (Qdrant, the
//! zhiyun app's health endpoint): one thread per connection, one request per connection.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    /// De-chunked.
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter's value (not percent-decoded: the stand-ins need none).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

pub enum Response {
    /// Status, content type, body.
    Full(u16, &'static str, Vec<u8>),
    /// Sends the head with the full length and only the first `cut` bytes of the body, then
    /// resets the connection: a server going down mid-download.
    Cut(Vec<u8>, usize),
}

impl Response {
    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        Response::Full(status, "application/json", v.to_string().into_bytes())
    }
}

pub type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;

/// A server on a free loopback port; stops accepting when dropped.
pub struct Server {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start(handler: Handler) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let h = handler.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &h);
                });
            }
        });
        Server { port, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
    }
}

fn serve(conn: TcpStream, h: &Handler) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let Some(m) = crate::proxy::read_message(&mut r, false)? else {
        return Ok(());
    };
    let mut parts = m.start_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let chunked = m
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(&m.body) } else { m.body };
    let req = Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers: m.headers,
        body,
    };
    let mut w = conn;
    match h(req) {
        Response::Full(status, ctype, body) => {
            write!(
                w,
                "HTTP/1.1 {status} {}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                reason(status),
                body.len()
            )?;
            w.write_all(&body)?;
        }
        Response::Cut(body, cut) => {
            write!(
                w,
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )?;
            w.write_all(&body[..cut.min(body.len())])?;
            w.flush()?;
            crate::proxy::reset_on_close(&w);
            return Ok(());
        }
    }
    w.flush()
}

fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    let mut rest = raw;
    while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..nl])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim().split(';').next()?, 16).ok())
            .unwrap_or(0);
        rest = &rest[nl + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[(size + 2).min(rest.len())..];
    }
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
