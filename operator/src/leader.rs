//! Leader election over the `coordination.k8s.io/v1` Lease [`LEASE_NAME`] in the operator's
//! namespace, safe against clock skew between replicas (the design of client-go's
//! `leaderelection` package).
//!
//! A candidate never compares a time written by another replica with its own clock. It
//! remembers when, on its own monotonic clock, it last saw the Lease change (a new
//! `resourceVersion` or record), and holds the holder's lease as valid until
//! `leaseDurationSeconds` have passed on that clock since. The times a holder writes
//! (`renewTime`, `acquireTime`) are for people reading the Lease; here they only mark changes.
//!
//! The holder measures its own term from the moment it *sent* its last successful write, and
//! stops leading [`Config::renew_deadline`] after it, which is shorter than the lease duration.
//! A candidate starts counting no earlier than the moment it saw that write, so the holder has
//! stopped before anyone may take over.
//!
//! Guarantees:
//! - At most one replica holds the Lease in the API server at any time: every write carries
//!   the `resourceVersion` it was decided on, so of two racing candidates one gets `409`.
//! - A replica's [`Leadership::is_leader`] turns false by itself once the renew deadline passed
//!   without a successful renewal, even while a request hangs; losing the Lease is final for the
//!   [`LeaderElector`] (the operator then exits and is restarted as a follower).
//! - A graceful stop ([`LeaderElector::release`]) clears `holderIdentity` and sets a 1 s lease,
//!   so a follower takes over at its next retry instead of waiting out the lease.
//!
//! Assumptions: the replicas' clocks run at the same *rate* (within the margin between the
//! renew deadline and the lease duration, 5 s of 15 s by default); their wall-clock *times* may
//! differ by any amount.
//!
//! Caveats: a replica frozen (stopped, swapped out) in the middle of a reconcile, after it
//! checked that it leads, can still send that one write when it resumes; Lease election has no
//! fencing token, in client-go as here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use driftless_crds::time::micro_time;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;
use tokio::time::Instant;

/// Name of the leader-election Lease in the operator's namespace.
pub const LEASE_NAME: &str = "driftless-operator";

/// Tells whether this replica may act (holds the leader Lease, or election is off).
pub type IsLeader = Arc<dyn Fn() -> bool + Send + Sync>;

/// Timing and identity of one candidate.
#[derive(Clone, Debug)]
pub struct Config {
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's identity, written as `holderIdentity` (the pod name).
    pub identity: String,
    /// How long a follower waits, from the last change it saw, before it takes over.
    pub lease_duration: Duration,
    /// How long the leader keeps leading after the start of its last successful renewal.
    pub renew_deadline: Duration,
    /// Pause between two attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Config {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Checks `retry period < renew deadline < lease duration` and a non-empty identity.
    pub fn validate(&self) -> Result<(), String> {
        if self.identity.is_empty() {
            return Err("the leader-election identity is empty".into());
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(format!(
                "--retry-period-seconds ({}) must be at least 1 and less than --renew-deadline-seconds ({})",
                self.retry_period.as_secs(),
                self.renew_deadline.as_secs()
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "--renew-deadline-seconds ({}) must be less than --lease-duration-seconds ({}), or two replicas could lead at once",
                self.renew_deadline.as_secs(),
                self.lease_duration.as_secs()
            ));
        }
        Ok(())
    }

    /// Longest a single Lease request may take.
    fn request_timeout(&self) -> Duration {
        self.renew_deadline / 2
    }
}

/// The election fields of a Lease.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    /// `holderIdentity`; empty or absent means free.
    pub holder: Option<String>,
    /// `leaseDurationSeconds` as the holder wrote it.
    pub lease_duration_seconds: Option<i32>,
    /// `acquireTime` (the holder's clock; never compared with ours).
    pub acquire_time: Option<MicroTime>,
    /// `renewTime` (the holder's clock; never compared with ours).
    pub renew_time: Option<MicroTime>,
    /// `leaseTransitions`.
    pub transitions: i32,
}

impl Record {
    /// The record of `lease`.
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            lease_duration_seconds: spec.lease_duration_seconds,
            acquire_time: spec.acquire_time,
            renew_time: spec.renew_time,
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }
}

/// The Lease as a candidate last saw it, and when it last saw it change.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The election fields.
    pub record: Record,
    /// The object's `resourceVersion`: any write changes it.
    pub resource_version: Option<String>,
    /// On this candidate's monotonic clock: when it first saw this record and version.
    pub since: Instant,
}

/// Updates what a candidate knows from a freshly read Lease at `now`: the time of the last
/// change moves only when the Lease changed.
pub fn observe(previous: Option<&Observed>, lease: &Lease, now: Instant) -> Observed {
    let record = Record::of(lease);
    let resource_version = lease.metadata.resource_version.clone();
    let since = match previous {
        Some(p) if p.record == record && p.resource_version == resource_version => p.since,
        _ => now,
    };
    Observed {
        record,
        resource_version,
        since,
    }
}

/// What a candidate does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// There is no Lease: create it, holding it.
    Create,
    /// We hold the Lease: renew it.
    Renew,
    /// The Lease is free (released) or its holder's lease ran out on our clock: take it.
    TakeOver,
    /// Another replica holds a valid lease that runs out in `expires_in` on our clock.
    Wait {
        /// The holder.
        holder: String,
        /// Time left on our clock.
        expires_in: Duration,
    },
}

/// Decides from what was observed (`None`: no Lease exists) at `now`. Pure: reads no clock.
pub fn decide(config: &Config, observed: Option<&Observed>, now: Instant) -> Action {
    let Some(observed) = observed else {
        return Action::Create;
    };
    let Some(holder) = observed.record.holder.as_deref() else {
        return Action::TakeOver;
    };
    if holder == config.identity {
        return Action::Renew;
    }
    let duration = observed
        .record
        .lease_duration_seconds
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s as u64))
        .unwrap_or(config.lease_duration);
    let expires = observed.since + duration;
    if now >= expires {
        Action::TakeOver
    } else {
        Action::Wait {
            holder: holder.to_owned(),
            expires_in: expires - now,
        }
    }
}

/// Whether a leader whose last successful write was sent at `renewed` still leads at `now`.
pub fn still_leading(config: &Config, renewed: Instant, now: Instant) -> bool {
    now < renewed + config.renew_deadline
}

/// How long to sleep after `action`: the retry period, or less when a lease runs out sooner.
pub fn next_attempt(config: &Config, action: &Action) -> Duration {
    match action {
        Action::Wait { expires_in, .. } => config.retry_period.min(*expires_in),
        _ => config.retry_period,
    }
}

/// The record written to hold the Lease: a renewal keeps `acquireTime` and the transition
/// count, a takeover starts a new term.
pub fn held_record(
    config: &Config,
    previous: Option<&Record>,
    wall: chrono::DateTime<Utc>,
) -> LeaseSpec {
    let renewing = previous.is_some_and(|r| r.holder.as_deref() == Some(&config.identity));
    let transitions = previous.map(|r| r.transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(config.lease_duration.as_secs() as i32),
        acquire_time: if renewing {
            previous.and_then(|r| r.acquire_time.clone())
        } else {
            Some(micro_time(wall))
        },
        renew_time: Some(micro_time(wall)),
        lease_transitions: Some(if renewing || previous.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..Default::default()
    }
}

/// A read-only view of this replica's leadership, shared with the controllers.
#[derive(Clone)]
pub struct Leadership {
    /// `Some(t)`: leading until `t` (monotonic) unless renewed; `None`: not leading.
    until: Arc<Mutex<Option<Instant>>>,
    /// Always leading (election off).
    always: bool,
    changes: watch::Receiver<bool>,
}

impl Leadership {
    /// Leadership of a replica that does not take part in election: always leading.
    pub fn always() -> Self {
        let (_, changes) = watch::channel(true);
        Self {
            until: Arc::new(Mutex::new(None)),
            always: true,
            changes,
        }
    }

    /// Whether this replica leads now (turns false by itself at the renew deadline).
    pub fn is_leader(&self) -> bool {
        self.always
            || self
                .until
                .lock()
                .map(|u| u.is_some_and(|t| Instant::now() < t))
                .unwrap_or(false)
    }

    /// [`Self::is_leader`] as the closure the controllers take.
    pub fn is_leader_fn(&self) -> IsLeader {
        let this = self.clone();
        Arc::new(move || this.is_leader())
    }

    /// Waits until this replica becomes the leader (at once if it is).
    pub async fn acquired(&self) {
        let mut changes = self.changes.clone();
        let _ = changes.wait_for(|leading| *leading).await;
    }
}

/// Why [`LeaderElector::run`] returned.
#[derive(Debug, thiserror::Error)]
pub enum Lost {
    /// No renewal succeeded within the renew deadline.
    #[error("could not renew the Lease {namespace}/{LEASE_NAME} within {deadline:?}")]
    RenewDeadline {
        /// The Lease's namespace.
        namespace: String,
        /// The renew deadline.
        deadline: Duration,
    },
    /// Another replica holds the Lease.
    #[error("the Lease {namespace}/{LEASE_NAME} is held by {holder}")]
    TakenOver {
        /// The Lease's namespace.
        namespace: String,
        /// The new holder.
        holder: String,
    },
}

/// The candidate: reads and writes the Lease, and updates the [`Leadership`] it hands out.
pub struct LeaderElector {
    api: Api<Lease>,
    config: Config,
    observed: Option<Observed>,
    /// The Lease as last read or written (for the `resourceVersion` of the next write).
    lease: Option<Lease>,
    /// Start of the last successful write while leading.
    renewed: Option<Instant>,
    until: Arc<Mutex<Option<Instant>>>,
    changes: watch::Sender<bool>,
}

impl LeaderElector {
    /// A candidate for the Lease in `config.namespace`.
    pub fn new(client: Client, config: Config) -> Self {
        let (changes, _) = watch::channel(false);
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            lease: None,
            renewed: None,
            until: Arc::new(Mutex::new(None)),
            changes,
        }
    }

    /// The view the controllers read.
    pub fn leadership(&self) -> Leadership {
        Leadership {
            until: self.until.clone(),
            always: false,
            changes: self.changes.subscribe(),
        }
    }

    /// Whether this candidate leads now.
    pub fn is_leader(&self) -> bool {
        self.renewed
            .is_some_and(|r| still_leading(&self.config, r, Instant::now()))
    }

    fn set_leading(&mut self, renewed: Option<Instant>) {
        let was = self.is_leader();
        self.renewed = renewed;
        if let Ok(mut until) = self.until.lock() {
            *until = renewed.map(|r| r + self.config.renew_deadline);
        }
        let now = self.is_leader();
        if was != now {
            tracing::info!(
                leading = now,
                identity = %self.config.identity,
                lease = %format!("{}/{LEASE_NAME}", self.config.namespace),
                "leadership changed"
            );
        }
        self.changes.send_replace(now);
    }

    /// Runs the election until this replica, having led, loses the Lease. Never returns
    /// while following.
    pub async fn run(&mut self) -> Lost {
        loop {
            let pause = match self.step().await {
                Ok(pause) => pause,
                Err(lost) => {
                    self.set_leading(None);
                    return lost;
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// One attempt: read the Lease, decide, write if the decision says so. Returns how long
    /// to wait before the next attempt, or why leadership was lost.
    pub async fn step(&mut self) -> Result<Duration, Lost> {
        let retry = self.config.retry_period;
        let read =
            tokio::time::timeout(self.config.request_timeout(), self.api.get_opt(LEASE_NAME)).await;
        let now = Instant::now();
        let lease = match read {
            Ok(Ok(lease)) => lease,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "cannot read the leader Lease");
                return self.check_deadline().map(|()| retry);
            }
            Err(_) => {
                tracing::warn!("reading the leader Lease timed out");
                return self.check_deadline().map(|()| retry);
            }
        };
        self.observed = lease
            .as_ref()
            .map(|l| observe(self.observed.as_ref(), l, now));
        self.lease = lease;
        let action = decide(&self.config, self.observed.as_ref(), now);
        match &action {
            Action::Wait { holder, .. } => {
                if self.renewed.is_some() {
                    return Err(Lost::TakenOver {
                        namespace: self.config.namespace.clone(),
                        holder: holder.clone(),
                    });
                }
            }
            Action::Create | Action::Renew | Action::TakeOver => self.write(&action).await,
        }
        self.check_deadline()?;
        Ok(next_attempt(&self.config, &action))
    }

    /// Fails once a leader is past its renew deadline.
    fn check_deadline(&mut self) -> Result<(), Lost> {
        match self.renewed {
            Some(r) if !still_leading(&self.config, r, Instant::now()) => {
                Err(Lost::RenewDeadline {
                    namespace: self.config.namespace.clone(),
                    deadline: self.config.renew_deadline,
                })
            }
            _ => Ok(()),
        }
    }

    /// Creates, renews or takes over the Lease; a success starts or extends the term from the
    /// moment the request was sent.
    async fn write(&mut self, action: &Action) {
        let sent = Instant::now();
        let spec = held_record(
            &self.config,
            self.observed.as_ref().map(|o| &o.record),
            Utc::now(),
        );
        let request = async {
            match (action, self.lease.clone()) {
                (Action::Create, _) | (_, None) => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(LEASE_NAME.into()),
                            namespace: Some(self.config.namespace.clone()),
                            ..Default::default()
                        },
                        spec: Some(spec),
                    };
                    self.api.create(&PostParams::default(), &lease).await
                }
                (_, Some(mut lease)) => {
                    // Carries the resourceVersion read: a concurrent write makes this a 409.
                    lease.spec = Some(spec);
                    self.api
                        .replace(LEASE_NAME, &PostParams::default(), &lease)
                        .await
                }
            }
        };
        match tokio::time::timeout(self.config.request_timeout(), request).await {
            Ok(Ok(written)) => {
                let now = Instant::now();
                self.observed = Some(observe(self.observed.as_ref(), &written, now));
                self.lease = Some(written);
                self.set_leading(Some(sent));
            }
            Ok(Err(kube::Error::Api(e))) if e.code == 409 => {
                tracing::debug!(?action, "another replica wrote the Lease first");
            }
            Ok(Err(err)) => tracing::warn!(error = %err, ?action, "cannot write the leader Lease"),
            Err(_) => tracing::warn!(?action, "writing the leader Lease timed out"),
        }
    }

    /// Gives the Lease up, if this replica leads: stops leading first, then writes the Lease
    /// with no holder and a 1 s lease so a follower takes over at its next attempt. Call only
    /// after the controllers stopped.
    pub async fn release(&mut self) {
        if self.renewed.is_none() {
            return;
        }
        self.set_leading(None);
        let Some(mut lease) = self.lease.clone() else {
            return;
        };
        let wall = micro_time(Utc::now());
        let transitions = self.observed.as_ref().map_or(0, |o| o.record.transitions);
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(wall.clone()),
            renew_time: Some(wall),
            lease_transitions: Some(transitions),
            ..Default::default()
        });
        let params = PostParams::default();
        let write = self.api.replace(LEASE_NAME, &params, &lease);
        match tokio::time::timeout(self.config.request_timeout(), write).await {
            Ok(Ok(_)) => {
                tracing::info!(identity = %self.config.identity, "released the leader Lease")
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "cannot release the leader Lease; followers wait for it to expire")
            }
            Err(_) => tracing::warn!(
                "releasing the leader Lease timed out; followers wait for it to expire"
            ),
        }
    }
}

#[cfg(test)]
mod tests;
