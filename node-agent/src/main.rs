//! `driftless`: the node agent and standalone CLI.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use driftless_agent::config::{self, Config, EnvFile, StandaloneSecrets};
use driftless_agent::facts::inventory;
use driftless_agent::host::HostPaths;
use driftless_agent::server::{self, AppState, Metrics};

/// Keeps hosts where Git says they should be, and shows where they are not.
#[derive(Parser, Debug)]
#[command(name = "driftless", version, about, max_term_width = 100)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Json, env = "DRIFTLESS_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter (`info`, `debug`, `driftless_agent=trace`).
    #[arg(long, global = true, default_value = "info", env = "DRIFTLESS_LOG")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

#[derive(clap::Args, Debug)]
struct ConfigArgs {
    /// Configuration directory (read recursively). Default: ~/.config/driftless/config.
    #[arg(long, env = "DRIFTLESS_CONFIG")]
    config: Option<PathBuf>,
    /// Env file with secrets. Default: ~/.config/driftless/env, when it exists.
    #[arg(long, env = "DRIFTLESS_ENV_FILE")]
    env_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a configuration directory without touching the host; exits 1 on any problem.
    Validate {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the host's facts inventory as JSON.
    Facts {
        /// Host root: every host path is read below it (`/host` in a DaemonSet).
        #[arg(long, default_value = "/", env = "DRIFTLESS_ROOT")]
        root: PathBuf,
    },
    /// Run the agent: load the configuration and serve /healthz and /metrics until stopped.
    /// SIGHUP reloads the configuration; an invalid one is refused and the last good one stays.
    Agent {
        #[command(flatten)]
        config: ConfigArgs,
        /// Host root: every host path is read below it (`/host` in a DaemonSet).
        #[arg(long, default_value = "/", env = "DRIFTLESS_ROOT")]
        root: PathBuf,
        /// Address of the HTTP endpoints.
        #[arg(long, default_value = "0.0.0.0:9779", env = "DRIFTLESS_LISTEN")]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "driftless failed");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, filter: &str) {
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

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate { config } => validate(&config),
        Command::Facts { root } => {
            let facts = inventory::gather(&HostPaths::under(root));
            println!("{}", serde_json::to_string_pretty(&facts)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent {
            config,
            root,
            listen,
        } => agent(&config, root, listen),
    }
}

/// The directory and secrets a command reads.
fn sources(args: &ConfigArgs) -> anyhow::Result<(PathBuf, StandaloneSecrets)> {
    let dir = args.config.clone().unwrap_or_else(config::default_dir);
    let env_file = match &args.env_file {
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

fn validate(args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let (dir, secrets) = sources(args)?;
    match config::load(&dir, &secrets) {
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

fn summary(config: &Config) -> String {
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

fn agent(args: &ConfigArgs, root: PathBuf, listen: SocketAddr) -> anyhow::Result<ExitCode> {
    let (dir, secrets) = sources(args)?;
    let host = HostPaths::under(&root);
    let metrics = Metrics::new();
    let loaded = match config::load(&dir, &secrets) {
        Ok(config) => config,
        Err(errors) => {
            metrics.config_loaded(Err(()));
            for error in &errors.0 {
                tracing::error!(config = %dir.display(), problem = %error, "invalid configuration");
            }
            anyhow::bail!(
                "{}: {} problems in the configuration; run `driftless validate --config {}`",
                dir.display(),
                errors.0.len(),
                dir.display()
            );
        }
    };
    metrics.config_loaded(Ok(&loaded));
    let facts = inventory::gather(&host);
    if facts.os.pretty_name.is_empty() && facts.kernel.release.is_empty() {
        tracing::warn!(root = %root.display(), "no host facts readable below the root; is the host mounted there?");
    }
    tracing::info!(
        config = %dir.display(),
        root = %root.display(),
        host = %facts.hostname,
        os = %facts.os.pretty_name,
        kernel = %facts.kernel.release,
        node = std::env::var("NODE_NAME").unwrap_or_default(),
        resources = %summary(&loaded),
        "agent starting"
    );
    let state = Arc::new(AppState {
        metrics,
        config: Mutex::new(loaded),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(state, dir, secrets, listen))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    state: Arc<AppState>,
    dir: PathBuf,
    secrets: StandaloneSecrets,
    listen: SocketAddr,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "serving /healthz and /metrics");
    let mut hangup = signal(SignalKind::hangup())?;
    let reload_state = state.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            reload(&reload_state, &dir, &secrets);
        }
    });
    let mut terminate = signal(SignalKind::terminate())?;
    axum::serve(listener, server::router(state))
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!("shutting down");
        })
        .await?;
    Ok(())
}

/// Reloads the configuration; an invalid one is refused and the current one stays in force.
fn reload(state: &AppState, dir: &Path, secrets: &StandaloneSecrets) {
    match config::load(dir, secrets) {
        Ok(config) => {
            state.metrics.config_loaded(Ok(&config));
            tracing::info!(resources = %summary(&config), "configuration reloaded");
            if let Ok(mut current) = state.config.lock() {
                *current = config;
            }
        }
        Err(errors) => {
            state.metrics.config_loaded(Err(()));
            for error in &errors.0 {
                tracing::error!(config = %dir.display(), problem = %error, "invalid configuration refused; keeping the last good one");
            }
        }
    }
}
