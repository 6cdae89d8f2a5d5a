#![forbid(unsafe_code)]
//! Tenant isolation: another user's task is indistinguishable from a missing one, on every route.

mod common;

use common::{inspect, spawn_app};
use http::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn another_users_task_is_404_on_all_four_id_routes_and_absent_from_lists() {
    let app = spawn_app().await;
    let (_, alice) = app.new_user();
    let (_, bob) = app.new_user();
    let task = app.create_task(&alice, "alice's secret").await;
    let id = task["id"].as_str().unwrap();
    let path = format!("/api/tasks/{id}");
    let missing = "/api/tasks/0193f0c2-5d8e-7c1a-9b2e-3f4a5b6c7d8e";

    let body = json!({"title": "hijacked", "is_completed": true});
    for target in [path.as_str(), missing] {
        let responses = [
            app.send(Method::GET, target, Some(&bob), None).await,
            app.send(Method::PUT, target, Some(&bob), Some(&body)).await,
            app.send(Method::PATCH, &format!("{target}/toggle"), Some(&bob), None)
                .await,
            app.send(Method::DELETE, target, Some(&bob), None).await,
        ];
        for response in &responses {
            response.assert_error(404, "TASK_NOT_FOUND");
        }
    }
    // Byte-for-byte the same answer as for a task that does not exist.
    let foreign = app.send(Method::GET, &path, Some(&bob), None).await;
    let absent = app.send(Method::GET, missing, Some(&bob), None).await;
    assert_eq!(foreign.body, absent.body);

    let listed = app
        .send(Method::GET, "/api/tasks", Some(&bob), None)
        .await
        .json();
    assert_eq!(listed["count"], 0);
    assert_eq!(listed["data"], json!([]));

    // Alice's task is untouched.
    let mine = app.send(Method::GET, &path, Some(&alice), None).await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.json()["data"], task);
    let db = inspect().await;
    let row = db
        .query_one(
            "SELECT title, is_completed FROM tasks WHERE id = $1",
            &[&uuid::Uuid::parse_str(id).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "alice's secret");
    assert!(!row.get::<_, bool>(1));
}

#[tokio::test]
async fn user_id_comes_from_the_token_only() {
    let app = spawn_app().await;
    let (alice_id, alice) = app.new_user();
    let (bob_id, _) = app.new_user();
    let body = json!({"title": "x", "user_id": bob_id});
    let response = app
        .send(Method::POST, "/api/tasks", Some(&alice), Some(&body))
        .await;
    response.assert_error(400, "VALIDATION_ERROR");
    let created = app.create_task(&alice, "mine").await;
    assert_eq!(created["user_id"], alice_id);
}
