//! `coffer drill APP [SNAPSHOT]`: a rehearsed restore into scratch space that never touches the
//! live app (ops::drill). Exit 0 when it passed, 19 when the restore or verify failed.

use std::sync::Arc;

use anyhow::Result;
use coffer::ExitCode;

use super::{print_json, CliEvents, Global};

#[derive(clap::Args)]
pub struct Args {
    /// The app in coffer.toml
    pub app: String,
    /// Snapshot id (a prefix is enough); the app's newest when absent
    pub snapshot: Option<String>,
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let config = g.config()?.ok_or_else(|| {
        anyhow::anyhow!("drill needs a coffer.toml with an [apps.{}] section", a.app)
    })?;
    let repo = Arc::new(g.open()?);
    let d = coffer::ops::drill::drill(
        &repo,
        config,
        &a.app,
        a.snapshot.as_deref(),
        &g.cache_dir(),
        &CliEvents::shared(g.json),
    )?;
    if g.json {
        print_json(&d);
    } else {
        for c in &d.verify {
            out!(
                "  {} {:<24} {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        if let Some(e) = &d.error {
            out!("  restore failed: {e}");
        }
        out!(
            "drill of {} snapshot {} {} in {:.1} s (scratch space removed; the live app was not touched)",
            d.app,
            &d.snapshot[..8],
            if d.ok { "passed" } else { "FAILED" },
            d.secs
        );
    }
    Ok(if d.ok {
        ExitCode::Ok
    } else {
        ExitCode::DrillFailed
    })
}
