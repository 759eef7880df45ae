//! Jobs: one operation of the daemon (a backup, forget + prune, a drill, a check, a prune, a
//! guarded upgrade), with its state, its log (in memory for the API and streamed, and in a file
//! that outlives the daemon) and its result. Never two jobs of one app at once: a job waits for
//! its app (or, for `check` and `prune`, the repository) to be free; the API refuses a second
//! one while one runs or waits.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use serde::Serialize;

use coffer::ops::Events;
use coffer_repo::archiver::Counters;
use coffer_runtime::LogLevel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Running,
    Succeeded,
    Failed,
    RolledBack,
    Cancelled,
}

impl State {
    pub fn done(self) -> bool {
        !matches!(self, State::Queued | State::Running)
    }
}

pub const KINDS: [&str; 6] = ["backup", "forget", "drill", "check", "prune", "upgrade"];

/// What a job is and how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub id: String,
    pub kind: String,
    pub app: Option<String>,
    pub args: serde_json::Value,
    /// `api`, `schedule`, `missed` (a run missed while the daemon was down), `updater`.
    pub trigger: String,
    pub state: State,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub exit_code: Option<i32>,
    pub snapshot: Option<String>,
    pub error: Option<String>,
    pub result: serde_json::Value,
    pub logfile: String,
}

impl Status {
    /// What the job holds while it runs: its app, or the whole repository (`check`, `prune`).
    pub fn key(&self) -> &str {
        key_of(self.app.as_deref())
    }
}

/// The key of a job for `app` (none: the repository).
pub fn key_of(app: Option<&str>) -> &str {
    app.unwrap_or("repository")
}

pub struct Job {
    pub status: Mutex<Status>,
    lines: Mutex<Vec<String>>,
    /// Bumped on every new line and when the job ends: what live logs wait on.
    pub changed: tokio::sync::watch::Sender<u64>,
    pub counters: Arc<Counters>,
    /// Asked to stop (cancel or shutdown).
    pub cancel: std::sync::atomic::AtomicBool,
    file: Mutex<Option<std::fs::File>>,
}

impl Job {
    pub fn id(&self) -> String {
        self.status.lock().unwrap().id.clone()
    }

    pub fn snapshot(&self) -> Status {
        self.status.lock().unwrap().clone()
    }

    /// Appends a line to the log (memory and file) and wakes live readers.
    pub fn line(&self, text: &str) {
        for l in text.lines() {
            self.lines.lock().unwrap().push(l.to_string());
            if let Some(f) = self.file.lock().unwrap().as_mut() {
                let _ = writeln!(f, "{l}");
            }
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// The log from line `from` on.
    pub fn lines_from(&self, from: usize) -> Vec<String> {
        let l = self.lines.lock().unwrap();
        l.get(from..).map(<[String]>::to_vec).unwrap_or_default()
    }

    fn key(&self) -> String {
        self.status.lock().unwrap().key().to_string()
    }
}

/// The job's log as an [`Events`] sink: timestamped lines.
pub struct JobEvents(pub Arc<Job>);

impl Events for JobEvents {
    fn log(&self, level: LogLevel, source: &str, message: &str) {
        let level = match level {
            LogLevel::Debug => return,
            LogLevel::Info => "",
            LogLevel::Warn => "warning: ",
            LogLevel::Error => "error: ",
        };
        let at = chrono::Utc::now().format("%H:%M:%S");
        self.0.line(&format!("{at} {source}: {level}{message}"));
    }

    fn begin(&self, phase: &'static str, _counters: Arc<Counters>) {
        self.log(LogLevel::Info, "coffer", &format!("{phase} begins"));
    }
}

/// Every job of this daemon, and which apps are busy.
pub struct Jobs {
    list: Mutex<Vec<Arc<Job>>>,
    busy: Mutex<HashSet<String>>,
    freed: Condvar,
    seq: AtomicU64,
    pub dir: PathBuf,
}

/// Refused: that app already has a job running or waiting.
pub struct Busy(pub Box<Status>);

impl Jobs {
    pub fn new(dir: PathBuf) -> Jobs {
        Jobs {
            list: Mutex::new(vec![]),
            busy: Mutex::new(HashSet::new()),
            freed: Condvar::new(),
            seq: AtomicU64::new(0),
            dir,
        }
    }

    /// A new job, queued; `refuse_busy` refuses it while its app has a job not done.
    pub fn create(
        &self,
        kind: &str,
        app: Option<String>,
        args: serde_json::Value,
        trigger: &str,
        refuse_busy: bool,
    ) -> Result<Arc<Job>, Busy> {
        let key = key_of(app.as_deref());
        let mut list = self.list.lock().unwrap();
        if refuse_busy {
            if let Some(j) = list.iter().find(|j| {
                let s = j.status.lock().unwrap();
                !s.state.done() && s.key() == key
            }) {
                return Err(Busy(Box::new(j.snapshot())));
            }
        }
        let now = chrono::Utc::now();
        // 8-20 digits, as SsalgTen's updater names its jobs: time, then a sequence number.
        let id = format!(
            "{}{:04}",
            now.format("%Y%m%d%H%M%S"),
            self.seq.fetch_add(1, Ordering::Relaxed) % 10_000
        );
        let _ = std::fs::create_dir_all(&self.dir);
        let logfile = self.dir.join(format!("{id}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&logfile)
            .ok();
        let job = Arc::new(Job {
            status: Mutex::new(Status {
                id,
                kind: kind.into(),
                app,
                args,
                trigger: trigger.into(),
                state: State::Queued,
                created: now.to_rfc3339(),
                started: None,
                finished: None,
                exit_code: None,
                snapshot: None,
                error: None,
                result: serde_json::Value::Null,
                logfile: logfile.display().to_string(),
            }),
            lines: Mutex::new(vec![]),
            changed: tokio::sync::watch::channel(0).0,
            counters: Arc::new(Counters::default()),
            cancel: Default::default(),
            file: Mutex::new(file),
        });
        list.push(job.clone());
        Ok(job)
    }

    pub fn all(&self) -> Vec<Arc<Job>> {
        self.list.lock().unwrap().clone()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.list
            .lock()
            .unwrap()
            .iter()
            .find(|j| j.status.lock().unwrap().id == id)
            .cloned()
    }

    /// Waits until the job's app is free (or the job is cancelled first: false), then holds it.
    pub fn acquire(&self, job: &Job) -> bool {
        let key = job.key();
        let mut busy = self.busy.lock().unwrap();
        loop {
            if job.cancel.load(Ordering::Relaxed) {
                return false;
            }
            if !busy.contains(&key) {
                busy.insert(key);
                return true;
            }
            busy = self
                .freed
                .wait_timeout(busy, std::time::Duration::from_millis(500))
                .unwrap()
                .0;
        }
    }

    pub fn release(&self, job: &Job) {
        self.busy.lock().unwrap().remove(&job.key());
        self.freed.notify_all();
    }

    pub fn running(&self) -> Vec<Arc<Job>> {
        self.all()
            .into_iter()
            .filter(|j| !j.status.lock().unwrap().state.done())
            .collect()
    }
}
