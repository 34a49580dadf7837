//! `os`: `node_os_info` and `node_os_version` from the host's `/etc/os-release` (else
//! `/usr/lib/os-release`).

use super::{CollectError, Collector, Settings};
use crate::facts::inventory::parse_os_release;
use crate::host::HostPaths;
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Os {
    paths: HostPaths,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Os {
        paths: settings.paths.clone(),
    }))
}

/// `major.minor` of a `VERSION_ID` (`22.04.3` → 22.04, `12` → 12).
pub fn major_minor(version_id: &str) -> Option<f64> {
    let mut parts = version_id.split('.');
    let major = parts.next()?;
    let text = match parts.next() {
        Some(minor) if !minor.is_empty() => format!("{major}.{minor}"),
        _ => major.to_owned(),
    };
    text.parse().ok()
}

impl Collector for Os {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let text = std::fs::read_to_string(self.paths.host("/etc/os-release"))
            .or_else(|_| std::fs::read_to_string(self.paths.host("/usr/lib/os-release")))
            .map_err(|_| CollectError::NoData("no os-release file".into()))?;
        let release = parse_os_release(&text);
        let field = |k: &str| release.get(k).cloned().unwrap_or_default();
        let mut info = Family::new(
            "node_os_info",
            "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
            Kind::Gauge,
        );
        info.push(
            vec![
                ("build_id", field("BUILD_ID")),
                ("id", field("ID")),
                ("id_like", field("ID_LIKE")),
                ("image_id", field("IMAGE_ID")),
                ("image_version", field("IMAGE_VERSION")),
                ("name", field("NAME")),
                ("pretty_name", field("PRETTY_NAME")),
                ("variant", field("VARIANT")),
                ("variant_id", field("VARIANT_ID")),
                ("version", field("VERSION")),
                ("version_codename", field("VERSION_CODENAME")),
                ("version_id", field("VERSION_ID")),
            ],
            1.0,
        );
        out.push(info);
        if let Some(v) = major_minor(&field("VERSION_ID")) {
            let mut version = Family::new(
                "node_os_version",
                "Metric containing the major.minor part of the OS version.",
                Kind::Gauge,
            );
            version.push(
                vec![
                    ("id", field("ID")),
                    ("id_like", field("ID_LIKE")),
                    ("name", field("NAME")),
                ],
                v,
            );
            out.push(version);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_major_minor() {
        assert_eq!(super::major_minor("22.04.3"), Some(22.04));
        assert_eq!(super::major_minor("12"), Some(12.0));
        assert_eq!(super::major_minor("rolling"), None);
    }
}
