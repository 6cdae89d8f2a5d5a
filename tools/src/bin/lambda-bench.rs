#![forbid(unsafe_code)]
//! Lambda figures for the real function binaries, through the in-process Runtime API:
//! cold start (process spawn → first response, including the first database connection),
//! warm invocation latency, and peak RSS.
//!
//!     cargo build --release -p health -p list-tasks …   (scripts/bench-lambda.sh does this)
//!     lambda-bench --dir target/release --spawns 20 --warm 1000

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tasks_shared::http::ROUTES;
use tasks_tools::runtime_api::{Outcome, RuntimeApi, lambda_environment};
use tasks_tools::tokens::{TokenOptions, mint_hs256};
use tokio::process::Command;

const SECRET: &str = "lambda-bench-secret-0123456789abcdef0123";

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn event(function: &str, token: &str) -> Value {
    let path = format!(
        "{}/events/{function}.json",
        concat!(env!("CARGO_MANIFEST_DIR"), "/..")
    );
    let mut event: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("event")).expect("json");
    if event["headers"].get("authorization").is_some() {
        event["headers"]["authorization"] = json!(format!("Bearer {token}"));
    }
    event
}

struct Sample {
    cold: Duration,
    status: u64,
}

async fn spawn(
    binary: &PathBuf,
    function: &str,
    database_url: &str,
) -> (RuntimeApi, tokio::process::Child, Instant) {
    let api = RuntimeApi::start().await.expect("runtime api");
    let started = Instant::now();
    let child = Command::new(binary)
        .env_clear()
        .envs(lambda_environment(&api, function))
        .env("DATABASE_URL", database_url)
        .env("JWT_SECRET", SECRET)
        .env("AWS_LAMBDA_LOG_LEVEL", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn function");
    (api, child, started)
}

async fn invoke(api: &RuntimeApi, event: &Value) -> u64 {
    match api.invoke(event.clone(), Duration::from_secs(30)).await {
        Some(Outcome::Response(document)) => document["statusCode"].as_u64().unwrap_or(0),
        other => panic!("invocation failed: {other:?}"),
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn stats(mut values: Vec<Duration>) -> (Duration, Duration, Duration) {
    values.sort();
    let median = values[values.len() / 2];
    let p99 = values[((values.len() * 99) / 100).min(values.len() - 1)];
    (median, p99, *values.last().expect("samples"))
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = PathBuf::from(arg("--dir", "target/release"));
    let spawns: usize = arg("--spawns", "20").parse().expect("--spawns");
    let warm: usize = arg("--warm", "1000").parse().expect("--warm");
    let database_url = arg(
        "--database-url",
        "postgres://postgres@127.0.0.1:5432/tasks_bench",
    );
    tasks_shared::migrate::prepare(&database_url, None)
        .await
        .expect("prepare the benchmark database");
    let token = mint_hs256(
        SECRET,
        "lambda-bench-user",
        &TokenOptions {
            ttl_seconds: 3600,
            ..Default::default()
        },
    );

    println!(
        "| function | cold start median ms | cold max ms | status | warm median ms | warm p99 ms | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for route in &ROUTES {
        let function = route.function.name();
        let binary = dir.join(function);
        let event = event(function, &token);
        let mut samples = Vec::new();
        for _ in 0..spawns {
            let (api, mut child, started) = spawn(&binary, function, &database_url).await;
            let status = invoke(&api, &event).await;
            samples.push(Sample {
                cold: started.elapsed(),
                status,
            });
            let _ = child.kill().await;
        }
        let statuses: std::collections::BTreeSet<u64> = samples.iter().map(|s| s.status).collect();
        let (cold_median, _, cold_max) = stats(samples.iter().map(|s| s.cold).collect());
        // Warm: one process, `warm` sequential invocations after the first.
        let (api, mut child, _) = spawn(&binary, function, &database_url).await;
        invoke(&api, &event).await;
        let mut latencies = Vec::with_capacity(warm);
        for _ in 0..warm {
            let sent = Instant::now();
            invoke(&api, &event).await;
            latencies.push(sent.elapsed());
        }
        let rss = child.id().map(peak_rss_kib).unwrap_or(0);
        let _ = child.kill().await;
        let (warm_median, warm_p99, _) = stats(latencies);
        println!(
            "| {function} | {} | {} | {statuses:?} | {} | {} | {:.1} |",
            ms(cold_median),
            ms(cold_max),
            ms(warm_median),
            ms(warm_p99),
            rss as f64 / 1024.0
        );
    }
}
