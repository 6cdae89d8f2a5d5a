#![forbid(unsafe_code)]
//! "It works on Lambda": the compiled function binaries, started as Lambda starts them, talking
//! the real Runtime API protocol, fed API Gateway v2 events from `events/`, against the real
//! database. Several invocations per process prove warm reuse.

mod common;

use common::events::{authorize, event, for_task};

use common::functions::{Function, body_json};
use common::{prepare_database, test_database_url};
use serde_json::{Value, json};
use std::time::Duration;
use tasks_tools::runtime_api::Outcome;
use tasks_tools::tokens::hs256_for;

const SECRET: &str = "runtime-api-test-secret-0123456789abcdef";

fn config(application_name: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "DATABASE_URL",
            common::with_application_name(&test_database_url(), application_name),
        ),
        ("JWT_SECRET", SECRET.to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_binary_serves_its_route_warm() {
    prepare_database().await;
    let app_name = format!("rt-{}", uuid::Uuid::now_v7().simple());
    let vars = config(&app_name);
    let user = common::new_user_id();
    let token = hs256_for(SECRET, &user);

    let create = Function::start("create-task", &vars).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut e = authorize(event("create-task"), &token);
        e["body"] = json!(json!({"title": format!("task {i}")}).to_string());
        let document = create.respond(&e).await;
        assert_eq!(document["statusCode"], 201, "{document}");
        assert_eq!(document["headers"]["content-type"], "application/json");
        let body = body_json(&document);
        let id = body["data"]["id"].as_str().unwrap().to_owned();
        assert_eq!(document["headers"]["location"], format!("/api/tasks/{id}"));
        assert_eq!(body["data"]["user_id"], user);
        ids.push(id);
    }

    let list = Function::start("list-tasks", &vars).await;
    let mut e = authorize(event("list-tasks"), &token);
    e["rawQueryString"] = json!("limit=2");
    let page = list.respond(&e).await;
    assert_eq!(page["statusCode"], 200);
    let body = body_json(&page);
    assert_eq!(body["count"], 2);
    assert_eq!(body["data"][0]["id"], ids[2].as_str());
    let cursor = body["next_cursor"].as_str().unwrap();
    e["rawQueryString"] = json!(format!("limit=2&cursor={cursor}"));
    let rest = body_json(&list.respond(&e).await);
    assert_eq!(
        (rest["count"].as_u64(), &rest["next_cursor"]),
        (Some(1), &Value::Null)
    );

    let get = Function::start("get-task", &vars).await;
    let document = get
        .respond(&for_task(authorize(event("get-task"), &token), &ids[0]))
        .await;
    assert_eq!(body_json(&document)["data"]["title"], "task 0");
    let stranger = token.replace('.', ".x");
    let document = get
        .respond(&for_task(authorize(event("get-task"), &stranger), &ids[0]))
        .await;
    assert_eq!(document["statusCode"], 401);
    assert!(
        document["headers"]["www-authenticate"]
            .as_str()
            .unwrap()
            .starts_with("Bearer")
    );

    let update = Function::start("update-task", &vars).await;
    let document = update
        .respond(&for_task(authorize(event("update-task"), &token), &ids[0]))
        .await;
    assert_eq!(document["statusCode"], 200);
    assert_eq!(body_json(&document)["data"]["is_completed"], true);

    let toggle = Function::start("toggle-task", &vars).await;
    for expected in ["Task marked as incomplete", "Task marked as complete"] {
        let document = toggle
            .respond(&for_task(authorize(event("toggle-task"), &token), &ids[0]))
            .await;
        assert_eq!(body_json(&document)["message"], expected);
    }

    let delete = Function::start("delete-task", &vars).await;
    let document = delete
        .respond(&for_task(authorize(event("delete-task"), &token), &ids[1]))
        .await;
    assert_eq!(document["statusCode"], 204);
    assert_eq!(body_json(&document), Value::Null);
    let document = delete
        .respond(&for_task(authorize(event("delete-task"), &token), &ids[1]))
        .await;
    assert_eq!(document["statusCode"], 404);
    assert_eq!(body_json(&document)["error"]["code"], "TASK_NOT_FOUND");

    // Positions so far: creates 1–3, update 4, toggles 5 and 6, delete 7. A sync from scratch
    // lists the two remaining tasks in the order of their latest change, one per page.
    let changes = Function::start("list-changes", &vars).await;
    let mut e = authorize(event("list-changes"), &token);
    let mut pages = Vec::new();
    let mut query = "limit=1".to_owned();
    loop {
        e["rawQueryString"] = json!(query);
        let document = changes.respond(&e).await;
        assert_eq!(document["statusCode"], 200, "{document}");
        let body = body_json(&document);
        pages.push(body["data"].clone());
        query = format!("limit=1&since={}", body["next_token"].as_str().unwrap());
        if body["has_more"] == false {
            break;
        }
    }
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert_eq!(pages[0][0]["task"]["id"], ids[2].as_str());
    assert_eq!(pages[1][0]["task"]["id"], ids[0].as_str());
    assert_eq!(pages[1][0]["op"], "upsert");
    e["rawQueryString"] = json!(query);
    let after = body_json(&changes.respond(&e).await);
    assert_eq!(
        (after["count"].as_u64(), &after["has_more"]),
        (Some(0), &json!(false))
    );
    e["rawQueryString"] = json!("since=not-a-token");
    let document = changes.respond(&e).await;
    assert_eq!(document["statusCode"], 400);
    assert_eq!(body_json(&document)["error"]["details"]["field"], "since");

    let health = Function::start("health", &vars).await;
    for _ in 0..2 {
        let document = health.respond(&event("health")).await;
        assert_eq!(body_json(&document)["status"], "ok");
    }

    // Warm reuse: each function process holds exactly one connection, whatever it served.
    assert_eq!(
        common::connections_named(&app_name).await,
        8,
        "one connection per function process"
    );
}

#[tokio::test]
async fn a_function_answers_only_its_own_route() {
    let vars = config("rt-wrong-route");
    let get = Function::start("get-task", &vars).await;
    let document = get
        .respond(&authorize(
            event("list-tasks"),
            &hs256_for(SECRET, "someone"),
        ))
        .await;
    assert_eq!(document["statusCode"], 404);
    assert_eq!(body_json(&document)["error"]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn missing_configuration_fails_init_naming_the_variable() {
    for (vars, expected) in [
        (vec![("JWT_SECRET", SECRET.to_owned())], "DATABASE_URL"),
        (vec![("DATABASE_URL", test_database_url())], "JWKS_URL"),
    ] {
        let mut function = Function::start("list-tasks", &vars).await;
        let error = function
            .api
            .init_error(Duration::from_secs(10))
            .await
            .expect("init error reported");
        let message = error["errorMessage"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
        assert_eq!(error["errorType"], "ConfigError");
        let outcome = function
            .api
            .invoke(event("health"), Duration::from_secs(5))
            .await;
        assert!(
            matches!(outcome, Some(Outcome::InitError(_))),
            "{outcome:?}"
        );
        let status = tokio::time::timeout(Duration::from_secs(10), function.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(!status.success(), "the process exits with an error");
    }
}

#[tokio::test]
async fn database_down_at_cold_start_still_inits_and_answers_503() {
    let vars = vec![
        (
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/tasks_test".to_owned(),
        ),
        ("JWT_SECRET", SECRET.to_owned()),
        ("DATABASE_TIMEOUT_MS", "1000".to_owned()),
    ];
    let health = Function::start("health", &vars).await;
    let document = health.respond(&event("health")).await;
    assert_eq!(document["statusCode"], 503);
    assert_eq!(body_json(&document)["status"], "degraded");
    assert!(document["headers"]["retry-after"].is_string());
    let list = Function::start("list-tasks", &vars).await;
    let document = list
        .respond(&authorize(event("list-tasks"), &hs256_for(SECRET, "u")))
        .await;
    assert_eq!(document["statusCode"], 503);
    assert_eq!(body_json(&document)["error"]["code"], "SERVICE_UNAVAILABLE");
}

/// The Lambda binaries keep issue 8's promises too: behind a fault proxy, a create whose answer
/// was lost and a toggle whose connection reset on use are each applied once and answered with
/// their true outcome; a client retry with the same key is a replay; a stale `If-Match` is 412.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_binaries_answer_true_outcomes_through_broken_connections() {
    use common::proxy::{Fault, PgProxy};
    prepare_database().await;
    let proxy = PgProxy::start(common::pooled_upstream()).await;
    let vars = vec![
        ("DATABASE_URL", proxy.url_for(&test_database_url())),
        ("JWT_SECRET", SECRET.to_owned()),
    ];
    let user = common::new_user_id();
    let token = hs256_for(SECRET, &user);
    let key = format!("rt-key-{}", uuid::Uuid::now_v7());

    let create = Function::start("create-task", &vars).await;
    let mut e = authorize(event("create-task"), &token);
    e["body"] = json!(json!({"title": "warm"}).to_string());
    assert_eq!(create.respond(&e).await["statusCode"], 201);
    proxy.fault_established(Fault::LoseAnswer);
    e["body"] = json!(json!({"title": "answer lost"}).to_string());
    e["headers"]["idempotency-key"] = json!(key);
    let first = create.respond(&e).await;
    assert_eq!(first["statusCode"], 201, "{first}");
    assert!(first["headers"].get("idempotent-replayed").is_none());
    let replay = create.respond(&e).await;
    assert_eq!(replay["statusCode"], 201);
    assert_eq!(replay["headers"]["idempotent-replayed"], "true");
    assert_eq!(body_json(&replay), body_json(&first));
    let id = body_json(&first)["data"]["id"].as_str().unwrap().to_owned();
    let db = common::inspect().await;
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM tasks WHERE user_id = $1 AND title = 'answer lost'",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1, "created once");

    let toggle = Function::start("toggle-task", &vars).await;
    let stale = first["headers"]["etag"].as_str().unwrap().to_owned();
    let e = for_task(authorize(event("toggle-task"), &token), &id);
    let toggled = toggle.respond(&e).await;
    assert_eq!(toggled["statusCode"], 200);
    proxy.fault_established(Fault::Reset);
    let again = toggle.respond(&e).await;
    assert_eq!(again["statusCode"], 200, "{again}");
    assert_eq!(
        body_json(&again)["data"]["is_completed"],
        false,
        "flipped once more"
    );

    let mut conditional = e.clone();
    conditional["headers"]["if-match"] = json!(stale);
    let refused = toggle.respond(&conditional).await;
    assert_eq!(refused["statusCode"], 412);
    assert_eq!(refused["headers"]["etag"], again["headers"]["etag"]);
}

/// API Gateway's `$default` route: the catch-all binary answers what no route matched with the
/// contract's JSON 404 / 405 (+ `Allow`), with no configuration at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catch_all_function_answers_unknown_routes_like_the_local_server() {
    let catch_all = Function::start(tasks_shared::http::routes::CATCH_ALL, &[]).await;
    let unknown = catch_all.respond(&event("unmatched-route")).await;
    assert_eq!(unknown["statusCode"], 404, "{unknown}");
    assert_eq!(body_json(&unknown)["error"]["code"], "NOT_FOUND");

    let mut head = event("unmatched-route");
    head["rawPath"] = json!("/api/tasks");
    head["requestContext"]["http"]["method"] = json!("HEAD");
    let refused = catch_all.respond(&head).await;
    assert_eq!(refused["statusCode"], 405, "{refused}");
    assert_eq!(refused["headers"]["allow"], "GET, POST");
    assert_eq!(body_json(&refused)["error"]["code"], "METHOD_NOT_ALLOWED");
}
