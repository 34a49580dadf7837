//! `nfsd`: NFS server statistics from `/proc/net/rpc/nfsd`, as node_exporter reads them: reply
//! cache, stale file handles, bytes read and written, threads, read-ahead cache, packets,
//! connections, RPC errors, and requests per protocol version and operation. A line the
//! kernel does not write is exported as zeros; a host without an NFS server is "no data".
//! Lines this parser does not know are skipped (see docs/decisions.md).

use std::path::PathBuf;

use super::kfiles::{failed, io_error};
use super::nfs::{counted, exactly, parse_lines, V2, V3};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Nfsd {
    path: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Nfsd {
        path: settings.paths.proc("net/rpc/nfsd"),
    }))
}

/// NFSv4 operations of the `proc4ops` line, in the kernel's order; `None` for slots
/// node_exporter does not export.
const V4_OPS: [Option<&str>; 38] = [
    None,
    None,
    None,
    Some("Access"),
    Some("Close"),
    Some("Commit"),
    Some("Create"),
    Some("DelegPurge"),
    Some("DelegReturn"),
    Some("GetAttr"),
    Some("GetFH"),
    Some("Link"),
    Some("Lock"),
    Some("Lockt"),
    Some("Locku"),
    Some("Lookup"),
    Some("LookupRoot"),
    Some("Nverify"),
    Some("Open"),
    Some("OpenAttr"),
    Some("OpenConfirm"),
    Some("OpenDgrd"),
    Some("PutFH"),
    None,
    None,
    Some("Read"),
    Some("ReadDir"),
    Some("ReadLink"),
    Some("Remove"),
    Some("Rename"),
    Some("Renew"),
    Some("RestoreFH"),
    Some("SaveFH"),
    Some("SecInfo"),
    Some("SetAttr"),
    Some("Verify"),
    Some("Write"),
    Some("RelLockOwner"),
];

/// The server's lines by label; absent lines are zeros of the right length.
#[derive(Debug, PartialEq)]
pub struct ServerStats {
    /// `rc`: hits, misses, nocache.
    pub rc: Vec<u64>,
    /// `fh`: stale, ...
    pub fh: Vec<u64>,
    /// `io`: read, written.
    pub io: Vec<u64>,
    /// `th`: threads, full count.
    pub th: Vec<u64>,
    /// `ra`: cache size, histogram (10), not found.
    pub ra: Vec<u64>,
    /// `net`: packets, udp, tcp, tcp connections.
    pub net: Vec<u64>,
    /// `rpc`: calls, bad, bad format, bad auth, bad client.
    pub rpc: Vec<u64>,
    /// `proc2`, `proc3`, `proc4ops` values after the count.
    pub procs: [Vec<u64>; 3],
}

/// Parses `/proc/net/rpc/nfsd`.
pub fn parse(text: &str) -> Result<ServerStats, String> {
    let mut s = ServerStats {
        rc: vec![0; 3],
        fh: vec![0; 5],
        io: vec![0; 2],
        th: vec![0; 2],
        ra: vec![0; 12],
        net: vec![0; 4],
        rpc: vec![0; 5],
        procs: [vec![0; V2.len()], vec![0; V3.len()], vec![0; V4_OPS.len()]],
    };
    let known = [
        "rc", "fh", "io", "th", "ra", "net", "rpc", "proc2", "proc3", "proc4", "proc4ops",
    ];
    for (label, values) in parse_lines(text, &known)? {
        match label {
            "rc" => s.rc = exactly(label, values, 3)?,
            "fh" => s.fh = exactly(label, values, 5)?,
            "io" => s.io = exactly(label, values, 2)?,
            "th" => s.th = exactly(label, values, 2)?,
            "ra" => s.ra = exactly(label, values, 12)?,
            "net" => s.net = exactly(label, values, 4)?,
            "rpc" => s.rpc = exactly(label, values, 5)?,
            "proc2" => s.procs[0] = counted(label, &values, V2.len())?,
            "proc3" => s.procs[1] = counted(label, &values, V3.len())?,
            // NFSv4 null and compound: checked, not exported.
            "proc4" => {
                exactly(label, counted(label, &values, 2)?, 2)?;
            }
            _ => s.procs[2] = counted(label, &values, 39)?,
        }
    }
    Ok(s)
}

/// (family, help, kind, line, index) of the unlabelled families.
const SINGLES: &[(&str, &str, Kind, usize, usize)] = &[
    (
        "node_nfsd_reply_cache_hits_total",
        "Total number of NFSd Reply Cache hits (client lost server response).",
        Kind::Counter,
        0,
        0,
    ),
    (
        "node_nfsd_reply_cache_misses_total",
        "Total number of NFSd Reply Cache an operation that requires caching (idempotent).",
        Kind::Counter,
        0,
        1,
    ),
    (
        "node_nfsd_reply_cache_nocache_total",
        "Total number of NFSd Reply Cache non-idempotent operations (rename/delete/…).",
        Kind::Counter,
        0,
        2,
    ),
    (
        "node_nfsd_file_handles_stale_total",
        "Total number of NFSd stale file handles",
        Kind::Counter,
        1,
        0,
    ),
    (
        "node_nfsd_disk_bytes_read_total",
        "Total NFSd bytes read.",
        Kind::Counter,
        2,
        0,
    ),
    (
        "node_nfsd_disk_bytes_written_total",
        "Total NFSd bytes written.",
        Kind::Counter,
        2,
        1,
    ),
    (
        "node_nfsd_server_threads",
        "Total number of NFSd kernel threads that are running.",
        Kind::Gauge,
        3,
        0,
    ),
    (
        "node_nfsd_read_ahead_cache_size_blocks",
        "How large the read ahead cache is in blocks.",
        Kind::Gauge,
        4,
        0,
    ),
    (
        "node_nfsd_read_ahead_cache_not_found_total",
        "Total number of NFSd read ahead cache not found.",
        Kind::Counter,
        4,
        11,
    ),
    (
        "node_nfsd_connections_total",
        "Total number of NFSd TCP connections.",
        Kind::Counter,
        5,
        3,
    ),
    (
        "node_nfsd_server_rpcs_total",
        "Total number of NFSd RPCs.",
        Kind::Counter,
        6,
        0,
    ),
];

fn export(s: &ServerStats, out: &mut Vec<Family>) {
    let lines: [&[u64]; 7] = [&s.rc, &s.fh, &s.io, &s.th, &s.ra, &s.net, &s.rpc];
    let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or_default() as f64;
    for (name, help, kind, line, index) in SINGLES {
        let values = lines.get(*line).copied().unwrap_or_default();
        out.push(Family::single(*name, *help, *kind, at(values, *index)));
    }
    let mut packets = Family::new(
        "node_nfsd_packets_total",
        "Total NFSd network packets (sent+received) by protocol type.",
        Kind::Counter,
    );
    packets.push(vec![("proto", "udp".into())], at(&s.net, 1));
    packets.push(vec![("proto", "tcp".into())], at(&s.net, 2));
    out.push(packets);
    let mut errors = Family::new(
        "node_nfsd_rpc_errors_total",
        "Total number of NFSd RPC errors by error type.",
        Kind::Counter,
    );
    for (label, i) in [("fmt", 2), ("auth", 3), ("cInt", 4)] {
        errors.push(vec![("error", label.into())], at(&s.rpc, i));
    }
    out.push(errors);
    let mut requests = Family::new(
        "node_nfsd_requests_total",
        "Total number NFSd Requests by method and protocol.",
        Kind::Counter,
    );
    let mut push = |proto: &str, method: &str, values: &[u64], i: usize| {
        let labels = vec![("method", method.to_owned()), ("proto", proto.to_owned())];
        requests.push(labels, at(values, i));
    };
    // node_exporter leaves out the NULL procedures.
    for (i, method) in V2.iter().enumerate().skip(1) {
        push("2", method, &s.procs[0], i);
    }
    for (i, method) in V3.iter().enumerate().skip(1) {
        push("3", method, &s.procs[1], i);
    }
    for (i, method) in V4_OPS.iter().enumerate() {
        if let Some(method) = method {
            push("4", method, &s.procs[2], i);
        }
    }
    out.push(requests);
}

impl Collector for Nfsd {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| io_error(&self.path, &e))?;
        let stats = parse(&text).map_err(|e| failed(&self.path, e))?;
        export(&stats, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_statistics() {
        let text = "rc 0 6 18622\nfh 0 0 0 0 0\nio 157286400 0\n\
th 8 0 0.000 0.000 0.000 0.000 0.000 0.000 0.000 0.000 0.000 0.000\n\
ra 32 0 0 0 0 0 0 0 0 0 0 0\nnet 18628 0 18628 6\nrpc 18628 0 0 0 0\n\
proc2 18 2 69 0 0 4410 0 0 0 0 0 0 0 0 0 0 0 99 2\n\
proc3 22 2 112 0 2719 111 0 0 0 0 0 0 0 0 0 0 0 27 216 0 2 1 0\n\
proc4 2 2 10853\n\
proc4ops 72 0 0 0 1098 2 0 0 0 0 8179 5896 0 0 0 0 5900 0 0 2 0 2 0 9609 0 2 150 1272 0 0 0 1236 0 0 0 0 3 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let s = parse(text).unwrap();
        assert_eq!(s.th, [8, 0]);
        assert_eq!(s.procs[2][3], 1098);
        assert_eq!(s.procs[2].len(), 72);
        assert!(parse("proc4 3 1 2 3\n").is_err());
        assert!(parse("proc4ops 2 1 2\n").is_err());
        assert!(parse("ra 1 2\n").is_err());
        assert!(parse("th 8\n").is_err());
    }
}
