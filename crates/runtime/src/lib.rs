//! coffer-runtime: plugins, sandboxed WebAssembly components that know one application each.
//!
//! The host is the data plane, the plugin the control plane. A plugin is loaded once per process
//! (compiled components are cached on disk), and each call gets a fresh store: the app folder
//! readable at `/app`, no environment, no network, a memory limit and a wall-clock limit. What the
//! plugin asks the host to do goes through [`caps`], which checks it against the app's grants.

mod bindings;
pub mod caps;
mod process;
mod runtime;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use bindings::{wit, AppPre};
pub use caps::{Caps, Grants, LogLevel, LogSink, Source};
use coffer_repo::id::SnapshotId;
use coffer_repo::snapshot::Snapshot;
pub use runtime::Runtime;
use runtime::State;

/// Plugin failures, each saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin runtime: {0}")]
    Runtime(String),
    #[error("not a usable coffer plugin: {0}")]
    Invalid(String),
    #[error("no plugin named '{0}': built-in plugins are {1}; a third-party plugin is a path to its .wasm")]
    Unknown(String, String),
    #[error("{path} has BLAKE3 {found}, but coffer.toml pins {pinned}: if you upgraded the plugin on purpose, put the new hash in `blake3`")]
    PinMismatch {
        path: String,
        found: String,
        pinned: String,
    },
    #[error(
        "a plugin given by path must be pinned: add blake3 = \"{0}\" to its app in coffer.toml"
    )]
    Unpinned(String),
    #[error("plugin {plugin}: {call} ran longer than its time limit of {secs} s (time_limit_secs in coffer.toml) and was stopped")]
    Timeout {
        plugin: String,
        call: &'static str,
        secs: u64,
    },
    #[error("plugin {plugin}: {call} exceeded its memory limit of {mib} MiB (memory_limit_mib in coffer.toml) and was stopped")]
    OutOfMemory {
        plugin: String,
        call: &'static str,
        mib: u64,
    },
    #[error("plugin {plugin}: {call} crashed: {message}")]
    Trap {
        plugin: String,
        call: &'static str,
        message: String,
    },
    #[error("plugin {plugin}: {call} failed: {message}")]
    Failed {
        plugin: String,
        call: &'static str,
        message: String,
    },
}

/// Where a plugin's wasm came from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Builtin,
    File(String),
    Repository,
}

/// A loaded plugin, ready for calls.
pub struct Plugin {
    pre: AppPre<State>,
    runtime: Arc<Runtime>,
    pub wasm: Arc<Vec<u8>>,
    pub blake3: String,
    pub origin: Origin,
    pub info: Info,
}

/// What `describe` said, in host types.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub name: String,
    pub version: String,
    pub description: String,
    pub settings: Vec<SettingInfo>,
    /// (kind, value): `run`/`http`/`s3` and a program, origin or `setting:NAME`; `compose` and
    /// `PROJECT` or `PROJECT/SERVICE` (exec), either possibly `setting:NAME`.
    pub capabilities: Vec<(String, String)>,
    pub items: Vec<String>,
    /// The WIT package the plugin was built against.
    pub wit: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SettingInfo {
    pub name: String,
    pub description: String,
    pub required: bool,
    pub default: Option<String>,
}

/// Limits of one call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_mib: u64,
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 256,
            time: Duration::from_secs(3600),
        }
    }
}

impl Plugin {
    /// Compiles (or loads from the cache) and describes a plugin.
    pub fn load(
        wasm: Vec<u8>,
        origin: Origin,
        cache_dir: Option<&Path>,
    ) -> Result<Plugin, PluginError> {
        let runtime = Runtime::get(cache_dir)?;
        let (pre, blake3) = runtime.load(&wasm)?;
        let mut p = Plugin {
            pre,
            runtime,
            wasm: Arc::new(wasm),
            blake3,
            origin,
            info: Info {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                settings: vec![],
                capabilities: vec![],
                items: vec![],
                wit: String::new(),
            },
        };
        p.info = p.describe()?;
        Ok(p)
    }

    fn describe(&self) -> Result<Info, PluginError> {
        // describe gets no files at all: an empty folder stands in for the app's.
        let empty = tempfile::tempdir().map_err(|e| PluginError::Runtime(e.to_string()))?;
        let caps = Caps::new(
            "?",
            empty.path(),
            Default::default(),
            vec![],
            Arc::new(|_, _| {}),
        )
        .map_err(PluginError::Runtime)?;
        let limits = Limits {
            memory_mib: 64,
            time: Duration::from_secs(10),
        };
        let (i, _) = self.call("describe", caps, limits, |app, store| {
            app.call_describe(store)
        })?;
        Ok(Info {
            name: i.name,
            version: i.version,
            description: i.description,
            settings: i
                .settings
                .into_iter()
                .map(|s| SettingInfo {
                    name: s.name,
                    description: s.description,
                    required: s.required,
                    default: s.default_value,
                })
                .collect(),
            capabilities: i
                .capabilities
                .into_iter()
                .map(|c| match c {
                    // WIT 0.1.2 declares Compose projects as `run("compose:…")`.
                    wit::Capability::Run(v) if v.starts_with("compose:") => {
                        ("compose".into(), v["compose:".len()..].to_string())
                    }
                    wit::Capability::Run(v) => ("run".into(), v),
                    wit::Capability::Http(v) => ("http".into(), v),
                    wit::Capability::S3(v) => ("s3".into(), v),
                })
                .collect(),
            items: i.items,
            wit: wit_version(&self.wasm).unwrap_or_else(|| "unknown".into()),
        })
    }

    /// Runs one export in a fresh store; returns its result and the capabilities (with what the
    /// call left in them: the capture session, staged files).
    fn call<T>(
        &self,
        call: &'static str,
        caps: Caps,
        limits: Limits,
        f: impl FnOnce(&bindings::App, &mut wasmtime::Store<State>) -> wasmtime::Result<T>,
    ) -> Result<(T, Caps), PluginError> {
        let name = if self.info.name.is_empty() {
            "(loading)".to_string()
        } else {
            self.info.name.clone()
        };
        let mut store = self.runtime.store(caps, limits.memory_mib, limits.time)?;
        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|app| f(&app, &mut store));
        let caps = store.into_data().caps;
        match result {
            Ok(v) => Ok((v, caps)),
            Err(e) => {
                let trap = e.downcast_ref::<wasmtime::Trap>().copied();
                let text = format!("{e:#}");
                Err(match trap {
                    Some(wasmtime::Trap::Interrupt) => PluginError::Timeout {
                        plugin: name,
                        call,
                        secs: limits.time.as_secs().max(1),
                    },
                    _ if text.contains("forcing trap when growing memory")
                        || text.contains("memory") && text.contains("limit") =>
                    {
                        PluginError::OutOfMemory {
                            plugin: name,
                            call,
                            mib: limits.memory_mib,
                        }
                    }
                    _ => PluginError::Trap {
                        plugin: name,
                        call,
                        message: text,
                    },
                })
            }
        }
    }

    /// A failure of `call` as the plugin's, with a hint where the sandbox caused it.
    pub fn failed(&self, call: &'static str, mut message: String) -> PluginError {
        // WASI error numbers for a path the sandbox does not have, or may not write.
        if ["(os error 44)", "(os error 2)", "(os error 63)"]
            .iter()
            .any(|e| message.contains(e))
        {
            message.push_str(" (a plugin sees only its app folder, read-only, at /app)");
        }
        PluginError::Failed {
            plugin: self.info.name.clone(),
            call,
            message,
        }
    }

    /// Settings for the plugin: the given ones, with declared defaults filled in; missing
    /// required ones are an error before the plugin runs.
    pub fn settings(
        &self,
        given: Vec<(String, String)>,
    ) -> Result<Vec<(String, String)>, PluginError> {
        let mut s = given;
        for spec in &self.info.settings {
            if s.iter().any(|(k, _)| *k == spec.name) {
                continue;
            }
            match &spec.default {
                Some(d) => s.push((spec.name.clone(), d.clone())),
                None if spec.required => {
                    return Err(self.failed(
                        "settings",
                        format!(
                            "setting `{}` is required ({}): add it under [apps.NAME.settings]",
                            spec.name, spec.description
                        ),
                    ))
                }
                None => {}
            }
        }
        Ok(s)
    }

    pub fn capture(
        &self,
        caps: Caps,
        limits: Limits,
    ) -> Result<(serde_json::Value, Caps), PluginError> {
        let kv = kv(&caps.settings);
        let (r, caps) = self.call("capture", caps, limits, |app, store| {
            app.call_capture(store, &kv)
        })?;
        let meta = r.map_err(|m| self.failed("capture", m))?;
        let value = serde_json::from_str(&meta).map_err(|e| {
            self.failed(
                "capture",
                format!("returned metadata that is not JSON: {e}"),
            )
        })?;
        Ok((value, caps))
    }

    pub fn restore(
        &self,
        caps: Caps,
        limits: Limits,
        snapshot: (&SnapshotId, &Snapshot),
        only: &[String],
    ) -> Result<Caps, PluginError> {
        let snapshot = snapshot_info(snapshot.0, snapshot.1);
        let kv = kv(&caps.settings);
        let (r, caps) = self.call("restore", caps, limits, |app, store| {
            app.call_restore(store, &kv, &snapshot, only)
        })?;
        r.map_err(|m| self.failed("restore", m))?;
        Ok(caps)
    }

    pub fn verify(
        &self,
        caps: Caps,
        limits: Limits,
        snapshot: Option<(&SnapshotId, &Snapshot)>,
    ) -> Result<(Vec<Check>, Caps), PluginError> {
        let snapshot = snapshot.map(|(id, s)| snapshot_info(id, s));
        let kv = kv(&caps.settings);
        let (r, caps) = self.call("verify", caps, limits, |app, store| {
            app.call_verify(store, &kv, snapshot.as_ref())
        })?;
        Ok((
            r.map_err(|m| self.failed("verify", m))?
                .into_iter()
                .map(Check::from)
                .collect(),
            caps,
        ))
    }

    /// The app's own upgrade step to `to` (a version or image tag the plugin understands).
    pub fn upgrade(&self, caps: Caps, limits: Limits, to: &str) -> Result<(), PluginError> {
        let kv = kv(&caps.settings);
        let (r, _) = self.call("upgrade", caps, limits, |app, store| {
            app.call_upgrade(store, &kv, to)
        })?;
        r.map_err(|m| self.failed("upgrade", m))
    }

    pub fn health(&self, caps: Caps, limits: Limits) -> Result<Vec<Check>, PluginError> {
        let kv = kv(&caps.settings);
        let (r, _) = self.call("health", caps, limits, |app, store| {
            app.call_health(store, &kv)
        })?;
        Ok(r.map_err(|m| self.failed("health", m))?
            .into_iter()
            .map(Check::from)
            .collect())
    }
}

/// A verify or health check result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl From<wit::Check> for Check {
    fn from(c: wit::Check) -> Self {
        Check {
            name: c.name,
            ok: c.ok,
            detail: c.detail,
        }
    }
}

/// What a plugin is told of the snapshot it restores or verifies.
fn snapshot_info(id: &SnapshotId, snap: &Snapshot) -> wit::SnapshotInfo {
    wit::SnapshotInfo {
        id: id.to_hex(),
        time: snap.time.to_rfc3339(),
        hostname: snap.hostname.clone(),
        metadata: snap
            .metadata
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_else(|| "{}".into()),
        items: snap.items.clone(),
    }
}

fn kv(pairs: &[(String, String)]) -> Vec<wit::KeyValue> {
    pairs
        .iter()
        .map(|(k, v)| wit::KeyValue {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

/// The `coffer:plugin` version a component imports, read from its import names.
fn wit_version(wasm: &[u8]) -> Option<String> {
    let needle = b"coffer:plugin/host@";
    let at = wasm.windows(needle.len()).position(|w| w == needle)? + needle.len();
    let v: Vec<u8> = wasm[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .copied()
        .collect();
    String::from_utf8(v).ok()
}
