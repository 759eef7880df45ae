//! Forget by policy: group snapshots per host and app (or host and paths), let each group's
//! retention policy pick the survivors, and remove the rest.

use std::collections::BTreeMap;

use coffer_repo::id::SnapshotId;
use coffer_repo::retention::Policy;
use coffer_repo::Repository;

use crate::config::Config;
use crate::error::{Error, Result};

/// Which snapshots a forget looks at, and the policy given on the command line.
pub struct ForgetOptions {
    pub app: Option<String>,
    pub host: Option<String>,
    /// Wins over each app's `[apps.NAME.retention]` when not empty.
    pub policy: Policy,
}

/// What a policy decided: per group `{host, group, policy, keep, remove}` with the reasons each
/// survivor is kept, and the snapshots to remove.
pub struct ForgetPlan {
    pub groups: Vec<serde_json::Value>,
    pub remove: Vec<SnapshotId>,
}

/// Decides what to keep; removes nothing.
///
/// Fails when neither the options nor coffer.toml give any group a policy, or a policy is
/// invalid.
pub fn plan(
    repo: &Repository,
    config: Option<&Config>,
    opts: &ForgetOptions,
) -> Result<ForgetPlan> {
    let flags = &opts.policy;
    flags.validate().map_err(Error::Invalid)?;
    let mut groups: BTreeMap<(String, String), Vec<_>> = BTreeMap::new();
    for (id, s) in repo.list_snapshots()? {
        let Ok(s) = s else { continue }; // damaged ones are check's business, never forgotten blindly
        if opts.app.as_ref().is_some_and(|x| s.app.as_ref() != Some(x))
            || opts.host.as_ref().is_some_and(|h| *h != s.hostname)
        {
            continue;
        }
        let what = match &s.app {
            Some(app) => format!("app {app}"),
            None => s.paths.join(" "),
        };
        groups
            .entry((s.hostname.clone(), what))
            .or_default()
            .push((id, s));
    }
    let mut report = vec![];
    let mut remove = vec![];
    for ((host, what), snaps) in &groups {
        let app_policy = snaps[0]
            .1
            .app
            .as_ref()
            .and_then(|app| config?.apps.get(app)?.retention.clone());
        let policy = if !flags.is_empty() {
            Some(flags.clone())
        } else {
            app_policy
        };
        let Some(policy) = policy.filter(|p| !p.is_empty()) else {
            report.push(serde_json::json!({ "host": host, "group": what, "policy": null, "keep": snaps.len(), "remove": [] }));
            continue;
        };
        let times: Vec<_> = snaps.iter().map(|(_, s)| s.time).collect();
        let reasons = policy.apply(&times).map_err(Error::Invalid)?;
        let mut keep = vec![];
        let mut gone = vec![];
        for ((id, s), r) in snaps.iter().zip(reasons) {
            let row = serde_json::json!({ "id": id.to_hex(), "time": s.time, "reasons": r });
            if r.is_empty() {
                gone.push(row);
                remove.push(*id);
            } else {
                keep.push(row);
            }
        }
        report.push(serde_json::json!({ "host": host, "group": what, "policy": policy, "keep": keep, "remove": gone }));
    }
    if flags.is_empty() && report.iter().all(|r| r["policy"].is_null()) {
        return Err(Error::Invalid(
            "no retention policy: give --keep-* flags, or [apps.NAME.retention] in coffer.toml"
                .into(),
        ));
    }
    Ok(ForgetPlan {
        groups: report,
        remove,
    })
}

/// Removes the snapshots the plan does not keep. The data only they used stays until prune.
pub fn apply(repo: &Repository, plan: &ForgetPlan) -> Result<()> {
    for id in &plan.remove {
        repo.delete_snapshot(id)?;
    }
    Ok(())
}
