#![forbid(unsafe_code)]
//! The handlers fed with API Gateway HTTP API (v2) events, parsed by `lambda_http` exactly as in
//! Lambda (fixtures in `events/`), against the real database.

mod common;

use common::events::{authorize, event, for_task};

use common::{TestApp, spawn_app, spawn_app_with};
use serde_json::{Value, json};
use tasks_shared::handlers;
use tasks_shared::http::Function;
use tasks_shared::lambda_http::{Body, Response, request};

/// The fixture secret documented in events/README.md.
const EVENTS_SECRET: &str = "events-fixture-secret-not-for-production-0123456789";

async fn invoke(app: &TestApp, function: Function, event: &Value) -> (u16, Response<Body>, Value) {
    let request = request::from_str(&event.to_string()).expect("lambda_http parses the event");
    let response = handlers::serve(&app.state, function, request)
        .await
        .unwrap();
    let status = response.status().as_u16();
    let json = match response.body() {
        Body::Empty => Value::Null,
        body => serde_json::from_slice(body.as_ref()).expect("JSON body"),
    };
    (status, response, json)
}

#[tokio::test]
async fn every_route_event_is_served_by_its_function() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();

    let (status, response, json) = invoke(
        &app,
        Function::CreateTask,
        &authorize(event("create-task"), &token),
    )
    .await;
    assert_eq!(status, 201, "{json}");
    assert_eq!(json["data"]["title"], "Buy milk");
    assert_eq!(json["data"]["user_id"], user);
    let id = json["data"]["id"].as_str().unwrap().to_owned();
    let location = format!("/api/tasks/{id}");
    assert_eq!(response.headers()["location"], location.as_str());

    let (status, _, json) = invoke(
        &app,
        Function::ListTasks,
        &authorize(event("list-tasks"), &token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        json["count"], 1,
        "status=pending&limit=20 from rawQueryString: {json}"
    );

    let (status, _, json) = invoke(
        &app,
        Function::GetTask,
        &for_task(authorize(event("get-task"), &token), &id),
    )
    .await;
    assert_eq!(
        (status, json["data"]["id"].as_str()),
        (200, Some(id.as_str()))
    );

    let (status, _, json) = invoke(
        &app,
        Function::UpdateTask,
        &for_task(authorize(event("update-task"), &token), &id),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            json["data"]["title"].as_str(),
            json["data"]["is_completed"].as_bool()
        ),
        (Some("Buy oat milk"), Some(true))
    );

    let (status, _, json) = invoke(
        &app,
        Function::ToggleTask,
        &for_task(authorize(event("toggle-task"), &token), &id),
    )
    .await;
    assert_eq!(
        (status, json["message"].as_str()),
        (200, Some("Task marked as incomplete"))
    );

    let (status, response, _) = invoke(
        &app,
        Function::DeleteTask,
        &for_task(authorize(event("delete-task"), &token), &id),
    )
    .await;
    assert_eq!(status, 204);
    assert!(response.body().is_empty());

    let (status, _, json) = invoke(
        &app,
        Function::GetTask,
        &for_task(authorize(event("get-task"), &token), &id),
    )
    .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (404, Some("TASK_NOT_FOUND"))
    );

    // The task was created and deleted: a sync from scratch started after both lists nothing.
    let (status, _, json) = invoke(
        &app,
        Function::ListChanges,
        &authorize(event("list-changes"), &token),
    )
    .await;
    assert_eq!((status, json["count"].as_u64()), (200, Some(0)), "{json}");
    assert_eq!(json["has_more"], false);

    let (status, _, json) = invoke(&app, Function::Health, &event("health")).await;
    assert_eq!((status, json["status"].as_str()), (200, Some("ok")));
}

#[tokio::test]
async fn fixture_events_authenticate_with_the_documented_secret() {
    let app = spawn_app_with(&[("JWT_SECRET", EVENTS_SECRET)]).await;
    let (status, _, json) = invoke(&app, Function::ListTasks, &event("list-tasks")).await;
    assert_eq!(status, 200, "{json}");
    let mut unauthenticated = event("list-tasks");
    unauthenticated["headers"]
        .as_object_mut()
        .unwrap()
        .remove("authorization");
    let (status, response, json) = invoke(&app, Function::ListTasks, &unauthenticated).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn an_event_for_another_route_is_not_found() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let (status, _, json) = invoke(
        &app,
        Function::GetTask,
        &authorize(event("list-tasks"), &token),
    )
    .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
}

#[tokio::test]
async fn named_stages_and_base64_bodies_are_handled() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let mut staged = authorize(event("create-task"), &token);
    staged["requestContext"]["stage"] = json!("prod");
    use base64::Engine;
    let raw = r#"{"title":"from base64"}"#;
    staged["body"] = json!(base64::engine::general_purpose::STANDARD.encode(raw));
    staged["isBase64Encoded"] = json!(true);
    let (status, _, json) = invoke(&app, Function::CreateTask, &staged).await;
    assert_eq!(status, 201, "{json}");
    assert_eq!(json["data"]["title"], "from base64");
}

#[tokio::test]
async fn validation_and_method_errors_through_events() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let mut bad = authorize(event("create-task"), &token);
    bad["body"] = json!(r#"{"tittle":"x"}"#);
    let (status, _, json) = invoke(&app, Function::CreateTask, &bad).await;
    assert_eq!(
        (status, json["error"]["details"]["field"].as_str()),
        (400, Some("tittle"))
    );

    let mut wrong_method = event("list-tasks");
    wrong_method["requestContext"]["http"]["method"] = json!("DELETE");
    let (status, response, _) = invoke(&app, Function::ListTasks, &wrong_method).await;
    assert_eq!(status, 405);
    assert_eq!(response.headers()["allow"], "GET, POST");
}

fn etag_of(response: &Response<Body>) -> String {
    response
        .headers()
        .get("etag")
        .expect("ETag")
        .to_str()
        .expect("ASCII ETag")
        .to_owned()
}

#[tokio::test]
async fn if_none_match_through_an_event_is_a_304_without_a_body() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let (status, created, json) = invoke(
        &app,
        Function::CreateTask,
        &authorize(event("create-task"), &token),
    )
    .await;
    assert_eq!(status, 201, "{json}");
    let id = json["data"]["id"].as_str().unwrap().to_owned();
    let tag = etag_of(&created);
    assert_eq!(
        tag,
        format!("\"{}\"", json["data"]["updated_at"].as_str().unwrap())
    );

    let mut conditional = for_task(authorize(event("get-task"), &token), &id);
    for value in [tag.clone(), format!("W/{tag}"), "*".to_owned()] {
        conditional["headers"]["if-none-match"] = json!(value);
        let (status, response, _) = invoke(&app, Function::GetTask, &conditional).await;
        assert_eq!(status, 304, "if-none-match: {value}");
        assert!(
            matches!(response.body(), Body::Empty),
            "a 304 has no body: {:?}",
            response.body()
        );
        assert_eq!(etag_of(&response), tag);
    }

    conditional["headers"]["if-none-match"] = json!("\"2001-01-01T00:00:00.000000Z\"");
    let (status, response, json) = invoke(&app, Function::GetTask, &conditional).await;
    assert_eq!(
        (status, json["data"]["id"].as_str()),
        (200, Some(id.as_str()))
    );
    assert_eq!(etag_of(&response), tag);
}

#[tokio::test]
async fn the_if_match_update_event_needs_the_tasks_current_etag() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();

    // As shipped, the fixture names a task this user does not have.
    let fixture = authorize(event("update-task-if-match"), &token);
    let (status, response, json) = invoke(&app, Function::UpdateTask, &fixture).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (404, Some("TASK_NOT_FOUND"))
    );
    assert!(response.headers().get("etag").is_none());

    let (status, created, json) = invoke(
        &app,
        Function::CreateTask,
        &authorize(event("create-task"), &token),
    )
    .await;
    assert_eq!(status, 201, "{json}");
    let id = json["data"]["id"].as_str().unwrap().to_owned();
    let tag = etag_of(&created);

    // The fixture's tag is not this task's: 412 with the current ETag, nothing written.
    let mut update = for_task(fixture, &id);
    let (status, response, json) = invoke(&app, Function::UpdateTask, &update).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (412, Some("PRECONDITION_FAILED"))
    );
    assert_eq!(etag_of(&response), tag);

    // With the task's current ETag the update goes through; the 412 did not use up the
    // fixture's idempotency key.
    update["headers"]["if-match"] = json!(tag);
    let (status, updated, json) = invoke(&app, Function::UpdateTask, &update).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        (
            json["data"]["title"].as_str(),
            json["data"]["is_completed"].as_bool()
        ),
        (Some("Buy oat milk"), Some(true))
    );
    assert!(updated.headers().get("idempotent-replayed").is_none());
    let new_tag = etag_of(&updated);
    assert_ne!(new_tag, tag);
    assert_eq!(
        new_tag,
        format!("\"{}\"", json["data"]["updated_at"].as_str().unwrap())
    );

    // The same event again is a replay, although its If-Match is stale by now.
    let (status, replayed, replay_json) = invoke(&app, Function::UpdateTask, &update).await;
    assert_eq!(status, 200, "{replay_json}");
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(replay_json, json);
    assert_eq!(etag_of(&replayed), new_tag);

    let (status, got, json) = invoke(
        &app,
        Function::GetTask,
        &for_task(authorize(event("get-task"), &token), &id),
    )
    .await;
    assert_eq!(
        (status, json["data"]["title"].as_str()),
        (200, Some("Buy oat milk"))
    );
    assert_eq!(etag_of(&got), new_tag, "the replay wrote nothing");
}
