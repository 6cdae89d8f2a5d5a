#![forbid(unsafe_code)]
//! The fleet (`tools/src/bin/fleet/`): a local API Gateway running the real function binaries under
//! Lambda's concurrency model. Two requests that arrive while their function's only instance is
//! busy run on two instances (two cold starts); a later request reuses a warm one; every route
//! reaches its function and the rest the catch-all; idle instances exit after the idle timeout.
//!
//! The database connection is made slow (700 ms, through the fault proxy) so that an instance
//! stays busy long enough for the second request to find it so.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::proxy::PgProxy;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tasks_tools::tokens::hs256_for;
use tokio::process::Command;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn call(
    client: &HttpClient,
    port: u16,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, http::HeaderMap, Value) {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let response = client
        .request(builder.body(Full::new(body)).expect("request"))
        .await
        .expect("the fleet answered");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

async fn stats(client: &HttpClient, port: u16) -> Value {
    call(client, port, Method::GET, "/_fleet/stats", &[], None)
        .await
        .2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_instances_scale_out_warm_ones_are_reused_idle_ones_exit() {
    common::prepare_database().await;
    let dir = common::functions::binaries_dir();
    let proxy = PgProxy::start(common::pooled_upstream()).await;
    proxy.delay_connects(Duration::from_millis(700));
    let secret = "fleet-test-secret-0123456789abcdef0123456789";
    let port = common::tools::free_port();
    let mut fleet = Command::new(common::functions::tool_binary("fleet"))
        .args(["--bin-dir", &dir.display().to_string()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--idle-timeout", "1.5", "--quiet"])
        .env("DATABASE_URL", proxy.url_for(&common::test_database_url()))
        .env("JWT_SECRET", secret)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the fleet");
    common::tools::wait_for_port(port, 20).await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Two at once: the first instance is still busy when the second request arrives.
    let started = Instant::now();
    let (a, b) = tokio::join!(
        call(&client, port, Method::GET, "/health", &[], None),
        call(&client, port, Method::GET, "/health", &[], None),
    );
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK), "{a:?} {b:?}");
    assert_eq!(a.2["status"], "ok");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "the connect delay applied"
    );
    let s = stats(&client, port).await;
    assert_eq!(s["cold_starts"], 2, "{s}");
    assert_eq!(s["functions"]["health"]["peak_instances"], 2, "{s}");
    assert_eq!(s["live_instances"], 2, "{s}");

    // One at a time: a warm instance, no new process.
    let warm = call(&client, port, Method::GET, "/health", &[], None).await;
    assert_eq!(warm.0, StatusCode::OK);
    assert_eq!(stats(&client, port).await["cold_starts"], 2);

    // The other routes reach their functions; headers and bodies survive the trip.
    let token = hs256_for(secret, &common::new_user_id());
    let bearer = format!("Bearer {token}");
    let (status, headers, body) = call(
        &client,
        port,
        Method::POST,
        "/api/tasks",
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        Some(json!({ "title": "through the fleet" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["title"], "through the fleet");
    let id = body["data"]["id"].as_str().expect("id");
    let location = headers.get(header::LOCATION).expect("Location");
    assert_eq!(location, &format!("/api/tasks/{id}"));
    assert!(headers.contains_key(header::ETAG));
    let (status, _, body) = call(
        &client,
        port,
        Method::GET,
        &format!("/api/tasks/{id}"),
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["id"], id);
    let (status, _, body) = call(&client, port, Method::GET, "/api/nope", &[], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    let (status, headers, _) = call(&client, port, Method::DELETE, "/health", &[], None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers.get(header::ALLOW).expect("Allow"), "GET");

    let s = stats(&client, port).await;
    for function in ["create-task", "get-task", "not-found"] {
        assert_eq!(
            s["functions"][function]["cold_starts"], 1,
            "{function}: {s}"
        );
    }
    assert_eq!(s["failures"], 0, "{s}");
    for instance in s["instances"].as_array().expect("instances") {
        assert!(instance["init_ms"].as_f64().is_some(), "{instance}");
    }

    // Scale to zero: nothing runs once the idle timeout has passed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = stats(&client, port).await;
        if s["live_instances"] == 0 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s["live_instances"], 0, "{s}");
    for instance in s["instances"].as_array().expect("instances") {
        assert_eq!(instance["alive"], false, "{instance}");
        let pid = instance["pid"].as_u64().expect("pid");
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z")),
            "instance {pid} still runs"
        );
    }
    // The next request is a cold start again.
    let again = call(&client, port, Method::GET, "/health", &[], None).await;
    assert_eq!(again.0, StatusCode::OK);
    assert_eq!(stats(&client, port).await["cold_starts"], 6);
    let _ = fleet.kill().await;
}
