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

    /// Snapshots collection `c` into `item`, checked against the SHA-256 Qdrant gives; the
    /// server's snapshot is deleted afterwards even when the download fails (but only while it
    /// is still this capture's: Qdrant names snapshots by the second, so a second capture of the
    /// same collection within it replaces the file under the same name). Returns the point
    /// counts seen just before and just after.
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
        let checksum = created["checksum"].as_str().map(str::to_ascii_lowercase);
        let path = format!(
            "/collections/{}/snapshots/{}",
            path_part(c),
            path_part(&name)
        );
        let downloaded = self
            .req("GET", &path)
            .timeout(BULK)
            .send_to_item(item)
            .and_then(|r| r.check(&format!("downloading snapshot {name} of {c}")))
            .and_then(|r| {
                let got = r
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("x-coffer-sha256"))
                    .map(|(_, v)| v.to_ascii_lowercase());
                match (&checksum, got) {
                    (Some(want), Some(got)) if *want != got => bail!(
                        "snapshot {name} of {c} does not match the SHA-256 Qdrant gave for it ({want}, downloaded {got}): another capture of {c} within the same second may have replaced it (Qdrant names snapshots by the second); run the backup again"
                    ),
                    _ => Ok(()),
                }
            });
        let after = self.points(c);
        let deleted = match self.still_ours(c, &name, checksum.as_deref()) {
            true => self.delete_snapshot(&path),
            false => {
                host::warn(format!("Qdrant snapshot {name} of {c} was replaced by another capture in the same second: left for that capture to delete"));
                Ok(())
            }
        };
        match (downloaded, deleted) {
            (Ok(()), Ok(())) => Ok((before, after?)),
            (Ok(()), Err(e)) => bail!("{e}: delete it by hand (DELETE {}{path})", self.url),
            (Err(e), Ok(())) => bail!("Qdrant collection {c}: {e} (the server-side snapshot {name} was deleted)"),
            (Err(e), Err(d)) => bail!("Qdrant collection {c}: {e}; and the server-side snapshot could not be deleted either: {d}: delete it by hand (DELETE {}{path})", self.url),
        }
    }

    /// Snapshot names of collection `c` with their checksums; none when it has none (or is
    /// gone).
    fn snapshots(&self, c: &str) -> Result<Vec<(String, Option<String>)>> {
        let r = self.req(
            "GET",
            &format!("/collections/{}/snapshots", path_part(c)),
        );
        let resp = r.send();
        if matches!(&resp, Ok(r) if r.status == 404) {
            return Ok(vec![]);
        }
        let list = self.answer(resp, &format!("listing the snapshots of {c}"))?;
        Ok(list
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| {
                        Some((
                            s["name"].as_str()?.to_string(),
                            s["checksum"].as_str().map(str::to_ascii_lowercase),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Whether snapshot `name` of `c` still has the checksum this capture was given (unknown
    /// checksums count as ours, as does a listing that fails: deleting is then the safe side
    /// for the disk, and a clash is caught by the checksum check of the other capture).
    fn still_ours(&self, c: &str, name: &str, checksum: Option<&str>) -> bool {
        let Some(want) = checksum else { return true };
        match self.snapshots(c) {
            Ok(list) => list
                .iter()
                .find(|(n, _)| n == name)
                .is_none_or(|(_, sum)| sum.as_deref().is_none_or(|s| s == want)),
            Err(_) => true,
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

    /// Uploads a snapshot item into collection `c` (created or replaced). Qdrant keeps an
    /// uploaded file as a snapshot of the collection (a full copy, surviving even a delete of the
    /// collection): the ones this upload added are deleted afterwards, whether it worked or not.
    pub fn upload(&self, c: &str, item: &str) -> Result<()> {
        let before: Vec<String> = self.snapshots(c)?.into_iter().map(|(n, _)| n).collect();
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
        let result = self.answer(sent, &format!("uploading the snapshot of {c}"));
        let mut left = vec![];
        match self.snapshots(c) {
            Ok(after) => {
                for (name, _) in after.iter().filter(|(n, _)| !before.contains(n)) {
                    let path = format!(
                        "/collections/{}/snapshots/{}",
                        path_part(c),
                        path_part(name)
                    );
                    if let Err(e) = self.delete_snapshot(&path) {
                        left.push(format!("{e}"));
                    }
                }
            }
            Err(e) => left.push(format!("{e}")),
        }
        for l in &left {
            host::warn(format!("the copy Qdrant keeps of the uploaded snapshot of {c} could not be removed: {l}"));
        }
        result.map(|_| ())
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
