//! Host-root confinement: every host path a task touches is resolved below `--root`, and every
//! command runs with the root as its filesystem view.
//!
//! Guarantees: [`Root::resolve`] and [`Root::resolve_parent`] never return a path outside the
//! root. `..` that would climb above `/`, and symlinks (absolute or relative) that lead outside
//! the root, are refused with [`RootError::Escape`]; absolute symlink targets are taken as host
//! paths, i.e. relative to the root, the way the host itself would see them.
//!
//! Caveats: resolution and the later write are not atomic, so a process that swaps a directory
//! for a symlink in between can still race us; the DaemonSet's host is trusted not to do that.
//! Commands below a root other than `/` run through `chroot(8)`: the root must hold the
//! programs they run (and their libraries), and `/proc`, `/sys` and `/dev` are whatever the root
//! has mounted there.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::durable::PendingSync;
use crate::host::HostPaths;

/// Symlinks followed while resolving one path, as Linux's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

/// Why a host path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RootError {
    /// Task paths are host paths and must be absolute.
    #[error("{path:?} is not an absolute path")]
    NotAbsolute {
        /// The path as given.
        path: String,
    },
    /// The path leaves the root.
    #[error("{path:?} escapes the host root {root}: {why}")]
    Escape {
        /// The path as given.
        path: String,
        /// The root.
        root: String,
        /// What led outside.
        why: String,
    },
    /// Too many symlinks (a loop).
    #[error("{path:?}: too many levels of symbolic links")]
    Loop {
        /// The path as given.
        path: String,
    },
    /// A symlink could not be read.
    #[error("{path:?}: {message}")]
    Io {
        /// The path as given.
        path: String,
        /// The error.
        message: String,
    },
}

/// The host root and the helpers that keep paths and commands inside it.
#[derive(Clone, Debug)]
pub struct Root {
    /// The host's paths (root, proc, sys).
    pub paths: HostPaths,
    /// Files written below the root and not flushed to disk yet (see [`super::durable`]).
    pub pending: PendingSync,
}

/// What a command printed and how it exited.
#[derive(Clone, Debug, Default)]
pub struct CommandOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CommandOutput {
    /// Exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Why a command could not be run to completion.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not be started.
    #[error("cannot run {program}: {message}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        message: String,
    },
    /// It ran past its deadline and was killed.
    #[error("{program} was killed after {timeout:.1?}: the task's timeout ran out")]
    Timeout {
        /// The program.
        program: String,
        /// How long it ran.
        timeout: Duration,
    },
}

impl Root {
    /// A root directory (`/`, `/host`, or a temporary directory in tests).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            paths: HostPaths::under(root),
            pending: PendingSync::default(),
        }
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.paths.root
    }

    /// Whether the root is the real `/` (commands then run without `chroot`).
    pub fn is_slash(&self) -> bool {
        self.paths.root == Path::new("/")
    }

    /// Resolves a host path, following every symlink (confined), to a path as seen from here.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, RootError> {
        let host = self.resolve_host(path, true)?;
        Ok(self.paths.host(host))
    }

    /// Resolves a host path's parent directory (following symlinks, confined) and appends the
    /// last component unresolved: for links themselves and for removals.
    pub fn resolve_parent(&self, path: &str) -> Result<PathBuf, RootError> {
        let host = self.resolve_host(path, false)?;
        Ok(self.paths.host(host))
    }

    /// The host path (below `/`, as the host sees it) a path resolves to.
    pub fn resolve_host(&self, path: &str, follow_last: bool) -> Result<PathBuf, RootError> {
        if !path.starts_with('/') {
            return Err(RootError::NotAbsolute { path: path.into() });
        }
        let escape = |why: String| RootError::Escape {
            path: path.into(),
            root: self.paths.root.display().to_string(),
            why,
        };
        // Pending components, processed front to back; symlink targets are spliced in.
        let mut pending: Vec<String> = components(path).into_iter().rev().collect();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            match part.as_str() {
                "." => continue,
                ".." => {
                    if done.pop().is_none() {
                        return Err(escape("\"..\" climbs above the root".into()));
                    }
                    continue;
                }
                _ => {}
            }
            done.push(part);
            let is_last = pending.is_empty();
            if is_last && !follow_last {
                break;
            }
            let here = self.paths.host(join(&done));
            let Ok(meta) = std::fs::symlink_metadata(&here) else {
                continue; // Does not exist (yet): nothing to follow.
            };
            if !meta.file_type().is_symlink() {
                continue;
            }
            hops += 1;
            if hops > MAX_SYMLINKS {
                return Err(RootError::Loop { path: path.into() });
            }
            let target = std::fs::read_link(&here).map_err(|err| RootError::Io {
                path: path.into(),
                message: err.to_string(),
            })?;
            let link = join(&done);
            done.pop();
            let target_text = target.to_string_lossy().into_owned();
            if target_text.starts_with('/') {
                done.clear();
            } else if escapes(&done, &target_text) {
                return Err(escape(format!(
                    "symlink {} points to {target_text}, outside the root",
                    link.display()
                )));
            }
            for component in components(&target_text).into_iter().rev() {
                pending.push(component);
            }
        }
        Ok(join(&done))
    }

    /// Runs a program with the root as its filesystem view (`chroot ROOT` unless the root is
    /// `/`), killing it at `deadline`. `env` is added to a minimal environment.
    pub fn run(
        &self,
        argv: &[String],
        env: &[(String, String)],
        cwd: Option<&str>,
        deadline: Option<Instant>,
    ) -> Result<CommandOutput, CommandError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(CommandError::Spawn {
                program: String::new(),
                message: "empty command".into(),
            });
        };
        let mut command = if self.is_slash() {
            let mut c = Command::new(program);
            c.args(args);
            if let Some(cwd) = cwd {
                c.current_dir(cwd);
            }
            c
        } else {
            let mut c = Command::new("chroot");
            c.arg(&self.paths.root);
            match cwd {
                // chroot(8) changes to `/`; change to the working directory inside.
                Some(cwd) => {
                    c.args(["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", cwd]);
                    c.arg(program);
                }
                None => {
                    c.arg(program);
                }
            }
            c.args(args);
            c
        };
        command
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_error = |err: std::io::Error| CommandError::Spawn {
            program: program.clone(),
            message: err.to_string(),
        };
        let started = Instant::now();
        let mut child = command.spawn().map_err(spawn_error)?;
        let stdout = child.stdout.take().map(reader);
        let stderr = child.stderr.take().map(reader);
        let status = loop {
            if let Some(status) = child.try_wait().map_err(spawn_error)? {
                break status;
            }
            if let Some(deadline) = deadline {
                if Instant::now() >= deadline {
                    // Already exited between the checks is fine; kill errors are not ours to report.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(CommandError::Timeout {
                        program: program.clone(),
                        timeout: started.elapsed(),
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let collect = |h: Option<std::thread::JoinHandle<String>>| {
            h.and_then(|h| h.join().ok()).unwrap_or_default()
        };
        Ok(CommandOutput {
            code: status.code(),
            stdout: collect(stdout),
            stderr: collect(stderr),
        })
    }
}

fn reader<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            Component::CurDir => Some(".".into()),
            Component::RootDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Whether a relative link target climbs above `/` from `dir`.
fn escapes(dir: &[String], target: &str) -> bool {
    let mut depth = dir.len() as i64;
    for c in components(target) {
        match c.as_str() {
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            "." => {}
            _ => depth += 1,
        }
    }
    false
}

fn join(parts: &[String]) -> PathBuf {
    let mut p = PathBuf::from("/");
    for part in parts {
        p.push(part);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_below_the_root_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        std::fs::create_dir_all(dir.path().join("etc/real")).unwrap();
        std::os::unix::fs::symlink("/etc/real", dir.path().join("etc/abs")).unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("etc/rel")).unwrap();
        std::os::unix::fs::symlink("../../../..", dir.path().join("etc/out")).unwrap();
        std::os::unix::fs::symlink("loop", dir.path().join("etc/loop")).unwrap();
        assert_eq!(root.resolve("/etc/x").unwrap(), dir.path().join("etc/x"));
        assert_eq!(
            root.resolve("/etc/abs/x").unwrap(),
            dir.path().join("etc/real/x")
        );
        assert_eq!(
            root.resolve("/etc/rel/x").unwrap(),
            dir.path().join("etc/real/x")
        );
        assert_eq!(
            root.resolve("/etc/../etc/x").unwrap(),
            dir.path().join("etc/x")
        );
        assert_eq!(
            root.resolve_parent("/etc/abs").unwrap(),
            dir.path().join("etc/abs")
        );
        let err = root.resolve("/etc/../../x").unwrap_err();
        assert!(
            err.to_string().contains("\"..\" climbs above the root"),
            "{err}"
        );
        let err = root.resolve("/etc/out/passwd").unwrap_err();
        assert!(
            err.to_string()
                .contains("symlink /etc/out points to ../../../.., outside the root"),
            "{err}"
        );
        assert!(matches!(
            root.resolve("/etc/loop"),
            Err(RootError::Loop { .. })
        ));
        assert!(matches!(
            root.resolve("etc/x"),
            Err(RootError::NotAbsolute { .. })
        ));
    }
}
