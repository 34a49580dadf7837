//! Notifications: DriftReport status transitions sent to the receivers of NotificationPolicies
//! (docs/notifications.md).
//!
//! [`detect`] decides (pure), [`payload`] renders (pure), [`controller`] watches, sends and
//! keeps the delivery state in each policy's status.

pub mod controller;
pub mod detect;
pub mod payload;
