#![forbid(unsafe_code)]
//! CPU per warm invocation of the function binaries against the local server's CPU for the same
//! request (issue 17): the driver behind `scripts/bench-warm-cpu.sh`, which builds the release
//! binaries and points `TASKS_FUNCTION_DIR` at them. Ignored in normal runs (it is a
//! measurement, and takes a minute); CI keeps it compiling.
//!
//! Each function runs under the in-test Runtime API; `tasks-api serve` (from the same directory)
//! gets the same requests over one keep-alive connection. The figure is the process's CPU time
//! (`utime + stime` from `/proc/PID/stat`, all threads) over `WARM_CPU_INVOCATIONS` sequential
//! requests after a warm-up, divided by their number: the driver's own work is not in it. Both
//! log as deployed: JSON at INFO for the functions (the template's `LogFormat: JSON`, no
//! level set), the default subscriber for the server; stdout goes to /dev/null.

mod common;

use std::time::Duration;

use common::events::{authorize, event, for_task};
use common::functions::{Function, binaries_dir};
use common::tools::{free_port, wait_for_port};
use common::{prepare_database, test_database_url};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tasks_tools::runtime_api::Outcome;
use tasks_tools::tokens::hs256_for;
use tokio::process::Command;

const SECRET: &str = "warm-cpu-bench-secret-0123456789abcdef";
/// Requests before the measured ones: the connection, the token cache and the allocator settle.
const WARM_UP: usize = 50;
/// `USER_HZ`: the unit of `/proc/PID/stat`'s CPU times on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// The functions the issue measured, and the status each answers its request with.
const MEASURED: [(&str, u64); 4] = [
    ("get-task", 200),
    ("list-tasks", 200),
    ("toggle-task", 200),
    ("create-task", 201),
];

fn invocations() -> usize {
    std::env::var("WARM_CPU_INVOCATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000)
}

/// User + system CPU time of process `pid` so far, all threads included.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_secs_f64(ticks as f64 / TICKS_PER_SECOND)
}

fn per_request(total: Duration, requests: usize) -> f64 {
    total.as_secs_f64() * 1e6 / requests as f64
}

/// The function's event for this user (and its task, on the `{task_id}` routes).
fn event_for(function: &str, token: &str, task_id: &str) -> Value {
    let e = authorize(event(function), token);
    if e["pathParameters"]["task_id"].is_string() {
        for_task(e, task_id)
    } else {
        e
    }
}

/// The HTTP request the local server would get for `event`, minus the headers the client sets.
fn request_for(event: &Value, port: u16) -> Request<Full<Bytes>> {
    let path = event["rawPath"].as_str().expect("rawPath");
    let query = event["rawQueryString"].as_str().unwrap_or_default();
    let uri = match query {
        "" => format!("http://127.0.0.1:{port}{path}"),
        query => format!("http://127.0.0.1:{port}{path}?{query}"),
    };
    let mut builder = Request::builder()
        .method(
            event["requestContext"]["http"]["method"]
                .as_str()
                .expect("method"),
        )
        .uri(uri);
    for (name, value) in event["headers"].as_object().expect("headers") {
        if !matches!(name.as_str(), "host" | "content-length") {
            builder = builder.header(name, value.as_str().expect("header value"));
        }
    }
    let body = event["body"].as_str().unwrap_or_default().to_owned();
    builder.body(Full::new(Bytes::from(body))).expect("request")
}

/// µs of the function process's CPU per warm invocation of `event`.
async fn function_cpu(function: &str, event: &Value, status: u64, n: usize) -> f64 {
    let vars = [
        ("DATABASE_URL", test_database_url()),
        ("JWT_SECRET", SECRET.to_owned()),
    ];
    let process = Function::start(function, &vars).await;
    let pid = process.child.id().expect("function pid");
    let answer = |outcome: Outcome| match outcome {
        Outcome::Response(document) => document["statusCode"].as_u64(),
        other => panic!("{function}: {other:?}"),
    };
    for _ in 0..WARM_UP {
        assert_eq!(
            answer(process.invoke(event).await),
            Some(status),
            "{function}"
        );
    }
    let before = cpu_time(pid);
    for _ in 0..n {
        assert_eq!(
            answer(process.invoke(event).await),
            Some(status),
            "{function}"
        );
    }
    per_request(cpu_time(pid).saturating_sub(before), n)
}

/// µs of `tasks-api serve`'s CPU per request, for the same requests.
async fn server_cpu(port: u16, pid: u32, event: &Value, status: u64, n: usize) -> f64 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let send = async || {
        let response = client
            .request(request_for(event, port))
            .await
            .expect("local server request");
        let code = response.status().as_u16();
        response.into_body().collect().await.expect("body");
        assert_eq!(u64::from(code), status);
    };
    for _ in 0..WARM_UP {
        send().await;
    }
    let before = cpu_time(pid);
    for _ in 0..n {
        send().await;
    }
    per_request(cpu_time(pid).saturating_sub(before), n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: scripts/bench-warm-cpu.sh runs it on release binaries"]
async fn warm_cpu_per_invocation_against_the_local_server() {
    prepare_database().await;
    let n = invocations();
    let user = common::new_user_id();
    let token = hs256_for(SECRET, &user);

    let port = free_port();
    let mut server = Command::new(binaries_dir().join("tasks-api"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", test_database_url())
        .env("JWT_SECRET", SECRET)
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start tasks-api serve");
    wait_for_port(port, 30).await;
    let server_pid = server.id().expect("server pid");

    // The task the `{task_id}` routes read and toggle.
    let create = authorize(event("create-task"), &token);
    let created = request_for(&create, port);
    let response = Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>()
        .request(created)
        .await
        .expect("create the task");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let task: Value = serde_json::from_slice(&body).expect("JSON");
    let task_id = task["data"]["id"].as_str().expect("task id").to_owned();

    println!("CPU per warm request, µs ({n} sequential requests after {WARM_UP}; /proc/PID/stat)");
    println!("| function | Lambda binary | local server | ratio |");
    println!("|---|---|---|---|");
    for (function, status) in MEASURED {
        let event = event_for(function, &token, &task_id);
        let lambda = function_cpu(function, &event, status, n).await;
        let local = server_cpu(port, server_pid, &event, status, n).await;
        println!(
            "| {function} | {lambda:.0} | {local:.0} | {:.2}× |",
            lambda / local
        );
    }
    server.kill().await.expect("stop the server");
}
