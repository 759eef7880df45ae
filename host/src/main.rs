//! The `coffer` binary: parses the command line, runs the command, maps errors to exit codes.

mod cli;
mod serve;

use std::io::IsTerminal;

use clap::Parser;

fn main() {
    tune_allocator();
    let args = cli::Args::parse();
    let filter = if args.global.verbose {
        "coffer=debug"
    } else {
        "coffer=warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COFFER_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .init();
    let json = args.global.json;
    let code = match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            let code = exit_code(&err);
            // The whole chain, once, on one line: "what failed: why".
            let msg = format!("{err:#}");
            {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "coffer: error: {msg}");
            }
            if json {
                cli::out_line(format_args!(
                    "{}",
                    serde_json::json!({ "error": msg, "exit_code": code as i32 })
                ));
            }
            code
        }
    };
    cli::flush_output();
    std::process::exit(code as i32);
}

fn exit_code(err: &anyhow::Error) -> coffer::ExitCode {
    coffer::ExitCode::of_chain(err.chain())
}

/// Keeps freed pack and chunk buffers from piling up in the heap.
///
/// glibc raises its mmap threshold as big blocks are freed (up to 32 MiB), after which every
/// 1–16 MiB chunk and pack buffer is carved from per-thread heaps that keep their peak size.
/// Pinning the threshold at 1 MiB returns those buffers to the kernel on free. Measured on a
/// 1 GiB first backup (coffer-bench): peak RSS 216 MiB before, 133 MiB after, same wall time.
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
