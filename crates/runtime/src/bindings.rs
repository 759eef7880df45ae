//! The one place `bindgen!` runs: host-side bindings of the `coffer:plugin` world in ../wit.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "app",
    with: {
        "coffer:plugin/host.process": crate::process::Process,
    },
});

pub use self::coffer::plugin::host as wit_host;
pub use self::coffer::plugin::types as wit;
