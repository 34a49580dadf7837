//! `driftless facts`: the host's inventory as JSON, or the node metrics once in the Prometheus
//! text format (`--format prometheus`). Also defines the host-path and collector flags shared
//! with `driftless agent`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches};

use super::ConfigArgs;
use crate::config;
use crate::facts::collectors::{self, Scraper, Settings, REGISTRY};
use crate::facts::inventory;
use crate::host::HostPaths;

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

/// node_exporter-style collector switches: `--collector.NAME`, `--no-collector.NAME`,
/// `--collector.disable-defaults`.
#[derive(Debug, Clone, Default)]
pub struct CollectorFlags {
    /// `--collector.disable-defaults`.
    pub disable_defaults: bool,
    /// `(name, on)` for every switch given.
    pub switches: Vec<(String, bool)>,
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
        let mut flags = Self {
            disable_defaults: matches.get_flag("collector.disable-defaults"),
            switches: Vec::new(),
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
    if let Some(spec) = policy {
        settings.collectors = spec.collectors.clone();
        settings.facts = spec.facts.clone();
        settings.interval = spec.interval.get();
    }
    let enabled = flags.select(policy.map(|p| &p.collectors))?;
    Ok(Scraper::new(&settings, &enabled)?)
}

/// Prints the inventory as JSON, or one scrape in the text format.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let paths = args.host.paths();
    match args.format {
        Format::Json => {
            let facts = inventory::gather(&paths);
            println!("{}", serde_json::to_string_pretty(&facts)?);
        }
        Format::Prometheus => {
            let policy = match &args.config {
                Some(dir) => {
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
                    crate::facts::runtime::facts_policy(&loaded).map(|(_, spec)| spec)
                }
                None => None,
            };
            let scraper = scraper(paths, policy.as_ref(), &args.collectors)
                .context("setting up the collectors")?;
            let mut out = String::with_capacity(64 * 1024);
            scraper.scrape_into(&mut out);
            print!("{out}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
