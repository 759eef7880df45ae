//! `coffer serve`: the daemon (src/serve/): schedules, the job API, metrics, the web page.

use anyhow::Result;
use coffer::ExitCode;

use super::Global;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on [default: [serve] listen, else 127.0.0.1:8766]
    #[arg(long)]
    pub listen: Option<String>,
    /// Host name recorded in the snapshots the daemon takes
    #[arg(long)]
    pub host: Option<String>,
    /// Seconds added to the clock schedules run by (for tests)
    #[arg(
        long,
        env = "COFFER_CLOCK_OFFSET_SECS",
        hide = true,
        default_value_t = 0,
        allow_hyphen_values = true
    )]
    pub clock_offset_secs: i64,
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let config = g.config()?.ok_or_else(|| {
        anyhow::anyhow!("serve needs a coffer.toml (its apps, their schedules, and [serve])")
    })?;
    // Unlocked once, here: jobs share the open repository.
    let repo = g.open()?;
    crate::serve::run(
        repo,
        config,
        g.cache_dir(),
        crate::serve::Options {
            listen: a.listen.clone(),
            host: a.host.clone(),
            clock_offset_secs: a.clock_offset_secs,
        },
    )?;
    Ok(ExitCode::Ok)
}
