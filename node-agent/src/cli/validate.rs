//! `driftless validate`.

use std::process::ExitCode;

use super::{summary, ConfigArgs};
use crate::config;

/// Flags of `driftless validate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

/// Prints every problem and exits 1, or a summary and exits 0.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (dir, secrets) = args.config.sources()?;
    // Templates and `when` conditions are checked too (crate::apply::validate), so a bad
    // template is reported here rather than half-way through an apply.
    let loaded = config::load(&dir, &secrets).and_then(|config| {
        let problems = crate::apply::validate::check(&config);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(config::ConfigErrors(problems))
        }
    });
    match loaded {
        Ok(config) => {
            println!("{}: {}", dir.display(), summary(&config));
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("{}: {error}", dir.display());
            }
            let n = errors.0.len();
            eprintln!(
                "{}: {n} problem{} found; nothing was applied",
                dir.display(),
                if n == 1 { "" } else { "s" }
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
