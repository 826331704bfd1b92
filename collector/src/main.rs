//! The `kotel` binary: parses the command line, sets up logging and runs a command.

use std::io::IsTerminal;

use clap::Parser;
use kotel_collector::agent::export_tls;
use kotel_collector::cli::{Cli, Command, ConfigCommand};
use kotel_collector::commands::{capture, run};
use kotel_collector::config::{Config, DEFAULT_TOML};

fn main() {
    let cli = Cli::parse(); // exits 2 naming the flag on a bad value
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KOTEL_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();

    let result: Result<(), (i32, String)> = match &cli.command {
        Command::Capture(args) => capture::run(args).map_err(|e| (e.exit_code(), e.to_string())),
        Command::Run(args) => run::run(args).map_err(|e| (e.exit_code(), e.to_string())),
        Command::Config(ConfigCommand::Default) => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
        Command::Config(ConfigCommand::Check { path }) => Config::load(path)
            .and_then(|c| c.validate().map(|()| c))
            .map_err(|e| (2, e.to_string()))
            .and_then(|c| {
                // TLS files are read and checked too (their contents are never printed).
                let tls = export_tls(&c.export.tls);
                if tls.has_files() {
                    kotel_collector::export::tls::client_config(&tls, &[])
                        .map_err(|e| (2, format!("export: {e}")))?;
                }
                println!("{c:#?}");
                Ok(())
            }),
    };
    if let Err((code, message)) = result {
        eprintln!("kotel: error: {message}");
        std::process::exit(code);
    }
}
