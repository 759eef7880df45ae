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
