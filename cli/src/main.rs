//! The `ch-ingest` command line: `load` drives the engine like a busy server.

// The binary (never the library) picks the allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ch_ingest_cli as cli;
use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        // With RUST_LOG=ch_ingest=info, each INSERT attempt is one line
        // (its span closing, with table, rows, bytes, attempt, outcome, time).
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .init();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // With its causes: a TLS failure is "client error (Connect)"
            // on top and the certificate's reason only further down.
            let mut text = e.to_string();
            let mut cause = e.source();
            while let Some(inner) = cause {
                let more = inner.to_string();
                if !text.contains(&more) {
                    text.push_str(": ");
                    text.push_str(&more);
                }
                cause = inner.source();
            }
            eprintln!("error: {text}");
            std::process::ExitCode::FAILURE
        }
    }
}
