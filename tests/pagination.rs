#![forbid(unsafe_code)]
//! Keyset pagination: several pages, filters, stable order, cursor errors.

mod common;

use std::collections::HashSet;

use common::spawn_app;
use http::{Method, StatusCode};
use serde_json::Value;

async fn page(app: &common::TestApp, token: &str, query: &str) -> Value {
    let response = app
        .send(
            Method::GET,
            &format!("/api/tasks?{query}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{query}: {:?}",
        response.body
    );
    let json = response.json();
    assert_eq!(json["message"], "Tasks retrieved successfully");
    assert_eq!(
        json["count"].as_u64().unwrap() as usize,
        json["data"].as_array().unwrap().len()
    );
    json
}

/// Follows `next_cursor` to the end; returns every id in order and the page sizes.
async fn walk(app: &common::TestApp, token: &str, base: &str) -> (Vec<String>, Vec<usize>) {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    let mut query = base.to_owned();
    loop {
        let json = page(app, token, &query).await;
        let data = json["data"].as_array().unwrap();
        sizes.push(data.len());
        ids.extend(data.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        match json["next_cursor"].as_str() {
            Some(cursor) => query = format!("{base}&cursor={cursor}"),
            None => break,
        }
    }
    (ids, sizes)
}

#[tokio::test]
async fn pages_cover_every_task_once_newest_first() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let mut created = Vec::new();
    for i in 0..23 {
        created.push(app.create_task(&token, &format!("task {i}")).await);
    }
    // Complete every third task.
    for task in created.iter().step_by(3) {
        let path = format!("/api/tasks/{}/toggle", task["id"].as_str().unwrap());
        assert_eq!(
            app.send(Method::PATCH, &path, Some(&token), None)
                .await
                .status,
            StatusCode::OK
        );
    }
    let newest_first: Vec<String> = created
        .iter()
        .rev()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();

    let (ids, sizes) = walk(&app, &token, "limit=5").await;
    assert_eq!(ids, newest_first);
    assert_eq!(sizes, [5, 5, 5, 5, 3]);

    // Exactly one full page: next_cursor is null (the server fetched limit + 1 rows).
    let (_, sizes) = walk(&app, &token, "limit=23").await;
    assert_eq!(sizes, [23]);

    let completed: Vec<String> = created
        .iter()
        .step_by(3)
        .rev()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    let (ids, _) = walk(&app, &token, "status=completed&limit=3").await;
    assert_eq!(ids, completed);
    let (pending, _) = walk(&app, &token, "status=pending&limit=4").await;
    assert_eq!(pending.len(), 23 - completed.len());
    let all: HashSet<_> = pending.iter().chain(completed.iter()).collect();
    assert_eq!(all.len(), 23);

    // A cursor from one filter works under another: it is only a position.
    let first = page(&app, &token, "status=all&limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = page(
        &app,
        &token,
        &format!("status=completed&limit=500&cursor={cursor}"),
    )
    .await;
    let expected: Vec<&String> = completed
        .iter()
        .filter(|id| !newest_first[..2].contains(id))
        .collect();
    let got: Vec<&str> = rest["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn pages_are_stable_under_concurrent_inserts() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    for i in 0..6 {
        app.create_task(&token, &format!("old {i}")).await;
    }
    let first = page(&app, &token, "limit=3").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    // New tasks sort before the cursor and must not shift the next page.
    app.create_task(&token, "new").await;
    let second = page(&app, &token, &format!("limit=3&cursor={cursor}")).await;
    let titles: Vec<&str> = second["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["old 2", "old 1", "old 0"]);
    assert_eq!(second["next_cursor"], Value::Null);
}

#[tokio::test]
async fn default_limit_is_100_and_bad_parameters_are_400() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let empty = page(&app, &token, "").await;
    assert_eq!(
        (empty["count"].as_u64(), &empty["next_cursor"]),
        (Some(0), &Value::Null)
    );
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("status=done", "status"),
        ("cursor=bm9wZQ", "cursor"),
        ("cursor=%%%", "cursor"),
    ] {
        let response = app
            .send(
                Method::GET,
                &format!("/api/tasks?{query}"),
                Some(&token),
                None,
            )
            .await;
        let json = response.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(json["error"]["details"]["field"], field, "{query}");
    }
}
