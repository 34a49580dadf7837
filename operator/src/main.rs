//! `driftless-operator`: reconciles Driftless resources and serves the operator's HTTP API.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use driftless_operator::http::{router, ClientAddr, HttpState};
use driftless_operator::policy::controller::{IsLeader, PolicyStatusController};
use driftless_operator::policy::metrics::PolicyMetrics;
use driftless_operator::preflight;
use driftless_operator::scan::controller::{JobDefaults, ScanController, Settings};
use driftless_operator::scan::metrics::ScanMetrics;
use driftless_operator::scan::webhook::{self, Rate, Webhook, WebhookSettings};
use driftless_operator::tls::{TlsListener, RELOAD_CHECK};

/// The Driftless operator.
#[derive(Parser, Debug)]
#[command(name = "driftless-operator", version, about, max_term_width = 100)]
struct Cli {
    /// Log filter (`info`, `debug`, `driftless_operator=trace`).
    #[arg(long, global = true, default_value = "info", env = "DRIFTLESS_LOG")]
    log_level: String,
    /// Seconds a git server may stay silent (while connecting, or between bytes of a
    /// transfer) before a fetch fails; applies to the operator and the scan runner
    /// (`--git-timeout-seconds` bounds a whole fetch of the operator).
    #[arg(
        long,
        global = true,
        env = "DRIFTLESS_GIT_SERVER_TIMEOUT",
        default_value_t = 60,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u32).range(1..=3600)
    )]
    git_server_timeout: u32,
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
        #[command(flatten)]
        scan: ScanArgs,
        #[command(flatten)]
        webhook: Box<WebhookArgs>,
    },
    /// Print the Driftless CRDs as YAML (`driftless-operator crds | kubectl apply -f -`).
    Crds,
    /// Plan the stacks of a DriftScan run and write their DriftReports (scan Job entrypoint).
    ScanRunner(Box<driftless_operator::runner::Args>),
}

/// Settings of the DriftScan controller.
#[derive(clap::Args, Debug)]
struct ScanArgs {
    /// Image providing `/usr/local/bin/driftless-operator` to scan Jobs (usually the
    /// operator's own image).
    #[arg(
        long,
        env = "DRIFTLESS_RUNNER_IMAGE",
        default_value = "ghcr.io/driftless-dev/driftless-operator:latest"
    )]
    runner_image: String,
    /// Most scan Jobs running at once over all DriftScans.
    #[arg(long, env = "DRIFTLESS_MAX_CONCURRENT_JOBS", default_value_t = 10)]
    max_concurrent_jobs: u32,
    /// Do not take part in leader election (one replica only).
    #[arg(long, env = "DRIFTLESS_NO_LEADER_ELECTION")]
    no_leader_election: bool,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "")]
    identity: String,
    /// Where to keep the fetched DriftScan repositories (bare clones, one per URL). Default:
    /// `driftless-repos` in the temporary directory.
    #[arg(long, env = "DRIFTLESS_REPO_CACHE_DIR", value_name = "DIR")]
    repo_cache_dir: Option<std::path::PathBuf>,
    /// ServiceAccount of scan Jobs whose `spec.jobTemplate.serviceAccountName` is unset (the
    /// chart creates `driftless-scan-runner` in its scan namespaces). Empty: the namespace's
    /// default ServiceAccount.
    #[arg(long, env = "DRIFTLESS_SCAN_SERVICE_ACCOUNT", default_value = "")]
    scan_service_account: String,
    /// Longest a fetch of a DriftScan's repository may take, in seconds.
    #[arg(long, env = "DRIFTLESS_GIT_TIMEOUT_SECONDS", default_value_t = 60)]
    git_timeout_seconds: u64,
}

/// Limits of the webhook API and TLS of the HTTP server.
#[derive(clap::Args, Debug)]
struct WebhookArgs {
    /// PEM certificate chain: serve HTTPS (every path, health and /metrics included) instead
    /// of HTTP. Needs --tls-key. The files are read again when they change.
    #[arg(
        long,
        env = "DRIFTLESS_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(
        long,
        env = "DRIFTLESS_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<std::path::PathBuf>,
    /// Longest webhook request body accepted (413 beyond).
    #[arg(long, env = "DRIFTLESS_WEBHOOK_MAX_BODY_BYTES", default_value_t = 1024 * 1024,
          value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    webhook_max_body_bytes: u64,
    /// Webhook authentication failures a client address (IPv6: /64) may make at once; beyond,
    /// its requests are answered 429 until the budget refills.
    #[arg(long, env = "DRIFTLESS_WEBHOOK_CLIENT_BURST", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    webhook_client_burst: u32,
    /// Rate at which a client's failure budget refills, per second.
    #[arg(long, env = "DRIFTLESS_WEBHOOK_CLIENT_RATE", default_value_t = 1.0, value_parser = positive)]
    webhook_client_rate: f64,
    /// Authenticated webhook requests a DriftScan may get at once; beyond, 429.
    #[arg(long, env = "DRIFTLESS_WEBHOOK_SCAN_BURST", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    webhook_scan_burst: u32,
    /// Rate at which a DriftScan's request budget refills, per second.
    #[arg(long, env = "DRIFTLESS_WEBHOOK_SCAN_RATE", default_value_t = 1.0, value_parser = positive)]
    webhook_scan_rate: f64,
    /// How often the token of each DriftScan's webhook Secret is read again (a rotated token
    /// takes effect within this time).
    #[arg(long, env = "DRIFTLESS_WEBHOOK_TOKEN_REFRESH_SECONDS", default_value_t = 60,
          value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    webhook_token_refresh_seconds: u64,
}

fn positive(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("expected a number greater than 0, got {v:?}")),
    }
}

impl WebhookArgs {
    fn settings(&self) -> WebhookSettings {
        WebhookSettings {
            max_body_bytes: usize::try_from(self.webhook_max_body_bytes).unwrap_or(usize::MAX),
            per_client: Rate {
                per_second: self.webhook_client_rate,
                burst: self.webhook_client_burst,
            },
            per_scan: Rate {
                per_second: self.webhook_scan_rate,
                burst: self.webhook_scan_burst,
            },
            token_refresh: std::time::Duration::from_secs(self.webhook_token_refresh_seconds),
        }
    }
}

/// Makes libgit2 give up on a git server that accepts a connection and then stays silent
/// (http, https and git:// transports), so a stuck fetch frees its thread and the cached
/// repository's lock instead of waiting for the TCP connection to drop.
#[allow(unsafe_code)]
fn set_git_timeouts(ms: i32) {
    // SAFETY: libgit2's options are process globals written without synchronisation; this runs
    // first thing in `main`, before any thread (runtime workers, blocking pool) exists, and
    // nothing writes them again.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms);
        let _ = git2::opts::set_server_timeout_in_milliseconds(ms);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // While the process still has one thread.
    set_git_timeouts(cli.git_server_timeout.saturating_mul(1000) as i32);
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
        Command::ScanRunner(args) => driftless_operator::runner::main(*args),
        Command::Crds => {
            for crd in driftless_crds::generate::crds() {
                print!("{}", driftless_crds::generate::to_yaml(&crd));
            }
            ExitCode::SUCCESS
        }
        Command::Run {
            listen,
            namespace,
            scan,
            webhook,
        } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => return fail(&anyhow::Error::new(err)),
            };
            let result = runtime.block_on(run(listen, namespace, scan, *webhook));
            // A git fetch stuck on a silent server must not hold the exit.
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(&err),
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "driftless-operator".into())
}

fn fail(err: &anyhow::Error) -> ExitCode {
    tracing::error!(error = format!("{err:#}"), "driftless-operator failed");
    eprintln!("error: {err:#}");
    ExitCode::FAILURE
}

async fn run(
    listen: SocketAddr,
    namespace: String,
    scan: ScanArgs,
    webhook_args: WebhookArgs,
) -> anyhow::Result<()> {
    let config = kube::Config::infer().await.context(
        "no cluster configuration: set KUBECONFIG to a kubeconfig file, or run in a pod",
    )?;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    preflight::check_crds(&client, &server)
        .await
        .with_context(|| format!("checking the API server at {server}"))?;
    let mut state = HttpState::new();
    let metrics = ScanMetrics::register(state.registry.sub_registry_with_prefix("driftless"));
    let policy_metrics =
        PolicyMetrics::register(state.registry.sub_registry_with_prefix("driftless"));
    let identity = if scan.identity.is_empty() {
        format!("{}-{}", hostname(), std::process::id())
    } else {
        scan.identity
    };
    let controller = ScanController::start(
        client.clone(),
        Settings {
            namespace: namespace.clone(),
            job_defaults: JobDefaults {
                runner_image: scan.runner_image,
                service_account: Some(scan.scan_service_account).filter(|s| !s.is_empty()),
            },
            max_concurrent_jobs: scan.max_concurrent_jobs,
            identity,
            leader_election: !scan.no_leader_election,
            repo_cache_dir: scan
                .repo_cache_dir
                .unwrap_or_else(|| std::env::temp_dir().join("driftless-repos")),
            git_timeout: std::time::Duration::from_secs(scan.git_timeout_seconds.max(1)),
        },
        metrics,
    );
    tokio::spawn(controller.clone().run());
    // Policy statuses are written by the replica that holds the scan controller's Lease.
    let leader = controller.clone();
    let is_leader: IsLeader = Arc::new(move || leader.is_leader());
    let policies =
        PolicyStatusController::start(client.clone(), &namespace, policy_metrics, is_leader);
    tokio::spawn(policies.run());
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let address = listener.local_addr()?;
    let api = Webhook::start(controller, webhook_args.settings());
    let app = router(state.clone())
        .merge(webhook::routes(api))
        .into_make_service_with_connect_info::<ClientAddr>();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
    };
    match (webhook_args.tls_cert, webhook_args.tls_key) {
        (Some(cert), Some(key)) => {
            let listener = TlsListener::new(listener, cert, key, RELOAD_CHECK)?;
            tracing::info!(%server, %namespace, %address, tls = true, "operator ready");
            state.ready.store(true, Ordering::Relaxed);
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?;
        }
        _ => {
            tracing::info!(%server, %namespace, %address, tls = false, "operator ready");
            state.ready.store(true, Ordering::Relaxed);
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::Cli;

    #[test]
    fn git_server_timeout_is_bounded() {
        let parse =
            |v: &str| Cli::try_parse_from(["op", &format!("--git-server-timeout={v}"), "crds"]);
        assert_eq!(parse("5").unwrap().git_server_timeout, 5);
        assert_eq!(parse("3600").unwrap().git_server_timeout, 3600);
        for bad in ["0", "3601", "-1", "1.5", "1m"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("--git-server-timeout"), "{err}");
        }
        let default = Cli::try_parse_from(["op", "crds"]).unwrap();
        assert_eq!(default.git_server_timeout, 60);
    }
}
