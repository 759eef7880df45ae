//! Restore drills: "would snapshot S bring app X back?", answered without touching the live app.
//!
//! The plugin stored in the snapshot restores into a scratch folder with `coffer_drill` set
//! (so it stops and starts nothing, and restores into no live service: only plugins that
//! declare that setting drill), its verify runs there against the snapshot's metadata, and the
//! scratch folder goes. Each result is recorded per repository on this host
//! (`<cache>/<repository id>/drills.json`: the last drill and the last passed one per app),
//! where `coffer snapshots` shows it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use coffer_repo::id::SnapshotId;
use coffer_repo::snapshot::Snapshot;
use coffer_repo::Repository;
use coffer_runtime::Check;

use super::app::{restore, Target};
use super::events::Events;
use crate::config::Config;
use crate::error::{Error, Result};

/// One drill's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Drill {
    pub app: String,
    pub snapshot: String,
    /// RFC 3339, when it ended.
    pub at: String,
    pub ok: bool,
    pub secs: f64,
    /// Why the restore itself failed, when it did.
    pub error: Option<String>,
    pub verify: Vec<DrillCheck>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillCheck {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl From<&Check> for DrillCheck {
    fn from(c: &Check) -> Self {
        DrillCheck {
            name: c.name.clone(),
            ok: c.ok,
            detail: c.detail.clone(),
        }
    }
}

/// Per app: the last drill, and the last that passed.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Record {
    pub apps: BTreeMap<String, AppDrills>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct AppDrills {
    pub last: Option<Drill>,
    pub last_ok: Option<Drill>,
}

fn record_path(cache_dir: &Path, repo: &Repository) -> PathBuf {
    cache_dir.join(&repo.config().id).join("drills.json")
}

/// What drills this host has recorded for the repository (nothing when none ran).
pub fn recorded(cache_dir: &Path, repo: &Repository) -> Record {
    std::fs::read(record_path(cache_dir, repo))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save(cache_dir: &Path, repo: &Repository, d: &Drill) -> Result<()> {
    let path = record_path(cache_dir, repo);
    let mut rec = recorded(cache_dir, repo);
    let entry = rec.apps.entry(d.app.clone()).or_default();
    entry.last = Some(d.clone());
    if d.ok {
        entry.last_ok = Some(d.clone());
    }
    let dir = path.parent().expect("has a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(".drills-{}.tmp", std::process::id()));
    let text = serde_json::to_vec_pretty(&rec).expect("serializes");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(&path, e))
}

/// The newest snapshot of `app` a trusted key wrote.
fn latest_of(repo: &Repository, app: &str) -> Result<(SnapshotId, Snapshot)> {
    let strict = repo.signatures_required();
    repo.list_snapshots()?
        .into_iter()
        .rev()
        .filter_map(|(id, s)| s.ok().map(|s| (id, s)))
        .find(|(_, s)| s.app.as_deref() == Some(app) && repo.writer(s).counts(strict))
        .ok_or_else(|| Error::Invalid(format!("app {app} has no snapshot to drill")))
}

/// Drills app `name` with snapshot `spec` (its newest when `None`); the result is recorded.
pub fn drill(
    repo: &Arc<Repository>,
    config: &Config,
    name: &str,
    spec: Option<&str>,
    cache_dir: &Path,
    events: &Arc<dyn Events>,
) -> Result<Drill> {
    config.app(name)?;
    let (id, snap) = match spec {
        Some(s) => repo.find_snapshot(s)?,
        None => latest_of(repo, name)?,
    };
    if snap.app.as_deref() != Some(name) {
        return Err(Error::Invalid(format!(
            "snapshot {} is not of app {name}",
            id.short()
        )));
    }
    let scratch_root = cache_dir.join("drills");
    std::fs::create_dir_all(&scratch_root).map_err(|e| Error::io(&scratch_root, e))?;
    let scratch = tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir_in(&scratch_root)
        .map_err(|e| Error::io(&scratch_root, e))?;
    let begun = Instant::now();
    let result = restore(
        repo,
        config,
        &id,
        snap,
        &[],
        Target::Drill(scratch.path()),
        Some(cache_dir),
        events,
    );
    let (verify, error) = match result {
        Ok(r) => (r.verify.iter().map(DrillCheck::from).collect(), None),
        // A drill that cannot start (the plugin cannot drill) is not a result to record.
        Err(e @ Error::Invalid(_)) => return Err(e),
        Err(e) => (vec![], Some(e.to_string())),
    };
    let d = Drill {
        app: name.into(),
        snapshot: id.to_hex(),
        at: chrono::Utc::now().to_rfc3339(),
        ok: error.is_none() && verify.iter().all(|c: &DrillCheck| c.ok),
        secs: begun.elapsed().as_secs_f64(),
        error,
        verify,
    };
    drop(scratch);
    save(cache_dir, repo, &d)?;
    Ok(d)
}
