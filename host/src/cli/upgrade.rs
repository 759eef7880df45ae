//! `coffer upgrade APP --to VERSION`: a guarded upgrade (ops::upgrade) with a live log on
//! stderr and its report on stdout. Exit codes: 0 upgraded, 17 rolled back (the app is as
//! before), 18 rollback failed or not asked for (act now); a sick app is refused (1) untouched.

use std::sync::Arc;

use anyhow::Result;
use coffer::ops::upgrade::{upgrade, Outcome, UpgradeOptions};
use coffer::ExitCode;

use super::{print_json, CliEvents, Global};

#[derive(clap::Args)]
pub struct Args {
    /// The app in coffer.toml
    pub app: String,
    /// The version to upgrade to, as the app's plugin understands it (an image tag)
    #[arg(long)]
    pub to: String,
    /// Upgrade even when the app fails its health or verify checks before
    #[arg(long)]
    pub force: bool,
    /// On failure, leave the app as the upgrade left it instead of rolling back
    #[arg(long)]
    pub no_rollback: bool,
    /// Host name recorded in the pre-upgrade snapshot
    #[arg(long)]
    pub host: Option<String>,
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let config = g.config()?.ok_or_else(|| {
        anyhow::anyhow!(
            "upgrade needs a coffer.toml with an [apps.{}] section",
            a.app
        )
    })?;
    let repo = Arc::new(g.open()?);
    let r = upgrade(
        &repo,
        config,
        &a.app,
        UpgradeOptions {
            to: a.to.clone(),
            force: a.force,
            no_rollback: a.no_rollback,
            host: a.host.clone(),
            cache_dir: Some(g.cache_dir()),
        },
        &CliEvents::shared(g.json),
    )?;
    if g.json {
        print_json(&r);
    } else {
        for p in &r.phases {
            out!(
                "  {:<22} {:>7.1} s  {}",
                p.name,
                p.secs,
                if p.ok { "ok" } else { "FAILED" }
            );
        }
        match r.downtime_secs {
            Some(d) => out!("  {:<22} {:>7.1} s", "downtime (at most)", d),
            None => out!("  {:<22} {:>9}", "downtime", "not back"),
        }
        match r.outcome {
            Outcome::Upgraded => out!(
                "upgraded {} from {} to {} (pre-upgrade snapshot {})",
                r.app,
                r.from,
                r.to,
                &r.snapshot[..8]
            ),
            Outcome::RolledBack => out!(
                "upgrade of {} to {} failed and was rolled back: it runs {} as before ({})",
                r.app,
                r.to,
                r.from,
                r.error.as_deref().unwrap_or("")
            ),
            Outcome::RollbackFailed => out!(
                "upgrade of {} to {} failed and the app is NOT as before: act now. Restore snapshot {} with `coffer restore {}` ({})",
                r.app,
                r.to,
                &r.snapshot[..8],
                &r.snapshot[..8],
                r.error.as_deref().unwrap_or("")
            ),
        }
    }
    Ok(match r.outcome {
        Outcome::Upgraded => ExitCode::Ok,
        Outcome::RolledBack => ExitCode::RolledBack,
        Outcome::RollbackFailed => ExitCode::RollbackFailed,
    })
}
