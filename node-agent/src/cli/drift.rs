//! `driftless drift check` and `driftless drift resolve`.

use std::process::ExitCode;

use super::apply::{load, HostArgs, Output};
use crate::apply::{self, Options};
use crate::drift;

/// Flags of `driftless drift`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Report how the host differs from its ApplyPolicies, grouped by domain; changes nothing.
    Check(CheckArgs),
    /// Resolve drift: apply the manifests, or write live values back into the policy files.
    Resolve(ResolveArgs),
}

/// Flags of `driftless drift check`.
#[derive(clap::Args, Debug)]
struct CheckArgs {
    #[command(flatten)]
    host: HostArgs,
    /// Report format; `json` prints items in the DriftReport item shape.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Exit 0 when in sync, 2 when drift was found, 1 on error (default: 0 unless error).
    #[arg(long)]
    detailed_exitcode: bool,
}

/// Flags of `driftless drift resolve`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("prefer").required(true).args(["prefer_manifest", "prefer_system"])))]
struct ResolveArgs {
    #[command(flatten)]
    host: HostArgs,
    /// Make the host match the policies (an apply of the drifted tasks).
    #[arg(long)]
    prefer_manifest: bool,
    /// Write live values back into the policy files (file content, lineInFile, sysctl value,
    /// package version only; everything else is refused).
    #[arg(long)]
    prefer_system: bool,
}

/// Runs `drift check` or `drift resolve`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        Command::Check(a) => check(a),
        Command::Resolve(a) => resolve(a),
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load(&args.host)? else {
        return Ok(ExitCode::FAILURE);
    };
    let (config, env) = (&loaded.config, loaded.env());
    let result = drift::check_with(config, &env, &loaded.templates);
    match args.output {
        Output::Text => print!("{}", result.to_text()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&result)?),
    }
    let code = result.detailed_exit_code();
    Ok(ExitCode::from(match (args.detailed_exitcode, code) {
        (true, c) => c,
        (false, 1) => 1,
        (false, _) => 0,
    }))
}

fn resolve(args: &ResolveArgs) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load(&args.host)? else {
        return Ok(ExitCode::FAILURE);
    };
    let (config, env) = (&loaded.config, loaded.env());
    let found = drift::check_with(config, &env, &loaded.templates);
    if !found.errors.is_empty() {
        print!("{}", found.to_text());
        return Ok(ExitCode::FAILURE);
    }
    if found.items.is_empty() {
        println!("in sync: nothing to resolve");
        return Ok(ExitCode::SUCCESS);
    }
    if args.prefer_manifest {
        let only: Vec<String> = found
            .items
            .iter()
            .filter_map(|i| {
                i.source
                    .as_deref()
                    .and_then(|s| s.split_once('/'))
                    .map(|(_, t)| t.to_owned())
            })
            .collect();
        let report = apply::apply_with(
            config,
            &env,
            &Options {
                dry_run: false,
                only,
                skip: Vec::new(),
            },
            &loaded.templates,
        );
        print!("{}", report.to_text());
        return Ok(if report.counts().failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let resolution = drift::resolve::prefer_system(
        config,
        &loaded.dir,
        &loaded.secrets,
        &loaded.root,
        &found.items,
    );
    for w in &resolution.written {
        println!("wrote {w}");
    }
    for r in &resolution.refused {
        println!("refused {r}");
    }
    Ok(if resolution.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
