//! Driftless API types, group `driftless.dev`, version `v1alpha1`.
//!
//! One module per kind. The same types are read by the operator and the node agent from the
//! Kubernetes API, and by the standalone agent from files ([`resource::Resource`]). The CRD YAML
//! checked into the repository is generated from them by [`generate`]; a test fails when a
//! checked-in copy is stale.

pub mod apply_policy;
pub mod backoff;
pub mod common;
pub mod cron;
pub mod drift_report;
pub mod drift_scan;
pub mod facts_policy;
pub mod generate;
pub mod log_pipeline;
pub mod notification_policy;
pub mod one_of;
pub mod plugin;
pub mod rbac;
pub mod resource;
pub mod secret;
pub mod time;
pub mod validate;
pub mod yaml;

pub use apply_policy::{ApplyPolicy, ApplyPolicySpec, ApplyPolicyStatus};
pub use drift_report::{DriftReport, DriftReportSpec, DriftReportStatus};
pub use drift_scan::{DriftScan, DriftScanSpec, DriftScanStatus};
pub use facts_policy::{FactsPolicy, FactsPolicySpec, FactsPolicyStatus};
pub use log_pipeline::{LogPipeline, LogPipelineSpec, LogPipelineStatus};
pub use notification_policy::{
    NotificationPolicy, NotificationPolicySpec, NotificationPolicyStatus,
};

/// The API group.
pub const GROUP: &str = "driftless.dev";
/// The API version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every Driftless resource.
pub const API_VERSION: &str = "driftless.dev/v1alpha1";
