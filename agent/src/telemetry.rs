//! The agent's telemetry sink: the process-wide recorder behind the
//! `metrics` facade, so that the agent and its libraries (the CSI client,
//! the iSCSI node, the DSM client, the bridge networker) count into one
//! registry, rendered for `/v1/metrics` as Nomad's JSON or as Prometheus
//! text. Names are dotted (`berth.csi.rpc`), Nomad's where Nomad has one;
//! Prometheus sees them with underscores. Timings are in milliseconds, as
//! Nomad's timers; a timing is a summary (count, sum, min, max).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use parking_lot::Mutex;
use serde::Serialize;

/// Label pairs, sorted by name.
type Labels = BTreeMap<String, String>;

/// A series: its name and labels.
type SeriesKey = (String, Labels);

/// A timing's running summary.
#[derive(Default)]
struct Summary(Mutex<SummaryValues>);

#[derive(Default, Clone, Copy)]
struct SummaryValues {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl metrics::HistogramFn for Summary {
    fn record(&self, value: f64) {
        let mut s = self.0.lock();
        s.min = if s.count == 0 { value } else { s.min.min(value) };
        s.max = if s.count == 0 { value } else { s.max.max(value) };
        s.count += 1;
        s.sum += value;
    }
}

#[derive(Default)]
struct Registry {
    counters: Mutex<BTreeMap<SeriesKey, Arc<AtomicU64>>>,
    gauges: Mutex<BTreeMap<SeriesKey, Arc<AtomicU64>>>,
    summaries: Mutex<BTreeMap<SeriesKey, Arc<Summary>>>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(Default::default);

fn series(key: &Key) -> SeriesKey {
    (key.name().to_string(), key.labels().map(|l| (l.key().to_string(), l.value().to_string())).collect())
}

/// The recorder installed for the process; every handle it gives out
/// points into [`REGISTRY`].
struct Sink;

impl Recorder for Sink {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(REGISTRY.counters.lock().entry(series(key)).or_default().clone())
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(REGISTRY.gauges.lock().entry(series(key)).or_default().clone())
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(REGISTRY.summaries.lock().entry(series(key)).or_default().clone())
    }
}

/// Makes this registry the process's `metrics` recorder (once; later calls
/// do nothing).
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if metrics::set_global_recorder(Sink).is_err() {
            tracing::warn!("another metrics recorder is installed; /v1/metrics shows nothing of it");
        }
    });
}

/// A gauge computed when metrics are read (from the state, say) rather
/// than kept in the registry: it disappears with what it measures.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Dotted name.
    pub name: &'static str,
    /// Label pairs.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

impl Point {
    /// A point named `name` with `labels`.
    pub fn new(name: &'static str, labels: &[(&'static str, &str)], value: f64) -> Point {
        Point { name, labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(), value }
    }
}

/// The registry's gauges and `extra`, in one order.
fn all_gauges(extra: &[Point]) -> BTreeMap<SeriesKey, f64> {
    let mut out: BTreeMap<SeriesKey, f64> =
        REGISTRY.gauges.lock().iter().map(|(k, v)| (k.clone(), gauge_value(v))).collect();
    for p in extra {
        let labels = p.labels.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        out.insert((p.name.to_string(), labels), p.value);
    }
    out
}

/// Milliseconds since `started`, for a timing.
pub fn millis_since(started: std::time::Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonGauge {
    name: String,
    value: f64,
    labels: Labels,
}

/// Nomad reports counters and timings per interval; berth's hold the
/// totals since the agent started.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonSample {
    name: String,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    mean: f64,
    labels: Labels,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonMetrics {
    timestamp: String,
    gauges: Vec<JsonGauge>,
    counters: Vec<JsonSample>,
    samples: Vec<JsonSample>,
    points: Vec<JsonGauge>,
}

fn gauge_value(v: &AtomicU64) -> f64 {
    f64::from_bits(v.load(Ordering::Relaxed))
}

fn sample(name: &str, labels: &Labels, s: SummaryValues) -> JsonSample {
    let mean = if s.count == 0 { 0.0 } else { s.sum / s.count as f64 };
    JsonSample {
        name: name.to_string(),
        count: s.count,
        sum: s.sum,
        min: s.min,
        max: s.max,
        mean,
        labels: labels.clone(),
    }
}

/// Everything, with `extra` among the gauges, in the shape of Nomad's
/// `GET /v1/metrics`.
pub fn render_json(extra: &[Point]) -> serde_json::Value {
    let counters = REGISTRY.counters.lock();
    let out = JsonMetrics {
        timestamp: crate::util::now_rfc3339(),
        gauges: all_gauges(extra)
            .into_iter()
            .map(|((name, labels), value)| JsonGauge { name, value, labels })
            .collect(),
        counters: counters
            .iter()
            .map(|((name, labels), n)| {
                let n = n.load(Ordering::Relaxed);
                sample(name, labels, SummaryValues { count: n, sum: n as f64, min: 1.0, max: 1.0 })
            })
            .collect(),
        samples: REGISTRY
            .summaries
            .lock()
            .iter()
            .map(|((name, labels), s)| sample(name, labels, *s.0.lock()))
            .collect(),
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

/// Everything, with `extra` among the gauges, in the Prometheus text
/// exposition format: counters, gauges, and timings as summaries (`_sum`,
/// `_count`).
pub fn render_prometheus(extra: &[Point]) -> String {
    let mut out = String::new();
    let mut last = String::new();
    let mut typed = |out: &mut String, name: &str, kind: &str| {
        if last != name {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            last = name.to_string();
        }
    };
    for ((name, labels), n) in REGISTRY.counters.lock().iter() {
        let name = prometheus_name(name);
        typed(&mut out, &name, "counter");
        let _ = writeln!(out, "{name}{} {}", prometheus_labels(labels), n.load(Ordering::Relaxed));
    }
    for ((name, labels), v) in all_gauges(extra) {
        let name = prometheus_name(&name);
        typed(&mut out, &name, "gauge");
        let _ = writeln!(out, "{name}{} {v}", prometheus_labels(&labels));
    }
    for ((name, labels), s) in REGISTRY.summaries.lock().iter() {
        let name = prometheus_name(name);
        typed(&mut out, &name, "summary");
        let s = *s.0.lock();
        let labels = prometheus_labels(labels);
        let _ = writeln!(out, "{name}_sum{labels} {}\n{name}_count{labels} {}", s.sum, s.count);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_timings_render_in_both_formats() {
        install();
        metrics::counter!("berth.test.render", "node" => "n\"1").increment(2);
        metrics::counter!("berth.test.render", "node" => "n\"1").increment(1);
        metrics::gauge!("berth.test.level").set(0.5);
        metrics::histogram!("berth.test.took", "rpc" => "Probe").record(4.0);
        metrics::histogram!("berth.test.took", "rpc" => "Probe").record(2.0);
        let extra = [Point::new("berth.test.derived", &[("job", "web")], 2.0)];
        let text = render_prometheus(&extra);
        assert!(text.contains("# TYPE berth_test_derived gauge\nberth_test_derived{job=\"web\"} 2\n"), "{text}");
        assert!(text.contains("# TYPE berth_test_render counter\nberth_test_render{node=\"n\\\"1\"} 3\n"), "{text}");
        assert!(text.contains("# TYPE berth_test_level gauge\nberth_test_level 0.5\n"), "{text}");
        assert!(
            text.contains(
                "# TYPE berth_test_took summary\nberth_test_took_sum{rpc=\"Probe\"} 6\n\
                 berth_test_took_count{rpc=\"Probe\"} 2\n"
            ),
            "{text}"
        );
        let json = render_json(&extra);
        let c = json["Counters"].as_array().unwrap().iter().find(|c| c["Name"] == "berth.test.render").unwrap();
        assert_eq!((c["Count"].as_u64(), c["Labels"]["node"].as_str()), (Some(3), Some("n\"1")));
        assert!(json["Gauges"].as_array().unwrap().iter().any(|g| g["Name"] == "berth.test.level"));
        let t = json["Samples"].as_array().unwrap().iter().find(|s| s["Name"] == "berth.test.took").unwrap();
        assert_eq!(
            (t["Count"].as_u64(), t["Min"].as_f64(), t["Max"].as_f64(), t["Mean"].as_f64()),
            (Some(2), Some(2.0), Some(4.0), Some(3.0))
        );
    }
}
