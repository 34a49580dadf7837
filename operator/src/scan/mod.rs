//! DriftScan: scheduled drift detection of IaC stacks, run as Kubernetes Jobs.
//!
//! - [`queue`]: the global priority queue and the queue-depth batching formula;
//! - [`scheduler`]: the pure decision function over observed state;
//! - [`triggers`]: schedule, annotation;
//! - [`controller`]: watches, the decide-act loop, Job and status writes, leader election;
//! - [`tenancy`]: which DriftScans the operator acts on, and what they may make it do;
//! - [`webhook`]: the HTTP trigger and status API;
//! - [`metrics`]: Prometheus metrics.

pub mod controller;
pub mod metrics;
pub mod queue;
pub mod scheduler;
pub mod tenancy;
pub mod triggers;
pub mod webhook;
