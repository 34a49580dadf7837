//! `driftless facts`: the host's inventory as JSON, the node metrics once in the Prometheus
//! text format (`--format prometheus`), or the node's report after one evaluation of the
//! FactsPolicy thresholds (`--format report`). Also defines the host-path and collector flags
//! shared with `driftless agent`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches};

use super::ConfigArgs;
use crate::config;
use crate::facts::collectors::{self, FlagOptions, Scraper, Settings, REGISTRY};
use crate::facts::inventory;
use crate::facts::report::NodeReport;
use crate::facts::thresholds::Evaluator;
use crate::host::HostPaths;
use driftless_crds::facts_policy::FactsPolicySpec;

/// Where the host is: one root, or node_exporter's `--path.*` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct HostArgs {
    /// Host root: every host path is read below it (`/host` in a DaemonSet). Alias:
    /// `--path.rootfs`.
    #[arg(
        long,
        alias = "path.rootfs",
        default_value = "/",
        env = "DRIFTLESS_ROOT"
    )]
    pub root: PathBuf,
    /// procfs mount point (default `ROOT/proc`).
    #[arg(long = "path.procfs", value_name = "DIR")]
    pub procfs: Option<PathBuf>,
    /// sysfs mount point (default `ROOT/sys`).
    #[arg(long = "path.sysfs", value_name = "DIR")]
    pub sysfs: Option<PathBuf>,
}

impl HostArgs {
    /// The host paths these flags describe.
    pub fn paths(&self) -> HostPaths {
        let mut paths = HostPaths::under(&self.root);
        if let Some(proc) = &self.procfs {
            paths.proc = proc.clone();
        }
        if let Some(sys) = &self.sysfs {
            paths.sys = sys.clone();
        }
        paths
    }
}

/// node_exporter's regular-expression options of the collectors, which replace the FactsPolicy's.
const OPTION_FLAGS: &[(&str, &str)] = &[
    (
        "collector.netclass.ignored-devices",
        "Interfaces the netclass collector leaves out (default: none)",
    ),
    (
        "collector.netdev.device-include",
        "Interfaces the netdev collector keeps (default: all)",
    ),
    (
        "collector.netdev.device-exclude",
        "Interfaces the netdev collector leaves out (default: none)",
    ),
    (
        "collector.filesystem.mount-points-exclude",
        "Mount points the filesystem collector leaves out (default: node_exporter's)",
    ),
    (
        "collector.diskstats.device-exclude",
        "Block devices the diskstats collector leaves out (default: node_exporter's)",
    ),
];

/// node_exporter-style collector switches (`--collector.NAME`, `--no-collector.NAME`,
/// `--collector.disable-defaults`) and collector options (`--collector.textfile.directory`).
#[derive(Debug, Clone, Default)]
pub struct CollectorFlags {
    /// `--collector.disable-defaults`.
    pub disable_defaults: bool,
    /// `(name, on)` for every switch given.
    pub switches: Vec<(String, bool)>,
    /// Collector options.
    pub options: FlagOptions,
}

impl CollectorFlags {
    /// The collectors to run given an optional FactsPolicy's choice.
    pub fn select(
        &self,
        policy: Option<&driftless_crds::facts_policy::Collectors>,
    ) -> anyhow::Result<BTreeSet<&'static str>> {
        Ok(collectors::select(
            policy,
            self.disable_defaults,
            &self.switches,
        )?)
    }
}

impl FromArgMatches for CollectorFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let text = |id: &str| matches.get_one::<String>(id).cloned();
        let mut flags = Self {
            disable_defaults: matches.get_flag("collector.disable-defaults"),
            switches: Vec::new(),
            options: FlagOptions {
                textfile_directories: matches
                    .get_many::<PathBuf>("collector.textfile.directory")
                    .map(|dirs| dirs.cloned().collect())
                    .unwrap_or_default(),
                netclass_ignored_devices: text("collector.netclass.ignored-devices"),
                netdev_device_include: text("collector.netdev.device-include"),
                netdev_device_exclude: text("collector.netdev.device-exclude"),
                filesystem_mount_points_exclude: text("collector.filesystem.mount-points-exclude"),
                diskstats_device_exclude: text("collector.diskstats.device-exclude"),
            },
        };
        for c in REGISTRY {
            if matches.get_flag(&format!("collector.{}", c.name)) {
                flags.switches.push((c.name.to_owned(), true));
            }
        }
        for c in REGISTRY {
            if matches.get_flag(&format!("no-collector.{}", c.name)) {
                flags.switches.push((c.name.to_owned(), false));
            }
        }
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for CollectorFlags {
    fn augment_args(mut cmd: Command) -> Command {
        cmd = cmd.arg(
            Arg::new("collector.disable-defaults")
                .long("collector.disable-defaults")
                .action(ArgAction::SetTrue)
                .help("Start from no collectors; enable each with --collector.NAME"),
        );
        cmd = cmd.arg(
            Arg::new("collector.textfile.directory")
                .long("collector.textfile.directory")
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .action(ArgAction::Append)
                .help(
                    "Export the *.prom files of DIR (a glob pattern may match several \
                     directories); repeatable, read as given (not below --root)",
                ),
        );
        for (id, help) in OPTION_FLAGS {
            cmd = cmd.arg(Arg::new(*id).long(*id).value_name("REGEX").help(*help));
        }
        // clap wants `'static` names; these are built once per process.
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        for c in REGISTRY {
            let on = leak(format!("collector.{}", c.name));
            let off = leak(format!("no-collector.{}", c.name));
            cmd = cmd
                .arg(
                    Arg::new(on)
                        .long(on)
                        .action(ArgAction::SetTrue)
                        .help(format!("Enable the {} collector", c.name))
                        .hide(true),
                )
                .arg(
                    Arg::new(off)
                        .long(off)
                        .action(ArgAction::SetTrue)
                        .help(format!("Disable the {} collector", c.name))
                        .hide(true),
                );
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// Output formats of `driftless facts`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    /// The inventory as JSON.
    Json,
    /// One scrape of the node collectors in the Prometheus text format.
    Prometheus,
    /// The node's DriftReport (JSON) after evaluating the `--config` FactsPolicy's thresholds on
    /// one scrape; a threshold counts as breached when its condition holds now, whatever its
    /// `for`.
    Report,
}

/// Flags of `driftless facts`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    host: HostArgs,
    #[command(flatten)]
    collectors: CollectorFlags,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Read collector options and custom facts from the FactsPolicy in this configuration
    /// directory (default: none; built-in defaults).
    #[arg(long, env = "DRIFTLESS_CONFIG")]
    config: Option<PathBuf>,
    /// Env file with secrets for `--config`.
    #[arg(long, env = "DRIFTLESS_ENV_FILE")]
    env_file: Option<PathBuf>,
}

/// The scraper for a configuration's first FactsPolicy (or the defaults) and the flags.
pub fn scraper(
    paths: HostPaths,
    policy: Option<&driftless_crds::facts_policy::FactsPolicySpec>,
    flags: &CollectorFlags,
) -> anyhow::Result<Scraper> {
    let mut settings = Settings::new(paths);
    settings.flags = flags.options.clone();
    if let Some(spec) = policy {
        settings.collectors = spec.collectors.clone();
        settings.facts = spec.facts.clone();
        settings.interval = spec.interval.get();
    }
    let enabled = flags.select(policy.map(|p| &p.collectors))?;
    Ok(Scraper::new(&settings, &enabled)?)
}

/// The first FactsPolicy of `--config` (name and spec), if given.
fn policy(args: &Args) -> anyhow::Result<Option<(String, FactsPolicySpec)>> {
    let Some(dir) = &args.config else {
        return Ok(None);
    };
    let sources = ConfigArgs {
        config: Some(dir.clone()),
        env_file: args.env_file.clone(),
    };
    let (dir, secrets) = sources.sources()?;
    let loaded = config::load(&dir, &secrets).map_err(|errors| {
        anyhow::anyhow!(
            "{}: invalid configuration: {}",
            dir.display(),
            errors
                .0
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    Ok(crate::facts::runtime::facts_policy(&loaded))
}

/// The node's report after one evaluation of the policy's thresholds on `families`.
fn one_evaluation(
    paths: &HostPaths,
    policy: Option<&(String, FactsPolicySpec)>,
    families: &[crate::metrics::Family],
) -> anyhow::Result<driftless_crds::drift_report::DriftReport> {
    let now = chrono::Utc::now();
    let mut evaluator = match policy {
        Some((name, spec)) => {
            // One look cannot tell how long a condition has held: `for` does not apply.
            let zero: driftless_crds::common::Duration =
                serde_json::from_value(serde_json::Value::String("0s".into()))?;
            let thresholds: Vec<_> = spec
                .thresholds
                .iter()
                .cloned()
                .map(|mut t| {
                    t.for_ = zero.clone();
                    t
                })
                .collect();
            Evaluator::new(name, &thresholds)?
        }
        None => Evaluator::default(),
    };
    evaluator.evaluate(families, now.timestamp_millis() as f64 / 1000.0);
    let node = std::env::var("NODE_NAME").unwrap_or_else(|_| inventory::identity(paths).hostname);
    let mut report = NodeReport::new(&node);
    report.record(now, &evaluator.breaches());
    Ok(report.object())
}

/// Writes to standard output; a reader that went away (`driftless facts | head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to standard output"))
        }
        _ => Ok(()),
    }
}

/// Prints the inventory as JSON, one scrape in the text format, or the node's report.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let paths = args.host.paths();
    match args.format {
        Format::Json => {
            let facts = inventory::gather(&paths);
            emit(&format!("{}\n", serde_json::to_string_pretty(&facts)?))?;
        }
        Format::Prometheus | Format::Report => {
            let policy = policy(args)?;
            let spec = policy.as_ref().map(|(_, spec)| spec);
            let scraper = scraper(paths.clone(), spec, &args.collectors)
                .context("setting up the collectors")?;
            if matches!(args.format, Format::Report) {
                let report = one_evaluation(&paths, policy.as_ref(), &scraper.scrape())?;
                emit(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
            } else {
                let mut out = String::with_capacity(64 * 1024);
                scraper.scrape_into(&mut out);
                emit(&out)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
