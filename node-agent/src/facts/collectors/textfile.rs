//! `textfile`: metrics that other programs (cron jobs, package hooks) write into `*.prom` files
//! in the Prometheus text format, as node_exporter 1.5's textfile collector exports them.
//!
//! Guarantees: a file that does not parse (see [`parse`]), carries timestamps, uses a label name
//! that Prometheus reserves (`__` prefix) or cannot be read is skipped whole and reported by
//! `node_textfile_scrape_error 1`; it never breaks the exposition. A family a file shares with
//! another file is merged when type and help agree (the first file's series win over duplicates
//! later); otherwise, and when the name is one the agent exports itself, the later family is left
//! out and logged, as node_exporter's registry leaves it out. Every file read successfully
//! reports `node_textfile_mtime_seconds{file}`.
//!
//! Caveat: nothing is exported while no directory is configured (node_exporter exports
//! `node_textfile_scrape_error 0` even then).

mod parse;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::{CollectError, Collector, Settings};
use crate::metrics::{intern_label, Family, Kind};

pub use parse::{go_float, parse, parse_float, ParseError, ParsedFamily};

/// Families the agent exports outside the node collectors, which a file may not take over.
const RESERVED: &[&str] = &[
    "node_scrape_collector_duration_seconds",
    "node_scrape_collector_success",
    "node_textfile_mtime_seconds",
    "node_textfile_scrape_error",
];

/// A configured directory (or glob pattern of directories).
#[derive(Clone, Debug)]
struct Source {
    /// The pattern as read here.
    pattern: PathBuf,
    /// Removed from the front of paths in the `file` label (the host root for policy
    /// directories), so labels show the host's paths.
    strip: Option<PathBuf>,
}

/// The collector.
pub struct Textfile {
    sources: Vec<Source>,
}

/// Factory: the FactsPolicy's `spec.collectors.textfile.directories` (below the host root) and
/// the `--collector.textfile.directory` flags (as given).
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    let mut sources = Vec::new();
    let root = &settings.paths.root;
    for dir in &settings.collectors.textfile.directories {
        if !dir.starts_with('/') {
            return Err(CollectError::Config {
                collector: "textfile",
                problem: format!("directory {dir:?} is not an absolute path"),
            });
        }
        sources.push(Source {
            pattern: settings.paths.host(dir),
            strip: (root != Path::new("/")).then(|| root.clone()),
        });
    }
    for dir in &settings.flags.textfile_directories {
        sources.push(Source {
            pattern: dir.clone(),
            strip: None,
        });
    }
    Ok(Box::new(Textfile { sources }))
}

/// One file read successfully.
struct FileMetrics {
    /// The path in the `file` label.
    label: String,
    mtime: f64,
    families: Vec<ParsedFamily>,
}

impl Collector for Textfile {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        if self.sources.is_empty() {
            return Ok(());
        }
        let mut errored = false;
        let mut read = Vec::new();
        for source in &self.sources {
            let mut dirs = glob(&source.pattern);
            if dirs.is_empty() {
                dirs.push(source.pattern.clone());
            }
            for dir in dirs {
                let names = match super::kfiles::dir_names(&dir) {
                    Ok(names) => names,
                    Err(error) => {
                        tracing::warn!(path = %dir.display(), %error, "textfile: cannot read the directory");
                        errored = true;
                        continue;
                    }
                };
                for name in names.iter().filter(|n| n.ends_with(".prom")) {
                    let path = dir.join(name);
                    let label = label_path(&path, source.strip.as_deref());
                    match read_file(&path, label) {
                        Ok(file) => read.push(file),
                        Err(error) => {
                            tracing::warn!(file = %path.display(), %error, "textfile: file skipped");
                            errored = true;
                        }
                    }
                }
            }
        }
        let taken: HashSet<String> = out.iter().map(|f| f.name.clone()).collect();
        let (families, dropped) = merge(&read, &taken);
        for (file, family, why) in dropped {
            tracing::warn!(%file, %family, %why, "textfile: family left out");
        }
        out.extend(families);
        let mut mtime = Family::new(
            "node_textfile_mtime_seconds",
            "Unixtime mtime of textfiles successfully read.",
            Kind::Gauge,
        );
        let mut files: Vec<_> = read.iter().map(|f| (&f.label, f.mtime)).collect();
        files.sort_by(|a, b| a.0.cmp(b.0));
        for (label, seconds) in files {
            mtime.push(vec![("file", label.clone())], seconds);
        }
        out.push(mtime);
        out.push(Family::single(
            "node_textfile_scrape_error",
            "1 if there was an error opening or reading a file, 0 otherwise",
            Kind::Gauge,
            f64::from(u8::from(errored)),
        ));
        Ok(())
    }
}

/// The path shown in the `file` label: the host's path when read below a root.
fn label_path(path: &Path, strip: Option<&Path>) -> String {
    match strip.and_then(|root| path.strip_prefix(root).ok()) {
        Some(rest) => Path::new("/").join(rest).display().to_string(),
        None => path.display().to_string(),
    }
}

/// Reads, parses and checks one file; its mtime is taken after it parsed, so a file that fails
/// never looks fresh. A file that cannot be opened fails.
fn read_file(path: &Path, label: String) -> Result<FileMetrics, String> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut bytes = Vec::new();
    // A read error ends the input, as in node_exporter's parser: what was read must end with a
    // whole line (a directory named `x.prom` reads as an empty file).
    if let Err(error) = file.read_to_end(&mut bytes) {
        tracing::debug!(file = %path.display(), %error, "textfile: read ended early");
    }
    let families = parse(&bytes).map_err(|e| e.to_string())?;
    for family in &families {
        if family.metrics.iter().any(|m| m.timestamp) {
            return Err("contains unsupported client-side timestamps, skipping entire file".into());
        }
        for metric in &family.metrics {
            if let Some((name, _)) = metric.labels.iter().find(|(l, _)| l.starts_with("__")) {
                return Err(format!(
                    "{name:?} is not a valid label name for metric {:?} (the __ prefix is reserved)",
                    family.name
                ));
            }
        }
    }
    let modified = file
        .metadata()
        .and_then(|m| m.modified())
        .map_err(|e| format!("cannot stat: {e}"))?;
    let mtime = match modified.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as f64,
        Err(e) => -(e.duration().as_secs() as f64),
    };
    Ok(FileMetrics {
        label,
        mtime,
        families,
    })
}

/// Why a family was left out: (file, family, reason).
type Dropped = (String, String, String);

/// Turns the files' families into exposition families, in file order: help texts default to
/// "Metric read from FILES", label sets are padded to the family's label names with empty
/// values, and conflicts are resolved as node_exporter's registry resolves them.
fn merge(files: &[FileMetrics], taken: &HashSet<String>) -> (Vec<Family>, Vec<Dropped>) {
    let mut sources: HashMap<&str, Vec<&str>> = HashMap::new();
    for file in files {
        for family in &file.families {
            sources
                .entry(&family.name)
                .or_default()
                .push(file.label.as_str());
        }
    }
    let mut merged: Vec<Family> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut series: HashMap<usize, HashSet<Vec<(&'static str, String)>>> = HashMap::new();
    let mut dropped = Vec::new();
    for file in files {
        for parsed in &file.families {
            let kind = parsed.kind.unwrap_or(Kind::Untyped);
            let help = parsed.help.clone().unwrap_or_else(|| {
                format!(
                    "Metric read from {}",
                    sources
                        .get(parsed.name.as_str())
                        .map(|f| f.join(", "))
                        .unwrap_or_default()
                )
            });
            let mut drop = |why: String| {
                dropped.push((file.label.clone(), parsed.name.clone(), why));
            };
            if let Some(why) = conflict(&parsed.name, kind, taken, &merged, &index) {
                drop(why);
                continue;
            }
            let at = match index.get(&parsed.name) {
                Some(&at) => {
                    let existing = &merged[at];
                    if existing.kind != kind || existing.help != help {
                        drop(format!(
                            "type or help differs from the family read before ({} {:?})",
                            existing.kind.as_str(),
                            existing.help
                        ));
                        continue;
                    }
                    at
                }
                None => {
                    merged.push(Family::new(parsed.name.clone(), help, kind));
                    index.insert(parsed.name.clone(), merged.len() - 1);
                    merged.len() - 1
                }
            };
            let seen = series.entry(at).or_default();
            if let Err(why) = convert(parsed, &mut merged[at], seen) {
                drop(why);
            }
        }
    }
    (merged, dropped)
}

/// Why a family cannot be exported beside what is already there, if it cannot.
fn conflict(
    name: &str,
    kind: Kind,
    taken: &HashSet<String>,
    merged: &[Family],
    index: &HashMap<String, usize>,
) -> Option<String> {
    if RESERVED.contains(&name)
        || name.starts_with("driftless_")
        || crate::process::FAMILIES.contains(&name)
        || taken.contains(name)
    {
        return Some("the agent exports this family itself".into());
    }
    let kind_of = |n: &str| -> Option<Kind> {
        index
            .get(n)
            .map(|&i| merged[i].kind)
            .or_else(|| taken.contains(n).then_some(Kind::Untyped))
    };
    for (suffix, histogram_only) in [("_count", false), ("_sum", false), ("_bucket", true)] {
        if let Some(base) = name.strip_suffix(suffix) {
            match kind_of(base) {
                Some(Kind::Histogram) => return Some(format!("collides with histogram {base:?}")),
                Some(Kind::Summary) if !histogram_only => {
                    return Some(format!("collides with summary {base:?}"))
                }
                _ => {}
            }
        }
        let owns = kind == Kind::Histogram || (kind == Kind::Summary && !histogram_only);
        if owns && kind_of(&format!("{name}{suffix}")).is_some() {
            return Some(format!(
                "its {name}{suffix} collides with a family of that name"
            ));
        }
    }
    None
}

/// Appends a parsed family's metrics to `family`, skipping series already there.
fn convert(
    parsed: &ParsedFamily,
    family: &mut Family,
    seen: &mut HashSet<Vec<(&'static str, String)>>,
) -> Result<(), String> {
    let mut names: Vec<&str> = Vec::new();
    for metric in &parsed.metrics {
        for (label, _) in &metric.labels {
            if !names.contains(&label.as_str()) {
                names.push(label);
            }
        }
    }
    names.sort_unstable();
    let interned: Vec<&'static str> = names
        .iter()
        .map(|n| {
            intern_label(n).ok_or_else(|| format!("too many distinct label names (label {n:?})"))
        })
        .collect::<Result<_, _>>()?;
    let mut duplicates = 0;
    for metric in &parsed.metrics {
        let labels: Vec<(&'static str, String)> = names
            .iter()
            .zip(&interned)
            .map(|(name, kept)| {
                let value = metric
                    .labels
                    .iter()
                    .find(|(l, _)| l == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                (*kept, value)
            })
            .collect();
        if !seen.insert(labels.clone()) {
            duplicates += 1;
            continue;
        }
        push_metric(family, metric, labels);
    }
    if duplicates > 0 {
        return Err(format!(
            "{duplicates} series were exported before with the same labels"
        ));
    }
    Ok(())
}

/// The samples of one metric: its value, or a summary's quantiles, sum and count, or a
/// histogram's buckets (with `+Inf` added when missing), sum and count.
fn push_metric(
    family: &mut Family,
    metric: &parse::ParsedMetric,
    labels: Vec<(&'static str, String)>,
) {
    let (extra, kind) = match family.kind {
        Kind::Summary => ("quantile", Kind::Summary),
        Kind::Histogram => ("le", Kind::Histogram),
        _ => {
            family.push(labels, metric.value);
            return;
        }
    };
    // Later points with the same bound replace earlier ones; points go out in bound order.
    let mut points: BTreeMap<OrderedF64, f64> = BTreeMap::new();
    for &(bound, value) in &metric.points {
        let value = if kind == Kind::Histogram {
            (value as u64) as f64
        } else {
            value
        };
        points.insert(OrderedF64(bound), value);
    }
    if kind == Kind::Histogram && !points.contains_key(&OrderedF64(f64::INFINITY)) {
        points.insert(OrderedF64(f64::INFINITY), metric.count as f64);
    }
    let suffix = if kind == Kind::Histogram {
        "_bucket"
    } else {
        ""
    };
    for (bound, value) in points {
        let mut with = labels.clone();
        with.push((extra, go_float(bound.0)));
        family.push_suffixed(suffix, with, value);
    }
    family.push_suffixed("_sum", labels.clone(), metric.sum);
    family.push_suffixed("_count", labels, metric.count as f64);
}

/// A float ordered by `total_cmp`, for sorting bounds and quantiles.
#[derive(Clone, Copy, Debug)]
struct OrderedF64(f64);

impl PartialEq for OrderedF64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for OrderedF64 {}
impl PartialOrd for OrderedF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Go's `filepath.Glob`: the paths matching a pattern whose elements may hold `*`, `?`,
/// `[...]` and `\` escapes, sorted per directory; a pattern without them matches itself when it
/// exists. I/O errors match nothing.
pub fn glob(pattern: &Path) -> Vec<PathBuf> {
    let text = pattern.to_string_lossy();
    if !has_meta(&text) {
        return if std::fs::symlink_metadata(pattern).is_ok() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let (dir, file) = match pattern.parent() {
        Some(parent) => (parent.to_path_buf(), pattern.file_name()),
        None => (PathBuf::from("."), Some(pattern.as_os_str())),
    };
    let Some(file) = file.map(|f| f.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let dirs = if has_meta(&dir.to_string_lossy()) {
        glob(&dir)
    } else {
        vec![dir]
    };
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(names) = super::kfiles::dir_names(&dir) else {
            continue;
        };
        for name in names {
            if glob_match(file.as_bytes(), name.as_bytes()) {
                out.push(dir.join(name));
            }
        }
    }
    out
}

fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

/// Go's `filepath.Match` for one path element (`*` never crosses `/`; there is none here).
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob_match(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && glob_match(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some((&c, tail)) = name.split_first() else {
                return false;
            };
            let (negate, mut class) = match rest.split_first() {
                Some((b'^', r)) => (true, r),
                _ => (false, rest),
            };
            let mut matched = false;
            let mut first = true;
            loop {
                match class.split_first() {
                    None => return false,
                    Some((b']', r)) if !first => {
                        class = r;
                        break;
                    }
                    _ => {}
                }
                first = false;
                let (lo, r) = class_char(class);
                class = r;
                let hi = if class.first() == Some(&b'-') && class.get(1) != Some(&b']') {
                    let (hi, r) = class_char(&class[1..]);
                    class = r;
                    hi
                } else {
                    lo
                };
                if lo <= c && c <= hi {
                    matched = true;
                }
            }
            matched != negate && glob_match(class, tail)
        }
        Some((b'\\', rest)) => match (rest.split_first(), name.split_first()) {
            (Some((p, rest)), Some((n, tail))) => p == n && glob_match(rest, tail),
            _ => false,
        },
        Some((p, rest)) => name.first() == Some(p) && glob_match(rest, &name[1..]),
    }
}

/// One character of a `[...]` class, honouring `\` escapes.
fn class_char(class: &[u8]) -> (u8, &[u8]) {
    match class {
        [b'\\', c, rest @ ..] => (*c, rest),
        [c, rest @ ..] => (*c, rest),
        [] => (0, class),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostPaths;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn scrape(settings: &Settings) -> String {
        let collector = new(settings).unwrap();
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        let mut text = String::new();
        crate::metrics::encode_families(&out, &mut text);
        text
    }

    fn flag_settings(dirs: &[&Path]) -> Settings {
        let mut settings = Settings::new(HostPaths::under("/"));
        settings.flags.textfile_directories = dirs.iter().map(|d| d.to_path_buf()).collect();
        settings
    }

    #[test]
    fn nothing_configured_exports_nothing() {
        assert_eq!(scrape(&Settings::new(HostPaths::under("/"))), "");
    }

    #[test]
    fn good_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "a.prom", "# HELP backup_ok Last backup.\n# TYPE backup_ok gauge\nbackup_ok{job=\"db\"} 1\nbackup_ok 0\n");
        write(d, "b.prom", "backup_ok{job=\"db\"} 7\ncron_runs_total 3\n");
        write(d, "c.prom", "cron_runs_total 4\n");
        write(d, "broken.prom", "half a line");
        write(d, "stamped.prom", "x 1 1700000000000\n");
        write(d, "ignored.txt", "not read 1\n");
        let text = scrape(&flag_settings(&[d]));
        let p = d.display();
        // Padded label sets; the file with another help is left out.
        assert!(
            text.contains("backup_ok{job=\"db\"} 1\nbackup_ok{job=\"\"} 0\n"),
            "{text}"
        );
        assert!(!text.contains(" 7\n"), "{text}");
        // No HELP: the files it came from, both merged under one family.
        assert!(
            text.contains(&format!("# HELP cron_runs_total Metric read from {p}/b.prom, {p}/c.prom\n# TYPE cron_runs_total untyped\ncron_runs_total 3\n")),
            "{text}"
        );
        assert!(!text.contains("cron_runs_total 4"), "{text}");
        assert!(text.contains(&format!(
            "node_textfile_mtime_seconds{{file=\"{p}/a.prom\"}} "
        )));
        assert!(
            !text.contains("broken.prom")
                && !text.contains("stamped.prom")
                && !text.contains("not read")
        );
        assert!(text.contains("node_textfile_scrape_error 1\n"), "{text}");
    }

    #[test]
    fn histograms_summaries_and_odd_labels() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "h.prom",
            "# TYPE req histogram\nreq_bucket{path=\"/a\\\"b\",le=\"0.5\"} 2\nreq_bucket{path=\"/a\\\"b\",le=\"1e6\"} 4\n\
             req_sum{path=\"/a\\\"b\"} 9.5\nreq_count{path=\"/a\\\"b\"} 5\n\
             # TYPE rpc summary\nrpc{quantile=\"0.9\"} 3\nrpc_sum 10\nrpc_count 4\n",
        );
        let text = scrape(&flag_settings(&[d]));
        assert!(text.contains("# TYPE req histogram\nreq_bucket{path=\"/a\\\"b\",le=\"0.5\"} 2\nreq_bucket{path=\"/a\\\"b\",le=\"1e+06\"} 4\nreq_bucket{path=\"/a\\\"b\",le=\"+Inf\"} 5\nreq_sum{path=\"/a\\\"b\"} 9.5\nreq_count{path=\"/a\\\"b\"} 5\n"), "{text}");
        assert!(
            text.contains("# TYPE rpc summary\nrpc{quantile=\"0.9\"} 3\nrpc_sum 10\nrpc_count 4\n"),
            "{text}"
        );
        assert!(text.contains("node_textfile_scrape_error 0\n"));
        // A family named like a histogram's series is left out, not exported twice.
        write(d, "z.prom", "req_count 1\n");
        let text = scrape(&flag_settings(&[d]));
        assert_eq!(text.matches("req_count").count(), 1, "{text}");
    }

    #[test]
    fn families_of_the_agent_are_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.prom",
            "node_load1 99\nnode_textfile_scrape_error 5\ndriftless_build_info 1\nprocess_open_fds 7\nmine 1\n",
        );
        let collector = new(&flag_settings(&[dir.path()])).unwrap();
        let mut out = vec![Family::single(
            "node_load1",
            "1m load average.",
            Kind::Gauge,
            0.5,
        )];
        collector.update(&mut out).unwrap();
        let mut text = String::new();
        crate::metrics::encode_families(&out, &mut text);
        assert!(
            text.contains("node_load1 0.5\n") && !text.contains("node_load1 99"),
            "{text}"
        );
        assert!(
            text.contains("node_textfile_scrape_error 0\n")
                && !text.contains("node_textfile_scrape_error 5")
        );
        assert!(!text.contains("driftless_build_info") && text.contains("mine 1\n"));
        assert!(!text.contains("process_open_fds"));
    }

    #[test]
    fn missing_and_unreadable_directories_are_errors() {
        let text = scrape(&flag_settings(&[Path::new("/nonexistent/textfile")]));
        assert_eq!(
            text,
            "# HELP node_textfile_scrape_error 1 if there was an error opening or reading a file, 0 otherwise\n\
             # TYPE node_textfile_scrape_error gauge\nnode_textfile_scrape_error 1\n"
        );
    }

    #[test]
    fn policy_directories_are_below_the_root_and_globs_expand() {
        let root = tempfile::tempdir().unwrap();
        for d in ["var/lib/t/one", "var/lib/t/two", "var/lib/t/skip"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        write(&root.path().join("var/lib/t/one"), "a.prom", "a 1\n");
        write(&root.path().join("var/lib/t/two"), "b.prom", "b 2\n");
        write(&root.path().join("var/lib/t/skip"), "c.prom", "c 3\n");
        let mut settings = Settings::new(HostPaths::under(root.path()));
        settings.collectors.textfile.directories = vec!["/var/lib/t/[ot]*".into()];
        let text = scrape(&settings);
        assert!(
            text.contains("node_textfile_mtime_seconds{file=\"/var/lib/t/one/a.prom\"}"),
            "{text}"
        );
        assert!(text.contains("b 2\n") && !text.contains("c 3"), "{text}");
        settings.collectors.textfile.directories = vec!["relative".into()];
        assert!(new(&settings).is_err());
    }

    #[test]
    fn glob_matches_as_go_does() {
        for (pattern, name, matches) in [
            ("*.prom", "a.prom", true),
            ("*", ".hidden", true),
            ("a?c", "abc", true),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[]]", "]", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("a*b*c", "aXbYc", true),
            ("a*b", "ac", false),
        ] {
            assert_eq!(
                glob_match(pattern.as_bytes(), name.as_bytes()),
                matches,
                "{pattern} {name}"
            );
        }
    }
}
