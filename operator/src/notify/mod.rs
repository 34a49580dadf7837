//! Notifications: DriftReport status transitions sent to the receivers of NotificationPolicies
//! (docs/notifications.md).
//!
//! [`detect`] decides (pure), [`payload`] renders (pure), [`email`] builds and submits
//! e-mails, [`controller`] watches, sends and keeps the delivery state in each policy's status.

pub mod controller;
pub mod detect;
pub mod email;
pub mod payload;
