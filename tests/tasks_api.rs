#![forbid(unsafe_code)]
//! The contract's routes end to end: envelopes, headers, validation, bodies, timestamps.

mod common;

use common::{inspect, spawn_app};
use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{Value, json};

fn assert_task_shape(task: &Value, user_id: &str) {
    let id = task["id"].as_str().expect("id");
    let parsed = uuid::Uuid::parse_str(id).expect("uuid id");
    assert_eq!(parsed.get_version_num(), 7, "ids are UUIDv7");
    assert_eq!(task["user_id"], user_id);
    for stamp in ["created_at", "updated_at"] {
        let text = task[stamp].as_str().expect(stamp);
        assert!(
            text.ends_with('Z') && text.len() == 27,
            "RFC 3339 UTC with µs: {text}"
        );
    }
    let keys: Vec<&String> = task.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        [
            "id",
            "user_id",
            "title",
            "description",
            "is_completed",
            "created_at",
            "updated_at"
        ]
    );
}

#[tokio::test]
async fn create_returns_201_with_location_and_trimmed_title() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let body = json!({"title": "  Buy milk \n", "description": "  2 litres "});
    let response = app
        .send(Method::POST, "/api/tasks", Some(&token), Some(&body))
        .await;
    assert_eq!(response.status, StatusCode::CREATED);
    let json = response.json();
    assert_eq!(json["message"], "Task created successfully");
    let task = &json["data"];
    assert_task_shape(task, &user);
    assert_eq!(task["title"], "Buy milk");
    assert_eq!(task["description"], "  2 litres ");
    assert_eq!(task["is_completed"], false);
    assert_eq!(task["created_at"], task["updated_at"]);
    let location = format!("/api/tasks/{}", task["id"].as_str().unwrap());
    assert_eq!(response.header(header::LOCATION), Some(location.as_str()));

    let fetched = app.send(Method::GET, &location, Some(&token), None).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.json()["data"], *task);
    assert_eq!(fetched.json()["message"], "Task retrieved successfully");
}

#[tokio::test]
async fn first_write_creates_the_user_and_a_new_email_updates_it() {
    let app = spawn_app().await;
    let user = common::new_user_id();
    let options = |email| tasks_api::dev::TokenOptions {
        email: Some(email),
        ttl_seconds: 600,
        ..Default::default()
    };
    let db = inspect().await;
    let count = db
        .query_one("SELECT count(*) FROM users WHERE id = $1", &[&user])
        .await
        .unwrap();
    assert_eq!(count.get::<_, i64>(0), 0);

    let first = app.token_with(&user, &options("a@example.com"));
    let listed = app
        .send(Method::GET, "/api/tasks", Some(&first), None)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let count = db
        .query_one("SELECT count(*) FROM users WHERE id = $1", &[&user])
        .await
        .unwrap();
    assert_eq!(count.get::<_, i64>(0), 0, "reads do not create users");

    let task = app.create_task(&first, "one").await;
    let email = db
        .query_one("SELECT email FROM users WHERE id = $1", &[&user])
        .await
        .unwrap();
    assert_eq!(
        email.get::<_, Option<String>>(0).as_deref(),
        Some("a@example.com")
    );

    let second = app.token_with(&user, &options("b@example.com"));
    app.create_task(&second, "two").await;
    let email = db
        .query_one("SELECT email FROM users WHERE id = $1", &[&user])
        .await
        .unwrap();
    assert_eq!(
        email.get::<_, Option<String>>(0).as_deref(),
        Some("b@example.com")
    );

    let third = app.token_with(&user, &options("c@example.com"));
    let path = format!("/api/tasks/{}/toggle", task["id"].as_str().unwrap());
    assert_eq!(
        app.send(Method::PATCH, &path, Some(&third), None)
            .await
            .status,
        StatusCode::OK
    );
    let email = db
        .query_one("SELECT email FROM users WHERE id = $1", &[&user])
        .await
        .unwrap();
    assert_eq!(
        email.get::<_, Option<String>>(0).as_deref(),
        Some("c@example.com")
    );
}

#[tokio::test]
async fn update_replaces_and_toggle_flips() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let created = app.create_task(&token, "draft").await;
    let path = format!("/api/tasks/{}", created["id"].as_str().unwrap());

    let body = json!({"title": " final ", "description": "details", "is_completed": true});
    let updated = app
        .send(Method::PUT, &path, Some(&token), Some(&body))
        .await;
    assert_eq!(updated.status, StatusCode::OK);
    let json = updated.json();
    assert_eq!(json["message"], "Task updated successfully");
    let task = &json["data"];
    assert_task_shape(task, &user);
    assert_eq!(
        (&task["title"], &task["description"], &task["is_completed"]),
        (&json!("final"), &json!("details"), &json!(true))
    );
    assert_eq!(task["created_at"], created["created_at"]);
    assert!(task["updated_at"].as_str() > created["updated_at"].as_str());

    // PUT replaces: absent description clears it; absent is_completed leaves it.
    let body = json!({"title": "final"});
    let task = app
        .send(Method::PUT, &path, Some(&token), Some(&body))
        .await
        .json()["data"]
        .clone();
    assert_eq!(task["description"], Value::Null);
    assert_eq!(task["is_completed"], true);

    let toggle = format!("{path}/toggle");
    let off = app.send(Method::PATCH, &toggle, Some(&token), None).await;
    assert_eq!(off.status, StatusCode::OK);
    assert_eq!(off.json()["message"], "Task marked as incomplete");
    assert_eq!(off.json()["data"]["is_completed"], false);
    assert!(off.json()["data"]["updated_at"].as_str() > task["updated_at"].as_str());
    let on = app.send(Method::PATCH, &toggle, Some(&token), None).await;
    assert_eq!(on.json()["message"], "Task marked as complete");
    assert_eq!(on.json()["data"]["is_completed"], true);
}

#[tokio::test]
async fn delete_is_204_with_empty_body_then_404() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let task = app.create_task(&token, "temp").await;
    let path = format!("/api/tasks/{}", task["id"].as_str().unwrap());
    let deleted = app.send(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.body.is_empty());
    for method in [Method::GET, Method::DELETE] {
        app.send(method, &path, Some(&token), None)
            .await
            .assert_error(404, "TASK_NOT_FOUND");
    }
    let toggle = format!("{path}/toggle");
    app.send(Method::PATCH, &toggle, Some(&token), None)
        .await
        .assert_error(404, "TASK_NOT_FOUND");
}

#[tokio::test]
async fn task_ids_match_case_insensitively_and_other_forms_are_404() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let task = app.create_task(&token, "case").await;
    let id = task["id"].as_str().unwrap();
    let upper = format!("/api/tasks/{}", id.to_uppercase());
    assert_eq!(
        app.send(Method::GET, &upper, Some(&token), None)
            .await
            .status,
        StatusCode::OK
    );
    let simple = id.replace('-', "");
    for bad in [simple.as_str(), "not-a-uuid", "123", "%7Bx%7D"] {
        let path = format!("/api/tasks/{bad}");
        app.send(Method::GET, &path, Some(&token), None)
            .await
            .assert_error(404, "TASK_NOT_FOUND");
        let body = json!({"title": "x"});
        app.send(Method::PUT, &path, Some(&token), Some(&body))
            .await
            .assert_error(404, "TASK_NOT_FOUND");
        app.send(Method::DELETE, &path, Some(&token), None)
            .await
            .assert_error(404, "TASK_NOT_FOUND");
        let toggle = format!("{path}/toggle");
        app.send(Method::PATCH, &toggle, Some(&token), None)
            .await
            .assert_error(404, "TASK_NOT_FOUND");
    }
}

async fn assert_validation(
    app: &common::TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: &str,
    field: Option<&str>,
    max: Option<u64>,
) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = app.request(request).await;
    let json = response.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(
        json["error"]["details"]["field"].as_str(),
        field,
        "{body}: {json}"
    );
    assert_eq!(
        json["error"]["details"]["max_length"].as_u64(),
        max,
        "{body}: {json}"
    );
}

#[tokio::test]
async fn validation_errors_name_the_field_and_change_nothing() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let long_title = "t".repeat(501);
    let long_description = "d".repeat(5001);
    let cases: Vec<(String, Option<&str>, Option<u64>)> = vec![
        ("{".into(), None, None),
        ("[1]".into(), None, None),
        ("\"title\"".into(), None, None),
        ("{}".into(), Some("title"), None),
        (r#"{"title": ""}"#.into(), Some("title"), None),
        (r#"{"title": "   "}"#.into(), Some("title"), None),
        (r#"{"title": null}"#.into(), Some("title"), None),
        (r#"{"title": 5}"#.into(), Some("title"), None),
        (
            format!(r#"{{"title": "{long_title}"}}"#),
            Some("title"),
            Some(500),
        ),
        (
            format!(r#"{{"title": "x", "description": "{long_description}"}}"#),
            Some("description"),
            Some(5000),
        ),
        (
            r#"{"title": "x", "description": 7}"#.into(),
            Some("description"),
            None,
        ),
        (r#"{"tittle": "x"}"#.into(), Some("tittle"), None),
        (
            r#"{"title": "x", "is_completed": true}"#.into(),
            Some("is_completed"),
            None,
        ),
        (
            r#"{"title": "x", "user_id": "someone-else"}"#.into(),
            Some("user_id"),
            None,
        ),
    ];
    for (body, field, max) in &cases {
        assert_validation(&app, Method::POST, "/api/tasks", &token, body, *field, *max).await;
    }
    let db = inspect().await;
    let count = db
        .query_one("SELECT count(*) FROM tasks WHERE user_id = $1", &[&user])
        .await
        .unwrap();
    assert_eq!(count.get::<_, i64>(0), 0, "failed creates stored nothing");
    let users = db
        .query_one("SELECT count(*) FROM users WHERE id = $1", &[&user])
        .await
        .unwrap();
    assert_eq!(users.get::<_, i64>(0), 0, "failed creates left no user row");

    let task = app.create_task(&token, "keep me").await;
    let path = format!("/api/tasks/{}", task["id"].as_str().unwrap());
    for (body, field) in [
        (r#"{"title": "x", "is_completed": null}"#, "is_completed"),
        (r#"{"title": "x", "is_completed": "yes"}"#, "is_completed"),
        (r#"{"description": "x"}"#, "title"),
        (r#"{"title": "x", "extra": 1}"#, "extra"),
    ] {
        assert_validation(&app, Method::PUT, &path, &token, body, Some(field), None).await;
    }
    let unchanged = app
        .send(Method::GET, &path, Some(&token), None)
        .await
        .json()["data"]
        .clone();
    assert_eq!(unchanged, task, "failed updates changed nothing");
}

#[tokio::test]
async fn limits_are_counted_in_code_points() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let body = json!({"title": "é".repeat(500), "description": "😀".repeat(5000)});
    let response = app
        .send(Method::POST, "/api/tasks", Some(&token), Some(&body))
        .await;
    assert_eq!(
        response.status,
        StatusCode::CREATED,
        "{:?}",
        response.json()
    );
    assert_eq!(
        response.json()["data"]["title"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        500
    );
    let body = json!({"title": "x", "description": ""});
    let response = app
        .send(Method::POST, "/api/tasks", Some(&token), Some(&body))
        .await;
    assert_eq!(
        response.json()["data"]["description"],
        "",
        "empty description stays empty"
    );
}

#[tokio::test]
async fn content_type_and_size_rules() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let send = |content_type: Option<&'static str>, body: String| {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri("/api/tasks")
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        app.request(builder.body(Full::new(Bytes::from(body))).unwrap())
    };
    let ok = send(
        Some("application/json; charset=utf-8"),
        r#"{"title":"a"}"#.into(),
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let ok = send(None, r#"{"title":"a"}"#.into()).await;
    assert_eq!(
        ok.status,
        StatusCode::CREATED,
        "missing content type parses as JSON"
    );
    send(None, "title=a".into())
        .await
        .assert_error(400, "VALIDATION_ERROR");
    send(Some("text/plain"), r#"{"title":"a"}"#.into())
        .await
        .assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
    send(Some("application/x-www-form-urlencoded"), "title=a".into())
        .await
        .assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
    let huge = format!(r#"{{"title":"{}"}}"#, "a".repeat(70_000));
    send(Some("application/json"), huge.clone())
        .await
        .assert_error(413, "PAYLOAD_TOO_LARGE");
    // Size is checked before content type.
    send(Some("text/plain"), huge)
        .await
        .assert_error(413, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn routing_errors_come_first() {
    let app = spawn_app().await;
    for path in [
        "/",
        "/api/tasks/",
        "/api/task",
        "/nope",
        "/api/tasks/x/toggle/",
    ] {
        app.send(Method::GET, path, None, None)
            .await
            .assert_error(404, "NOT_FOUND");
    }
    let response = app.send(Method::HEAD, "/api/tasks", None, None).await;
    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.header(header::ALLOW), Some("GET, POST"));
    let response = app.send(Method::POST, "/api/tasks/abc", None, None).await;
    response.assert_error(405, "METHOD_NOT_ALLOWED");
    assert_eq!(response.header(header::ALLOW), Some("GET, PUT, DELETE"));
    let response = app
        .send(Method::GET, "/api/tasks/abc/toggle", None, None)
        .await;
    assert_eq!(response.header(header::ALLOW), Some("PATCH"));
    // Authentication comes before body checks, body checks before existence.
    let bad = json!({"tittle": 1});
    app.send(Method::POST, "/api/tasks", None, Some(&bad))
        .await
        .assert_error(401, "UNAUTHORIZED");
    let (_, token) = app.new_user();
    let missing = "/api/tasks/0193f0c2-5d8e-7c1a-9b2e-3f4a5b6c7d8e";
    app.send(Method::PUT, missing, Some(&token), Some(&bad))
        .await
        .assert_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn health_reports_database_ok() {
    let app = spawn_app().await;
    let response = app.send(Method::GET, "/health", None, None).await;
    assert_eq!(response.status, StatusCode::OK);
    let json = response.json();
    assert_eq!(
        (&json["status"], &json["database"]),
        (&json!("ok"), &json!("ok"))
    );
    let stamp = json["timestamp"].as_str().unwrap();
    assert!(stamp.ends_with('Z') && stamp.starts_with("20"), "{stamp}");
}

#[tokio::test]
async fn cors_is_answered_for_allowed_origins_only() {
    let app = common::spawn_app_with(&[("CORS_ALLOWED_ORIGINS", "http://localhost:3000")]).await;
    let preflight = |origin: &'static str| {
        let request = Request::builder()
            .method(Method::OPTIONS)
            .uri("/api/tasks")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(Full::new(Bytes::new()))
            .unwrap();
        app.request(request)
    };
    let allowed = preflight("http://localhost:3000").await;
    assert_eq!(allowed.status, StatusCode::NO_CONTENT);
    assert_eq!(
        allowed.header(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        Some("http://localhost:3000")
    );
    assert!(
        allowed
            .header(header::ACCESS_CONTROL_ALLOW_HEADERS)
            .unwrap()
            .contains("Authorization")
    );
    let refused = preflight("http://evil.test").await;
    assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(refused.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
    let request = Request::builder()
        .uri("/health")
        .header(header::ORIGIN, "http://localhost:3000")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let simple = app.request(request).await;
    assert_eq!(
        simple.header(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        Some("http://localhost:3000")
    );
}
