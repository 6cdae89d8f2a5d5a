#![forbid(unsafe_code)]
//! Better Auth key rotation under CONTRACT 1.2's refetch rule ("JWKS rotation and outages"): an
//! unknown `kid` fetches the JWKS unless this instance fetched in the last 5 s, and concurrent
//! requests share one fetch. Black-box, against a JWKS stub that rotates, is slow or fails: the
//! local server, the Lambda binary under the in-test Runtime API, and `Verifier::prefetch`. The
//! timing rule itself is unit-tested on a backdated clock in `shared/src/auth/jwks.rs`.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::events::{authorize, event};
use common::functions::{Function, body_json};
use common::jwks::{JwksServer, allowed_fetches, fixture, key_sets, unknown_kid_token};
use common::{TestApp, TestResponse, spawn_app_with, test_database_url};
use http::{Method, StatusCode};
use serde_json::Value;
use tasks_shared::auth::{REFETCH_INTERVAL, Verifier};
use tasks_shared::config::AuthSettings;

const BETTER_AUTH_URL: &str = "https://app.example.com";
/// Concurrent requests in a flood.
const FLOOD: usize = 300;
/// Requests of a flood carrying a real token (the rest carry made-up kids).
const REAL_EVERY: usize = 15;

/// Every request line this test process writes. Each test installs the sink before it starts
/// an app (the first installation wins, and `spawn_app_with` would install a silent one).
fn log_lines() -> Arc<Mutex<Vec<Value>>> {
    static LINES: OnceLock<Arc<Mutex<Vec<Value>>>> = OnceLock::new();
    LINES
        .get_or_init(|| {
            let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
            let sink = lines.clone();
            tasks_shared::telemetry::capture(move |line| {
                let line = serde_json::from_str(line).expect("a request line is JSON");
                sink.lock().expect("lines").push(line);
            });
            lines
        })
        .clone()
}

async fn better_auth_app(jwks: &JwksServer, extra: &[(&str, &str)]) -> TestApp {
    log_lines();
    let url = jwks.url();
    let mut vars = vec![
        ("JWKS_URL", url.as_str()),
        ("JWT_ISSUER", BETTER_AUTH_URL),
        ("JWT_AUDIENCE", BETTER_AUTH_URL),
    ];
    vars.extend_from_slice(extra);
    spawn_app_with(&vars).await
}

async fn list(app: &TestApp, token: &str) -> TestResponse {
    app.send(Method::GET, "/api/tasks", Some(token), None).await
}

/// `FLOOD` concurrent `method /api/tasks/{id}` (a test's own route, so that it can tell its
/// request lines from those of the other tests here), every `REAL_EVERY`th with `real`, the
/// rest each with its own made-up kid. Returns (is real, response) pairs and the time it took.
async fn flood(
    app: &TestApp,
    method: Method,
    wave: &str,
    real: &str,
) -> (Vec<(bool, TestResponse)>, Duration) {
    let started = Instant::now();
    let sub = common::new_user_id();
    let requests = (0..FLOOD).map(|i| {
        let is_real = i % REAL_EVERY == 0;
        let token = if is_real {
            real.to_owned()
        } else {
            unknown_kid_token(&format!("made-up-{wave}-{i}"), &sub)
        };
        let path = format!("/api/tasks/{}", uuid::Uuid::now_v7());
        let method = method.clone();
        async move {
            let response = app.send(method, &path, Some(&token), None).await;
            (is_real, response)
        }
    });
    let responses = futures_util::future::join_all(requests).await;
    (responses, started.elapsed())
}

#[tokio::test]
async fn a_rotated_key_is_accepted_on_its_first_request_once_the_last_fetch_is_5_s_old() {
    let jwks = JwksServer::start(Some(fixture("eddsa.jwks.json")))
        .await
        .expect("JWKS stub");
    let app = better_auth_app(&jwks, &[]).await;
    let (old, new) = (fixture("eddsa.jwt"), fixture("es256.jwt"));
    assert_eq!(list(&app, &old).await.status, StatusCode::OK);
    assert_eq!(jwks.hits(), 1);
    let fetched = jwks.last_fetch_at().expect("fetched");
    // Better Auth rotates: the new key signs at once, next to the old one.
    jwks.set_document(Some(key_sets(&["eddsa", "es256"])));
    let refused = list(&app, &new).await;
    // The instance's window opened before the stub saw the fetch; with a margin for a busy
    // machine, this request is inside it.
    if fetched.elapsed() < REFETCH_INTERVAL - Duration::from_secs(1) {
        refused.assert_error(401, "UNAUTHORIZED");
        assert_eq!(jwks.hits(), 1, "no refetch within 5 s of a fetch");
    }
    // What is tested here is the 5 s itself, so this waits for real time to reach it.
    tokio::time::sleep_until((fetched + REFETCH_INTERVAL).into()).await;
    let accepted = list(&app, &new).await;
    assert_eq!(accepted.status, StatusCode::OK, "{:?}", accepted.body);
    assert_eq!(jwks.hits(), 2, "the first request after the window fetched");
    assert_eq!(list(&app, &old).await.status, StatusCode::OK);
    assert_eq!(jwks.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_kids_costs_one_fetch_per_5_s_never_two_in_flight() {
    let jwks = JwksServer::start(Some(key_sets(&["eddsa", "es256"])))
        .await
        .expect("JWKS stub");
    // A slow JWKS host (another region): the flood arrives while the one fetch is in flight.
    jwks.set_delay(Duration::from_millis(300));
    let app = better_auth_app(&jwks, &[]).await;
    let real = fixture("es256.jwt");
    let (responses, first_took) = flood(&app, Method::GET, "cold", &real).await;
    for (is_real, response) in &responses {
        if *is_real {
            // It waited for the fetch in flight and found its key: authenticated, no such task.
            response.assert_error(404, "TASK_NOT_FOUND");
        } else {
            response.assert_error(401, "UNAUTHORIZED");
        }
    }
    assert_eq!((jwks.hits(), jwks.max_in_flight()), (1, 1));
    assert!(jwks.hits() <= allowed_fetches(first_took));
    let (responses, second_took) = flood(&app, Method::GET, "warm", &real).await;
    assert!(
        responses
            .iter()
            .all(|(is_real, r)| r.status.as_u16() == if *is_real { 404 } else { 401 })
    );
    assert!(
        jwks.hits() <= allowed_fetches(first_took + second_took),
        "{} fetches in {:?}",
        jwks.hits(),
        first_took + second_took
    );
    assert_eq!(jwks.max_in_flight(), 1);
    // The request lines show the fetches: each on the line of the request that made it.
    let lines = log_lines().lock().expect("lines").clone();
    let flood_lines: Vec<&Value> = lines
        .iter()
        .filter(|line| line["route"] == "GET /api/tasks/{task_id}")
        .collect();
    assert_eq!(flood_lines.len(), 2 * FLOOD);
    let logged: u64 = flood_lines
        .iter()
        .map(|line| line["jwks_fetches"].as_u64().expect("jwks_fetches"))
        .sum();
    assert_eq!(logged, jwks.hits() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_outage_is_503_for_unknown_kids_with_one_attempt_per_5_s() {
    let jwks = JwksServer::start(None).await.expect("JWKS stub");
    jwks.set_delay(Duration::from_millis(200));
    let app = better_auth_app(&jwks, &[]).await;
    let real = fixture("eddsa.jwt");
    let mut took = Duration::ZERO;
    for wave in ["first", "second"] {
        let (responses, elapsed) = flood(&app, Method::DELETE, wave, &real).await;
        took += elapsed;
        for (_, response) in &responses {
            // No key matches and none could be fetched: the token may be fine.
            response.assert_error(503, "SERVICE_UNAVAILABLE");
        }
    }
    assert!(jwks.hits() >= 1);
    assert!(
        jwks.hits() <= allowed_fetches(took),
        "{} attempts in {took:?}",
        jwks.hits()
    );
    assert_eq!(jwks.max_in_flight(), 1);
    // The host is back: the first request after the window fetches and is answered (waiting
    // for real time to reach the window's end is what is tested).
    jwks.set_document(Some(fixture("eddsa.jwks.json")));
    jwks.set_delay(Duration::ZERO);
    let attempts = jwks.hits();
    let last = jwks.last_fetch_at().expect("attempted");
    tokio::time::sleep_until((last + REFETCH_INTERVAL).into()).await;
    assert_eq!(list(&app, &real).await.status, StatusCode::OK);
    assert_eq!(jwks.hits(), attempts + 1);
}

/// `Verifier::prefetch` (for a cold start's init): one fetch, none more on the first request;
/// none at all with a configured key set; a failed one leaves the first request its own fetch.
#[tokio::test]
async fn prefetch_loads_the_key_set_once_and_never_with_a_configured_one() {
    let jwks = JwksServer::start(Some(fixture("eddsa.jwks.json")))
        .await
        .expect("JWKS stub");
    let settings = AuthSettings {
        jwks_url: Some(jwks.url()),
        issuer: Some(BETTER_AUTH_URL.to_owned()),
        audience: Some(BETTER_AUTH_URL.to_owned()),
        ..AuthSettings::default()
    };
    let token = fixture("eddsa.jwt");
    let verifier = Verifier::new(&settings).expect("verifier");
    verifier.prefetch().await;
    assert_eq!(jwks.hits(), 1);
    assert!(verifier.verify(&token).await.is_ok());
    verifier.prefetch().await;
    assert_eq!(
        jwks.hits(),
        1,
        "no fetch on the first request nor a second prefetch"
    );

    let configured = Verifier::new(&AuthSettings {
        jwks_document: Some(fixture("eddsa.jwks.json")),
        ..settings.clone()
    })
    .expect("verifier");
    configured.prefetch().await;
    assert!(configured.verify(&token).await.is_ok());
    assert_eq!(jwks.hits(), 1, "JWKS_JSON: nothing to prefetch");

    // The JWKS is down during init and back by the first request: that request is answered.
    jwks.set_document(None);
    let cold = Verifier::new(&settings).expect("verifier");
    cold.prefetch().await;
    assert_eq!(jwks.hits(), 2, "the prefetch tried");
    jwks.set_document(Some(fixture("eddsa.jwks.json")));
    assert!(cold.verify(&token).await.is_ok());
    assert_eq!(jwks.hits(), 3);
}

/// The same rule in the shipped binary: a Lambda instance refuses a rotated key only until 5 s
/// after its last fetch, then accepts its first token at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_instance_accepts_a_rotated_key_once_its_last_fetch_is_5_s_old() {
    common::prepare_database().await;
    let jwks = JwksServer::start(Some(fixture("eddsa.jwks.json")))
        .await
        .expect("JWKS stub");
    let vars = [
        ("DATABASE_URL", test_database_url()),
        ("JWKS_URL", jwks.url()),
        ("JWT_ISSUER", BETTER_AUTH_URL.to_owned()),
        ("JWT_AUDIENCE", BETTER_AUTH_URL.to_owned()),
    ];
    let function = Function::start("list-tasks", &vars).await;
    let status = |document: &Value| document["statusCode"].as_u64();
    let old = authorize(event("list-tasks"), &fixture("eddsa.jwt"));
    let new = authorize(event("list-tasks"), &fixture("es256.jwt"));
    assert_eq!(status(&function.respond(&old).await), Some(200));
    assert_eq!(jwks.hits(), 1);
    let fetched = jwks.last_fetch_at().expect("fetched");
    jwks.set_document(Some(key_sets(&["eddsa", "es256"])));
    let refused = function.respond(&new).await;
    let sub = common::new_user_id();
    let made_up: Vec<Value> = (0..20)
        .map(|i| {
            authorize(
                event("list-tasks"),
                &unknown_kid_token(&format!("lambda-{i}"), &sub),
            )
        })
        .collect();
    let mut made_up_statuses = Vec::new();
    for e in &made_up {
        made_up_statuses.push(status(&function.respond(e).await));
    }
    if fetched.elapsed() < REFETCH_INTERVAL - Duration::from_secs(1) {
        assert_eq!(status(&refused), Some(401), "{refused}");
        assert_eq!(body_json(&refused)["error"]["code"], "UNAUTHORIZED");
        assert!(made_up_statuses.iter().all(|s| *s == Some(401)));
        assert_eq!(jwks.hits(), 1, "no refetch within 5 s of a fetch");
    }
    // What is tested here is the 5 s itself, so this waits for real time to reach it.
    tokio::time::sleep_until((fetched + REFETCH_INTERVAL).into()).await;
    let hits_before = jwks.hits();
    let accepted = function.respond(&new).await;
    assert_eq!(status(&accepted), Some(200), "{accepted}");
    assert_eq!(jwks.hits(), hits_before + 1);
    assert_eq!(status(&function.respond(&old).await), Some(200));
    assert_eq!(jwks.hits(), hits_before + 1);
}
