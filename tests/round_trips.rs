#![forbid(unsafe_code)]
//! One round trip per request, measured on the wire: a counting proxy between the API and
//! PostgreSQL sees exactly one statement (one Parse, one Sync, no simple Query) per route on the
//! warm path, and no new connection.

mod common;

use common::proxy::{Counts, PgProxy};
use common::{direct_database_url, spawn_app_with};
use http::{Method, StatusCode};
use serde_json::json;

fn one_statement() -> Counts {
    Counts {
        connections: 0,
        cancels: 0,
        syncs: 1,
        parses: 1,
        queries: 0,
    }
}

#[tokio::test]
async fn every_route_costs_one_statement_and_no_new_connection_when_warm() {
    common::prepare_database().await;
    let proxy = PgProxy::start(common::direct_upstream()).await;
    let url = proxy.url_for(&direct_database_url());
    // Pool of one, as in Lambda: the same warm connection serves every request.
    let app = spawn_app_with(&[("DATABASE_URL", &url), ("DATABASE_POOL_SIZE", "1")]).await;
    let (_, token) = app.new_user();
    let warm = app.create_task(&token, "warm-up").await;
    let first = proxy.take_counts();
    assert_eq!(
        first.connections, 1,
        "the cold request opened the one connection"
    );

    let id = warm["id"].as_str().unwrap().to_owned();
    let item = format!("/api/tasks/{id}");
    let toggle = format!("{item}/toggle");
    let create = json!({"title": "counted"});
    let update = json!({"title": "counted again"});
    let requests: Vec<(&str, Method, String, Option<&serde_json::Value>, StatusCode)> = vec![
        (
            "health",
            Method::GET,
            "/health".into(),
            None,
            StatusCode::OK,
        ),
        (
            "list",
            Method::GET,
            "/api/tasks?limit=1".into(),
            None,
            StatusCode::OK,
        ),
        (
            "create",
            Method::POST,
            "/api/tasks".into(),
            Some(&create),
            StatusCode::CREATED,
        ),
        ("get", Method::GET, item.clone(), None, StatusCode::OK),
        (
            "update",
            Method::PUT,
            item.clone(),
            Some(&update),
            StatusCode::OK,
        ),
        ("toggle", Method::PATCH, toggle, None, StatusCode::OK),
        ("delete", Method::DELETE, item, None, StatusCode::NO_CONTENT),
        (
            "changes",
            Method::GET,
            "/api/changes?limit=1".into(),
            None,
            StatusCode::OK,
        ),
    ];
    let mut report = Vec::new();
    for (route, method, path, body, expected) in requests {
        let token = (route != "health").then_some(token.as_str());
        let response = app.send(method, &path, token, body).await;
        assert_eq!(response.status, expected, "{route}");
        let counts = proxy.take_counts();
        report.push(format!("{route}: {counts:?}"));
        assert_eq!(counts, one_statement(), "{route}");
    }
    // A cursor page is still one statement.
    app.create_task(&token, "second").await;
    let page = app
        .send(Method::GET, "/api/tasks?limit=1", Some(&token), None)
        .await
        .json();
    proxy.take_counts();
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = app
        .send(
            Method::GET,
            &format!("/api/tasks?limit=1&cursor={cursor}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(proxy.take_counts(), one_statement(), "list with cursor");
    // Keys, replays, preconditions and conditional reads are part of the same statement.
    let task = app.create_task(&token, "conditional").await;
    let id = task["id"].as_str().unwrap();
    let etag = format!("\"{}\"", task["updated_at"].as_str().unwrap());
    proxy.take_counts();
    let keyed = |method: Method, path: String, body: &str, key: &str, if_match: Option<&str>| {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header("idempotency-key", key);
        if let Some(tag) = if_match {
            request = request.header(http::header::IF_MATCH, tag);
        }
        request
            .body(http_body_util::Full::new(hyper::body::Bytes::from(
                body.to_owned(),
            )))
            .unwrap()
    };
    let item = format!("/api/tasks/{id}");
    let cases = vec![
        (
            "keyed create",
            keyed(
                Method::POST,
                "/api/tasks".into(),
                r#"{"title":"k"}"#,
                "rt-1",
                None,
            ),
            StatusCode::CREATED,
        ),
        (
            "replayed create",
            keyed(
                Method::POST,
                "/api/tasks".into(),
                r#"{"title":"k"}"#,
                "rt-1",
                None,
            ),
            StatusCode::CREATED,
        ),
        (
            "reused key",
            keyed(
                Method::POST,
                "/api/tasks".into(),
                r#"{"title":"other"}"#,
                "rt-1",
                None,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "conditional update",
            keyed(
                Method::PUT,
                item.clone(),
                r#"{"title":"c"}"#,
                "rt-2",
                Some(&etag),
            ),
            StatusCode::OK,
        ),
        (
            "stale If-Match",
            keyed(
                Method::PATCH,
                format!("{item}/toggle"),
                "",
                "rt-3",
                Some(&etag),
            ),
            StatusCode::PRECONDITION_FAILED,
        ),
    ];
    for (label, request, expected) in cases {
        let response = app.request(request).await;
        assert_eq!(response.status, expected, "{label}");
        assert_eq!(proxy.take_counts(), one_statement(), "{label}");
    }
    let current = app.send(Method::GET, &item, Some(&token), None).await;
    proxy.take_counts();
    let not_modified = app
        .request(
            http::Request::builder()
                .uri(&item)
                .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                .header(
                    http::header::IF_NONE_MATCH,
                    current.header(http::header::ETAG).unwrap(),
                )
                .body(http_body_util::Full::new(hyper::body::Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(proxy.take_counts(), one_statement(), "304");

    // Requests refused before the database (auth, validation, 404 on a malformed id) cost nothing.
    app.send(Method::GET, "/api/tasks", None, None).await;
    app.send(
        Method::POST,
        "/api/tasks",
        Some(&token),
        Some(&json!({"title": ""})),
    )
    .await;
    app.send(Method::GET, "/api/tasks/not-a-uuid", Some(&token), None)
        .await;
    assert_eq!(
        proxy.take_counts(),
        Counts::default(),
        "refused requests touch no database"
    );
    eprintln!("{}", report.join("\n"));
}
