//! `bonding`: configured and active slaves of every bonding master, from
//! `/sys/class/net/bonding_masters`, `MASTER/bonding/slaves` and each slave's
//! `lower_SLAVE/bonding_slave/mii_status` (`slave_SLAVE/...` on older kernels), as node_exporter
//! reads them. A host without bonding, or a file that went missing while a bond was being
//! reconfigured, is "no data": nothing is exported rather than half a bond.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::kfiles::{failed, not_found};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Bonding {
    class_net: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Bonding {
        class_net: settings.paths.sys.join("class/net"),
    }))
}

/// Reads a file; a missing one is "no data" for the whole collector.
fn read(path: &Path) -> Result<String, CollectError> {
    std::fs::read_to_string(path).map_err(|e| {
        if not_found(&e) {
            CollectError::NoData(format!("{} not found", path.display()))
        } else {
            failed(path, e)
        }
    })
}

/// `(configured, active)` slaves of one master.
fn master_status(class_net: &Path, master: &str) -> Result<(u32, u32), CollectError> {
    let slaves = read(&class_net.join(master).join("bonding/slaves"))?;
    let (mut configured, mut active) = (0, 0);
    for slave in slaves.split_whitespace() {
        let lower = class_net
            .join(master)
            .join(format!("lower_{slave}"))
            .join("bonding_slave/mii_status");
        let state = match std::fs::read_to_string(&lower) {
            Err(e) if not_found(&e) => read(
                &class_net
                    .join(master)
                    .join(format!("slave_{slave}"))
                    .join("bonding_slave/mii_status"),
            )?,
            other => other.map_err(|e| failed(&lower, e))?,
        };
        configured += 1;
        if state.trim() == "up" {
            active += 1;
        }
    }
    Ok((configured, active))
}

impl Collector for Bonding {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let masters = read(&self.class_net.join("bonding_masters"))?;
        let mut status = BTreeMap::new();
        for master in masters.split_whitespace() {
            status.insert(master, master_status(&self.class_net, master)?);
        }
        let mut slaves = Family::new(
            "node_bonding_slaves",
            "Number of configured slaves per bonding interface.",
            Kind::Gauge,
        );
        let mut active = Family::new(
            "node_bonding_active",
            "Number of active slaves per bonding interface.",
            Kind::Gauge,
        );
        for (master, (configured, up)) in status {
            slaves.push(vec![("master", master.to_owned())], f64::from(configured));
            active.push(vec![("master", master.to_owned())], f64::from(up));
        }
        out.push(slaves);
        out.push(active);
        Ok(())
    }
}
