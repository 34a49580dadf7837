//! `mdadm`: Linux software RAID (md) devices from `/proc/mdstat`, parsed as node_exporter's
//! procfs library does: required, active, failed and spare disks, the activity state
//! (`active`, `inactive`, `recovering`, `resync`, `check`), and blocks in total and synced.
//! A host without md is "no data"; a file that does not parse fails the collector.

use std::path::PathBuf;
use std::sync::OnceLock;

use regex::Regex;

use super::kfiles::{failed, io_error};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Mdadm {
    path: PathBuf,
    /// Compiled on the first scrape that finds `/proc/mdstat`.
    patterns: OnceLock<Patterns>,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Mdadm {
        path: settings.paths.proc("mdstat"),
        patterns: OnceLock::new(),
    }))
}

/// The regular expressions of procfs's mdstat parser (ASCII digits).
pub struct Patterns {
    status: Regex,
    blocks: Regex,
    pct: Regex,
    finish: Regex,
    speed: Regex,
}

impl Patterns {
    /// Compiles them.
    pub fn new() -> Self {
        let re = |p: &str| Regex::new(p).unwrap_or_else(|e| unreachable!("{p}: {e}"));
        Self {
            status: re(r"([0-9]+) blocks .*\[([0-9]+)/([0-9]+)\] \[([U_]+)\]"),
            blocks: re(r"\(([0-9]+)/[0-9]+\)"),
            pct: re(r"= (.+)%"),
            finish: re(r"finish=(.+)min"),
            speed: re(r"speed=(.+)[A-Z]"),
        }
    }
}

impl Default for Patterns {
    fn default() -> Self {
        Self::new()
    }
}

/// One md device.
#[derive(Debug, PartialEq)]
pub struct MdStat {
    /// `md0`.
    pub name: String,
    /// `active`, `inactive`, `recovering`, `resyncing`, `checking`, ...
    pub state: String,
    /// Active disks.
    pub active: i64,
    /// Disks the array needs.
    pub total: i64,
    /// Disks marked `(F)`.
    pub failed: i64,
    /// Disks marked `(S)`.
    pub spare: i64,
    /// Size in blocks.
    pub blocks: i64,
    /// Blocks in sync.
    pub synced: i64,
}

/// `(active, total, size)` from a device line and its status line.
fn status(p: &Patterns, device: &str, line: &str) -> Result<(i64, i64, i64), String> {
    let first = line.split_whitespace().next();
    let size = first
        .and_then(|f| f.parse::<i64>().ok())
        .ok_or_else(|| format!("unexpected statusLine {line:?}"))?;
    if device.contains("raid0") || device.contains("linear") {
        let total = device.matches('[').count() as i64;
        return Ok((total, total, size));
    }
    if device.contains("inactive") {
        return Ok((0, 0, size));
    }
    let caps = p
        .status
        .captures(line)
        .ok_or_else(|| format!("couldn't find all the substring matches: {line}"))?;
    let number = |i: usize| caps.get(i).and_then(|m| m.as_str().parse::<i64>().ok());
    let (Some(total), Some(active)) = (number(2), number(3)) else {
        return Err(format!("unexpected statusLine {line:?}"));
    };
    Ok((active, total, size))
}

/// Blocks synced from a recovery/resync/check line; the percentage, finish time and speed must
/// parse too, as procfs requires.
fn recovery(p: &Patterns, line: &str) -> Result<i64, String> {
    let capture = |re: &Regex| re.captures(line).and_then(|c| c.get(1)).map(|m| m.as_str());
    let bad = || format!("unexpected recoveryLine: {line}");
    let synced = capture(&p.blocks)
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(bad)?;
    let float = |s: Option<&str>| s.and_then(|s| s.parse::<f64>().ok());
    float(capture(&p.pct).map(str::trim)).ok_or_else(bad)?;
    float(capture(&p.finish)).ok_or_else(bad)?;
    float(capture(&p.speed)).ok_or_else(bad)?;
    Ok(synced)
}

/// Parses `/proc/mdstat`.
pub fn parse(p: &Patterns, text: &str) -> Result<Vec<MdStat>, String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty()
            || line.starts_with(' ')
            || line.starts_with("Personalities")
            || line.starts_with("unused")
        {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(state)) = (fields.first(), fields.get(2)) else {
            return Err(format!(
                "not enough fields in mdline (expected at least 3): {line}"
            ));
        };
        let (Some(next), Some(after)) = (lines.get(i + 1), lines.get(i + 2)) else {
            return Err(format!("too few lines for md device {name}"));
        };
        if lines.len() <= i + 3 {
            return Err(format!("too few lines for md device {name}"));
        }
        let (active, total, blocks) = status(p, line, next)?;
        let sync_line = if after.contains("bitmap") {
            lines.get(i + 3).copied().unwrap_or_default()
        } else {
            after
        };
        let mut state = (*state).to_owned();
        let mut synced = blocks;
        let (recovering, resyncing, checking) = (
            sync_line.contains("recovery"),
            sync_line.contains("resync"),
            sync_line.contains("check"),
        );
        if recovering || resyncing || checking {
            state = if recovering {
                "recovering"
            } else if checking {
                "checking"
            } else {
                "resyncing"
            }
            .into();
            synced = if sync_line.contains("PENDING") || sync_line.contains("DELAYED") {
                0
            } else {
                recovery(p, sync_line).map_err(|e| format!("md device {name}: {e}"))?
            };
        }
        out.push(MdStat {
            name: (*name).to_owned(),
            state,
            active,
            total,
            failed: line.matches("(F)").count() as i64,
            spare: line.matches("(S)").count() as i64,
            blocks,
            synced,
        });
    }
    Ok(out)
}

/// The `node_md_state` states and the parsed state each stands for.
const STATES: [(&str, &str); 5] = [
    ("active", "active"),
    ("inactive", "inactive"),
    ("recovering", "recovering"),
    ("resync", "resyncing"),
    ("check", "checking"),
];

impl Collector for Mdadm {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| io_error(&self.path, &e))?;
        let patterns = self.patterns.get_or_init(Patterns::new);
        let devices = parse(patterns, &text).map_err(|e| failed(&self.path, e))?;
        let mut required = Family::new(
            "node_md_disks_required",
            "Total number of disks of device.",
            Kind::Gauge,
        );
        let mut disks = Family::new(
            "node_md_disks",
            "Number of active/failed/spare disks of device.",
            Kind::Gauge,
        );
        let mut state = Family::new(
            "node_md_state",
            "Indicates the state of md-device.",
            Kind::Gauge,
        );
        let mut blocks = Family::new(
            "node_md_blocks",
            "Total number of blocks on device.",
            Kind::Gauge,
        );
        let mut synced = Family::new(
            "node_md_blocks_synced",
            "Number of blocks synced on device.",
            Kind::Gauge,
        );
        for md in devices {
            let device = || ("device", md.name.clone());
            required.push(vec![device()], md.total as f64);
            for (name, value) in [
                ("active", md.active),
                ("failed", md.failed),
                ("spare", md.spare),
            ] {
                disks.push(vec![device(), ("state", name.to_owned())], value as f64);
            }
            for (label, parsed) in STATES {
                let on = f64::from(u8::from(md.state == parsed));
                state.push(vec![device(), ("state", label.to_owned())], on);
            }
            blocks.push(vec![device()], md.blocks as f64);
            synced.push(vec![device()], md.synced as f64);
        }
        out.extend([required, disks, state, blocks, synced]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arrays_in_every_state() {
        let text = "Personalities : [raid1] [raid6] [raid5] [raid4] [linear] [raid0]\n\
md3 : active raid6 sda1[8] sdh1[7] sdg1[6] sdf1[5] sde1[11] sdd1[3] sdc1[10] sdb1[9] sdi1[12](S)\n      \
5853468288 blocks super 1.2 level 6, 64k chunk, algorithm 2 [8/8] [UUUUUUUU]\n      \n\
md127 : active raid1 sdi2[0] sdj2[1](F)\n      312319552 blocks [2/1] [U_]\n      \n\
md6 : active raid1 sdb2[2] sda2[0]\n      195310144 blocks [2/1] [U_]\n      \
[=>...................]  recovery =  8.5% (16775552/195310144) finish=17.0min speed=259783K/sec\n      \n\
md8 : active raid1 sdb1[1] sda1[0]\n      195310144 blocks [2/2] [UU]\n      \
resync=DELAYED\n      \n\
md7 : inactive sdb1[0](S)\n      976760640 blocks super 1.2\n       \n\
md0 : active raid0 sdb[1] sda[0]\n      1953262592 blocks super 1.2 512k chunks\n      \
bitmap: 0/8 pages [0KB], 65536KB chunk\n\nunused devices: <none>\n";
        let p = Patterns::new();
        let md = parse(&p, text).unwrap();
        assert_eq!(md.len(), 6);
        assert_eq!(
            (md[0].active, md[0].total, md[0].spare, md[0].synced),
            (8, 8, 1, 5853468288)
        );
        assert_eq!((md[1].active, md[1].failed), (1, 1));
        assert_eq!(
            (md[2].state.as_str(), md[2].synced),
            ("recovering", 16775552)
        );
        assert_eq!((md[3].state.as_str(), md[3].synced), ("resyncing", 0));
        assert_eq!(
            (md[4].state.as_str(), md[4].total, md[4].blocks),
            ("inactive", 0, 976760640)
        );
        assert_eq!((md[5].active, md[5].total), (2, 2));
        assert!(parse(&p, "md0 : active raid1 sda[0]\n").is_err());
        assert!(parse(&p, "md0 : active\n  x blocks\n\n\n").is_err());
    }
}
