//! `driftless apply`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;

use super::ConfigArgs;
use crate::apply::template::Templates;
use crate::apply::{self, Environment, Options, Root};
use crate::config::{self, Config};

/// Report formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// Where the host is and which configuration applies to it.
#[derive(clap::Args, Debug, Clone)]
pub struct HostArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The host's root filesystem: every path and command is below it (`/host` in a DaemonSet).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
}

/// Flags of `driftless apply`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    host: HostArgs,
    /// Change nothing; show what would change (diffs for content, before → after otherwise).
    #[arg(long)]
    dry_run: bool,
    /// Run only this task or handler (repeatable).
    #[arg(long = "only", value_name = "NAME")]
    only: Vec<String>,
    /// Skip this task or handler (repeatable).
    #[arg(long = "skip", value_name = "NAME")]
    skip: Vec<String>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Where audit records wait until the policy's audit sinks acknowledged them.
    #[arg(long, env = "DRIFTLESS_AUDIT_SPOOL", default_value = crate::audit::DEFAULT_SPOOL)]
    audit_spool: PathBuf,
}

/// A checked configuration and the host it applies to, ready for the engine.
pub struct Loaded {
    /// The configuration directory.
    pub dir: PathBuf,
    /// The configuration.
    pub config: Config,
    /// Secrets and environment variables.
    pub secrets: config::StandaloneSecrets,
    /// The host root.
    pub root: Root,
    /// The host's facts (`facts` in templates and `when`).
    pub facts: serde_json::Value,
    /// The templates, parsed once by validation and reused by the run.
    pub templates: Templates,
}

impl Loaded {
    /// The engine's view of it.
    pub fn env(&self) -> Environment<'_> {
        Environment {
            root: &self.root,
            facts: &self.facts,
            secrets: &self.secrets,
            config_dir: &self.dir,
        }
    }
}

/// Loads and checks the configuration and gathers the host's facts; prints every problem and
/// returns `None` when the configuration is invalid.
pub fn load(host: &HostArgs) -> anyhow::Result<Option<Loaded>> {
    let (dir, secrets) = host.config.sources()?;
    let templates = Templates::new();
    let loaded = config::load(&dir, &secrets).and_then(|config| {
        let problems = apply::validate::check_with(&config, &templates);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(config::ConfigErrors(problems))
        }
    });
    let config = match loaded {
        Ok(config) => config,
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
            return Ok(None);
        }
    };
    let root = Root::new(&host.root);
    let facts = serde_json::to_value(crate::facts::inventory::gather(&root.paths))?;
    Ok(Some(Loaded {
        dir,
        config,
        secrets,
        root,
        facts,
        templates,
    }))
}

/// Runs the apply and prints the report. Exits 1 when a task failed or the configuration is
/// invalid.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load(&args.host)? else {
        return Ok(ExitCode::FAILURE);
    };
    let options = Options {
        dry_run: args.dry_run,
        only: args.only.clone(),
        skip: args.skip.clone(),
    };
    let report = apply::apply_with(&loaded.config, &loaded.env(), &options, &loaded.templates);
    // Audit delivery never changes the outcome: problems are logged, records stay spooled.
    let audit_problems =
        crate::audit::deliver(&report, &loaded.config, &loaded.secrets, &args.audit_spool);
    for problem in &audit_problems {
        eprintln!("audit: {problem}");
    }
    match args.output {
        Output::Text => print!("{}", report.to_text()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(if report.counts().failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
