//! Status and rollout of ApplyPolicies, FactsPolicies and LogPipelines, counted from the nodes'
//! reports.
//!
//! - [`status`]: the pure computation of a policy's status from the Nodes and the node
//!   DriftReports;
//! - [`revisions`]: ApplyPolicy revisions as ControllerRevisions (content hash, numbering,
//!   history limit);
//! - [`rollout`]: the pure rollout planner (which node may run which revision);
//! - [`controller`]: the caches (watches), the debounced recompute, the revision and
//!   assignment writes and the status writes;
//! - [`metrics`]: Prometheus metrics.

pub mod controller;
pub mod metrics;
pub mod revisions;
pub mod rollout;
pub mod status;
