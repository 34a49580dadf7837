//! Events about the node (a failed apply, a refused policy, a threshold breach). The parts that
//! see them emit them here; in a cluster they become Kubernetes Events on the Node
//! ([`crate::cluster::events`]), standalone they are only logged.
//!
//! Emitting never blocks: at most [`QUEUE`] events wait; more are dropped and counted.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

/// Most events waiting to be written.
pub const QUEUE: usize = 256;

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Something went as it should (a threshold cleared).
    Normal,
    /// Someone should look.
    Warning,
}

/// One event about the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEvent {
    /// Normal or Warning.
    pub severity: Severity,
    /// CamelCase reason (`ApplyFailed`, `PolicyRefused`, `ThresholdBreached`).
    pub reason: &'static str,
    /// What the agent was doing (`Apply`, `Load`, `Evaluate`).
    pub action: &'static str,
    /// Human text, secrets already redacted. Events with the same reason and note are one
    /// Event with a count.
    pub note: String,
}

/// Where events go.
#[derive(Debug, Default)]
pub struct Events {
    tx: Option<mpsc::Sender<NodeEvent>>,
    dropped: AtomicU64,
}

impl Events {
    /// Events that are only logged.
    pub fn logged() -> Self {
        Self::default()
    }

    /// Events sent to `tx` (and logged).
    pub fn to_channel(tx: mpsc::Sender<NodeEvent>) -> Self {
        Self {
            tx: Some(tx),
            dropped: AtomicU64::new(0),
        }
    }

    /// A channel of the right size.
    pub fn channel() -> (mpsc::Sender<NodeEvent>, mpsc::Receiver<NodeEvent>) {
        mpsc::channel(QUEUE)
    }

    /// Emits an event; never blocks.
    pub fn emit(&self, event: NodeEvent) {
        if let Some(tx) = &self.tx {
            if tx.try_send(event).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
