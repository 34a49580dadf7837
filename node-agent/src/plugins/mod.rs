//! WebAssembly plugins: task types, facts, log transforms and template filters, run by wasmtime
//! in a sandbox (docs/plugins.md; the ABI is docs/developer/plugins.md).
//!
//! - *Finding*: a plugin is `NAME.wasm` in the plugin directory ([`Settings::dir`]); a use with
//!   a `url` downloads it there first. A pinned `sha256` that does not match refuses it.
//! - *Compiling*: once per module digest; the machine code is kept in the cache directory and
//!   reused across restarts ([`Plugin::load_bytes`]).
//! - *Running*: one [`Instance`] per use (a task, a fact, a pipeline step, a policy's filters),
//!   with its own memory limit, the directories its use grants ([`wasi`]) and a fuel budget per
//!   call. A trap, an exhausted budget or a memory limit fails that call with a named error and
//!   throws the instance away; the next call gets a fresh one. Nothing a plugin does reaches the
//!   rest of the agent.

pub mod manifest;
pub mod wasi;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use driftless_crds::plugin::PluginUse;
use serde_json::Value;
use sha2::Digest as _;
use wasmtime::{
    Config, Engine, InstancePre, Linker, Memory, Module, ResourceLimiter, Store, Trap, TypedFunc,
};

pub use manifest::{Kind, Manifest};
use wasi::{Grant, HasSandbox, Sandbox};

/// Default fuel for one task, facts or filter call.
pub const DEFAULT_FUEL: u64 = 1_000_000_000;
/// Default fuel for one log event.
pub const DEFAULT_EVENT_FUEL: u64 = 10_000_000;
/// Largest module accepted.
pub const MAX_MODULE_BYTES: usize = 64 * 1024 * 1024;
/// Largest output one call may return.
const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;
/// Fuel for reading a manifest.
const MANIFEST_FUEL: u64 = 50_000_000;

/// Where plugins are found and compiled code is kept.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The plugin directory: `NAME.wasm` files.
    pub dir: PathBuf,
    /// The compiled-code cache.
    pub cache: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/driftless/plugins"),
            cache: PathBuf::from("/var/cache/driftless/plugins"),
        }
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Sets the directories for this process (the command line's `--plugin-dir` and
/// `--plugin-cache`); the first call wins.
pub fn configure(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

/// The directories in use.
pub fn settings() -> &'static Settings {
    SETTINGS.get_or_init(Settings::default)
}

/// Why a plugin could not be used or a call failed. Every message names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// No module for the name.
    #[error("plugin {name}: not installed ({path} does not exist; `driftless plugins install` puts it there)")]
    NotInstalled {
        /// The plugin.
        name: String,
        /// Where it was looked for.
        path: String,
    },
    /// The module's digest is not the pinned one.
    #[error(
        "plugin {name}: {path} has sha256 {actual}, the policy pins {expected}; refusing to run it"
    )]
    Digest {
        /// The plugin.
        name: String,
        /// The module file or URL.
        path: String,
        /// The pinned digest.
        expected: String,
        /// The module's.
        actual: String,
    },
    /// The module cannot be a plugin (not WebAssembly, wrong exports, bad manifest, refused
    /// imports).
    #[error("{path}: not a valid plugin: {why}")]
    Invalid {
        /// The module file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The use does not fit the plugin (kind, configuration, grants).
    #[error("plugin {name}: {why}")]
    Use {
        /// The plugin.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// A call failed: the plugin returned an error, trapped, ran out of fuel or memory.
    #[error("plugin {name}: {entry}: {why}")]
    Call {
        /// The plugin.
        name: String,
        /// The entry point.
        entry: String,
        /// What happened.
        why: String,
    },
    /// The plugin or cache directory could not be read or written, or a download failed.
    #[error("plugin {name}: {why}")]
    Io {
        /// The plugin.
        name: String,
        /// What failed.
        why: String,
    },
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.consume_fuel(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // A fixed small stack keeps deep recursion a trap, not a host crash.
        config.max_wasm_stack(512 * 1024);
        Engine::new(&config).unwrap_or_else(|_| Engine::default())
    })
}

/// The hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The state of one instance's store.
pub struct StoreData {
    sandbox: Sandbox,
    memory_limit: usize,
    /// Set when the plugin asked for more memory than its limit.
    memory_exceeded: Option<usize>,
}

impl HasSandbox for StoreData {
    fn sandbox(&mut self) -> &mut Sandbox {
        &mut self.sandbox
    }
}

impl ResourceLimiter for StoreData {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_exceeded = Some(desired);
            return Err(wasmtime::Error::msg("memory limit"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// A compiled plugin module and its manifest.
pub struct Plugin {
    /// Where it was read.
    pub path: PathBuf,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// What it says it is.
    pub manifest: Manifest,
    /// Whether the compiled code came from the cache.
    pub cached: bool,
    pre: InstancePre<StoreData>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .field("manifest", &self.manifest)
            .finish()
    }
}

/// Plugins compiled in this process, by digest.
fn loaded() -> &'static Mutex<HashMap<String, Arc<Plugin>>> {
    static LOADED: OnceLock<Mutex<HashMap<String, Arc<Plugin>>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

impl Plugin {
    /// The plugin a use names: from the plugin directory, downloaded first when it is missing
    /// and the use has a `url`; refused when its digest is not the pinned one or its manifest
    /// names another plugin.
    pub fn for_use(plugin: &PluginUse) -> Result<Arc<Self>, PluginError> {
        let dir = &settings().dir;
        let path = dir.join(format!("{}.wasm", plugin.name));
        if !path.exists() {
            match (&plugin.url, plugin.pinned()) {
                (Some(url), Some(pin)) => install_from(&plugin.name, url, pin, dir)?,
                _ => {
                    return Err(PluginError::NotInstalled {
                        name: plugin.name.clone(),
                        path: path.display().to_string(),
                    })
                }
            };
        }
        // The same unchanged file was read and checked before: no need to read or hash it.
        let stamp = stamp(&path);
        if let Some(known) = stamp.as_ref().and_then(|s| known_file(&path, s)) {
            return check_use(plugin, &path, known);
        }
        let bytes = read_module(&plugin.name, &path)?;
        let sha = sha256_hex(&bytes);
        if let Some(pin) = plugin.pinned() {
            if pin != sha {
                return Err(PluginError::Digest {
                    name: plugin.name.clone(),
                    path: path.display().to_string(),
                    expected: pin.into(),
                    actual: sha,
                });
            }
        }
        let loaded = Self::load_with_digest(&path, &bytes, sha)?;
        if let (Some(stamp), Ok(mut files)) = (stamp, known_files().lock()) {
            files.insert(path.clone(), (stamp, loaded.clone()));
        }
        check_use(plugin, &path, loaded)
    }

    /// Compiles (or takes from the cache) and checks a module: its imports, its exports and
    /// its manifest.
    pub fn load_bytes(path: &Path, bytes: &[u8]) -> Result<Arc<Self>, PluginError> {
        Self::load_with_digest(path, bytes, sha256_hex(bytes))
    }

    fn load_with_digest(path: &Path, bytes: &[u8], sha: String) -> Result<Arc<Self>, PluginError> {
        if let Some(p) = loaded().lock().ok().and_then(|m| m.get(&sha).cloned()) {
            return Ok(p);
        }
        let invalid = |why: String| PluginError::Invalid {
            path: path.display().to_string(),
            why,
        };
        let (module, cached) = compile(bytes, &sha, &settings().cache).map_err(invalid)?;
        wasi::check_imports(&module).map_err(invalid)?;
        manifest::check_exports(&module, &[]).map_err(invalid)?;
        let mut linker: Linker<StoreData> = Linker::new(engine());
        wasi::link(&mut linker, &module).map_err(|e| invalid(e.to_string()))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| invalid(e.to_string()))?;
        let mut probe = Self {
            path: path.to_owned(),
            sha256: sha.clone(),
            manifest: Manifest::default(),
            cached,
            pre,
        };
        let text = probe
            .read_manifest()
            .map_err(|e| invalid(format!("reading its manifest: {e}")))?;
        let manifest = Manifest::parse(&text).map_err(|e| invalid(format!("its manifest: {e}")))?;
        manifest::check_exports(&module, &manifest.kinds).map_err(invalid)?;
        probe.manifest = manifest;
        let plugin = Arc::new(probe);
        if let Ok(mut map) = loaded().lock() {
            map.insert(sha, plugin.clone());
        }
        Ok(plugin)
    }

    /// Reads a module file and checks it as [`Plugin::load_bytes`] does.
    pub fn load_file(path: &Path) -> Result<Arc<Self>, PluginError> {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = read_module(&name, path)?;
        Self::load_bytes(path, &bytes)
    }

    fn read_manifest(&self) -> Result<String, String> {
        let mut store = new_store(Vec::new(), Vec::new(), 64 * 1024 * 1024);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| explain(&e, &store, MANIFEST_FUEL))?;
        store.set_fuel(MANIFEST_FUEL).map_err(|e| e.to_string())?;
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            init.call(&mut store, ())
                .map_err(|e| explain(&e, &store, MANIFEST_FUEL))?;
        }
        let f = instance
            .get_typed_func::<(), i64>(&mut store, "driftless_manifest")
            .map_err(|e| e.to_string())?;
        let packed = f
            .call(&mut store, ())
            .map_err(|e| explain(&e, &store, MANIFEST_FUEL))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or("no memory export")?;
        let bytes = read_output(&memory, &store, packed)?;
        String::from_utf8(bytes).map_err(|_| "the manifest is not UTF-8".into())
    }
}

/// What identifies a file's content without reading it: device, inode, size, and the
/// modification and change times in nanoseconds. A rewritten or replaced file changes it.
type Stamp = (u64, u64, u64, i128, i128);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    Some((
        m.dev(),
        m.ino(),
        m.size(),
        ns(m.mtime(), m.mtime_nsec()),
        ns(m.ctime(), m.ctime_nsec()),
    ))
}

/// Plugin files already read and checked, with the stamp they had then.
type KnownFiles = Mutex<HashMap<PathBuf, (Stamp, Arc<Plugin>)>>;

fn known_files() -> &'static KnownFiles {
    static FILES: OnceLock<KnownFiles> = OnceLock::new();
    FILES.get_or_init(Default::default)
}

fn known_file(path: &Path, stamp: &Stamp) -> Option<Arc<Plugin>> {
    let files = known_files().lock().ok()?;
    files
        .get(path)
        .filter(|(s, _)| s == stamp)
        .map(|(_, p)| p.clone())
}

/// A loaded plugin checked against a use: the pinned digest and the name.
fn check_use(
    use_: &PluginUse,
    path: &Path,
    plugin: Arc<Plugin>,
) -> Result<Arc<Plugin>, PluginError> {
    if let Some(pin) = use_.pinned() {
        if pin != plugin.sha256 {
            return Err(PluginError::Digest {
                name: use_.name.clone(),
                path: path.display().to_string(),
                expected: pin.into(),
                actual: plugin.sha256.clone(),
            });
        }
    }
    if plugin.manifest.name != use_.name {
        return Err(PluginError::Invalid {
            path: path.display().to_string(),
            why: format!(
                "its manifest names it {:?}, the file name says {:?}",
                plugin.manifest.name, use_.name
            ),
        });
    }
    Ok(plugin)
}

fn read_module(name: &str, path: &Path) -> Result<Vec<u8>, PluginError> {
    let io = |e: std::io::Error| PluginError::Io {
        name: name.into(),
        why: format!("{}: {e}", path.display()),
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_MODULE_BYTES as u64 {
        return Err(PluginError::Invalid {
            path: path.display().to_string(),
            why: format!(
                "{} bytes, more than the {MAX_MODULE_BYTES} accepted",
                meta.len()
            ),
        });
    }
    std::fs::read(path).map_err(io)
}

/// The compiled module for these bytes: from the cache when it holds a copy made by this
/// engine, compiled (and cached) otherwise. Compiling validates the module.
fn compile(bytes: &[u8], sha: &str, cache: &Path) -> Result<(Module, bool), String> {
    let engine = engine();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    let key = format!("{sha}-{:016x}.cwasm", std::hash::Hasher::finish(&hasher));
    let cached = cache.join(&key);
    if let Some(module) = cached_module(&cached) {
        return Ok((module, true));
    }
    if !bytes.starts_with(b"\0asm") {
        return Err("not a WebAssembly module (no `\\0asm` header)".into());
    }
    let module = Module::from_binary(engine, bytes).map_err(|e| format!("{e:#}"))?;
    if let Ok(code) = module.serialize() {
        if let Err(e) = write_cache(cache, &key, &code) {
            tracing::warn!(cache = %cache.display(), error = %e, "plugin code not cached");
        }
    }
    Ok((module, false))
}

/// A cached module whose recorded digest matches its bytes. The cache directory is the agent's
/// own (created mode 0700); the digest check catches a truncated or altered file.
fn cached_module(path: &Path) -> Option<Module> {
    let code = std::fs::read(path).ok()?;
    let digest = std::fs::read_to_string(path.with_extension("sha256")).ok()?;
    if digest.trim() != sha256_hex(&code) {
        return None;
    }
    deserialize(&code)
}

// wasmtime cannot check that serialized machine code is what it once wrote; the caller has
// checked the file's digest against the one recorded when this process family wrote it into
// its own 0700 directory.
#[allow(unsafe_code)]
fn deserialize(code: &[u8]) -> Option<Module> {
    // SAFETY: `code` was produced by `Module::serialize` of an engine with the same
    // compatibility hash (the cache key) and its digest matches the one written with it.
    unsafe { Module::deserialize(engine(), code) }.ok()
}

fn write_cache(dir: &Path, key: &str, code: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(".{key}.tmp"));
    std::fs::write(&tmp, code)?;
    let path = dir.join(key);
    std::fs::write(path.with_extension("sha256"), sha256_hex(code))?;
    std::fs::rename(tmp, path)
}

/// Downloads (or copies, for `file://`) a module, checks its digest and that it is a valid
/// plugin named `name`, and writes it to `DIR/NAME.wasm`. Returns the path.
pub fn install_from(
    name: &str,
    url: &str,
    sha256: &str,
    dir: &Path,
) -> Result<PathBuf, PluginError> {
    let bytes = fetch_verified(name, url, sha256)?;
    let plugin = Plugin::load_bytes(Path::new(url), &bytes)?;
    if plugin.manifest.name != name {
        return Err(PluginError::Invalid {
            path: url.into(),
            why: format!(
                "its manifest names it {:?}, not {name:?}",
                plugin.manifest.name
            ),
        });
    }
    install_bytes(name, &bytes, dir)
}

/// Fetches a module and checks its digest (`sha256:HEX` or `HEX`).
pub fn fetch_verified(name: &str, url: &str, sha256: &str) -> Result<Vec<u8>, PluginError> {
    let bytes = fetch(url).map_err(|e| PluginError::Io {
        name: name.into(),
        why: format!("downloading {url}: {e}"),
    })?;
    let actual = sha256_hex(&bytes);
    let expected = sha256.strip_prefix("sha256:").unwrap_or(sha256);
    if actual != expected {
        return Err(PluginError::Digest {
            name: name.into(),
            path: url.into(),
            expected: expected.into(),
            actual,
        });
    }
    Ok(bytes)
}

/// Writes a module to `DIR/NAME.wasm` (through a temporary file: never half-written).
pub fn install_bytes(name: &str, bytes: &[u8], dir: &Path) -> Result<PathBuf, PluginError> {
    let io = |why: String| PluginError::Io {
        name: name.into(),
        why,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(format!("{}: {e}", dir.display())))?;
    let path = dir.join(format!("{name}.wasm"));
    let tmp = dir.join(format!(".{name}.wasm.tmp"));
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| io(format!("{}: {e}", path.display())))?;
    Ok(path)
}

fn fetch(url: &str) -> Result<Vec<u8>, String> {
    if let Some(reference) = OciRef::parse(url) {
        let reference = reference?;
        return on_own_runtime(move || async move { reference.pull().await });
    }
    if let Some(path) = url.strip_prefix("file://") {
        let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
        if meta.len() > MAX_MODULE_BYTES as u64 {
            return Err(format!("more than {MAX_MODULE_BYTES} bytes"));
        }
        return std::fs::read(path).map_err(|e| e.to_string());
    }
    let url = url.to_owned();
    on_own_runtime(move || async move {
        let client = http_client()?;
        let response = client
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.to_string())?;
        read_body(response).await
    })
}

/// Runs a future on a thread and runtime of its own: callers may be inside the agent's
/// runtime or not.
fn on_own_runtime<F, Fut>(f: F) -> Result<Vec<u8>, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<u8>, String>>,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(f())
    })
    .join()
    .map_err(|_| "the download thread failed".to_string())?
}

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())
}

/// A response body, refused past [`MAX_MODULE_BYTES`].
async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_MODULE_BYTES {
            return Err(format!("more than {MAX_MODULE_BYTES} bytes"));
        }
    }
    Ok(body)
}

/// A module in an OCI registry: `oci://HOST[:PORT]/REPOSITORY:TAG` (or `@sha256:...`) over
/// HTTPS, `oci+http://...` over plain HTTP (a registry on the local network).
#[derive(Debug, PartialEq)]
pub struct OciRef {
    base: String,
    repository: String,
    reference: String,
}

/// Media types of a WebAssembly layer, as the OCI artifact conventions name it.
const WASM_LAYER_TYPES: &[&str] = &[
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
];

impl OciRef {
    /// `None` when `url` is not an OCI reference; an error when it is one but malformed.
    pub fn parse(url: &str) -> Option<Result<Self, String>> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("oci://") {
            ("https", rest)
        } else if let Some(rest) = url.strip_prefix("oci+http://") {
            ("http", rest)
        } else {
            return None;
        };
        let bad =
            || format!("{url:?}: expected oci://HOST[:PORT]/REPOSITORY:TAG or @sha256:DIGEST");
        let Some((host, path)) = rest.split_once('/') else {
            return Some(Err(bad()));
        };
        let (repository, reference) = match path.split_once('@') {
            Some((repo, digest)) => (repo, digest),
            None => match path.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => (repo, tag),
                _ => (path, "latest"),
            },
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'/' | b':')
                })
        };
        if host.is_empty() || !valid(host) || !valid(repository) || !valid(reference) {
            return Some(Err(bad()));
        }
        Some(Ok(Self {
            base: format!("{scheme}://{host}/v2/{repository}"),
            repository: repository.to_owned(),
            reference: reference.to_owned(),
        }))
    }

    /// The module: the manifest, then its WebAssembly layer, whose content must match the
    /// layer's digest. Anonymous pulls, with the registry's bearer token when it asks for one.
    async fn pull(&self) -> Result<Vec<u8>, String> {
        let client = http_client()?;
        let accept = "application/vnd.oci.image.manifest.v1+json, \
                      application/vnd.docker.distribution.manifest.v2+json";
        let manifest_url = format!("{}/manifests/{}", self.base, self.reference);
        let (response, token) = self.get(&client, &manifest_url, accept, None).await?;
        let manifest: serde_json::Value = serde_json::from_slice(&read_body(response).await?)
            .map_err(|e| format!("{manifest_url}: not an image manifest: {e}"))?;
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        let layer = layers
            .iter()
            .find(|l| {
                l["mediaType"]
                    .as_str()
                    .is_some_and(|t| WASM_LAYER_TYPES.contains(&t))
            })
            .or(if layers.len() == 1 {
                layers.first()
            } else {
                None
            })
            .ok_or_else(|| {
                format!(
                    "{manifest_url}: no WebAssembly layer (media type {})",
                    WASM_LAYER_TYPES.join(" or ")
                )
            })?;
        let digest = layer["digest"]
            .as_str()
            .ok_or_else(|| format!("{manifest_url}: a layer without a digest"))?;
        let blob_url = format!("{}/blobs/{digest}", self.base);
        let (response, _) = self
            .get(&client, &blob_url, "*/*", token.as_deref())
            .await?;
        let body = read_body(response).await?;
        if format!("sha256:{}", sha256_hex(&body)) != digest {
            return Err(format!("{blob_url}: the content does not match its digest"));
        }
        Ok(body)
    }

    /// A GET, answering a bearer challenge once; the response and the token used.
    async fn get(
        &self,
        client: &reqwest::Client,
        url: &str,
        accept: &str,
        token: Option<&str>,
    ) -> Result<(reqwest::Response, Option<String>), String> {
        let send = |token: Option<&str>| {
            let mut request = client.get(url).header("Accept", accept);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send()
        };
        let response = send(token).await.map_err(|e| format!("{url}: {e}"))?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED || token.is_some() {
            let response = response
                .error_for_status()
                .map_err(|e| format!("{url}: {e}"))?;
            return Ok((response, token.map(str::to_owned)));
        }
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let token = self.token(client, &challenge).await?;
        let response = send(Some(&token))
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("{url}: {e}"))?;
        Ok((response, Some(token)))
    }

    /// An anonymous pull token from the realm of a `Bearer realm="...",service="..."` challenge.
    async fn token(&self, client: &reqwest::Client, challenge: &str) -> Result<String, String> {
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            return Err(format!(
                "{}: the registry wants credentials ({challenge:?}); only anonymous pulls are supported",
                self.base
            ));
        };
        let field = |name: &str| {
            params.split(',').find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_owned())
            })
        };
        let realm = field("realm").ok_or("a bearer challenge without a realm")?;
        let mut query = vec![(
            "scope".to_owned(),
            format!("repository:{}:pull", self.repository),
        )];
        if let Some(service) = field("service") {
            query.push(("service".to_owned(), service));
        }
        let response = client
            .get(&realm)
            .query(&query)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("{realm}: {e}"))?;
        let answer: serde_json::Value = serde_json::from_slice(&read_body(response).await?)
            .map_err(|e| format!("{realm}: {e}"))?;
        answer["token"]
            .as_str()
            .or(answer["access_token"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("{realm}: no token in the answer"))
    }
}

fn new_store(grants: Vec<Grant>, network: Vec<String>, memory_limit: usize) -> Store<StoreData> {
    let mut store = Store::new(
        engine(),
        StoreData {
            sandbox: Sandbox::new(grants, network),
            memory_limit,
            memory_exceeded: None,
        },
    );
    store.limiter(|data| data as &mut dyn ResourceLimiter);
    store
}

/// What went wrong in a call, in words: fuel, memory, a trap, an exit, or the host's error.
fn explain(error: &wasmtime::Error, store: &Store<StoreData>, fuel: u64) -> String {
    if let Some(desired) = store.data().memory_exceeded {
        return format!(
            "stopped: it asked for {} MiB of memory, more than its limit of {} MiB",
            desired.div_ceil(1024 * 1024),
            store.data().memory_limit / (1024 * 1024)
        );
    }
    if let Some(exit) = error.downcast_ref::<wasi::Exit>() {
        return exit.to_string();
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => format!("stopped: it ran out of fuel ({fuel} units per call)"),
        Some(Trap::StackOverflow) => "stopped: its stack overflowed".into(),
        Some(trap) => format!("trapped: {trap}"),
        None => format!("{error:#}"),
    }
}

fn read_output(memory: &Memory, store: &Store<StoreData>, packed: i64) -> Result<Vec<u8>, String> {
    let ptr = (packed as u64 >> 32) as usize;
    let len = (packed as u64 & 0xffff_ffff) as usize;
    if len > MAX_OUTPUT_BYTES {
        return Err(format!(
            "its output is {len} bytes, more than {MAX_OUTPUT_BYTES}"
        ));
    }
    memory
        .data(store)
        .get(ptr..ptr + len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format!("its output ({ptr}, {len}) is outside its memory"))
}

/// A running plugin for one use.
pub struct Instance {
    plugin: Arc<Plugin>,
    config: Value,
    grants: Vec<(String, PathBuf, bool)>,
    network: Vec<String>,
    memory_limit: usize,
    fuel: u64,
    live: Option<Live>,
}

struct Live {
    store: Store<StoreData>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    entries: HashMap<&'static str, TypedFunc<(i32, i32), i64>>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("plugin", &self.plugin.manifest.name)
            .finish()
    }
}

impl Instance {
    /// An instance for one use of a plugin of `kind`: its configuration checked against the
    /// plugin's schema, its grants opened below `root`, then instantiated and initialized.
    pub fn new(
        plugin: Arc<Plugin>,
        use_: &PluginUse,
        kind: Kind,
        root: &Path,
        default_fuel: u64,
    ) -> Result<Self, PluginError> {
        let name = plugin.manifest.name.clone();
        let misuse = |why: String| PluginError::Use {
            name: name.clone(),
            why,
        };
        if !plugin.manifest.kinds.contains(&kind) {
            return Err(misuse(format!(
                "is not a {kind} plugin (its manifest lists: {})",
                manifest::kinds_text(&plugin.manifest.kinds)
            )));
        }
        let config = Value::Object(use_.config.0.clone().into_iter().collect());
        let problems = plugin.manifest.config_problems(&config);
        if !problems.is_empty() {
            return Err(misuse(format!("config: {}", problems.join("; "))));
        }
        let problems: Vec<String> = use_
            .problems()
            .into_iter()
            .map(|(field, why)| format!("{field}: {why}"))
            .collect();
        if !problems.is_empty() {
            return Err(misuse(problems.join("; ")));
        }
        let root = crate::apply::root::Root::new(root);
        let mut grants = Vec::new();
        for (write, list) in [(false, &use_.grants.read), (true, &use_.grants.write)] {
            for path in list {
                let host = root
                    .resolve(path)
                    .map_err(|e| misuse(format!("grant {path}: {e}")))?;
                grants.push((path.clone(), host, write));
            }
        }
        let mut instance = Self {
            plugin,
            config,
            grants,
            network: use_.grants.network.clone(),
            memory_limit: use_.memory_bytes(),
            fuel: use_.fuel_or(default_fuel),
            live: None,
        };
        instance.start()?;
        Ok(instance)
    }

    fn fail(&self, entry: &str, why: String) -> PluginError {
        PluginError::Call {
            name: self.plugin.manifest.name.clone(),
            entry: entry.into(),
            why,
        }
    }

    /// Instantiates, runs `_initialize` and `driftless_init`.
    fn start(&mut self) -> Result<(), PluginError> {
        let mut opened = Vec::new();
        for (name, host, writable) in &self.grants {
            let dir = File::open(host).map_err(|e| PluginError::Use {
                name: self.plugin.manifest.name.clone(),
                why: format!("grant {name}: {e}"),
            })?;
            opened.push(Grant {
                name: name.clone(),
                dir,
                writable: *writable,
            });
        }
        let mut store = new_store(opened, self.network.clone(), self.memory_limit);
        store
            .set_fuel(self.fuel)
            .map_err(|e| self.fail("instantiate", e.to_string()))?;
        let instance = self
            .plugin
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.fail("instantiate", explain(&e, &store, self.fuel)))?;
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            init.call(&mut store, ())
                .map_err(|e| self.fail("_initialize", explain(&e, &store, self.fuel)))?;
        }
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| self.fail("instantiate", "no memory export".into()))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "driftless_alloc")
            .map_err(|e| self.fail("instantiate", e.to_string()))?;
        let mut entries = HashMap::new();
        for entry in manifest::ENTRIES {
            if let Ok(f) = instance.get_typed_func::<(i32, i32), i64>(&mut store, entry) {
                entries.insert(*entry, f);
            }
        }
        self.live = Some(Live {
            store,
            memory,
            alloc,
            entries,
        });
        if self
            .live
            .as_ref()
            .is_some_and(|l| l.entries.contains_key("driftless_init"))
        {
            let input = serde_json::json!({ "config": self.config });
            self.call_live("driftless_init", &input, false)?;
        }
        Ok(())
    }

    /// Calls an entry point with a JSON input; `writable` opens write grants for this call.
    /// A failed call leaves no instance behind: the next call starts a fresh one.
    pub fn call(
        &mut self,
        entry: &'static str,
        input: &Value,
        writable: bool,
    ) -> Result<Value, PluginError> {
        if self.live.is_none() {
            self.start()?;
        }
        self.call_live(entry, input, writable)
    }

    /// [`Instance::call`] with the input already serialized (JSON).
    pub fn call_json(
        &mut self,
        entry: &'static str,
        input: &[u8],
        writable: bool,
    ) -> Result<Value, PluginError> {
        if self.live.is_none() {
            self.start()?;
        }
        self.call_bytes(entry, input, writable)
    }

    fn call_live(
        &mut self,
        entry: &'static str,
        input: &Value,
        writable: bool,
    ) -> Result<Value, PluginError> {
        let bytes = serde_json::to_vec(input).map_err(|e| self.fail(entry, e.to_string()))?;
        self.call_bytes(entry, &bytes, writable)
    }

    fn call_bytes(
        &mut self,
        entry: &'static str,
        bytes: &[u8],
        writable: bool,
    ) -> Result<Value, PluginError> {
        let result = self.raw_call(entry, bytes, writable);
        let denied = self
            .live
            .as_mut()
            .map(|l| std::mem::take(&mut l.store.data_mut().sandbox.denied))
            .unwrap_or_default();
        let with_denied = |why: String| {
            if denied.is_empty() {
                why
            } else {
                format!("{why} (the sandbox refused: {})", denied.join("; "))
            }
        };
        let out = match result {
            Ok(out) => out,
            Err(why) => {
                // A trap may leave the instance's memory half-updated: never reuse it.
                self.live = None;
                return Err(self.fail(entry, with_denied(why)));
            }
        };
        let value: Value = serde_json::from_slice(&out)
            .map_err(|e| self.fail(entry, format!("its output is not JSON: {e}")))?;
        if let Some(error) = value.get("error") {
            let message = error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned);
            return Err(self.fail(entry, with_denied(message)));
        }
        Ok(value)
    }

    fn raw_call(
        &mut self,
        entry: &'static str,
        input: &[u8],
        writable: bool,
    ) -> Result<Vec<u8>, String> {
        let fuel = self.fuel;
        let live = self.live.as_mut().ok_or("not running")?;
        let f = live
            .entries
            .get(entry)
            .cloned()
            .ok_or_else(|| format!("the module does not export {entry}"))?;
        live.store.data_mut().sandbox.start_call(writable);
        live.store.set_fuel(fuel).map_err(|e| e.to_string())?;
        let len = i32::try_from(input.len()).map_err(|_| "input too large".to_string())?;
        let ptr = live
            .alloc
            .call(&mut live.store, len)
            .map_err(|e| explain(&e, &live.store, fuel))?;
        if ptr == 0 && len > 0 {
            return Err(format!("driftless_alloc could not give {len} bytes"));
        }
        live.memory
            .write(&mut live.store, ptr as u32 as usize, input)
            .map_err(|_| "driftless_alloc returned memory outside its memory".to_string())?;
        let packed = f
            .call(&mut live.store, (ptr, len))
            .map_err(|e| explain(&e, &live.store, fuel))?;
        read_output(&live.memory, &live.store, packed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &str = r#"(module
      (memory (export "memory") 1)
      (data (i32.const 16) "{\"name\":\"t\",\"version\":\"1\",\"abi\":1,\"kinds\":[\"log\"]}")
      (func (export "driftless_alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "driftless_manifest") (result i64) (i64.const 0))
      (func (export "driftless_log") (param i32 i32) (result i64) (i64.const 0)))"#;

    #[test]
    fn compiled_code_is_cached_and_a_damaged_copy_is_compiled_again() {
        let cache = tempfile::tempdir().unwrap();
        let bytes = wat::parse_str(MODULE).unwrap();
        let sha = sha256_hex(&bytes);
        let (_, cached) = compile(&bytes, &sha, cache.path()).unwrap();
        assert!(!cached);
        let (_, cached) = compile(&bytes, &sha, cache.path()).unwrap();
        assert!(cached);
        let code = std::fs::read_dir(cache.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .unwrap();
        let mut damaged = std::fs::read(&code).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        std::fs::write(&code, damaged).unwrap();
        let (_, cached) = compile(&bytes, &sha, cache.path()).unwrap();
        assert!(!cached, "a copy whose digest does not match is not loaded");
        let err = compile(b"\0asm\x01\0\0\0\xff", "x", cache.path()).unwrap_err();
        assert!(!err.is_empty());
        let err = compile(b"#!/bin/sh", "y", cache.path()).unwrap_err();
        assert!(err.contains("no `\\0asm` header"), "{err}");
    }

    #[test]
    fn oci_references_parse_or_say_what_was_expected() {
        let r = OciRef::parse("oci://ghcr.io/acme/plugins/redact:1.0.0")
            .unwrap()
            .unwrap();
        assert_eq!(r.base, "https://ghcr.io/v2/acme/plugins/redact");
        assert_eq!(
            (r.repository.as_str(), r.reference.as_str()),
            ("acme/plugins/redact", "1.0.0")
        );
        let r = OciRef::parse("oci+http://127.0.0.1:5000/p/motd@sha256:abc")
            .unwrap()
            .unwrap();
        assert_eq!(r.base, "http://127.0.0.1:5000/v2/p/motd");
        assert_eq!(r.reference, "sha256:abc");
        let r = OciRef::parse("oci://registry.local:5000/motd")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.repository.as_str(), r.reference.as_str()),
            ("motd", "latest")
        );
        assert!(OciRef::parse("https://example.com/motd.wasm").is_none());
        for bad in ["oci://host-only", "oci:///repo:tag", "oci://h/re po:1"] {
            let err = OciRef::parse(bad).unwrap().unwrap_err();
            assert!(
                err.contains("expected oci://HOST[:PORT]/REPOSITORY:TAG"),
                "{err}"
            );
        }
    }

    #[test]
    fn packed_outputs_outside_memory_are_refused() {
        let mut store = new_store(Vec::new(), Vec::new(), 1 << 20);
        let memory = Memory::new(&mut store, wasmtime::MemoryType::new(1, None)).unwrap();
        assert_eq!(
            read_output(&memory, &store, (16 << 32) | 3).unwrap(),
            vec![0, 0, 0]
        );
        let err = read_output(&memory, &store, (65_535 << 32) | 2).unwrap_err();
        assert!(err.contains("outside its memory"), "{err}");
        let err = read_output(&memory, &store, (1 << 32) | 0xffff_ffff).unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }
}
