//! The Prometheus metrics: every series sessiongate exports, created once when the app starts
//! and held as plain handles, so recording an event is an atomic add and never a label lookup.
//! The text (OpenMetrics) is written by `prometheus-client` when `/metrics` is scraped; the
//! gauges that describe state (sessions, connections, tunnels) are read at that moment from
//! whoever owns the state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry};

use crate::ops::outcome::Outcome;

/// How a request to the upstream failed, as `upstream_errors_total` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No connection: refused, unreachable, or the name did not resolve.
    Connect,
    /// No response head within `upstream.timeout`.
    Timeout,
    /// The connection was closed or broken before a response came.
    Reset,
    /// The TLS handshake with an https upstream failed (certificate, protocol).
    Tls,
}

impl UpstreamFailure {
    const ALL: [UpstreamFailure; 4] = [
        UpstreamFailure::Connect,
        UpstreamFailure::Timeout,
        UpstreamFailure::Reset,
        UpstreamFailure::Tls,
    ];

    fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Reset => "reset",
            UpstreamFailure::Tls => "tls",
        }
    }
}

/// How a sign-in attempt (`POST {prefix}/login`) ended, as `logins_total` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginResult {
    Success,
    /// The right password for a user with TOTP: the code form comes next.
    CodeRequired,
    WrongCredentials,
    RateLimited,
    /// Too many logins were being checked at once.
    Busy,
    /// A cross-site post or a missing or expired form token.
    Csrf,
    /// The session store or the shared counters could not answer.
    Unavailable,
    /// An incomplete or oversized form.
    Invalid,
}

impl LoginResult {
    const ALL: [LoginResult; 8] = [
        LoginResult::Success,
        LoginResult::CodeRequired,
        LoginResult::WrongCredentials,
        LoginResult::RateLimited,
        LoginResult::Busy,
        LoginResult::Csrf,
        LoginResult::Unavailable,
        LoginResult::Invalid,
    ];

    fn as_str(self) -> &'static str {
        match self {
            LoginResult::Success => "success",
            LoginResult::CodeRequired => "code_required",
            LoginResult::WrongCredentials => "wrong_credentials",
            LoginResult::RateLimited => "rate_limited",
            LoginResult::Busy => "busy",
            LoginResult::Csrf => "csrf",
            LoginResult::Unavailable => "unavailable",
            LoginResult::Invalid => "invalid",
        }
    }
}

/// Why a session ended, as `sessions_ended_total` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    Logout,
    Idle,
    Absolute,
    /// Ended by someone or something else than its own logout: sign out everywhere, the
    /// sessions page, a reload that removed or changed the user, a new login in its browser.
    Revoked,
}

impl EndReason {
    const ALL: [EndReason; 4] = [
        EndReason::Logout,
        EndReason::Idle,
        EndReason::Absolute,
        EndReason::Revoked,
    ];

    fn as_str(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::Idle => "idle",
            EndReason::Absolute => "absolute",
            EndReason::Revoked => "revoked",
        }
    }
}

type Labels = Vec<(&'static str, &'static str)>;

/// The five status classes, 1xx to 5xx.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Every series, with its handles. Cloning a handle shares its value.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `[outcome][status class]`.
    requests: [[Counter; 5]; 7],
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    upstream_errors: [Counter; 4],
    logins: [Counter; 8],
    sessions_ended: [Counter; 4],
    pub sessions: Gauge,
    pub connections: Gauge,
    pub tunnels: Gauge,
    pub store_errors: Counter,
    pub redis_duration: Histogram,
    /// `session.state_dir`: 1 while writes to it fail, and the writes that failed.
    pub state_degraded: Gauge,
    pub state_write_errors: Counter,
    /// Sign-ins through providers, by provider id and result.
    provider_logins: Family<Vec<(String, String)>, Counter>,
}

/// `session.state_dir`'s health: degraded (0 or 1) and the writes that failed.
fn state_series(registry: &mut Registry) -> (Gauge, Counter) {
    let degraded = registered(
        registry,
        "state_degraded",
        "1 while session.state_dir cannot be written (sessions are served from memory)",
        Gauge::default(),
    );
    let write_errors = registered(
        registry,
        "state_write_errors",
        "Writes to session.state_dir that failed (disk full, read-only)",
        Counter::default(),
    );
    (degraded, write_errors)
}

impl Metrics {
    /// Every series. `memory_store`: whether the sessions are in this process, so that
    /// `sessions` (a count only this process knows) is exported.
    pub fn new(memory_store: bool) -> Metrics {
        let mut registry = Registry::with_prefix("sessiongate");
        let requests = requests_by_outcome(&mut registry);
        let (request_duration, upstream_duration) = durations(&mut registry);
        let upstream_errors = labelled(
            &mut registry,
            "upstream_errors",
            "Requests the upstream did not answer, by how they failed",
            "kind",
            UpstreamFailure::ALL.map(UpstreamFailure::as_str),
        );
        let logins = labelled(
            &mut registry,
            "logins",
            "Sign-in attempts (POST to the login endpoint), by how they ended",
            "result",
            LoginResult::ALL.map(LoginResult::as_str),
        );
        let sessions_ended = labelled(
            &mut registry,
            "sessions_ended",
            "Sessions ended, by why (idle and absolute: memory store only)",
            "reason",
            EndReason::ALL.map(EndReason::as_str),
        );
        // A count only this process knows: exported only when the sessions are here.
        let sessions = Gauge::default();
        if memory_store {
            registry.register(
                "sessions",
                "Live sessions in this process's memory store",
                sessions.clone(),
            );
        }
        let connections = registered(
            &mut registry,
            "connections",
            "Client connections open, tunnels included",
            Gauge::default(),
        );
        let tunnels = registered(
            &mut registry,
            "tunnels",
            "Upgraded connections (WebSockets and others) being relayed",
            Gauge::default(),
        );
        let provider_logins = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "provider_logins",
            "Sign-ins through OpenID Connect providers, by provider and how they ended",
            provider_logins.clone(),
        );
        let store_errors = registered(
            &mut registry,
            "store_errors",
            "Session store commands that failed or passed redis.timeout",
            Counter::default(),
        );
        let redis_duration = registered(
            &mut registry,
            "redis_command_duration_seconds",
            "Time one Redis command or script took, failures included",
            Histogram::new(REDIS_BUCKETS),
        );
        let (state_degraded, state_write_errors) = state_series(&mut registry);
        Metrics {
            state_degraded,
            state_write_errors,
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            logins,
            sessions_ended,
            sessions,
            connections,
            tunnels,
            store_errors,
            redis_duration,
            provider_logins,
        }
    }

    pub fn request(&self, decision: Outcome, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[decision as usize][class].inc();
    }

    pub fn upstream_error(&self, kind: UpstreamFailure) {
        self.upstream_errors[kind as usize].inc();
    }

    pub fn login(&self, result: LoginResult) {
        self.logins[result as usize].inc();
    }

    /// A sign-in through `provider` ended with `result` (`success`, `denied`, `refused`,
    /// `not_allowed`, `restarted`, `unavailable`).
    pub fn provider_login(&self, provider: &str, result: &'static str) {
        self.provider_logins
            .get_or_create(&vec![
                ("provider".to_string(), provider.to_string()),
                ("result".to_string(), result.to_string()),
            ])
            .inc();
    }

    pub fn sessions_ended(&self, reason: EndReason, n: usize) {
        if n > 0 {
            self.sessions_ended[reason as usize].inc_by(n as u64);
        }
    }

    /// The handle `reason`'s count is kept in, for a store that counts its own expiries.
    pub fn ended_counter(&self, reason: EndReason) -> Counter {
        self.sessions_ended[reason as usize].clone()
    }

    /// The whole exposition, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// A counter family with one series per label value, created up front.
/// `requests_total`, one counter per outcome and status class, made up front so that
/// counting a request is an index, not a label lookup.
fn requests_by_outcome(
    registry: &mut Registry,
) -> [[Counter; STATUS_CLASSES.len()]; Outcome::ALL.len()] {
    let requests_family = Family::<Labels, Counter>::default();
    let requests = Outcome::ALL.map(|d| {
        std::array::from_fn(|class| {
            requests_family
                .get_or_create(&vec![
                    ("decision", d.as_str()),
                    ("status_class", STATUS_CLASSES[class]),
                ])
                .clone()
        })
    });
    registry.register(
        "requests",
        "Requests answered, by what the gate decided and the class of the status sent",
        requests_family,
    );
    requests
}

/// How long requests took, and how long the upstream took of that.
fn durations(registry: &mut Registry) -> (Histogram, Histogram) {
    let request_duration = registered(
        registry,
        "request_duration_seconds",
        "Time from a request's head to its response's head (the body is streamed after)",
        Histogram::new(LATENCY_BUCKETS),
    );
    let upstream_duration = registered(
        registry,
        "upstream_duration_seconds",
        "Time the upstream took to send a response head, connecting included",
        Histogram::new(LATENCY_BUCKETS),
    );
    (request_duration, upstream_duration)
}

/// `metric`, registered as `name` with `help`; the handle to record with.
fn registered<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

fn labelled<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    key: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    let family = Family::<Labels, Counter>::default();
    let counters = values.map(|v| family.get_or_create(&vec![(key, v)]).clone());
    registry.register(name, help, family);
    counters
}

/// Request latencies: 0.5 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Redis commands: 0.1 ms to the longest sensible redis.timeout.
const REDIS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
const MAX_BUCKETS: usize = 16;

/// A histogram of durations kept in atomics. prometheus-client's own histogram takes a lock
/// for every observation, which all workers would share on every request; this one is a few
/// relaxed atomic adds, and prometheus-client still writes its text.
#[derive(Clone, Debug)]
pub struct Histogram(std::sync::Arc<HistogramInner>);

#[derive(Debug)]
pub struct HistogramInner {
    bounds: &'static [f64],
    /// Upper bounds in nanoseconds, for comparing without floating point.
    bounds_nanos: [u64; MAX_BUCKETS],
    /// Observations per bucket (not cumulative); the last one is +Inf.
    counts: [AtomicU64; MAX_BUCKETS + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        assert!(bounds.len() <= MAX_BUCKETS, "too many histogram buckets");
        let mut bounds_nanos = [u64::MAX; MAX_BUCKETS];
        for (n, b) in bounds_nanos.iter_mut().zip(bounds) {
            *n = (b * 1e9) as u64;
        }
        Histogram(std::sync::Arc::new(HistogramInner {
            bounds,
            bounds_nanos,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let h = &self.0;
        let bucket = h.bounds_nanos[..h.bounds.len()]
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(h.bounds.len());
        h.counts[bucket].fetch_add(1, Ordering::Relaxed);
        h.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        let mut buckets = Vec::with_capacity(h.bounds.len() + 1);
        let mut count = 0;
        for (i, bound) in h.bounds.iter().chain([&f64::INFINITY]).enumerate() {
            let n = h.counts[i].load(Ordering::Relaxed);
            count += n;
            buckets.push((*bound, n));
        }
        let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_puts_each_duration_in_its_bucket() {
        let metrics = Metrics::new(true);
        let h = &metrics.request_duration;
        h.observe(Duration::from_micros(300)); // <= 0.5 ms
        h.observe(Duration::from_millis(1)); // <= 1 ms, on the bound
        h.observe(Duration::from_secs(60)); // +Inf
        let text = metrics.encode();
        for line in [
            "sessiongate_request_duration_seconds_bucket{le=\"0.0005\"} 1",
            "sessiongate_request_duration_seconds_bucket{le=\"0.001\"} 2",
            "sessiongate_request_duration_seconds_bucket{le=\"30.0\"} 2",
            "sessiongate_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "sessiongate_request_duration_seconds_count 3",
            "sessiongate_request_duration_seconds_sum 60.0013",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn every_labelled_series_exists_before_its_first_event() {
        let metrics = Metrics::new(true);
        metrics.request(Outcome::Forbidden, 403);
        let text = metrics.encode();
        assert!(
            text.contains(
                "sessiongate_requests_total{decision=\"forbidden\",status_class=\"4xx\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("sessiongate_requests_total{decision=\"allow\",status_class=\"2xx\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("sessiongate_logins_total{result=\"csrf\"} 0"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
