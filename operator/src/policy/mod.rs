//! Status of ApplyPolicies, FactsPolicies and LogPipelines, counted from the nodes' reports.
//!
//! - [`status`]: the pure computation of a policy's status from the Nodes and the node
//!   DriftReports;
//! - [`controller`]: the caches (watches), the debounced recompute and the status writes;
//! - [`metrics`]: Prometheus metrics.

pub mod controller;
pub mod metrics;
pub mod status;
