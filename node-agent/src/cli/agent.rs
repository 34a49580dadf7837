//! `driftless agent`: the long-running agent. One [`Topology`] runs the apply loop, facts and
//! the log pipelines; its policies come from a configuration directory (`--standalone`) or
//! from the API server (`--kubernetes`, chosen automatically in a pod).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::{summary, ConfigArgs};
use crate::config::{self, Config, StandaloneSecrets};
use crate::events::Events;
use crate::facts::inventory;
use crate::server::{self, AppState, Metrics};
use crate::topology::{Desired, Settings, Topology};

/// Flags of `driftless agent`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    host: super::facts::HostArgs,
    #[command(flatten)]
    collectors: super::facts::CollectorFlags,
    /// Take policies from the API server (the default when running in a pod and no --config
    /// is given).
    #[arg(long, conflicts_with = "standalone")]
    kubernetes: bool,
    /// Take policies from the configuration directory, even in a pod.
    #[arg(long)]
    standalone: bool,
    #[command(flatten)]
    cluster: crate::cluster::ClusterArgs,
    /// State directory: log checkpoints (`STATE/logs`), the cached cluster policies
    /// (`STATE/cluster`).
    #[arg(
        long,
        default_value = "/var/lib/driftless",
        env = "DRIFTLESS_STATE_DIR"
    )]
    state_dir: PathBuf,
    /// Where audit records wait until the policy's audit sinks acknowledged them.
    #[arg(long, env = "DRIFTLESS_AUDIT_SPOOL", default_value = crate::audit::DEFAULT_SPOOL)]
    audit_spool: PathBuf,
    /// Standalone: how often the configuration directory is checked for changes (SIGHUP also
    /// reloads at once).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    watch_interval: Duration,
    /// Change nothing on the host: every ApplyPolicy only checks and reports drift, as in
    /// `Audit` mode.
    #[arg(long)]
    dry_run: bool,
    /// Address of the HTTP endpoints.
    #[arg(long, default_value = "0.0.0.0:9779", env = "DRIFTLESS_LISTEN")]
    listen: SocketAddr,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    driftless_crds::common::Duration::parse(text)
        .map(|d| d.get())
        .map_err(|e| e.to_string())
}

/// Whether the agent runs in cluster mode: `--kubernetes`, or in a pod with neither
/// `--standalone` nor `--config`.
fn cluster_mode(args: &Args) -> bool {
    args.kubernetes
        || (!args.standalone
            && args.config.config.is_none()
            && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some())
}

/// Runs the agent until SIGINT or SIGTERM.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let host = args.host.paths();
    let identity = inventory::identity(&host);
    if identity.os.pretty_name.is_empty() && identity.kernel.release.is_empty() {
        tracing::warn!(root = %args.host.root.display(), "no host facts readable below the root; is the host mounted there?");
    }
    // One worker serves HTTP, watches and timers; collections, applies and file reads run on
    // the blocking pool or their own threads. Fewer threads also means fewer malloc arenas.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    if cluster_mode(args) {
        let node = args.cluster.node_name()?;
        tracing::info!(
            root = %args.host.root.display(),
            %node,
            os = %identity.os.pretty_name,
            kernel = %identity.kernel.release,
            "agent starting in cluster mode"
        );
        let settings = settings(
            args,
            &host,
            node,
            args.state_dir.join("cluster").join("files"),
        );
        runtime.block_on(crate::cluster::run(&args.cluster, settings, args.listen))?;
        return Ok(ExitCode::SUCCESS);
    }
    let (dir, secrets) = args.config.sources()?;
    let loaded = match load(&dir, &secrets) {
        Ok(config) => config,
        Err(n) => anyhow::bail!(
            "{}: {n} problem{} in the configuration; run `driftless validate --config {}`",
            dir.display(),
            if n == 1 { "" } else { "s" },
            dir.display()
        ),
    };
    let node = std::env::var("NODE_NAME").unwrap_or_else(|_| identity.hostname.clone());
    tracing::info!(
        config = %dir.display(),
        root = %args.host.root.display(),
        host = %identity.hostname,
        os = %identity.os.pretty_name,
        kernel = %identity.kernel.release,
        resources = %summary(&loaded),
        "agent starting"
    );
    let settings = settings(args, &host, node, dir.clone());
    runtime.block_on(standalone(settings, dir, secrets, loaded, args))?;
    Ok(ExitCode::SUCCESS)
}

fn settings(
    args: &Args,
    host: &crate::host::HostPaths,
    node: String,
    config_dir: PathBuf,
) -> Settings {
    Settings {
        host: host.clone(),
        state_dir: args.state_dir.clone(),
        audit_spool: args.audit_spool.clone(),
        config_dir,
        disable_defaults: args.collectors.disable_defaults,
        switches: args.collectors.switches.clone(),
        collector_options: args.collectors.options.clone(),
        node,
        dry_run: args.dry_run,
    }
}

/// Loads and checks a configuration directory (the checks `driftless apply` makes); logs every
/// problem and returns how many there were.
fn load(dir: &Path, secrets: &StandaloneSecrets) -> Result<Config, usize> {
    let loaded = config::load(dir, secrets).and_then(|config| {
        let problems = crate::apply::validate::check(&config);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(config::ConfigErrors(problems))
        }
    });
    loaded.map_err(|errors| {
        for error in &errors.0 {
            tracing::error!(config = %dir.display(), problem = %error, "invalid configuration");
        }
        errors.0.len()
    })
}

fn desired(config: Config, secrets: &StandaloneSecrets) -> Desired {
    Desired {
        config,
        lookup: Arc::new(secrets.clone()),
        refusals: Vec::new(),
        secrets_digests: Default::default(),
    }
}

/// A cheap fingerprint of a configuration directory: every file's path, size and mtime.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m) => out.push((path, m.len(), m.modified().ok())),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

async fn standalone(
    settings: Settings,
    dir: PathBuf,
    secrets: StandaloneSecrets,
    loaded: Config,
    args: &Args,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let state = Arc::new(AppState::new(Metrics::new(), loaded.clone()));
    let topology = Arc::new(Topology::new(
        &settings,
        state.clone(),
        Arc::new(Events::logged()),
    ));
    topology.reload(&desired(loaded, &secrets));
    topology.start();
    let (logs, policies) = topology.running();
    tracing::info!(pipelines = ?logs, apply_policies = ?policies, "agent running");
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "serving /healthz, /metrics and /report");
    let mut hangup = signal(SignalKind::hangup())?;
    let reloader = topology.clone();
    let interval = args.watch_interval.max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut seen = fingerprint(&dir);
        let mut ticker = tokio::time::interval(interval);
        loop {
            let forced = tokio::select! {
                signal = hangup.recv() => {
                    if signal.is_none() { return; }
                    true
                }
                _ = ticker.tick() => false,
            };
            let now = fingerprint(&dir);
            if !forced && now == seen {
                continue;
            }
            seen = now;
            reload(&reloader, &dir, &secrets);
        }
    });
    let mut terminate = signal(SignalKind::terminate())?;
    let served = axum::serve(listener, server::router(state))
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!("shutting down");
        })
        .await;
    let stopper = topology.clone();
    tokio::task::spawn_blocking(move || stopper.stop()).await?;
    served?;
    Ok(())
}

/// Reloads the configuration; an invalid one is refused and the current one stays in force.
fn reload(topology: &Topology, dir: &Path, secrets: &StandaloneSecrets) {
    match load(dir, secrets) {
        Ok(config) => {
            tracing::info!(resources = %summary(&config), "configuration reloaded");
            topology.reload(&desired(config, secrets));
        }
        Err(n) => {
            topology.state.metrics.config_loaded(Err(()));
            tracing::error!(config = %dir.display(), problems = n, "invalid configuration refused; keeping the last good one");
        }
    }
}
