//! Secrets on a standalone host: `${secret:NAME}` comes from the process environment or the env
//! file (`~/.config/driftless/env`), `${env:NAME}` from the process environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use driftless_crds::resource::{walk_strings, Resource};
use driftless_crds::secret::{references, Lookup, RefKind, SecretString};
use driftless_crds::validate::Problem;
use serde_json::Value;

/// An env file: `NAME=value` lines, `#` comments, an optional `export ` prefix, optional quotes.
#[derive(Clone, Debug, Default)]
pub struct EnvFile {
    /// Where it was read from.
    pub path: Option<PathBuf>,
    values: BTreeMap<String, SecretString>,
}

impl EnvFile {
    /// Reads an env file, refusing one that lies inside the configuration directory (so secrets
    /// never end up committed next to the config).
    pub fn read(path: &Path, config_dir: &Path) -> Result<Self, String> {
        let canonical = path
            .canonicalize()
            .map_err(|err| format!("env file {}: {err}", path.display()))?;
        if let Ok(config) = config_dir.canonicalize() {
            if canonical.starts_with(&config) {
                return Err(format!(
                    "env file {} is inside the configuration directory {}; keep secrets outside it \
                     (default: ~/.config/driftless/env)",
                    path.display(),
                    config_dir.display()
                ));
            }
        }
        let text = std::fs::read_to_string(&canonical)
            .map_err(|err| format!("env file {}: {err}", path.display()))?;
        let values = Self::parse(&text).map_err(|(line, message)| {
            format!("env file {} line {line}: {message}", path.display())
        })?;
        Ok(Self {
            path: Some(path.to_path_buf()),
            values,
        })
    }

    /// Parses env-file text; errors carry the 1-based line number.
    pub fn parse(text: &str) -> Result<BTreeMap<String, SecretString>, (usize, String)> {
        let mut values = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (name, value) = line
                .split_once('=')
                .ok_or_else(|| (index + 1, "expected NAME=value".to_owned()))?;
            let name = name.trim();
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err((index + 1, format!("{name:?} is not a valid variable name")));
            }
            let value = value.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(value);
            values.insert(name.to_owned(), SecretString::new(unquoted));
        }
        Ok(values)
    }
}

/// The standalone [`Lookup`]: process environment first, then the env file for secrets.
#[derive(Clone, Debug, Default)]
pub struct StandaloneSecrets {
    env: BTreeMap<String, String>,
    file: EnvFile,
}

impl StandaloneSecrets {
    /// From the current process environment and an env file.
    pub fn from_process(file: EnvFile) -> Self {
        Self {
            env: std::env::vars().collect(),
            file,
        }
    }

    /// From explicit values (tests).
    pub fn new(env: BTreeMap<String, String>, file: EnvFile) -> Self {
        Self { env, file }
    }

    /// Problems for every `${env:...}` or `${secret:...}` reference in the resource's spec that
    /// has no value here.
    pub fn unresolved(&self, resource: &Resource) -> Vec<Problem> {
        let spec = match resource {
            Resource::ApplyPolicy(r) => serde_json::to_value(&r.spec),
            Resource::FactsPolicy(r) => serde_json::to_value(&r.spec),
            Resource::LogPipeline(r) => serde_json::to_value(&r.spec),
            // DriftScan fields take no references; the operator resolves its Secrets.
            Resource::DriftScan(_) => return Vec::new(),
        }
        .unwrap_or(Value::Null);
        let mut problems = Vec::new();
        walk_strings(&spec, "spec", &mut |path, text| {
            for reference in references(text).unwrap_or_default() {
                let found = match reference.kind {
                    RefKind::Env => self.env(&reference.name).is_some(),
                    RefKind::Secret => self.secret(&reference.name).is_some(),
                };
                if !found {
                    let hint = match (reference.kind, &self.file.path) {
                        (RefKind::Env, _) => {
                            format!("set the environment variable {}", reference.name)
                        }
                        (RefKind::Secret, Some(file)) => format!(
                            "set the environment variable {} or add it to {}",
                            reference.name,
                            file.display()
                        ),
                        (RefKind::Secret, None) => format!(
                            "set the environment variable {} or add it to an env file (--env-file)",
                            reference.name
                        ),
                    };
                    problems.push(Problem::new(
                        path,
                        format!("{reference} has no value: {hint}"),
                    ));
                }
            }
        });
        problems
    }
}

impl Lookup for StandaloneSecrets {
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }

    fn secret(&self, name: &str) -> Option<SecretString> {
        self.env
            .get(name)
            .map(|v| SecretString::new(v.clone()))
            .or_else(|| self.file.values.get(name).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_files() {
        let values = EnvFile::parse(
            "# comment\nTOKEN=abc\nexport QUOTED=\"a b\"\n  SINGLE='x=y'\n\nEMPTY=\n",
        )
        .unwrap();
        assert_eq!(values["TOKEN"].expose(), "abc");
        assert_eq!(values["QUOTED"].expose(), "a b");
        assert_eq!(values["SINGLE"].expose(), "x=y");
        assert_eq!(values["EMPTY"].expose(), "");
        assert_eq!(
            EnvFile::parse("OK=1\nnot a pair\n").unwrap_err(),
            (2, "expected NAME=value".to_owned())
        );
        assert_eq!(
            EnvFile::parse("1BAD=x").unwrap_err(),
            (1, "\"1BAD\" is not a valid variable name".to_owned())
        );
    }

    #[test]
    fn refuses_env_file_inside_config_dir() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("env");
        std::fs::write(&env, "A=1\n").unwrap();
        let err = EnvFile::read(&env, dir.path()).unwrap_err();
        assert!(
            err.contains("is inside the configuration directory"),
            "{err}"
        );
        let outside = tempfile::tempdir().unwrap();
        let file = EnvFile::read(&env, outside.path()).unwrap();
        assert_eq!(file.values["A"].expose(), "1");
    }

    #[test]
    fn process_environment_wins_over_the_file() {
        let file = EnvFile {
            path: None,
            values: [("T".to_owned(), SecretString::new("from-file"))].into(),
        };
        let secrets =
            StandaloneSecrets::new([("T".to_owned(), "from-env".to_owned())].into(), file);
        assert_eq!(secrets.secret("T").unwrap().expose(), "from-env");
        assert_eq!(secrets.env("T").as_deref(), Some("from-env"));
    }
}
