//! The Prometheus text exposition format (version 0.0.4, what node_exporter serves), written by
//! hand: small, allocation-light and exactly the output `promtool check metrics` accepts.
//!
//! Components that want their own families on the agent's `/metrics` implement
//! [`MetricsSource`] and register it with [`crate::server::AppState::add_source`].
//!
//! Guarantees: every family is written as `# HELP`, `# TYPE`, then its samples; label values and
//! help texts are escaped; `NaN` and infinities are spelled the way Prometheus parses them.
//! Assumptions: a [`MetricsSource`] writes each family name once over the whole exposition and
//! uses names that no other component uses (prefix them with `driftless_<component>_`).

use std::fmt::Write as _;

/// The content type of the text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Something that adds metric families to `/metrics`.
///
/// `encode` is called once per scrape (scrapes that arrive together share one call) and must be
/// quick: read counters, do not do I/O. Write whole families with [`write_family_header`] and
/// [`write_sample`].
pub trait MetricsSource: Send + Sync {
    /// Appends this source's families in the text format.
    fn encode(&self, out: &mut String);
}

/// The type of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A monotonically increasing value.
    Counter,
    /// A value whose type is unknown (node_exporter uses it for `/proc/vmstat`).
    Untyped,
    /// Buckets, sum and count (samples carry the `_bucket`, `_sum`, `_count` suffixes).
    Histogram,
    /// Quantiles, sum and count (samples carry the `_sum`, `_count` suffixes).
    Summary,
}

impl Kind {
    /// The word in `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Untyped => "untyped",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// One sample: label pairs and a value.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Sample {
    /// What follows the family name in this sample's name: `_bucket`, `_sum` or `_count` in
    /// histograms and summaries, empty otherwise.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub suffix: &'static str,
    /// Label names and values, in exposition order.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

/// A metric family: name, help, type and its samples.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Family {
    /// Metric name.
    pub name: String,
    /// Help text.
    pub help: String,
    /// Type.
    pub kind: Kind,
    /// Samples.
    pub samples: Vec<Sample>,
}

impl Family {
    /// An empty family.
    pub fn new(name: impl Into<String>, help: impl Into<String>, kind: Kind) -> Self {
        Self {
            name: name.into(),
            help: help.into(),
            kind,
            samples: Vec::new(),
        }
    }

    /// A family with one unlabelled sample.
    pub fn single(
        name: impl Into<String>,
        help: impl Into<String>,
        kind: Kind,
        value: f64,
    ) -> Self {
        let mut family = Self::new(name, help, kind);
        family.push(Vec::new(), value);
        family
    }

    /// Adds a sample.
    pub fn push(&mut self, labels: Vec<(&'static str, String)>, value: f64) -> &mut Self {
        self.samples.push(Sample {
            suffix: "",
            labels,
            value,
        });
        self
    }

    /// Adds a sample whose name is the family's followed by `suffix` (`_bucket`, `_sum`,
    /// `_count`).
    pub fn push_suffixed(
        &mut self,
        suffix: &'static str,
        labels: Vec<(&'static str, String)>,
        value: f64,
    ) -> &mut Self {
        self.samples.push(Sample {
            suffix,
            labels,
            value,
        });
        self
    }

    /// Writes the family in the text format; families without samples write nothing.
    pub fn encode(&self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        write_family_header(out, &self.name, &self.help, self.kind);
        for sample in &self.samples {
            write_sample_owned(out, &self.name, sample);
        }
    }
}

/// Writes families, merging samples of families that share a name (the text format allows a
/// name only once).
pub fn encode_families(families: &[Family], out: &mut String) {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut order: Vec<Vec<&Family>> = Vec::new();
    for family in families {
        match seen.get(family.name.as_str()) {
            Some(&i) => order[i].push(family),
            None => {
                seen.insert(&family.name, order.len());
                order.push(vec![family]);
            }
        }
    }
    for group in order {
        let Some(first) = group.first() else { continue };
        if group.iter().all(|f| f.samples.is_empty()) {
            continue;
        }
        write_family_header(out, &first.name, &first.help, first.kind);
        for family in &group {
            for sample in &family.samples {
                write_sample_owned(out, &first.name, sample);
            }
        }
    }
}

/// Writes `# HELP` and `# TYPE` lines.
pub fn write_family_header(out: &mut String, name: &str, help: &str, kind: Kind) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind.as_str());
    out.push('\n');
}

/// Writes one sample line with borrowed label values.
pub fn write_sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_label(out, label, v);
        }
        out.push('}');
    }
    out.push(' ');
    write_value(out, value);
    out.push('\n');
}

fn write_sample_owned(out: &mut String, name: &str, sample: &Sample) {
    let labels = &sample.labels;
    out.push_str(name);
    out.push_str(sample.suffix);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_label(out, label, v);
        }
        out.push('}');
    }
    out.push(' ');
    write_value(out, sample.value);
    out.push('\n');
}

fn push_label(out: &mut String, label: &str, value: &str) {
    out.push_str(label);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes a value the way Prometheus parses it (`NaN`, `+Inf`, `-Inf`, integers without `.0`).
pub fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        // Writing into a String cannot fail.
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Label names that are not known when the agent is built (those of textfile metrics), each
/// allocated once for the life of the process so that samples keep `&'static str` label names.
/// Bounded: past [`MAX_INTERNED_LABELS`] distinct names, new ones are refused.
static INTERNED_LABELS: std::sync::Mutex<Option<std::collections::HashSet<&'static str>>> =
    std::sync::Mutex::new(None);

/// How many distinct runtime label names [`intern_label`] keeps.
pub const MAX_INTERNED_LABELS: usize = 4096;

/// The `'static` copy of a label name read at run time, or `None` when
/// [`MAX_INTERNED_LABELS`] distinct names are already kept.
pub fn intern_label(name: &str) -> Option<&'static str> {
    let mut guard = INTERNED_LABELS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let set = guard.get_or_insert_with(Default::default);
    if let Some(kept) = set.get(name) {
        return Some(kept);
    }
    if set.len() >= MAX_INTERNED_LABELS {
        return None;
    }
    let kept: &'static str = Box::leak(name.to_owned().into_boxed_str());
    set.insert(kept);
    Some(kept)
}

/// Replaces every character a metric name may not hold (`[a-zA-Z_:][a-zA-Z0-9_:]*`) with `_`.
/// Used to turn `/proc` keys into metric names.
pub fn sanitize_name(raw: &str) -> String {
    let mut name = String::with_capacity(raw.len());
    for (i, c) in raw.chars().enumerate() {
        let allowed =
            c == '_' || c == ':' || c.is_ascii_alphabetic() || (c.is_ascii_digit() && i > 0);
        if allowed {
            name.push(c);
        } else {
            name.push('_');
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_text_format_with_escapes() {
        let mut family = Family::new("x_total", "Help with \\ and\nnewline.", Kind::Counter);
        family.push(vec![("path", "a\"b\\c\nd".into())], 1.5);
        family.push(vec![], f64::INFINITY);
        let mut out = String::new();
        family.encode(&mut out);
        assert_eq!(
            out,
            "# HELP x_total Help with \\\\ and\\nnewline.\n# TYPE x_total counter\n\
             x_total{path=\"a\\\"b\\\\c\\nd\"} 1.5\nx_total +Inf\n"
        );
    }

    #[test]
    fn values_are_spelled_as_prometheus_parses_them() {
        let mut out = String::new();
        for v in [0.0, 3.0, -2.0, 1e20, 0.25, f64::NAN, f64::NEG_INFINITY] {
            write_value(&mut out, v);
            out.push(' ');
        }
        assert_eq!(out, "0 3 -2 100000000000000000000 0.25 NaN -Inf ");
    }

    #[test]
    fn families_with_one_name_are_merged_and_empty_ones_dropped() {
        let a = Family::single("a", "A.", Kind::Gauge, 1.0);
        let empty = Family::new("b", "B.", Kind::Gauge);
        let mut a2 = Family::new("a", "A.", Kind::Gauge);
        a2.push(vec![("x", "y".into())], 2.0);
        let mut out = String::new();
        encode_families(&[a, empty, a2], &mut out);
        assert_eq!(out, "# HELP a A.\n# TYPE a gauge\na 1\na{x=\"y\"} 2\n");
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("nr_free(pages)"), "nr_free_pages_");
        assert_eq!(sanitize_name("Active(anon)"), "Active_anon_");
    }
}
