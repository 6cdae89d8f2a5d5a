#![forbid(unsafe_code)]
//! CORS on the local server (API Gateway does it in production, from `template.yaml`'s lists,
//! which `tests/deployment.rs` keeps equal to the server's): preflights for the contract's
//! request headers, and the response headers a browser may read.

mod common;

use std::collections::BTreeSet;

use common::{TestApp, TestResponse, spawn_app_with};
use http::{HeaderName, Method, Request, StatusCode, header};
use http_body_util::Full;
use hyper::body::Bytes;
use tasks_api::server::{CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS};

const ORIGIN: &str = "http://localhost:3000";

async fn app() -> TestApp {
    spawn_app_with(&[("CORS_ALLOWED_ORIGINS", ORIGIN)]).await
}

/// A comma-separated header value as lowercase names.
fn names(response: &TestResponse, name: HeaderName) -> BTreeSet<String> {
    let value = response
        .header(&name)
        .unwrap_or_else(|| panic!("{name} is set"));
    value
        .split(',')
        .map(|item| item.trim().to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect()
}

fn lowercase(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|item| item.to_ascii_lowercase()).collect()
}

async fn preflight(app: &TestApp, origin: &str, method: &str, headers: &str) -> TestResponse {
    let request = Request::builder()
        .method(Method::OPTIONS)
        .uri("/api/tasks/0193f0c2-5d8e-7c1a-9b2e-3f4a5b6c7d8e")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, method)
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, headers)
        .body(Full::new(Bytes::new()))
        .unwrap();
    app.request(request).await
}

#[tokio::test]
async fn preflight_allows_the_retry_and_precondition_headers() {
    let app = app().await;
    for method in ["PUT", "DELETE", "PATCH"] {
        let response = preflight(
            &app,
            ORIGIN,
            method,
            "authorization, content-type, idempotency-key, if-match",
        )
        .await;
        assert_eq!(response.status, StatusCode::NO_CONTENT, "{method}");
        assert_eq!(
            response.header(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some(ORIGIN)
        );
        let allowed = names(&response, header::ACCESS_CONTROL_ALLOW_HEADERS);
        for name in [
            "authorization",
            "content-type",
            "idempotency-key",
            "if-match",
            "if-none-match",
        ] {
            assert!(allowed.contains(name), "{name} allowed: {allowed:?}");
        }
        assert_eq!(allowed, lowercase(CORS_ALLOW_HEADERS));
        let methods = names(&response, header::ACCESS_CONTROL_ALLOW_METHODS);
        assert!(
            methods.contains(&method.to_ascii_lowercase()),
            "{methods:?}"
        );
        assert_eq!(response.header(header::ACCESS_CONTROL_MAX_AGE), Some("600"));
    }
}

#[tokio::test]
async fn responses_expose_etag_and_idempotent_replayed() {
    let app = app().await;
    let request = Request::builder()
        .uri("/health")
        .header(header::ORIGIN, ORIGIN)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = app.request(request).await;
    assert_eq!(
        response.header(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        Some(ORIGIN)
    );
    let exposed = names(&response, header::ACCESS_CONTROL_EXPOSE_HEADERS);
    for name in [
        "etag",
        "idempotent-replayed",
        "location",
        "retry-after",
        "www-authenticate",
    ] {
        assert!(exposed.contains(name), "{name} exposed: {exposed:?}");
    }
    assert_eq!(exposed, lowercase(CORS_EXPOSE_HEADERS));
    assert!(
        response
            .headers
            .get_all(header::VARY)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.eq_ignore_ascii_case("origin"))),
        "Vary: Origin"
    );

    // The preflight carries the same exposed list.
    let response = preflight(&app, ORIGIN, "GET", "if-none-match").await;
    assert_eq!(
        names(&response, header::ACCESS_CONTROL_EXPOSE_HEADERS),
        exposed
    );
}

#[tokio::test]
async fn other_origins_get_no_cors_headers() {
    let app = app().await;
    let response = preflight(&app, "http://evil.test", "PUT", "if-match").await;
    assert_ne!(response.status, StatusCode::NO_CONTENT);
    for name in [
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
    ] {
        assert_eq!(response.header(&name), None, "{name}");
    }
}
