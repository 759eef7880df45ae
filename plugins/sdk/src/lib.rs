//! The coffer plugin SDK: everything a plugin author touches.
//!
//! A plugin teaches coffer one application: what to capture, how to make the capture consistent,
//! how to put it back, how to tell it is healthy. It runs sandboxed as a WebAssembly component;
//! it asks the host to move bytes (files, dumps, database copies, downloads) and never sees
//! them itself. Implement [`Plugin`], then [`export_plugin!`] it:
//!
//! ```ignore
//! use coffer_plugin_sdk::prelude::*;
//!
//! #[derive(Default)]
//! struct Notes;
//!
//! impl Plugin for Notes {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("notes", env!("CARGO_PKG_VERSION"), "The notes app").item("data")
//!     }
//!     fn capture(_settings: &Settings) -> Result<Json> {
//!         host::capture_path("data", "data")?;
//!         Ok(json!({}))
//!     }
//!     fn restore(_settings: &Settings, _snapshot: &Snapshot, _only: &[String]) -> Result<()> {
//!         host::restore_item("data", "data")?;
//!         Ok(())
//!     }
//! }
//!
//! export_plugin!(Notes);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` is the plugin.

pub mod compose;
pub mod host;
mod info;
pub mod pg;

pub use info::{Capability, Check, PluginInfo, SettingSpec, Settings, Snapshot};
pub use serde_json::{self, json, Map as JsonMap, Value as Json};

/// The version of the `coffer:plugin` WIT package this SDK implements.
pub const WIT_VERSION: &str = "0.1.3";

/// An error a plugin reports: one line that tells the user what failed and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl Error {
    pub fn msg(m: impl std::fmt::Display) -> Error {
        Error(m.to_string())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error(s.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error(format!("JSON: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns early with an [`Error`] built like `format!`.
#[macro_export]
macro_rules! bail {
    ($($t:tt)*) => { return Err($crate::Error(format!($($t)*))) };
}

/// Whether a restore given `only` (the `--only` items; empty means all) includes `item`.
pub fn wanted(only: &[String], item: &str) -> bool {
    only.is_empty() || only.iter().any(|o| o == item)
}

/// `check` once a second until it passes or `limit` has passed since `begun`; its last answer.
pub fn retry_until(begun: std::time::Instant, limit: std::time::Duration, check: impl Fn() -> std::result::Result<(), String>) -> std::result::Result<(), String> {
    loop {
        let last = check();
        if last.is_ok() || begun.elapsed() >= limit {
            return last;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// One application, as coffer sees it. Every call gets a fresh instance of the plugin: keep no
/// state between calls.
pub trait Plugin {
    /// Name, version, settings, capabilities and items. Called without host access.
    fn describe() -> PluginInfo;

    /// Captures the app; returns metadata (a JSON object) stored with the snapshot.
    fn capture(settings: &Settings) -> Result<Json>;

    /// Puts the app back. `only` lists the top-level items to restore; empty means all.
    fn restore(settings: &Settings, snapshot: &Snapshot, only: &[String]) -> Result<()>;

    /// Checks the app's data as it is now against the snapshot's metadata. Default: no checks.
    fn verify(_settings: &Settings, _snapshot: Option<&Snapshot>) -> Result<Vec<Check>> {
        Ok(vec![])
    }

    /// Whether the running app is healthy. Default: no checks.
    fn health(_settings: &Settings) -> Result<Vec<Check>> {
        Ok(vec![])
    }

    /// The app's own upgrade step. Default: the app has none.
    fn upgrade(_settings: &Settings, _to_version: &str) -> Result<()> {
        Err(Error::msg("this plugin has no upgrade step"))
    }
}

/// Exports a [`Plugin`] as the component's implementation of the `coffer:plugin/app` world.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        type __CofferPluginAdapter = $crate::__private::Adapter<$plugin>;
        $crate::__private::export_app!(__CofferPluginAdapter with_types_in $crate::__private::bindings);
    };
}

#[doc(hidden)]
pub mod __private {
    //! Generated bindings and the adapter from [`Plugin`] to them; not part of the API.
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "app",
            pub_export_macro: true,
            export_macro_name: "export_app",
            default_bindings_module: "coffer_plugin_sdk::__private::bindings",
        });
    }
    pub use bindings::export_app;

    use super::{Plugin, Settings, Snapshot};
    use bindings::coffer::plugin::types as wit;

    pub struct Adapter<P>(std::marker::PhantomData<P>);

    fn settings(kv: Vec<wit::KeyValue>) -> Settings {
        Settings::from_pairs(kv.into_iter().map(|p| (p.key, p.value)).collect())
    }

    fn checks(v: Vec<super::Check>) -> Vec<wit::Check> {
        v.into_iter().map(|c| wit::Check { name: c.name, ok: c.ok, detail: c.detail }).collect()
    }

    impl<P: Plugin> bindings::Guest for Adapter<P> {
        fn describe() -> wit::PluginInfo {
            P::describe().into_wit()
        }

        fn capture(s: Vec<wit::KeyValue>) -> Result<String, String> {
            P::capture(&settings(s)).map(|v| v.to_string()).map_err(|e| e.0)
        }

        fn restore(s: Vec<wit::KeyValue>, snap: wit::SnapshotInfo, only: Vec<String>) -> Result<(), String> {
            let snap = Snapshot::from_wit(snap).map_err(|e| e.0)?;
            P::restore(&settings(s), &snap, &only).map_err(|e| e.0)
        }

        fn verify(s: Vec<wit::KeyValue>, snap: Option<wit::SnapshotInfo>) -> Result<Vec<wit::Check>, String> {
            let snap = snap.map(Snapshot::from_wit).transpose().map_err(|e| e.0)?;
            P::verify(&settings(s), snap.as_ref()).map(checks).map_err(|e| e.0)
        }

        fn health(s: Vec<wit::KeyValue>) -> Result<Vec<wit::Check>, String> {
            P::health(&settings(s)).map(checks).map_err(|e| e.0)
        }

        fn upgrade(s: Vec<wit::KeyValue>, to: String) -> Result<(), String> {
            P::upgrade(&settings(s), &to).map_err(|e| e.0)
        }
    }
}

/// `use coffer_plugin_sdk::prelude::*;` brings in what a plugin needs.
pub mod prelude {
    pub use crate::compose::{self, Exec, Project, Service};
    pub use crate::host::{self, Command, Request};
    pub use crate::{
        bail, export_plugin, json, wanted, Capability, Check, Error, Json, JsonMap, Plugin, PluginInfo, Result, Settings, Snapshot,
    };
}
