//! `file`: custom facts read from files below the host root (FactsPolicy `spec.facts[].file`),
//! exported as `driftless_fact{name,key}` (numbers) and `driftless_fact_info{name,key,value}`
//! (text).

use driftless_crds::facts_policy::{CustomFactSource, FactFormat};

use super::{CollectError, Collector, Settings};
use crate::host::HostPaths;
use crate::metrics::{Family, Kind};

/// The collector.
pub struct File {
    paths: HostPaths,
    facts: Vec<(String, FactFormat, String)>,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    let facts = settings
        .facts
        .iter()
        .filter_map(|f| match &f.source {
            CustomFactSource::File(file) => Some((f.name.clone(), f.format, file.path.clone())),
            _ => None,
        })
        .collect();
    Ok(Box::new(File {
        paths: settings.paths.clone(),
        facts,
    }))
}

/// A fact's values: `(key, value)` leaves; `key` is empty for plain text.
pub fn values(format: FactFormat, text: &str) -> Vec<(String, String)> {
    match format {
        FactFormat::Text => vec![(String::new(), text.trim().to_owned())],
        FactFormat::KeyValue => crate::facts::inventory::parse_os_release(text)
            .into_iter()
            .collect(),
        FactFormat::Json => {
            let mut leaves = Vec::new();
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
                flatten("", &value, &mut leaves);
            }
            leaves
        }
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                flatten(&key(k), v, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&key(&i.to_string()), v, out);
            }
        }
        serde_json::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        serde_json::Value::Null => {}
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// Empty `driftless_fact` and `driftless_fact_info` families.
pub fn families() -> (Family, Family) {
    (
        Family::new(
            "driftless_fact",
            "Numeric value of a custom fact from FactsPolicy spec.facts (key: field of a JSON or key-value fact).",
            Kind::Gauge,
        ),
        Family::new(
            "driftless_fact_info",
            "Text value of a custom fact from FactsPolicy spec.facts, as the value label; always 1.",
            Kind::Gauge,
        ),
    )
}

/// Adds a fact's values to the two families.
pub fn push(name: &str, format: FactFormat, text: &str, numbers: &mut Family, texts: &mut Family) {
    for (key, value) in values(format, text) {
        match value.parse::<f64>() {
            Ok(v) if v.is_finite() => {
                numbers.push(vec![("name", name.to_owned()), ("key", key)], v);
            }
            _ => {
                texts.push(
                    vec![("name", name.to_owned()), ("key", key), ("value", value)],
                    1.0,
                );
            }
        }
    }
}

impl Collector for File {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let (mut numbers, mut texts) = families();
        let mut failed = Vec::new();
        for (name, format, path) in &self.facts {
            match std::fs::read_to_string(self.paths.host(path)) {
                Ok(text) => push(name, *format, &text, &mut numbers, &mut texts),
                Err(e) => failed.push(format!("{name}: {path}: {e}")),
            }
        }
        out.push(numbers);
        out.push(texts);
        if failed.is_empty() {
            Ok(())
        } else {
            Err(CollectError::Failed(failed.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_read_into_leaves() {
        assert_eq!(
            values(FactFormat::Text, " 42\n"),
            [(String::new(), "42".into())]
        );
        let json = values(FactFormat::Json, r#"{"a":{"b":1,"c":[true,"x"]},"n":null}"#);
        assert_eq!(
            json,
            [
                ("a.b".to_owned(), "1".to_owned()),
                ("a.c.0".into(), "true".into()),
                ("a.c.1".into(), "x".into())
            ]
        );
        let kv = values(FactFormat::KeyValue, "ID=debian\nVERSION_ID=\"12\"\n");
        assert_eq!(kv.len(), 2);
    }
}
