//! `rapl`: energy counters of Intel RAPL (Running Average Power Limit) zones in
//! `/sys/class/powercap`, as node_exporter 1.5 exports them (without
//! `--collector.rapl.enable-zone-label`).
//!
//! A zone is a directory with a `name` file; `package-0` becomes the family
//! `node_rapl_package_joules_total` with `index="0"`, a name without a number takes the count of
//! zones of that name seen before. A zone without `max_energy_range_uj`, or an `energy_uj` that
//! cannot be read for want of permission (kernels since 5.10 keep it to root), means no data, as
//! in node_exporter: what was read before stays. A host without the class exports nothing.

use std::collections::HashMap;
use std::path::PathBuf;

use super::kfiles::parse_u64;
use super::{CollectError, Collector, Settings};
use crate::metrics::{sanitize_name, Family, Kind};

/// The collector.
pub struct Rapl {
    class: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Rapl {
        class: settings.paths.sys.join("class/powercap"),
    }))
}

fn io_error(path: &std::path::Path, e: std::io::Error) -> CollectError {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            CollectError::NoData(format!("{}: {e}", path.display()))
        }
        _ => CollectError::Failed(format!("{}: {e}", path.display())),
    }
}

fn read_u64(path: &std::path::Path) -> Result<u64, CollectError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    parse_u64(text.trim(), 10)
        .ok_or_else(|| CollectError::Failed(format!("{}: not a number: {text:?}", path.display())))
}

/// `package-0` → (0, `package`); a name without `-N` takes how often it was seen.
fn index_and_name(seen: &HashMap<String, i64>, name: &str) -> (i64, String) {
    let parts: Vec<&str> = name.split('-').collect();
    if let [base, number] = parts[..] {
        // Go's Atoi: an optional sign and digits.
        let digits = number.strip_prefix(['+', '-']).unwrap_or(number);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(index) = number.parse::<i64>() {
                return (index, base.to_owned());
            }
        }
    }
    (seen.get(name).copied().unwrap_or(0), name.to_owned())
}

impl Collector for Rapl {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let entries =
            super::kfiles::dir_names(&self.class).map_err(|e| io_error(&self.class, e))?;
        let mut zones = Vec::new();
        let mut seen: HashMap<String, i64> = HashMap::new();
        for entry in entries {
            let dir = self.class.join(&entry);
            let Ok(raw) = std::fs::read_to_string(dir.join("name")) else {
                continue;
            };
            let (index, name) = index_and_name(&seen, raw.trim());
            read_u64(&dir.join("max_energy_range_uj"))?;
            seen.insert(name.clone(), index + 1);
            zones.push((index, name, dir));
        }
        let mut families: Vec<Family> = Vec::new();
        let mut result = Ok(());
        for (index, name, dir) in zones {
            let micro = match read_u64(&dir.join("energy_uj")) {
                Ok(v) => v,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let family_name = format!("node_rapl_{}_joules_total", metric_part(&name));
            let help = format!("Current RAPL {name} value in joules");
            let at = match families.iter().position(|f| f.name == family_name) {
                Some(at) if families[at].help == help => at,
                // Another help for the same family name: left out, as node_exporter's registry.
                Some(_) => continue,
                None => {
                    families.push(Family::new(family_name, help, Kind::Counter));
                    families.len() - 1
                }
            };
            let labels = vec![
                ("index", index.to_string()),
                ("path", dir.display().to_string()),
            ];
            if families[at].samples.iter().all(|s| s.labels != labels) {
                families[at].push(labels, micro as f64 / 1_000_000.0);
            }
        }
        out.extend(families);
        result
    }
}

/// node_exporter's `SanitizeMetricName`: `_*[^0-9A-Za-z_]+_*` becomes `_`.
fn metric_part(name: &str) -> String {
    static BAD: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    match BAD.get_or_init(|| regex::Regex::new("_*[^0-9A-Za-z_]+_*").ok()) {
        Some(bad) => bad.replace_all(name, "_").into_owned(),
        None => sanitize_name(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indexes_follow_procfs() {
        let seen = HashMap::from([("dram".to_owned(), 1)]);
        assert_eq!(index_and_name(&seen, "package-1"), (1, "package".into()));
        assert_eq!(index_and_name(&seen, "dram"), (1, "dram".into()));
        assert_eq!(index_and_name(&seen, "psys"), (0, "psys".into()));
        assert_eq!(index_and_name(&seen, "a-b-1"), (0, "a-b-1".into()));
        assert_eq!(metric_part("a-b-1"), "a_b_1");
        assert_eq!(metric_part("core"), "core");
        assert_eq!(metric_part("x__.y"), "x_y");
    }
}
