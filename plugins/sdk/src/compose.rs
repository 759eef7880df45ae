//! Docker Compose projects, through the host (WIT 0.1.2). A plugin never runs `docker`: it
//! names an operation on a project the user granted (`compose = { PROJECT = [SERVICES] }` under
//! `[apps.NAME.grants]`) and the host runs Compose, with the project's folder as project
//! directory and its name as project name. Exec works only in the services the grant lists.
//!
//! ```ignore
//! let app = Project::new("cskefu", "");            // the app folder is the project folder
//! app.down(Duration::from_secs(30))?;
//! host::capture_path("deployment", "")?;
//! app.up(&[], Duration::from_secs(300))?;          // waits until running (and healthy)
//! let out = app.exec("mysql", ["mysqladmin", "ping"]).env("MYSQL_PWD", pw).run()?;
//! ```

use std::time::Duration;

use crate::__private::bindings::coffer::plugin::host as h;
use crate::__private::bindings::coffer::plugin::types as wit;
use crate::host::{out_of, Output, Process};
use crate::Result;

/// A service as the engine sees it: state, health, and the image its container runs.
pub use h::ComposeService as Service;

fn ms(t: Duration) -> u32 {
    t.as_millis().min(u32::MAX as u128) as u32
}

/// A Compose project: its name (granted) and its folder under the app folder (`""`: the app
/// folder itself).
#[derive(Debug, Clone)]
pub struct Project {
    p: h::ComposeProject,
}

impl Project {
    pub fn new(name: &str, dir: &str) -> Self {
        Project { p: h::ComposeProject { name: name.into(), dir: dir.into() } }
    }

    pub fn name(&self) -> &str {
        &self.p.name
    }

    /// Every service with its container's state, health and image.
    pub fn ps(&self) -> Result<Vec<Service>> {
        Ok(h::compose_ps(&self.p)?)
    }

    /// Stops services (all when empty), keeping their containers; `grace` before a kill.
    pub fn stop(&self, services: &[&str], grace: Duration) -> Result<()> {
        let s: Vec<String> = services.iter().map(|s| s.to_string()).collect();
        Ok(h::compose_stop(&self.p, &s, ms(grace))?)
    }

    /// `down`: containers and networks removed, volumes kept.
    pub fn down(&self, grace: Duration) -> Result<()> {
        Ok(h::compose_down(&self.p, ms(grace))?)
    }

    /// `up -d` (all services when empty), waiting up to `wait` until each runs and is healthy
    /// where it has a health check.
    pub fn up(&self, services: &[&str], wait: Duration) -> Result<Vec<Service>> {
        let s: Vec<String> = services.iter().map(|s| s.to_string()).collect();
        Ok(h::compose_up(&self.p, &s, ms(wait))?)
    }

    /// A command to run in `service`'s running container (no TTY).
    pub fn exec<S: Into<String>>(&self, service: &str, args: impl IntoIterator<Item = S>) -> Exec {
        Exec {
            cmd: h::ComposeCommand {
                project: self.p.clone(),
                service: service.into(),
                args: args.into_iter().map(Into::into).collect(),
                env: vec![],
                timeout_ms: 0,
            },
        }
    }

    /// Captures the project's named volume (its key in the compose file) as a folder item.
    pub fn capture_volume(&self, volume: &str, item: &str) -> Result<u64> {
        Ok(h::compose_capture_volume(&self.p, volume, item)?)
    }

    /// Puts a captured volume back (created when missing); no running container may use it.
    pub fn restore_volume(&self, volume: &str, item: &str) -> Result<()> {
        Ok(h::compose_restore_volume(&self.p, volume, item)?)
    }
}

/// A command in a service's container; see [`Project::exec`].
#[derive(Debug, Clone)]
pub struct Exec {
    cmd: h::ComposeCommand,
}

impl Exec {
    /// Set in the container for this command only, never on a command line.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.cmd.env.push(wit::KeyValue { key: key.into(), value: value.into() });
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.cmd.timeout_ms = ms(t);
        self
    }

    pub fn run(&self) -> Result<Output> {
        Ok(h::compose_exec(&self.cmd).map(out_of)?)
    }

    /// Runs with stdout streamed into the file `item` (mysqldump, pg_dump).
    pub fn run_to_item(&self, item: &str) -> Result<Output> {
        Ok(h::compose_exec_to_item(&self.cmd, item).map(out_of)?)
    }

    /// Runs with the file `item` streamed into stdin (mysql, psql).
    pub fn run_from_item(&self, item: &str) -> Result<Output> {
        Ok(h::compose_exec_from_item(&self.cmd, item).map(out_of)?)
    }

    /// Starts the command to talk to, like [`crate::host::Command::spawn`].
    pub fn spawn(&self) -> Result<Process> {
        Ok(Process::from_wit(h::compose_spawn(&self.cmd)?))
    }
}

/// The value of `key` in an env file's text (Compose's `.env`): `KEY=VALUE` lines (comments and blank lines skipped, quotes removed).
pub fn env_value(text: &str, key: &str) -> Option<String> {
    text.lines().rev().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

/// `text` with `KEY=value` set (replacing the last such line, or appended).
pub fn with_env_value(text: &str, key: &str, value: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let at = lines.iter().rposition(|l| l.trim().split_once('=').is_some_and(|(k, _)| k.trim() == key));
    match at {
        Some(i) => lines[i] = format!("{key}={value}"),
        None => lines.push(format!("{key}={value}")),
    }
    lines.join("\n") + "\n"
}
