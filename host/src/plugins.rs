//! The plugins this binary ships, and how an app's `plugin = "…"` reference becomes wasm.

use coffer_runtime::{Origin, PluginError};

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// Names of the built-in plugins.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// Whether an app restore may run a plugin stored in a snapshot: only code the operator trusts
/// runs with the app's grants, never code a snapshot merely carries (a write-only key can write
/// snapshots). Trusted: a built-in plugin of this binary, the app's pin (`blake3`), and the
/// hashes listed in its `trusted_plugins` (where `--trust-plugin` adds one).
pub fn trusted(blake3: &str, pin: Option<&str>, listed: &[String]) -> bool {
    let is = |h: &str| h.eq_ignore_ascii_case(blake3);
    BUILTIN
        .iter()
        .any(|(_, wasm)| is(blake3::hash(wasm).to_hex().as_str()))
        || pin.is_some_and(is)
        || listed.iter().any(|h| is(h))
}

/// The wasm a plugin reference names: a built-in name, or a path (which must match its pin).
pub fn resolve_wasm(reference: &str, pin: Option<&str>) -> Result<(Vec<u8>, Origin), PluginError> {
    if let Some((_, wasm)) = BUILTIN.iter().find(|(n, _)| *n == reference) {
        return Ok((wasm.to_vec(), Origin::Builtin));
    }
    if !(reference.ends_with(".wasm") || reference.contains('/')) {
        return Err(PluginError::Unknown(
            reference.into(),
            builtin_names().join(", "),
        ));
    }
    let wasm =
        std::fs::read(reference).map_err(|e| PluginError::Invalid(format!("{reference}: {e}")))?;
    let found = blake3::hash(&wasm).to_hex().to_string();
    match pin {
        None => return Err(PluginError::Unpinned(found)),
        Some(p) if !p.eq_ignore_ascii_case(&found) => {
            return Err(PluginError::PinMismatch {
                path: reference.into(),
                found,
                pinned: p.into(),
            })
        }
        _ => {}
    }
    Ok((wasm, Origin::File(reference.into())))
}
