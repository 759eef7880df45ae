//! Qdrant collections through the snapshot API: create a snapshot on the server, stream its
//! download into the backup, delete it on the server whatever happened; restore by uploading
//! it with priority `snapshot`, or by a recover from a location the server can read.

use std::time::Duration;

use coffer_plugin_sdk::host::Response;
use coffer_plugin_sdk::prelude::*;

pub struct Qdrant {
    pub url: String,
    pub api_key: String,
}

const CONTROL: Duration = Duration::from_secs(60);
const BULK: Duration = Duration::from_secs(6 * 3600);

/// `s` with every byte outside the URL-safe set percent-encoded (collection and snapshot names
/// go into paths).
fn path_part(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Qdrant {
    pub fn from(settings: &Settings) -> Qdrant {
        Qdrant {
            url: settings
                .get_or("qdrant_url", "http://127.0.0.1:6333")
                .trim_end_matches('/')
                .to_string(),
            api_key: settings.get_or("qdrant_api_key", "").to_string(),
        }
    }

    fn req(&self, method: &str, path: &str) -> Request {
        let r = Request::new(method, &format!("{}{path}", self.url)).timeout(CONTROL);
        if self.api_key.is_empty() {
            r
        } else {
            r.header("api-key", &self.api_key)
        }
    }

    /// A JSON call; its `result`, or an error with Qdrant's own message.
    fn call(&self, r: Request, what: &str) -> Result<Json> {
        self.answer(r.send(), what)
    }

    /// What Qdrant answered to `what`: its `result`, or an error with Qdrant's own message.
    fn answer(&self, resp: Result<Response>, what: &str) -> Result<Json> {
        let resp = resp.map_err(|e| {
            Error(format!(
                "Qdrant at {}: {what}: {e} (is it running? check `qdrant_url`)",
                self.url
            ))
        })?;
        let body = resp.json().unwrap_or(Json::Null);
        if !(200..300).contains(&resp.status) {
            let msg = body["status"]["error"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| resp.text());
            bail!(
                "Qdrant at {}: {what}: HTTP {}: {msg}",
                self.url,
                resp.status
            );
        }
        Ok(body["result"].clone())
    }

    /// Every collection's name.
    pub fn collections(&self) -> Result<Vec<String>> {
        let r = self.call(self.req("GET", "/collections"), "listing collections")?;
        let mut names: Vec<String> = r["collections"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    pub fn points(&self, c: &str) -> Result<u64> {
        let r = self.call(
            self.req(
                "POST",
                &format!("/collections/{}/points/count", path_part(c)),
            )
            .json(&json!({ "exact": true })),
            &format!("counting points of {c}"),
        )?;
        r["count"].as_u64().ok_or_else(|| {
            Error(format!(
                "Qdrant: counting points of {c}: no count in the answer"
            ))
        })
    }

    /// Snapshots collection `c` into `item`; the server's snapshot is deleted afterwards even
    /// when the download fails. Returns the point counts seen just before and just after.
    pub fn capture(&self, c: &str, item: &str) -> Result<(u64, u64)> {
        let before = self.points(c)?;
        let created = self.call(
            self.req(
                "POST",
                &format!("/collections/{}/snapshots?wait=true", path_part(c)),
            )
            .timeout(BULK),
            &format!("creating a snapshot of {c}"),
        )?;
        let name = created["name"]
            .as_str()
            .ok_or_else(|| {
                Error(format!(
                    "Qdrant: the snapshot of {c} came back without a name"
                ))
            })?
            .to_string();
        let path = format!(
            "/collections/{}/snapshots/{}",
            path_part(c),
            path_part(&name)
        );
        let downloaded = self
            .req("GET", &path)
            .timeout(BULK)
            .send_to_item(item)
            .and_then(|r| {
                r.check(&format!("downloading snapshot {name} of {c}"))
                    .map(|_| ())
            });
        let after = self.points(c);
        let deleted = self.delete_snapshot(&path);
        match (downloaded, deleted) {
            (Ok(()), Ok(())) => Ok((before, after?)),
            (Ok(()), Err(e)) => bail!("{e}: delete it by hand (DELETE {}{path})", self.url),
            (Err(e), Ok(())) => bail!("Qdrant collection {c}: {e} (the server-side snapshot {name} was deleted)"),
            (Err(e), Err(d)) => bail!("Qdrant collection {c}: {e}; and the server-side snapshot could not be deleted either: {d}: delete it by hand (DELETE {}{path})", self.url),
        }
    }

    /// Deletes a server-side snapshot, trying a few times (the server may be coming back).
    fn delete_snapshot(&self, path: &str) -> Result<()> {
        let mut last = String::new();
        for attempt in 0..5 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500 << attempt));
            }
            match self.req("DELETE", path).send() {
                Ok(r) if (200..300).contains(&r.status) || r.status == 404 => return Ok(()),
                Ok(r) => last = format!("HTTP {} {}", r.status, r.text()),
                Err(e) => last = e.0,
            }
        }
        bail!(
            "Qdrant at {}: deleting the server-side snapshot {path}: {last}",
            self.url
        )
    }

    /// Uploads a snapshot item into collection `c` (created or replaced).
    pub fn upload(&self, c: &str, item: &str) -> Result<()> {
        let sent = self
            .req(
                "POST",
                &format!(
                    "/collections/{}/snapshots/upload?priority=snapshot&wait=true",
                    path_part(c)
                ),
            )
            .timeout(BULK)
            .upload_item(item, Some("snapshot"));
        self.answer(sent, &format!("uploading the snapshot of {c}"))?;
        Ok(())
    }

    /// Recovers collection `c` from a snapshot file the server reads at `location`.
    pub fn recover(&self, c: &str, location: &str) -> Result<()> {
        self.call(
            self.req(
                "PUT",
                &format!("/collections/{}/snapshots/recover?wait=true", path_part(c)),
            )
            .timeout(BULK)
            .json(&json!({ "location": location, "priority": "snapshot" })),
            &format!("recovering {c} from {location}"),
        )?;
        Ok(())
    }
}
