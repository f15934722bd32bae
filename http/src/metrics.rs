//! Prometheus metrics: one global `metrics` recorder per process, rendered by `GET /metrics`.
//!
//! The HTTP metrics, recorded by [`crate::middleware::request_context`]:
//! - `http_requests_total{method, route, status}`: answered requests;
//! - `http_request_duration_seconds{method, route}`: a histogram of their latency.
//!
//! `route` is the matched route pattern (`/api/v1/projects/{id}`), never the raw path, so ids do
//! not multiply the series; requests that match no route are labelled [`UNMATCHED_ROUTE`].

use std::sync::OnceLock;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Answered HTTP requests, by method, route pattern and status.
pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
/// Latency of HTTP requests in seconds, by method and route pattern.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
/// Seconds since the process started serving (set when `/metrics` is scraped).
pub const UPTIME_SECONDS: &str = "atelier_uptime_seconds";
/// The `route` label of requests that match no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Histogram buckets of `http_request_duration_seconds`: 1 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histogram samples are folded in when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder: installed as the global `metrics` recorder on the first
/// call (later calls, such as the many apps of a test process, share it), with the metrics
/// described and a background thread doing the exporter's upkeep.
///
/// If another global recorder was installed first, the handle returned renders only the
/// descriptions (a warning is logged): metrics go to that other recorder.
pub fn recorder() -> PrometheusHandle {
    HANDLE.get_or_init(install).clone()
}

fn install() -> PrometheusHandle {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(HTTP_REQUEST_DURATION_SECONDS.to_owned()),
            LATENCY_BUCKETS,
        )
        .expect("the latency buckets are not empty");
    let handle = match builder.install_recorder() {
        Ok(handle) => handle,
        Err(error) => {
            tracing::warn!(%error, "a metrics recorder is already installed; /metrics will be empty");
            PrometheusBuilder::new().build_recorder().handle()
        }
    };
    describe();
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the metrics upkeep thread; scrapes will do it");
    }
    handle
}

fn describe() {
    metrics::describe_counter!(
        HTTP_REQUESTS_TOTAL,
        Unit::Count,
        "HTTP requests answered, by method, route pattern and status"
    );
    metrics::describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP request latency, from the first middleware to the response, by method and route pattern"
    );
    metrics::describe_gauge!(
        crate::live::hub::CONNECTIONS,
        Unit::Count,
        "Live feed connections (WebSocket and SSE) open now"
    );
    metrics::describe_counter!(
        crate::live::hub::DELIVERED,
        Unit::Count,
        "Events queued for live feed clients"
    );
    metrics::describe_counter!(
        crate::live::hub::LAGGED,
        Unit::Count,
        "Live feed clients closed because they fell behind their queue"
    );
    metrics::describe_gauge!(
        crate::live::hub::HUB_POSITION_COMMIT,
        Unit::Count,
        "The commit part of the last position the live feed's hub dispatched"
    );
    metrics::describe_gauge!(
        UPTIME_SECONDS,
        Unit::Seconds,
        "Seconds since this Atelier process started serving"
    );
}

/// Records one answered request.
pub fn record_request(method: &str, route: &str, status: u16, latency: Duration) {
    metrics::counter!(
        HTTP_REQUESTS_TOTAL,
        "method" => method.to_owned(),
        "route" => route.to_owned(),
        "status" => status.to_string(),
    )
    .increment(1);
    metrics::histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        "method" => method.to_owned(),
        "route" => route.to_owned(),
    )
    .record(latency.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorder_is_installed_once_and_renders_recorded_requests() {
        let _first = recorder();
        let again = recorder();
        record_request("GET", "/unit-test/{id}", 200, Duration::from_millis(3));
        let text = again.render();
        assert!(
            text.contains(
                r#"http_requests_total{method="GET",route="/unit-test/{id}",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("http_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
