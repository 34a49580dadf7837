//! Node facts and metrics: what the host is ([`inventory`]) and how it is doing
//! ([`collectors`], node_exporter-compatible), thresholds on the metrics ([`thresholds`]), the
//! node's report of breached thresholds ([`report`]) and snapshots pushed to S3 ([`s3push`]).
//! Everything is read from the host's files through [`HostPaths`](crate::host::HostPaths), so it
//! reports the host, not the container, in a DaemonSet.

pub mod collectors;
pub mod inventory;
pub mod report;
pub mod runtime;
pub mod s3push;
pub mod thresholds;

pub use collectors::Scraper;
