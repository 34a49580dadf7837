//! `driftless-operator`: reconciles Driftless resources and serves the operator's HTTP API.

use std::collections::BTreeSet;
use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use driftless_operator::api::Places;
use driftless_operator::dashboard::{self, Dashboard, Sources as DashboardSources};
use driftless_operator::http::{router, ClientAddr, HttpState};
use driftless_operator::leader::{self, LeaderElector, Leadership};
use driftless_operator::notify::controller::NotifyController;
use driftless_operator::policy::controller::PolicyStatusController;
use driftless_operator::policy::metrics::PolicyMetrics;
use driftless_operator::preflight;
use driftless_operator::scan::controller::{JobDefaults, ScanController, Settings};
use driftless_operator::scan::metrics::ScanMetrics;
use driftless_operator::scan::tenancy::{normalize_api_url, Tenancy};
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
        election: ElectionArgs,
        #[command(flatten)]
        scan: Box<ScanArgs>,
        #[command(flatten)]
        webhook: Box<WebhookArgs>,
        #[command(flatten)]
        dashboard: DashboardArgs,
    },
    /// Print the Driftless CRDs as YAML (`driftless-operator crds | kubectl apply -f -`).
    Crds,
    /// Plan the stacks of a DriftScan run and write their DriftReports (scan Job entrypoint).
    ScanRunner(Box<driftless_operator::runner::Args>),
}

/// Leader election over the Lease `driftless-operator` in `--namespace`.
#[derive(clap::Args, Debug)]
struct ElectionArgs {
    /// Do not take part in leader election: act at once and always (one replica only).
    #[arg(long, env = "DRIFTLESS_NO_LEADER_ELECTION")]
    no_leader_election: bool,
    /// This replica's identity in the Lease (the pod name). Default: `<hostname>-<pid>`.
    #[arg(long, env = "POD_NAME", default_value = "")]
    identity: String,
    /// How long followers wait, from the last change of the Lease they saw, before taking it
    /// over from a silent leader.
    #[arg(
        long,
        env = "DRIFTLESS_LEASE_DURATION_SECONDS",
        default_value_t = 15,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(2..=300)
    )]
    lease_duration_seconds: u64,
    /// How long the leader keeps acting without a successful renewal; then it exits. Must be
    /// less than the lease duration.
    #[arg(
        long,
        env = "DRIFTLESS_RENEW_DEADLINE_SECONDS",
        default_value_t = 10,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..=299)
    )]
    renew_deadline_seconds: u64,
    /// Pause between two attempts to acquire or renew the Lease. Must be less than the renew
    /// deadline.
    #[arg(
        long,
        env = "DRIFTLESS_RETRY_PERIOD_SECONDS",
        default_value_t = 2,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..=298)
    )]
    retry_period_seconds: u64,
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
    /// A namespace whose DriftScans the operator acts on (repeatable, or comma-separated).
    /// DriftScans elsewhere are ignored. Default: --namespace only.
    #[arg(
        long = "scan-namespace",
        env = "DRIFTLESS_SCAN_NAMESPACES",
        value_delimiter = ',',
        value_name = "NAMESPACE"
    )]
    scan_namespaces: Vec<String>,
    /// A scan namespace whose DriftScans may set any `jobTemplate.serviceAccountName`
    /// (repeatable, or comma-separated); elsewhere only --scan-service-account.
    #[arg(
        long = "allow-service-accounts-in",
        env = "DRIFTLESS_ALLOW_SERVICE_ACCOUNTS_IN",
        value_delimiter = ',',
        value_name = "NAMESPACE"
    )]
    allow_service_accounts_in: Vec<String>,
    /// A host `spec.source.git.url` may name (repeatable, or comma-separated). None: any.
    #[arg(
        long = "allowed-git-host",
        env = "DRIFTLESS_ALLOWED_GIT_HOSTS",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    allowed_git_hosts: Vec<String>,
    /// A URL a GitHub App's `apiUrl` may be (default `https://api.github.com`; repeatable, or
    /// comma-separated). None: any.
    #[arg(
        long = "allowed-github-api-url",
        env = "DRIFTLESS_ALLOWED_GITHUB_API_URLS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    allowed_github_api_urls: Vec<String>,
    /// Send Git credentials and GitHub App JWTs to plain `http://` URLs too. For a lab only:
    /// anyone on the path reads them.
    #[arg(long, env = "DRIFTLESS_ALLOW_INSECURE_CREDENTIALS")]
    allow_insecure_credentials: bool,
}

impl ScanArgs {
    /// The tenancy settings, for an operator running in `namespace`.
    fn tenancy(&self, namespace: &str) -> Tenancy {
        let set = |v: &[String], f: fn(&str) -> String| -> BTreeSet<String> {
            v.iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(f)
                .collect()
        };
        let mut namespaces = set(&self.scan_namespaces, str::to_owned);
        if namespaces.is_empty() {
            namespaces.insert(namespace.to_owned());
        }
        Tenancy {
            namespaces,
            service_account_namespaces: set(&self.allow_service_accounts_in, str::to_owned),
            runner_service_account: Some(self.scan_service_account.clone())
                .filter(|s| !s.is_empty()),
            git_hosts: set(&self.allowed_git_hosts, str::to_ascii_lowercase),
            github_api_urls: set(&self.allowed_github_api_urls, |u| {
                normalize_api_url(u).to_owned()
            }),
            allow_insecure_credentials: self.allow_insecure_credentials,
        }
    }
}

/// The dashboard served at `/` (docs/dashboard.md).
#[derive(clap::Args, Debug)]
struct DashboardArgs {
    /// Do not serve the dashboard (`/` and the pages below it answer 404).
    #[arg(long, env = "DRIFTLESS_NO_DASHBOARD")]
    no_dashboard: bool,
    /// File holding the token the dashboard requires: sent as `Authorization: Bearer`, or
    /// entered once in its sign-in form. Without it, whoever reaches the port sees the
    /// dashboard (read-only; it shows no secret values).
    #[arg(long, env = "DRIFTLESS_DASHBOARD_TOKEN_FILE", value_name = "FILE")]
    dashboard_token_file: Option<std::path::PathBuf>,
}

impl DashboardArgs {
    /// The token, read and checked.
    fn token(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.dashboard_token_file else {
            return Ok(None);
        };
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("reading --dashboard-token-file {}", path.display()))?;
        let token = token.trim();
        if token.len() < 16 {
            anyhow::bail!(
                "--dashboard-token-file {}: expected a token of at least 16 characters, found {}",
                path.display(),
                token.len()
            );
        }
        Ok(Some(token.to_owned()))
    }
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
            election,
            scan,
            webhook,
            dashboard,
        } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => return fail(&anyhow::Error::new(err)),
            };
            let result =
                runtime.block_on(run(listen, namespace, election, *scan, *webhook, dashboard));
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

/// The leader-election settings of `args` for `namespace`, checked.
fn election_config(namespace: &str, args: &ElectionArgs) -> anyhow::Result<leader::Config> {
    let identity = if args.identity.is_empty() {
        format!("{}-{}", hostname(), std::process::id())
    } else {
        args.identity.clone()
    };
    let config = leader::Config {
        namespace: namespace.to_owned(),
        identity,
        lease_duration: Duration::from_secs(args.lease_duration_seconds),
        renew_deadline: Duration::from_secs(args.renew_deadline_seconds),
        retry_period: Duration::from_secs(args.retry_period_seconds),
    };
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

/// Why the operator stops.
enum Stop {
    /// SIGTERM or Ctrl-C.
    Signal,
    /// This replica led and lost the Lease.
    Lost(leader::Lost),
}

async fn run(
    listen: SocketAddr,
    namespace: String,
    election: ElectionArgs,
    scan: ScanArgs,
    webhook_args: WebhookArgs,
    dashboard_args: DashboardArgs,
) -> anyhow::Result<()> {
    let election_config = election_config(&namespace, &election)?;
    let dashboard_token = dashboard_args.token()?;
    let config = kube::Config::infer().await.context(
        "no cluster configuration: set KUBECONFIG to a kubeconfig file, or run in a pod",
    )?;
    let server = config.cluster_url.to_string();
    let tenancy = scan.tenancy(&namespace);
    // The dashboard shows the reports where the operator acts: its namespace (node reports)
    // and the scan namespaces.
    let mut report_namespaces = tenancy.namespaces.clone();
    report_namespaces.insert(namespace.clone());
    // Every request is checked against OPERATOR_API_CALLS (the chart's RBAC) before it leaves.
    let client = driftless_operator::api::client(
        config,
        Places::operator(&namespace, tenancy.namespaces.clone()),
    )
    .context("building the Kubernetes client")?;
    preflight::check_crds(&client, &server)
        .await
        .with_context(|| format!("checking the API server at {server}"))?;
    let mut state = HttpState::new();
    let metrics = ScanMetrics::register(state.registry.sub_registry_with_prefix("driftless"));
    let policy_metrics =
        PolicyMetrics::register(state.registry.sub_registry_with_prefix("driftless"));
    let mut elector = (!election.no_leader_election)
        .then(|| LeaderElector::new(client.clone(), election_config.clone()));
    let leadership = elector
        .as_ref()
        .map_or_else(Leadership::always, LeaderElector::leadership);
    let identity = election_config.identity.clone();
    tracing::info!(scan_namespaces = ?tenancy.namespaces, allow_service_accounts_in = ?tenancy.service_account_namespaces,
        allowed_git_hosts = ?tenancy.git_hosts, allowed_github_api_urls = ?tenancy.github_api_urls,
        allow_insecure_credentials = tenancy.allow_insecure_credentials, "DriftScan tenancy");
    // NotificationPolicies act where DriftScans do: the operator reads Secrets there.
    let notify = NotifyController::start(
        client.clone(),
        tenancy.namespaces.clone(),
        &identity,
        leadership.is_leader_fn(),
    )?;
    let controller = ScanController::start(
        client.clone(),
        Settings {
            namespace: namespace.clone(),
            job_defaults: JobDefaults {
                runner_image: scan.runner_image,
                service_account: tenancy.runner_service_account.clone(),
                source_rules: tenancy.source_rules(),
            },
            max_concurrent_jobs: scan.max_concurrent_jobs,
            identity: identity.clone(),
            repo_cache_dir: scan
                .repo_cache_dir
                .unwrap_or_else(|| std::env::temp_dir().join("driftless-repos")),
            git_timeout: Duration::from_secs(scan.git_timeout_seconds.max(1)),
            tenancy,
        },
        metrics,
        leadership.is_leader_fn(),
    );
    // Every replica watches (warm caches for a fast takeover); only the leader acts.
    let policies = PolicyStatusController::start(
        client.clone(),
        &namespace,
        &identity,
        policy_metrics,
        leadership.is_leader_fn(),
    );
    let tls = match (webhook_args.tls_cert.clone(), webhook_args.tls_key.clone()) {
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => None,
    };
    let dashboard = (!dashboard_args.no_dashboard).then(|| {
        let caches = policies.caches();
        Dashboard::new(
            DashboardSources {
                scans: controller.scans().clone(),
                reports: dashboard::watch_reports(&client, report_namespaces),
                apply: caches.apply.clone(),
                facts: caches.facts.clone(),
                logs: caches.logs.clone(),
                nodes: caches.nodes.clone(),
            },
            dashboard_token.as_deref(),
            tls.is_some(),
        )
    });
    let changes = dashboard.clone().map(|d| tokio::spawn(d.watch_changes()));
    let workers = [
        tokio::spawn(controller.clone().run()),
        tokio::spawn(policies.clone().run()),
        tokio::spawn(notify.clone().run()),
        tokio::spawn({
            let (leadership, controller, policies, notify) = (
                leadership.clone(),
                controller.clone(),
                policies.clone(),
                notify.clone(),
            );
            async move {
                leadership.acquired().await;
                controller.wake.notify_one();
                policies.wake();
                notify.wake();
            }
        }),
    ];
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let address = listener.local_addr()?;
    let api = Webhook::start(controller, webhook_args.settings());
    let mut app = router(state.clone()).merge(webhook::routes(api));
    if let Some(dashboard) = dashboard {
        app = app.merge(dashboard::routes(dashboard));
    }
    let app = app.into_make_service_with_connect_info::<ClientAddr>();
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_shutdown = async move {
        let _ = http_stopped.await;
    };
    let http = match &tls {
        Some((cert, key)) => {
            let listener = TlsListener::new(listener, cert.clone(), key.clone(), RELOAD_CHECK)?;
            tokio::spawn(
                axum::serve(listener, app)
                    .with_graceful_shutdown(http_shutdown)
                    .into_future(),
            )
        }
        None => tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(http_shutdown)
                .into_future(),
        ),
    };
    tracing::info!(%server, %namespace, %identity, leader_election = elector.is_some(), %address, tls = tls.is_some(),
        dashboard = !dashboard_args.no_dashboard, dashboard_token = dashboard_token.is_some(), "operator ready");
    state.ready.store(true, Ordering::Relaxed);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let signal = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    let stop = match elector.as_mut() {
        Some(elector) => tokio::select! {
            () = signal => Stop::Signal,
            lost = elector.run() => Stop::Lost(lost),
        },
        None => {
            signal.await;
            Stop::Signal
        }
    };
    // Controllers first, so nothing acts once the Lease is released or lost.
    for worker in &workers {
        worker.abort();
    }
    if let Some(changes) = changes {
        changes.abort();
    }
    for worker in workers {
        let _ = worker.await;
    }
    match stop {
        Stop::Signal => {
            tracing::info!("shutting down");
            if let Some(elector) = elector.as_mut() {
                elector.release().await;
            }
            let _ = stop_http.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
            Ok(())
        }
        Stop::Lost(lost) => Err(anyhow::Error::new(lost).context(
            "stopped leading; exiting so that the controllers stop and a restart rejoins as a follower",
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{election_config, Cli, Command};

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

    fn election(args: &[&str]) -> Result<driftless_operator::leader::Config, String> {
        let cli =
            Cli::try_parse_from(["op", "run"].iter().chain(args)).map_err(|e| e.to_string())?;
        let Command::Run { election, .. } = cli.command else {
            unreachable!("parsed run")
        };
        election_config("ns", &election).map_err(|e| e.to_string())
    }

    #[test]
    fn leader_election_timing_defaults_and_checks() {
        let c = election(&["--identity", "pod-a"]).unwrap();
        assert_eq!(c.identity, "pod-a");
        assert_eq!(
            (
                c.lease_duration.as_secs(),
                c.renew_deadline.as_secs(),
                c.retry_period.as_secs()
            ),
            (15, 10, 2)
        );
        assert!(election(&[])
            .unwrap()
            .identity
            .ends_with(&format!("-{}", std::process::id())));
        let err = election(&["--lease-duration-seconds", "10"]).unwrap_err();
        assert!(
            err.contains(
                "--renew-deadline-seconds (10) must be less than --lease-duration-seconds (10)"
            ),
            "{err}"
        );
        let err = election(&["--retry-period-seconds", "10"]).unwrap_err();
        assert!(err.contains("--retry-period-seconds (10)"), "{err}");
        let err = election(&["--lease-duration-seconds", "0"]).unwrap_err();
        assert!(err.contains("--lease-duration-seconds"), "{err}");
    }

    fn dashboard_token(args: &[&str]) -> Result<Option<String>, String> {
        let cli = Cli::try_parse_from(["op", "run"].iter().chain(args)).unwrap();
        let Command::Run { dashboard, .. } = cli.command else {
            unreachable!("parsed run")
        };
        dashboard.token().map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn dashboard_token_file_is_read_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(dashboard_token(&[]), Ok(None));
        let good = dir.path().join("token");
        std::fs::write(&good, "  0123456789abcdef-xyz\n").unwrap();
        let good = good.to_str().unwrap();
        assert_eq!(
            dashboard_token(&["--dashboard-token-file", good]),
            Ok(Some("0123456789abcdef-xyz".into()))
        );
        let short = dir.path().join("short");
        std::fs::write(&short, "s3cret\n").unwrap();
        let err =
            dashboard_token(&["--dashboard-token-file", short.to_str().unwrap()]).unwrap_err();
        assert!(
            err.contains("expected a token of at least 16 characters, found 6"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        let err = dashboard_token(&["--dashboard-token-file", "/nonexistent/token"]).unwrap_err();
        assert!(
            err.contains("reading --dashboard-token-file /nonexistent/token"),
            "{err}"
        );
    }

    fn tenancy(args: &[&str]) -> driftless_operator::scan::tenancy::Tenancy {
        let cli = Cli::try_parse_from(["op", "run"].iter().chain(args)).unwrap();
        let Command::Run { scan, .. } = cli.command else {
            unreachable!("parsed run")
        };
        scan.tenancy("driftless")
    }

    #[test]
    fn scan_namespaces_default_to_the_operators_own() {
        let t = tenancy(&[]);
        assert_eq!(t.namespaces, ["driftless".to_owned()].into());
        assert!(t.git_hosts.is_empty() && t.github_api_urls.is_empty());
        assert!(!t.allow_insecure_credentials);
        let t = tenancy(&[
            "--scan-namespace=team-a,team-b",
            "--scan-namespace",
            "team-c",
            "--allowed-git-host=GitHub.com",
            "--allowed-github-api-url=https://ghe.example.com/api/v3/",
            "--allow-service-accounts-in=team-b",
            "--scan-service-account=runner",
            "--allow-insecure-credentials",
        ]);
        assert_eq!(
            t.namespaces,
            ["team-a", "team-b", "team-c"].map(String::from).into()
        );
        assert_eq!(t.git_hosts, ["github.com".to_owned()].into());
        assert_eq!(
            t.github_api_urls,
            ["https://ghe.example.com/api/v3".to_owned()].into()
        );
        assert_eq!(t.service_account_namespaces, ["team-b".to_owned()].into());
        assert_eq!(t.runner_service_account.as_deref(), Some("runner"));
        assert!(t.allow_insecure_credentials);
    }
}
