//! `coffer demo`: the main job on its embedded default, end to end, in a scratch repository.
//!
//! Creates (or reuses) a local repository in the system temp folder with a generated passphrase,
//! backs up the example app folder twice (the second time nothing is read), checks every byte,
//! restores into a fresh folder and compares it with the source, file by file.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use anyhow::{Context, Result};
use coffer::ExitCode;
use coffer_repo::archiver::{self, BackupOptions};
use coffer_repo::checker::{self, ReadData};
use coffer_repo::keyfile::{Protector, Unlocker};
use coffer_repo::restorer::{self, RestoreOptions};
use coffer_repo::{InitOptions, Repository};

use super::{human, print_json, Global};

#[derive(clap::Args)]
pub struct Args {
    /// Folder to back up [default: the bundled examples/demo-app]
    pub source: Option<PathBuf>,
}

pub fn run(g: &Global, a: &Args) -> Result<ExitCode> {
    let source = match &a.source {
        Some(s) => s.clone(),
        None => {
            let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo-app");
            anyhow::ensure!(
                bundled.is_dir(),
                "the bundled example {} is missing; give a folder: coffer demo PATH",
                bundled.display()
            );
            bundled.canonicalize()?
        }
    };
    let base = std::env::temp_dir().join(format!("coffer-demo-{}", nix::unistd::getuid()));
    let repo_dir = g
        .repo
        .clone()
        .map(PathBuf::from)
        .unwrap_or_else(|| base.join("repo"));
    let pass_file = base.join("passphrase");
    std::fs::create_dir_all(&base)?;
    if !pass_file.exists() {
        let p: [u8; 16] = rand::random();
        std::fs::write(&pass_file, hex::encode(p))?;
        std::fs::set_permissions(&pass_file, std::fs::Permissions::from_mode(0o600))?;
    }
    let passphrase =
        age::secrecy::SecretString::from(std::fs::read_to_string(&pass_file)?.trim().to_string());
    let say = |s: String| {
        if !g.json {
            out!("{s}");
        }
    };
    let backend = coffer_store::open(&repo_dir.display().to_string(), true, &Default::default())?;
    let repo = match Repository::open(backend.clone(), &Unlocker::Passphrase(passphrase.clone())) {
        Ok(r) => {
            say(format!(
                "1. opened the demo repository {}",
                repo_dir.display()
            ));
            r
        }
        Err(coffer_repo::Error::NoRepository { .. }) => {
            let p = Protector::Passphrase {
                passphrase,
                log_n: g.kdf_log_n,
            };
            let r = Repository::init(backend, &InitOptions::default(), &p)?;
            say(format!(
                "1. created a repository at {} (passphrase in {})",
                repo_dir.display(),
                pass_file.display()
            ));
            r
        }
        Err(e) => return Err(e).context("opening the demo repository (delete it to start over)"),
    };
    let opts = BackupOptions {
        paths: vec![source.clone()],
        tags: vec!["demo".into()],
        cache_dir: Some(base.join("cache")),
        ..Default::default()
    };
    let repo = std::sync::Arc::new(repo);
    let first = archiver::backup(&repo, &opts, Default::default())?;
    let s = &first.summary;
    say(format!(
        "2. backed up {}: snapshot {}, {} files, read {}, added {} to the repository",
        source.display(),
        first.snapshot.short(),
        s.files_new + s.files_changed + s.files_unchanged,
        human(s.bytes_read),
        human(s.bytes_added)
    ));
    let second = archiver::backup(&repo, &opts, Default::default())?;
    say(format!(
        "3. backed up again: snapshot {}, {} files unchanged, read {} (the files cache skips unchanged files)",
        second.snapshot.short(),
        second.summary.files_unchanged,
        human(second.summary.bytes_read)
    ));
    let report = checker::check(&repo, ReadData::All)?;
    anyhow::ensure!(
        report.problems.is_empty(),
        "check found problems: {:?}",
        report.problems
    );
    say(format!(
        "4. checked every byte of {} packs: no problems",
        report.packs_read
    ));
    let target = base.join(format!("restore-{}", std::process::id()));
    let (index, _) = repo.load_index()?;
    let snap = repo.load_snapshot(&second.snapshot)?;
    let r = restorer::restore(
        &repo,
        &index,
        &snap,
        &RestoreOptions {
            target: target.clone(),
            ..Default::default()
        },
        &AtomicU64::new(0),
    )?;
    anyhow::ensure!(
        r.errors.is_empty(),
        "restore reported errors: {:?}",
        r.errors
    );
    let restored = target.join(source.file_name().unwrap_or_default());
    let compared = compare_trees(&source, &restored)?;
    say(format!(
        "5. restored to {} and compared {compared} entries with the source: identical",
        restored.display()
    ));
    std::fs::remove_dir_all(&target)?;
    if g.json {
        print_json(&serde_json::json!({
            "repository": repo_dir, "snapshots": [first.snapshot.to_hex(), second.snapshot.to_hex()],
            "first": first.summary, "second": second.summary, "entries_compared": compared, "ok": true,
        }));
    } else {
        out!(
            "demo passed: try `COFFER_REPOSITORY={} COFFER_PASSWORD_FILE={} coffer snapshots`",
            repo_dir.display(),
            pass_file.display()
        );
    }
    Ok(ExitCode::Ok)
}

/// Compares content, type, mode and mtime of every entry; returns how many were compared.
fn compare_trees(a: &Path, b: &Path) -> Result<usize> {
    let ma = std::fs::symlink_metadata(a)?;
    let mb = std::fs::symlink_metadata(b)
        .with_context(|| format!("{} missing after restore", b.display()))?;
    anyhow::ensure!(
        ma.file_type() == mb.file_type(),
        "{}: type differs",
        b.display()
    );
    anyhow::ensure!(ma.mode() == mb.mode(), "{}: mode differs", b.display());
    let mut n = 1;
    if ma.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(a)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        let count = std::fs::read_dir(b)?.count();
        anyhow::ensure!(
            count == names.len(),
            "{}: holds {count} entries, the source {}",
            b.display(),
            names.len()
        );
        for name in names {
            n += compare_trees(&a.join(&name), &b.join(&name))?;
        }
    } else if ma.is_file() {
        anyhow::ensure!(ma.mtime() == mb.mtime(), "{}: mtime differs", b.display());
        anyhow::ensure!(
            std::fs::read(a)? == std::fs::read(b)?,
            "{}: content differs",
            b.display()
        );
    } else if ma.file_type().is_symlink() {
        anyhow::ensure!(
            std::fs::read_link(a)? == std::fs::read_link(b)?,
            "{}: link target differs",
            b.display()
        );
    }
    Ok(n)
}
