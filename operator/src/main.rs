//! `driftless-operator`: reconciles Driftless resources and serves the operator's HTTP API.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use driftless_operator::http::{router, HttpState};
use driftless_operator::preflight;

/// The Driftless operator.
#[derive(Parser, Debug)]
#[command(name = "driftless-operator", version, about, max_term_width = 100)]
struct Cli {
    /// Log filter (`info`, `debug`, `driftless_operator=trace`).
    #[arg(long, global = true, default_value = "info", env = "DRIFTLESS_LOG")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator against the cluster in KUBECONFIG (or in-cluster config).
    Run {
        /// Address of /healthz, /readyz and /metrics.
        #[arg(long, default_value = "0.0.0.0:8080", env = "DRIFTLESS_LISTEN")]
        listen: SocketAddr,
        /// Namespace the operator runs in (its Lease and node DriftReports live there).
        #[arg(long, env = "POD_NAMESPACE", default_value = "driftless")]
        namespace: String,
    },
    /// Print the Driftless CRDs as YAML (`driftless-operator crds | kubectl apply -f -`).
    Crds,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .init();
    match cli.command {
        Command::Crds => {
            for crd in driftless_crds::generate::crds() {
                print!("{}", driftless_crds::generate::to_yaml(&crd));
            }
            ExitCode::SUCCESS
        }
        Command::Run { listen, namespace } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => return fail(&anyhow::Error::new(err)),
            };
            match runtime.block_on(run(listen, namespace)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(&err),
            }
        }
    }
}

fn fail(err: &anyhow::Error) -> ExitCode {
    tracing::error!(error = format!("{err:#}"), "driftless-operator failed");
    eprintln!("error: {err:#}");
    ExitCode::FAILURE
}

async fn run(listen: SocketAddr, namespace: String) -> anyhow::Result<()> {
    let config = kube::Config::infer().await.context(
        "no cluster configuration: set KUBECONFIG to a kubeconfig file, or run in a pod",
    )?;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    preflight::check_crds(&client, &server)
        .await
        .with_context(|| format!("checking the API server at {server}"))?;
    let state = Arc::new(HttpState::new());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(%server, %namespace, address = %listener.local_addr()?, "operator ready");
    state.ready.store(true, Ordering::Relaxed);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, router(state))
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
