//! Errors of the coffer library, and the exit codes they map to.
//!
//! The rules every error here follows:
//! 1. It says what happened and names the object, path or setting involved.
//! 2. Where the user can do something about it, it says what (the flag, the command).
//! 3. It is one line; causes are chained with `source()`, never glued into a panic.
//! 4. Its kind decides the process exit code (see [`ExitCode`] and docs/CLI.md), so scripts can
//!    tell a wrong password from a corrupted repository without parsing text.

use std::path::PathBuf;

use crate::backend::BackendError;

/// Documented process exit codes (docs/CLI.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    /// Any failure not covered below.
    Failure = 1,
    /// Bad command line (clap's own code).
    Usage = 2,
    /// A backup was saved but some files could not be read.
    Incomplete = 3,
    /// No repository at the given location.
    NoRepository = 10,
    /// The passphrase or identity opens no key of the repository.
    WrongKey = 11,
    /// The key is write-only and the command needs to read data.
    WriteOnly = 12,
    /// Stored data is damaged or missing (check found problems, an object failed verification).
    Integrity = 13,
    /// Restore refused: the snapshot would write outside the target.
    Unsafe = 14,
    /// An app restore finished and verified, but the app's health checks fail.
    Unhealthy = 15,
    /// A plugin failed, was stopped at a limit, or was refused a capability.
    Plugin = 16,
}

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

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Invalid(String),

    #[error(transparent)]
    Plugin(crate::plugin::PluginError),

    #[error("interrupted")]
    Interrupted,

    #[error(
        "the snapshot was not saved: {detail}; run the backup again (it stores that data anew)"
    )]
    PruneRace { detail: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::NoRepository { .. } => ExitCode::NoRepository,
            Error::WrongKey { .. } | Error::NoUsableKey { .. } => ExitCode::WrongKey,
            Error::WriteOnly { .. } => ExitCode::WriteOnly,
            Error::Corrupt { .. } | Error::MissingChunk { .. } => ExitCode::Integrity,
            Error::Backend(BackendError::NotFound { .. }) => ExitCode::Integrity,
            Error::Backend(BackendError::Missing { .. }) => ExitCode::NoRepository,
            Error::Unsafe(_) => ExitCode::Unsafe,
            Error::Plugin(_) => ExitCode::Plugin,
            _ => ExitCode::Failure,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
