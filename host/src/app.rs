//! App backups and restores: a plugin driving the archiver and restorer through the host's
//! capabilities.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::archiver::{BackupResult, Counters, Session, SnapshotInfo};
use crate::config::{AppConfig, Config};
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::plugin::bindings::wit;
use crate::plugin::{Caps, Check, Limits, LogSink, Origin, Plugin, PluginError, Source};
use crate::repo::snapshot::{PluginRecord, Snapshot};
use crate::repo::{ChunkReader, Repository};

impl From<PluginError> for Error {
    fn from(e: PluginError) -> Self {
        Error::Plugin(e)
    }
}

/// Loads the plugin an app in coffer.toml names.
pub fn load_plugin(app: &AppConfig, cache_dir: Option<&Path>) -> Result<Plugin> {
    let (wasm, origin) = crate::plugin::resolve_wasm(&app.plugin, app.blake3.as_deref())?;
    Ok(Plugin::load(wasm, origin, cache_dir)?)
}

/// Loads the plugin stored with a snapshot, checked against its recorded BLAKE3.
pub fn stored_plugin(
    repo: &Repository,
    index: &crate::repo::index::Index,
    snap: &Snapshot,
    cache_dir: Option<&Path>,
) -> Result<Plugin> {
    let rec = snap.plugin.as_ref().ok_or_else(|| {
        Error::Invalid(
            "this snapshot was not made by an app plugin: restore it with --target".into(),
        )
    })?;
    let reader = ChunkReader::new(repo, index);
    let mut wasm = Vec::with_capacity(rec.size as usize);
    for c in &rec.content {
        wasm.extend_from_slice(&reader.chunk(c)?);
    }
    if blake3::hash(&wasm).to_hex().as_str() != rec.blake3 {
        return Err(Error::corrupt(
            format!("plugin {} stored in the snapshot", rec.name),
            "does not match its recorded BLAKE3",
        ));
    }
    Ok(Plugin::load(wasm, Origin::Repository, cache_dir)?)
}

/// Grants the plugin asks for that the app's config does not give, as (kind, value).
pub fn missing_grants(plugin: &Plugin, caps: &Caps) -> Vec<(String, String)> {
    let mut missing: Vec<(String, String)> = plugin
        .info
        .capabilities
        .iter()
        .filter_map(|(kind, value)| caps.resolve_declared(kind, value))
        .filter(|(kind, value)| caps.allows(kind, value).is_err())
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

fn caps_for(
    name: &str,
    app: &AppConfig,
    dir: &Path,
    settings: Vec<(String, String)>,
    log: LogSink,
) -> Result<Caps> {
    Caps::new(name, dir, app.grants.clone(), settings, log).map_err(Error::Invalid)
}

/// How an app backup runs, besides which app.
pub struct BackupOptions {
    pub tags: Vec<String>,
    pub host: Option<String>,
    /// Files cache and compiled-plugin cache; `None` reads everything and compiles afresh.
    pub cache_dir: Option<PathBuf>,
    pub counters: Arc<Counters>,
    pub log: LogSink,
}

/// Backs up app `name` with its plugin; the snapshot stores the plugin's wasm.
pub fn backup(
    repo: &Arc<Repository>,
    config: &Config,
    name: &str,
    opts: BackupOptions,
) -> Result<(BackupResult, Plugin)> {
    let BackupOptions {
        tags,
        host,
        cache_dir,
        counters,
        log,
    } = opts;
    let cache_dir = cache_dir.as_deref();
    let app = config.app(name)?;
    let plugin = load_plugin(app, cache_dir)?;
    let settings = plugin.settings(app)?;
    let cache_path = cache_dir.map(|d| d.join(&repo.config.id).join(format!("app-{name}.json")));
    let mut session = Session::start(repo.clone(), cache_path, counters)?;
    let content = session.store_blob(&plugin.wasm)?;
    let mut caps = caps_for(name, app, &app.dir, settings, log)?;
    caps.session = Some(session);
    let (metadata, mut caps) = plugin.capture(caps, Limits::of(app))?;
    let session = caps.session.take().expect("capture keeps its session");
    let result = session.finish(SnapshotInfo {
        paths: vec![app.dir.display().to_string()],
        tags,
        host,
        app: Some(name.to_string()),
        plugin: Some(PluginRecord {
            name: plugin.info.name.clone(),
            version: plugin.info.version.clone(),
            blake3: plugin.blake3.clone(),
            size: plugin.wasm.len() as u64,
            content,
        }),
        metadata: Some(metadata),
    })?;
    drop(caps); // staged database copies go now, after the snapshot holds them
    Ok((result, plugin))
}

/// What an app restore did and found.
#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub app: String,
    pub dir: PathBuf,
    pub plugin: String,
    pub only: Vec<String>,
    pub verify: Vec<Check>,
    pub health: Vec<Check>,
}

impl RestoreReport {
    pub fn verified(&self) -> bool {
        self.verify.iter().all(|c| c.ok)
    }

    pub fn healthy(&self) -> bool {
        self.health.iter().all(|c| c.ok)
    }
}

pub fn snapshot_info(id: &SnapshotId, snap: &Snapshot) -> wit::SnapshotInfo {
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

/// Restores an app snapshot with the plugin stored in it, then runs its verify and health.
#[allow(clippy::too_many_arguments)]
pub fn restore(
    repo: &Arc<Repository>,
    config: &Config,
    id: &SnapshotId,
    snap: Snapshot,
    only: &[String],
    dir_override: Option<&Path>,
    cache_dir: Option<&Path>,
    log: LogSink,
) -> Result<RestoreReport> {
    let name = snap
        .app
        .clone()
        .ok_or_else(|| Error::Invalid("not an app snapshot: restore it with --target".into()))?;
    let app = config.app(&name)?;
    let dir = dir_override
        .map(Path::to_path_buf)
        .unwrap_or_else(|| app.dir.clone());
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let (index, _) = repo.load_index()?;
    let index = Arc::new(index);
    let plugin = stored_plugin(repo, &index, &snap, cache_dir)?;
    let settings = plugin.settings(app)?;
    let info = snapshot_info(id, &snap);
    let limits = Limits::of(app);
    let source = || Source {
        repo: repo.clone(),
        index: index.clone(),
        snapshot: snap.clone(),
    };

    let mut caps = caps_for(&name, app, &dir, settings.clone(), log.clone())?;
    caps.source = Some(source());
    plugin.restore(caps, limits, info.clone(), only)?;

    // After a partial restore, verify sees only the restored items: the parts left alone have
    // moved on since the snapshot and would fail a comparison with it.
    let mut info = info;
    if !only.is_empty() {
        info.items.retain(|i| {
            only.iter()
                .any(|o| i == o || i.starts_with(&format!("{o}/")))
        });
    }
    let mut caps = caps_for(&name, app, &dir, settings.clone(), log.clone())?;
    caps.source = Some(source());
    let (verify, _) = plugin.verify(caps, limits, Some(info))?;
    let health = plugin.health(caps_for(&name, app, &dir, settings, log)?, limits)?;
    Ok(RestoreReport {
        snapshot: id.to_hex(),
        app: name,
        dir,
        plugin: format!(
            "{} {} ({})",
            plugin.info.name,
            plugin.info.version,
            &plugin.blake3[..16]
        ),
        only: only.to_vec(),
        verify,
        health,
    })
}
