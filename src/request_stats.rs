//! Statistics of answered requests: Prometheus counters and duration histograms by route,
//! method and status, in-flight gauges, and hdrhistogram latency percentiles per route for
//! `GET /admin/stats`.
//!
//! Durations are measured from a request's arrival to its response head; streaming a large
//! body afterwards does not count. Labels come from bounded sets only: listener, route name
//! (or a fixed name for built-in endpoints), a known method, a status code.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram as Hdr;
use http::Method;
use serde_json::{Value, json};

use crate::metrics::{
    Counter, Exposition, Family, Gauge, Histogram, LATENCY_BUCKETS, LabelSet, Pairs,
};

/// Which listener answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Listener {
    Proxy,
    Admin,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Proxy => "proxy",
            Listener::Admin => "admin",
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct RequestKey {
    listener: Listener,
    route: Arc<str>,
    method: &'static str,
    status: u16,
}

impl LabelSet for RequestKey {
    fn pairs(&self) -> Pairs {
        vec![
            ("listener", self.listener.as_str().to_string()),
            ("route", self.route.to_string()),
            ("method", self.method.to_string()),
            ("status", self.status.to_string()),
        ]
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct RouteKey {
    listener: Listener,
    route: Arc<str>,
    method: &'static str,
}

impl LabelSet for RouteKey {
    fn pairs(&self) -> Pairs {
        vec![
            ("listener", self.listener.as_str().to_string()),
            ("route", self.route.to_string()),
            ("method", self.method.to_string()),
        ]
    }
}

/// Latency series are kept per listener and route.
type SeriesKey = (Listener, Arc<str>);

pub struct RequestStats {
    requests: Family<RequestKey, Counter>,
    durations: Family<RouteKey, Histogram>,
    in_flight_proxy: Gauge,
    in_flight_admin: Gauge,
    /// Connections closed because the client read nothing for `server.send_timeout_ms`.
    send_timeouts: Arc<Counter>,
    /// Microsecond latencies per (listener, route); a std mutex because recording is a few
    /// nanoseconds and never awaits.
    latency: Mutex<BTreeMap<SeriesKey, Hdr<u64>>>,
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats {
            requests: Family::counters(),
            durations: Family::new(|| Histogram::new(LATENCY_BUCKETS)),
            in_flight_proxy: Gauge::default(),
            in_flight_admin: Gauge::default(),
            send_timeouts: Arc::default(),
            latency: Mutex::new(BTreeMap::new()),
        }
    }
}

/// Methods outside the standard set share one label value, so a client cannot grow the label
/// set with invented methods.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl RequestStats {
    fn in_flight(&self, listener: Listener) -> &Gauge {
        match listener {
            Listener::Proxy => &self.in_flight_proxy,
            Listener::Admin => &self.in_flight_admin,
        }
    }

    pub fn started(&self, listener: Listener) {
        self.in_flight(listener).inc();
    }

    /// Records one answered request and ends its in-flight span.
    pub fn finished(
        &self,
        listener: Listener,
        route: &Arc<str>,
        method: &Method,
        status: u16,
        elapsed: Duration,
    ) {
        self.in_flight(listener).dec();
        let method = method_label(method);
        let key = RequestKey {
            listener,
            route: route.clone(),
            method,
            status,
        };
        self.requests.with(&key, Counter::inc);
        let key = RouteKey {
            listener,
            route: key.route,
            method,
        };
        self.durations
            .with(&key, |durations| durations.observe(elapsed));
        let micros = elapsed.as_micros().clamp(1, u64::MAX as u128) as u64;
        let mut latency = self.latency.lock().expect("latency lock");
        latency
            .entry((listener, route.clone()))
            .or_insert_with(|| {
                Hdr::new_with_bounds(1, 3_600_000_000, 2).expect("valid hdrhistogram bounds")
            })
            .saturating_record(micros);
    }

    pub fn proxy_in_flight(&self) -> i64 {
        self.in_flight_proxy.get()
    }

    /// The counter a connection's `SendTimeout` increments when it gives up.
    pub fn send_timeouts(&self) -> Arc<Counter> {
        self.send_timeouts.clone()
    }

    pub fn render(&self, out: &mut Exposition) {
        out.single(
            "seawall_http_send_timeouts_total",
            "counter",
            "Connections closed because the client read nothing of its response for server.send_timeout_ms.",
            self.send_timeouts.get() as f64,
        );
        out.counter_family(
            "seawall_http_requests_total",
            "HTTP requests answered, by listener, route, method and status code.",
            &self.requests,
        );
        out.histogram_family(
            "seawall_http_request_duration_seconds",
            "Time from request arrival to response head, by listener, route and method.",
            &self.durations,
        );
        out.header(
            "seawall_http_requests_in_flight",
            "gauge",
            "Requests currently being served, by listener.",
        );
        for listener in [Listener::Proxy, Listener::Admin] {
            out.sample(
                "seawall_http_requests_in_flight",
                &[("listener", listener.as_str())],
                self.in_flight(listener).get() as f64,
            );
        }
    }

    /// Latency percentiles per route since start, in milliseconds.
    pub fn percentiles(&self) -> Value {
        let latency = self.latency.lock().expect("latency lock");
        let routes: Vec<Value> = latency
            .iter()
            .map(|((listener, route), h)| {
                let ms = |micros: u64| micros as f64 / 1000.0;
                json!({
                    "listener": listener.as_str(),
                    "route": route.as_ref(),
                    "count": h.len(),
                    "p50_ms": ms(h.value_at_quantile(0.5)),
                    "p90_ms": ms(h.value_at_quantile(0.9)),
                    "p99_ms": ms(h.value_at_quantile(0.99)),
                    "p99_9_ms": ms(h.value_at_quantile(0.999)),
                    "max_ms": ms(h.max()),
                    "mean_ms": (h.mean() / 10.0).round() / 100.0,
                })
            })
            .collect();
        json!({ "routes": routes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_recorded_latencies() {
        let stats = RequestStats::default();
        let route: Arc<str> = Arc::from("api");
        for ms in 1..=100u64 {
            stats.started(Listener::Proxy);
            stats.finished(
                Listener::Proxy,
                &route,
                &Method::GET,
                200,
                Duration::from_millis(ms),
            );
        }
        let p = &stats.percentiles()["routes"][0];
        assert_eq!(p["count"], 100);
        let p50 = p["p50_ms"].as_f64().unwrap();
        assert!((49.0..=51.0).contains(&p50), "{p50}");
        let max = p["max_ms"].as_f64().unwrap();
        assert!((99.0..=101.0).contains(&max), "{max}");
        assert_eq!(stats.proxy_in_flight(), 0);
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }
}
