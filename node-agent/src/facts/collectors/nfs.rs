//! `nfs`: NFS client RPC statistics from `/proc/net/rpc/nfs`, as node_exporter reads them:
//! packets and connections, RPCs, retransmissions, authentication refreshes, and requests per
//! protocol version and procedure (`node_nfs_requests_total{proto,method}`; a version the kernel
//! does not list is exported as zeros, as there). A host without the NFS client is "no data".
//!
//! Lines this parser does not know are skipped; node_exporter 1.5 fails the collector on them
//! (see docs/decisions.md).

use std::path::PathBuf;

use super::kfiles::{failed, io_error, parse_u64};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Nfs {
    path: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Nfs {
        path: settings.paths.proc("net/rpc/nfs"),
    }))
}

/// NFSv2 procedures, in the kernel's order (the `method` label).
pub(crate) const V2: [&str; 18] = [
    "Null", "GetAttr", "SetAttr", "Root", "Lookup", "ReadLink", "Read", "WrCache", "Write",
    "Create", "Remove", "Rename", "Link", "SymLink", "MkDir", "RmDir", "ReadDir", "FsStat",
];

/// NFSv3 procedures.
pub(crate) const V3: [&str; 22] = [
    "Null",
    "GetAttr",
    "SetAttr",
    "Lookup",
    "Access",
    "ReadLink",
    "Read",
    "Write",
    "Create",
    "MkDir",
    "SymLink",
    "MkNod",
    "Remove",
    "RmDir",
    "Rename",
    "Link",
    "ReadDir",
    "ReadDirPlus",
    "FsStat",
    "FsInfo",
    "PathConf",
    "Commit",
];

/// NFSv4 client operations.
const V4: [&str; 59] = [
    "Null",
    "Read",
    "Write",
    "Commit",
    "Open",
    "OpenConfirm",
    "OpenNoattr",
    "OpenDowngrade",
    "Close",
    "Setattr",
    "FsInfo",
    "Renew",
    "SetClientID",
    "SetClientIDConfirm",
    "Lock",
    "Lockt",
    "Locku",
    "Access",
    "Getattr",
    "Lookup",
    "LookupRoot",
    "Remove",
    "Rename",
    "Link",
    "Symlink",
    "Create",
    "Pathconf",
    "StatFs",
    "ReadLink",
    "ReadDir",
    "ServerCaps",
    "DelegReturn",
    "GetACL",
    "SetACL",
    "FsLocations",
    "ReleaseLockowner",
    "Secinfo",
    "FsidPresent",
    "ExchangeID",
    "CreateSession",
    "DestroySession",
    "Sequence",
    "GetLeaseTime",
    "ReclaimComplete",
    "LayoutGet",
    "GetDeviceInfo",
    "LayoutCommit",
    "LayoutReturn",
    "SecinfoNoName",
    "TestStateID",
    "FreeStateID",
    "GetDeviceList",
    "BindConnToSession",
    "DestroyClientID",
    "Seek",
    "Allocate",
    "DeAllocate",
    "LayoutStats",
    "Clone",
];

/// The lines of an RPC statistics file: label and values, for the labels `known` accepts.
/// Every line needs a label and a value; values are unsigned decimals (`th` keeps its first
/// two, the rest of that line are not integers).
pub(crate) fn parse_lines<'a>(
    text: &'a str,
    known: &[&str],
) -> Result<Vec<(&'a str, Vec<u64>)>, String> {
    let mut lines = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(label), Some(_)) = (parts.next(), parts.clone().next()) else {
            return Err(format!("invalid metric line {line:?}"));
        };
        if !known.contains(&label) {
            continue;
        }
        let take = if label == "th" { 2 } else { usize::MAX };
        let raw: Vec<&str> = parts.take(take).collect();
        if label == "th" && raw.len() < 2 {
            return Err(format!("invalid th metric line {line:?}"));
        }
        let values = raw
            .iter()
            .map(|v| {
                parse_u64(v, 10).ok_or_else(|| format!("{v:?} in line {line:?} is not a number"))
            })
            .collect::<Result<Vec<u64>, String>>()?;
        lines.push((label, values));
    }
    Ok(lines)
}

/// Checks a `procN COUNT v1 v2 ...` line: COUNT values follow, at least `min`; returns them.
pub(crate) fn counted(label: &str, values: &[u64], min: usize) -> Result<Vec<u64>, String> {
    let (count, rest) = values.split_first().unwrap_or((&0, &[]));
    if usize::try_from(*count).ok() != Some(rest.len()) || rest.len() < min {
        return Err(format!("invalid {label} line {values:?}"));
    }
    Ok(rest.to_vec())
}

/// Checks that a line has exactly `n` values.
pub(crate) fn exactly(label: &str, values: Vec<u64>, n: usize) -> Result<Vec<u64>, String> {
    if values.len() != n {
        return Err(format!("invalid {label} line {values:?}"));
    }
    Ok(values)
}

/// The client's statistics: net, rpc, and per-version procedure counts (zeros when absent).
#[derive(Debug, Default, PartialEq)]
pub struct ClientStats {
    /// `net`: packets, udp, tcp, tcp connections.
    pub net: Vec<u64>,
    /// `rpc`: calls, retransmissions, authentication refreshes.
    pub rpc: Vec<u64>,
    /// Procedures per version, in [`V2`], [`V3`] and `V4` order.
    pub procs: [Vec<u64>; 3],
}

/// Parses `/proc/net/rpc/nfs`.
pub fn parse(text: &str) -> Result<ClientStats, String> {
    let mut stats = ClientStats {
        net: vec![0; 4],
        rpc: vec![0; 3],
        procs: [vec![0; V2.len()], vec![0; V3.len()], vec![0; V4.len()]],
    };
    for (label, values) in parse_lines(text, &["net", "rpc", "proc2", "proc3", "proc4"])? {
        match label {
            "net" => stats.net = exactly(label, values, 4)?,
            "rpc" => stats.rpc = exactly(label, values, 3)?,
            "proc2" => stats.procs[0] = counted(label, &values, V2.len())?,
            "proc3" => stats.procs[1] = counted(label, &values, V3.len())?,
            _ => {
                // Older kernels list fewer NFSv4 operations: the rest count as zero.
                let mut v = counted(label, &values, 0)?;
                v.resize(v.len().max(V4.len()), 0);
                stats.procs[2] = v;
            }
        }
    }
    Ok(stats)
}

impl Collector for Nfs {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| io_error(&self.path, &e))?;
        let s = parse(&text).map_err(|e| failed(&self.path, e))?;
        let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or_default() as f64;
        let mut packets = Family::new(
            "node_nfs_packets_total",
            "Total NFSd network packets (sent+received) by protocol type.",
            Kind::Counter,
        );
        packets.push(vec![("protocol", "udp".into())], at(&s.net, 1));
        packets.push(vec![("protocol", "tcp".into())], at(&s.net, 2));
        out.push(packets);
        out.push(Family::single(
            "node_nfs_connections_total",
            "Total number of NFSd TCP connections.",
            Kind::Counter,
            at(&s.net, 3),
        ));
        out.push(Family::single(
            "node_nfs_rpcs_total",
            "Total number of RPCs performed.",
            Kind::Counter,
            at(&s.rpc, 0),
        ));
        out.push(Family::single(
            "node_nfs_rpc_retransmissions_total",
            "Number of RPC transmissions performed.",
            Kind::Counter,
            at(&s.rpc, 1),
        ));
        out.push(Family::single(
            "node_nfs_rpc_authentication_refreshes_total",
            "Number of RPC authentication refreshes performed.",
            Kind::Counter,
            at(&s.rpc, 2),
        ));
        let mut requests = Family::new(
            "node_nfs_requests_total",
            "Number of NFS procedures invoked.",
            Kind::Counter,
        );
        let versions: [(&str, &[&str]); 3] = [("2", &V2), ("3", &V3), ("4", &V4)];
        for ((proto, names), values) in versions.into_iter().zip(&s.procs) {
            for (i, method) in names.iter().enumerate() {
                requests.push(
                    vec![("method", (*method).into()), ("proto", proto.into())],
                    at(values, i),
                );
            }
        }
        out.push(requests);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_statistics_and_refuses_bad_lines() {
        let text = "net 18628 0 18628 6\nrpc 4329785 0 4338291\n\
proc3 22 1 4084749 29200 94754 32580 186 47747 7840 2 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
proc4 3 0 1 2\n";
        let s = parse(text).unwrap();
        assert_eq!(s.net, [18628, 0, 18628, 6]);
        assert_eq!(s.procs[0], vec![0; 18]);
        assert_eq!(s.procs[1][1], 4084749);
        assert_eq!(s.procs[2].len(), 59);
        assert_eq!(s.procs[2][2], 2);
        assert!(parse("net 1 2 3\n").is_err());
        assert!(parse("proc3 22 1 2\n").is_err());
        assert!(parse("rpc x 1 2\n").is_err());
        assert!(parse("rpc\n").is_err());
        // Lines of newer kernels are skipped.
        assert!(parse("net 1 2 3 4\nfuture 1 2\n").is_ok());
    }
}
