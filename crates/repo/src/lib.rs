//! coffer-repo: the repository format and the engines that drive it.
//!
//! Layers inside, each driving only those above it in this list:
//! - [`id`], [`crypto`] (ids and encryption), [`chunker`] (content-defined chunking);
//! - the format: [`config`], [`keyfile`], [`pack`], [`index`], [`marks`], [`snapshot`], [`tree`],
//!   held together by the [`Repository`], which owns the object layout in the store;
//! - engines: [`archiver`] (backup), [`restorer`], [`checker`], [`prune`], [`copy`], with
//!   [`retention`] deciding what `forget` keeps.
//!
//! This crate knows nothing of plugins, coffer.toml or the command line.

pub mod archiver;
pub mod checker;
pub mod chunker;
pub mod config;
pub mod copy;
pub mod crypto;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod id;
pub mod index;
pub mod keyfile;
pub mod marks;
pub mod pack;
pub mod prune;
pub mod repair;
mod repository;
pub mod restorer;
pub mod retention;
pub mod snapshot;
pub mod tree;
pub mod walk;

pub use coffer_store::parallel_map;
pub use error::{Error, Result};
pub use repository::{ChunkReader, InitOptions, KeyInfo, Repository, StoredPack};

/// This machine's host name, as snapshots and key files record it.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}
