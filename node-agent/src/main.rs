//! `driftless`: the node agent and standalone CLI.

use std::process::ExitCode;

use clap::Parser;
use driftless_agent::cli::{init_logging, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match cli.run() {
        Ok(code) => code,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "driftless failed");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
