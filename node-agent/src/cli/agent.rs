//! `driftless agent`: the long-running agent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use super::{summary, ConfigArgs};
use crate::config::{self, StandaloneSecrets};
use crate::facts::inventory;
use crate::server::{self, AppState, Metrics};

/// Flags of `driftless agent`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    host: super::facts::HostArgs,
    #[command(flatten)]
    collectors: super::facts::CollectorFlags,
    #[command(flatten)]
    logs: super::logs::AgentArgs,
    /// Address of the HTTP endpoints.
    #[arg(long, default_value = "0.0.0.0:9779", env = "DRIFTLESS_LISTEN")]
    listen: SocketAddr,
}

/// Loads the configuration (refusing to start on any problem) and serves until stopped.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (dir, secrets) = args.config.sources()?;
    let host = args.host.paths();
    let metrics = Metrics::new();
    let loaded = match config::load(&dir, &secrets) {
        Ok(config) => config,
        Err(errors) => {
            for error in &errors.0 {
                tracing::error!(config = %dir.display(), problem = %error, "invalid configuration");
            }
            let n = errors.0.len();
            anyhow::bail!(
                "{}: {n} problem{} in the configuration; run `driftless validate --config {}`",
                dir.display(),
                if n == 1 { "" } else { "s" },
                dir.display()
            );
        }
    };
    metrics.config_loaded(Ok(&loaded));
    let facts = inventory::identity(&host);
    if facts.os.pretty_name.is_empty() && facts.kernel.release.is_empty() {
        tracing::warn!(root = %args.host.root.display(), "no host facts readable below the root; is the host mounted there?");
    }
    tracing::info!(
        config = %dir.display(),
        root = %args.host.root.display(),
        host = %facts.hostname,
        os = %facts.os.pretty_name,
        kernel = %facts.kernel.release,
        node = std::env::var("NODE_NAME").unwrap_or_default(),
        resources = %summary(&loaded),
        "agent starting"
    );
    let state = Arc::new(AppState::new(metrics, loaded.clone()));
    let facts = Arc::new(crate::facts::runtime::Facts::new(
        host.clone(),
        args.collectors.disable_defaults,
        args.collectors.switches.clone(),
        std::env::var("NODE_NAME").unwrap_or_else(|_| facts.hostname.clone()),
    ));
    facts
        .apply(&state, &loaded, &secrets)
        .context("setting up facts and metrics")?;
    state.set_facts(facts);
    super::logs::start_in_agent(&state, host.clone(), &args.logs, &loaded, &secrets);
    // One worker serves HTTP and timers; collections, file reads and uploads run on the
    // blocking pool or on their own threads. Fewer threads also means fewer malloc arenas.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let served = runtime.block_on(serve(state, dir, secrets, args.listen));
    super::logs::stop_in_agent();
    served?;
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
    tracing::info!(address = %listener.local_addr()?, "serving /healthz, /metrics and /report");
    let mut hangup = signal(SignalKind::hangup())?;
    if let Some(facts) = state.facts() {
        tokio::spawn(facts.run(state.clone()));
    }
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
            if let Some(facts) = state.facts() {
                if let Err(error) = facts.apply(state, &config, secrets) {
                    tracing::error!(%error, "facts settings refused; keeping the previous ones");
                }
            }
            super::logs::reload_in_agent(&config, secrets);
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
