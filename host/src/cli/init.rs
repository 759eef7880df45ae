//! `coffer init`: create a repository.

use std::path::PathBuf;

use anyhow::Result;
use coffer::ExitCode;
use coffer_repo::chunker::ChunkerParams;
use coffer_repo::{InitOptions, Repository};

use super::{print_json, Global};

#[derive(clap::Args)]
pub struct Args {
    /// zstd level for chunks, 1..=22 (1: a first backup takes ~10 % less CPU than at 3 for ~1 %
    /// more stored bytes on the benchmark's app data)
    #[arg(long, default_value_t = 1)]
    pub compression: i32,
    /// Target pack size in MiB (8: a backup, restore or check then holds a few packs in well
    /// under 90 MiB; bigger packs mean fewer objects on S3 and more memory)
    #[arg(long, default_value_t = 8)]
    pub pack_size: u32,
    /// Smallest, average and largest chunk in KiB
    #[arg(long, value_names = ["MIN", "AVG", "MAX"], num_args = 3)]
    pub chunk_sizes: Option<Vec<u32>>,
    /// Seal the first key to these age or SSH recipients instead of a passphrase
    #[arg(long = "recipient")]
    pub recipients: Vec<String>,
    /// Read recipients from this file, one per line
    #[arg(long)]
    pub recipients_file: Option<PathBuf>,
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let location = g.repo_location();
    let backend = coffer_store::open(&location, true, &g.repo_config().s3)
        .map_err(coffer_repo::Error::from)?;
    let mut opts = InitOptions {
        compression: a.compression,
        pack_size: a.pack_size << 20,
        ..Default::default()
    };
    if let Some(s) = &a.chunk_sizes {
        opts.chunker = ChunkerParams {
            min_size: s[0] << 10,
            avg_size: s[1] << 10,
            max_size: s[2] << 10,
        };
    }
    anyhow::ensure!(
        (1..=512).contains(&a.pack_size),
        "--pack-size must be 1..=512 MiB"
    );
    let protector = g.new_protector(
        super::NewKey::Repository,
        &a.recipients,
        &a.recipients_file,
        &None,
    )?;
    let repo = Repository::init(backend, &opts, &protector)?;
    if g.json {
        print_json(&serde_json::json!({
            "repository": location, "id": repo.config().id, "key": repo.key_id().to_hex(),
        }));
    } else {
        out!(
            "created coffer repository {} at {location}",
            &repo.config().id[..8]
        );
        out!("keep the passphrase (or identity) safe: without it the data cannot be read back");
    }
    Ok(ExitCode::Ok)
}
