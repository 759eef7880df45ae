//! `coffer forget`: remove snapshots a retention policy does not keep.

use anyhow::Result;
use coffer::ops::forget::{self, ForgetOptions};
use coffer::ExitCode;
use coffer_repo::retention::Policy;

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
    let opts = ForgetOptions {
        app: a.app.clone(),
        host: a.host.clone(),
        policy: Policy {
            keep_last: a.keep_last,
            keep_hourly: a.keep_hourly,
            keep_daily: a.keep_daily,
            keep_weekly: a.keep_weekly,
            keep_monthly: a.keep_monthly,
            keep_yearly: a.keep_yearly,
            keep_within: a.keep_within.clone(),
        },
    };
    opts.policy.validate().map_err(|e| anyhow::anyhow!(e))?;
    let prune_opts = a.prune_knobs.options(a.dry_run)?;
    let config = g.config()?;
    let repo = g.open()?;
    let plan = forget::plan(&repo, config, &opts)?;
    if !a.dry_run {
        forget::apply(&repo, &plan)?;
    }
    let (report, remove) = (&plan.groups, &plan.remove);
    let pruned = if a.prune {
        let repo = std::sync::Arc::new(repo);
        Some(coffer_repo::prune::prune(&repo, &prune_opts)?)
    } else {
        None
    };
    if g.json {
        print_json(
            &serde_json::json!({ "dry_run": a.dry_run, "groups": report, "removed": if a.dry_run { 0 } else { remove.len() }, "prune": pruned }),
        );
    } else {
        for r in report {
            out!(
                "{} on {}:",
                r["group"].as_str().unwrap_or(""),
                r["host"].as_str().unwrap_or("")
            );
            if r["policy"].is_null() {
                out!("  no policy for this group: all {} kept", r["keep"]);
                continue;
            }
            for k in r["keep"].as_array().into_iter().flatten() {
                out!(
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
                out!(
                    "  {} {} {}",
                    if a.dry_run { "would remove" } else { "remove" },
                    &k["id"].as_str().unwrap_or("")[..8],
                    k["time"].as_str().unwrap_or("")
                );
            }
        }
        if a.dry_run {
            out!("dry run: {} snapshot(s) would be removed", remove.len());
        } else {
            out!("removed {} snapshot(s); the data only they used stays in the repository until prune", remove.len());
        }
        if let Some(p) = &pruned {
            super::prune::report(g, p);
        }
    }
    Ok(ExitCode::Ok)
}
