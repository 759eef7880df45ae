//! The `coffer` binary: parses the command line, runs the command, maps errors to exit codes.

mod cli;

use std::io::IsTerminal;

use clap::Parser;

fn main() {
    let args = cli::Args::parse();
    let filter = if args.global.verbose { "coffer=debug" } else { "coffer=warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COFFER_LOG").unwrap_or_else(|_| filter.into()),
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
            eprintln!("coffer: error: {msg}");
            if json {
                println!("{}", serde_json::json!({ "error": msg, "exit_code": code as i32 }));
            }
            code
        }
    };
    std::process::exit(code as i32);
}

fn exit_code(err: &anyhow::Error) -> coffer::ExitCode {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<coffer::Error>() {
            return e.exit_code();
        }
    }
    coffer::ExitCode::Failure
}
