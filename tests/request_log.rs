#![forbid(unsafe_code)]
//! One JSON line per request (CONTRACT-independent operations, README "Operating it"): what it
//! says, that its EMF block declares real numbers, and what it never says.

mod common;

use std::sync::{Arc, Mutex};

use common::proxy::{Mode, PgProxy};
use common::{direct_database_url, spawn_app_with};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tasks_api::dev::TokenOptions;

#[tokio::test]
async fn every_request_writes_one_line_with_route_status_timings_and_no_user_data() {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    tasks_shared::telemetry::capture(move |line| sink.lock().unwrap().push(line.to_owned()));
    common::prepare_database().await;
    let proxy = PgProxy::start(common::direct_upstream()).await;
    let url = proxy.url_for(&direct_database_url());
    let app = spawn_app_with(&[("DATABASE_URL", &url), ("DATABASE_TIMEOUT_MS", "500")]).await;
    let user = common::new_user_id();
    let email = "marker-email-7f3a@example.com";
    let token = app.token_with(
        &user,
        &TokenOptions {
            email: Some(email),
            ttl_seconds: 600,
            ..TokenOptions::default()
        },
    );
    let title = "marker-title-91c2";
    let description = "marker-description-4be0";

    let created = app
        .send(
            Method::POST,
            "/api/tasks",
            Some(&token),
            Some(&json!({"title": title, "description": description})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.json()["data"]["id"].as_str().unwrap().to_owned();
    let get = app
        .send(Method::GET, &format!("/api/tasks/{id}"), Some(&token), None)
        .await;
    assert_eq!(get.status, StatusCode::OK);
    app.send(Method::GET, "/api/tasks", Some("not-a-token"), None)
        .await
        .assert_error(401, "UNAUTHORIZED");
    app.send(Method::GET, "/nowhere", None, None)
        .await
        .assert_error(404, "NOT_FOUND");
    proxy.set(Mode::Refuse);
    app.send(Method::GET, "/api/tasks", Some(&token), None)
        .await
        .assert_error(503, "SERVICE_UNAVAILABLE");

    let lines = lines.lock().unwrap().clone();
    let parsed: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect();
    assert_eq!(parsed.len(), 5, "one line per request: {lines:#?}");
    let by_status = |status: u16| {
        parsed
            .iter()
            .find(|line| line["status"] == status)
            .unwrap_or_else(|| panic!("no line with status {status}"))
    };

    let create = by_status(201);
    assert_eq!(create["route"], "POST /api/tasks");
    assert_eq!(create["status_class"], "2xx");
    assert!(create["latency"].as_f64().unwrap() > 0.0);
    assert!(create["db_time"].as_f64().unwrap() > 0.0);
    assert!(
        create["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(
        by_status(200)["route"],
        "GET /api/tasks/{task_id}",
        "the template, not the path"
    );
    assert_eq!(by_status(401)["error_code"], "UNAUTHORIZED");
    assert_eq!(by_status(401)["db_time"], 0.0);
    assert_eq!(by_status(404)["route"], "unmatched");
    let unavailable = by_status(503);
    assert_eq!(unavailable["unavailable_database"], 1);
    assert_eq!(unavailable["server_errors"], 1);
    assert_eq!(
        parsed
            .iter()
            .filter(|line| line["cold_start"] == true)
            .count(),
        1,
        "only the process' first request is a cold start"
    );
    for line in &parsed {
        let metrics = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .expect("EMF metrics");
        for metric in metrics {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_number(), "{name} in {line}");
        }
    }
    let all = lines.join("\n");
    for secret in [
        token.as_str(),
        app.secret.as_str(),
        email,
        title,
        description,
        &id,
        &user,
    ] {
        assert!(!all.contains(secret), "{secret:?} leaked into the log");
    }
}
