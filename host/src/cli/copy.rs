//! `coffer copy --to REPO`: copy snapshots into another repository (offsite).

use std::path::PathBuf;
use std::sync::Arc;

use age::secrecy::SecretString;
use anyhow::{Context, Result};
use coffer::ExitCode;
use coffer_repo::keyfile::{self, Unlocker};
use coffer_repo::Repository;

use super::{human, print_json, Global};

#[derive(clap::Args)]
pub struct Args {
    /// The destination repository
    #[arg(long)]
    pub to: String,
    /// The destination's passphrase file (also COFFER_TO_PASSWORD_FILE, or COFFER_TO_PASSWORD)
    #[arg(long, env = "COFFER_TO_PASSWORD_FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Open the destination with age/SSH identities instead
    #[arg(long, env = "COFFER_TO_IDENTITY_FILE")]
    pub to_identity_file: Option<PathBuf>,
    /// Only snapshots of this app
    #[arg(long)]
    pub app: Option<String>,
    /// Only snapshots of this host
    #[arg(long)]
    pub host: Option<String>,
    /// Only these snapshots (id prefixes or `latest`); all when none is given
    pub snapshots: Vec<String>,
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let src = g.open()?;
    let unlock = if let Some(f) = &a.to_identity_file {
        Unlocker::Identities(keyfile::load_identities(f)?)
    } else if let Some(f) = &a.to_password_file {
        Unlocker::Passphrase(super::read_password_file(f)?)
    } else if let Ok(p) = std::env::var("COFFER_TO_PASSWORD") {
        Unlocker::Passphrase(SecretString::from(p))
    } else {
        anyhow::bail!("no key for the destination: give --to-password-file, COFFER_TO_PASSWORD or --to-identity-file");
    };
    let backend =
        coffer_store::open(&a.to, false, &g.repo_config().s3).map_err(coffer_repo::Error::from)?;
    let dst = Arc::new(
        Repository::open(backend, &unlock)
            .with_context(|| format!("opening the destination {}", a.to))?,
    );
    anyhow::ensure!(
        src.config().id != dst.config().id,
        "the destination is the source repository"
    );
    let mut chosen = vec![];
    if a.snapshots.is_empty() {
        for (id, s) in src.list_snapshots()? {
            let s = s?;
            if a.app.as_ref().is_some_and(|x| s.app.as_ref() != Some(x))
                || a.host.as_ref().is_some_and(|h| *h != s.hostname)
            {
                continue;
            }
            chosen.push((id, s));
        }
    } else {
        for spec in &a.snapshots {
            chosen.push(src.find_snapshot(spec)?);
        }
    }
    // The destination's key signs each copy: copying a forged snapshot, or (once the source's
    // keys sign) an unverified one, would launder it. Those stay behind, named.
    let strict = src.signatures_required();
    chosen.retain(|(id, s)| {
        let w = src.writer(s);
        if w.counts(strict) {
            return true;
        }
        eout!(
            "coffer: warning: snapshot {} not copied: {} (see `coffer snapshots`)",
            id.short(),
            w.reason().unwrap_or_default()
        );
        false
    });
    let summary = coffer_repo::copy::copy(&src, &dst, &chosen)?;
    if g.json {
        print_json(&summary);
    } else {
        for (from, to) in &summary.copied {
            out!("copied {} -> {}", &from[..8], &to[..8]);
        }
        out!(
            "{} copied, {} already there; {} chunks, {} added to {}",
            summary.copied.len(),
            summary.skipped,
            summary.chunks_sent,
            human(summary.bytes_added),
            a.to
        );
    }
    Ok(ExitCode::Ok)
}
