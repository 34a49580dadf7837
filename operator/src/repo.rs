//! The DriftScan's repository, as the operator sees it: a cache of bare git repositories
//! (one per URL) fetched with the scan runner's credentials, and pure decisions over the
//! files of one commit.
//!
//! - [`RepoCache::sync`] fetches `spec.source.git.url` into the cache and resolves the run's
//!   commit (the trigger's `commit`, else `spec.source.git.ref`), so every Job of a run plans
//!   the same commit.
//! - [`RepoCache::snapshot`] reads the tree of that commit (the git objects, not a work tree)
//!   into a [`Snapshot`]: every file path, and the text of the files the decisions read.
//! - Pure functions over a snapshot: [`discover`] (stack discovery from `discover` globs),
//!   [`module_graph`] (local modules used by each stack, for changed-file selection) and
//!   [`stack_version`] / [`stack_image`] (the image of each stack's Job).
//!
//! Git I/O is blocking: call it from `spawn_blocking`. Every fetch has a deadline (checked in
//! libgit2's progress callbacks) and error messages name the DriftScan field at fault, never a
//! credential.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use driftless_crds::drift_scan::{DriftScanSpec, Engine, GitCredentialsKind, GitSource};
use driftless_crds::secret::SecretString;
use git2::{AutotagOption, ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use regex::Regex;
use sha2::{Digest, Sha256};

use crate::runner::engine::{render_image, version_for_constraint};
use crate::runner::git::{explain, fetch_options, Credentials, Refusal};

/// Files bigger than this are listed but not read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Why the repository could not be used. Messages name the DriftScan field at fault and never
/// contain credentials.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RepoError {
    /// Fetching failed (network, authentication, not a repository).
    #[error("spec.source.git.url {url}: fetch failed: {message}")]
    Fetch {
        /// The URL, without user information.
        url: String,
        /// Why.
        message: String,
    },
    /// The fetch did not finish in time.
    #[error("spec.source.git.url {url}: fetch did not finish within {seconds}s")]
    Timeout {
        /// The URL, without user information.
        url: String,
        /// The limit.
        seconds: u64,
    },
    /// `spec.source.git.ref` names nothing in the repository.
    #[error("spec.source.git.ref {git_ref:?}: no branch, tag or commit of that name in {url}")]
    Ref {
        /// The ref.
        git_ref: String,
        /// The URL, without user information.
        url: String,
    },
    /// The trigger's commit is not in the repository.
    #[error("commit {commit:?} of the trigger is not in spec.source.git.url {url}")]
    Commit {
        /// The commit asked for.
        commit: String,
        /// The URL, without user information.
        url: String,
    },
    /// The credentials could not be read.
    #[error("spec.source.git.credentials: {0}")]
    Credentials(String),
    /// The cache directory.
    #[error("repository cache {path}: {message}")]
    Cache {
        /// The directory.
        path: String,
        /// Why.
        message: String,
    },
}

/// `url` without user information (`https://user:token@host/x` → `https://host/x`).
pub fn display_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if let Some((user, host)) = authority.rsplit_once('@') {
            // Keep an SSH user name (`ssh://git@host`): it is not a secret. Drop `user:pass`.
            if scheme == "ssh" && !user.contains(':') {
                return url.to_owned();
            }
            return format!("{scheme}://{host}{path}");
        }
    }
    url.to_owned()
}

// ---- snapshots and the pure decisions over them ----------------------------------------------

/// The files of one commit: every path, and the text of the files the decisions read
/// (`*.tf`, `*.tf.json`, `*.hcl`, `.terraform-version`, `.terragrunt-version`,
/// `.opentofu-version`). Paths are `/`-separated and relative to the repository root; files
/// under a directory whose name starts with `.` are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every file.
    pub paths: BTreeSet<String>,
    /// Texts of the files the decisions read.
    pub texts: BTreeMap<String, String>,
}

/// Whether the decisions read a file of this name.
pub fn is_read(name: &str) -> bool {
    name.ends_with(".tf")
        || name.ends_with(".tf.json")
        || name.ends_with(".hcl")
        || matches!(
            name,
            ".terraform-version" | ".terragrunt-version" | ".opentofu-version"
        )
}

impl Snapshot {
    /// A snapshot of `(path, text)` pairs (tests, and callers holding files in memory).
    pub fn from_files<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut out = Self::default();
        for (path, text) in files {
            let path = normalize(path);
            if path.split('/').any(|p| p.starts_with('.')) && !is_pin_path(&path) {
                continue;
            }
            if is_read(file_name(&path)) {
                out.texts.insert(path.clone(), text.to_owned());
            }
            out.paths.insert(path);
        }
        out
    }

    /// A snapshot of a work tree (the scan runner's clone).
    pub fn from_dir(root: &Path) -> Self {
        let mut out = Self::default();
        let mut dirs = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, rel)) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let path = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                if kind.is_dir() {
                    if !name.starts_with('.') {
                        dirs.push((entry.path(), path));
                    }
                } else if kind.is_file() {
                    if is_read(&name) && entry.metadata().is_ok_and(|m| m.len() <= MAX_FILE_BYTES) {
                        if let Ok(text) = std::fs::read_to_string(entry.path()) {
                            out.texts.insert(path.clone(), text);
                        }
                    }
                    out.paths.insert(path);
                }
            }
        }
        out
    }

    /// The text of a file, if it was read.
    pub fn text(&self, path: &str) -> Option<&str> {
        self.texts.get(path).map(String::as_str)
    }

    /// The files directly in `dir` (`""` or `"."`: the root), as full paths.
    pub fn files_in<'a>(&'a self, dir: &str) -> impl Iterator<Item = &'a str> + 'a {
        let dir = if dir == "." {
            String::new()
        } else {
            dir.to_owned()
        };
        self.paths
            .iter()
            .map(String::as_str)
            .filter(move |p| parent(p) == dir)
    }
}

fn is_pin_path(path: &str) -> bool {
    // Version pins are dot files; their directories must still be visible ones.
    let name = file_name(path);
    matches!(
        name,
        ".terraform-version" | ".terragrunt-version" | ".opentofu-version"
    ) && !parent(path).split('/').any(|p| p.starts_with('.'))
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn parent(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, _)) => dir.to_owned(),
        None => String::new(),
    }
}

/// `path` with `.`, `..` and empty parts resolved lexically, `/`-separated; `..` above the
/// root is dropped.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn is_stack_file(name: &str, engine: Engine) -> bool {
    match engine {
        Engine::Terragrunt => name == "terragrunt.hcl",
        _ => name.ends_with(".tf") || name.ends_with(".tf.json"),
    }
}

/// Stacks of a commit: `explicit` (trailing `/` removed) ∪ the directories matching one of
/// `globs` that directly hold `*.tf` / `*.tf.json` files (a `terragrunt.hcl` for Terragrunt),
/// sorted. The root directory is `.`. Globs match whole paths (`*` stops at `/`, `**` does
/// not). An invalid glob is an error naming `spec.source.git.discover[i]`.
pub fn discover(
    snapshot: &Snapshot,
    explicit: &[String],
    globs: &[String],
    engine: Engine,
) -> Result<Vec<String>, String> {
    let mut stacks: BTreeSet<String> = explicit
        .iter()
        .map(|s| s.trim_end_matches('/').to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if globs.is_empty() {
        return Ok(stacks.into_iter().collect());
    }
    let mut builder = globset::GlobSetBuilder::new();
    for (i, g) in globs.iter().enumerate() {
        let glob = globset::GlobBuilder::new(g.trim_end_matches('/'))
            .literal_separator(true)
            .build()
            .map_err(|e| {
                format!(
                    "spec.source.git.discover[{i}]: {g:?} is not a glob such as \"live/**\": {e}"
                )
            })?;
        builder.add(glob);
    }
    let set = builder
        .build()
        .map_err(|e| format!("spec.source.git.discover: {e}"))?;
    let dirs: BTreeSet<String> = snapshot
        .paths
        .iter()
        .filter(|p| is_stack_file(file_name(p), engine))
        .map(|p| parent(p))
        .collect();
    for dir in dirs {
        let name = if dir.is_empty() { "." } else { dir.as_str() };
        if set.is_match(name) {
            stacks.insert(name.to_owned());
        }
    }
    Ok(stacks.into_iter().collect())
}

/// Local sources (`./x`, `../x`) named in a configuration text: `module` blocks of `.tf` /
/// `.tf.json` files and Terragrunt's `terraform { source = ... }`. A Terragrunt `//` (the
/// module root, then a subdirectory) yields the module root: all of it is copied.
pub fn local_sources(text: &str) -> Vec<String> {
    static SOURCE: OnceLock<Option<Regex>> = OnceLock::new();
    let Some(re) = SOURCE
        .get_or_init(|| Regex::new(r#""?\bsource"?\s*[=:]\s*"(\.\.?/[^"]*)""#).ok())
        .as_ref()
    else {
        return Vec::new();
    };
    let text = strip_comments(text);
    re.captures_iter(&text)
        .filter_map(|c| c.get(1))
        .map(|m| {
            let s = m.as_str();
            // `../modules//vpc?ref=x`: cut the query, then the `//` subdirectory.
            let s = s.split('?').next().unwrap_or(s);
            match s.find("//") {
                Some(i) => s[..i].to_owned(),
                None => s.to_owned(),
            }
        })
        .collect()
}

/// Removes `#`, `//` and `/* */` comments (outside strings is not checked: a `#` inside a
/// string ends the line's text, which only ever loses a match, never invents one).
pub fn strip_comments(text: &str) -> String {
    static COMMENTS: OnceLock<Option<Regex>> = OnceLock::new();
    match COMMENTS
        .get_or_init(|| Regex::new(r#"/\*(?s:.*?)\*/|(?m)(?:^|\s)(?:#|//)[^\n]*"#).ok())
        .as_ref()
    {
        Some(re) => re.replace_all(text, " ").into_owned(),
        None => text.to_owned(),
    }
}

/// Files and directories a Terragrunt configuration in `dir` reads besides its own directory,
/// as normalised repository paths (files: `root.hcl`; directories: a dependency's stack):
///
/// - `find_in_parent_folders()` / `find_in_parent_folders("name")` anywhere (an `include`'s
///   `path`, `read_terragrunt_config(...)`, `locals`): the nearest file of that name
///   (default `terragrunt.hcl`) in a directory above `dir`;
/// - `include { path = "..." }` and `read_terragrunt_config("...")` with a literal `.hcl` path;
/// - `dependency { config_path = "..." }` and `dependencies { paths = [...] }`: the dependency's
///   directory (its outputs feed this stack);
/// - `source = "${get_repo_root()}/…"`, `"${get_terragrunt_dir()}/…"` and
///   `"${get_parent_terragrunt_dir()}/…"` (the directory of the included root configuration);
///   other interpolations are skipped.
///
/// An included or read file is merged into the configuration that includes it, so its own
/// references are resolved the same way, relative to `dir` (as Terragrunt evaluates
/// `get_terragrunt_dir()` and `find_in_parent_folders()` of an included file in the child).
pub fn terragrunt_refs(snapshot: &Snapshot, dir: &str, text: &str) -> Vec<String> {
    let mut out = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut texts = vec![strip_comments(text)];
    let mut parent_dir: Option<String> = None;
    while let Some(text) = texts.pop() {
        for file in included_files(snapshot, dir, &text) {
            if seen.insert(file.clone()) {
                if let Some(t) = snapshot.text(&file) {
                    texts.push(strip_comments(t));
                }
                if parent_dir.is_none() && snapshot.paths.contains(&file) {
                    parent_dir = Some(parent(&file));
                }
                out.insert(file);
            }
        }
        for target in dependency_dirs(dir, &text) {
            out.insert(target);
        }
        for source in interpolated_sources(dir, parent_dir.as_deref(), &text) {
            out.insert(source);
        }
    }
    out.remove(dir);
    out.into_iter().collect()
}

/// One regex, compiled once (`None` only if the pattern were invalid).
macro_rules! regex {
    ($re:literal) => {{
        static RE: OnceLock<Option<Regex>> = OnceLock::new();
        RE.get_or_init(|| Regex::new($re).ok()).as_ref()
    }};
}

/// `path` (relative to `dir`, or with a leading `${get_terragrunt_dir()}` /
/// `${get_repo_root()}`) as a repository path; `None` for absolute paths, other
/// interpolations and paths leaving the repository.
fn resolve_ref(dir: &str, parent_dir: Option<&str>, path: &str) -> Option<String> {
    let (base, rest) = if let Some(rest) = path.strip_prefix("${get_repo_root()}") {
        ("", rest.trim_start_matches('/'))
    } else if let Some(rest) = path.strip_prefix("${get_terragrunt_dir()}") {
        (dir, rest.trim_start_matches('/'))
    } else if let Some(rest) = path.strip_prefix("${get_parent_terragrunt_dir()}") {
        (parent_dir?, rest.trim_start_matches('/'))
    } else {
        (dir, path)
    };
    if rest.starts_with('/') || rest.contains("${") || escapes(base, rest) {
        return None;
    }
    Some(normalize(&format!("{base}/{rest}")))
}

/// The files `find_in_parent_folders`, `include { path }` and `read_terragrunt_config` name.
fn included_files(snapshot: &Snapshot, dir: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(re) = regex!(r#"find_in_parent_folders\(\s*(?:"([^"$]*)")?\s*[,)]"#) {
        for c in re.captures_iter(text) {
            let name = c.get(1).map_or("terragrunt.hcl", |m| m.as_str());
            if let Some(found) = find_in_parents(snapshot, dir, name) {
                out.push(found);
            }
        }
    }
    if let Some(re) = regex!(r#"(?:\bpath\s*=\s*|read_terragrunt_config\(\s*)"([^"]+\.hcl)""#) {
        for c in re.captures_iter(text) {
            if let Some(path) = c.get(1).and_then(|m| resolve_ref(dir, None, m.as_str())) {
                out.push(path);
            }
        }
    }
    out
}

/// The nearest `name` in a directory above `dir` (Terragrunt starts in the parent).
fn find_in_parents(snapshot: &Snapshot, dir: &str, name: &str) -> Option<String> {
    if name.is_empty() || name.starts_with('/') || name.contains("..") {
        return None;
    }
    let mut current = normalize(dir);
    while !current.is_empty() {
        current = parent(&current);
        let candidate = normalize(&format!("{current}/{name}"));
        if snapshot.paths.contains(&candidate) {
            return Some(candidate);
        }
    }
    None
}

/// `dependency { config_path }` and `dependencies { paths }` directories.
fn dependency_dirs(dir: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |path: &str| {
        if let Some(p) = resolve_ref(dir, None, path) {
            out.push(p);
        }
    };
    if let Some(re) = regex!(r#"\bconfig_path\s*=\s*"([^"]+)""#) {
        for c in re.captures_iter(text) {
            if let Some(m) = c.get(1) {
                add(m.as_str());
            }
        }
    }
    if let (Some(list), Some(item)) = (
        regex!(r#"\bpaths\s*=\s*\[([^\]]*)\]"#),
        regex!(r#""([^"]+)""#),
    ) {
        for c in list.captures_iter(text) {
            if let Some(m) = c.get(1) {
                for i in item.captures_iter(m.as_str()) {
                    if let Some(p) = i.get(1) {
                        add(p.as_str());
                    }
                }
            }
        }
    }
    out
}

/// `source = "${get_repo_root()}/…"` and the like: the module root (before `//`, without the
/// query).
fn interpolated_sources(dir: &str, parent_dir: Option<&str>, text: &str) -> Vec<String> {
    let Some(re) = regex!(
        r#"\bsource\s*=\s*"(\$\{get_(?:repo_root|terragrunt_dir|parent_terragrunt_dir)\(\)\}[^"]*)""#
    ) else {
        return Vec::new();
    };
    re.captures_iter(text)
        .filter_map(|c| c.get(1))
        .filter_map(|m| {
            let s = m.as_str();
            let s = s.split('?').next().unwrap_or(s);
            // The prefix is `${...}`; the module root ends at a `//` after it.
            let body_start = s.find('}').map_or(0, |i| i + 1);
            let s = match s[body_start..].find("//") {
                Some(i) if i > 0 => &s[..body_start + i],
                _ => s,
            };
            resolve_ref(dir, parent_dir, s)
        })
        .collect()
}

/// The local-module graph of a commit: for each stack and each directory reached from it,
/// the local directories its `.tf` / `.tf.json` / `.hcl` files use as sources, and for
/// Terragrunt configurations the files and directories of [`terragrunt_refs`] (normalised
/// repository paths; paths leaving the repository are dropped). An entry may be a file.
pub fn module_graph(snapshot: &Snapshot, stacks: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut graph = BTreeMap::new();
    let mut todo: Vec<String> = stacks.iter().map(|s| normalize(s)).collect();
    while let Some(dir) = todo.pop() {
        if graph.contains_key(&dir) {
            continue;
        }
        let mut used = BTreeSet::new();
        for path in snapshot.files_in(&dir) {
            let name = file_name(path);
            if !(name.ends_with(".tf") || name.ends_with(".tf.json") || name.ends_with(".hcl")) {
                continue;
            }
            let Some(text) = snapshot.text(path) else {
                continue;
            };
            for source in local_sources(text) {
                if escapes(&dir, &source) {
                    continue;
                }
                let target = normalize(&format!("{dir}/{source}"));
                if target != dir {
                    used.insert(target);
                }
            }
            if name.ends_with(".hcl") {
                used.extend(terragrunt_refs(snapshot, &dir, text));
            }
        }
        let used: Vec<String> = used.into_iter().collect();
        todo.extend(used.iter().cloned());
        graph.insert(dir, used);
    }
    graph
}

/// Whether `source` relative to `dir` leaves the repository root.
fn escapes(dir: &str, source: &str) -> bool {
    let mut depth: i64 = dir
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .count() as i64;
    for p in source.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// A version pin's first line, when it is usable as an image tag: `v` dropped; empty,
/// `latest:<regex>`, `min-required`, `latest-allowed` and anything that is not a tag
/// (`[A-Za-z0-9_.-]`, at most 128 characters) are ignored.
pub fn pin_version(text: &str) -> Option<String> {
    let line = text.lines().next().unwrap_or("").trim();
    let v = line.strip_prefix('v').unwrap_or(line);
    let tag_like = !v.is_empty()
        && v.len() <= 128
        && !v.starts_with(['.', '-'])
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    (tag_like && v != "min-required" && v != "latest-allowed").then(|| v.to_owned())
}

/// The nearest pin file `name` for `stack`: in the stack, else in a parent up to the root.
fn nearest_pin(snapshot: &Snapshot, stack: &str, name: &str) -> Option<String> {
    let mut dir = normalize(stack);
    loop {
        let path = if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        };
        if let Some(v) = snapshot.text(&path).and_then(pin_version) {
            return Some(v);
        }
        if dir.is_empty() {
            return None;
        }
        dir = parent(&dir);
    }
}

/// The `required_version` constraint in the stack's `.tf` / `.tf.json` files (comments
/// ignored; files in name order).
pub fn required_version(snapshot: &Snapshot, stack: &str) -> Option<String> {
    static REQUIRED: OnceLock<Option<Regex>> = OnceLock::new();
    let re = REQUIRED
        .get_or_init(|| Regex::new(r#""?\brequired_version"?\s*[=:]\s*"([^"]+)""#).ok())
        .as_ref()?;
    let dir = normalize(stack);
    snapshot
        .files_in(&dir)
        .filter(|p| p.ends_with(".tf") || p.ends_with(".tf.json"))
        .find_map(|p| {
            let text = strip_comments(snapshot.text(p)?);
            re.captures(&text)
                .and_then(|c| c.get(1))
                .map(|m| m.as_str().trim().to_owned())
        })
}

/// The tool version a stack's Job uses, from the files of the run's commit:
/// 1. `.terragrunt-version` (stacks with a `terragrunt.hcl`), in the stack or a parent;
/// 2. `.terraform-version`, then `.opentofu-version`, in the stack or a parent;
/// 3. the stack's `required_version`: `default` when it satisfies it, else the version the
///    constraint names (exact pin, `~> X.Y.Z` → `X.Y`, `>= V` → `V`);
/// 4. `default`.
pub fn stack_version(snapshot: &Snapshot, stack: &str, default: &str) -> String {
    let dir = normalize(stack);
    let terragrunt = snapshot.paths.contains(&if dir.is_empty() {
        "terragrunt.hcl".to_owned()
    } else {
        format!("{dir}/terragrunt.hcl")
    });
    if terragrunt {
        if let Some(v) = nearest_pin(snapshot, &dir, ".terragrunt-version") {
            return v;
        }
    }
    for name in [".terraform-version", ".opentofu-version"] {
        if let Some(v) = nearest_pin(snapshot, &dir, name) {
            return v;
        }
    }
    if let Some(c) = required_version(snapshot, &dir) {
        if let Some(v) = version_for_constraint(&c, default).and_then(|v| pin_version(&v)) {
            return v;
        }
    }
    default.to_owned()
}

/// The image of a stack's Job: `template` with `{{ version }}` replaced by [`stack_version`].
pub fn stack_image(snapshot: &Snapshot, stack: &str, template: &str, default: &str) -> String {
    render_image(template, &stack_version(snapshot, stack, default))
}

/// What the operator knows about a DriftScan at one commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// The full commit id.
    pub commit: String,
    /// The stacks (explicit and discovered).
    pub stacks: Vec<String>,
    /// The image of each stack's Job.
    pub images: BTreeMap<String, String>,
    /// The local-module graph (for changed-file selection).
    pub modules: BTreeMap<String, Vec<String>>,
}

/// Resolves a DriftScan's stacks, their images and their module graph at `commit`.
pub fn resolve(
    snapshot: &Snapshot,
    commit: &str,
    spec: &DriftScanSpec,
) -> Result<Resolved, String> {
    let git = &spec.source.git;
    let stacks = discover(snapshot, &git.stacks, &git.discover, spec.engine)?;
    let t = &spec.job_template;
    let images = stacks
        .iter()
        .map(|s| {
            (
                s.clone(),
                stack_image(snapshot, s, &t.image, &t.default_version),
            )
        })
        .collect();
    let modules = module_graph(snapshot, &stacks);
    Ok(Resolved {
        commit: commit.to_owned(),
        stacks,
        images,
        modules,
    })
}

// ---- the cache of bare repositories -------------------------------------------------------

/// Bare repositories fetched by the operator, one per URL, under one directory.
#[derive(Debug)]
pub struct RepoCache {
    root: PathBuf,
    locks: Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
}

impl RepoCache {
    /// A cache in `root` (created when missing).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the bare repository of `url` lives.
    pub fn path_of(&self, url: &str) -> PathBuf {
        let digest = Sha256::digest(url.as_bytes());
        self.root
            .join(format!("{}.git", hex::encode(&digest[..12])))
    }

    fn lock_of(&self, path: &Path) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks
            .entry(path.to_path_buf())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone()
    }

    /// Fetches `url` (branches and tags; `commit` too when no branch has it) and returns the
    /// full id of `commit` when given, else of `git_ref` (`HEAD`, a branch, a tag or a commit).
    /// Gives up at `deadline`. Blocking.
    pub fn sync(
        &self,
        url: &str,
        git_ref: &str,
        commit: Option<&str>,
        creds: &Credentials,
        timeout: Duration,
    ) -> Result<String, RepoError> {
        let deadline = Instant::now() + timeout;
        let shown = display_url(url);
        let path = self.path_of(url);
        let lock = self.lock_of(&path);
        let _guard = loop {
            match lock.try_lock() {
                Ok(g) => break g,
                Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        return Err(RepoError::Timeout {
                            url: shown,
                            seconds: timeout.as_secs(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let cache_err = |e: &dyn std::fmt::Display| RepoError::Cache {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let repo = match Repository::open_bare(&path) {
            Ok(r) => r,
            Err(_) => {
                std::fs::create_dir_all(&self.root).map_err(|e| RepoError::Cache {
                    path: self.root.display().to_string(),
                    message: e.to_string(),
                })?;
                if path.exists() {
                    // A half-made repository from an interrupted start: start over.
                    std::fs::remove_dir_all(&path).map_err(|e| cache_err(&e))?;
                }
                Repository::init_bare(&path).map_err(|e| cache_err(&e))?
            }
        };
        let refusal = Refusal::default();
        let fetch_err = |e: git2::Error| {
            let e = explain(&refusal, e);
            if Instant::now() >= deadline {
                RepoError::Timeout {
                    url: shown.clone(),
                    seconds: timeout.as_secs(),
                }
            } else {
                RepoError::Fetch {
                    url: shown.clone(),
                    message: scrub(e.message(), creds),
                }
            }
        };
        let mut remote = repo.remote_anonymous(url).map_err(fetch_err)?;
        let mut options = fetch_options(url, creds, &refusal, deadline);
        options.download_tags(AutotagOption::None);
        options.prune(git2::FetchPrune::On);
        remote
            .fetch(
                &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                Some(&mut options),
                None,
            )
            .map_err(fetch_err)?;
        let advertised: Vec<(String, Oid)> = remote
            .list()
            .map(|heads| {
                heads
                    .iter()
                    .map(|h| (h.name().to_owned(), h.oid()))
                    .collect()
            })
            .unwrap_or_default();
        drop(remote);
        if let Some(wanted) = commit {
            let wanted = wanted.trim();
            let not_found = || RepoError::Commit {
                commit: wanted.to_owned(),
                url: shown.clone(),
            };
            if !is_hex(wanted) || wanted.len() < 4 {
                return Err(not_found());
            }
            if let Some(id) = find_commit(&repo, wanted) {
                return Ok(id.to_string());
            }
            if wanted.len() == 40 {
                // Not reachable from a branch or tag: ask for it directly (servers allowing it).
                let mut remote = repo.remote_anonymous(url).map_err(fetch_err)?;
                let mut options = fetch_options(url, creds, &refusal, deadline);
                options.download_tags(AutotagOption::None);
                let refspec = format!("+{wanted}:refs/driftless/wanted");
                if remote
                    .fetch(&[refspec.as_str()], Some(&mut options), None)
                    .is_ok()
                {
                    if let Some(id) = find_commit(&repo, wanted) {
                        return Ok(id.to_string());
                    }
                }
            }
            return Err(not_found());
        }
        let not_found = || RepoError::Ref {
            git_ref: git_ref.to_owned(),
            url: shown.clone(),
        };
        let name = git_ref.trim();
        let peel = |oid: Oid| -> Option<Oid> {
            repo.find_object(oid, None)
                .ok()?
                .peel_to_commit()
                .ok()
                .map(|c| c.id())
        };
        if name.is_empty() || name == "HEAD" {
            let head = advertised
                .iter()
                .find(|(n, _)| n == "HEAD")
                .map(|(_, oid)| *oid);
            return head
                .and_then(peel)
                .map(|o| o.to_string())
                .ok_or_else(not_found);
        }
        for candidate in [
            name.to_owned(),
            format!("refs/heads/{name}"),
            format!("refs/tags/{name}"),
        ] {
            if !candidate.starts_with("refs/") {
                continue;
            }
            if let Ok(r) = repo.find_reference(&candidate) {
                if let Some(oid) = r.target().and_then(peel) {
                    return Ok(oid.to_string());
                }
            }
        }
        if is_hex(name) && name.len() >= 4 {
            if let Some(id) = find_commit(&repo, name) {
                return Ok(id.to_string());
            }
        }
        Err(not_found())
    }

    /// The files of `commit` in the cached repository of `url` (after [`RepoCache::sync`]).
    /// Blocking.
    pub fn snapshot(&self, url: &str, commit: &str) -> Result<Snapshot, RepoError> {
        let path = self.path_of(url);
        let err = |e: git2::Error| RepoError::Cache {
            path: path.display().to_string(),
            message: e.message().to_owned(),
        };
        let repo = Repository::open_bare(&path).map_err(err)?;
        let oid = Oid::from_str(commit).map_err(err)?;
        let tree = repo.find_commit(oid).map_err(err)?.tree().map_err(err)?;
        let mut found: Vec<(String, Oid, bool)> = Vec::new();
        tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
            let Some(name) = entry.name() else {
                return TreeWalkResult::Skip;
            };
            match entry.kind() {
                Some(ObjectType::Tree) if name.starts_with('.') => TreeWalkResult::Skip,
                Some(ObjectType::Blob) => {
                    found.push((format!("{dir}{name}"), entry.id(), is_read(name)));
                    TreeWalkResult::Ok
                }
                _ => TreeWalkResult::Ok,
            }
        })
        .map_err(err)?;
        let mut out = Snapshot::default();
        for (path, id, read) in found {
            if read {
                if let Ok(blob) = repo.find_blob(id) {
                    if blob.size() as u64 <= MAX_FILE_BYTES {
                        if let Ok(text) = std::str::from_utf8(blob.content()) {
                            out.texts.insert(path.clone(), text.to_owned());
                        }
                    }
                }
            }
            out.paths.insert(path);
        }
        Ok(out)
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.len() <= 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn find_commit(repo: &Repository, id: &str) -> Option<Oid> {
    if id.len() == 40 {
        let oid = Oid::from_str(id).ok()?;
        return repo.find_commit(oid).ok().map(|c| c.id());
    }
    let obj = repo.revparse_single(id).ok()?;
    obj.peel_to_commit().ok().map(|c| c.id())
}

/// A git message with the credentials' secret values removed.
fn scrub(message: &str, creds: &Credentials) -> String {
    let mut out = message.to_owned();
    for secret in creds.secrets() {
        let s = secret.expose().trim();
        if !s.is_empty() {
            out = out.replace(s, "[redacted]");
        }
    }
    out
}

/// Looks up one key of a Secret in the DriftScan's namespace (`None` when the key is absent).
pub async fn secret_value(
    client: &kube::Client,
    namespace: &str,
    secret: &str,
    key: &str,
) -> Result<Option<SecretString>, RepoError> {
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), namespace);
    let s = api
        .get_opt(secret)
        .await
        .map_err(|e| RepoError::Credentials(format!("reading Secret {namespace}/{secret}: {e}")))?
        .ok_or_else(|| RepoError::Credentials(format!("Secret {namespace}/{secret} not found")))?;
    Ok(key_value(s, key))
}

/// One key of a Secret (`data`, else `stringData`), `None` when absent.
pub fn key_value(secret: k8s_openapi::api::core::v1::Secret, key: &str) -> Option<SecretString> {
    secret
        .data
        .and_then(|d| {
            d.get(key)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        })
        .or_else(|| secret.string_data.and_then(|d| d.get(key).cloned()))
        .map(SecretString::new)
}

/// The git credentials of a DriftScan, from its Secret (the scan runner's keys: `token` and
/// `username`; `ssh-privatekey` and `known_hosts`; a GitHub App's `private-key`).
pub async fn credentials(
    client: &kube::Client,
    namespace: &str,
    git: &GitSource,
) -> Result<Credentials, RepoError> {
    let Some(creds) = &git.credentials else {
        return Ok(Credentials::None);
    };
    let required = |secret: String, key: &'static str| async move {
        secret_value(client, namespace, &secret, key)
            .await?
            .ok_or_else(|| {
                RepoError::Credentials(format!("Secret {namespace}/{secret} has no key {key}"))
            })
    };
    Ok(match &creds.kind {
        GitCredentialsKind::Https(secret) => {
            let token = required(secret.name.clone(), "token").await?;
            let username = secret_value(client, namespace, &secret.name, "username")
                .await?
                .map(|u| u.expose().trim().to_owned())
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "git".into());
            Credentials::Https {
                username,
                token: SecretString::new(token.expose().trim()),
            }
        }
        GitCredentialsKind::Ssh(secret) => Credentials::Ssh {
            private_key: required(secret.name.clone(), "ssh-privatekey").await?,
            known_hosts: required(secret.name.clone(), "known_hosts")
                .await?
                .expose()
                .to_owned(),
        },
        GitCredentialsKind::GithubApp(app) => {
            let key = required(app.secret_ref.name.clone(), "private-key").await?;
            let api = app.api_url.as_deref().unwrap_or("https://api.github.com");
            // Minted once and reused by later fetches until shortly before it expires.
            let token = crate::runner::git::github_app_token(
                api,
                app.app_id,
                app.installation_id,
                key.expose(),
            )
            .await
            .map_err(|e| RepoError::Credentials(e.to_string()))?;
            Credentials::Https {
                username: "x-access-token".into(),
                token,
            }
        }
    })
}

/// Fetches the DriftScan's repository and resolves it at `commit` (else at
/// `spec.source.git.ref`): credentials from the API server, git I/O on a blocking thread,
/// the whole bounded by `timeout`.
pub async fn resolve_at(
    cache: Arc<RepoCache>,
    client: &kube::Client,
    namespace: &str,
    spec: &DriftScanSpec,
    commit: Option<String>,
    timeout: Duration,
) -> Result<Resolved, String> {
    let git = &spec.source.git;
    let creds = tokio::time::timeout(timeout, credentials(client, namespace, git))
        .await
        .map_err(|_| {
            RepoError::Credentials(format!(
                "reading the credentials did not finish within {}s",
                timeout.as_secs()
            ))
            .to_string()
        })?
        .map_err(|e| e.to_string())?;
    let spec = spec.clone();
    let shown = display_url(&git.url);
    let work = tokio::task::spawn_blocking(move || -> Result<Resolved, String> {
        let git = &spec.source.git;
        let id = cache
            .sync(&git.url, &git.git_ref, commit.as_deref(), &creds, timeout)
            .map_err(|e| e.to_string())?;
        let snapshot = cache.snapshot(&git.url, &id).map_err(|e| e.to_string())?;
        resolve(&snapshot, &id, &spec)
    });
    // The fetch checks its own deadline; this bounds the wait for it even if libgit2 hangs
    // before its first callback.
    match tokio::time::timeout(timeout + Duration::from_secs(5), work).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(format!(
            "spec.source.git.url {shown}: resolving failed: {e}"
        )),
        Err(_) => Err(RepoError::Timeout {
            url: shown,
            seconds: timeout.as_secs(),
        }
        .to_string()),
    }
}

#[cfg(test)]
mod tests;
