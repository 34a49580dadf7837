//! The `driftless` command line: one module per command.

mod agent;
mod apply;
mod drift;
mod facts;
mod logs;
mod plugins;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, EnvFile, StandaloneSecrets};

/// Keeps hosts where Git says they should be, and shows where they are not.
#[derive(Parser, Debug)]
#[command(name = "driftless", version, about, max_term_width = 100)]
pub struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Json, env = "DRIFTLESS_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter (`info`, `debug`, `driftless_agent=trace`).
    #[arg(long, global = true, default_value = "info", env = "DRIFTLESS_LOG")]
    pub log_level: String,
    /// Plugin directory: `NAME.wasm` WebAssembly plugins.
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/driftless/plugins",
        env = "DRIFTLESS_PLUGIN_DIR"
    )]
    pub plugin_dir: PathBuf,
    /// Where compiled plugin code is kept between runs.
    #[arg(
        long,
        global = true,
        default_value = "/var/cache/driftless/plugins",
        env = "DRIFTLESS_PLUGIN_CACHE"
    )]
    pub plugin_cache: PathBuf,
    #[command(subcommand)]
    command: Command,
}

/// Log formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// Where the configuration and its secrets are.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Configuration directory (read recursively). Default: ~/.config/driftless/config.
    #[arg(long, env = "DRIFTLESS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Env file with secrets. Default: ~/.config/driftless/env, when it exists.
    #[arg(long, env = "DRIFTLESS_ENV_FILE")]
    pub env_file: Option<PathBuf>,
}

impl ConfigArgs {
    /// The configuration directory and the secrets to resolve its references with.
    pub fn sources(&self) -> anyhow::Result<(PathBuf, StandaloneSecrets)> {
        let dir = self.config.clone().unwrap_or_else(config::default_dir);
        let env_file = match &self.env_file {
            Some(path) => EnvFile::read(path, &dir).map_err(anyhow::Error::msg)?,
            None => {
                let default = config::config_home().join("env");
                if default.exists() {
                    EnvFile::read(&default, &dir).map_err(anyhow::Error::msg)?
                } else {
                    EnvFile::default()
                }
            }
        };
        Ok((dir, StandaloneSecrets::from_process(env_file)))
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a configuration directory without touching the host; exits 1 on any problem.
    Validate(validate::Args),
    /// Print the host's facts inventory as JSON.
    Facts(facts::Args),
    /// Run the agent: ApplyPolicies, facts and log pipelines from a configuration directory
    /// (--standalone) or the API server (--kubernetes, the default in a pod), serving /healthz,
    /// /metrics and /report until stopped. A changed directory or SIGHUP reloads it; an invalid
    /// configuration is refused and the last good one stays.
    Agent(agent::Args),
    /// Make the host match its ApplyPolicies (or, with --dry-run, show what would change).
    Apply(apply::Args),
    /// Check the host against its ApplyPolicies, or resolve the drift found.
    Drift(drift::Args),
    /// Run the log pipelines in the foreground: tail, parse, transform and forward files.
    /// SIGHUP reloads the configuration.
    Logs(logs::Args),
    /// List, check and install WebAssembly plugins.
    Plugins(plugins::Args),
}

impl Cli {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        crate::plugins::configure(crate::plugins::Settings {
            dir: self.plugin_dir,
            cache: self.plugin_cache,
        });
        match self.command {
            Command::Validate(args) => validate::run(&args),
            Command::Facts(args) => facts::run(&args),
            Command::Agent(args) => agent::run(&args),
            Command::Apply(args) => apply::run(&args),
            Command::Drift(args) => drift::run(&args),
            Command::Logs(args) => logs::run(&args),
            Command::Plugins(args) => plugins::run(&args),
        }
    }
}

/// Sets up `tracing` on standard error.
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}

/// `N resources valid (ApplyPolicy 2, ...)`.
pub fn summary(config: &config::Config) -> String {
    let counts: Vec<String> = config
        .counts()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    format!(
        "{} resources valid ({})",
        config.resources.len(),
        counts.join(", ")
    )
}
