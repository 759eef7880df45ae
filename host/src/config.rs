//! `coffer.toml`: the repository and the apps, each with its plugin, settings and grants.
//!
//! ```toml
//! [repository]
//! location = "/var/backups/coffer"      # COFFER_REPOSITORY and --repo take precedence
//! password_file = "/etc/coffer/passphrase"
//!
//! [repository.s3]                       # for location = "s3://bucket/prefix"; AWS_* win
//! endpoint = "https://oss-cn-hangzhou.aliyuncs.com"
//! region = "cn-hangzhou"
//! uploads = 4                           # packs uploaded at once
//!
//! [apps.xianyu]
//! plugin = "xianyu"                     # built in; or a path to a .wasm with `blake3 = "…"`
//! dir = "/srv/xianyu"                   # the app's folder: all the plugin may touch
//! time_limit_secs = 3600                # per plugin call
//! memory_limit_mib = 256
//!
//! [apps.xianyu.settings]
//! stop_command = "systemctl stop xianyu"
//!
//! [apps.zhiyun.settings]                 # a secret stays out of this file:
//! db_password = { env = "ZHIYUN_PG_PASSWORD" }           # read from a variable, or
//! minio_secret_key = { file = "/etc/zhiyun/minio.key" }  # from a file (trailing newline cut)
//!
//! [apps.xianyu.grants]
//! programs = ["systemctl"]
//! http = ["http://127.0.0.1:8080"]
//! ```
//!
//! Relative paths are relative to the folder holding coffer.toml.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use coffer_runtime::Grants;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub repository: RepositoryConfig,
    #[serde(default)]
    pub apps: BTreeMap<String, AppConfig>,
    /// `coffer serve`: its listener, token, repository-wide schedules, updater and webhooks.
    #[serde(default)]
    pub serve: ServeConfig,
    /// Where the file was read from; relative paths resolve against its folder.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    pub location: Option<String>,
    pub password_file: Option<PathBuf>,
    pub identity_file: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    /// Settings of an `s3://` location; the `AWS_*` variables override them.
    #[serde(default)]
    pub s3: coffer_store::S3Config,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// A built-in plugin's name, or a path to a `.wasm` file.
    pub plugin: String,
    /// BLAKE3 (hex) the `.wasm` must have; required for a plugin given by path.
    pub blake3: Option<String>,
    /// BLAKE3s (hex) of further plugin builds an app restore may run when a snapshot stores one
    /// (an older build of the plugin that made old snapshots). Built-ins and `blake3` are
    /// always trusted.
    #[serde(default)]
    pub trusted_plugins: Vec<String>,
    pub dir: PathBuf,
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub grants: Grants,
    #[serde(default = "default_time_limit")]
    pub time_limit_secs: u64,
    #[serde(default = "default_memory_limit")]
    pub memory_limit_mib: u64,
    /// What `coffer forget` keeps of this app's snapshots when no --keep-* flag is given.
    #[serde(default)]
    pub retention: Option<coffer_repo::retention::Policy>,
    /// How `coffer upgrade` judges the app after its upgrade step.
    #[serde(default)]
    pub upgrade: UpgradePolicy,
    /// When `coffer serve` runs this app's jobs (`backup`, `forget`, `drill`).
    #[serde(default)]
    pub schedule: Vec<Schedule>,
}

/// `[serve]`: the daemon.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address and port of the HTTP API and page; loopback unless said otherwise.
    pub listen: String,
    /// The API token (its first line); every route but `/health` wants it.
    pub token_file: Option<PathBuf>,
    /// The time zone schedules use unless they name one (IANA name, e.g. "Asia/Shanghai").
    pub time_zone: String,
    /// Repository-wide schedules (`check`, `prune`).
    pub schedule: Vec<Schedule>,
    /// Answer SsalgTen's updater API on the same port, as guarded upgrades of one app.
    pub updater: Option<UpdaterConfig>,
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:8766".into(),
            token_file: None,
            time_zone: "UTC".into(),
            schedule: vec![],
            updater: None,
            webhooks: vec![],
        }
    }
}

/// One scheduled job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// `backup`, `forget` (the app's retention, then prune), `drill` (per app); `check`,
    /// `prune` (under `[serve]`).
    pub kind: String,
    /// Five-field cron expression, e.g. "30 2 * * *".
    pub cron: String,
    /// IANA time zone; default `[serve] time_zone`.
    pub time_zone: Option<String>,
    /// Start up to this many seconds late, at random (spreads hosts sharing a store).
    #[serde(default)]
    pub random_delay_secs: u64,
    /// Healthchecks-style monitor: `URL/start` when it starts, `URL` on success, `URL/fail` or
    /// `URL/<exit code>` on failure.
    pub ping_url: Option<String>,
    /// `check`: the share of packs to read, e.g. "10%".
    pub read_data_subset: Option<String>,
}

impl Schedule {
    /// Its time zone (its own, else `default`).
    pub fn zone(&self, default: &str) -> std::result::Result<chrono_tz::Tz, String> {
        let name = self.time_zone.as_deref().unwrap_or(default);
        name.parse().map_err(|_| {
            format!("time zone '{name}' is not an IANA time zone name (e.g. \"Asia/Shanghai\", \"UTC\")")
        })
    }

    pub fn cron(&self, default_tz: &str) -> std::result::Result<crate::cron::Cron, String> {
        crate::cron::Cron::parse(&self.cron, self.zone(default_tz)?)
    }

    fn check(&self, default_tz: &str, kinds: &[&str], at: &str) -> std::result::Result<(), String> {
        if !kinds.contains(&self.kind.as_str()) {
            return Err(format!(
                "{at}: kind '{}' is not one of {}",
                self.kind,
                kinds.join(", ")
            ));
        }
        self.cron(default_tz).map_err(|e| format!("{at}: {e}"))?;
        Ok(())
    }
}

/// `[serve.updater]`: SsalgTen's updater contract, served by coffer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdaterConfig {
    /// The app `POST /update` upgrades.
    pub app: String,
    /// The `X-Updater-Token` (its first line): SsalgTen's `UPDATER_TOKEN`.
    pub token_file: PathBuf,
    /// The version to upgrade to when the request names none (`{"version": "…"}`).
    pub to: Option<String>,
}

/// `[[serve.webhooks]]`: JSON posted on job events, signed with HMAC-SHA256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The signing secret (its first line); `X-Coffer-Signature: sha256=<hex>`.
    pub secret_file: Option<PathBuf>,
    /// Which of `start`, `success`, `failure`, `rollback`; default all.
    #[serde(default)]
    pub events: Vec<String>,
}

/// The analysis after an upgrade step (Argo Rollouts' analysis, Helm's `--atomic --timeout`):
/// the new version has `start_secs` to turn healthy once (failures before then do not count; 0:
/// no start period), then `checks` health checks `interval_secs` apart; more than
/// `failure_limit` failed ones fail the upgrade.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpgradePolicy {
    pub checks: u32,
    pub interval_secs: u64,
    pub failure_limit: u32,
    pub start_secs: u64,
}

impl Default for UpgradePolicy {
    fn default() -> Self {
        UpgradePolicy {
            checks: 5,
            interval_secs: 2,
            failure_limit: 0,
            start_secs: 120,
        }
    }
}

fn default_time_limit() -> u64 {
    3600
}

fn default_memory_limit() -> u64 {
    256
}

impl Config {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut c: Config = toml::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: {}", path.display(), e.to_string().trim())))?;
        c.path = Some(path.to_path_buf());
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let default_tz = c.serve.time_zone.clone();
        let bad = |e: String| Error::Invalid(format!("{}: {e}", path.display()));
        for s in &c.serve.schedule {
            s.check(&default_tz, &["check", "prune"], "[[serve.schedule]]")
                .map_err(bad)?;
        }
        for (name, app) in c.apps.iter() {
            for s in &app.schedule {
                s.check(
                    &default_tz,
                    &["backup", "forget", "drill"],
                    &format!("[[apps.{name}.schedule]]"),
                )
                .map_err(bad)?;
            }
        }
        for (name, app) in c.apps.iter_mut() {
            app.grants
                .check(name)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
            for v in app.settings.values_mut() {
                if let Some(toml::Value::String(f)) =
                    v.as_table_mut().and_then(|t| t.get_mut("file"))
                {
                    if Path::new(f.as_str()).is_relative() {
                        *f = base.join(&*f).display().to_string();
                    }
                }
            }
            if app.dir.is_relative() {
                app.dir = base.join(&app.dir);
            }
            if app.plugin.ends_with(".wasm") && Path::new(&app.plugin).is_relative() {
                app.plugin = base.join(&app.plugin).display().to_string();
            }
        }
        let updater_token = c.serve.updater.as_mut().map(|u| &mut u.token_file);
        let hook_secrets = c
            .serve
            .webhooks
            .iter_mut()
            .filter_map(|w| w.secret_file.as_mut());
        for f in [
            &mut c.repository.password_file,
            &mut c.repository.identity_file,
            &mut c.repository.cache_dir,
            &mut c.serve.token_file,
        ]
        .into_iter()
        .flatten()
        .chain(updater_token)
        .chain(hook_secrets)
        {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        if let Some(loc) = &mut c.repository.location {
            if !loc.contains("://") && Path::new(loc).is_relative() {
                *loc = base.join(&*loc).display().to_string();
            }
        }
        Ok(c)
    }

    /// The first of: `explicit`, `./coffer.toml`, `$XDG_CONFIG_HOME/coffer/coffer.toml`
    /// (`~/.config/...`). `None` when there is none (plain file backups need no config).
    pub fn discover(explicit: Option<&Path>) -> Result<Option<Config>> {
        if let Some(p) = explicit {
            return Config::load(p).map(Some);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        let xdg = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".config"));
        for p in [PathBuf::from("coffer.toml"), xdg.join("coffer/coffer.toml")] {
            if p.is_file() {
                return Config::load(&p).map(Some);
            }
        }
        Ok(None)
    }

    pub fn app(&self, name: &str) -> Result<&AppConfig> {
        self.apps.get(name).ok_or_else(|| {
            Error::Invalid(format!(
                "no app '{name}' in {}: add an [apps.{name}] section",
                self.path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "coffer.toml".into())
            ))
        })
    }
}

impl AppConfig {
    /// The limits of one plugin call for this app.
    pub fn limits(&self) -> coffer_runtime::Limits {
        coffer_runtime::Limits {
            memory_mib: self.memory_limit_mib,
            time: std::time::Duration::from_secs(self.time_limit_secs),
        }
    }

    /// Settings as text pairs, for the plugin; `{ env = "VAR" }` and `{ file = "PATH" }` are
    /// read now, so secrets need not sit in coffer.toml and the plugin never reads the host's
    /// environment or files outside its folder itself.
    pub fn settings_pairs(&self) -> Result<Vec<(String, String)>> {
        self.settings
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    toml::Value::Table(t) => secret(k, t)?,
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Array(a) => a
                        .iter()
                        .map(|x| {
                            x.as_str()
                                .map(String::from)
                                .unwrap_or_else(|| x.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                Ok((k.clone(), s))
            })
            .collect()
    }
}

/// A setting given as `{ env = "VAR" }` or `{ file = "PATH" }`.
fn secret(name: &str, t: &toml::Table) -> Result<String> {
    let bad = || {
        Error::Invalid(format!(
            "setting `{name}`: a table must be {{ env = \"VARIABLE\" }} or {{ file = \"PATH\" }}"
        ))
    };
    if t.len() != 1 {
        return Err(bad());
    }
    match t.iter().next().expect("one entry") {
        (k, toml::Value::String(var)) if k == "env" => std::env::var(var).map_err(|_| {
            Error::Invalid(format!(
                "setting `{name}` comes from the variable {var}, which is not set"
            ))
        }),
        (k, toml::Value::String(path)) if k == "file" => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Invalid(format!("setting `{name}` comes from {path}: {e}")))?;
            Ok(text.trim_end_matches(['\n', '\r']).to_string())
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_config_loads() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut n = 0;
        for e in std::fs::read_dir(&examples).unwrap() {
            let p = e.unwrap().path().join("coffer.toml");
            if p.is_file() {
                Config::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 3, "xianyu, zhiyun and cskefu have a coffer.toml");
    }

    #[test]
    fn a_raw_docker_or_shell_grant_is_refused_naming_the_compose_grant() {
        let dir = tempfile::tempdir().unwrap();
        for program in ["docker", "/usr/bin/docker-compose", "sh", "sudo"] {
            let p = dir.path().join("coffer.toml");
            std::fs::write(
                &p,
                format!("[apps.x]\nplugin = \"xianyu\"\ndir = \".\"\n[apps.x.grants]\nprograms = [\"{program}\"]\n"),
            )
            .unwrap();
            let err = Config::load(&p).unwrap_err().to_string();
            assert!(
                err.contains(program) && err.contains("[apps.x.grants]"),
                "{err}"
            );
            if program.contains("docker") {
                assert!(err.contains("compose = {"), "{err}");
            }
        }
    }

    /// coffer.toml is the one parser of untrusted text that lives in this crate (the fuzz
    /// targets in fuzz/ cover the repository's): 20 000 mutations of a full config (bytes
    /// flipped, cut, duplicated, spliced) each load or fail with the file named, never panic.
    #[test]
    fn mutated_configs_fail_cleanly() {
        let sample = br#"[repository]
location = "s3://bucket/prefix"
password_file = "pw"
[repository.s3]
endpoint = "http://127.0.0.1:3900"
uploads = 4
[apps.x]
plugin = "xianyu"
dir = "app"
time_limit_secs = 60
[apps.x.settings]
port = 8080
secret = { env = "X" }
tables = ["a", "b"]
[apps.x.grants]
programs = ["pg_dump"]
http = ["http://127.0.0.1:8080"]
[apps.x.retention]
keep_last = 7
"#;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("coffer.toml");
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut b = sample.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % b.len().max(1);
                match next() % 5 {
                    0 => b[at] = next() as u8,
                    1 => b.truncate(at),
                    2 => {
                        let ins = b"[]={}\"=.\n#'";
                        b.insert(at, ins[next() as usize % ins.len()]);
                    }
                    3 => {
                        let end = (at + (next() as usize % 40)).min(b.len());
                        let piece = b[at..end].to_vec();
                        b.splice(at..at, piece);
                    }
                    _ => {
                        let end = (at + (next() as usize % 40)).min(b.len());
                        b.drain(at..end);
                    }
                }
                if b.is_empty() {
                    break;
                }
            }
            std::fs::write(&p, &b).unwrap();
            if let Err(e) = Config::load(&p) {
                assert!(e.to_string().contains("coffer.toml"), "{e}");
            }
        }
    }

    #[test]
    fn parses_apps_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("coffer.toml");
        std::fs::write(
            &p,
            r#"
[repository]
location = "repo"
[apps.x]
plugin = "plugins/x.wasm"
blake3 = "00"
dir = "app"
[apps.x.settings]
port = 8080
tables = ["a", "b"]
[apps.x.grants]
programs = ["pg_dump"]
[apps.x.retention]
keep_last = 7
keep_within = "30d"
"#,
        )
        .unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(
            c.repository.location.as_deref(),
            Some(dir.path().join("repo").to_str().unwrap())
        );
        let x = c.app("x").unwrap();
        assert_eq!(x.dir, dir.path().join("app"));
        assert_eq!(
            x.plugin,
            dir.path().join("plugins/x.wasm").display().to_string()
        );
        let s = x.settings_pairs().unwrap();
        assert!(
            s.contains(&("port".into(), "8080".into()))
                && s.contains(&("tables".into(), "a,b".into()))
        );
        assert!(c.app("y").is_err());
        let r = x.retention.as_ref().unwrap();
        assert_eq!((r.keep_last, r.keep_within.as_deref()), (7, Some("30d")));
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        std::fs::write(
            &p,
            "[apps.x]\nplugin = 'x'\ndir = '.'\n[apps.x.settings]\na = { file = 'pw' }\nb = { env = 'COFFER_TEST_UNSET_VAR' }\nc = { env = 'PATH' }\n",
        )
        .unwrap();
        let x = Config::load(&p).unwrap().apps["x"].clone();
        let err = x.settings_pairs().unwrap_err().to_string();
        assert!(
            err.contains("COFFER_TEST_UNSET_VAR") && err.contains("not set"),
            "{err}"
        );
        let mut x = x;
        x.settings.remove("b");
        let s = x.settings_pairs().unwrap();
        assert!(
            s.contains(&("a".into(), "s3cret".into())),
            "file read, newline cut: {s:?}"
        );
        assert!(s.contains(&("c".into(), std::env::var("PATH").unwrap())));
        std::fs::write(&p, "[apps.x]\nplugin = 'x'\ndir = '.'\nbogus = 1\n").unwrap();
        assert!(
            Config::load(&p).is_err(),
            "unknown keys are errors, not silently ignored"
        );
    }
}
