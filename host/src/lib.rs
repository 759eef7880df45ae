//! coffer: backs up and restores whole self-hosted applications.
//!
//! Layers, each driving only the one below it:
//! - [`backend`]: where objects are stored (object_store: local folder, memory, S3);
//! - [`repo`]: the repository format (config, keys, packs, index, snapshots, trees), with
//!   [`crypto`] for ids and encryption and [`chunker`] for content-defined chunking;
//! - engines: [`archiver`] (backup), [`restorer`], [`checker`], [`prune`], [`copy`];
//! - the `coffer` binary's command line, in `src/cli/`.

pub mod app;
pub mod archiver;
pub mod backend;
pub mod checker;
pub mod chunker;
pub mod config;
pub mod copy;
pub mod crypto;
pub mod error;
pub mod id;
pub mod plugin;
pub mod prune;
pub mod repo;
pub mod restorer;
pub mod retention;

pub use error::{Error, ExitCode, Result};

/// This machine's host name, as snapshots and key files record it.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}
