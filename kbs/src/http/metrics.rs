//! Per-endpoint request metrics, served at `GET /metrics` in the Prometheus text format.
//!
//! Names follow Trustee's broker where the meaning is the same (`kbs_http_requests_total`,
//! `kbs_http_request_duration_seconds` with Trustee's buckets), with one label, `endpoint`
//! (`auth`, `attest`, `resource`, `admin`, `other`), so that sums over it give Trustee's series.
//! Failures are counted by status class. No other label: never a resource path, token or key.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The path metrics are served at (not itself counted).
pub(super) const METRICS_PATH: &str = "/metrics";

/// Which part of the API a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Auth,
    Attest,
    Resource,
    Admin,
    Other,
}

impl Endpoint {
    const ALL: [Self; 5] = [
        Self::Auth,
        Self::Attest,
        Self::Resource,
        Self::Admin,
        Self::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Attest => "attest",
            Self::Resource => "resource",
            Self::Admin => "admin",
            Self::Other => "other",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Auth => 0,
            Self::Attest => 1,
            Self::Resource => 2,
            Self::Admin => 3,
            Self::Other => 4,
        }
    }

    /// Classifies a request by method and path, as the router routes it.
    pub(super) fn of(method: &Method, path: &str) -> Self {
        let Some(rest) = path.strip_prefix("/kbs/v0/") else {
            return Self::Other;
        };
        match (method, rest) {
            (&Method::POST, "auth") => Self::Auth,
            (&Method::POST, "attest") => Self::Attest,
            (&Method::GET, r) if r.starts_with("resource/") => Self::Resource,
            (&Method::POST, r) if r.starts_with("resource/") => Self::Admin,
            (_, "resource-policy" | "attestation-policy" | "reference-values") => Self::Admin,
            (_, r) if r.starts_with("admin/") => Self::Admin,
            _ => Self::Other,
        }
    }
}

/// Upper bounds of the latency buckets (Trustee's), with their `le` labels.
const BUCKETS: [(Duration, &str); 7] = [
    (Duration::from_micros(500), "0.0005"),
    (Duration::from_millis(1), "0.001"),
    (Duration::from_millis(5), "0.005"),
    (Duration::from_millis(10), "0.01"),
    (Duration::from_millis(50), "0.05"),
    (Duration::from_millis(500), "0.5"),
    (Duration::from_secs(1), "1"),
];

/// Status classes counted as failures.
const FAILURE_CLASSES: [&str; 2] = ["4xx", "5xx"];

#[derive(Debug, Default)]
struct EndpointMetrics {
    requests: AtomicU64,
    /// By [`FAILURE_CLASSES`].
    failures: [AtomicU64; 2],
    /// Non-cumulative counts per bucket; the last slot is above every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// The broker's request metrics.
#[derive(Debug, Default)]
pub(super) struct Metrics {
    endpoints: [EndpointMetrics; Endpoint::ALL.len()],
}

impl Metrics {
    /// Records one finished request.
    pub(super) fn record(&self, endpoint: Endpoint, status: u16, elapsed: Duration) {
        let Some(m) = self.endpoints.get(endpoint.index()) else {
            return;
        };
        m.requests.fetch_add(1, Ordering::Relaxed);
        let class = match status {
            400..=499 => Some(0),
            500..=599 => Some(1),
            _ => None,
        };
        if let Some(counter) = class.and_then(|i| m.failures.get(i)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = BUCKETS
            .iter()
            .position(|(bound, _)| elapsed <= *bound)
            .unwrap_or(BUCKETS.len());
        if let Some(counter) = m.buckets.get(bucket) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        m.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The metrics in the Prometheus text exposition format (0.0.4).
    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        let each = |out: &mut String, f: &dyn Fn(&mut String, &'static str, &EndpointMetrics)| {
            for (endpoint, m) in Endpoint::ALL.iter().zip(&self.endpoints) {
                f(out, endpoint.label(), m);
            }
        };
        out.push_str("# HELP kbs_http_requests_total Requests handled, by endpoint.\n");
        out.push_str("# TYPE kbs_http_requests_total counter\n");
        each(&mut out, &|out, label, m| {
            let n = m.requests.load(Ordering::Relaxed);
            let _ = writeln!(out, "kbs_http_requests_total{{endpoint=\"{label}\"}} {n}");
        });
        out.push_str(
            "# HELP kbs_http_request_failures_total Requests answered with an error status, \
             by endpoint and status class.\n",
        );
        out.push_str("# TYPE kbs_http_request_failures_total counter\n");
        each(&mut out, &|out, label, m| {
            for (class, counter) in FAILURE_CLASSES.iter().zip(&m.failures) {
                let n = counter.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "kbs_http_request_failures_total{{endpoint=\"{label}\",class=\"{class}\"}} {n}"
                );
            }
        });
        out.push_str(
            "# HELP kbs_http_request_duration_seconds Time from receiving a request to its \
             response, by endpoint.\n",
        );
        out.push_str("# TYPE kbs_http_request_duration_seconds histogram\n");
        each(&mut out, &|out, label, m| {
            let mut cumulative = 0u64;
            let les = BUCKETS.iter().map(|(_, le)| *le).chain(["+Inf"]);
            for (le, counter) in les.zip(&m.buckets) {
                cumulative = cumulative.saturating_add(counter.load(Ordering::Relaxed));
                let _ = writeln!(
                    out,
                    "kbs_http_request_duration_seconds_bucket{{endpoint=\"{label}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = Duration::from_nanos(m.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
            let _ = writeln!(
                out,
                "kbs_http_request_duration_seconds_sum{{endpoint=\"{label}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "kbs_http_request_duration_seconds_count{{endpoint=\"{label}\"}} {cumulative}"
            );
        });
        out
    }
}

/// Middleware recording every request except those for the metrics themselves.
pub(super) async fn track(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == METRICS_PATH {
        return next.run(request).await;
    }
    let endpoint = Endpoint::of(request.method(), request.uri().path());
    let start = Instant::now();
    let response = next.run(request).await;
    metrics.record(endpoint, response.status().as_u16(), start.elapsed());
    response
}

/// `GET /metrics`.
pub(super) async fn serve(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_classified_as_routed() {
        let cases = [
            (Method::POST, "/kbs/v0/auth", Endpoint::Auth),
            (Method::POST, "/kbs/v0/attest", Endpoint::Attest),
            (Method::GET, "/kbs/v0/resource/a/b/c", Endpoint::Resource),
            (Method::POST, "/kbs/v0/resource/a/b/c", Endpoint::Admin),
            (Method::GET, "/kbs/v0/resource-policy", Endpoint::Admin),
            (Method::POST, "/kbs/v0/attestation-policy", Endpoint::Admin),
            (Method::GET, "/kbs/v0/reference-values", Endpoint::Admin),
            (Method::GET, "/kbs/v0/admin/resources", Endpoint::Admin),
            (Method::GET, "/kbs/v0/auth", Endpoint::Other),
            (Method::GET, "/", Endpoint::Other),
            (Method::POST, "/kbs/v1/auth", Endpoint::Other),
        ];
        for (method, path, expected) in cases {
            assert_eq!(Endpoint::of(&method, path), expected, "{method} {path}");
        }
    }

    #[test]
    fn render_counts_failures_by_class_and_buckets_cumulatively() {
        let metrics = Metrics::default();
        metrics.record(Endpoint::Auth, 200, Duration::from_micros(100));
        metrics.record(Endpoint::Auth, 401, Duration::from_millis(3));
        metrics.record(Endpoint::Auth, 503, Duration::from_secs(2));
        let text = metrics.render();
        let value = |series: &str| -> String {
            text.lines()
                .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
                .to_owned()
        };
        assert_eq!(value("kbs_http_requests_total{endpoint=\"auth\"}"), "3");
        assert_eq!(value("kbs_http_requests_total{endpoint=\"attest\"}"), "0");
        assert_eq!(
            value("kbs_http_request_failures_total{endpoint=\"auth\",class=\"4xx\"}"),
            "1"
        );
        assert_eq!(
            value("kbs_http_request_failures_total{endpoint=\"auth\",class=\"5xx\"}"),
            "1"
        );
        let bucket = |le: &str| {
            value(&format!(
                "kbs_http_request_duration_seconds_bucket{{endpoint=\"auth\",le=\"{le}\"}}"
            ))
        };
        assert_eq!(bucket("0.0005"), "1");
        assert_eq!(bucket("0.001"), "1");
        assert_eq!(bucket("0.005"), "2");
        assert_eq!(bucket("1"), "2");
        assert_eq!(bucket("+Inf"), "3");
        assert_eq!(
            value("kbs_http_request_duration_seconds_count{endpoint=\"auth\"}"),
            "3"
        );
        let sum: f64 = value("kbs_http_request_duration_seconds_sum{endpoint=\"auth\"}")
            .parse()
            .unwrap();
        assert!((sum - 2.0031).abs() < 1e-9, "{sum}");
        // Every sample line is `name{labels} number`; comments are HELP or TYPE.
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                assert!(comment.starts_with("HELP ") || comment.starts_with("TYPE "));
            } else {
                let (_, number) = line.rsplit_once(' ').unwrap();
                assert!(number.parse::<f64>().is_ok(), "{line}");
            }
        }
    }
}
