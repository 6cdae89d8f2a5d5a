#![forbid(unsafe_code)]
//! Contract 1.1 "Concurrent edits": `ETag` on every single-task response, `If-Match` on the
//! writes by id (strong comparison, atomic with the write), `If-None-Match` on the reads (weak
//! comparison, 304 without a body), malformed headers (400 naming the header, checked before
//! the task id), and how `If-Match` composes with `Idempotency-Key`.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{TestApp, TestResponse, inspect, spawn_app, spawn_app_with};
use futures_util::future::join_all;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{Value, json};
use uuid::Uuid;

const REPLAYED: &str = "idempotent-replayed";

/// A request with a bearer token, extra headers (each pair one header line, sent as given) and
/// an optional JSON body.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> TestResponse {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    for (name, value) in headers {
        builder = builder.header(*name, HeaderValue::from_str(value).expect("header value"));
    }
    let body = match body {
        Some(json) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Full::new(Bytes::from(json.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    app.request(builder.body(body).expect("request")).await
}

/// The three writes by id, each as (method, path, body).
fn writes(id: &str) -> [(Method, String, Option<Value>); 3] {
    [
        (
            Method::PUT,
            format!("/api/tasks/{id}"),
            Some(json!({ "title": "overwritten", "is_completed": true })),
        ),
        (Method::PATCH, format!("/api/tasks/{id}/toggle"), None),
        (Method::DELETE, format!("/api/tasks/{id}"), None),
    ]
}

fn etag(response: &TestResponse) -> String {
    response
        .header(header::ETAG)
        .unwrap_or_else(|| {
            panic!(
                "{} without ETag: {:?}",
                response.status,
                String::from_utf8_lossy(&response.body)
            )
        })
        .to_owned()
}

/// The ETag the contract derives from a task's JSON: its `updated_at` in double quotes.
fn tag_of(task: &Value) -> String {
    format!("\"{}\"", task["updated_at"].as_str().expect("updated_at"))
}

fn id_of(task: &Value) -> String {
    task["id"].as_str().expect("id").to_owned()
}

/// The stored row as JSON text (every column), or `None` when there is no such task.
async fn stored(id: &str) -> Option<String> {
    let id = Uuid::parse_str(id).expect("uuid");
    inspect()
        .await
        .query_opt(
            "SELECT to_jsonb(t)::text FROM tasks t WHERE id = $1",
            &[&id],
        )
        .await
        .expect("read task")
        .map(|row| row.get(0))
}

async fn keys_recorded(user: &str, key: &str) -> i64 {
    inspect()
        .await
        .query_one(
            "SELECT count(*) FROM idempotency_keys WHERE user_id = $1 AND key = $2",
            &[&user, &key],
        )
        .await
        .expect("count keys")
        .get(0)
}

/// GET one: 200 and its ETag.
async fn current_tag(app: &TestApp, token: &str, id: &str) -> String {
    let response = call(
        app,
        Method::GET,
        &format!("/api/tasks/{id}"),
        token,
        &[],
        None,
    )
    .await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    etag(&response)
}

/// GET /api/tasks with `query`, optionally with `If-None-Match: tag`.
async fn list(app: &TestApp, token: &str, query: &str, tag: Option<&str>) -> TestResponse {
    let headers: Vec<(&str, &str)> = tag.map(|t| ("If-None-Match", t)).into_iter().collect();
    call(
        app,
        Method::GET,
        &format!("/api/tasks{query}"),
        token,
        &headers,
        None,
    )
    .await
}

fn assert_not_modified(response: &TestResponse, expected_etag: &str) {
    assert_eq!(
        response.status,
        StatusCode::NOT_MODIFIED,
        "{:?}",
        response.body
    );
    assert!(
        response.body.is_empty(),
        "304 with a body: {:?}",
        response.body
    );
    assert_eq!(etag(response), expected_etag);
}

#[tokio::test]
async fn every_single_task_response_carries_its_updated_at_as_etag_and_writes_change_it() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let mut seen = Vec::new();

    let created = call(
        &app,
        Method::POST,
        "/api/tasks",
        &token,
        &[],
        Some(&json!({ "title": "tagged" })),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let task = created.json()["data"].clone();
    let id = id_of(&task);
    assert_eq!(etag(&created), tag_of(&task));
    seen.push(etag(&created));

    let path = format!("/api/tasks/{id}");
    let got = call(&app, Method::GET, &path, &token, &[], None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(etag(&got), tag_of(&got.json()["data"]));
    assert_eq!(etag(&got), seen[0], "a read does not change the tag");

    let toggle = format!("{path}/toggle");
    let steps: [(Method, &str, Option<Value>); 4] = [
        (Method::PUT, &path, Some(json!({ "title": "retitled" }))),
        (Method::PATCH, &toggle, None),
        (Method::PATCH, &toggle, None),
        (
            Method::PUT,
            &path,
            Some(json!({ "title": "retitled", "is_completed": false })),
        ),
    ];
    for (method, path, body) in steps {
        let response = call(&app, method.clone(), path, &token, &[], body.as_ref()).await;
        assert_eq!(response.status, StatusCode::OK, "{method} {path}");
        assert_eq!(etag(&response), tag_of(&response.json()["data"]));
        seen.push(etag(&response));
    }
    // The last PUT leaves the task as the toggles found it, yet its tag is new.
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "every write changes the ETag: {seen:?}"
    );
    assert_eq!(current_tag(&app, &token, &id).await, *seen.last().unwrap());
}

#[tokio::test]
async fn if_match_with_the_current_tag_lets_each_write_through() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let task = app.create_task(&token, "careful").await;
    let id = id_of(&task);
    let [(put, path, body), (patch, toggle, _), (delete, _, _)] = writes(&id);

    let updated = call(
        &app,
        put,
        &path,
        &token,
        &[("If-Match", &tag_of(&task))],
        body.as_ref(),
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(updated.json()["data"]["title"], "overwritten");
    let after_put = etag(&updated);
    assert_ne!(after_put, tag_of(&task));

    let toggled = call(
        &app,
        patch,
        &toggle,
        &token,
        &[("If-Match", &after_put)],
        None,
    )
    .await;
    assert_eq!(toggled.status, StatusCode::OK, "{:?}", toggled.body);
    assert_eq!(toggled.json()["data"]["is_completed"], false);
    let after_toggle = etag(&toggled);
    assert_ne!(after_toggle, after_put);

    let deleted = call(
        &app,
        delete,
        &path,
        &token,
        &[("If-Match", &after_toggle)],
        None,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    assert_eq!(stored(&id).await, None);
}

#[tokio::test]
async fn a_stale_if_match_is_412_with_the_current_etag_and_changes_nothing() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let task = app.create_task(&token, "two devices").await;
    let id = id_of(&task);
    let stale = tag_of(&task);
    // Another device edits the task: the first device's tag is now stale.
    let other = call(
        &app,
        Method::PUT,
        &format!("/api/tasks/{id}"),
        &token,
        &[],
        Some(&json!({ "title": "edited elsewhere" })),
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);
    let current = etag(&other);
    assert_ne!(current, stale);
    let before = stored(&id).await.expect("task stored");

    for (method, path, body) in writes(&id) {
        let response = call(
            &app,
            method.clone(),
            &path,
            &token,
            &[("If-Match", &stale)],
            body.as_ref(),
        )
        .await;
        response.assert_error(412, "PRECONDITION_FAILED");
        assert_eq!(etag(&response), current, "{method} {path}");
        assert_eq!(stored(&id).await.as_ref(), Some(&before), "{method} {path}");
    }
    let got = call(
        &app,
        Method::GET,
        &format!("/api/tasks/{id}"),
        &token,
        &[],
        None,
    )
    .await;
    assert_eq!(etag(&got), current);
    assert_eq!(got.json()["data"]["title"], "edited elsewhere");
}

#[tokio::test]
async fn if_match_lists_several_lines_and_star_match_the_current_task() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let task = app.create_task(&token, "lists").await;
    let id = id_of(&task);
    let [(put, path, body), (patch, toggle, _), (delete, _, _)] = writes(&id);
    let stale = "\"2001-01-01T00:00:00.000000Z\"";

    let list = format!("{stale}, W/\"x\" ,, {}", tag_of(&task));
    let updated = call(
        &app,
        put.clone(),
        &path,
        &token,
        &[("If-Match", &list)],
        body.as_ref(),
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK, "{list}: {:?}", updated.body);

    // The same list split over two header lines.
    let toggled = call(
        &app,
        patch.clone(),
        &toggle,
        &token,
        &[("If-Match", stale), ("If-Match", &etag(&updated))],
        None,
    )
    .await;
    assert_eq!(toggled.status, StatusCode::OK, "{:?}", toggled.body);
    assert_ne!(etag(&toggled), etag(&updated));

    let star = [("If-Match", "*")];
    let updated = call(&app, put, &path, &token, &star, body.as_ref()).await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(updated.json()["data"]["is_completed"], true);
    let toggled = call(&app, patch, &toggle, &token, &star, None).await;
    assert_eq!(toggled.status, StatusCode::OK, "{:?}", toggled.body);
    assert_eq!(toggled.json()["data"]["is_completed"], false);
    let deleted = call(&app, delete, &path, &token, &star, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    assert_eq!(stored(&id).await, None);
}

#[tokio::test]
async fn weak_respelled_and_foreign_form_tags_never_satisfy_if_match() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let task = app.create_task(&token, "strong only").await;
    let id = id_of(&task);
    let current = tag_of(&task);
    let updated_at = task["updated_at"].as_str().unwrap();
    let before = stored(&id).await.expect("task stored");
    let candidates = [
        // Weak comparison is for If-None-Match only.
        format!("W/{current}"),
        format!("W/{current}, \"stale\""),
        // The same instant spelled differently is a different entity tag.
        format!("\"{}+00:00\"", updated_at.trim_end_matches('Z')),
        format!("\"{}\"", updated_at.to_lowercase()),
        // Well-formed tags that are no task's tag, including impossible timestamps.
        "\"nonsense\"".to_owned(),
        "\"\"".to_owned(),
        "\"0000-01-01T00:00:00.000000Z\"".to_owned(),
        "\"9999-12-31T23:59:59.999999Z\"".to_owned(),
    ];
    for candidate in &candidates {
        for (method, path, body) in writes(&id) {
            let response = call(
                &app,
                method.clone(),
                &path,
                &token,
                &[("If-Match", candidate)],
                body.as_ref(),
            )
            .await;
            assert_eq!(
                response.status,
                StatusCode::PRECONDITION_FAILED,
                "If-Match: {candidate} on {method} {path}: {:?}",
                response.body
            );
            response.assert_error(412, "PRECONDITION_FAILED");
            assert_eq!(etag(&response), current, "{candidate}");
        }
    }
    assert_eq!(stored(&id).await, Some(before));
}

#[tokio::test]
async fn if_match_on_a_foreign_or_missing_task_is_404() {
    let app = spawn_app().await;
    let (_, owner) = app.new_user();
    let (_, intruder) = app.new_user();
    let task = app.create_task(&owner, "mine").await;
    let id = id_of(&task);
    let before = stored(&id).await.expect("task stored");
    let missing = Uuid::now_v7().to_string();

    for target in [&id, &missing] {
        for tag in [tag_of(&task), "*".to_owned(), "\"stale\"".to_owned()] {
            for (method, path, body) in writes(target) {
                let token = if target == &id { &intruder } else { &owner };
                let response = call(
                    &app,
                    method.clone(),
                    &path,
                    token,
                    &[("If-Match", &tag)],
                    body.as_ref(),
                )
                .await;
                assert_eq!(
                    response.status,
                    StatusCode::NOT_FOUND,
                    "If-Match: {tag} on {method} {path}: {:?}",
                    response.body
                );
                response.assert_error(404, "TASK_NOT_FOUND");
                assert_eq!(response.header(header::ETAG), None, "no tag leaks");
            }
        }
    }
    assert_eq!(stored(&id).await, Some(before));
    assert_eq!(stored(&missing).await, None);
}

#[tokio::test]
async fn if_none_match_on_get_one_is_304_for_the_current_tag_in_any_form() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let (_, stranger) = app.new_user();
    let task = app.create_task(&token, "cached").await;
    let id = id_of(&task);
    let path = format!("/api/tasks/{id}");
    let current = tag_of(&task);

    for value in [
        current.clone(),
        format!("W/{current}"),
        "*".to_owned(),
        format!("\"other\", {current}"),
    ] {
        let response = call(
            &app,
            Method::GET,
            &path,
            &token,
            &[("If-None-Match", &value)],
            None,
        )
        .await;
        assert_not_modified(&response, &current);
    }

    let other = call(
        &app,
        Method::GET,
        &path,
        &token,
        &[("If-None-Match", "\"other\"")],
        None,
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.json()["data"]["id"], id.as_str());
    assert_eq!(etag(&other), current);

    // After a write the client's copy is stale: a full 200 with the new tag.
    let toggled = call(
        &app,
        Method::PATCH,
        &format!("{path}/toggle"),
        &token,
        &[],
        None,
    )
    .await;
    assert_eq!(toggled.status, StatusCode::OK);
    let stale = call(
        &app,
        Method::GET,
        &path,
        &token,
        &[("If-None-Match", &current)],
        None,
    )
    .await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(etag(&stale), etag(&toggled));
    assert_eq!(stale.json()["data"]["is_completed"], true);

    // Existence before preconditions: no 304 for a task this user cannot see.
    let missing = format!("/api/tasks/{}", Uuid::now_v7());
    for (who, path, value) in [
        (&token, &missing, "*".to_owned()),
        (&token, &missing, current.clone()),
        (&stranger, &path, "*".to_owned()),
        (&stranger, &path, etag(&toggled)),
    ] {
        let response = call(
            &app,
            Method::GET,
            path,
            who,
            &[("If-None-Match", &value)],
            None,
        )
        .await;
        response.assert_error(404, "TASK_NOT_FOUND");
    }
}

#[tokio::test]
async fn the_list_etag_follows_the_page_and_a_match_is_304() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let first = app.create_task(&token, "first").await;
    app.create_task(&token, "second").await;

    let all = list(&app, &token, "", None).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.json()["count"], 2);
    let all_tag = etag(&all);
    assert!(
        all_tag.starts_with('"') && all_tag.ends_with('"') && all_tag.len() > 2,
        "a strong entity tag: {all_tag}"
    );
    assert_not_modified(&list(&app, &token, "", Some(&all_tag)).await, &all_tag);
    assert_not_modified(
        &list(&app, &token, "", Some(&format!("W/{all_tag}"))).await,
        &all_tag,
    );

    // The tag is the page's: other queries with other contents have other tags.
    let one = list(&app, &token, "?limit=1", None).await;
    assert_eq!(one.json()["count"], 1);
    let one_tag = etag(&one);
    let completed = list(&app, &token, "?status=completed", None).await;
    assert_eq!(completed.json()["count"], 0);
    let completed_tag = etag(&completed);
    let distinct: HashSet<&String> = [&all_tag, &one_tag, &completed_tag].into_iter().collect();
    assert_eq!(distinct.len(), 3, "{all_tag} {one_tag} {completed_tag}");
    assert_not_modified(
        &list(&app, &token, "?limit=1", Some(&one_tag)).await,
        &one_tag,
    );
    let mismatched = list(&app, &token, "", Some(&one_tag)).await;
    assert_eq!(mismatched.status, StatusCode::OK);
    assert_eq!(etag(&mismatched), all_tag);

    // Adding a task changes the page, so its tag; the old tag gets the new page.
    app.create_task(&token, "third").await;
    let grown = list(&app, &token, "", Some(&all_tag)).await;
    assert_eq!(grown.status, StatusCode::OK);
    assert_eq!(grown.json()["count"], 3);
    let grown_tag = etag(&grown);
    assert_ne!(grown_tag, all_tag);

    // So does toggling one, in the unfiltered page and in the filtered one.
    let toggle = format!("/api/tasks/{}/toggle", id_of(&first));
    let toggled = call(&app, Method::PATCH, &toggle, &token, &[], None).await;
    assert_eq!(toggled.status, StatusCode::OK);
    let after_toggle = list(&app, &token, "", Some(&grown_tag)).await;
    assert_eq!(after_toggle.status, StatusCode::OK);
    assert_ne!(etag(&after_toggle), grown_tag);
    let completed = list(&app, &token, "?status=completed", Some(&completed_tag)).await;
    assert_eq!(completed.status, StatusCode::OK);
    assert_eq!(completed.json()["count"], 1);
    assert_ne!(etag(&completed), completed_tag);
}

#[tokio::test]
async fn malformed_conditional_headers_are_400_naming_the_header_and_change_nothing() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let task = app.create_task(&token, "untouched").await;
    let id = id_of(&task);
    let current = tag_of(&task);
    let before = stored(&id).await.expect("task stored");
    let malformed = [
        "abc".to_owned(),
        "\"unterminated".to_owned(),
        "*, \"a\"".to_owned(),
        "W/abc".to_owned(),
        "w/\"lowercase-weak\"".to_owned(),
        "\"a\" \"b\"".to_owned(),
        "\"in\"side\"".to_owned(),
        "".to_owned(),
        " , ".to_owned(),
        // Malformed even though the current tag is in there.
        format!("*, {current}"),
        format!("{current} junk"),
        current.trim_matches('"').to_owned(),
    ];
    let missing = Uuid::now_v7().to_string();
    for value in &malformed {
        for target in [&id, &missing] {
            for (method, path, body) in writes(target) {
                let response = call(
                    &app,
                    method.clone(),
                    &path,
                    &token,
                    &[
                        ("If-Match", value),
                        ("Idempotency-Key", "malformed-if-match"),
                    ],
                    body.as_ref(),
                )
                .await;
                let json = response.assert_error(400, "VALIDATION_ERROR");
                assert_eq!(
                    json["error"]["details"]["field"], "If-Match",
                    "If-Match: {value:?} on {method} {path}"
                );
            }
        }
        for path in [
            format!("/api/tasks/{id}"),
            format!("/api/tasks/{missing}"),
            "/api/tasks".to_owned(),
            "/api/tasks?status=pending&limit=1".to_owned(),
        ] {
            let response = call(
                &app,
                Method::GET,
                &path,
                &token,
                &[("If-None-Match", value)],
                None,
            )
            .await;
            let json = response.assert_error(400, "VALIDATION_ERROR");
            assert_eq!(
                json["error"]["details"]["field"], "If-None-Match",
                "If-None-Match: {value:?} on GET {path}"
            );
        }
    }
    assert_eq!(stored(&id).await, Some(before));
    assert_eq!(keys_recorded(&user, "malformed-if-match").await, 0);
}

#[tokio::test]
async fn conditional_headers_are_checked_before_the_task_id() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let bad_id = "not-a-uuid";
    for (method, path, body) in writes(bad_id) {
        let malformed = call(
            &app,
            method.clone(),
            &path,
            &token,
            &[("If-Match", "abc")],
            body.as_ref(),
        )
        .await;
        let json = malformed.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(
            json["error"]["details"]["field"], "If-Match",
            "{method} {path}"
        );
        let well_formed = call(
            &app,
            method.clone(),
            &path,
            &token,
            &[("If-Match", "*")],
            body.as_ref(),
        )
        .await;
        well_formed.assert_error(404, "TASK_NOT_FOUND");
    }
    let path = format!("/api/tasks/{bad_id}");
    let malformed = call(
        &app,
        Method::GET,
        &path,
        &token,
        &[("If-None-Match", "\"unterminated")],
        None,
    )
    .await;
    let json = malformed.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(json["error"]["details"]["field"], "If-None-Match");
    let well_formed = call(
        &app,
        Method::GET,
        &path,
        &token,
        &[("If-None-Match", "*")],
        None,
    )
    .await;
    well_formed.assert_error(404, "TASK_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_ten_concurrent_puts_with_one_etag_exactly_one_wins() {
    // The PUTs wait for a lock the test holds: a deadline to spare on a slow machine.
    let app = spawn_app_with(&[("DATABASE_TIMEOUT_MS", "30000")]).await;
    let (_, token) = app.new_user();
    let task = app.create_task(&token, "contested").await;
    let id = id_of(&task);
    let path = format!("/api/tasks/{id}");
    let tag = tag_of(&task);

    // A transaction of the test's holds the row, so the PUTs pile up on its lock having all
    // read the same version; releasing it lets them race for the row.
    let locker = inspect().await;
    locker.batch_execute("BEGIN").await.expect("begin");
    let locker_pid: i32 = locker
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let uuid = Uuid::parse_str(&id).unwrap();
    locker
        .query_one("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", &[&uuid])
        .await
        .expect("lock the task");

    let puts = join_all((0..10).map(|i| {
        let body = json!({ "title": format!("writer {i}") });
        let (app, path, token, tag) = (&app, &path, &token, &tag);
        async move {
            let response = call(
                app,
                Method::PUT,
                path,
                token,
                &[("If-Match", tag)],
                Some(&body),
            )
            .await;
            (body, response)
        }
    }));
    let release = async {
        // Waits (polling the database, bounded) until several PUTs wait for the lock; 4 fit
        // in the server's pool of 8 and in PgBouncer's pool of 4.
        let watcher = inspect().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let blocked: i64 = watcher
                .query_one(
                    // Waiting for the lock, or for a PUT that waits for it.
                    "WITH RECURSIVE waiting (pid) AS (
                        SELECT $1::int
                        UNION
                        SELECT a.pid FROM pg_stat_activity a
                        JOIN waiting w ON w.pid = ANY (pg_blocking_pids(a.pid))
                    )
                    SELECT count(*) - 1 FROM waiting",
                    &[&locker_pid],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            if blocked >= 4 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {blocked} PUTs wait for the row lock"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        locker.batch_execute("ROLLBACK").await.expect("rollback");
    };
    let (responses, ()) = tokio::join!(puts, release);

    let (winners, losers): (Vec<_>, Vec<_>) = responses
        .iter()
        .partition(|(_, response)| response.status == StatusCode::OK);
    assert_eq!(
        (winners.len(), losers.len()),
        (1, 9),
        "{:?}",
        responses
            .iter()
            .map(|(_, r)| r.status.as_u16())
            .collect::<Vec<_>>()
    );
    let (winner_body, winner) = winners[0];
    let winner_tag = etag(winner);
    assert_ne!(winner_tag, tag);
    assert_eq!(winner.json()["data"]["title"], winner_body["title"]);
    for (_, loser) in losers {
        loser.assert_error(412, "PRECONDITION_FAILED");
        assert_eq!(
            etag(loser),
            winner_tag,
            "the 412 reports the winner's version"
        );
    }
    let got = call(&app, Method::GET, &path, &token, &[], None).await;
    assert_eq!(etag(&got), winner_tag);
    assert_eq!(got.json()["data"]["title"], winner_body["title"]);
    let row: Value = serde_json::from_str(&stored(&id).await.expect("task stored")).unwrap();
    assert_eq!(row["title"], winner_body["title"]);
}

#[tokio::test]
async fn idempotency_keys_compose_with_if_match() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let task = app.create_task(&token, "keyed").await;
    let id = id_of(&task);
    let path = format!("/api/tasks/{id}");
    let original_tag = tag_of(&task);
    let key = format!("k-{}", Uuid::now_v7());
    let body = json!({ "title": "first edit" });

    let first = call(
        &app,
        Method::PUT,
        &path,
        &token,
        &[("Idempotency-Key", &key), ("If-Match", &original_tag)],
        Some(&body),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.header(REPLAYED), None);
    let first_tag = etag(&first);
    let after_first = stored(&id).await;

    // The identical request again: its If-Match is stale now, but a replay comes first.
    let replay = call(
        &app,
        Method::PUT,
        &path,
        &token,
        &[("Idempotency-Key", &key), ("If-Match", &original_tag)],
        Some(&body),
    )
    .await;
    assert_eq!(replay.status, StatusCode::OK, "{:?}", replay.body);
    assert_eq!(replay.header(REPLAYED), Some("true"));
    assert_eq!(replay.json(), first.json());
    assert_eq!(etag(&replay), first_tag);
    assert_eq!(stored(&id).await, after_first, "a replay writes nothing");

    // A 412 is not remembered: the same key with a fixed If-Match runs the write.
    let key2 = format!("k2-{}", Uuid::now_v7());
    let body2 = json!({ "title": "second edit" });
    let refused = call(
        &app,
        Method::PUT,
        &path,
        &token,
        &[("Idempotency-Key", &key2), ("If-Match", &original_tag)],
        Some(&body2),
    )
    .await;
    refused.assert_error(412, "PRECONDITION_FAILED");
    assert_eq!(etag(&refused), first_tag);
    assert_eq!(stored(&id).await, after_first);
    assert_eq!(keys_recorded(&user, &key2).await, 0);

    let fixed = call(
        &app,
        Method::PUT,
        &path,
        &token,
        &[("Idempotency-Key", &key2), ("If-Match", &first_tag)],
        Some(&body2),
    )
    .await;
    assert_eq!(fixed.status, StatusCode::OK, "{:?}", fixed.body);
    assert_eq!(fixed.header(REPLAYED), None);
    assert_eq!(fixed.json()["data"]["title"], "second edit");
    let second_tag = etag(&fixed);
    assert_ne!(second_tag, first_tag);
    assert_eq!(keys_recorded(&user, &key2).await, 1);

    // A DELETE under If-Match and a key: its replay is 204 although the task is gone.
    let key3 = format!("k3-{}", Uuid::now_v7());
    let headers = [
        ("Idempotency-Key", key3.as_str()),
        ("If-Match", &second_tag),
    ];
    let deleted = call(&app, Method::DELETE, &path, &token, &headers, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    assert_eq!(deleted.header(REPLAYED), None);
    let again = call(&app, Method::DELETE, &path, &token, &headers, None).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT, "{:?}", again.body);
    assert_eq!(again.header(REPLAYED), Some("true"));
    assert_eq!(stored(&id).await, None);
}

#[tokio::test]
async fn entity_tags_with_obs_text_are_well_formed() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let task = app.create_task(&token, "latin-1").await;
    let id = id_of(&task);
    let path = format!("/api/tasks/{id}");
    let before = stored(&id).await.expect("task stored");
    let tag = HeaderValue::from_bytes(b"\"caf\xe9\"").expect("obs-text is a valid field value");
    for (method, name, expected) in [
        (
            Method::PUT,
            header::IF_MATCH,
            StatusCode::PRECONDITION_FAILED,
        ),
        (Method::GET, header::IF_NONE_MATCH, StatusCode::OK),
    ] {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(&path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(name.clone(), tag.clone());
        let body = if method == Method::PUT {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Full::new(Bytes::from(json!({ "title": "x" }).to_string()))
        } else {
            Full::new(Bytes::new())
        };
        let response = app.request(request.body(body).expect("request")).await;
        assert_eq!(
            response.status,
            expected,
            "{name}: \"caf\\xe9\" on {method}: {:?}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(etag(&response), tag_of(&task));
    }
    assert_eq!(stored(&id).await, Some(before));
}
