//! The scan runner: `driftless-operator scan-runner`, the entrypoint of scan Jobs.
//!
//! It runs inside the user's IaC image (copied there by an init container), reads its
//! DriftScan, clones the repository at the run's commit ([`git`]), plans each stack with
//! read-only commands only ([`engine`]), parses the plan ([`plan`]), redacts secrets
//! ([`redact`]), stores the full plan ([`artifacts`]) and writes one DriftReport per stack
//! ([`report`]) through the status subresource with server-side apply.
//!
//! Without a cluster (tests, local use): `--scan-file` instead of `--namespace/--scan`,
//! `--output-dir` instead of writing DriftReports. Credentials are always read from
//! `--secrets-dir` (in a scan Job, the DriftScan's Secrets mounted by the operator), never
//! through the API.

pub mod artifacts;
pub mod engine;
pub mod git;
pub mod plan;
pub mod redact;
pub mod report;
pub mod tfconfig;

use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use driftless_crds::drift_report::{report_name, Artifact, DriftReport, DriftReportStatus};
use driftless_crds::drift_scan::{DriftScan, Engine, GitCredentialsKind};
use driftless_crds::secret::SecretString;
use driftless_crds::time::time;
use kube::api::{Api, Patch, PatchParams};

use self::engine::EngineError;
use self::redact::Redact;
use self::report::{Outcome, RunMeta};

/// Field manager of everything the runner writes.
pub const FIELD_MANAGER: &str = "driftless-scan-runner";
/// Plan file written in each stack directory.
pub const PLAN_FILE: &str = ".driftless.tfplan";

/// Arguments of `driftless-operator scan-runner`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Namespace of the DriftScan (and of its Secrets and DriftReports).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Name of the DriftScan.
    #[arg(long)]
    pub scan: Option<String>,
    /// Read the DriftScan from this YAML file instead of the API server.
    #[arg(long, value_name = "FILE")]
    pub scan_file: Option<PathBuf>,
    /// Run id, recorded in each report's summary.
    #[arg(long, default_value = "manual")]
    pub run_id: String,
    /// A stack to plan (repeatable). None: every stack of the DriftScan.
    #[arg(long = "stack", value_name = "PATH")]
    pub stacks: Vec<String>,
    /// The commit to plan (default: `spec.source.git.ref`).
    #[arg(long)]
    pub commit: Option<String>,
    /// What triggered the run (`Schedule`, `Manual`, `Webhook`); default: from the DriftScan's
    /// current run.
    #[arg(long)]
    pub trigger: Option<String>,
    /// Only clone and print the stacks and the commit as JSON.
    #[arg(long)]
    pub discover: bool,
    /// Read credentials from files named like the Secret's keys in this directory (or in
    /// `DIR/<secret-name>/`). The runner never reads a Secret through the API.
    #[arg(long, value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Send Git credentials and GitHub App JWTs over plain `http://` too (set by the
    /// operator's `--allow-insecure-credentials`).
    #[arg(long)]
    pub allow_insecure_credentials: bool,
    /// A host `spec.source.git.url` may name (repeatable; none: any).
    #[arg(long = "allowed-git-host", value_name = "HOST")]
    pub allowed_git_hosts: Vec<String>,
    /// A GitHub API URL a GitHub App's `apiUrl` may be (repeatable; none: any).
    #[arg(long = "allowed-github-api-url", value_name = "URL")]
    pub allowed_github_api_urls: Vec<String>,
    /// Write the DriftReports as YAML files here instead of the API server.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Where the artifacts volume claim is mounted.
    #[arg(
        long,
        env = "DRIFTLESS_ARTIFACTS_DIR",
        default_value = "/driftless/artifacts"
    )]
    pub artifacts_dir: PathBuf,
    /// The IaC tool to run (default: `terraform`, `tofu` or `terragrunt` on PATH, by engine).
    #[arg(long, env = "DRIFTLESS_IAC_BINARY", value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Clone into this directory (must not exist or be empty) instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Benchmark: parse this plan JSON file and print the time and memory it took.
    #[arg(long, hide = true, value_name = "FILE")]
    pub parse_plan: Option<PathBuf>,
    /// Benchmark: print a generated plan JSON of N resources.
    #[arg(long, hide = true, value_name = "N")]
    pub generate_plan: Option<usize>,
}

fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// `--parse-plan`: parses a plan file once, reporting time and peak memory growth as JSON.
fn bench_parse(path: &Path) -> Result<bool, RunnerError> {
    let rss_before = proc_status_kb("VmRSS:");
    let start = std::time::Instant::now();
    let bytes = std::fs::read(path).map_err(|source| RunnerError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let read = start.elapsed();
    let parsed = plan::parse(&bytes, &Redact::default());
    let total = start.elapsed();
    let peak = proc_status_kb("VmHWM:");
    let (items, ok) = match &parsed {
        Ok(p) => (p.items.len(), true),
        Err(_) => (0, false),
    };
    println!(
        "{}",
        serde_json::json!({
            "bytes": bytes.len(),
            "items": items,
            "read_ms": read.as_secs_f64() * 1000.0,
            "parse_ms": (total - read).as_secs_f64() * 1000.0,
            "rss_before_kb": rss_before,
            "peak_kb": peak,
            "peak_growth_over_file": (peak.saturating_sub(rss_before) as f64 * 1024.0) / (bytes.len().max(1) as f64),
        })
    );
    Ok(ok)
}

/// Why a run could not start or report.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The DriftScan file.
    #[error("reading {path}: {message}")]
    ScanFile {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The API server.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// A credential is missing.
    #[error("credentials: {0}")]
    Credentials(String),
    /// Cloning.
    #[error(transparent)]
    Git(#[from] git::GitError),
    /// Local I/O.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing a report file.
    #[error("writing report: {0}")]
    Yaml(String),
}

/// Entry point of the subcommand; the exit code is 0 when every stack was planned and reported.
pub fn main(args: Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(err) => {
            let message = redact::redact_patterns(&err.to_string()).into_owned();
            tracing::error!(error = %message, "scan runner failed");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Where the DriftScan, Secrets and reports come from and go to.
struct Io {
    namespace: String,
    scan_name: String,
    args: Args,
    client: Option<kube::Client>,
}

impl Io {
    async fn client(&mut self) -> Result<kube::Client, RunnerError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        // Every request is checked against RUNNER_API_CALLS (the chart's RBAC) before it leaves.
        let config = kube::Config::infer()
            .await
            .map_err(kube::Error::InferConfig)?;
        let c = crate::api::client(config, crate::api::Places::runner(&self.namespace))?;
        self.client = Some(c.clone());
        Ok(c)
    }

    async fn secret(
        &mut self,
        secret: &str,
        key: &str,
    ) -> Result<Option<SecretString>, RunnerError> {
        if let Some(dir) = self.args.secrets_dir.clone() {
            for path in [dir.join(secret).join(key), dir.join(key)] {
                if path.is_file() {
                    let text =
                        std::fs::read_to_string(&path).map_err(|source| RunnerError::Io {
                            path: path.display().to_string(),
                            source,
                        })?;
                    return Ok(Some(SecretString::new(text)));
                }
            }
            return Ok(None);
        }
        // Never through the API: the runner's ServiceAccount may read no Secret
        // (RUNNER_API_CALLS); the operator mounts the ones a DriftScan names.
        Err(RunnerError::Credentials(format!(
            "Secret {secret}: credentials are read only from --secrets-dir (a scan Job \
             mounts the DriftScan's Secrets there)"
        )))
    }

    async fn required(&mut self, secret: &str, key: &str) -> Result<SecretString, RunnerError> {
        self.secret(secret, key)
            .await?
            .ok_or_else(|| RunnerError::Credentials(format!("Secret {secret} has no key {key}")))
    }

    async fn previous(&mut self, name: &str) -> Result<Option<DriftReportStatus>, RunnerError> {
        if let Some(dir) = &self.args.output_dir {
            let path = dir.join(format!("{name}.yaml"));
            let Ok(text) = std::fs::read_to_string(&path) else {
                return Ok(None);
            };
            let r: Option<DriftReport> = driftless_crds::yaml::parse_yaml(&text)
                .ok()
                .and_then(|mut docs| (docs.len() == 1).then(|| docs.remove(0)))
                .and_then(|doc| serde_json::from_value(doc).ok());
            return Ok(r.and_then(|r| r.status));
        }
        let api: Api<DriftReport> = Api::namespaced(self.client().await?, &self.namespace);
        Ok(api.get_opt(name).await?.and_then(|r| r.status))
    }

    async fn write(&mut self, stack: &str, status: DriftReportStatus) -> Result<(), RunnerError> {
        let name = report_name(&self.scan_name, stack);
        let mut object = report::report(&self.namespace, &self.scan_name, stack, None);
        if let Some(dir) = self.args.output_dir.clone() {
            object.status = Some(status);
            std::fs::create_dir_all(&dir).map_err(|source| RunnerError::Io {
                path: dir.display().to_string(),
                source,
            })?;
            let path = dir.join(format!("{name}.yaml"));
            let tmp = dir.join(format!(".{name}.yaml.tmp"));
            let text = driftless_crds::yaml::to_string(&object).map_err(RunnerError::Yaml)?;
            std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|source| RunnerError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
            return Ok(());
        }
        let api: Api<DriftReport> = Api::namespaced(self.client().await?, &self.namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(&object)).await?;
        let status_patch = serde_json::json!({
            "apiVersion": "driftless.dev/v1alpha1",
            "kind": "DriftReport",
            "metadata": {"name": name},
            "status": status,
        });
        api.patch_status(&name, &params, &Patch::Apply(&status_patch))
            .await?;
        Ok(())
    }
}

/// Whether a stack path is a safe relative path inside the repository.
pub fn valid_stack(stack: &str) -> bool {
    let path = Path::new(stack);
    !stack.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Stacks of a work tree: `explicit` ∪ directories matching `globs` that hold `*.tf` files
/// (or a `terragrunt.hcl` for Terragrunt), sorted — the operator's decision
/// ([`crate::repo::discover`]) over the files on disk. An invalid glob is an error naming
/// `spec.source.git.discover[i]`.
pub fn discover(
    root: &Path,
    explicit: &[String],
    globs: &[String],
    engine: Engine,
) -> Result<Vec<String>, String> {
    crate::repo::discover(
        &crate::repo::Snapshot::from_dir(root),
        explicit,
        globs,
        engine,
    )
}

async fn load_scan(io: &mut Io) -> Result<DriftScan, RunnerError> {
    if let Some(path) = io.args.scan_file.clone() {
        let text = std::fs::read_to_string(&path).map_err(|source| RunnerError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let scan_file_error = |message: String| RunnerError::ScanFile {
            path: path.display().to_string(),
            message,
        };
        let mut docs = driftless_crds::yaml::parse_yaml(&text).map_err(scan_file_error)?;
        if docs.len() != 1 {
            return Err(scan_file_error(format!(
                "expected one YAML document (a DriftScan), found {}",
                docs.len()
            )));
        }
        return serde_path_to_error::deserialize(docs.remove(0))
            .map_err(|e| scan_file_error(format!("{}: {}", e.path(), e.inner())));
    }
    let api: Api<DriftScan> = Api::namespaced(io.client().await?, &io.namespace);
    Ok(api.get(&io.scan_name).await?)
}

async fn credentials(io: &mut Io, scan: &DriftScan) -> Result<git::Credentials, RunnerError> {
    let Some(creds) = &scan.spec.source.git.credentials else {
        return Ok(git::Credentials::None);
    };
    Ok(match &creds.kind {
        GitCredentialsKind::Https(secret) => {
            let token = io.required(&secret.name, "token").await?;
            let username = io
                .secret(&secret.name, "username")
                .await?
                .map(|u| u.expose().trim().to_owned())
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "git".into());
            git::Credentials::Https {
                username,
                token: SecretString::new(token.expose().trim()),
            }
        }
        GitCredentialsKind::Ssh(secret) => git::Credentials::Ssh {
            private_key: io.required(&secret.name, "ssh-privatekey").await?,
            known_hosts: io
                .required(&secret.name, "known_hosts")
                .await?
                .expose()
                .to_owned(),
        },
        GitCredentialsKind::GithubApp(app) => {
            let key = io.required(&app.secret_ref.name, "private-key").await?;
            let api = app.api_url.as_deref().unwrap_or("https://api.github.com");
            let token =
                git::github_app_token(api, app.app_id, app.installation_id, key.expose()).await?;
            git::Credentials::Https {
                username: "x-access-token".into(),
                token,
            }
        }
    })
}

/// Runs the scan; `Ok(true)` when every stack was planned and reported.
pub async fn run(args: Args) -> Result<bool, RunnerError> {
    if let Some(n) = args.generate_plan {
        println!("{}", plan::generate_plan(n));
        return Ok(true);
    }
    if let Some(path) = &args.parse_plan {
        return bench_parse(path);
    }
    let (namespace, scan_name) = match (&args.scan_file, &args.namespace, &args.scan) {
        (Some(_), ns, name) => (
            ns.clone().unwrap_or_default(),
            name.clone().unwrap_or_default(),
        ),
        (None, Some(ns), Some(name)) => (ns.clone(), name.clone()),
        _ => {
            return Err(RunnerError::Usage(
                "give --namespace and --scan, or --scan-file".into(),
            ))
        }
    };
    let mut io = Io {
        namespace,
        scan_name,
        args: args.clone(),
        client: None,
    };
    let scan = load_scan(&mut io).await?;
    if io.scan_name.is_empty() {
        io.scan_name = scan.metadata.name.clone().unwrap_or_default();
    }
    if io.namespace.is_empty() {
        io.namespace = scan
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
    }
    if io.scan_name.is_empty() {
        return Err(RunnerError::Usage("the DriftScan has no name".into()));
    }
    // The operator checked these before creating the Job; the DriftScan may have changed since.
    let rules = crate::scan::tenancy::SourceRules {
        git_hosts: args
            .allowed_git_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        github_api_urls: args
            .allowed_github_api_urls
            .iter()
            .map(|u| crate::scan::tenancy::normalize_api_url(u).to_owned())
            .collect(),
        allow_insecure_credentials: args.allow_insecure_credentials,
    };
    rules
        .check_source(&scan.spec)
        .map_err(|refused| RunnerError::Credentials(format!("refused: {refused}")))?;
    let creds = credentials(&mut io, &scan).await?;
    let base_redact = Redact::new(creds.secrets());

    let tempdir;
    let root = match &args.workdir {
        Some(dir) => dir.clone(),
        None => {
            tempdir = tempfile::Builder::new()
                .prefix("driftless-scan-")
                .tempdir()
                .map_err(|source| RunnerError::Io {
                    path: "temporary directory".into(),
                    source,
                })?;
            tempdir.path().join("repo")
        }
    };
    let source = &scan.spec.source.git;
    let git_ref = source.git_ref.clone();
    let url = source.url.clone();
    let shown = crate::repo::display_url(&url);
    let commit = {
        let creds = creds.clone();
        let root = root.clone();
        let wanted = args.commit.clone();
        tokio::task::spawn_blocking(move || {
            git::clone(&url, &git_ref, wanted.as_deref(), &creds, &root)
        })
        .await
        .map_err(|e| RunnerError::Usage(format!("clone task: {e}")))?
        .map_err(|e| match e {
            git::GitError::Git(g) => git::GitError::Git(git2::Error::from_str(&format!(
                "cloning {shown}: {}",
                base_redact.text(g.message())
            ))),
            other => other,
        })?
    };
    tracing::info!(scan = %io.scan_name, %commit, "cloned");

    let all = discover(&root, &source.stacks, &source.discover, scan.spec.engine)
        .map_err(|e| RunnerError::Usage(format!("DriftScan {}: {e}", io.scan_name)))?;
    if args.discover {
        println!("{}", serde_json::json!({"commit": commit, "stacks": all}));
        return Ok(true);
    }
    let stacks = if args.stacks.is_empty() {
        all
    } else {
        args.stacks.clone()
    };
    let trigger = args.trigger.clone().or_else(|| {
        scan.status
            .as_ref()
            .and_then(|s| s.last_run.as_ref())
            .filter(|r| r.id == args.run_id)
            .map(|r| format!("{:?}", r.trigger))
    });
    let program = args
        .binary
        .clone()
        .unwrap_or_else(|| PathBuf::from(engine::program(scan.spec.engine)));

    let store = match &scan.spec.artifacts {
        Some(a) => match (&a.s3, &a.volume_claim) {
            (Some(target), _) => {
                let creds = match &a.credentials_secret {
                    Some(secret) => Some(artifacts::S3Credentials {
                        access_key_id: io
                            .required(&secret.name, "AWS_ACCESS_KEY_ID")
                            .await?
                            .expose()
                            .trim()
                            .to_owned(),
                        secret_access_key: SecretString::new(
                            io.required(&secret.name, "AWS_SECRET_ACCESS_KEY")
                                .await?
                                .expose()
                                .trim(),
                        ),
                    }),
                    None => None,
                };
                match artifacts::Store::s3(target, creds) {
                    Ok(s) => Some(s),
                    Err(err) => {
                        tracing::warn!(error = %base_redact.text(&err.to_string()), "artifacts disabled");
                        None
                    }
                }
            }
            (None, Some(claim)) => Some(artifacts::Store::Volume {
                claim: claim.clone(),
                mount: args.artifacts_dir.clone(),
            }),
            (None, None) => None,
        },
        None => None,
    };

    let mut all_ok = true;
    for stack in &stacks {
        let meta = RunMeta {
            run: args.run_id.clone(),
            commit: Some(commit.clone()),
            trigger: trigger.clone(),
            checked_at: time(chrono::Utc::now()),
        };
        let (outcome, artifact) = plan_stack(
            &scan,
            &root,
            stack,
            &program,
            &base_redact,
            store.as_ref(),
            &io.scan_name,
            &args.run_id,
        )
        .await;
        if let Outcome::Failed(err) = &outcome {
            all_ok = false;
            tracing::warn!(scan = %io.scan_name, %stack, error = %err, "stack failed");
        }
        let result = report_stack(&mut io, stack, &outcome, &meta, artifact).await;
        if let Err(err) = result {
            all_ok = false;
            tracing::error!(%stack, error = %base_redact.text(&err.to_string()), "writing the DriftReport failed");
        }
    }
    Ok(all_ok)
}

/// Reads the stack's previous report, builds the new status and writes it (object by
/// server-side apply, then the status subresource).
async fn report_stack(
    io: &mut Io,
    stack: &str,
    outcome: &Outcome,
    meta: &RunMeta,
    artifact: Option<Artifact>,
) -> Result<DriftReportStatus, RunnerError> {
    let name = report_name(&io.scan_name, stack);
    let previous = io.previous(&name).await?;
    let status = report::build_status(previous.as_ref(), outcome, meta, artifact);
    if let Some(s) = &status.summary {
        tracing::info!(scan = %io.scan_name, %stack, status = ?s.status, added = s.added, changed = s.changed, removed = s.removed, "stack planned");
    }
    io.write(stack, status.clone()).await?;
    Ok(status)
}

#[allow(clippy::too_many_arguments)]
async fn plan_stack(
    scan: &DriftScan,
    root: &Path,
    stack: &str,
    program: &Path,
    base_redact: &Redact,
    store: Option<&artifacts::Store>,
    scan_name: &str,
    run_id: &str,
) -> (Outcome, Option<Artifact>) {
    if !valid_stack(stack) {
        return (
            Outcome::Failed(format!(
                "invalid stack path {stack:?}: must be relative, without `..`"
            )),
            None,
        );
    }
    let dir = root.join(stack);
    if !dir.is_dir() {
        return (
            Outcome::Failed(format!(
                "stack directory {stack} does not exist at this commit"
            )),
            None,
        );
    }
    if scan.spec.plan.block_external_data {
        match engine::find_external_data(&dir, root) {
            Ok(Some(file)) => {
                let rel = file
                    .strip_prefix(root)
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                return (
                    Outcome::Failed(EngineError::ExternalData(rel).to_string()),
                    None,
                );
            }
            Ok(None) => {}
            Err(err) => return (Outcome::Failed(base_redact.text(&err.to_string())), None),
        }
    }
    let program = program.to_path_buf();
    let options = scan.spec.plan.clone();
    let dir2 = dir.clone();
    let ran = tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, Vec<u8>), EngineError> {
        let cmds = engine::plan_commands(&options, PLAN_FILE);
        let mut json = Vec::new();
        let mut text = Vec::new();
        // `plan -detailed-exitcode` exits 2 with changes; the parsed plan decides.
        for (i, cmd) in cmds.iter().enumerate() {
            let ok: &[i32] = if i == 1 { &[0, 2] } else { &[0] };
            let out = engine::run(&program, cmd, &dir2, ok)?;
            match i {
                2 => json = out.stdout,
                3 => text = out.stdout,
                _ => {}
            }
        }
        Ok((json, text))
    })
    .await;
    let (json, text) = match ran {
        Ok(Ok(v)) => v,
        Ok(Err(err)) => return (Outcome::Failed(base_redact.text(&err.to_string())), None),
        Err(err) => return (Outcome::Failed(format!("plan task: {err}")), None),
    };
    let parsed = match plan::parse(&json, base_redact) {
        Ok(p) => p,
        Err(err) => return (Outcome::Failed(err.to_string()), None),
    };
    let artifact = match store {
        Some(store) => {
            let (json, text) = artifacts::redacted_plan(base_redact, &parsed, &json, &text);
            match store
                .put(scan_name, stack, run_id, json.as_bytes(), text.as_bytes())
                .await
            {
                Ok(a) => Some(a),
                Err(err) => {
                    let redact = base_redact.with(parsed.sensitive.iter().cloned());
                    tracing::warn!(%stack, error = %redact.text(&err.to_string()), "storing the plan failed");
                    None
                }
            }
        }
        None => None,
    };
    let text = artifacts::redacted_text(base_redact, &parsed, &text);
    (
        Outcome::Planned {
            plan: parsed,
            text: Some(text),
        },
        artifact,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args as _, FromArgMatches as _};
    use driftless_crds::drift_report::{DriftItem, DriftStatus, MAX_HISTORY};
    use http::{Request, Response};
    use kube::client::Body;

    fn io(client: kube::Client) -> Io {
        let command = Args::augment_args(clap::Command::new("scan-runner"));
        let args = Args::from_arg_matches(&command.get_matches_from(["scan-runner"])).unwrap();
        Io {
            namespace: "ns".into(),
            scan_name: "infra".into(),
            args,
            client: Some(client),
        }
    }

    fn respond(status: u16, body: serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    async fn body_json(request: Request<Body>) -> serde_json::Value {
        let bytes = request.into_body().collect_bytes().await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn drifted() -> Outcome {
        let item = DriftItem {
            address: "output.vpc".into(),
            domain: "output".into(),
            source: None,
            change: driftless_crds::drift_report::ChangeType::Changed,
            replace: false,
            attributes: vec![],
            diff: None,
            corrected: false,
        };
        Outcome::Planned {
            plan: plan::ParsedPlan {
                items: vec![item],
                changed: 1,
                ..Default::default()
            },
            text: Some("  # null_resource.web will be updated in-place\n".into()),
        }
    }

    fn meta(run: &str) -> RunMeta {
        RunMeta {
            run: run.into(),
            commit: Some("c0ffee".into()),
            trigger: Some("Manual".into()),
            checked_at: time(chrono::Utc::now()),
        }
    }

    const REPORT: &str = "/apis/driftless.dev/v1alpha1/namespaces/ns/driftreports/infra-live-app";

    /// The API server side of one `report_stack`: GET answered with `existing` (404 when
    /// None), then the object apply, then the status apply; returns the status sent.
    async fn serve_report(
        handle: &mut tower_test::mock::Handle<Request<Body>, Response<Body>>,
        existing: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.method(), http::Method::GET);
        assert_eq!(request.uri().to_string(), REPORT);
        send.send_response(match existing {
            Some(obj) => respond(200, obj),
            None => respond(
                404,
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "NotFound", "code": 404, "message": "not found"}),
            ),
        });

        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.method(), http::Method::PATCH);
        assert_eq!(
            request.uri().to_string(),
            format!("{REPORT}?&force=true&fieldManager=driftless-scan-runner")
        );
        assert_eq!(
            request.headers()["content-type"],
            "application/apply-patch+yaml"
        );
        let object = body_json(request).await;
        assert_eq!(object["apiVersion"], "driftless.dev/v1alpha1");
        assert_eq!(object["kind"], "DriftReport");
        assert_eq!(object["metadata"]["name"], "infra-live-app");
        assert_eq!(object["metadata"]["labels"]["driftless.dev/scan"], "infra");
        assert_eq!(object["spec"]["target"]["kind"], "Stack");
        assert_eq!(object["spec"]["target"]["stack"], "live/app");
        assert!(
            object.get("status").is_none_or(|s| s.is_null()),
            "the object apply carries no status: {object}"
        );
        send.send_response(respond(200, object.clone()));

        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.method(), http::Method::PATCH);
        assert_eq!(
            request.uri().to_string(),
            format!("{REPORT}/status?&force=true&fieldManager=driftless-scan-runner")
        );
        assert_eq!(
            request.headers()["content-type"],
            "application/apply-patch+yaml"
        );
        let patch = body_json(request).await;
        assert_eq!(patch["apiVersion"], "driftless.dev/v1alpha1");
        assert_eq!(patch["kind"], "DriftReport");
        assert_eq!(patch["metadata"]["name"], "infra-live-app");
        let status = patch["status"].clone();
        let mut stored = object;
        stored["status"] = status.clone();
        send.send_response(respond(200, stored));
        status
    }

    #[tokio::test]
    async fn reports_are_written_by_server_side_apply_with_history() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let mut io = io(kube::Client::new(service, "default"));
        let server = tokio::spawn(async move {
            // First run: no report yet (create by apply), status Drifted with counts.
            let first = serve_report(&mut handle, None).await;
            assert_eq!(first["summary"]["status"], "Drifted");
            assert_eq!(first["summary"]["changed"], 1);
            assert_eq!(first["summary"]["run"], "r1");
            assert_eq!(first["summary"]["commit"], "c0ffee");
            assert_eq!(first["items"][0]["address"], "output.vpc");
            assert!(first["history"].as_array().is_none_or(|h| h.is_empty()));

            // Second run: the existing report's summary moves to the history.
            let existing = serde_json::json!({
                "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftReport",
                "metadata": {"name": "infra-live-app", "namespace": "ns"},
                "spec": {"target": {"kind": "Stack", "name": "infra/live/app"}},
                "status": first,
            });
            let second = serve_report(&mut handle, Some(existing)).await;
            assert_eq!(second["summary"]["status"], "InSync");
            assert_eq!(second["summary"]["run"], "r2");
            assert_eq!(second["history"][0]["run"], "r1");
            assert_eq!(second["history"][0]["status"], "Drifted");
            assert_eq!(second["items"].as_array().map_or(0, Vec::len), 0);

            // A report with a full history: still bounded.
            let full: Vec<serde_json::Value> = (0..MAX_HISTORY)
                .map(|i| {
                    serde_json::json!({"status": "InSync", "added": 0, "changed": 0,
                    "removed": 0, "checkedAt": "2026-01-01T00:00:00Z", "run": format!("old-{i}")})
                })
                .collect();
            let mut status = second.clone();
            status["history"] = serde_json::Value::Array(full);
            let existing = serde_json::json!({
                "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftReport",
                "metadata": {"name": "infra-live-app", "namespace": "ns"},
                "spec": {"target": {"kind": "Stack", "name": "infra/live/app"}},
                "status": status,
            });
            let third = serve_report(&mut handle, Some(existing)).await;
            let history = third["history"].as_array().unwrap();
            assert_eq!(history.len(), MAX_HISTORY);
            assert_eq!(history[0]["run"], "r2");
            assert_eq!(
                history[MAX_HISTORY - 1]["run"],
                format!("old-{}", MAX_HISTORY - 2)
            );
            assert_eq!(third["error"], "init failed");
            assert_eq!(third["summary"]["status"], "Error");
        });
        let s = report_stack(&mut io, "live/app", &drifted(), &meta("r1"), None)
            .await
            .unwrap();
        assert_eq!(s.summary.unwrap().status, DriftStatus::Drifted);
        let in_sync = Outcome::Planned {
            plan: plan::ParsedPlan::default(),
            text: None,
        };
        report_stack(&mut io, "live/app", &in_sync, &meta("r2"), None)
            .await
            .unwrap();
        report_stack(
            &mut io,
            "live/app",
            &Outcome::Failed("init failed".into()),
            &meta("r3"),
            None,
        )
        .await
        .unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn api_errors_are_reported_not_panics() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let mut io = io(kube::Client::new(service, "default"));
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(respond(
                404,
                serde_json::json!({"kind": "Status",
                "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                "message": "not found"}),
            ));
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(respond(
                403,
                serde_json::json!({"kind": "Status",
                "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                "message": "driftreports is forbidden: User cannot patch resource"}),
            ));
        });
        let err = report_stack(&mut io, "live/app", &drifted(), &meta("r1"), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("forbidden"), "{err}");
        server.await.unwrap();
    }

    #[test]
    fn stack_paths() {
        assert!(valid_stack("live/prod"));
        assert!(valid_stack("."));
        assert!(!valid_stack("../x"));
        assert!(!valid_stack("/etc"));
        assert!(!valid_stack("a/../../b"));
        assert!(!valid_stack(""));
    }

    #[test]
    fn discovery() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (p, f) in [
            ("live/a", "main.tf"),
            ("live/b", "x.tf.json"),
            ("live/b/deep", "main.tf"),
            ("live/c", "README.md"),
            ("tg/x", "terragrunt.hcl"),
            ("live/.terraform/m", "main.tf"),
        ] {
            std::fs::create_dir_all(root.join(p)).unwrap();
            std::fs::write(root.join(p).join(f), "").unwrap();
        }
        let got = discover(
            root,
            &["extra".into()],
            &["live/*".into()],
            Engine::Terraform,
        )
        .unwrap();
        assert_eq!(got, vec!["extra", "live/a", "live/b"]);
        let got = discover(root, &[], &["live/**".into()], Engine::Terraform).unwrap();
        assert_eq!(got, vec!["live/a", "live/b", "live/b/deep"]);
        let got = discover(root, &[], &["**".into()], Engine::Terragrunt).unwrap();
        assert_eq!(got, vec!["tg/x"]);
        let err = discover(
            root,
            &[],
            &["live/*".into(), "live/[".into()],
            Engine::Terraform,
        )
        .unwrap_err();
        assert!(err.contains("spec.source.git.discover[1]"), "{err}");
        assert!(err.contains("live/["), "{err}");
    }
}
