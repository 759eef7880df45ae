//! coffer: backs up and restores whole self-hosted applications.
//!
//! This crate is the top of the host's layers (docs/ARCHITECTURE.md):
//! - `coffer-store`: where objects are stored (local folder, memory, S3) and the wrappers
//!   around a store (retries);
//! - `coffer-repo`: the repository format and its engines (backup, restore, check, prune, copy,
//!   retention);
//! - `coffer-runtime`: the plugin runtime (wasmtime, the WIT bindings, the capabilities);
//! - here: [`config`] (coffer.toml), [`plugins`] (the built-in plugins), and [`ops`], the
//!   operations the front ends run ("back up app X", "forget by policy P"), which report through
//!   an [`ops::Events`] sink; [`cron`] (schedules); the `coffer` binary's command line in
//!   `src/cli/` and its daemon, `coffer serve`, in `src/serve/`.

pub mod config;
pub mod cron;
pub mod error;
pub mod ops;
pub mod plugins;

pub use error::{Error, ExitCode, Result};
