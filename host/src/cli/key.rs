//! `coffer key list|add|remove|export-identity`: the keys that open a repository.

use std::path::PathBuf;

use age::secrecy::ExposeSecret;
use anyhow::Result;
use coffer::ExitCode;

use super::{print_json, Global};

#[derive(clap::Subcommand)]
pub enum Command {
    /// List keys
    List,
    /// Add a key: a new passphrase, or age/SSH recipients
    Add {
        /// A write-only key: can back up (with dedup) but read no snapshot, its own included
        #[arg(long)]
        write_only: bool,
        /// Seal the new key to these age or SSH recipients
        #[arg(long = "recipient")]
        recipients: Vec<String>,
        /// Read recipients from this file, one per line
        #[arg(long)]
        recipients_file: Option<PathBuf>,
        /// Read the new key's passphrase from this file (otherwise a prompt)
        #[arg(long)]
        new_password_file: Option<PathBuf>,
        /// The host whose backups the new key signs; a write-only key writes for no other
        /// [default: this machine's name]
        #[arg(long)]
        host: Option<String>,
    },
    /// Give the key in use a new passphrase (sealed at today's KDF: 64 MiB, about 0.2 s)
    Passwd {
        /// Read the new passphrase from this file (otherwise a prompt)
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
    /// Re-seal the key in use with its passphrase at today's KDF (a key made before coffer
    /// capped it takes 512 MiB or more to open)
    Upgrade,
    /// Remove a key (not the one in use, not the last full one)
    Remove {
        /// Key id or prefix
        id: String,
    },
    /// Print a repository identity as an age secret key, for recovery with the stock `age` tool
    ExportIdentity {
        #[arg(value_parser = ["data", "index"])]
        which: String,
    },
}

pub fn run(g: &Global, c: &Command) -> Result<ExitCode> {
    let repo = g.open()?;
    match c {
        Command::List => {
            let keys = repo.list_keys()?;
            if g.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "id": k.id.to_hex(), "current": k.current, "kind": k.file.kind,
                            "write_only": k.file.write_only, "host": k.file.host, "created": k.file.created,
                        })
                    })
                    .collect();
                print_json(&v);
            } else {
                out!(
                    "  {:<10} {:<11} {:<11} {:<16} created",
                    "id",
                    "kind",
                    "access",
                    "host"
                );
                for k in keys {
                    out!(
                        "{} {:<10} {:<11} {:<11} {:<16} {}",
                        if k.current { "*" } else { " " },
                        k.id.short(),
                        format!("{:?}", k.file.kind).to_lowercase(),
                        if k.file.write_only {
                            "write-only"
                        } else {
                            "full"
                        },
                        k.file.host,
                        k.file.created.format("%Y-%m-%d %H:%M:%S")
                    );
                }
            }
        }
        Command::Add {
            write_only,
            recipients,
            recipients_file,
            new_password_file,
            host,
        } => {
            let protector = g.new_protector(
                super::NewKey::Added {
                    write_only: *write_only,
                },
                recipients,
                recipients_file,
                new_password_file,
            )?;
            let id = repo.add_key(&protector, *write_only, host.as_deref())?;
            if g.json {
                print_json(&serde_json::json!({ "id": id.to_hex(), "write_only": write_only }));
            } else {
                out!(
                    "added {} key {}",
                    if *write_only { "write-only" } else { "full" },
                    id.short()
                );
            }
        }
        Command::Passwd { new_password_file } => {
            let protector =
                g.new_protector(super::NewKey::Changed, &[], &None, new_password_file)?;
            resealed(g, &repo, &protector, "passphrase changed")?;
        }
        Command::Upgrade => {
            let coffer_repo::keyfile::Unlocker::Passphrase(passphrase) = g.unlocker()? else {
                anyhow::bail!("the key in use is sealed to age or SSH recipients: no passphrase KDF to upgrade");
            };
            let protector = coffer_repo::keyfile::Protector::Passphrase {
                passphrase,
                log_n: g.kdf_log_n,
            };
            resealed(g, &repo, &protector, "re-sealed")?;
        }
        Command::Remove { id } => {
            let removed = repo.remove_key(id)?;
            if g.json {
                print_json(&serde_json::json!({ "removed": removed.to_hex() }));
            } else {
                out!("removed key {}", removed.short());
            }
        }
        Command::ExportIdentity { which } => {
            let secret = if which == "data" {
                repo.secrets()
                    .data_identity("export the data identity")?
                    .to_string()
            } else {
                repo.secrets().index_identity.to_string()
            };
            eout!("coffer: warning: this is a secret key of the repository; store it as you would the passphrase");
            out!("{}", secret.expose_secret());
        }
    }
    Ok(ExitCode::Ok)
}

/// Re-seals the key in use and says so, with its new id and work factor.
fn resealed(
    g: &Global,
    repo: &coffer_repo::Repository,
    protector: &coffer_repo::keyfile::Protector,
    what: &str,
) -> Result<()> {
    let old = repo.key_kdf_log_n();
    let id = repo.reseal_key(protector)?;
    let new = match protector {
        coffer_repo::keyfile::Protector::Passphrase { log_n, .. } => {
            Some(log_n.unwrap_or(coffer_repo::crypto::DEFAULT_KDF_LOG_N))
        }
        _ => None,
    };
    let mib = |n: Option<u8>| n.map(coffer_repo::crypto::kdf_mib);
    if g.json {
        print_json(&serde_json::json!({
            "id": id.to_hex(), "previous": repo.key_id().to_hex(),
            "kdf_log_n": new, "kdf_mib": mib(new), "previous_kdf_log_n": old,
        }));
    } else {
        out!(
            "{what}: key {} is now {} (scrypt 2^{} takes {} MiB to open{})",
            repo.key_id().short(),
            id.short(),
            new.unwrap_or(0),
            mib(new).unwrap_or(0),
            old.map(|o| format!("; it took {} MiB", mib(Some(o)).unwrap_or(0)))
                .unwrap_or_default()
        );
    }
    Ok(())
}
