#![forbid(unsafe_code)]
//! Concurrent writes: no lost toggles, no failures when a new user's first writes race.

mod common;

use common::{inspect, spawn_app};
use futures_util::future::join_all;
use http::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_toggles_lose_no_update() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let task = app.create_task(&token, "flip me").await;
    let path = format!("/api/tasks/{}/toggle", task["id"].as_str().unwrap());
    let toggles: usize = 25;
    let responses =
        join_all((0..toggles).map(|_| app.send(Method::PATCH, &path, Some(&token), None))).await;
    let mut completed_after = 0;
    for response in &responses {
        assert_eq!(response.status, StatusCode::OK);
        if response.json()["data"]["is_completed"] == true {
            completed_after += 1;
        }
    }
    // Each toggle saw the previous one's result: exactly 13 of 25 ended "complete" (1st, 3rd, …).
    assert_eq!(completed_after, toggles.div_ceil(2));
    let get = format!("/api/tasks/{}", task["id"].as_str().unwrap());
    let final_state = app.send(Method::GET, &get, Some(&token), None).await.json();
    assert_eq!(final_state["data"]["is_completed"], toggles % 2 == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_users_concurrent_first_writes_all_succeed() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let writes = 20;
    let responses = join_all((0..writes).map(|i| {
        let body = serde_json::json!({ "title": format!("first {i}") });
        let token = token.clone();
        let app = &app;
        async move {
            app.send(Method::POST, "/api/tasks", Some(&token), Some(&body))
                .await
        }
    }))
    .await;
    for response in &responses {
        assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
    }
    let db = inspect().await;
    let users = db
        .query_one("SELECT count(*) FROM users WHERE id = $1", &[&user])
        .await
        .unwrap();
    assert_eq!(users.get::<_, i64>(0), 1);
    let tasks = db
        .query_one("SELECT count(*) FROM tasks WHERE user_id = $1", &[&user])
        .await
        .unwrap();
    assert_eq!(tasks.get::<_, i64>(0), writes);
}
