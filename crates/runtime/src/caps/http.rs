//! HTTP to granted origins: a request with its answer, a response body streamed into an item,
//! an item uploaded as the body or as one multipart field.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use super::{timeout_of, Caps, R, SMALL_ITEM};
use crate::bindings::wit;
use crate::bindings::wit_host::{HttpRequest, HttpResponse};

const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// The header [`Caps::http_to_item`] adds to its answer.
pub const SHA256_HEADER: &str = "x-coffer-sha256";

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: sha2::Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

impl Caps {
    /// A granted request with the body the plugin gave.
    pub(super) fn http_with_body(&self, req: &HttpRequest) -> R<ureq::http::Response<ureq::Body>> {
        self.check_origin(&req.url, "http")?;
        let r = request(req)?
            .body(req.body.clone())
            .map_err(|e| e.to_string())?;
        send(req, r)
    }

    pub(super) fn http(&mut self, req: HttpRequest) -> R<HttpResponse> {
        response(self.http_with_body(&req)?)
    }

    /// Streams a successful answer's body into `item`. The returned headers gain
    /// `x-coffer-sha256`: the SHA-256 (hex) of the body as stored, for APIs that publish a
    /// checksum (Qdrant's snapshots) to be checked against without reading the item back.
    pub(super) fn http_to_item(&mut self, req: HttpRequest, item: String) -> R<HttpResponse> {
        use sha2::Digest;
        let resp = self.http_with_body(&req)?;
        if !resp.status().is_success() {
            return response(resp);
        }
        let mut head = head(&resp);
        let mut body = Hashing {
            inner: resp.into_body().into_reader(),
            hash: sha2::Sha256::new(),
        };
        self.session()?
            .add_reader(Path::new(&item), &mut body)
            .map_err(|e| format!("downloading {} into {item}: {e}", req.url))?;
        head.headers.push(wit::KeyValue {
            key: SHA256_HEADER.into(),
            value: hex::encode(body.hash.finalize()),
        });
        Ok(head)
    }

    pub(super) fn http_upload_item(
        &mut self,
        req: HttpRequest,
        item: String,
        form_field: Option<String>,
    ) -> R<HttpResponse> {
        self.check_origin(&req.url, "http")?;
        let reader = self.item_reader(&item)?;
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
