//! Times `node-agent/src/metrics.rs` (compiled in from its source file) against the
//! `prometheus` crate's `TextEncoder` on the same 2,000 samples: 40 counter families of 50
//! series with two labels, about what node_exporter's disk and network collectors serve.
//! Both outputs are checked to hold the same lines. Figures: docs/decisions.md.
#![allow(dead_code)]
#[path = "../../../node-agent/src/metrics.rs"]
mod metrics;
use metrics::{encode_families, Family, Kind};
use std::time::Instant;

const FAMILIES: usize = 40;
const SERIES: usize = 50;

fn main() {
    // Ours: families as collectors build them each scrape.
    let build = || -> Vec<Family> {
        (0..FAMILIES)
            .map(|f| {
                let mut fam = Family::new(
                    format!("node_bench_{f}_total"),
                    "A counter like node_exporter's.",
                    Kind::Counter,
                );
                for s in 0..SERIES {
                    fam.push(
                        vec![("device", format!("sd{s}")), ("mode", "read".to_owned())],
                        (s * f) as f64 + 0.25,
                    );
                }
                fam
            })
            .collect()
    };
    let registry = prometheus::Registry::new();
    for f in 0..FAMILIES {
        let v = prometheus::CounterVec::new(
            prometheus::Opts::new(
                format!("node_bench_{f}_total"),
                "A counter like node_exporter's.",
            ),
            &["device", "mode"],
        )
        .unwrap();
        for s in 0..SERIES {
            v.with_label_values(&[&format!("sd{s}"), "read"])
                .inc_by((s * f) as f64 + 0.25);
        }
        registry.register(Box::new(v)).unwrap();
    }
    let n = 2000;
    let families = build();
    let mut out = String::new();
    encode_families(&families, &mut out);
    let ours_len = out.len();
    let t = Instant::now();
    for _ in 0..n {
        let mut out = String::with_capacity(ours_len);
        encode_families(&families, &mut out);
        std::hint::black_box(&out);
    }
    let ours = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..n {
        let families = build();
        let mut out = String::with_capacity(ours_len);
        encode_families(&families, &mut out);
        std::hint::black_box(&out);
    }
    let ours_build = t.elapsed() / n;
    use prometheus::Encoder;
    let enc = prometheus::TextEncoder::new();
    let gathered = registry.gather();
    let mut buf = Vec::new();
    enc.encode(&gathered, &mut buf).unwrap();
    let theirs_len = buf.len();
    let t = Instant::now();
    for _ in 0..n {
        let mut buf = Vec::with_capacity(theirs_len);
        enc.encode(&gathered, &mut buf).unwrap();
        std::hint::black_box(&buf);
    }
    let theirs = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..n {
        let g = registry.gather();
        let mut buf = Vec::with_capacity(theirs_len);
        enc.encode(&g, &mut buf).unwrap();
        std::hint::black_box(&buf);
    }
    let theirs_gather = t.elapsed() / n;
    let sorted = |t: &str| {
        let mut l: Vec<String> = t.lines().map(str::to_owned).collect();
        l.sort();
        l
    };
    assert!(
        sorted(&out) == sorted(std::str::from_utf8(&buf).unwrap()),
        "both encoders write the same lines (prometheus sorts them)"
    );
    println!(
        "{} samples; output {ours_len} bytes (ours) / {theirs_len} bytes (prometheus)",
        FAMILIES * SERIES
    );
    println!("hand-written encode_families:            {ours:?}");
    println!("hand-written build families + encode:    {ours_build:?}");
    println!("prometheus 0.14 TextEncoder::encode:     {theirs:?}");
    println!("prometheus 0.14 gather + encode:         {theirs_gather:?}");
}
