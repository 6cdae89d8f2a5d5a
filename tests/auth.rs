#![forbid(unsafe_code)]
//! Authentication through the running API: both token families, every refusal, real Better
//! Auth tokens and key sets (tests/fixtures/better-auth), JWKS caching and outages.

mod common;

use common::jwks::{JwksServer, fixture};
use common::tokens::{b64, now, sign};
use common::{BETTER_AUTH_URL, better_auth_app, list_with, spawn_app, spawn_app_with};
use http::{Method, StatusCode, header};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tasks_api::dev::TokenOptions;

#[tokio::test]
async fn hs256_tokens_are_accepted_and_the_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = list_with(&app, Some(&format!("{scheme} {token}"))).await;
        assert_eq!(response.status, StatusCode::OK, "{scheme}");
    }
}

#[tokio::test]
async fn hs256_refusals_are_401_with_a_bearer_challenge() {
    let app = spawn_app().await;
    let secret = app.secret.clone();
    let sub = common::new_user_id();
    let t = now();
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg":"none","typ":"JWT"})),
        b64(&json!({"sub": sub, "exp": t + 600}))
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("empty bearer", Some("Bearer ".into())),
        ("basic scheme", Some("Basic dXNlcjpwYXNz".into())),
        ("garbage", Some("Bearer not.a.jwt".into())),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        (
            "expired beyond leeway",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    &secret,
                    &json!({"sub": sub, "exp": t - 120})
                )
            )),
        ),
        (
            "not yet valid",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    &secret,
                    &json!({"sub": sub, "exp": t + 600, "nbf": t + 300})
                )
            )),
        ),
        (
            "no exp",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS256, &secret, &json!({"sub": sub}))
            )),
        ),
        (
            "no sub",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS256, &secret, &json!({"exp": t + 600}))
            )),
        ),
        (
            "empty sub",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    &secret,
                    &json!({"sub": "", "exp": t + 600})
                )
            )),
        ),
        (
            "blank sub",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    &secret,
                    &json!({"sub": "  ", "exp": t + 600})
                )
            )),
        ),
        (
            "numeric sub",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    &secret,
                    &json!({"sub": 42, "exp": t + 600})
                )
            )),
        ),
        (
            "wrong secret",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    "another-secret-another-secret!!",
                    &json!({"sub": sub, "exp": t + 600})
                )
            )),
        ),
        (
            "HS384",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS384,
                    &secret,
                    &json!({"sub": sub, "exp": t + 600})
                )
            )),
        ),
        (
            "HS512",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS512,
                    &secret,
                    &json!({"sub": sub, "exp": t + 600})
                )
            )),
        ),
        (
            "too large",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    &secret,
                    &json!({"sub": sub, "exp": t + 600, "pad": "x".repeat(9000)})
                )
            )),
        ),
        // An EdDSA token with no JWKS configured.
        (
            "asymmetric without JWKS",
            Some(format!("Bearer {}", fixture("eddsa.jwt"))),
        ),
    ];
    for (name, authorization) in cases {
        let response = list_with(&app, authorization.as_deref()).await;
        response.assert_error(401, "UNAUTHORIZED");
        let challenge = response.header(header::WWW_AUTHENTICATE).unwrap();
        if name == "no header" {
            assert_eq!(challenge, "Bearer", "{name}");
        } else {
            assert!(
                challenge.contains(r#"error="invalid_token""#),
                "{name}: {challenge}"
            );
        }
    }
    // Within the 60 s leeway, an expired token and a not-yet-valid one still pass.
    let lenient = sign(
        Algorithm::HS256,
        &secret,
        &json!({"sub": sub, "exp": t - 30, "nbf": t + 30}),
    );
    let response = list_with(&app, Some(&format!("Bearer {lenient}"))).await;
    assert_eq!(response.status, StatusCode::OK);
    // iat is not checked.
    let future_iat = sign(
        Algorithm::HS256,
        &secret,
        &json!({"sub": sub, "exp": t + 600, "iat": t + 86_400}),
    );
    assert_eq!(
        list_with(&app, Some(&format!("Bearer {future_iat}")))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn issuer_and_audience_apply_to_hs256_when_configured() {
    let app = spawn_app_with(&[
        ("JWT_ISSUER", "https://issuer.test"),
        ("JWT_AUDIENCE", "todo-api"),
    ])
    .await;
    let user = common::new_user_id();
    let token = |iss: Option<&'static str>, aud: Option<&'static str>| {
        app.token_with(
            &user,
            &TokenOptions {
                issuer: iss,
                audience: aud,
                ttl_seconds: 600,
                ..Default::default()
            },
        )
    };
    let good = token(Some("https://issuer.test"), Some("todo-api"));
    assert_eq!(
        list_with(&app, Some(&format!("Bearer {good}")))
            .await
            .status,
        StatusCode::OK
    );
    for bad in [
        token(None, Some("todo-api")),
        token(Some("https://other.test"), Some("todo-api")),
        token(Some("https://issuer.test"), None),
        token(Some("https://issuer.test"), Some("other-api")),
    ] {
        list_with(&app, Some(&format!("Bearer {bad}")))
            .await
            .assert_error(401, "UNAUTHORIZED");
    }
}

/// The user id Better Auth put in a fixture token.
fn fixture_user(name: &str) -> String {
    let manifest: Value = serde_json::from_str(&fixture("manifest.json")).unwrap();
    manifest
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["name"] == name)
        .map(|entry| entry["user_id"].as_str().unwrap().to_owned())
        .unwrap()
}

#[tokio::test]
async fn real_better_auth_tokens_are_accepted_for_each_algorithm() {
    for name in ["eddsa", "es256", "rs256", "ps256"] {
        let jwks = JwksServer::start(Some(fixture(&format!("{name}.jwks.json"))))
            .await
            .expect("JWKS stub");
        let app = better_auth_app(&jwks, BETTER_AUTH_URL, BETTER_AUTH_URL).await;
        let token = fixture(&format!("{name}.jwt"));
        let created = app
            .send(
                Method::POST,
                "/api/tasks",
                Some(&token),
                Some(&json!({"title": name})),
            )
            .await;
        assert_eq!(
            created.status,
            StatusCode::CREATED,
            "{name}: {:?}",
            created.body
        );
        assert_eq!(
            created.json()["data"]["user_id"],
            fixture_user(name),
            "{name}"
        );
        // Keys are cached: further requests do not refetch.
        let listed = app
            .send(Method::GET, "/api/tasks", Some(&token), None)
            .await;
        assert_eq!(listed.status, StatusCode::OK);
        assert_eq!(jwks.hits(), 1, "{name}: one JWKS fetch for the instance");
    }
}

#[tokio::test]
async fn better_auth_custom_issuer_and_audience_list() {
    let jwks = JwksServer::start(Some(fixture("eddsa-custom-aud.jwks.json")))
        .await
        .expect("JWKS stub");
    let app = better_auth_app(&jwks, "https://auth.example.com", "todo-api").await;
    let token = fixture("eddsa-custom-aud.jwt");
    assert_eq!(
        app.send(Method::GET, "/api/tasks", Some(&token), None)
            .await
            .status,
        StatusCode::OK
    );

    let wrong = better_auth_app(&jwks, BETTER_AUTH_URL, BETTER_AUTH_URL).await;
    wrong
        .send(Method::GET, "/api/tasks", Some(&token), None)
        .await
        .assert_error(401, "UNAUTHORIZED");
}

#[tokio::test]
async fn better_auth_refusals() {
    // Expired (1 s lifetime, long past), ES512 (unsupported: P-521), and unknown kid.
    let cases = [
        ("eddsa-expired.jwks.json", "eddsa-expired.jwt"),
        ("es512.jwks.json", "es512.jwt"),
        ("eddsa.jwks.json", "rs256.jwt"),
    ];
    for (keys, token) in cases {
        let jwks = JwksServer::start(Some(fixture(keys)))
            .await
            .expect("JWKS stub");
        let app = better_auth_app(&jwks, BETTER_AUTH_URL, BETTER_AUTH_URL).await;
        let response = app
            .send(Method::GET, "/api/tasks", Some(&fixture(token)), None)
            .await;
        response.assert_error(401, "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn key_confusion_and_missing_kid_are_refused() {
    let jwks = JwksServer::start(Some(fixture("rs256.jwks.json")))
        .await
        .expect("JWKS stub");
    let app = better_auth_app(&jwks, BETTER_AUTH_URL, BETTER_AUTH_URL).await;
    let keys: Value = serde_json::from_str(&fixture("rs256.jwks.json")).unwrap();
    let kid = keys["keys"][0]["kid"].as_str().unwrap().to_owned();
    let n = keys["keys"][0]["n"].as_str().unwrap().to_owned();
    let claims = json!({"sub": "mallory", "exp": now() + 600, "iss": BETTER_AUTH_URL, "aud": BETTER_AUTH_URL});
    // HS256 "signed" with the public key material, naming the RSA key's kid.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.clone());
    let confused = encode(&header, &claims, &EncodingKey::from_secret(n.as_bytes())).unwrap();
    app.send(Method::GET, "/api/tasks", Some(&confused), None)
        .await
        .assert_error(401, "UNAUTHORIZED");
    // A real RS256 token relabelled PS256: the key pins RS256.
    let real = fixture("rs256.jwt");
    let mut parts = real.split('.');
    let (_, payload, signature) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let relabelled = format!(
        "{}.{payload}.{signature}",
        b64(&json!({"alg": "PS256", "kid": kid}))
    );
    app.send(Method::GET, "/api/tasks", Some(&relabelled), None)
        .await
        .assert_error(401, "UNAUTHORIZED");
    // The same token without its kid.
    let no_kid = format!("{}.{payload}.{signature}", b64(&json!({"alg": "RS256"})));
    app.send(Method::GET, "/api/tasks", Some(&no_kid), None)
        .await
        .assert_error(401, "UNAUTHORIZED");
    // And the untouched token passes, so the refusals above are about what was changed.
    assert_eq!(
        app.send(Method::GET, "/api/tasks", Some(&real), None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_kid_does_not_refetch_within_5_s_of_a_fetch() {
    let jwks = JwksServer::start(Some(fixture("eddsa.jwks.json")))
        .await
        .expect("JWKS stub");
    let app = better_auth_app(&jwks, BETTER_AUTH_URL, BETTER_AUTH_URL).await;
    let good = fixture("eddsa.jwt");
    assert_eq!(
        app.send(Method::GET, "/api/tasks", Some(&good), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(jwks.hits(), 1);
    let stranger = fixture("es256.jwt");
    for _ in 0..5 {
        app.send(Method::GET, "/api/tasks", Some(&stranger), None)
            .await
            .assert_error(401, "UNAUTHORIZED");
    }
    // The key set was fetched moments ago: an unknown kid is refused instead of hammering
    // Better Auth (tests/jwks_rotation.rs has the other side: a fetch once 5 s have passed).
    assert_eq!(
        jwks.hits(),
        1,
        "a just-fetched key set is not refetched within 5 s"
    );
    assert_eq!(
        app.send(Method::GET, "/api/tasks", Some(&good), None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn jwks_outage_is_503_not_401_and_recovers() {
    let jwks = JwksServer::start(None).await.expect("JWKS stub");
    let app = better_auth_app(&jwks, BETTER_AUTH_URL, BETTER_AUTH_URL).await;
    let token = fixture("eddsa.jwt");
    let started = std::time::Instant::now();
    let response = app
        .send(Method::GET, "/api/tasks", Some(&token), None)
        .await;
    response.assert_error(503, "SERVICE_UNAVAILABLE");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // HS256 tokens keep working while the JWKS is down (both families configured).
    let both = spawn_app_with(&[("JWKS_URL", &jwks.url())]).await;
    let (_, hs) = both.new_user();
    assert_eq!(
        both.send(Method::GET, "/api/tasks", Some(&hs), None)
            .await
            .status,
        StatusCode::OK
    );

    jwks.set_document(Some(fixture("eddsa.jwks.json")));
    // A failed fetch is retried once 5 s have passed (the refetch rule in auth::jwks).
    let mut answered = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        let response = app
            .send(Method::GET, "/api/tasks", Some(&token), None)
            .await;
        if response.status != StatusCode::SERVICE_UNAVAILABLE {
            answered = Some(response.status);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(
        answered,
        Some(StatusCode::OK),
        "recovers once the JWKS is back"
    );
}

// Verified tokens are remembered until exp + leeway (shared/src/auth/cache.rs): a repeated
// token gets the same answer as the first time, and refusals are never remembered.
#[tokio::test]
async fn repeated_tokens_get_the_same_answer() {
    let app = spawn_app().await;
    let secret = app.secret.clone();
    let sub = common::new_user_id();
    let t = now();
    let ok = |token: &str| {
        let authorization = format!("Bearer {token}");
        let app = &app;
        async move { list_with(app, Some(&authorization)).await }
    };
    let fresh = sign(
        Algorithm::HS256,
        &secret,
        &json!({"sub": sub, "exp": t + 600}),
    );
    // Expired 30 s ago, within the 60 s leeway: accepted, the first time and from the cache.
    let lenient = sign(
        Algorithm::HS256,
        &secret,
        &json!({"sub": sub, "exp": t - 30}),
    );
    for token in [&fresh, &lenient] {
        for attempt in 0..2 {
            assert_eq!(ok(token).await.status, StatusCode::OK, "attempt {attempt}");
        }
    }
    // Beyond the leeway, or the accepted token with its signature altered: refused each time.
    let expired = sign(
        Algorithm::HS256,
        &secret,
        &json!({"sub": sub, "exp": t - 120}),
    );
    let (message, signature) = fresh.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let altered = format!("{message}.{flipped}{}", &signature[1..]);
    for token in [&expired, &altered] {
        for _ in 0..2 {
            ok(token).await.assert_error(401, "UNAUTHORIZED");
        }
    }
    assert_eq!(ok(&fresh).await.status, StatusCode::OK);

    // A real Better Auth token: the same identity on every request, one JWKS fetch.
    let jwks = JwksServer::start(Some(fixture("eddsa.jwks.json")))
        .await
        .expect("JWKS stub");
    let better_auth = better_auth_app(&jwks, BETTER_AUTH_URL, BETTER_AUTH_URL).await;
    let token = fixture("eddsa.jwt");
    let user = fixture_user("eddsa");
    for title in ["first", "second", "third"] {
        let created = better_auth
            .send(
                Method::POST,
                "/api/tasks",
                Some(&token),
                Some(&json!({ "title": title })),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{title}");
        assert_eq!(created.json()["data"]["user_id"], user, "{title}");
    }
    assert_eq!(jwks.hits(), 1);
}
