//! The `ch-ingest` command line, as a library: argument parsing and
//! dispatch here, each subcommand's work in its own module. The binary
//! (`main.rs`) only sets the allocator and logging and calls [`run`]; the
//! benches and tests of this package use [`workloads`] directly.

mod cluster_bench;
mod door_bench;
mod http_load;
mod inspect;
mod load;
mod replay;
mod serve;
mod shape_bench;
mod sweep;
mod tls_args;
pub mod workloads;

use clap::{Parser, Subcommand};

/// ch-ingest: get millions of small events per second into ClickHouse.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Drive the engine the way a busy server would, then report.
    Load(load::LoadArgs),
    /// Print a RowBinary batch file as JSON lines.
    Inspect(inspect::InspectArgs),
    /// Benchmarks against a real ClickHouse (`bench sweep`).
    Bench(sweep::BenchArgs),
    /// Send spill files and dead letters in a directory to ClickHouse.
    Replay(replay::ReplayArgs),
    /// Run as an HTTP ingest sidecar (NDJSON in, ClickHouse INSERTs out).
    Serve(serve::ServeArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Load(args) => load::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Bench(args) => sweep::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Serve(args) => serve::run(args),
    }
}

/// `10s`, `500ms`, `2m`, `1h`, or plain seconds.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected a number and a unit (ms, s, m, h)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("`{s}`: not a duration of zero or more"))
}

/// The latency histogram of the load reports: 1 ns to 10 minutes (a larger
/// value counts as 10 minutes) at 3 significant digits, mergeable across
/// threads. Fixed bounds: recording never allocates.
fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 600_000_000_000, 3)
        .expect("bounds and digits are constants in range")
}
