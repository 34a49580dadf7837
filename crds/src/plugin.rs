//! A WebAssembly plugin used by a policy: which plugin, pinned how, configured how, and what it
//! may touch. The same type is an ApplyPolicy task type (`plugin`), a template filter source
//! (`spec.templateFilters`), a FactsPolicy fact source and a LogPipeline transform.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Values;

/// Pattern of a plugin name: the `name` of its manifest and the file `NAME.wasm` in the
/// plugin directory.
pub const NAME_PATTERN: &str = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$";

/// Pattern of a pinned digest.
pub const SHA256_PATTERN: &str = r"^(sha256:)?[0-9a-f]{64}$";

/// One use of a plugin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.url) || has(self.sha256)").message("a plugin with a url needs its sha256"))]
pub struct PluginUse {
    /// The plugin's name: `NAME.wasm` in the agent's plugin directory.
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    /// The module's SHA-256 (`sha256:` and 64 hex digits, or the digits alone). Set, a module
    /// with another digest is refused and never runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(sha256:)?[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
    /// Where to download the module when the plugin directory does not hold it: an
    /// `https://`, `http://` or `file://` URL, or an OCI reference
    /// `oci://HOST/REPOSITORY:TAG` (`oci+http://` for a registry without TLS); needs `sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
    /// The plugin's configuration, checked against the schema its manifest declares.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub config: Values,
    /// What the plugin may touch on the host: directories and TCP endpoints; nothing when
    /// unset.
    #[serde(default, skip_serializing_if = "Grants::is_empty")]
    pub grants: Grants,
    /// Fuel for one call (about one unit per WebAssembly instruction); a call that runs out is
    /// stopped and fails. Default 1,000,000,000 for tasks and facts, 10,000,000 per log event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000))]
    pub fuel: Option<u64>,
    /// Most memory one instance may use, in MiB. Default 64.
    #[serde(default, rename = "memoryMiB", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub memory_mib: Option<u32>,
}

fn is_empty(values: &Values) -> bool {
    values.0.is_empty()
}

/// What a plugin may use on the host: directories, as absolute paths below the agent's
/// `--root` (the plugin sees each under the same path; everything else does not exist for it),
/// and TCP endpoints. Nothing else.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grants {
    /// Directories it may read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub read: Vec<String>,
    /// Directories it may read and write. A task plugin writes only while applying; planning,
    /// drift checks, facts, log events and filters see them read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub write: Vec<String>,
    /// TCP endpoints it may connect to, as `HOST:PORT` (`[ADDR]:PORT` for IPv6), matched
    /// exactly against what the plugin asks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(regex(pattern = r"^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$"))
    )]
    pub network: Vec<String>,
}

impl Grants {
    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.read.is_empty() && self.write.is_empty() && self.network.is_empty()
    }
}

impl PluginUse {
    /// The fuel for one call, given the default of the place it is used in.
    pub fn fuel_or(&self, default: u64) -> u64 {
        self.fuel.unwrap_or(default)
    }

    /// The memory limit, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory_mib.unwrap_or(64) as usize * 1024 * 1024
    }

    /// The pinned digest as 64 lowercase hex digits, when pinned.
    pub fn pinned(&self) -> Option<&str> {
        self.sha256
            .as_deref()
            .map(|d| d.strip_prefix("sha256:").unwrap_or(d))
    }

    /// Problems a loader reports before anything runs: field path (relative to the use) and
    /// what was expected. The schema says the same to the API server.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.url.is_some() && self.sha256.is_none() {
            out.push((
                "sha256".into(),
                "a plugin with a url needs its sha256".into(),
            ));
        }
        if let Some(url) = &self.url {
            if !["https://", "http://", "file://", "oci://", "oci+http://"]
                .iter()
                .any(|s| url.starts_with(s))
            {
                out.push((
                    "url".into(),
                    format!(
                        "{url:?}: expected an https://, http:// or file:// URL, or an oci:// reference"
                    ),
                ));
            }
        }
        for (field, list) in [("read", &self.grants.read), ("write", &self.grants.write)] {
            for (i, path) in list.iter().enumerate() {
                if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
                    out.push((
                        format!("grants.{field}[{i}]"),
                        format!("{path:?}: expected an absolute path without `..`"),
                    ));
                }
            }
        }
        out
    }
}
