//! Telling the outside: webhooks (`[[serve.webhooks]]`: the job as JSON, signed with
//! HMAC-SHA256 of the body in `X-Coffer-Signature: sha256=<hex>`, tried three times) and
//! healthchecks-style pings of a schedule's `ping_url` (`/start`, success, `/fail` or
//! `/<exit code>`). Both run on threads of their own: an unreachable monitor is a warning in the
//! job's log, never a failed job.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::jobs::Status;
use super::Daemon;

/// HMAC-SHA256 of `body` with `secret`, as hex.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// `event`: `start`, `success`, `failure` or `rollback`.
pub fn job_event(d: &Arc<Daemon>, st: &Status, event: &'static str) {
    let hooks: Vec<_> = d
        .config
        .serve
        .webhooks
        .iter()
        .filter(|w| w.events.is_empty() || w.events.iter().any(|e| e == event))
        .cloned()
        .collect();
    let ping = st.args["ping_url"].as_str().map(|u| {
        let u = u.trim_end_matches('/');
        match (event, st.exit_code) {
            ("start", _) => format!("{u}/start"),
            ("success", _) => u.to_string(),
            (_, Some(code)) if code != 0 => format!("{u}/{code}"),
            _ => format!("{u}/fail"),
        }
    });
    if hooks.is_empty() && ping.is_none() {
        return;
    }
    let job_id = st.id.clone();
    let body = serde_json::to_vec(&serde_json::json!({
        "event": event,
        "job": st,
        "host": d.host.clone().unwrap_or_else(coffer_repo::hostname),
    }))
    .expect("serializes");
    let d = d.clone();
    std::thread::spawn(move || {
        let agent = agent();
        let warn = |what: String| {
            if let Some(j) = d.jobs.get(&job_id) {
                j.line(&format!(
                    "{} coffer: warning: {what}",
                    chrono::Utc::now().format("%H:%M:%S")
                ));
            }
        };
        if let Some(url) = ping {
            if let Err(e) = agent.get(&url).call() {
                warn(format!("ping {url}: {e} (the job itself is not affected)"));
            }
        }
        for h in hooks {
            let secret = h
                .secret_file
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|s| s.lines().next().unwrap_or("").trim().to_string());
            let mut last = String::new();
            let mut delivered = false;
            for attempt in 0..3 {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_secs(1 << attempt));
                }
                let mut req = agent
                    .post(&h.url)
                    .header("Content-Type", "application/json")
                    .header("X-Coffer-Event", event);
                if let Some(s) = &secret {
                    req = req.header(
                        "X-Coffer-Signature",
                        format!("sha256={}", sign(s.as_bytes(), &body)),
                    );
                }
                match req.send(&body[..]) {
                    Ok(r) if r.status().is_success() => {
                        delivered = true;
                        break;
                    }
                    Ok(r) => last = format!("HTTP {}", r.status()),
                    Err(e) => last = e.to_string(),
                }
            }
            if !delivered {
                warn(format!(
                    "webhook {} ({event}) not delivered after 3 tries: {last}",
                    h.url
                ));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            super::sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
