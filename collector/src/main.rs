//! The `kotel` binary: parses the command line, sets up logging and runs a command.

use clap::Parser;
use kotel_collector::capture;
use kotel_collector::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse(); // exits 2 naming the flag on a bad value
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KOTEL_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();

    let result = match &cli.command {
        Command::Capture(args) => capture::run(args),
    };
    if let Err(e) = result {
        eprintln!("kotel: error: {e}");
        std::process::exit(e.exit_code());
    }
}
