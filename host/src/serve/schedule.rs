//! Schedules: each `[[apps.X.schedule]]` and `[[serve.schedule]]` fires at its cron times in its
//! time zone, after a random delay of up to `random_delay_secs`. The last time each one fired
//! is kept on this host (`<cache>/<repository id>/schedules.json`), so a run missed while the
//! daemon was down runs once when it starts (anacron's rule), never once per missed slot. A
//! schedule seen for the first time has missed nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};

use coffer::config::Config;
use coffer::cron::Cron;

use super::Daemon;

pub struct Scheduled {
    pub app: Option<String>,
    pub kind: String,
    pub cron: Cron,
    pub random_delay: u64,
    pub ping_url: Option<String>,
    pub args: serde_json::Value,
    pub next: Mutex<Option<DateTime<Utc>>>,
}

impl Scheduled {
    /// Names it in the state file: what, for whom, when.
    fn key(&self) -> String {
        format!(
            "{}/{}/{} {}",
            super::jobs::key_of(self.app.as_deref()),
            self.kind,
            self.cron.text(),
            self.cron.tz
        )
    }
}

pub struct Schedules {
    pub list: Vec<Scheduled>,
    state: PathBuf,
    offset: chrono::Duration,
}

impl Schedules {
    pub fn new(config: &Config, dir: &Path, offset_secs: i64) -> Result<Schedules> {
        let tz = &config.serve.time_zone;
        let mut list = vec![];
        let mut add = |app: Option<&str>, s: &coffer::config::Schedule| -> Result<()> {
            let cron = s.cron(tz).map_err(|e| anyhow::anyhow!(e))?;
            let mut args = serde_json::json!({});
            if let Some(r) = &s.read_data_subset {
                args["read_data_subset"] = r.clone().into();
            }
            list.push(Scheduled {
                app: app.map(str::to_string),
                kind: s.kind.clone(),
                cron,
                random_delay: s.random_delay_secs,
                ping_url: s.ping_url.clone(),
                args,
                next: Mutex::new(None),
            });
            Ok(())
        };
        for s in &config.serve.schedule {
            add(None, s)?;
        }
        for (name, app) in &config.apps {
            for s in &app.schedule {
                add(Some(name), s)?;
            }
        }
        Ok(Schedules {
            list,
            state: dir.join("schedules.json"),
            offset: chrono::Duration::seconds(offset_secs),
        })
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// The daemon's clock for schedules.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }

    fn load(&self) -> BTreeMap<String, DateTime<Utc>> {
        std::fs::read(&self.state)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, state: &BTreeMap<String, DateTime<Utc>>) {
        if let Some(dir) = self.state.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = self.state.with_extension("tmp");
        if std::fs::write(&tmp, serde_json::to_vec_pretty(state).unwrap_or_default()).is_ok() {
            let _ = std::fs::rename(&tmp, &self.state);
        }
    }
}

/// The scheduler's loop, until shutdown.
pub fn run(d: &Arc<Daemon>) {
    let s = &d.schedules;
    let mut state = s.load();
    let now = s.now();
    for sch in &s.list {
        let key = sch.key();
        let last_slot = sch.cron.last_at_or_before(now);
        match (state.get(&key), last_slot) {
            (Some(ran), Some(slot)) if *ran < slot => {
                eprintln!(
                    "coffer: {key}: the run due at {slot} was missed (last at {ran}); running it once now"
                );
                fire(d, sch, "missed", 0);
                state.insert(key, slot);
            }
            (None, Some(slot)) => {
                state.insert(key, slot);
            }
            _ => {}
        }
        *sch.next.lock().unwrap() = sch.cron.next_after(now);
    }
    s.save(&state);
    while !d.shutdown.load(Ordering::SeqCst) {
        let now = s.now();
        let mut changed = false;
        for sch in &s.list {
            let due = {
                let mut next = sch.next.lock().unwrap();
                match *next {
                    Some(t) if t <= now => {
                        *next = sch.cron.next_after(now);
                        Some(t)
                    }
                    _ => None,
                }
            };
            if let Some(slot) = due {
                let delay = if sch.random_delay > 0 {
                    rand::random::<u64>() % (sch.random_delay + 1)
                } else {
                    0
                };
                fire(d, sch, "schedule", delay);
                state.insert(sch.key(), slot);
                changed = true;
            }
        }
        if changed {
            s.save(&state);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Queues the schedule's job after `delay` seconds; an app already busy makes it wait its turn.
fn fire(d: &Arc<Daemon>, sch: &Scheduled, trigger: &'static str, delay: u64) {
    let (d, app, kind, args) = (
        d.clone(),
        sch.app.clone(),
        sch.kind.clone(),
        sch.args.clone(),
    );
    let mut args = args;
    if let Some(p) = &sch.ping_url {
        args["ping_url"] = p.clone().into();
    }
    std::thread::spawn(move || {
        if delay > 0 {
            std::thread::sleep(Duration::from_secs(delay));
        }
        if d.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let _ = super::submit(&d, &kind, app, args, trigger, false);
    });
}
