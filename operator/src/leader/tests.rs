//! The decisions as pure functions (skew cases and a simulation of two candidates), then the
//! elector's requests against a mocked API server.

use chrono::{DateTime, Utc};
use http::{Method, Request, Response};
use kube::client::Body;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tower_test::mock::Handle;

use super::*;

const DAY: chrono::Duration = chrono::Duration::days(1);

fn config(identity: &str) -> Config {
    Config::new("driftless", identity)
}

fn lease(
    holder: Option<&str>,
    rv: &str,
    renew: DateTime<Utc>,
    seconds: i32,
    transitions: i32,
) -> Lease {
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE_NAME, "namespace": "driftless", "resourceVersion": rv},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": seconds,
            "acquireTime": renew.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "renewTime": renew.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "leaseTransitions": transitions,
        },
    }))
    .unwrap()
}

#[test]
fn config_needs_retry_below_renew_deadline_below_lease_duration() {
    assert_eq!(config("a").validate(), Ok(()));
    let mut c = config("a");
    c.renew_deadline = Duration::from_secs(15);
    assert!(c
        .validate()
        .unwrap_err()
        .contains("--renew-deadline-seconds (15) must be less than --lease-duration-seconds (15)"));
    let mut c = config("a");
    c.retry_period = Duration::from_secs(10);
    assert!(c
        .validate()
        .unwrap_err()
        .contains("--retry-period-seconds (10)"));
    let mut c = config("a");
    c.retry_period = Duration::ZERO;
    assert!(c.validate().is_err());
    assert!(config("").validate().unwrap_err().contains("identity"));
}

#[test]
fn observe_moves_the_change_time_only_on_a_change() {
    let t0 = Instant::now();
    let wall = Utc::now();
    let first = observe(None, &lease(Some("b"), "1", wall, 15, 0), t0);
    assert_eq!(first.since, t0);
    let t1 = t0 + Duration::from_secs(5);
    let same = observe(Some(&first), &lease(Some("b"), "1", wall, 15, 0), t1);
    assert_eq!(
        same.since, t0,
        "an unchanged Lease keeps the time of its last change"
    );
    let renewed = observe(
        Some(&same),
        &lease(Some("b"), "2", wall + chrono::Duration::seconds(2), 15, 0),
        t1,
    );
    assert_eq!(renewed.since, t1);
    // A write that left the record as it was (a frozen holder clock) still counts as a change.
    let t2 = t1 + Duration::from_secs(1);
    let rewritten = observe(
        Some(&renewed),
        &lease(Some("b"), "3", wall + chrono::Duration::seconds(2), 15, 0),
        t2,
    );
    assert_eq!(rewritten.since, t2);
}

#[test]
fn simple_decisions() {
    let c = config("me");
    let now = Instant::now();
    assert_eq!(decide(&c, None, now), Action::Create);
    let mine = observe(None, &lease(Some("me"), "1", Utc::now(), 15, 0), now);
    assert_eq!(decide(&c, Some(&mine), now), Action::Renew);
    for released in [None, Some("")] {
        let free = observe(None, &lease(released, "1", Utc::now(), 1, 3), now);
        assert_eq!(
            decide(&c, Some(&free), now),
            Action::TakeOver,
            "{released:?}"
        );
    }
}

#[test]
fn a_holder_clock_far_behind_does_not_make_its_lease_look_expired() {
    // The holder's renewTime is a day old by our clock: comparing it with our clock (the old
    // loop did) would take over at once while the holder still leads.
    let c = config("me");
    let t0 = Instant::now();
    let seen = observe(
        None,
        &lease(Some("other"), "7", Utc::now() - DAY, 15, 0),
        t0,
    );
    assert_eq!(
        decide(&c, Some(&seen), t0),
        Action::Wait {
            holder: "other".into(),
            expires_in: Duration::from_secs(15)
        }
    );
    let later = t0 + Duration::from_millis(14_999);
    assert!(matches!(
        decide(&c, Some(&seen), later),
        Action::Wait { .. }
    ));
    assert_eq!(
        decide(&c, Some(&seen), t0 + Duration::from_secs(15)),
        Action::TakeOver
    );
}

#[test]
fn a_holder_clock_far_ahead_does_not_keep_a_dead_lease_forever() {
    // renewTime a day ahead: a wall-clock comparison would wait a day for a dead holder.
    let c = config("me");
    let t0 = Instant::now();
    let ahead = Utc::now() + DAY;
    let seen = observe(None, &lease(Some("other"), "7", ahead, 15, 0), t0);
    assert!(matches!(decide(&c, Some(&seen), t0), Action::Wait { .. }));
    let t1 = t0 + Duration::from_secs(15);
    let again = observe(Some(&seen), &lease(Some("other"), "7", ahead, 15, 0), t1);
    assert_eq!(decide(&c, Some(&again), t1), Action::TakeOver);
}

#[test]
fn the_holders_lease_duration_counts_and_the_wait_is_bounded_by_it() {
    let c = config("me");
    let t0 = Instant::now();
    let seen = observe(None, &lease(Some("other"), "7", Utc::now(), 4, 0), t0);
    let action = decide(&c, Some(&seen), t0 + Duration::from_secs(3));
    assert_eq!(
        action,
        Action::Wait {
            holder: "other".into(),
            expires_in: Duration::from_secs(1)
        }
    );
    assert_eq!(next_attempt(&c, &action), Duration::from_secs(1));
    assert_eq!(next_attempt(&c, &Action::Renew), Duration::from_secs(2));
    assert_eq!(
        decide(&c, Some(&seen), t0 + Duration::from_secs(4)),
        Action::TakeOver
    );
}

#[test]
fn a_leader_stops_before_a_follower_may_take_over() {
    let c = config("me");
    let sent = Instant::now();
    assert!(still_leading(&c, sent, sent + Duration::from_millis(9_999)));
    assert!(!still_leading(&c, sent, sent + Duration::from_secs(10)));
    // A follower sees the write no earlier than it was sent, and waits the lease duration.
    let seen = observe(None, &lease(Some("me"), "2", Utc::now(), 15, 0), sent);
    let follower = config("other");
    let first_takeover = sent + Duration::from_secs(15);
    assert!(matches!(
        decide(
            &follower,
            Some(&seen),
            first_takeover - Duration::from_millis(1)
        ),
        Action::Wait { .. }
    ));
    assert!(!still_leading(&c, sent, first_takeover));
}

#[test]
fn held_record_keeps_the_term_on_renewal_and_counts_takeovers() {
    let c = config("me");
    let wall = Utc::now();
    let created = held_record(&c, None, wall);
    assert_eq!(created.holder_identity.as_deref(), Some("me"));
    assert_eq!(created.lease_duration_seconds, Some(15));
    assert_eq!(created.lease_transitions, Some(0));
    let mine = Record::of(&lease(Some("me"), "1", wall - DAY, 15, 4));
    let renewed = held_record(&c, Some(&mine), wall);
    assert_eq!(renewed.lease_transitions, Some(4));
    assert_eq!(renewed.acquire_time, mine.acquire_time);
    assert_eq!(renewed.renew_time, Some(micro_time(wall)));
    let theirs = Record::of(&lease(Some("other"), "1", wall - DAY, 15, 4));
    let taken = held_record(&c, Some(&theirs), wall);
    assert_eq!(taken.lease_transitions, Some(5));
    assert_eq!(taken.acquire_time, Some(micro_time(wall)));
}

/// One candidate in the simulation: what the elector keeps, driven by the pure functions.
struct Sim {
    config: Config,
    /// The offset of its wall clock (only ever written into the Lease).
    skew: chrono::Duration,
    observed: Option<Observed>,
    renewed: Option<Instant>,
    next: Instant,
    /// A write in flight: (lands at, resourceVersion read, record, sent at).
    pending: Option<(Instant, u64, LeaseSpec, Instant)>,
    frozen: Option<(Instant, Instant)>,
    dies_at: Option<Instant>,
}

impl Sim {
    fn leads(&self, now: Instant) -> bool {
        self.renewed
            .is_some_and(|r| still_leading(&self.config, r, now))
    }
}

fn store_lease(store: &Option<(u64, LeaseSpec)>) -> Option<Lease> {
    store.as_ref().map(|(rv, spec)| Lease {
        metadata: ObjectMeta {
            name: Some(LEASE_NAME.into()),
            resource_version: Some(rv.to_string()),
            ..Default::default()
        },
        spec: Some(spec.clone()),
    })
}

/// Runs two candidates for 120 s of simulated time in 50 ms ticks against a Lease store with
/// compare-and-swap writes; returns the ticks at which both led and when the survivor led.
fn simulate(seed: u64) -> (Vec<Duration>, Option<Duration>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let wall0 = Utc::now();
    let mut store: Option<(u64, LeaseSpec)> = None;
    let mut version = 0u64;
    let ms = |rng: &mut rand::rngs::StdRng, lo: u64, hi: u64| {
        Duration::from_millis(rng.gen_range(lo..hi))
    };
    let mut sims: Vec<Sim> = ["a", "b"]
        .into_iter()
        .map(|id| Sim {
            config: config(id),
            skew: chrono::Duration::seconds(rng.gen_range(-86_400..86_400)),
            observed: None,
            renewed: None,
            next: start + ms(&mut rng, 0, 2_000),
            pending: None,
            frozen: None,
            dies_at: None,
        })
        .collect();
    // The first candidate freezes for up to 30 s at some point, then dies later.
    let freeze_at = start + ms(&mut rng, 5_000, 40_000);
    sims[0].frozen = Some((freeze_at, freeze_at + ms(&mut rng, 0, 30_000)));
    let dies_at = start + ms(&mut rng, 60_000, 80_000);
    sims[0].dies_at = Some(dies_at);
    let mut both = Vec::new();
    let mut survivor_led = None;
    let mut now = start;
    while now < start + Duration::from_secs(120) {
        for sim in sims.iter_mut() {
            if sim.dies_at.is_some_and(|d| now >= d) {
                sim.renewed = None;
                sim.pending = None;
                continue;
            }
            if let Some((lands, rv, spec, sent)) = sim.pending.clone() {
                if now >= lands {
                    sim.pending = None;
                    if store.as_ref().map_or(0, |(v, _)| *v) == rv {
                        version += 1;
                        store = Some((version, spec));
                        let written = store_lease(&store).unwrap();
                        sim.observed = Some(observe(sim.observed.as_ref(), &written, now));
                        sim.renewed = Some(sent);
                    }
                }
            }
            let frozen = sim.frozen.is_some_and(|(from, to)| now >= from && now < to);
            if frozen || sim.pending.is_some() || now < sim.next {
                continue;
            }
            if sim.renewed.is_some() && !sim.leads(now) {
                // Lost: the operator exits and starts again as a fresh follower.
                sim.renewed = None;
                sim.observed = None;
            }
            let read = store_lease(&store);
            sim.observed = read
                .as_ref()
                .map(|l| observe(sim.observed.as_ref(), l, now));
            let action = decide(&sim.config, sim.observed.as_ref(), now);
            match &action {
                Action::Wait { .. } if sim.renewed.is_some() => {
                    sim.renewed = None;
                    sim.observed = None;
                }
                Action::Wait { .. } => {}
                _ => {
                    let spec = held_record(
                        &sim.config,
                        sim.observed.as_ref().map(|o| &o.record),
                        wall0 + sim.skew + chrono::Duration::from_std(now - start).unwrap(),
                    );
                    let rv = store.as_ref().map_or(0, |(v, _)| *v);
                    sim.pending = Some((now + ms(&mut rng, 0, 1_000), rv, spec, now));
                }
            }
            sim.next = now + next_attempt(&sim.config, &action);
        }
        if sims.iter().filter(|s| s.leads(now)).count() > 1 {
            both.push(now - start);
        }
        if survivor_led.is_none() && now >= dies_at && sims[1].leads(now) {
            survivor_led = Some(now - dies_at);
        }
        now += Duration::from_millis(50);
    }
    (both, survivor_led)
}

#[test]
fn two_candidates_with_skewed_clocks_never_lead_at_once() {
    for seed in 0..200 {
        let (both, survivor) = simulate(seed);
        assert!(both.is_empty(), "seed {seed}: both led at {both:?}");
        let survivor = survivor.unwrap_or_else(|| panic!("seed {seed}: the survivor never led"));
        // Dead leader: the follower takes over within lease duration + one retry + latency.
        assert!(
            survivor <= Duration::from_secs(19),
            "seed {seed}: took {survivor:?}"
        );
    }
}

type Mock = Handle<Request<Body>, Response<Body>>;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/driftless/leases";

fn elector(identity: &str) -> (LeaderElector, Mock) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    (LeaderElector::new(client, config(identity)), handle)
}

fn respond(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
           "code": code, "message": reason})
}

/// Takes the next request, checks its method and path, answers it, and returns its body.
async fn expect(
    handle: &mut Mock,
    method: Method,
    path: String,
    code: u16,
    answer: Value,
) -> Value {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(
        (request.method(), request.uri().path()),
        (&method, path.as_str())
    );
    let bytes = request.into_body().collect_bytes().await.unwrap();
    send.send_response(respond(code, &answer));
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

fn lease_path() -> String {
    format!("{LEASES}/{LEASE_NAME}")
}

fn json_of(lease: &Lease) -> Value {
    serde_json::to_value(lease).unwrap()
}

/// Answers the read with `current` and the write with the written object at version `rv`.
async fn expect_write(handle: &mut Mock, current: Option<&Lease>, rv: &str) -> Value {
    match current {
        None => {
            expect(
                handle,
                Method::GET,
                lease_path(),
                404,
                status(404, "NotFound"),
            )
            .await
        }
        Some(l) => expect(handle, Method::GET, lease_path(), 200, json_of(l)).await,
    };
    let (request, send) = handle.next_request().await.expect("a write");
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let mut body: Value = serde_json::from_slice(&bytes).unwrap();
    match current {
        None => assert_eq!((method, path.as_str()), (Method::POST, LEASES)),
        Some(_) => assert_eq!((method, path), (Method::PUT, lease_path())),
    }
    let sent = body.clone();
    body["metadata"]["resourceVersion"] = json!(rv);
    send.send_response(respond(200, &body));
    sent
}

#[tokio::test(start_paused = true)]
async fn creates_the_missing_lease_and_leads() {
    let (mut e, mut handle) = elector("me");
    let leadership = e.leadership();
    assert!(!leadership.is_leader());
    let (pause, sent) = tokio::join!(e.step(), expect_write(&mut handle, None, "1"));
    assert_eq!(pause.unwrap(), Duration::from_secs(2));
    assert_eq!(sent["metadata"]["name"], LEASE_NAME);
    assert_eq!(sent["spec"]["holderIdentity"], "me");
    assert_eq!(sent["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(sent["spec"]["leaseTransitions"], 0);
    assert!(leadership.is_leader());
    tokio::time::timeout(Duration::from_millis(1), leadership.acquired())
        .await
        .expect("acquired");
}

#[tokio::test(start_paused = true)]
async fn takes_over_only_after_the_lease_duration_on_its_own_clock() {
    let (mut e, mut handle) = elector("me");
    let leadership = e.leadership();
    // The holder's clock is a day behind ours; its renewTime says nothing to us.
    let held = lease(Some("other"), "5", Utc::now() - DAY, 15, 2);
    let (pause, _) = tokio::join!(
        e.step(),
        expect(&mut handle, Method::GET, lease_path(), 200, json_of(&held))
    );
    assert_eq!(pause.unwrap(), Duration::from_secs(2));
    assert!(!leadership.is_leader());
    tokio::time::advance(Duration::from_secs(13)).await;
    let (pause, _) = tokio::join!(
        e.step(),
        expect(&mut handle, Method::GET, lease_path(), 200, json_of(&held))
    );
    assert_eq!(
        pause.unwrap(),
        Duration::from_secs(2),
        "2 s left of the lease"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    let (pause, sent) = tokio::join!(e.step(), expect_write(&mut handle, Some(&held), "6"));
    assert_eq!(pause.unwrap(), Duration::from_secs(2));
    assert_eq!(
        sent["metadata"]["resourceVersion"], "5",
        "the write is conditional"
    );
    assert_eq!(sent["spec"]["holderIdentity"], "me");
    assert_eq!(sent["spec"]["leaseTransitions"], 3);
    assert!(leadership.is_leader());
}

#[tokio::test(start_paused = true)]
async fn a_renewal_seen_restarts_the_wait() {
    let (mut e, mut handle) = elector("me");
    let held = lease(Some("other"), "5", Utc::now() + DAY, 15, 0);
    let (_, _) = tokio::join!(
        e.step(),
        expect(&mut handle, Method::GET, lease_path(), 200, json_of(&held))
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    // The holder renewed; its renewTime even went backwards (its clock was stepped).
    let renewed = lease(Some("other"), "6", Utc::now() - DAY, 15, 0);
    let (_, _) = tokio::join!(
        e.step(),
        expect(
            &mut handle,
            Method::GET,
            lease_path(),
            200,
            json_of(&renewed)
        )
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    let (pause, _) = tokio::join!(
        e.step(),
        expect(
            &mut handle,
            Method::GET,
            lease_path(),
            200,
            json_of(&renewed)
        )
    );
    assert_eq!(pause.unwrap(), Duration::from_secs(2));
    assert!(!e.is_leader());
    tokio::time::advance(Duration::from_secs(5)).await;
    let (_, sent) = tokio::join!(e.step(), expect_write(&mut handle, Some(&renewed), "7"));
    assert_eq!(sent["spec"]["holderIdentity"], "me");
    assert!(e.is_leader());
}

#[tokio::test(start_paused = true)]
async fn a_released_lease_is_taken_at_once_and_a_lost_race_leaves_it_following() {
    let (mut e, mut handle) = elector("me");
    let released = lease(None, "9", Utc::now(), 1, 4);
    let step = async {
        expect(
            &mut handle,
            Method::GET,
            lease_path(),
            200,
            json_of(&released),
        )
        .await;
        expect(
            &mut handle,
            Method::PUT,
            lease_path(),
            409,
            status(409, "Conflict"),
        )
        .await
    };
    let (pause, sent) = tokio::join!(e.step(), step);
    assert_eq!(pause.unwrap(), Duration::from_secs(2));
    assert_eq!(sent["spec"]["holderIdentity"], "me");
    assert_eq!(sent["spec"]["leaseTransitions"], 5);
    assert!(!e.is_leader(), "the other candidate won the race");
}

/// Makes `e` the leader at version "1".
async fn lead(e: &mut LeaderElector, handle: &mut Mock) -> Lease {
    let (_, sent) = tokio::join!(e.step(), expect_write(handle, None, "1"));
    assert!(e.is_leader());
    let mut written: Lease = serde_json::from_value(sent).unwrap();
    written.metadata.resource_version = Some("1".into());
    written
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_stops_at_the_renew_deadline() {
    let (mut e, mut handle) = elector("me");
    let leadership = e.leadership();
    lead(&mut e, &mut handle).await;
    let started = Instant::now();
    loop {
        tokio::time::advance(Duration::from_secs(2)).await;
        let (result, _) = tokio::join!(
            e.step(),
            expect(
                &mut handle,
                Method::GET,
                lease_path(),
                500,
                status(500, "InternalError")
            )
        );
        let elapsed = started.elapsed();
        if elapsed < Duration::from_secs(10) {
            assert!(result.is_ok() && leadership.is_leader(), "{elapsed:?}");
        } else {
            assert!(
                matches!(result, Err(Lost::RenewDeadline { .. })),
                "{result:?}"
            );
            assert!(!leadership.is_leader(), "is_leader expires by itself");
            break;
        }
    }
    // Leadership ends 10 s after the last renewal was sent, 5 s before followers may take over.
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn is_leader_turns_false_while_a_renewal_hangs() {
    let (mut e, mut handle) = elector("me");
    let leadership = e.leadership();
    lead(&mut e, &mut handle).await;
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert!(leadership.is_leader());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(
        !leadership.is_leader(),
        "no renewal within 10 s: not leading, whatever the loop does"
    );
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_finds_another_holder_has_lost() {
    let (mut e, mut handle) = elector("me");
    lead(&mut e, &mut handle).await;
    let theirs = lease(Some("other"), "3", Utc::now(), 15, 1);
    let (result, _) = tokio::join!(
        e.step(),
        expect(
            &mut handle,
            Method::GET,
            lease_path(),
            200,
            json_of(&theirs)
        )
    );
    match result {
        Err(Lost::TakenOver { holder, .. }) => assert_eq!(holder, "other"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn release_stops_leading_then_clears_the_holder() {
    let (mut e, mut handle) = elector("me");
    let leadership = e.leadership();
    let written = lead(&mut e, &mut handle).await;
    let check = async {
        let (request, send) = handle.next_request().await.expect("the release");
        assert!(
            !leadership.is_leader(),
            "stops leading before the Lease is released"
        );
        assert_eq!(
            (request.method(), request.uri().path()),
            (&Method::PUT, lease_path().as_str())
        );
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        send.send_response(respond(200, &body));
        body
    };
    let ((), body) = tokio::join!(e.release(), check);
    assert_eq!(body["metadata"]["resourceVersion"], "1");
    assert!(body["spec"].get("holderIdentity").is_none(), "{body}");
    assert_eq!(body["spec"]["leaseDurationSeconds"], 1);
    assert_eq!(
        body["spec"]["leaseTransitions"],
        written.spec.unwrap().lease_transitions.unwrap()
    );
    // A follower that reads it takes over at once.
    let released: Lease = serde_json::from_value(body).unwrap();
    let seen = observe(None, &released, Instant::now());
    assert_eq!(
        decide(&config("other"), Some(&seen), Instant::now()),
        Action::TakeOver
    );
}

#[tokio::test(start_paused = true)]
async fn a_follower_sends_nothing_on_release() {
    let (mut e, mut handle) = elector("me");
    e.release().await;
    let next = tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await;
    assert!(next.is_err(), "a follower has nothing to release");
}
