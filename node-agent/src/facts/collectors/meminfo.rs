//! `meminfo`: every `/proc/meminfo` field as `node_memory_<Field>[_bytes]`.

use super::{read, CollectError, Collector, Settings};
use crate::host::HostPaths;
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Meminfo {
    paths: HostPaths,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Meminfo {
        paths: settings.paths.clone(),
    }))
}

/// `Active(anon)` → `Active_anon`, as node_exporter names it.
pub fn field_name(key: &str) -> String {
    key.replace('(', "_").replace(')', "")
}

impl Collector for Meminfo {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let text = read(&self.paths.proc("meminfo"))?;
        let mut fields: Vec<(String, f64)> = Vec::new();
        for line in text.lines() {
            let Some((key, rest)) = line.split_once(':') else {
                continue;
            };
            let mut parts = rest.split_whitespace();
            let Some(value) = parts.next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            let mut name = field_name(key.trim());
            let value = if parts.next() == Some("kB") {
                name.push_str("_bytes");
                value * 1024.0
            } else {
                value
            };
            fields.push((name, value));
        }
        if fields.is_empty() {
            return Err(CollectError::Failed("no fields in /proc/meminfo".into()));
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, value) in fields {
            out.push(Family::single(
                format!("node_memory_{name}"),
                format!("Memory information field {name}."),
                Kind::Gauge,
                value,
            ));
        }
        Ok(())
    }
}
