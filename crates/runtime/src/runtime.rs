//! The wasmtime runtime: one engine, compiled components cached on disk, and a fresh store with
//! its own limits for every call.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{App, AppPre};
use crate::caps::Caps;
use crate::PluginError;

/// How often the epoch advances; time limits are counted in these ticks.
const TICK: Duration = Duration::from_millis(10);

/// What a store holds for one call.
pub struct State {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    limits: StoreLimits,
    pub caps: Caps,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The engine and linker, shared by every plugin of the process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    cache_dir: Option<PathBuf>,
}

static RUNTIME: OnceLock<Result<Arc<Runtime>, String>> = OnceLock::new();

impl Runtime {
    /// The process's runtime, created on first use with its compile cache under `cache_dir`.
    pub fn get(cache_dir: Option<&Path>) -> Result<Arc<Runtime>, PluginError> {
        RUNTIME
            .get_or_init(|| {
                Runtime::new(cache_dir.map(|d| d.join("plugins")))
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(PluginError::Runtime)
    }

    fn new(cache_dir: Option<PathBuf>) -> wasmtime::Result<Runtime> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        App::add_to_linker::<State, wasmtime::component::HasSelf<State>>(&mut linker, |s| s)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("coffer-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                match weak.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => break,
                }
            })?;
        Ok(Runtime {
            engine,
            linker,
            cache_dir,
        })
    }

    /// Compiles a component, or loads it from the cache (keyed by the wasm's BLAKE3 and the
    /// wasmtime version, so an upgraded coffer never loads stale machine code).
    /// Compiles (or loads from the cache) and links a plugin without calling it: the part of
    /// [`crate::Plugin::load`] before `describe` (the plugin-load benchmark times it).
    pub fn prepare(&self, wasm: &[u8]) -> Result<(), PluginError> {
        self.load(wasm).map(|_| ())
    }

    pub(crate) fn load(&self, wasm: &[u8]) -> Result<(AppPre<State>, String), PluginError> {
        let hash = blake3::hash(wasm).to_hex().to_string();
        let component = match &self.cache_dir {
            Some(dir) => {
                let path = dir.join(format!("{hash}-wasmtime-{}.cwasm", wasmtime_version()));
                self.cached(&path, wasm)?
            }
            None => Component::new(&self.engine, wasm)
                .map_err(|e| PluginError::Invalid(format!("{e:#}")))?,
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        let pre = AppPre::new(pre).map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        Ok((pre, hash))
    }

    #[allow(unsafe_code)]
    fn cached(&self, path: &Path, wasm: &[u8]) -> Result<Component, PluginError> {
        if path.is_file() {
            // SAFETY: the file was written by `Engine::precompile_component` of this wasmtime
            // version into the user's own cache folder (0700); wasmtime checks its header and
            // version and refuses files it did not produce, and any error falls back to
            // compiling from the wasm, whose hash names the file.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!("ignoring cached plugin {}: {e:#}", path.display()),
            }
        }
        let bytes = self
            .engine
            .precompile_component(wasm)
            .map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            }
            let tmp = dir.join(format!(".tmp-{}", std::process::id()));
            if std::fs::write(&tmp, &bytes)
                .and_then(|_| std::fs::rename(&tmp, path))
                .is_err()
            {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        // SAFETY: produced just now by this engine.
        unsafe { Component::deserialize(&self.engine, &bytes) }
            .map_err(|e| PluginError::Invalid(format!("{e:#}")))
    }

    /// A store for one call: the app folder readable at `/app`, nothing else; no environment,
    /// no network; memory and time limits.
    pub fn store(
        &self,
        caps: Caps,
        memory_mib: u64,
        time_limit: Duration,
    ) -> Result<Store<State>, PluginError> {
        let mut b = WasiCtx::builder();
        b.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        b.preopened_dir(&caps.dir, "/app", FsPerms::ReadOnly)
            .map_err(|e| {
                PluginError::Runtime(format!(
                    "cannot open the app folder {}: {e:#}",
                    caps.dir.display()
                ))
            })?;
        // A Rust plugin is a handful of core instances; a componentize-py one (CPython and its
        // libraries linked as separate modules sharing one memory) a few dozen. The memory limit
        // is per linear memory, so their count is capped too.
        let limits = StoreLimitsBuilder::new()
            .memory_size((memory_mib as usize) << 20)
            .instances(64)
            .memories(4)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            State {
                wasi: b.build(),
                table: ResourceTable::new(),
                limits,
                caps,
            },
        );
        store.limiter(|s| &mut s.limits);
        let ticks = (time_limit.as_millis() / TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        Ok(store)
    }
}

fn wasmtime_version() -> &'static str {
    // The crate version is the only thing that changes machine code for a given engine config.
    "48"
}
