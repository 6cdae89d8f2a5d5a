#![forbid(unsafe_code)]
//! Database faults: unreachable, hanging, and connections killed server-side. Nothing a 503
//! answered may be written, now or later, and the app recovers without a restart.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{Mode, PgProxy};
use common::{direct_database_url, inspect, spawn_app_with};
use http::{Method, StatusCode};
use serde_json::json;

async fn count_titled(title: &str) -> i64 {
    let db = inspect().await;
    db.query_one("SELECT count(*) FROM tasks WHERE title = $1", &[&title])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn unreachable_database_gives_a_fast_503_and_recovers_without_restart() {
    common::prepare_database().await;
    let proxy = PgProxy::start(common::direct_upstream()).await;
    let url = proxy.url_for(&direct_database_url());
    let app = spawn_app_with(&[("DATABASE_URL", &url), ("DATABASE_TIMEOUT_MS", "1500")]).await;
    let (_, token) = app.new_user();
    app.create_task(&token, "before the outage").await;

    proxy.set(Mode::Refuse);
    for (method, path) in [(Method::GET, "/api/tasks"), (Method::POST, "/api/tasks")] {
        let started = Instant::now();
        let body = json!({"title": "during the outage"});
        let response = app.send(method, path, Some(&token), Some(&body)).await;
        eprintln!("database refused: 503 after {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(5), "503 within 5 s");
        response.assert_error(503, "SERVICE_UNAVAILABLE");
    }
    let health = app.send(Method::GET, "/health", None, None).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(health.header("retry-after").is_some());
    let json = health.json();
    assert_eq!(
        (&json["status"], &json["database"]),
        (&json!("degraded"), &json!("unreachable"))
    );

    proxy.set(Mode::Open);
    let listed = app
        .send(Method::GET, "/api/tasks", Some(&token), None)
        .await;
    assert_eq!(
        listed.status,
        StatusCode::OK,
        "first request after the outage succeeds"
    );
    assert_eq!(listed.json()["count"], 1);
    assert_eq!(
        app.send(Method::GET, "/health", None, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_write_answered_503_never_runs_later() {
    common::prepare_database().await;
    let proxy = PgProxy::start(common::direct_upstream()).await;
    let url = proxy.url_for(&direct_database_url());
    let app = spawn_app_with(&[
        ("DATABASE_URL", &url),
        ("DATABASE_TIMEOUT_MS", "800"),
        ("DATABASE_POOL_SIZE", "1"),
    ])
    .await;
    let (_, token) = app.new_user();
    app.create_task(&token, "warm-up").await;

    // The statement reaches the proxy on the warm connection and waits there, like a query
    // queued in PgBouncer while its server is away.
    proxy.set(Mode::Hold);
    let title = format!("ghost {}", uuid::Uuid::now_v7());
    let started = Instant::now();
    let body = json!({ "title": title });
    let response = app
        .send(Method::POST, "/api/tasks", Some(&token), Some(&body))
        .await;
    response.assert_error(503, "SERVICE_UNAVAILABLE");
    eprintln!(
        "database hanging (deadline 800 ms): 503 after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // The database comes back; whatever was still queued on a live connection would run now.
    proxy.set(Mode::Open);
    let after = app.create_task(&token, "after the outage").await;
    assert_eq!(after["title"], "after the outage");
    assert_eq!(
        count_titled(&title).await,
        0,
        "the abandoned create must not be applied"
    );
}

#[tokio::test]
async fn killed_connections_are_replaced_and_writes_apply_once() {
    common::prepare_database().await;
    let app_name = format!("outage-{}", uuid::Uuid::now_v7().simple());
    let url = common::with_application_name(&direct_database_url(), &app_name);
    let app = spawn_app_with(&[("DATABASE_URL", &url), ("DATABASE_POOL_SIZE", "2")]).await;
    let (_, token) = app.new_user();
    app.create_task(&token, "warm").await;
    let db = inspect().await;
    let kill =
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1";

    // What a Neon compute suspend or a server restart does to idle pooled connections.
    let killed: i64 = db.query_one(kill, &[&app_name]).await.unwrap().get(0);
    assert!(killed >= 1);
    let listed = app
        .send(Method::GET, "/api/tasks", Some(&token), None)
        .await;
    assert_eq!(listed.status, StatusCode::OK);

    db.query_one(kill, &[&app_name]).await.unwrap();
    let title = format!("once {}", uuid::Uuid::now_v7());
    let response = app
        .send(
            Method::POST,
            "/api/tasks",
            Some(&token),
            Some(&json!({ "title": title })),
        )
        .await;
    // Killed under it or not, the write is resent on a fresh connection and applied once.
    assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
    assert_eq!(count_titled(&title).await, 1);
    let again = app
        .send(Method::GET, "/api/tasks", Some(&token), None)
        .await;
    assert_eq!(again.status, StatusCode::OK);
}

#[tokio::test]
async fn a_statement_past_its_deadline_is_cancelled_not_committed_later() {
    let app = spawn_app_with(&[("DATABASE_TIMEOUT_MS", "700")]).await;
    let (_, token) = app.new_user();
    let task = app.create_task(&token, "locked").await;
    let id = uuid::Uuid::parse_str(task["id"].as_str().unwrap()).unwrap();

    // Another session holds the row lock, so the toggle's UPDATE blocks inside PostgreSQL.
    let mut blocker = inspect().await;
    let lock = blocker.transaction().await.unwrap();
    lock.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", &[&id])
        .await
        .unwrap();

    let path = format!("/api/tasks/{id}/toggle");
    let started = Instant::now();
    let response = app.send(Method::PATCH, &path, Some(&token), None).await;
    response.assert_error(503, "SERVICE_UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Releasing the lock must not let the abandoned UPDATE commit.
    lock.commit().await.unwrap();
    let get = format!("/api/tasks/{id}");
    let after = app.send(Method::GET, &get, Some(&token), None).await.json();
    assert_eq!(
        after["data"]["is_completed"], false,
        "the cancelled toggle did not apply"
    );
    assert_eq!(after["data"]["updated_at"], task["updated_at"]);
}
