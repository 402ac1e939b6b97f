//! Metric primitives and the Prometheus text exposition (format 0.0.4).
//!
//! This module owns the building blocks (counters, gauges, fixed-bucket histograms, labelled
//! families) and the writer that renders them with correct escaping and grouping. It does not
//! know which metrics exist: each subsystem keeps its own metrics next to its code and renders
//! them into an [`Exposition`] when `/metrics` is scraped. Recording is lock-free for a known
//! label set; a new label set takes a short write lock once.

use std::collections::HashMap;
use std::fmt::Write;
use std::hash::Hash;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fxhash::FxBuildHasher;

/// Request-latency buckets in seconds; 0.5 s is a bucket edge so the latency alert is exact.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A cumulative histogram of durations with fixed bucket bounds (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last slot is the `+Inf` overflow.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let slot = self
            .bounds
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(self.bounds.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            value.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the observations so far.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed))
    }
}

/// The label pairs of one series, as rendered.
pub type Pairs = Vec<(&'static str, String)>;

/// Label names and values of one series.
pub trait LabelSet: Hash + Eq + Clone {
    fn pairs(&self) -> Pairs;
}

/// Metrics of one kind keyed by label set (a Prometheus metric family).
///
/// Label values must come from bounded sets (route names, methods, status codes), never from
/// request data, so the map stays small. That is also why FxHash may replace SipHash here:
/// no client chooses the keys.
pub struct Family<K, M> {
    series: RwLock<HashMap<K, Arc<M>, FxBuildHasher>>,
    make: fn() -> M,
}

impl<K: LabelSet, M> Family<K, M> {
    pub fn new(make: fn() -> M) -> Family<K, M> {
        Family {
            series: RwLock::new(HashMap::default()),
            make,
        }
    }

    /// The series for `key`, created on first use.
    pub fn get(&self, key: &K) -> Arc<M> {
        if let Some(found) = self.series.read().expect("metrics lock").get(key) {
            return found.clone();
        }
        self.create(key)
    }

    /// Runs `f` on the series for `key`, created on first use. Cheaper than [`Family::get`]
    /// on every request: the series' reference count, shared by all cores, is not touched.
    pub fn with<R>(&self, key: &K, f: impl FnOnce(&M) -> R) -> R {
        if let Some(found) = self.series.read().expect("metrics lock").get(key) {
            return f(found);
        }
        f(&self.create(key))
    }

    fn create(&self, key: &K) -> Arc<M> {
        let mut series = self.series.write().expect("metrics lock");
        series
            .entry(key.clone())
            .or_insert_with(|| Arc::new((self.make)()))
            .clone()
    }

    /// All series with their label pairs, sorted for stable output.
    pub fn snapshot(&self) -> Vec<(Pairs, Arc<M>)> {
        let series = self.series.read().expect("metrics lock");
        let mut all: Vec<_> = series.iter().map(|(k, m)| (k.pairs(), m.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

impl<K: LabelSet> Family<K, Counter> {
    pub fn counters() -> Family<K, Counter> {
        Family::new(Counter::default)
    }
}

impl<K: LabelSet> Family<K, Gauge> {
    pub fn gauges() -> Family<K, Gauge> {
        Family::new(Gauge::default)
    }
}

/// A Prometheus text exposition being written.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

/// Labels as written by callers: borrowed pairs.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family: `# HELP` and `# TYPE`. All its samples must follow before the next one.
    pub fn header(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels.iter().map(|(k, v)| (*k, *v)));
        self.out.push(' ');
        write_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// A whole family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A whole family with a single labelled sample.
    pub fn single_labelled(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        labels: Labels<'_>,
        value: f64,
    ) {
        self.header(name, kind, help);
        self.sample(name, labels, value);
    }

    /// A whole counter family.
    pub fn counter_family<K: LabelSet>(
        &mut self,
        name: &str,
        help: &str,
        family: &Family<K, Counter>,
    ) {
        self.header(name, "counter", help);
        for (pairs, counter) in family.snapshot() {
            self.sample(name, &borrow(&pairs), counter.get() as f64);
        }
    }

    /// A whole gauge family.
    pub fn gauge_family<K: LabelSet>(&mut self, name: &str, help: &str, family: &Family<K, Gauge>) {
        self.header(name, "gauge", help);
        for (pairs, gauge) in family.snapshot() {
            self.sample(name, &borrow(&pairs), gauge.get() as f64);
        }
    }

    /// A whole histogram family.
    pub fn histogram_family<K: LabelSet>(
        &mut self,
        name: &str,
        help: &str,
        family: &Family<K, Histogram>,
    ) {
        self.header(name, "histogram", help);
        for (pairs, histogram) in family.snapshot() {
            self.histogram_series(name, &borrow(&pairs), &histogram);
        }
    }

    /// The `_bucket`, `_sum` and `_count` lines of one histogram series.
    pub fn histogram_series(&mut self, name: &str, labels: Labels<'_>, histogram: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, slot) in histogram.buckets.iter().enumerate() {
            cumulative += slot.load(Ordering::Relaxed);
            let le = match histogram.bounds.get(i) {
                Some(bound) => format_value(*bound),
                None => "+Inf".to_string(),
            };
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, cumulative as f64);
        }
        let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// The value of one sample in an exposition, e.g. `name{label="x"}`: for tests, unit and
/// integration, that read back what was rendered.
pub fn sample_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn borrow<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn write_labels<'a>(out: &mut String, labels: impl Iterator<Item = (&'a str, &'a str)>) {
    let mut first = true;
    for (name, value) in labels {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(name);
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
    if !first {
        out.push('}');
    }
}

fn write_value(out: &mut String, value: f64) {
    out.push_str(&format_value(value));
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, Eq, Hash)]
    struct Route(&'static str);

    impl LabelSet for Route {
        fn pairs(&self) -> Pairs {
            vec![("route", self.0.to_string())]
        }
    }

    #[test]
    fn histograms_are_cumulative_and_end_with_inf_equal_to_count() {
        let family: Family<Route, Histogram> = Family::new(|| Histogram::new(&[0.1, 1.0]));
        let h = family.get(&Route("a"));
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(5));
        let mut out = Exposition::new();
        out.histogram_family("x_seconds", "help", &family);
        let text = out.finish();
        assert!(
            text.contains("x_seconds_bucket{route=\"a\",le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{route=\"a\",le=\"1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{route=\"a\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("x_seconds_sum{route=\"a\"} 5.55\n"), "{text}");
        assert!(text.contains("x_seconds_count{route=\"a\"} 3\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let family: Family<Route, Counter> = Family::counters();
        family.get(&Route("a\"b\\c\nd")).inc();
        let mut out = Exposition::new();
        out.counter_family("y_total", "line one\nline two", &family);
        let text = out.finish();
        assert!(
            text.contains("# HELP y_total line one\\nline two\n"),
            "{text}"
        );
        assert!(
            text.contains("y_total{route=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{text}"
        );
    }
}
