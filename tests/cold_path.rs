#![forbid(unsafe_code)]
//! A cold instance's first request needs two slow things: the JWKS (HTTPS to the frontend's
//! host) and a database connection (TLS and SCRAM to Neon). They run concurrently, so the first
//! response costs about the longer of the two, not their sum (issue 11).

mod common;

use std::time::{Duration, Instant};

use common::jwks::{JwksServer, fixture, unknown_kid_token};
use common::proxy::PgProxy;
use common::{spawn_app_with, test_database_url};
use http::{Method, StatusCode};
use tasks_shared::auth::REFETCH_INTERVAL;

const BETTER_AUTH_URL: &str = "https://app.example.com";
const EACH: Duration = Duration::from_millis(600);

#[tokio::test]
async fn the_jwks_fetch_and_the_first_connection_overlap() {
    common::prepare_database().await;
    let jwks = JwksServer::start(Some(fixture("eddsa.jwks.json")))
        .await
        .expect("JWKS stub");
    jwks.set_delay(EACH);
    let proxy = PgProxy::start(common::pooled_upstream()).await;
    proxy.delay_connects(EACH);
    let url = proxy.url_for(&test_database_url());
    let jwks_url = jwks.url();
    let app = spawn_app_with(&[
        ("DATABASE_URL", &url),
        ("JWKS_URL", &jwks_url),
        ("JWT_ISSUER", BETTER_AUTH_URL),
        ("JWT_AUDIENCE", BETTER_AUTH_URL),
        ("DATABASE_POOL_SIZE", "1"),
    ])
    .await;
    let token = fixture("eddsa.jwt");
    let started = Instant::now();
    let response = app
        .send(Method::GET, "/api/tasks", Some(&token), None)
        .await;
    let elapsed = started.elapsed();
    eprintln!("cold first response, JWKS and connect {EACH:?} each: {elapsed:?}");
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!((jwks.hits(), proxy.take_counts().connections), (1, 1));
    assert!(elapsed >= EACH);
    assert!(
        elapsed < EACH * 2 - Duration::from_millis(200),
        "sequential, not concurrent: {elapsed:?}"
    );

    // A refused token does not wait for a cold instance's connection.
    let cold = spawn_app_with(&[
        ("DATABASE_URL", &url),
        ("JWKS_URL", &jwks_url),
        ("DATABASE_POOL_SIZE", "1"),
    ])
    .await;
    let started = Instant::now();
    cold.send(Method::GET, "/api/tasks", Some("garbage"), None)
        .await
        .assert_error(401, "UNAUTHORIZED");
    assert!(started.elapsed() < EACH, "{:?}", started.elapsed());
}

/// `JWKS_JSON` (the key set as configuration): a cold start verifies without fetching, and a
/// `kid` the document lacks (keys rotated since it was configured) still reaches the URL, under
/// the same rule as without it: at once (nothing was fetched in the last 5 s), then no more
/// fetches within 5 s of that one.
#[tokio::test]
async fn a_configured_key_set_needs_no_fetch_and_rotation_still_works() {
    common::prepare_database().await;
    // The URL already serves the rotated set.
    let jwks = JwksServer::start(Some(fixture("es256.jwks.json")))
        .await
        .expect("JWKS stub");
    let jwks_url = jwks.url();
    let configured = fixture("eddsa.jwks.json");
    let app = spawn_app_with(&[
        ("JWKS_URL", &jwks_url),
        ("JWKS_JSON", &configured),
        ("JWT_ISSUER", BETTER_AUTH_URL),
        ("JWT_AUDIENCE", BETTER_AUTH_URL),
    ])
    .await;
    let response = app
        .send(Method::GET, "/api/tasks", Some(&fixture("eddsa.jwt")), None)
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(jwks.hits(), 0, "the configured key verified the token");
    let rotated = app
        .send(Method::GET, "/api/tasks", Some(&fixture("es256.jwt")), None)
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    assert_eq!(jwks.hits(), 1, "an unknown kid fetched the URL once");
    let fetched = jwks.last_fetch_at().expect("fetched");
    let sub = common::new_user_id();
    for i in 0..10 {
        let made_up = unknown_kid_token(&format!("made-up-{i}"), &sub);
        app.send(Method::GET, "/api/tasks", Some(&made_up), None)
            .await
            .assert_error(401, "UNAUTHORIZED");
    }
    if fetched.elapsed() < REFETCH_INTERVAL - Duration::from_secs(1) {
        assert_eq!(jwks.hits(), 1, "no refetch within 5 s of the fetch");
    }
}

/// A JWKS outage does not touch tokens the configured key set covers; a `kid` it lacks is 503
/// (the token may be valid), as without `JWKS_JSON`.
#[tokio::test]
async fn a_configured_key_set_serves_through_a_jwks_outage() {
    common::prepare_database().await;
    let jwks = JwksServer::start(None).await.expect("JWKS stub");
    let jwks_url = jwks.url();
    let configured = fixture("eddsa.jwks.json");
    let app = spawn_app_with(&[
        ("JWKS_URL", &jwks_url),
        ("JWKS_JSON", &configured),
        ("JWT_ISSUER", BETTER_AUTH_URL),
        ("JWT_AUDIENCE", BETTER_AUTH_URL),
    ])
    .await;
    let known = app
        .send(Method::GET, "/api/tasks", Some(&fixture("eddsa.jwt")), None)
        .await;
    assert_eq!(known.status, StatusCode::OK);
    assert_eq!(jwks.hits(), 0);
    app.send(Method::GET, "/api/tasks", Some(&fixture("es256.jwt")), None)
        .await
        .assert_error(503, "SERVICE_UNAVAILABLE");
    assert_eq!(jwks.hits(), 1, "the unknown kid tried the URL once");
}
