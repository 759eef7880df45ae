//! Errors of the repository layer and its engines.
//!
//! The rules every error here follows:
//! 1. It says what happened and names the object, path or setting involved.
//! 2. Where the user can do something about it, it says what (the flag, the command).
//! 3. It is one line; causes are chained with `source()`, never glued into a panic.
//! 4. Its kind decides the process exit code (the binary maps each variant; docs/CLI.md), so
//!    scripts can tell a wrong password from a corrupted repository without parsing text.

use std::path::PathBuf;

use coffer_store::BackendError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Backend(#[from] BackendError),

    #[error("no coffer repository at {location}: run `coffer init` to create one, or point --repo / COFFER_REPOSITORY at an existing one")]
    NoRepository { location: String },

    #[error("a repository already exists at {location}; refusing to overwrite it")]
    AlreadyInitialized { location: String },

    #[error("the passphrase or identity opens none of the {tried} key(s) of this repository: check --password-file / COFFER_PASSWORD / --identity-file")]
    WrongKey { tried: usize },

    #[error("this repository has no key that can be opened with {what}: {hint}")]
    NoUsableKey {
        what: &'static str,
        hint: &'static str,
    },

    #[error("this key is write-only: it can back up but cannot {action}; use a full key (see `coffer key list`)")]
    WriteOnly { action: &'static str },

    #[error("object {object} is damaged: {reason}; run `coffer check --read-data` to see what it affects")]
    Corrupt { object: String, reason: String },

    #[error("chunk {chunk} is not in any index (was it pruned, or is an index object damaged?); run `coffer check`")]
    MissingChunk { chunk: String },

    #[error(
        "unsupported repository format version {found} (this coffer reads version {supported})"
    )]
    UnsupportedVersion { found: u32, supported: u32 },

    #[error("no snapshot matches '{0}': see `coffer snapshots`")]
    NoSuchSnapshot(String),

    #[error("'{0}' matches more than one snapshot: give more digits")]
    AmbiguousSnapshot(String),

    #[error("refusing to restore: {0}")]
    Unsafe(String),

    /// The cause is part of the message and deliberately not a `source()`: the CLI prints the
    /// chain, and would print it twice.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error("{0}")]
    Invalid(String),

    #[error("interrupted")]
    Interrupted,

    #[error("cancelled: the backup stopped at a safe point and saved no snapshot (what it uploaded is unreferenced until prune removes it)")]
    Cancelled,

    #[error(
        "the snapshot was not saved: {detail}; run the backup again (it stores that data anew)"
    )]
    PruneRace { detail: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }

    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
