//! Errors of the operations layer, and the exit codes every error of the host maps to.
//!
//! The rules the host's errors follow (each layer's own enum keeps them too):
//! 1. It says what happened and names the object, path or setting involved.
//! 2. Where the user can do something about it, it says what (the flag, the command).
//! 3. It is one line; causes are chained with `source()`, never glued into a panic.
//! 4. Its kind decides the process exit code ([`ExitCode`], docs/CLI.md), so scripts can tell a
//!    wrong password from a corrupted repository without parsing text.

use std::path::PathBuf;

use coffer_runtime::PluginError;
use coffer_store::BackendError;

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
    /// `upgrade` failed and was rolled back: the app runs as before the upgrade.
    RolledBack = 17,
    /// `upgrade` failed and so did its rollback (or `--no-rollback` left it): act now.
    RollbackFailed = 18,
    /// A drill's restore or verify failed: that snapshot would not bring the app back.
    DrillFailed = 19,
}

impl ExitCode {
    /// The exit code for a storage error.
    pub fn of_backend(e: &BackendError) -> ExitCode {
        match e {
            BackendError::NotFound { .. } => ExitCode::Integrity,
            BackendError::Missing { .. } | BackendError::NoBucket { .. } => ExitCode::NoRepository,
            _ => ExitCode::Failure,
        }
    }

    /// The exit code for an error of the repository layer.
    pub fn of_repo(e: &coffer_repo::Error) -> ExitCode {
        use coffer_repo::Error as E;
        match e {
            E::NoRepository { .. } => ExitCode::NoRepository,
            E::WrongKey { .. } | E::NoUsableKey { .. } => ExitCode::WrongKey,
            E::WriteOnly { .. } => ExitCode::WriteOnly,
            E::Corrupt { .. } | E::MissingChunk { .. } => ExitCode::Integrity,
            E::Backend(b) => ExitCode::of_backend(b),
            E::Unsafe(_) => ExitCode::Unsafe,
            _ => ExitCode::Failure,
        }
    }

    /// The exit code for an error chain: the first cause of a kind coffer knows decides.
    pub fn of_chain<'a>(
        chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
    ) -> ExitCode {
        for cause in chain {
            if let Some(e) = cause.downcast_ref::<Error>() {
                return e.exit_code();
            }
            if let Some(e) = cause.downcast_ref::<coffer_repo::Error>() {
                return ExitCode::of_repo(e);
            }
            if cause.downcast_ref::<PluginError>().is_some() {
                return ExitCode::Plugin;
            }
            if let Some(e) = cause.downcast_ref::<BackendError>() {
                return ExitCode::of_backend(e);
            }
        }
        ExitCode::Failure
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Repo(#[from] coffer_repo::Error),

    #[error(transparent)]
    Plugin(#[from] PluginError),

    #[error("{0}")]
    Invalid(String),
}

impl From<BackendError> for Error {
    fn from(e: BackendError) -> Self {
        Error::Repo(e.into())
    }
}

impl Error {
    /// A file or folder that could not be read or written (one kind for every layer).
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Repo(coffer_repo::Error::io(path, source))
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Repo(e) => ExitCode::of_repo(e),
            Error::Plugin(_) => ExitCode::Plugin,
            _ => ExitCode::Failure,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
