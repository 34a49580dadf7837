//! `edac`: memory controller error counters from `/sys/devices/system/edac/mc/mcN` and their
//! `csrowN` rows, as node_exporter reads them. The `*_noinfo_count` files are exported as the
//! csrow `unknown`. An unreadable counter fails the collector; what was read before it stays.

use std::path::{Path, PathBuf};

use super::kfiles::{families, glob_names, read_uint};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Edac {
    mc: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Edac {
        mc: settings.paths.sys.join("devices/system/edac/mc"),
    }))
}

const CE: usize = 0;
const UE: usize = 1;
const CSROW_CE: usize = 2;
const CSROW_UE: usize = 3;

const FAMILIES: &[(&str, &str, Kind)] = &[
    (
        "node_edac_correctable_errors_total",
        "Total correctable memory errors.",
        Kind::Counter,
    ),
    (
        "node_edac_uncorrectable_errors_total",
        "Total uncorrectable memory errors.",
        Kind::Counter,
    ),
    (
        "node_edac_csrow_correctable_errors_total",
        "Total correctable memory errors for this csrow.",
        Kind::Counter,
    ),
    (
        "node_edac_csrow_uncorrectable_errors_total",
        "Total uncorrectable memory errors for this csrow.",
        Kind::Counter,
    ),
];

/// The number in a name matching `PREFIX[0-9]*` (`mc12` → `12`, `mc3x` → `3`), as the glob and
/// regular expression node_exporter applies select and read it.
fn numbered<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0).then(|| rest.get(..digits)).flatten()
}

/// Numbered entries of a directory; one that cannot be listed has none (a glob).
fn numbered_entries(dir: &Path, prefix: &str) -> Vec<(String, String)> {
    glob_names(dir)
        .into_iter()
        .filter_map(|n| {
            let number = numbered(&n, prefix)?.to_owned();
            Some((n, number))
        })
        .collect()
}

impl Edac {
    fn collect(
        &self,
        controllers: Vec<(String, String)>,
        f: &mut [Family],
    ) -> Result<(), CollectError> {
        for (entry, controller) in controllers {
            let dir = self.mc.join(&entry);
            let label = || vec![("controller", controller.clone())];
            let row = |csrow: &str| {
                vec![
                    ("controller", controller.clone()),
                    ("csrow", csrow.to_owned()),
                ]
            };
            f[CE].push(label(), read_uint(&dir.join("ce_count"))? as f64);
            f[CSROW_CE].push(
                row("unknown"),
                read_uint(&dir.join("ce_noinfo_count"))? as f64,
            );
            f[UE].push(label(), read_uint(&dir.join("ue_count"))? as f64);
            f[CSROW_UE].push(
                row("unknown"),
                read_uint(&dir.join("ue_noinfo_count"))? as f64,
            );
            for (entry, csrow) in numbered_entries(&dir, "csrow") {
                let csrow_dir = dir.join(entry);
                f[CSROW_CE].push(row(&csrow), read_uint(&csrow_dir.join("ce_count"))? as f64);
                f[CSROW_UE].push(row(&csrow), read_uint(&csrow_dir.join("ue_count"))? as f64);
            }
        }
        Ok(())
    }
}

impl Collector for Edac {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let controllers = numbered_entries(&self.mc, "mc");
        if controllers.is_empty() {
            return Ok(());
        }
        let mut f = families(FAMILIES);
        let result = self.collect(controllers, &mut f);
        out.extend(f);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_the_leading_digits() {
        assert_eq!(numbered("mc0", "mc"), Some("0"));
        assert_eq!(numbered("mc12x", "mc"), Some("12"));
        assert_eq!(numbered("mc", "mc"), None);
        assert_eq!(numbered("mcx1", "mc"), None);
        assert_eq!(numbered("power", "mc"), None);
    }
}
