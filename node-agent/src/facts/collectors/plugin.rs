//! `plugin`: custom facts from WebAssembly plugins (FactsPolicy `spec.facts[].plugin`). The
//! plugin's `facts` object is exported like a JSON fact (`driftless_fact`,
//! `driftless_fact_info`); its metric samples become families of their own. Results are cached
//! for the policy's interval, like command facts.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use driftless_crds::facts_policy::{CustomFactSource, FactFormat};
use driftless_crds::plugin::PluginUse;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};
use crate::plugins::{Instance, Kind as PluginKind, Plugin, DEFAULT_FUEL};

/// Most distinct label names plugins may introduce in one process.
const MAX_LABEL_NAMES: usize = 1024;

struct Fact {
    name: String,
    instance: Result<Instance, String>,
}

/// The collector.
pub struct PluginFacts {
    facts: Mutex<Vec<Fact>>,
    interval: Duration,
    cache: Mutex<super::CachedRun>,
}

/// Factory. A plugin that cannot be loaded is reported at every update, naming the fact.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    let facts = settings
        .facts
        .iter()
        .filter_map(|f| match &f.source {
            CustomFactSource::Plugin(use_) => Some(Fact {
                name: f.name.clone(),
                instance: start(use_, settings),
            }),
            _ => None,
        })
        .collect();
    Ok(Box::new(PluginFacts {
        facts: Mutex::new(facts),
        interval: settings.interval,
        cache: Mutex::new(None),
    }))
}

fn start(use_: &PluginUse, settings: &Settings) -> Result<Instance, String> {
    let plugin = Plugin::for_use(use_).map_err(|e| e.to_string())?;
    Instance::new(
        plugin,
        use_,
        PluginKind::Facts,
        &settings.paths.root,
        DEFAULT_FUEL,
    )
    .map_err(|e| e.to_string())
}

/// A metric sample as a plugin returns it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginSample {
    name: String,
    #[serde(default)]
    help: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    value: f64,
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// A label name as `&'static str` (what [`Family`] holds), interned: each distinct name is
/// kept once for the life of the process, at most [`MAX_LABEL_NAMES`] of them.
fn intern(name: &str) -> Option<&'static str> {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock().ok()?;
    if let Some(known) = names.get(name) {
        return Some(known);
    }
    if names.len() >= MAX_LABEL_NAMES {
        return None;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    Some(leaked)
}

/// Turns a plugin's output into families: its facts as a JSON fact named `fact`, its samples
/// grouped by name. Pure but for label interning.
pub fn families(fact: &str, out: &Value) -> Result<Vec<Family>, String> {
    let (mut numbers, mut texts) = super::file::families();
    if let Some(facts) = out.get("facts") {
        if !facts.is_object() {
            return Err("facts: expected an object".into());
        }
        super::file::push(
            fact,
            FactFormat::Json,
            &facts.to_string(),
            &mut numbers,
            &mut texts,
        );
    }
    let mut families = vec![numbers, texts];
    let samples: Vec<PluginSample> = match out.get("metrics") {
        None => Vec::new(),
        Some(list) => serde_json::from_value(list.clone()).map_err(|e| format!("metrics: {e}"))?,
    };
    let mut by_name: BTreeMap<String, Family> = BTreeMap::new();
    for s in samples {
        if !valid_metric_name(&s.name) || s.name.starts_with("driftless_") {
            return Err(format!(
                "metrics: {:?} is not a metric name a plugin may export",
                s.name
            ));
        }
        let kind = match s.kind.as_deref() {
            None | Some("gauge") => Kind::Gauge,
            Some("counter") => Kind::Counter,
            Some(other) => {
                return Err(format!(
                    "metrics: {}: type {other:?}: expected gauge or counter",
                    s.name
                ))
            }
        };
        let mut labels = Vec::with_capacity(s.labels.len());
        for (k, v) in s.labels {
            if !valid_label_name(&k) {
                return Err(format!("metrics: {}: {k:?} is not a label name", s.name));
            }
            let k = intern(&k).ok_or("metrics: too many distinct label names")?;
            labels.push((k, v));
        }
        let family = by_name
            .entry(s.name.clone())
            .or_insert_with(|| Family::new(s.name.clone(), s.help.clone(), kind));
        if family.kind != kind {
            return Err(format!("metrics: {}: mixes gauge and counter", s.name));
        }
        family.push(labels, s.value);
    }
    families.extend(by_name.into_values());
    Ok(families)
}

impl Collector for PluginFacts {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let mut facts = self
            .facts
            .lock()
            .map_err(|_| CollectError::Failed("plugins poisoned".into()))?;
        if facts.is_empty() {
            return Ok(());
        }
        super::cached_update(&self.cache, self.interval, out, || {
            let mut all = Vec::new();
            let mut failed = Vec::new();
            for fact in facts.iter_mut() {
                let result = match &mut fact.instance {
                    Ok(instance) => instance
                        .call("driftless_facts", &json!({}), false)
                        .map_err(|e| e.to_string())
                        .and_then(|v| families(&fact.name, &v)),
                    Err(why) => Err(why.clone()),
                };
                match result {
                    Ok(families) => all.extend(families),
                    Err(why) => failed.push(format!("{}: {why}", fact.name)),
                }
            }
            Ok((all, failed))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_output_becomes_families() {
        let out = json!({
            "facts": {"release": {"version": "2.1", "channel": "stable"}},
            "metrics": [
                {"name": "app_release_info", "help": "h", "type": "gauge", "labels": {"version": "2.1"}, "value": 1},
                {"name": "app_restarts_total", "type": "counter", "value": 3},
            ],
        });
        let got = families("release", &out).unwrap();
        let names: Vec<&str> = got.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "driftless_fact",
                "driftless_fact_info",
                "app_release_info",
                "app_restarts_total"
            ]
        );
        assert_eq!(got[0].samples.len(), 1);
        assert_eq!(got[1].samples.len(), 1);
        assert_eq!(
            got[2].samples[0].labels,
            vec![("version", "2.1".to_string())]
        );
        assert_eq!(got[3].kind, Kind::Counter);
        for (bad, why) in [
            (
                json!({"metrics": [{"name": "driftless_up", "value": 1}]}),
                "may export",
            ),
            (
                json!({"metrics": [{"name": "x", "labels": {"__a": "b"}, "value": 1}]}),
                "label name",
            ),
            (
                json!({"metrics": [{"name": "x", "type": "histogram", "value": 1}]}),
                "gauge or counter",
            ),
            (json!({"facts": [1]}), "expected an object"),
        ] {
            let err = families("f", &bad).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
