//! `driftless logs`: runs the configuration's log pipelines in the foreground.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use driftless_crds::log_pipeline::LogPipelineSpec;
use driftless_crds::resource::Resource;

use super::ConfigArgs;
use crate::config::{self, Config, StandaloneSecrets};
use crate::host::HostPaths;
use crate::logs::metrics::LogMetrics;
use crate::logs::pipeline::Pipelines;

/// Flags of `driftless logs`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Host root: source paths are read below it (`/host` in a DaemonSet). Sink paths are
    /// agent-local.
    #[arg(long, default_value = "/", env = "DRIFTLESS_ROOT")]
    root: PathBuf,
    /// State directory; checkpoints are kept in `STATE/logs/checkpoints`.
    #[arg(
        long,
        default_value = "/var/lib/driftless",
        env = "DRIFTLESS_STATE_DIR"
    )]
    state_dir: PathBuf,
}

/// The LogPipeline resources of a configuration, by name.
pub fn wanted(config: &Config) -> BTreeMap<String, LogPipelineSpec> {
    config
        .resources
        .iter()
        .filter_map(|loaded| match &loaded.resource {
            Resource::LogPipeline(p) => {
                Some((p.metadata.name.clone().unwrap_or_default(), p.spec.clone()))
            }
            _ => None,
        })
        .collect()
}

fn load(dir: &std::path::Path, secrets: &StandaloneSecrets) -> anyhow::Result<Config> {
    config::load(dir, secrets).map_err(|errors| {
        for error in &errors.0 {
            tracing::error!(config = %dir.display(), problem = %error, "invalid configuration");
        }
        anyhow::anyhow!(
            "{}: {} problem(s) in the configuration; run `driftless validate --config {}`",
            dir.display(),
            errors.0.len(),
            dir.display()
        )
    })
}

/// Runs the pipelines until SIGINT or SIGTERM; SIGHUP reloads the configuration (an invalid one
/// is refused and the running pipelines stay).
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (dir, secrets) = args.config.sources()?;
    let loaded = load(&dir, &secrets)?;
    let wanted = wanted(&loaded);
    if wanted.is_empty() {
        tracing::warn!(config = %dir.display(), "no LogPipeline in the configuration; waiting for a reload");
    }
    let mut pipelines = Pipelines::new(
        HostPaths::under(&args.root),
        args.state_dir.clone(),
        LogMetrics::default(),
    );
    if let Ok(ms) = std::env::var("DRIFTLESS_LOGS_SCAN_MS") {
        if let Ok(ms) = ms.parse::<u64>() {
            pipelines.scan_interval = Some(std::time::Duration::from_millis(ms));
        }
    }
    let errors = pipelines.apply(&wanted, &secrets);
    if !errors.is_empty() {
        for (pipeline, e) in &errors {
            tracing::error!(%pipeline, error = %e, "pipeline not started");
        }
        anyhow::bail!("{} pipeline(s) could not start", errors.len());
    }
    tracing::info!(pipelines = ?pipelines.names(), root = %args.root.display(), state = %args.state_dir.display(), "forwarding logs");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = terminate.recv() => break,
                _ = hangup.recv() => {
                    match load(&dir, &secrets) {
                        Ok(config) => {
                            for (pipeline, e) in pipelines.apply(&wanted_of(&config), &secrets) {
                                tracing::error!(%pipeline, error = %e, "pipeline not reloaded");
                            }
                            tracing::info!(pipelines = ?pipelines.names(), "configuration reloaded");
                        }
                        Err(e) => tracing::error!(error = %e, "reload refused; the running pipelines stay"),
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    tracing::info!("stopping pipelines");
    pipelines.stop_all();
    Ok(ExitCode::SUCCESS)
}

fn wanted_of(config: &Config) -> BTreeMap<String, LogPipelineSpec> {
    wanted(config)
}
