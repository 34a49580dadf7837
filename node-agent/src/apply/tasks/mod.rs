//! The task types of an ApplyPolicy, one module each, behind one [`Task`] trait.
//!
//! | task type (`spec.tasks[].X`) | module | resource reported |
//! |---|---|---|
//! | `file` | [`file`] | `file:PATH` |
//! | `directory` | [`directory`] | `directory:PATH` |
//! | `symlink` | [`symlink`] | `symlink:PATH` |
//! | `lineInFile` | [`line_in_file`] | `lineInFile:PATH` |
//! | `blockInFile` | [`block_in_file`] | `blockInFile:PATH` |
//! | `cron` | [`cron`] | `cron:/etc/cron.d/NAME` |
//! | `command` | [`command`] | `command:ARGV0` |
//! | `package` | `package` (apt/dpkg, dnf/rpm, apk back-ends) | `package:NAME` |
//! | `service` | `service` (systemd units) | `service:UNIT` |
//! | `sysctl` | `sysctl` (live `/proc/sys` value and persisted file) | `sysctl:KEY` |
//! | `user` | `user` (`/etc/passwd`, `/etc/shadow`) | `user:NAME` |
//! | `group` | `group` (`/etc/group`, `/etc/gshadow`) | `group:NAME` |
//! | `kernelModule` | `kernel_module` (loaded + `/etc/modules-load.d`) | `kernelModule:NAME` |
//! | `mount` | `mount` (`/etc/fstab` entry + mounted state) | `mount:PATH` |
//! | `plugin` | [`plugin`] (a WebAssembly plugin) | what the plugin names |
//!
//! A task type whose module is not in this directory yet is reported `failed` with "task type X
//! is not implemented" by [`task`]; adding the module means adding its `mod` line and its arm.
//!
//! Every task is *decide, then act*: [`Task::plan`] reads live state (never writes) and returns
//! the attribute-level differences; [`Task::execute`] makes live state match and is only called
//! when the plan has a change and the run is neither a dry run nor an `Audit` policy. Both get a
//! [`Context`] with the confined host root, facts, vars, secrets and a command runner.

pub mod block_in_file;
pub mod command;
pub mod cron;
pub mod directory;
pub mod file;
pub mod group;
pub mod kernel_module;
pub mod line_in_file;
pub mod mount;
pub mod package;
pub mod plugin;
pub mod service;
pub mod symlink;
pub mod sysctl;
pub mod user;
pub mod util;

use std::path::{Path, PathBuf};
use std::time::Instant;

use driftless_crds::apply_policy::TaskAction;
use driftless_crds::secret::{expand, Expanded, Lookup, Redactor};

pub use super::report::Plan;
use super::root::{CommandError, CommandOutput, Root, RootError};
use super::template::{TemplateError, Templates};

/// Why a task could not be planned or executed. The message is shown to users after the task's
/// name, so it says what and where, never how the code is built.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The task's fields do not make sense for this host (bad regexp, unknown user, ...).
    #[error("{0}")]
    Invalid(String),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The host path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A path leaves the host root.
    #[error(transparent)]
    Root(#[from] RootError),
    /// A template or `when` condition failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A command could not run or ran out of time.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A command exited non-zero.
    #[error("{program} exited with {code}: {stderr}")]
    Exit {
        /// The program.
        program: String,
        /// Exit code, or `signal`.
        code: String,
        /// Its standard error, trimmed and bounded.
        stderr: String,
    },
    /// A `${secret:...}` or `${env:...}` reference did not resolve.
    #[error("{field}: {message}")]
    Reference {
        /// The field.
        field: String,
        /// What is missing.
        message: String,
    },
}

impl TaskError {
    /// An I/O error on a host path.
    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Everything a task may use. Borrowed from the engine for one task run.
pub struct Context<'a> {
    /// The host root; resolve every path through [`Context::path`] or
    /// [`Context::path_nofollow`].
    pub root: &'a Root,
    /// Nothing may be written (a dry run, or an `Audit` policy). The engine never calls
    /// [`Task::execute`] then; tasks use it only to phrase messages.
    pub dry_run: bool,
    /// The facts inventory (`facts` in templates).
    pub facts: &'a serde_json::Value,
    /// The policy's vars (`vars` in templates).
    pub vars: &'a serde_json::Value,
    /// Where `${secret:...}` and `${env:...}` values come from.
    pub secrets: &'a dyn Lookup,
    /// Removes every secret value of the policy from text.
    pub redactor: &'a Redactor,
    /// The template engine.
    pub templates: &'a Templates,
    /// The configuration directory (`file.source` is relative to it).
    pub config_dir: &'a Path,
    /// The task's name, for messages.
    pub task: &'a str,
    /// When the task's `timeout` runs out; commands are killed then.
    pub deadline: Option<Instant>,
}

impl Context<'_> {
    /// A host path below the root, following symlinks (which must stay inside the root).
    pub fn path(&self, host_path: &str) -> Result<PathBuf, TaskError> {
        Ok(self.root.resolve(host_path)?)
    }

    /// A host path below the root, following symlinks in its parent only (the path itself may
    /// be a symlink: for links and removals).
    pub fn path_nofollow(&self, host_path: &str) -> Result<PathBuf, TaskError> {
        Ok(self.root.resolve_parent(host_path)?)
    }

    /// Substitutes `${secret:...}` and `${env:...}` in a field's value.
    pub fn expand(&self, field: &str, text: &str) -> Result<Expanded, TaskError> {
        expand(text, self.secrets).map_err(|e| TaskError::Reference {
            field: field.into(),
            message: e.to_string(),
        })
    }

    /// Renders a template field with `facts` and `vars`, then substitutes references.
    pub fn render(&self, field: &str, source: &str) -> Result<Expanded, TaskError> {
        let rendered = self
            .templates
            .render(self.task, field, source, self.facts, self.vars)?;
        self.expand(field, &rendered)
    }

    /// Runs a program below the root (see [`Root::run`]) until the task's deadline. Returns the
    /// output whatever the exit code; see [`Context::run_ok`].
    pub fn run(
        &self,
        argv: &[String],
        env: &[(String, String)],
    ) -> Result<CommandOutput, TaskError> {
        Ok(self.root.run(argv, env, None, self.deadline)?)
    }

    /// Runs a program below the root and fails unless it exits 0.
    pub fn run_ok(&self, argv: &[String]) -> Result<CommandOutput, TaskError> {
        let out = self.run(argv, &[])?;
        if out.success() {
            return Ok(out);
        }
        Err(self.exit_error(argv, &out))
    }

    /// The error for a command that exited non-zero, secrets redacted.
    pub fn exit_error(&self, argv: &[String], out: &CommandOutput) -> TaskError {
        let stderr: String = out.stderr.trim().chars().take(2000).collect();
        TaskError::Exit {
            program: argv.first().cloned().unwrap_or_default(),
            code: out.code.map_or("a signal".into(), |c| c.to_string()),
            stderr: self.redactor.redact(&stderr).into_owned(),
        }
    }
}

/// One task type: decide, then act.
pub trait Task {
    /// Reads live state (never writes) and returns what differs from the desired state.
    fn plan(&self, ctx: &Context) -> Result<Plan, TaskError>;

    /// Makes live state match; called only for a plan with a change, never in a dry run.
    fn execute(&self, plan: &Plan, ctx: &Context) -> Result<(), TaskError>;
}

/// The module for a task type.
pub fn task(action: &TaskAction) -> &dyn Task {
    match action {
        TaskAction::File(t) => t,
        TaskAction::Directory(t) => t,
        TaskAction::Symlink(t) => t,
        TaskAction::LineInFile(t) => t,
        TaskAction::BlockInFile(t) => t,
        TaskAction::Cron(t) => t,
        TaskAction::Command(t) => t,
        TaskAction::Package(t) => t,
        TaskAction::Service(t) => t,
        TaskAction::Sysctl(t) => t,
        TaskAction::User(t) => t,
        TaskAction::Group(t) => t,
        TaskAction::KernelModule(t) => t,
        TaskAction::Mount(t) => t,
        TaskAction::Plugin(t) => t,
    }
}
