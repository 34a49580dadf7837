//! `vmstat`: `/proc/vmstat` fields matching node_exporter's default
//! `--collector.vmstat.fields` (`^(oom_kill|pgpg|pswp|pg.*fault).*`), as untyped metrics.

use super::{read, CollectError, Collector, Settings};
use crate::host::HostPaths;
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Vmstat {
    paths: HostPaths,
    fields: regex::Regex,
}

/// node_exporter's default field filter.
pub const DEFAULT_FIELDS: &str = "^(oom_kill|pgpg|pswp|pg.*fault).*";

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    let fields = super::regex("vmstat", Some(DEFAULT_FIELDS))?.ok_or(CollectError::Config {
        collector: "vmstat",
        problem: "empty field filter".into(),
    })?;
    Ok(Box::new(Vmstat {
        paths: settings.paths.clone(),
        fields,
    }))
}

impl Collector for Vmstat {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let text = read(&self.paths.proc("vmstat"))?;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(' ') else {
                continue;
            };
            if !self.fields.is_match(key) {
                continue;
            }
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            out.push(Family::single(
                format!("node_vmstat_{}", crate::metrics::sanitize_name(key)),
                format!("/proc/vmstat information field {key}."),
                Kind::Untyped,
                value,
            ));
        }
        Ok(())
    }
}
