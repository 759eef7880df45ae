//! `coffer forget`: remove snapshots a retention policy does not keep.

use std::collections::BTreeMap;

use anyhow::Result;
use coffer::retention::Policy;
use coffer::ExitCode;

use super::{print_json, Global};

#[derive(clap::Args)]
pub struct Args {
    /// Only snapshots of this app
    #[arg(long)]
    pub app: Option<String>,
    /// Only snapshots of this host
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub keep_last: u32,
    #[arg(long, default_value_t = 0)]
    pub keep_hourly: u32,
    #[arg(long, default_value_t = 0)]
    pub keep_daily: u32,
    #[arg(long, default_value_t = 0)]
    pub keep_weekly: u32,
    #[arg(long, default_value_t = 0)]
    pub keep_monthly: u32,
    #[arg(long, default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep every snapshot within this span of the group's newest, e.g. 30d, 1y6m
    #[arg(long)]
    pub keep_within: Option<String>,
    /// Show what would be removed and which rule keeps each survivor; remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Run `prune` afterwards (with --grace, --repack-unused)
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_knobs: super::prune::Knobs,
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let flags = Policy {
        keep_last: a.keep_last,
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_yearly: a.keep_yearly,
        keep_within: a.keep_within.clone(),
    };
    flags.validate().map_err(|e| anyhow::anyhow!(e))?;
    let prune_opts = a.prune_knobs.options(a.dry_run)?;
    let config = g.config()?;
    let repo = g.open()?;
    // Groups: one per host and app (or host and paths, for plain backups).
    let mut groups: BTreeMap<(String, String), Vec<_>> = BTreeMap::new();
    for (id, s) in repo.list_snapshots()? {
        let Ok(s) = s else { continue }; // damaged ones are check's business, never forgotten blindly
        if a.app.as_ref().is_some_and(|x| s.app.as_ref() != Some(x))
            || a.host.as_ref().is_some_and(|h| *h != s.hostname)
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
        let reasons = policy.apply(&times).map_err(|e| anyhow::anyhow!(e))?;
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
        anyhow::bail!(
            "no retention policy: give --keep-* flags, or [apps.NAME.retention] in coffer.toml"
        );
    }
    if !a.dry_run {
        for id in &remove {
            repo.backend()
                .delete(&coffer::repo::snapshot::key(id))
                .map_err(coffer::Error::from)?;
        }
    }
    let pruned = if a.prune {
        let repo = std::sync::Arc::new(repo);
        Some(coffer::prune::prune(&repo, &prune_opts)?)
    } else {
        None
    };
    if g.json {
        print_json(
            &serde_json::json!({ "dry_run": a.dry_run, "groups": report, "removed": if a.dry_run { 0 } else { remove.len() }, "prune": pruned }),
        );
    } else {
        for r in &report {
            println!(
                "{} on {}:",
                r["group"].as_str().unwrap_or(""),
                r["host"].as_str().unwrap_or("")
            );
            if r["policy"].is_null() {
                println!("  no policy for this group: all {} kept", r["keep"]);
                continue;
            }
            for k in r["keep"].as_array().into_iter().flatten() {
                println!(
                    "  keep   {} {}  ({})",
                    &k["id"].as_str().unwrap_or("")[..8],
                    k["time"].as_str().unwrap_or(""),
                    k["reasons"]
                        .as_array()
                        .map(|v| v
                            .iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                );
            }
            for k in r["remove"].as_array().into_iter().flatten() {
                println!(
                    "  {} {} {}",
                    if a.dry_run { "would remove" } else { "remove" },
                    &k["id"].as_str().unwrap_or("")[..8],
                    k["time"].as_str().unwrap_or("")
                );
            }
        }
        if a.dry_run {
            println!("dry run: {} snapshot(s) would be removed", remove.len());
        } else {
            println!("removed {} snapshot(s); the data only they used stays in the repository until prune", remove.len());
        }
        if let Some(p) = &pruned {
            super::prune::report(g, p);
        }
    }
    Ok(ExitCode::Ok)
}
