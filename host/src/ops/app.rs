//! App backups and restores: "back up app X", "restore snapshot S of app X". A plugin drives
//! the archiver and restorer through the runtime's capabilities.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use coffer_repo::archiver::{BackupResult, Counters, Session, SnapshotInfo};
use coffer_repo::id::SnapshotId;
use coffer_repo::index::Index;
use coffer_repo::snapshot::{PluginRecord, Snapshot};
use coffer_repo::{ChunkReader, Repository};
use coffer_runtime::{Caps, Check, LogSink, Origin, Plugin, Source};

use super::events::{plugin_log, Events, Phase};
use crate::config::{AppConfig, Config};
use crate::error::{Error, Result};

/// Loads the plugin an app in coffer.toml names.
pub fn load_plugin(app: &AppConfig, cache_dir: Option<&Path>) -> Result<Plugin> {
    let (wasm, origin) = crate::plugins::resolve_wasm(&app.plugin, app.blake3.as_deref())?;
    Ok(Plugin::load(wasm, origin, cache_dir)?)
}

/// The plugin's settings for an app: coffer.toml's, with the plugin's defaults filled in.
fn settings(plugin: &Plugin, app: &AppConfig) -> Result<Vec<(String, String)>> {
    let given = app
        .settings_pairs()
        .map_err(|e| plugin.failed("settings", e.to_string()))?;
    Ok(plugin.settings(given)?)
}

/// Loads the plugin stored with a snapshot, checked against its recorded BLAKE3.
pub fn stored_plugin(
    repo: &Repository,
    index: &Index,
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
        return Err(coffer_repo::Error::corrupt(
            format!("plugin {} stored in the snapshot", rec.name),
            "does not match its recorded BLAKE3",
        )
        .into());
    }
    Ok(Plugin::load(wasm, Origin::Repository, cache_dir)?)
}

/// Grants the plugin asks for that app `name`'s config does not give, as (kind, value).
pub fn missing_grants(
    plugin: &Plugin,
    name: &str,
    app: &AppConfig,
) -> Result<Vec<(String, String)>> {
    let caps = caps_for(
        name,
        app,
        &app.dir,
        settings(plugin, app)?,
        Arc::new(|_, _| {}),
    )?;
    let mut missing: Vec<(String, String)> = plugin
        .info
        .capabilities
        .iter()
        .filter_map(|(kind, value)| caps.resolve_declared(kind, value))
        .filter(|(kind, value)| caps.allows(kind, value).is_err())
        .collect();
    missing.sort();
    missing.dedup();
    Ok(missing)
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
    /// A key and value the host adds to the plugin's metadata (`upgrade`: from and to).
    pub annotate: Option<(String, serde_json::Value)>,
}

/// Backs up app `name` with its plugin; the snapshot stores the plugin's wasm.
pub fn backup(
    repo: &Arc<Repository>,
    config: &Config,
    name: &str,
    opts: BackupOptions,
    events: &Arc<dyn Events>,
) -> Result<(BackupResult, Plugin)> {
    let BackupOptions {
        tags,
        host,
        cache_dir,
        counters,
        annotate,
    } = opts;
    let cache_dir = cache_dir.as_deref();
    let live = Live::load(config, name, cache_dir, events)?;
    let (app, plugin) = (live.app, &live.plugin);
    let cache_path = cache_dir.map(|d| d.join(&repo.config().id).join(format!("app-{name}.cache")));
    let _phase = Phase::begin(events.as_ref(), "backup", counters.clone());
    let mut session = Session::start(repo.clone(), cache_path, counters)?;
    let content = session.store_blob(&plugin.wasm)?;
    let caps = live.caps()?.with_session(session);
    let (mut metadata, mut caps) = plugin.capture(caps, app.limits())?;
    if let (Some((key, value)), Some(map)) = (annotate, metadata.as_object_mut()) {
        map.insert(key, value);
    }
    let session = caps.take_session().expect("capture keeps its session");
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
    Ok((result, live.plugin))
}

/// The app's plugin, settings and the capabilities of one call on its live folder.
pub struct Live<'a> {
    pub name: String,
    pub app: &'a AppConfig,
    pub plugin: Plugin,
    settings: Vec<(String, String)>,
    log: LogSink,
}

impl<'a> Live<'a> {
    pub fn load(
        config: &'a Config,
        name: &str,
        cache_dir: Option<&Path>,
        events: &Arc<dyn Events>,
    ) -> Result<Live<'a>> {
        let app = config.app(name)?;
        let plugin = load_plugin(app, cache_dir)?;
        let settings = settings(&plugin, app)?;
        Ok(Live {
            name: name.into(),
            app,
            plugin,
            settings,
            log: plugin_log(events, name),
        })
    }

    fn caps(&self) -> Result<Caps> {
        caps_for(
            &self.name,
            self.app,
            &self.app.dir,
            self.settings.clone(),
            self.log.clone(),
        )
    }

    pub fn health(&self) -> Result<Vec<Check>> {
        Ok(self.plugin.health(self.caps()?, self.app.limits())?)
    }

    /// The plugin's verify of the live app, against a snapshot's metadata when given.
    pub fn verify(&self, against: Option<(&SnapshotId, &Snapshot)>) -> Result<Vec<Check>> {
        Ok(self
            .plugin
            .verify(self.caps()?, self.app.limits(), against)?
            .0)
    }

    pub fn upgrade(&self, to: &str) -> Result<()> {
        Ok(self.plugin.upgrade(self.caps()?, self.app.limits(), to)?)
    }
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

/// The setting a drill hands the plugin, and which a plugin declares when its restore can run
/// in scratch space without touching the live app (no stop or start of it, nothing restored
/// into its services).
pub const DRILL_SETTING: &str = "coffer_drill";

/// Where an app restore goes.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    /// The app's own folder.
    Live,
    /// Another folder; the plugin still runs the live app's stop and start commands.
    Dir(&'a Path),
    /// A drill in scratch space: the plugin is told (`coffer_drill = true`), so it touches
    /// nothing live, and no health check runs (it would check the live app).
    Drill(&'a Path),
}

/// Restores an app snapshot with the plugin stored in it, then runs its verify and health.
#[allow(clippy::too_many_arguments)]
pub fn restore(
    repo: &Arc<Repository>,
    config: &Config,
    id: &SnapshotId,
    snap: Snapshot,
    only: &[String],
    target: Target,
    cache_dir: Option<&Path>,
    events: &Arc<dyn Events>,
) -> Result<RestoreReport> {
    let name = snap
        .app
        .clone()
        .ok_or_else(|| Error::Invalid("not an app snapshot: restore it with --target".into()))?;
    let app = config.app(&name)?;
    let log = plugin_log(events, &name);
    let (dir, drill) = match target {
        Target::Live => (app.dir.clone(), false),
        Target::Dir(d) => (d.to_path_buf(), false),
        Target::Drill(d) => (d.to_path_buf(), true),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let (index, _) = repo.load_index()?;
    let index = Arc::new(index);
    if let Some(rec) = &snap.plugin {
        if !crate::plugins::trusted(&rec.blake3, app.blake3.as_deref(), &app.trusted_plugins) {
            return Err(coffer_repo::Error::Unsafe(format!(
                "snapshot {} stores plugin {} {} (BLAKE3 {}), which is neither a built-in plugin of this coffer nor the app's pin: it runs with the app's grants only if you trust it; if you know where the snapshot came from, pass --trust-plugin {} (or list it under trusted_plugins in [apps.{name}])",
                id.short(),
                rec.name,
                rec.version,
                rec.blake3,
                rec.blake3
            ))
            .into());
        }
    }
    let plugin = stored_plugin(repo, &index, &snap, cache_dir)?;
    let mut settings = settings(&plugin, app)?;
    if drill {
        if !plugin.info.settings.iter().any(|s| s.name == DRILL_SETTING) {
            return Err(Error::Invalid(format!(
                "plugin {} {} (stored in snapshot {}) does not support drills: its restore would touch the live app. Rehearse it with `coffer restore {} --target DIR` (files only)",
                plugin.info.name,
                plugin.info.version,
                id.short(),
                id.short()
            )));
        }
        settings.retain(|(k, _)| k != DRILL_SETTING);
        settings.push((DRILL_SETTING.into(), "true".into()));
    }
    let limits = app.limits();
    let source = || Source {
        repo: repo.clone(),
        index: index.clone(),
        snapshot: snap.clone(),
    };

    let caps = caps_for(&name, app, &dir, settings.clone(), log.clone())?.with_source(source());
    plugin.restore(caps, limits, (id, &snap), only)?;

    // After a partial restore, verify sees only the restored items: the parts left alone have
    // moved on since the snapshot and would fail a comparison with it.
    let mut restored = snap.clone();
    if !only.is_empty() {
        restored.items.retain(|i| {
            only.iter()
                .any(|o| i == o || i.starts_with(&format!("{o}/")))
        });
    }
    let caps = caps_for(&name, app, &dir, settings.clone(), log.clone())?.with_source(source());
    let (verify, _) = plugin.verify(caps, limits, Some((id, &restored)))?;
    let health = if drill {
        vec![]
    } else {
        plugin.health(caps_for(&name, app, &dir, settings, log)?, limits)?
    };
    // The app is back as the snapshot was: an upgrade interrupted before is settled.
    if matches!(target, Target::Live) && verify.iter().all(|c| c.ok) && health.iter().all(|c| c.ok)
    {
        if let Some(c) = cache_dir {
            super::upgrade::settle(c, repo, &name);
        }
    }
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
