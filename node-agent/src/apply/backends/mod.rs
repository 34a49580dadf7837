//! Back-ends for the system task types: package managers, systemd, local accounts, sysctl,
//! kernel modules and mounts.
//!
//! Each back-end keeps its deciding part pure (command construction, output parsing, file
//! editing on strings) and does I/O through the host root in [`HostPaths`], so it runs against
//! `/`, `/host` in a DaemonSet, or a temporary root in tests.
//!
//! Guarantees: commands are run without a shell, with arguments passed as given; a command that
//! fails is reported with its program, exit status and standard error. Caveats: operations that
//! act on the running kernel or service manager (`modprobe`, `mount`, `systemctl start`) are only
//! done when the root is `/`; below any other root they fail with [`BackendError::NeedsLiveRoot`].

pub mod accounts;
pub mod apk;
pub mod dpkg;
pub mod modules;
pub mod mount;
pub mod rpm;
pub mod sysctl;
pub mod systemd;

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use driftless_crds::apply_policy::PackageManager;

use crate::apply::durable::PendingSync;
use crate::host::HostPaths;

/// What went wrong in a back-end.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A command could not be started (usually: not installed).
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command exited with a failure.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// Its standard error (last lines).
        stderr: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file or command output that does not parse.
    #[error("{0}")]
    Parse(String),
    /// The operation changes the running system and the root is not `/`.
    #[error("{what} needs the live system: it is only done with --root / (the root is {root})")]
    NeedsLiveRoot {
        /// The operation.
        what: String,
        /// The root in use.
        root: String,
    },
    /// A request that cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
}

impl BackendError {
    /// An I/O error on a path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BackendError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<BackendError> for crate::apply::tasks::TaskError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Io { path, source } => {
                crate::apply::tasks::TaskError::io(path.display().to_string(), source)
            }
            other => crate::apply::tasks::TaskError::Invalid(other.to_string()),
        }
    }
}

/// A command to run: program, arguments, extra environment, optional standard input.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Cmd {
    /// The program (looked up in `PATH`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Text written to its standard input.
    pub stdin: Option<String>,
}

impl Cmd {
    /// A command with no arguments yet.
    pub fn new(program: &str) -> Self {
        Self {
            program: program.to_owned(),
            ..Self::default()
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets standard input.
    pub fn stdin(mut self, text: impl Into<String>) -> Self {
        self.stdin = Some(text.into());
        self
    }

    /// Runs it and returns its output, whatever its exit status.
    pub fn output(&self) -> Result<Output, BackendError> {
        let mut command = Command::new(&self.program);
        command
            .args(self.args.iter().map(OsString::from))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in &self.env {
            command.env(name, value);
        }
        tracing::debug!(command = %self, "running");
        let mut child = command.spawn().map_err(|source| BackendError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        if let (Some(text), Some(mut stdin)) = (&self.stdin, child.stdin.take()) {
            stdin
                .write_all(text.as_bytes())
                .map_err(|source| BackendError::Spawn {
                    program: self.program.clone(),
                    source,
                })?;
        }
        let out = child
            .wait_with_output()
            .map_err(|source| BackendError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        Ok(Output {
            code: out.status.code(),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs it and fails unless it exits 0.
    pub fn run(&self) -> Result<Output, BackendError> {
        let out = self.output()?;
        if out.code == Some(0) {
            Ok(out)
        } else {
            Err(self.failed(&out))
        }
    }

    /// The error for a failed run.
    pub fn failed(&self, out: &Output) -> BackendError {
        BackendError::Command {
            command: self.to_string(),
            status: out.status.clone(),
            stderr: tail(&out.stderr, 5),
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

/// What a command printed and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// The exit status as text.
    pub status: String,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// The last `n` non-empty lines of a text, joined by `; `.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("; ")
}

/// Whether the root is the running system's own `/`.
pub fn is_live_root(paths: &HostPaths) -> bool {
    paths.root == Path::new("/")
}

/// Fails with [`BackendError::NeedsLiveRoot`] unless the root is `/`.
pub fn require_live_root(paths: &HostPaths, what: &str) -> Result<(), BackendError> {
    if is_live_root(paths) {
        Ok(())
    } else {
        Err(BackendError::NeedsLiveRoot {
            what: what.to_owned(),
            root: paths.root.display().to_string(),
        })
    }
}

/// Reads a file below the root; a missing file is `None`.
pub fn read_optional(path: &Path) -> Result<Option<String>, BackendError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BackendError::io(path, e)),
    }
}

/// Writes a file atomically: a temporary file beside it, then renamed over it. The mode of an
/// existing file is kept; a new file gets `new_mode`. Parent directories are created. With
/// `pending` the file is flushed to disk with the rest of the policy's writes (see
/// [`crate::apply::durable`]); without, it is flushed before the rename (account databases,
/// whose backup and replacement must reach the disk in order).
pub fn write_atomic(
    path: &Path,
    content: &str,
    new_mode: u32,
    pending: Option<&PendingSync>,
) -> Result<(), BackendError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let parent = path
        .parent()
        .ok_or_else(|| BackendError::Invalid(format!("{} has no parent", path.display())))?;
    if !parent.is_dir() {
        std::fs::create_dir_all(parent).map_err(|e| BackendError::io(parent, e))?;
    }
    let (mode, owner) = match std::fs::metadata(path) {
        Ok(meta) => (meta.mode() & 0o7777, Some((meta.uid(), meta.gid()))),
        Err(_) => (new_mode, None),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.driftless-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(content.as_bytes())?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        if pending.is_none() {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(BackendError::io(path, e));
    }
    if let Some(pending) = pending {
        pending.note(parent);
    }
    Ok(())
}

/// Removes a file; a missing file is not an error. Returns whether it existed.
pub fn remove_optional(path: &Path) -> Result<bool, BackendError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(BackendError::io(path, e)),
    }
}

/// The package manager of a host root, detected from its package databases: dpkg
/// (`var/lib/dpkg/status`), rpm (`var/lib/rpm` or `usr/lib/sysimage/rpm`), apk
/// (`lib/apk/db/installed`). `None` when none is found.
pub fn detect_package_manager(paths: &HostPaths) -> Option<PackageManager> {
    detect_in(&paths.root)
}

fn detect_in(root: &Path) -> Option<PackageManager> {
    if root.join("var/lib/dpkg/status").is_file() {
        Some(PackageManager::Apt)
    } else if root.join("var/lib/rpm").is_dir() || root.join("usr/lib/sysimage/rpm").is_dir() {
        Some(PackageManager::Dnf)
    } else if root.join("lib/apk/db/installed").is_file() {
        Some(PackageManager::Apk)
    } else {
        None
    }
}

/// What a package manager reports about one package.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackageState {
    /// Installed version; `None` when not installed.
    pub version: Option<String>,
    /// Whether the package is held at its version (apt hold, dnf versionlock, apk `=` pin).
    pub held: bool,
}

/// The operations every package back-end provides.
pub trait PackageBackend {
    /// The back-end's name in reports (`apt`, `dnf`, `apk`).
    fn name(&self) -> &'static str;
    /// What is installed.
    fn query(&self, package: &str) -> Result<PackageState, BackendError>;
    /// Installs the package, at `version` when given (up- or downgrading).
    fn install(&self, package: &str, version: Option<&str>) -> Result<(), BackendError>;
    /// Removes the package.
    fn remove(&self, package: &str) -> Result<(), BackendError>;
    /// Holds the package at `version`, the one just installed, or releases it. apk and dnf pin
    /// `version` itself; dpkg's selections can only hold whatever is installed, so it ignores it.
    fn set_held(&self, package: &str, version: &str, held: bool) -> Result<(), BackendError>;
}

/// The back-end for a manager (detected when `Auto`).
pub fn package_backend(
    paths: &HostPaths,
    manager: PackageManager,
) -> Result<Box<dyn PackageBackend>, BackendError> {
    let manager = match manager {
        PackageManager::Auto => detect_package_manager(paths).ok_or_else(|| {
            BackendError::Invalid(format!(
                "no package manager found below {} (looked for the dpkg, rpm and apk databases)",
                paths.root.display()
            ))
        })?,
        other => other,
    };
    Ok(match manager {
        PackageManager::Apt | PackageManager::Auto => Box::new(dpkg::Apt::new(paths)),
        PackageManager::Dnf => Box::new(rpm::Dnf::new(paths)),
        PackageManager::Apk => Box::new(apk::Apk::new(paths)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_managers_from_their_databases() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(detect_in(dir.path()), None);
        std::fs::create_dir_all(dir.path().join("lib/apk/db")).unwrap();
        std::fs::write(dir.path().join("lib/apk/db/installed"), "").unwrap();
        assert_eq!(detect_in(dir.path()), Some(PackageManager::Apk));
        std::fs::create_dir_all(dir.path().join("usr/lib/sysimage/rpm")).unwrap();
        assert_eq!(detect_in(dir.path()), Some(PackageManager::Dnf));
        std::fs::create_dir_all(dir.path().join("var/lib/dpkg")).unwrap();
        std::fs::write(dir.path().join("var/lib/dpkg/status"), "").unwrap();
        assert_eq!(detect_in(dir.path()), Some(PackageManager::Apt));
    }

    #[test]
    fn failed_commands_name_program_and_stderr() {
        let cmd = Cmd::new("sh").args(["-c", "echo boom >&2; exit 3"]);
        let err = cmd.run().unwrap_err().to_string();
        assert!(err.starts_with("sh -c echo boom >&2; exit 3 failed (exit status: 3)"));
        assert!(err.ends_with("boom"), "{err}");
        let missing = Cmd::new("/nonexistent/prog").run().unwrap_err();
        assert!(matches!(missing, BackendError::Spawn { .. }));
    }

    #[test]
    fn atomic_write_keeps_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/file");
        write_atomic(&path, "one", 0o600, None).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, "two", 0o600, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
