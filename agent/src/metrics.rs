//! The agent's metrics: counters and gauges with labels, kept in one
//! registry per process (as Nomad's telemetry sink) and rendered for
//! `/v1/metrics` as Nomad's JSON or as Prometheus text. Names are dotted
//! (`berth.client.allocations.fetched`); Prometheus sees them with
//! underscores.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::LazyLock;

use parking_lot::Mutex;
use serde::Serialize;

/// Label pairs, sorted by name.
type Labels = BTreeMap<String, String>;

#[derive(Default)]
struct Registry {
    counters: BTreeMap<(String, Labels), u64>,
    gauges: BTreeMap<(String, Labels), f64>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);

fn key(name: &str, labels: &[(&str, &str)]) -> (String, Labels) {
    (name.to_string(), labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// Adds `by` to a counter.
pub fn incr(name: &str, labels: &[(&str, &str)], by: u64) {
    *REGISTRY.lock().counters.entry(key(name, labels)).or_default() += by;
}

/// Sets a gauge.
pub fn gauge(name: &str, labels: &[(&str, &str)], value: f64) {
    REGISTRY.lock().gauges.insert(key(name, labels), value);
}

/// A counter's value (0 when never counted).
pub fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    REGISTRY.lock().counters.get(&key(name, labels)).copied().unwrap_or(0)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonGauge {
    name: String,
    value: f64,
    labels: Labels,
}

/// Nomad reports counters per interval; berth's count since the start, so
/// `Count` and `Sum` hold the total.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonCounter {
    name: String,
    count: u64,
    sum: f64,
    labels: Labels,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonMetrics {
    timestamp: String,
    gauges: Vec<JsonGauge>,
    counters: Vec<JsonCounter>,
    samples: Vec<JsonCounter>,
    points: Vec<JsonGauge>,
}

/// Everything, in the shape of Nomad's `GET /v1/metrics`.
pub fn render_json() -> serde_json::Value {
    let r = REGISTRY.lock();
    let out = JsonMetrics {
        timestamp: crate::util::now_rfc3339(),
        gauges: r
            .gauges
            .iter()
            .map(|((name, labels), v)| JsonGauge { name: name.clone(), value: *v, labels: labels.clone() })
            .collect(),
        counters: r
            .counters
            .iter()
            .map(|((name, labels), n)| JsonCounter {
                name: name.clone(),
                count: *n,
                sum: *n as f64,
                labels: labels.clone(),
            })
            .collect(),
        samples: Vec::new(),
        points: Vec::new(),
    };
    serde_json::to_value(out).unwrap_or_default()
}

fn prometheus_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

fn prometheus_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{}=\"{}\"", prometheus_name(k), escape(v))).collect();
    format!("{{{}}}", pairs.join(","))
}

/// Everything, in the Prometheus text exposition format.
pub fn render_prometheus() -> String {
    let r = REGISTRY.lock();
    let mut out = String::new();
    fn typed(out: &mut String, name: &str, kind: &str, last: &mut String) {
        if last != name {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            *last = name.to_string();
        }
    }
    let mut last = String::new();
    for ((name, labels), n) in &r.counters {
        let name = prometheus_name(name);
        typed(&mut out, &name, "counter", &mut last);
        let _ = writeln!(out, "{name}{} {n}", prometheus_labels(labels));
    }
    for ((name, labels), v) in &r.gauges {
        let name = prometheus_name(name);
        typed(&mut out, &name, "gauge", &mut last);
        let _ = writeln!(out, "{name}{} {v}", prometheus_labels(labels));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_in_both_formats() {
        incr("berth.test.render", &[("node", "n\"1")], 2);
        incr("berth.test.render", &[("node", "n\"1")], 1);
        gauge("berth.test.level", &[], 0.5);
        assert_eq!(counter("berth.test.render", &[("node", "n\"1")]), 3);
        let text = render_prometheus();
        assert!(text.contains("# TYPE berth_test_render counter\nberth_test_render{node=\"n\\\"1\"} 3\n"), "{text}");
        assert!(text.contains("# TYPE berth_test_level gauge\nberth_test_level 0.5\n"), "{text}");
        let json = render_json();
        let c = json["Counters"].as_array().unwrap().iter().find(|c| c["Name"] == "berth.test.render").unwrap();
        assert_eq!((c["Count"].as_u64(), c["Labels"]["node"].as_str()), (Some(3), Some("n\"1")));
        assert!(json["Gauges"].as_array().unwrap().iter().any(|g| g["Name"] == "berth.test.level"));
    }
}
