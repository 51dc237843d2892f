//! Command-line front end. Owns argument parsing and dispatch; the work of
//! each subcommand lives in its own module.

mod histogram;
mod inspect;
mod load;
mod replay;
mod sweep;
pub(crate) mod workloads;

use clap::{Parser, Subcommand};

/// ch-ingest: get millions of small events per second into ClickHouse.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

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
}

pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Load(args) => load::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Bench(args) => sweep::run(args),
        Command::Replay(args) => replay::run(args),
    }
}
