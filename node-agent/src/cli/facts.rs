//! `driftless facts`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::facts::inventory;
use crate::host::HostPaths;

/// Flags of `driftless facts`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Host root: every host path is read below it (`/host` in a DaemonSet).
    #[arg(long, default_value = "/", env = "DRIFTLESS_ROOT")]
    root: PathBuf,
}

/// Prints the inventory as JSON.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let facts = inventory::gather(&HostPaths::under(&args.root));
    println!("{}", serde_json::to_string_pretty(&facts)?);
    Ok(ExitCode::SUCCESS)
}
