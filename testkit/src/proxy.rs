//! An HTTP/1.1 proxy between an S3 client and a real S3 server that injects faults and counts
//! requests.
//!
//! It forwards each request unchanged (so SigV4 signatures stay valid) over a fresh connection to
//! the server and relays the answer, except when the fault plan picks the request: then it answers
//! 500 or 503 SlowDown itself (before or after the server saw the request), stalls past the
//! client's timeout, resets the connection halfway through the response body, cuts the body
//! short, or fails a LIST. The counts by request kind are what an S3 bill charges.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};

/// What an S3 request does, from its method and query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Put,
    Get,
    List,
    Head,
    Delete,
    /// Multipart create/complete and batch delete.
    Post,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 500 InternalError without passing the request on.
    Error500,
    /// 500 after the server carried the request out (the client cannot tell it worked).
    Error500After,
    /// 503 SlowDown without passing the request on.
    SlowDown,
    /// 400 InvalidRequest without passing the request on: a fault no retry can cure.
    BadRequest,
    /// Pass it on, then say nothing for `stall` (longer than the client's timeout).
    Timeout,
    /// Send the response head and half the body, then reset the connection.
    ResetMidBody,
    /// Send the response head and all but the last bytes of the body, then close.
    ShortRead,
}

/// Which requests fail and how.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Chance that a request is picked.
    pub rate: f64,
    pub faults: Vec<Fault>,
    /// Only requests of these kinds are picked (all if empty).
    pub kinds: Vec<Kind>,
    pub stall: Duration,
    /// Added to every request: a distant store.
    pub latency: Duration,
    /// When not 0: instead of by chance, every `every`-th request of the picked kinds fails
    /// (the 1st, the `every + 1`-th, …), so a retry always gets through and a test can count on
    /// faults happening.
    pub every: u64,
}

impl Plan {
    pub fn none() -> Plan {
        Plan {
            rate: 0.0,
            faults: vec![],
            kinds: vec![],
            stall: Duration::from_secs(5),
            latency: Duration::ZERO,
            every: 0,
        }
    }

    /// No faults, every request delayed by `latency`.
    pub fn slow(latency: Duration) -> Plan {
        Plan {
            latency,
            ..Plan::none()
        }
    }
}

#[derive(Default)]
struct State {
    counts: BTreeMap<Kind, u64>,
    /// Body bytes of the answers to GETs of objects (what a restore downloads).
    get_bytes: u64,
    injected: BTreeMap<String, u64>,
    /// Requests of each kind seen while a plan with `every` is in force.
    turns: BTreeMap<Kind, u64>,
}

pub struct FaultProxy {
    addr: SocketAddr,
    plan: Arc<Mutex<Plan>>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let up: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("upstream is http://ip:port");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let plan = Arc::new(Mutex::new(Plan::none()));
        let state: Arc<Mutex<State>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s, st) = (plan.clone(), state.clone(), stop.clone());
        std::thread::spawn(move || {
            let rng = Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(7)));
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (p, s, rng) = (p.clone(), s.clone(), rng.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, up, &p, &s, &rng);
                });
            }
        });
        FaultProxy {
            addr,
            plan,
            state,
            stop,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_plan(&self, plan: Plan) {
        *self.plan.lock().unwrap() = plan;
    }

    /// Requests passed to the server, by kind.
    pub fn counts(&self) -> BTreeMap<Kind, u64> {
        self.state.lock().unwrap().counts.clone()
    }

    /// Body bytes the server sent in answer to GETs of objects (not LISTs) since the last reset.
    pub fn get_bytes(&self) -> u64 {
        self.state.lock().unwrap().get_bytes
    }

    /// Faults injected so far, by name.
    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.state.lock().unwrap().injected.clone()
    }

    pub fn reset_counts(&self) {
        let mut s = self.state.lock().unwrap();
        s.counts.clear();
        s.get_bytes = 0;
        s.injected.clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

pub(crate) struct Message {
    head: Vec<u8>,
    pub(crate) body: Vec<u8>,
    pub(crate) start_line: String,
    pub(crate) headers: Vec<(String, String)>,
}

impl Message {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one HTTP/1.1 message (head and body, the body kept as sent: chunked stays chunked).
/// SO_LINGER 0: closing the socket sends RST, not FIN (a connection reset mid-body).
pub(crate) fn reset_on_close(s: &TcpStream) {
    let _ = nix::sys::socket::setsockopt(
        s,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
}

pub(crate) fn read_message(
    r: &mut impl BufRead,
    no_body: bool,
) -> std::io::Result<Option<Message>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.lines();
    let start_line = lines.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut m = Message {
        head,
        body: vec![],
        start_line,
        headers,
    };
    let status = m
        .start_line
        .strip_prefix("HTTP/")
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok());
    if no_body || status.is_some_and(|c| c < 200 || c == 204 || c == 304) {
        return Ok(Some(m));
    }
    if m.header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size_line = Vec::new();
            r.read_until(b'\n', &mut size_line)?;
            m.body.extend_from_slice(&size_line);
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&size_line)
                    .trim()
                    .split(';')
                    .next()
                    .unwrap_or("0"),
                16,
            )
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            m.body.extend_from_slice(&chunk);
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = m
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        m.body.resize(len, 0);
        r.read_exact(&mut m.body)?;
    } else if m.start_line.starts_with("HTTP/") {
        r.read_to_end(&mut m.body)?;
    }
    Ok(Some(m))
}

fn kind(start_line: &str) -> Kind {
    let mut parts = start_line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match method {
        "PUT" => Kind::Put,
        // Path style: GET /bucket?list-type=2&prefix=... lists; GET /bucket/key reads.
        "GET" if query.contains("list-type") || !path.trim_start_matches('/').contains('/') => {
            Kind::List
        }
        "GET" => Kind::Get,
        "HEAD" => Kind::Head,
        "DELETE" => Kind::Delete,
        "POST" => Kind::Post,
        _ => Kind::Other,
    }
}

fn error_response(status: &str, code: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    plan: &Mutex<Plan>,
    state: &Mutex<State>,
    rng: &Mutex<rand::rngs::StdRng>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    while let Some(req) = read_message(&mut reader, false)? {
        let k = kind(&req.start_line);
        let latency = plan.lock().unwrap().latency;
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        let fault = {
            let p = plan.lock().unwrap();
            let mut rng = rng.lock().unwrap();
            let of_kind = p.kinds.is_empty() || p.kinds.contains(&k);
            let turn = if p.every > 0 && of_kind {
                let mut s = state.lock().unwrap();
                let n = s.turns.entry(k).or_default();
                *n += 1;
                (*n - 1).is_multiple_of(p.every)
            } else {
                rng.gen_bool(p.rate.clamp(0.0, 1.0))
            };
            let picked = of_kind && !p.faults.is_empty() && turn;
            picked.then(|| (p.faults[rng.gen_range(0..p.faults.len())], p.stall))
        };
        if let Some((f, _)) = fault {
            *state
                .lock()
                .unwrap()
                .injected
                .entry(format!("{f:?} on {k:?}"))
                .or_default() += 1;
        }
        match fault {
            Some((Fault::Error500, _)) => {
                client.write_all(&error_response(
                    "500 Internal Server Error",
                    "InternalError",
                ))?;
                return Ok(());
            }
            Some((Fault::SlowDown, _)) => {
                client.write_all(&error_response("503 Slow Down", "SlowDown"))?;
                return Ok(());
            }
            Some((Fault::BadRequest, _)) => {
                client.write_all(&error_response("400 Bad Request", "InvalidRequest"))?;
                return Ok(());
            }
            _ => {}
        }
        *state.lock().unwrap().counts.entry(k).or_default() += 1;
        let mut up = TcpStream::connect(upstream)?;
        up.write_all(&req.head)?;
        up.write_all(&req.body)?;
        let mut up_reader = BufReader::new(up);
        let is_head = req.start_line.starts_with("HEAD ");
        let Some(resp) = read_message(&mut up_reader, is_head)? else {
            return Ok(());
        };
        if k == Kind::Get {
            state.lock().unwrap().get_bytes += resp.body.len() as u64;
        }
        match fault {
            Some((Fault::Error500After, _)) => {
                client.write_all(&error_response(
                    "500 Internal Server Error",
                    "InternalError",
                ))?;
                return Ok(());
            }
            Some((Fault::Timeout, stall)) => {
                std::thread::sleep(stall);
                return Ok(());
            }
            Some((Fault::ResetMidBody, _)) if resp.body.len() >= 2 => {
                client.write_all(&resp.head)?;
                client.write_all(&resp.body[..resp.body.len() / 2])?;
                client.flush()?;
                reset_on_close(&client);
                return Ok(());
            }
            Some((Fault::ShortRead, _)) if resp.body.len() >= 2 => {
                client.write_all(&resp.head)?;
                client.write_all(&resp.body[..resp.body.len() - 1.max(resp.body.len() / 10)])?;
                client.flush()?;
                let _ = client.shutdown(Shutdown::Both);
                return Ok(());
            }
            _ => {}
        }
        client.write_all(&resp.head)?;
        client.write_all(&resp.body)?;
        client.flush()?;
        if resp
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            return Ok(());
        }
    }
    Ok(())
}
