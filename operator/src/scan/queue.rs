//! The global priority queue of scan units and the queue-depth batching formula.
//!
//! A unit is one stack of one run of one DriftScan. Every queued unit of every DriftScan waits
//! in one queue, ordered by trigger (webhook, then manual, then schedule), then by the age of
//! its run, then by the stack's position in the run. See `docs/driftscan.md` for the formula.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use driftless_crds::drift_scan::TriggerKind;

/// The most stacks one Job plans, however deep the queue.
pub const MAX_BATCH: usize = 10;

/// Namespace and name of a DriftScan.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScanKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ScanKey {
    /// A key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ScanKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A unit waiting for a Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedUnit {
    /// Its DriftScan.
    pub scan: ScanKey,
    /// Its run.
    pub run: String,
    /// The stack.
    pub stack: String,
    /// What started the run.
    pub trigger: TriggerKind,
    /// When the run started (the unit's age).
    pub since: DateTime<Utc>,
    /// Position of the stack in the run.
    pub index: usize,
    /// Image of the stack's Job (only stacks asking for the same image share a Job).
    pub image: String,
}

/// Sorts units into dequeue order: higher-priority trigger first, then older run, then scan,
/// then stack position. The order is total, so equal inputs always give equal queues.
pub fn sort(units: &mut [QueuedUnit]) {
    units.sort_by(|a, b| {
        b.trigger
            .cmp(&a.trigger)
            .then(a.since.cmp(&b.since))
            .then_with(|| a.scan.cmp(&b.scan))
            .then_with(|| a.run.cmp(&b.run))
            .then(a.index.cmp(&b.index))
    });
}

/// Stacks per Job for a queue of `depth` units and a global capacity of `capacity` Jobs:
/// `clamp(ceil(depth / capacity), 1, MAX_BATCH)`. A queue no deeper than the capacity gets one
/// stack per Job; a deeper one spreads over the capacity in fuller Jobs.
pub fn batch_size(depth: usize, capacity: usize) -> usize {
    if capacity == 0 {
        return 1;
    }
    depth.div_ceil(capacity).clamp(1, MAX_BATCH)
}

/// Stacks of one scan run that one new Job takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The DriftScan.
    pub scan: ScanKey,
    /// The run.
    pub run: String,
    /// The stacks, in queue order.
    pub stacks: Vec<String>,
    /// The image they all ask for.
    pub image: String,
}

/// Cuts the sorted queue into new Jobs: at most `global_free` Jobs in all, at most
/// `scan_free[scan]` for each scan (a scan missing from the map gets none), each of at most
/// `batch` stacks of a single run asking for a single image. Units are taken strictly in queue order; a unit whose scan
/// has no room is skipped, and the units behind it still get their turn.
pub fn plan_batches(
    queue: &[QueuedUnit],
    global_free: usize,
    scan_free: &BTreeMap<ScanKey, usize>,
    batch: usize,
) -> Vec<Batch> {
    let batch = batch.max(1);
    let mut free = scan_free.clone();
    let mut slots = global_free;
    let mut out: Vec<Batch> = Vec::new();
    // The batch of each (scan, run, image) still taking stacks.
    let mut open: BTreeMap<(ScanKey, String, String), usize> = BTreeMap::new();
    for unit in queue {
        let key = (unit.scan.clone(), unit.run.clone(), unit.image.clone());
        if let Some(&i) = open.get(&key) {
            out[i].stacks.push(unit.stack.clone());
            if out[i].stacks.len() >= batch {
                open.remove(&key);
            }
            continue;
        }
        if slots == 0 {
            // No new Job anywhere; only open batches can still take units.
            if open.is_empty() {
                break;
            }
            continue;
        }
        let Some(room) = free.get_mut(&unit.scan) else {
            continue;
        };
        if *room == 0 {
            continue;
        }
        *room -= 1;
        slots -= 1;
        out.push(Batch {
            scan: unit.scan.clone(),
            run: unit.run.clone(),
            stacks: vec![unit.stack.clone()],
            image: unit.image.clone(),
        });
        if batch > 1 {
            open.insert(key, out.len() - 1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(scan: &str, stack: &str, trigger: TriggerKind, age: i64, index: usize) -> QueuedUnit {
        QueuedUnit {
            scan: ScanKey::new("ns", scan),
            run: "r1".into(),
            stack: stack.into(),
            trigger,
            since: DateTime::from_timestamp(1_000_000 - age, 0).unwrap(),
            index,
            image: "tf:1".into(),
        }
    }

    #[test]
    fn webhook_before_manual_before_schedule_then_age() {
        let mut q = vec![
            unit("a", "s1", TriggerKind::Schedule, 100, 0),
            unit("b", "s1", TriggerKind::Manual, 10, 0),
            unit("c", "s1", TriggerKind::Webhook, 1, 0),
            unit("d", "s1", TriggerKind::Manual, 50, 0),
            unit("d", "s0", TriggerKind::Manual, 50, 1),
        ];
        sort(&mut q);
        let order: Vec<_> = q
            .iter()
            .map(|u| format!("{}:{}", u.scan.name, u.stack))
            .collect();
        assert_eq!(order, ["c:s1", "d:s1", "d:s0", "b:s1", "a:s1"]);
    }

    #[test]
    fn batch_size_follows_depth() {
        assert_eq!(batch_size(0, 10), 1);
        assert_eq!(batch_size(1, 10), 1);
        assert_eq!(batch_size(10, 10), 1);
        assert_eq!(batch_size(11, 10), 2);
        assert_eq!(batch_size(45, 10), 5);
        assert_eq!(batch_size(10_000, 10), MAX_BATCH);
        assert_eq!(batch_size(5, 0), 1);
    }

    #[test]
    fn batches_respect_global_and_scan_room() {
        let q: Vec<_> = (0..6)
            .map(|i| unit("a", &format!("s{i}"), TriggerKind::Manual, 5, i))
            .chain((0..2).map(|i| unit("b", &format!("t{i}"), TriggerKind::Schedule, 5, i)))
            .collect();
        let room = BTreeMap::from([(ScanKey::new("ns", "a"), 2), (ScanKey::new("ns", "b"), 4)]);
        let batches = plan_batches(&q, 3, &room, 2);
        let got: Vec<_> = batches
            .iter()
            .map(|b| (b.scan.name.as_str(), b.stacks.join(",")))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "s0,s1".into()),
                ("a", "s2,s3".into()),
                ("b", "t0,t1".into())
            ]
        );
        // No room at all: nothing.
        assert!(plan_batches(&q, 0, &room, 2).is_empty());
        // A scan with no entry gets nothing.
        assert!(plan_batches(&q, 3, &BTreeMap::new(), 2).is_empty());
    }

    #[test]
    fn batches_never_mix_images() {
        // s0, s2, s4 ask for tf:1; s1, s3 for tf:2 (interleaved in queue order).
        let q: Vec<_> = (0..5)
            .map(|i| {
                let mut u = unit("a", &format!("s{i}"), TriggerKind::Manual, 5, i);
                u.image = format!("tf:{}", 1 + i % 2);
                u
            })
            .collect();
        let room = BTreeMap::from([(ScanKey::new("ns", "a"), 10)]);
        let batches = plan_batches(&q, 10, &room, 3);
        let got: Vec<_> = batches
            .iter()
            .map(|b| (b.image.as_str(), b.stacks.join(",")))
            .collect();
        assert_eq!(got, [("tf:1", "s0,s2,s4".into()), ("tf:2", "s1,s3".into())]);
        for b in &batches {
            for s in &b.stacks {
                let u = q.iter().find(|u| &u.stack == s).unwrap();
                assert_eq!(u.image, b.image, "{s} in a Job of another image");
            }
        }
        // One Job slot: only the first image's batch; the other waits.
        let batches = plan_batches(&q, 1, &room, 3);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].stacks, ["s0", "s2", "s4"]);
    }
}
