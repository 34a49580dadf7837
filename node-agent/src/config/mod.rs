//! Loading a configuration directory: every `.yaml`, `.yml`, `.json` and `.toml` file below it,
//! each document a full Driftless resource.
//!
//! Guarantees: either every resource is valid and every secret it uses resolves, or nothing is
//! returned and *every* problem is reported, each naming the file, the document, the resource,
//! the field path and what was expected. Loading never touches the host.

pub mod files;
pub mod secrets;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use driftless_crds::resource::{self, Resource};
use driftless_crds::validate::Problem;

pub use secrets::{EnvFile, StandaloneSecrets};

/// A loaded, valid configuration.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The resources, in file order (files sorted by path).
    pub resources: Vec<Loaded>,
}

/// One resource and where it came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The resource.
    pub resource: Resource,
    /// Where it was read.
    pub origin: Origin,
}

/// A file and a document index within it (1-based).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    /// The file, relative to the configuration directory.
    pub file: PathBuf,
    /// Document number in the file, counting from 1.
    pub document: usize,
    /// How many documents the file has.
    pub documents: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.documents > 1 {
            write!(f, "{} (document {})", self.file.display(), self.document)
        } else {
            write!(f, "{}", self.file.display())
        }
    }
}

/// One problem in a configuration directory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigError {
    /// Where, when it is about one file or document.
    pub origin: Option<Origin>,
    /// `KIND/NAME`, when known.
    pub resource: Option<String>,
    /// The field path and what is wrong.
    pub problem: Problem,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        if let Some(resource) = &self.resource {
            write!(f, "{resource}: ")?;
        }
        write!(f, "{}", self.problem)
    }
}

/// Every problem found while loading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Resources of one kind.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Loaded> + 'a {
        self.resources
            .iter()
            .filter(move |r| r.resource.kind() == kind)
    }

    /// How many resources of each kind there are.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for kind in resource::KINDS {
            counts.insert(*kind, 0);
        }
        for loaded in &self.resources {
            *counts.entry(loaded.resource.kind()).or_default() += 1;
        }
        counts
    }
}

/// The default configuration directory: `~/.config/driftless/config`.
pub fn default_dir() -> PathBuf {
    config_home().join("config")
}

/// `$XDG_CONFIG_HOME/driftless` or `~/.config/driftless`.
pub fn config_home() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/etc"));
    base.join("driftless")
}

/// Loads and validates every resource below `dir`, then checks that every `${env:...}` and
/// `${secret:...}` reference resolves against `secrets`.
pub fn load(dir: &Path, secrets: &StandaloneSecrets) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut config = Config::default();
    let paths = match files::discover(dir) {
        Ok(paths) => paths,
        Err(problem) => {
            return Err(ConfigErrors(vec![ConfigError {
                origin: None,
                resource: None,
                problem,
            }]))
        }
    };
    let mut seen: BTreeMap<(String, String), Origin> = BTreeMap::new();
    for path in paths {
        let relative = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
        let documents = match files::read_documents(&path) {
            Ok(documents) => documents,
            Err(problem) => {
                errors.push(ConfigError {
                    origin: Some(Origin {
                        file: relative,
                        document: 1,
                        documents: 1,
                    }),
                    resource: None,
                    problem,
                });
                continue;
            }
        };
        let count = documents.len();
        for (index, document) in documents.into_iter().enumerate() {
            let origin = Origin {
                file: relative.clone(),
                document: index + 1,
                documents: count,
            };
            let label = resource::label(&document);
            match resource::parse(document) {
                Ok(resource) => {
                    let key = (resource.kind().to_owned(), resource.name().to_owned());
                    if let Some(first) = seen.get(&key) {
                        errors.push(ConfigError {
                            origin: Some(origin),
                            resource: Some(label),
                            problem: Problem::new(
                                "metadata.name",
                                format!("{} {:?} is already defined in {first}", key.0, key.1),
                            ),
                        });
                        continue;
                    }
                    seen.insert(key, origin.clone());
                    for problem in secrets.unresolved(&resource) {
                        errors.push(ConfigError {
                            origin: Some(origin.clone()),
                            resource: Some(label.clone()),
                            problem,
                        });
                    }
                    config.resources.push(Loaded { resource, origin });
                }
                Err(problems) => errors.extend(problems.into_iter().map(|problem| ConfigError {
                    origin: Some(origin.clone()),
                    resource: Some(label.clone()),
                    problem,
                })),
            }
        }
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
mod tests;
