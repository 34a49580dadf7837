//! The Driftless node agent (`driftless`): configuration loading, facts, and the agent's HTTP
//! endpoints. The same binary runs as a DaemonSet (`--root /host`) and on a plain host.

pub mod apply;
pub mod audit;
pub use driftless_crds::backoff;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod drift;
pub mod events;
pub mod facts;
pub mod host;
pub mod logs;
pub mod metrics;
pub mod plugins;
pub mod process;
pub mod s3;
pub mod server;
pub mod status;
pub mod topology;
