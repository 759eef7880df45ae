//! plugin-load: how long loading a plugin takes, cold (compile) and cached (from the on-disk
//! compile cache), and a full call (instantiate + describe) on top.
//!
//! `cargo build --release --workspace && ./target/release/plugin-load`
//!
//! Goal (issue 3): the second load of a cached plugin under 10 ms.

use std::time::Instant;

use coffer::plugins;
use coffer_runtime::{Origin, Plugin, Runtime};

fn main() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let (wasm, _) = plugins::resolve_wasm("xianyu", None)?;
    println!("plugin xianyu: {} bytes of wasm", wasm.len());
    let runtime = Runtime::get(Some(cache.path()))?;

    let t = Instant::now();
    runtime.prepare(&wasm)?;
    let cold = t.elapsed();
    println!(
        "first load (compile with Cranelift, write the cache): {:>8.2} ms",
        cold.as_secs_f64() * 1e3
    );

    let mut cached = vec![];
    for _ in 0..20 {
        let t = Instant::now();
        runtime.prepare(&wasm)?;
        cached.push(t.elapsed().as_secs_f64() * 1e3);
    }
    cached.sort_by(f64::total_cmp);
    let median = cached[cached.len() / 2];
    println!("second load (from the compile cache), median of 20: {median:>8.2} ms (min {:.2}, max {:.2})", cached[0], cached[cached.len() - 1]);

    let mut full = vec![];
    for _ in 0..20 {
        let t = Instant::now();
        let p = Plugin::load(wasm.clone(), Origin::Builtin, Some(cache.path()))?;
        std::hint::black_box(&p.info);
        full.push(t.elapsed().as_secs_f64() * 1e3);
    }
    full.sort_by(f64::total_cmp);
    println!(
        "cached load + instantiate + describe, median of 20:  {:>8.2} ms",
        full[full.len() / 2]
    );
    println!(
        "goal: second load under 10 ms: {}",
        if median < 10.0 { "MET" } else { "NOT MET" }
    );
    Ok(())
}
