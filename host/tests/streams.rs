//! The streaming capabilities end to end, with the probe test plugin and a real HTTP server on
//! loopback: a program's stdout into an item (as pg_dump will), an item into a program's stdin
//! (psql), an HTTP download into an item and an item uploaded as a chunked multipart field
//! (Qdrant snapshots), small generated items in and out.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;

/// GET /blob: 3 MB of deterministic bytes. POST /upload: parses a (chunked) multipart body and
/// answers the field name, file size and SHA-256 of the part.
const SERVER: &str = r#"
import hashlib, http.server, json, sys
BLOB = bytes((i * 7 + i // 251) % 256 for i in range(3_000_000))
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            out = b""
            while True:
                n = int(self.rfile.readline().strip().split(b";")[0], 16)
                if n == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(n)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length", 0)))
    def reply(self, code, data):
        self.send_response(code)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        self.reply(200 if self.path == "/blob" else 404, BLOB if self.path == "/blob" else b"")
    def do_POST(self):
        data = self.body()
        boundary = self.headers["content-type"].split("boundary=")[1].encode()
        for part in data.split(b"--" + boundary):
            if b"\r\n\r\n" in part:
                head, content = part.split(b"\r\n\r\n", 1)
                name = head.split(b'name="')[1].split(b'"')[0].decode()
                content = content[:-2]
                self.reply(200, json.dumps({"field": name, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}).encode())
                return
        self.reply(400, b"no part")
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[test]
fn streaming_capabilities_move_bytes_both_ways() {
    streams_roundtrip(None);
}

/// The app's bucket behind a flaky connection: object bodies cut mid-way on GET and 500s on
/// PUT. Bucket capture and restore go through the same retrying wrapper as the repository's
/// store, so every object still arrives whole, both ways.
#[test]
fn bucket_streams_survive_a_flaky_store() {
    use coffer_testkit::{Fault, Kind, Plan};
    let garage = coffer_testkit::Garage::shared();
    let proxy = coffer_testkit::FaultProxy::start(garage.endpoint());
    // Every other object read, and every other upload, is cut off mid-answer.
    proxy.set_plan(Plan {
        faults: vec![Fault::ResetMidBody],
        kinds: vec![Kind::Get, Kind::Put],
        every: 2,
        ..Plan::none()
    });
    streams_roundtrip(Some(&proxy));
    let injected = proxy.injected();
    eprintln!("injected {injected:?}");
    assert!(
        injected.get("ResetMidBody on Get").is_some_and(|n| *n >= 2),
        "object reads were not cut: {injected:?}"
    );
    assert!(
        injected.get("ResetMidBody on Put").is_some_and(|n| *n >= 2),
        "uploads were not cut: {injected:?}"
    );
}

fn streams_roundtrip(proxy: Option<&coffer_testkit::FaultProxy>) {
    let mut child = Command::new("python3")
        .args(["-c", SERVER])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _server = Server(child);
    let origin = format!("http://127.0.0.1:{}", line.trim());

    // The app's files bucket (MinIO's role, played by a real Garage server): nested keys, an
    // empty object, and one big enough to go up in parts on restore.
    let garage = coffer_testkit::Garage::shared();
    let (src_bucket, dst_bucket) = (
        format!("files{}", rand_suffix()),
        format!("back{}", rand_suffix()),
    );
    garage.create_bucket(&src_bucket);
    garage.create_bucket(&dst_bucket);
    let (key, secret) = (
        &garage.env["AWS_ACCESS_KEY_ID"],
        &garage.env["AWS_SECRET_ACCESS_KEY"],
    );
    let open = |b: &str| {
        coffer_store::s3::open_bucket(garage.endpoint(), "us-east-1", b, "", key, secret).unwrap()
    };
    let objects: Vec<(String, Vec<u8>)> = vec![
        ("doc.txt".into(), b"uploaded by a customer\n".to_vec()),
        ("img/2026/11/a.png".into(), noise(300_000, 61)),
        ("img/2026/11/b.png".into(), noise(200_000, 63)),
        ("empty".into(), vec![]),
        ("big/video.mp4".into(), noise(40 << 20, 65)),
    ];
    {
        let b = open(&src_bucket);
        for (k, v) in &objects {
            b.put(k, v.clone()).unwrap();
        }
    }

    let env = Env::new();
    let wasm = Path::new(env!("COFFER_TEST_PLUGIN_DIR")).join("coffer_plugin_probe.wasm");
    let app = env.path("app");
    std::fs::create_dir(&app).unwrap();
    let proxied = proxy.map(|p| p.endpoint());
    let s3 = proxied.as_deref().unwrap_or(garage.endpoint());
    let rest = format!(
        "[apps.probe.settings]\nserver = \"{origin}\"\nbucket_endpoint = \"{s3}\"\nbucket = \"{src_bucket}\"\nbucket_key = \"{key}\"\nbucket_secret = \"{secret}\"\nrestore_bucket = \"{dst_bucket}\"\n[apps.probe.grants]\nprograms = [\"seq\", \"wc\"]\nhttp = [\"{origin}\"]\ns3 = [\"{s3}\"]\n"
    );
    // Without the s3 grant the bucket is out of reach, and the error says which grant to add.
    let ungranted = env.app_config(
        "ungranted.toml",
        "probe",
        &wasm,
        &app,
        &rest.replace(&format!("s3 = [\"{s3}\"]\n"), ""),
    );
    let err = env.fails(
        &["--config", ungranted.to_str().unwrap(), "backup", "probe"],
        16,
    );
    assert!(err.contains(s3) && err.contains("s3"), "{err}");

    let cfg = env.app_config("coffer.toml", "probe", &wasm, &app, &rest);
    let cfg = cfg.to_str().unwrap();
    let snap = env.json(&["--config", cfg, "backup", "probe"]);
    assert_eq!(
        snap["items"],
        serde_json::json!([
            "streams/seq.txt",
            "streams/generated.bin",
            "streams/download.bin",
            "files"
        ])
    );
    assert_eq!(snap["metadata"]["objects"], 5, "{snap}");
    let id = snap["snapshot"].as_str().unwrap();

    // The items are plain files in the snapshot.
    let plain = env.path("plain");
    env.ok(&["restore", id, "--target", plain.to_str().unwrap()]);
    let seq = Command::new("seq")
        .args(["1", "200000"])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(std::fs::read(plain.join("streams/seq.txt")).unwrap(), seq);
    let blob: Vec<u8> = (0..3_000_000u64)
        .map(|i| ((i * 7 + i / 251) % 256) as u8)
        .collect();
    assert_eq!(
        std::fs::read(plain.join("streams/download.bin")).unwrap(),
        blob
    );

    // And the plugin streams them back out.
    let out = env.cmd(&["--config", cfg, "restore", id]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("wc: {}", seq.len())), "{stderr}");
    let sha = String::from_utf8(
        Command::new("sha256sum")
            .arg(plain.join("streams/download.bin"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let sha = sha.split_whitespace().next().unwrap();
    assert!(
        stderr.contains(&format!(
            "\"field\": \"snapshot\", \"size\": 3000000, \"sha256\": \"{sha}\""
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(app.join("download.bin")).unwrap(), blob);

    // The bucket: plain files in the snapshot, and every object back in the other bucket.
    assert!(
        stderr.contains(&format!("restored 5 objects into {dst_bucket}")),
        "{stderr}"
    );
    let back = open(&dst_bucket);
    for (k, v) in &objects {
        assert_eq!(
            std::fs::read(plain.join("files").join(k)).unwrap(),
            *v,
            "{k}"
        );
        assert!(
            back.get(k).unwrap() == *v,
            "{k} differs in the restored bucket"
        );
    }
}
