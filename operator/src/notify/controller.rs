//! The notification controller: watches NotificationPolicies, DriftReports and ApplyPolicies
//! (their rollout step), and for each policy in the operator's scan namespaces runs the step
//! [`detect::plan`] decides.
//!
//! Guarantees:
//! - Order: transitions are persisted in the policy's `status.pending` (with the baseline that
//!   accounts for them, in one write) before anything is sent; a receiver is recorded in
//!   `status.pending.delivered` only after it accepted the group. A restart resumes from the
//!   status: nothing detected is lost, nothing recorded as delivered is sent again.
//! - A crash after a receiver accepted a group and before that was recorded sends the group
//!   to it once more, with the same delivery id (webhook `X-Driftless-Delivery`, PagerDuty
//!   dedup keys, e-mail `Message-ID`), so receivers can drop the copy.
//! - Status writes are conditional on the `resourceVersion` read just before (a fresh GET, not
//!   the cache), so two writers never both open a group.
//! - Only the leader acts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use driftless_crds::apply_policy::ApplyPolicy;
use driftless_crds::drift_report::DriftReport;
use driftless_crds::notification_policy::{NotificationPolicy, ReceiverType};
use driftless_crds::time::of_time;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::core::SelectorExt as _;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Client, Resource as _, ResourceExt as _};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::detect::{self, Observed, ObservedRollout, Outcome, Step};
use super::email;
use super::payload::{self, Message, DELIVERY_HEADER, PAGERDUTY_URL, SIGNATURE_HEADER};
use crate::leader::IsLeader;

/// How often every policy is looked at even without a watch event (send and retry times).
pub const TICK: Duration = Duration::from_secs(1);
/// Longest a receiver may take to answer one request.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The running controller.
pub struct NotifyController {
    client: Client,
    namespaces: BTreeSet<String>,
    policies: Store<NotificationPolicy>,
    reports: Store<DriftReport>,
    apply_policies: Store<ApplyPolicy>,
    wake: Arc<Notify>,
    is_leader: IsLeader,
    http: reqwest::Client,
    recorder: Recorder,
}

impl NotifyController {
    /// Starts the watches; [`NotifyController::run`] acts on them.
    pub fn start(
        client: Client,
        namespaces: BTreeSet<String>,
        identity: &str,
        is_leader: IsLeader,
    ) -> anyhow::Result<Arc<Self>> {
        let wake = Arc::new(Notify::new());
        let policies = {
            let (store, writer) = reflector::store();
            let api: Api<NotificationPolicy> = Api::all(client.clone());
            spawn_watch(
                reflector::reflector(writer, watcher(api, watcher::Config::default()))
                    .default_backoff(),
                wake.clone(),
            );
            store
        };
        let reports = {
            let (store, writer) = reflector::store();
            let api: Api<DriftReport> = Api::all(client.clone());
            spawn_watch(
                reflector::reflector(
                    writer,
                    watcher(api, watcher::Config::default()).modify(|r: &mut DriftReport| {
                        // Transitions read the summary and error only.
                        r.metadata.managed_fields = None;
                        r.metadata.annotations = None;
                        r.spec.revisions = Vec::new();
                        if let Some(status) = r.status.as_mut() {
                            status.items = Vec::new();
                            status.history = Vec::new();
                            status.policies = Vec::new();
                            status.plan_text = None;
                        }
                    }),
                )
                .default_backoff(),
                wake.clone(),
            );
            store
        };
        let apply_policies = {
            let (store, writer) = reflector::store();
            let api: Api<ApplyPolicy> = Api::all(client.clone());
            spawn_watch(
                reflector::reflector(
                    writer,
                    watcher(api, watcher::Config::default()).modify(|p: &mut ApplyPolicy| {
                        // Rollout events read the labels and status.rollout only.
                        p.metadata.managed_fields = None;
                        p.metadata.annotations = None;
                        p.spec.tasks = Vec::new();
                        p.spec.handlers = Vec::new();
                        p.spec.vars = Default::default();
                        if let Some(status) = p.status.as_mut() {
                            status.conditions = Vec::new();
                        }
                    }),
                )
                .default_backoff(),
                wake.clone(),
            );
            store
        };
        let http = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            // A redirect could carry the body (and signature) to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Arc::new(Self {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "driftless-operator".into(),
                    instance: Some(identity.to_owned()),
                },
            ),
            client,
            namespaces,
            policies,
            reports,
            apply_policies,
            wake,
            is_leader,
            http,
        }))
    }

    /// Wakes the loop (leadership acquired).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs until aborted: every [`TICK`] or watch event, each policy whose previous step has
    /// finished takes its next step in its own task (a slow receiver holds only its policy).
    pub async fn run(self: Arc<Self>) {
        let _ = self.policies.wait_until_ready().await;
        let _ = self.reports.wait_until_ready().await;
        let _ = self.apply_policies.wait_until_ready().await;
        let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(TICK) => {}
            }
            running.retain(|_, task| !task.is_finished());
            if !(self.is_leader)() {
                continue;
            }
            for policy in self.policies.state() {
                let namespace = policy.namespace().unwrap_or_default();
                if !self.namespaces.contains(&namespace) {
                    continue;
                }
                let key = format!("{namespace}/{}", policy.name_any());
                if running.contains_key(&key) {
                    continue;
                }
                let this = self.clone();
                running.insert(
                    key,
                    tokio::spawn(async move {
                        if let Err(err) = this.step(&policy).await {
                            tracing::warn!(namespace = %namespace, policy = %policy.name_any(),
                                error = %format!("{err:#}"), "notification step failed");
                        }
                    }),
                );
            }
        }
    }

    /// The selected reports of a policy, from the cache.
    fn observe(&self, policy: &NotificationPolicy) -> anyhow::Result<Vec<Observed>> {
        let namespace = policy.namespace().unwrap_or_default();
        let selector: Option<kube::core::Selector> = policy
            .spec
            .report_selector
            .clone()
            .map(TryInto::try_into)
            .transpose()
            .map_err(|e| anyhow::anyhow!("spec.reportSelector: {e}"))?;
        Ok(self
            .reports
            .state()
            .iter()
            .filter(|r| r.namespace().as_deref() == Some(namespace.as_str()))
            .filter(|r| selector.as_ref().is_none_or(|s| s.matches(r.labels())))
            .filter_map(|r| {
                let status = r.status.as_ref()?;
                let summary = status.summary.as_ref()?;
                Some(Observed {
                    report: r.name_any(),
                    kind: r.spec.target.kind,
                    target: r.spec.target.name.clone(),
                    status: summary.status,
                    checked_at: of_time(&summary.checked_at),
                    added: summary.added,
                    changed: summary.changed,
                    removed: summary.removed,
                    revision: summary.commit.clone().or_else(|| summary.revision.clone()),
                    error: status.error.clone(),
                })
            })
            .collect())
    }

    /// The rollouts of the ApplyPolicies a policy selects, from the cache (none without
    /// `spec.rolloutEvents`).
    fn observe_rollouts(
        &self,
        policy: &NotificationPolicy,
    ) -> anyhow::Result<Vec<ObservedRollout>> {
        if policy.spec.rollout_events.is_empty() {
            return Ok(Vec::new());
        }
        let selector: Option<kube::core::Selector> = policy
            .spec
            .policy_selector
            .clone()
            .map(TryInto::try_into)
            .transpose()
            .map_err(|e| anyhow::anyhow!("spec.policySelector: {e}"))?;
        Ok(self
            .apply_policies
            .state()
            .iter()
            .filter(|p| selector.as_ref().is_none_or(|s| s.matches(p.labels())))
            .filter_map(|p| {
                let rollout = p.status.as_ref()?.rollout.as_ref()?;
                Some(ObservedRollout {
                    policy: p.name_any(),
                    step: rollout.step.clone(),
                    failed_revision: rollout.failed_revision.clone(),
                    failed_node: rollout.failed_node.clone(),
                    message: rollout.message.clone(),
                })
            })
            .collect())
    }

    /// One step of one policy: decide on the cached copy; when there is something to do,
    /// decide again on a fresh copy and do it.
    async fn step(&self, cached: &NotificationPolicy) -> anyhow::Result<()> {
        let observed = self.observe(cached)?;
        let rollouts = self.observe_rollouts(cached)?;
        let decide = |p: &NotificationPolicy| {
            detect::plan(
                &p.spec,
                p.status.as_ref(),
                p.uid().as_deref().unwrap_or_default(),
                p.meta().generation,
                &observed,
                &rollouts,
                Utc::now(),
            )
        };
        if let Step::Idle { .. } = decide(cached) {
            return Ok(());
        }
        let namespace = cached.namespace().unwrap_or_default();
        let api: Api<NotificationPolicy> = Api::namespaced(self.client.clone(), &namespace);
        let policy = api.get(&cached.name_any()).await?;
        match decide(&policy) {
            Step::Idle { .. } => Ok(()),
            Step::Write(status) => {
                if let Some(group) = &status.pending {
                    tracing::info!(namespace = %namespace, policy = %policy.name_any(), delivery = %group.id,
                        transitions = group.events.len(), rollouts = group.rollouts.len(), "notification group pending");
                }
                self.write(&api, policy, *status).await
            }
            Step::Send => self.send(&api, policy).await,
        }
    }

    /// Replaces the status, conditional on the resourceVersion the policy was read at.
    async fn write(
        &self,
        api: &Api<NotificationPolicy>,
        mut policy: NotificationPolicy,
        status: driftless_crds::NotificationPolicyStatus,
    ) -> anyhow::Result<()> {
        policy.status = Some(status);
        policy.metadata.managed_fields = None;
        api.replace_status(&policy.name_any(), &PostParams::default(), &policy)
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Delivers the pending group to the receivers that do not have it, then records the
    /// outcome.
    async fn send(
        &self,
        api: &Api<NotificationPolicy>,
        policy: NotificationPolicy,
    ) -> anyhow::Result<()> {
        let Some(status) = policy.status.clone() else {
            return Ok(());
        };
        let Some(group) = status.pending.as_ref() else {
            return Ok(());
        };
        let namespace = policy.namespace().unwrap_or_default();
        let name = policy.name_any();
        let message = Message {
            namespace: &namespace,
            policy: &name,
            id: &group.id,
            sequence: group.sequence,
            events: &group.events,
            rollouts: &group.rollouts,
            omitted: group.omitted,
            max_listed: policy.spec.max_listed as usize,
            dashboard_url: policy.spec.dashboard_url.as_deref(),
        };
        let mut outcomes = Vec::new();
        let mut names = Vec::new();
        for receiver in &policy.spec.receivers {
            if names.contains(&receiver.name) {
                continue;
            }
            names.push(receiver.name.clone());
            if group.delivered.contains(&receiver.name) {
                continue;
            }
            let result = self
                .deliver(&policy, receiver, &message, of_time(&group.send_at))
                .await;
            match &result {
                Ok(()) => {
                    tracing::info!(namespace = %namespace, policy = %name, receiver = %receiver.name,
                    delivery = %group.id, "notification delivered")
                }
                Err(reason) => {
                    tracing::warn!(namespace = %namespace, policy = %name, receiver = %receiver.name,
                    delivery = %group.id, error = %reason, "notification not delivered; will retry")
                }
            }
            outcomes.push(Outcome {
                receiver: receiver.name.clone(),
                result,
            });
        }
        let next = detect::record(&status, &names, &outcomes, Utc::now());
        self.write(api, policy, next).await
    }

    /// Sends one group (complete at `send_at`) to one receiver. The error names what failed,
    /// never a URL, key or password.
    async fn deliver(
        &self,
        policy: &NotificationPolicy,
        receiver: &driftless_crds::notification_policy::Receiver,
        message: &Message<'_>,
        send_at: chrono::DateTime<Utc>,
    ) -> Result<(), String> {
        if receiver.kind == ReceiverType::Event {
            let event = Event {
                type_: EventType::Normal,
                reason: "DriftNotification".into(),
                note: Some(payload::event_note(message)),
                action: "Notify".into(),
                secondary: None,
            };
            return self
                .recorder
                .publish(&event, &policy.object_ref(&()))
                .await
                .map_err(|e| format!("cannot record the Event: {e}"));
        }
        let secret = self.secret(policy, receiver).await?;
        match receiver.kind {
            ReceiverType::Slack => {
                let url = key(&secret, "url")?;
                self.post(&url, &payload::slack(message), &[]).await
            }
            ReceiverType::Teams => {
                let url = key(&secret, "url")?;
                self.post(&url, &payload::teams(message), &[]).await
            }
            ReceiverType::Webhook => {
                let url = key(&secret, "url")?;
                let hmac_key = key(&secret, "hmacKey")?;
                let body = serde_json::to_vec(&payload::webhook(message))
                    .map_err(|e| format!("cannot encode the body: {e}"))?;
                let signature = payload::sign(hmac_key.as_bytes(), &body);
                self.post_bytes(
                    &url,
                    body,
                    &[
                        (DELIVERY_HEADER, message.id.to_owned()),
                        (SIGNATURE_HEADER, signature),
                    ],
                )
                .await
            }
            ReceiverType::Pagerduty => {
                let routing_key = key(&secret, "routingKey")?;
                let url = key(&secret, "url").unwrap_or_else(|_| PAGERDUTY_URL.to_owned());
                for event in payload::pagerduty(message, &routing_key) {
                    self.post(&url, &event, &[]).await?;
                }
                Ok(())
            }
            ReceiverType::Email => {
                let config = email::Config::from_keys(&secret.name_any(), &keys(&secret))
                    .map_err(|e| format!("email receiver {}: {e}", receiver.name))?;
                email::send(&config, &receiver.name, message, send_at).await
            }
            ReceiverType::Event => Ok(()),
        }
    }

    async fn secret(
        &self,
        policy: &NotificationPolicy,
        receiver: &driftless_crds::notification_policy::Receiver,
    ) -> Result<Secret, String> {
        let namespace = policy.namespace().unwrap_or_default();
        let Some(secret_ref) = &receiver.secret_ref else {
            return Err(format!(
                "spec.receivers[{}].secretRef: required for type {:?}",
                receiver.name, receiver.kind
            ));
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        match api.get_opt(&secret_ref.name).await {
            Ok(Some(secret)) => Ok(secret),
            Ok(None) => Err(format!(
                "Secret {namespace}/{} does not exist",
                secret_ref.name
            )),
            Err(e) => Err(format!(
                "cannot read Secret {namespace}/{}: {e}",
                secret_ref.name
            )),
        }
    }

    async fn post(
        &self,
        url: &str,
        body: &serde_json::Value,
        headers: &[(&str, String)],
    ) -> Result<(), String> {
        let body = serde_json::to_vec(body).map_err(|e| format!("cannot encode the body: {e}"))?;
        self.post_bytes(url, body, headers).await
    }

    async fn post_bytes(
        &self,
        url: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<(), String> {
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        // Errors without the URL: it is a secret (Slack and Teams URLs carry a token).
        let response = request
            .send()
            .await
            .map_err(|e| format!("POST failed: {}", e.without_url()))?;
        let code = response.status();
        if code.is_success() {
            Ok(())
        } else {
            Err(format!("POST answered {code}"))
        }
    }
}

/// Every key of a Secret with its value (`data`, then `stringData`).
fn keys(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        out.entry(k.clone())
            .or_insert_with(|| v.clone().into_bytes());
    }
    out
}

/// A key of a Secret as text; the error names the key, never a value.
fn key(secret: &Secret, name: &str) -> Result<String, String> {
    let secret_name = secret.name_any();
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(name))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(name))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| format!("Secret {secret_name} has no key {name:?}"))?;
    String::from_utf8(bytes)
        .map(|s| s.trim().to_owned())
        .map_err(|_| format!("Secret {secret_name}: key {name:?} is not UTF-8 text"))
}

fn spawn_watch<K, S>(stream: S, wake: Arc<Notify>)
where
    K: Send + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => wake.notify_one(),
                Err(err) => tracing::warn!(error = %err, "notification watch failed; retrying"),
            }
        }
    });
}
