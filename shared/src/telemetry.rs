//! One JSON line per request, carrying CloudWatch Embedded Metric Format (EMF) metrics.
//!
//! Both entry points (the Lambda functions and the local server) finish every response in
//! [`crate::handlers`], which wraps the request in [`observe`]: the line is written there, once,
//! after the response is built. CloudWatch turns the `_aws` block into metrics as it ingests the
//! log, so metrics cost no SDK call and no extra request. The template's `LogFormat: JSON` does
//! not get in the way: Lambda does not re-encode application log lines that are already JSON
//! (AWS Lambda guide, "Configuring JSON and plain text log formats"), so each line reaches
//! CloudWatch Logs as written (checked against the documentation, not in AWS). The line names the route *template*,
//! never the raw path, and carries no token, secret, email, title or description: only the
//! fields below.
//!
//! Counters that deeper layers contribute (database time, JWKS fetches, the cause of a 503) are
//! kept in a task-local for the duration of one request.

use std::cell::Cell;
use std::future::Future;
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The CloudWatch namespace of the metrics, unless `METRICS_NAMESPACE` names another (the SAM
/// template gives each stack its own, so two stacks' alarms never mix).
pub const DEFAULT_NAMESPACE: &str = "TasksApi";

fn namespace() -> &'static str {
    static NAMESPACE: OnceLock<String> = OnceLock::new();
    NAMESPACE.get_or_init(|| {
        std::env::var("METRICS_NAMESPACE")
            .ok()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
    })
}

/// What one request contributed below the handlers.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    db_time: Duration,
    jwks_fetches: u32,
    error_code: Option<&'static str>,
    unavailable: Option<Dependency>,
}

/// What a 503 was waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Database,
    Jwks,
}

tokio::task_local! {
    static STATS: Cell<Stats>;
}

fn update(change: impl FnOnce(&mut Stats)) {
    let _outside_a_request = STATS.try_with(|cell| {
        let mut stats = cell.get();
        change(&mut stats);
        cell.set(stats);
    });
}

/// Time spent in the database layer (checkout, connect, statement, resends).
pub fn add_db_time(elapsed: Duration) {
    update(|stats| stats.db_time += elapsed);
}

pub fn count_jwks_fetch() {
    update(|stats| stats.jwks_fetches += 1);
}

/// The contract error code this request is answered with, and for a 503 what caused it.
pub fn note_error(code: &'static str, unavailable: Option<Dependency>) {
    update(|stats| {
        stats.error_code = Some(code);
        stats.unavailable = unavailable;
    });
}

/// Who the request was, as far as the log line may say.
pub struct RequestMeta {
    /// The Lambda request id, or a new id on the local server.
    pub request_id: String,
    /// `"GET /api/tasks/{task_id}"`, or `"unmatched"`.
    pub route: String,
    pub trace_id: Option<String>,
}

/// The first request of a process is its cold start.
static COLD: AtomicBool = AtomicBool::new(true);

/// Where lines go: stdout (CloudWatch in Lambda), or a test's capture.
type Sink = Box<dyn Fn(&str) + Send + Sync>;
static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends every request line to `sink` instead of stdout (tests). First call wins.
pub fn capture(sink: impl Fn(&str) + Send + Sync + 'static) {
    let _already_set = SINK.set(Box::new(sink));
}

fn write_line(line: &str) {
    match SINK.get() {
        Some(sink) => sink(line),
        None => {
            let mut out = std::io::stdout().lock();
            let _best_effort = writeln!(out, "{line}");
        }
    }
}

/// Runs `respond` for one request and writes its line. `status_of` reads the status back from
/// what `respond` produced.
pub async fn observe<R>(
    meta: RequestMeta,
    respond: impl Future<Output = R>,
    status_of: impl Fn(&R) -> u16,
) -> R {
    let cold_start = COLD.swap(false, Ordering::Relaxed);
    let started = Instant::now();
    let (response, stats) = STATS
        .scope(Cell::new(Stats::default()), async {
            let response = respond.await;
            (response, STATS.with(Cell::get))
        })
        .await;
    let line = request_line(
        &meta,
        status_of(&response),
        started.elapsed(),
        &stats,
        cold_start,
    );
    write_line(&line);
    response
}

fn millis(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 1e6).round() / 1e3
}

/// The EMF directive: which top-level fields are metrics, and their dimensions. Everything in it
/// but the namespace is fixed, so it is plain data, serialized without building a JSON tree (the
/// line is written for every request; a `serde_json::Value` tree cost more than the rest of a
/// request's own work, BENCHMARKS.md "Exactly-once writes: load").
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Directive {
    namespace: &'static str,
    dimensions: [&'static [&'static str]; 2],
    metrics: [Metric; 8],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Metric {
    name: &'static str,
    unit: &'static str,
}

const fn metric(name: &'static str, unit: &'static str) -> Metric {
    Metric { name, unit }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Emf {
    timestamp: i64,
    cloud_watch_metrics: [Directive; 1],
}

/// One request's line. Field names are the metric and dimension names of [`Directive`].
#[derive(Serialize)]
struct Line<'a> {
    _aws: Emf,
    #[serde(rename = "type")]
    kind: &'static str,
    request_id: &'a str,
    route: &'a str,
    status: u16,
    status_class: &'static str,
    error_code: Option<&'static str>,
    trace_id: Option<&'a str>,
    cold_start: bool,
    requests: u32,
    server_errors: u32,
    latency: f64,
    db_time: f64,
    cold_starts: u32,
    unavailable_database: u32,
    unavailable_jwks: u32,
    jwks_fetches: u32,
}

fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

fn request_line(
    meta: &RequestMeta,
    status: u16,
    latency: Duration,
    stats: &Stats,
    cold_start: bool,
) -> String {
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let count = |yes: bool| u32::from(yes);
    let line = Line {
        _aws: Emf {
            timestamp: i64::try_from(timestamp).unwrap_or_default(),
            cloud_watch_metrics: [Directive {
                namespace: namespace(),
                // Totals for the alarms, and a breakdown by route and status class.
                dimensions: [&[], &["route", "status_class"]],
                metrics: [
                    metric("requests", "Count"),
                    metric("server_errors", "Count"),
                    metric("latency", "Milliseconds"),
                    metric("db_time", "Milliseconds"),
                    metric("cold_starts", "Count"),
                    metric("unavailable_database", "Count"),
                    metric("unavailable_jwks", "Count"),
                    metric("jwks_fetches", "Count"),
                ],
            }],
        },
        kind: "request",
        request_id: &meta.request_id,
        route: &meta.route,
        status,
        status_class: status_class(status),
        error_code: stats.error_code,
        trace_id: meta.trace_id.as_deref(),
        cold_start,
        requests: 1,
        server_errors: count(status >= 500),
        latency: millis(latency),
        db_time: millis(stats.db_time),
        cold_starts: count(cold_start),
        unavailable_database: count(stats.unavailable == Some(Dependency::Database)),
        unavailable_jwks: count(stats.unavailable == Some(Dependency::Jwks)),
        jwks_fetches: stats.jwks_fetches,
    };
    // Only strings, integers and finite floats: serializing cannot fail.
    serde_json::to_string(&line).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deeper_layers_add_to_the_requests_line() {
        let meta = RequestMeta {
            request_id: "req-1".into(),
            route: "POST /api/tasks".into(),
            trace_id: Some("Root=1-abc".into()),
        };
        let (status, stats) = STATS
            .scope(Cell::new(Stats::default()), async {
                add_db_time(Duration::from_millis(2));
                add_db_time(Duration::from_millis(3));
                count_jwks_fetch();
                note_error("SERVICE_UNAVAILABLE", Some(Dependency::Database));
                (503, STATS.with(Cell::get))
            })
            .await;
        let line: serde_json::Value = serde_json::from_str(&request_line(
            &meta,
            status,
            Duration::from_millis(7),
            &stats,
            true,
        ))
        .unwrap();
        assert_eq!(line["db_time"], 5.0);
        assert_eq!(line["jwks_fetches"], 1);
        assert_eq!(line["status_class"], "5xx");
        assert_eq!(line["server_errors"], 1);
        assert_eq!(line["unavailable_database"], 1);
        assert_eq!(line["unavailable_jwks"], 0);
        assert_eq!(line["error_code"], "SERVICE_UNAVAILABLE");
        assert_eq!(line["cold_starts"], 1);
        // Every metric the EMF block declares is a number at the top level.
        let metrics = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap();
        for metric in metrics {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_number(), "{name}");
        }
        for dimension in ["route", "status_class"] {
            assert!(line[dimension].is_string(), "{dimension}");
        }
    }

    #[test]
    fn outside_a_request_counters_are_ignored() {
        add_db_time(Duration::from_millis(1));
        count_jwks_fetch();
    }
}
