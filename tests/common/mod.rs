//! Test harness: the real local server on a random port against the real PostgreSQL, plus a
//! JWKS endpoint and a controllable TCP proxy in front of PostgreSQL for outage tests.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod events;
pub mod functions;
pub mod jwks;
pub mod property;
pub mod proxy;
pub mod tls_cluster;
pub mod tokens;
pub mod tools;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tasks_api::dev::{TokenOptions, mint_hs256};
use tasks_shared::State;
use tasks_shared::config::{Config, Runtime};
use tokio::task::JoinHandle;

/// The database the tests use: `TEST_DATABASE_URL` (e.g. through PgBouncer), default local.
pub fn test_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/tasks_test".to_owned())
}

/// A direct (non-pooled) URL for migrations and test inspection queries.
pub fn direct_database_url() -> String {
    std::env::var("TEST_DIRECT_DATABASE_URL").unwrap_or_else(|_| test_database_url())
}

/// Creates and migrates the test database (idempotent, safe across concurrent test processes).
pub async fn prepare_database() {
    tasks_shared::migrate::prepare(&direct_database_url(), None)
        .await
        .expect("create and migrate the test database");
}

/// A direct connection for assertions on what is stored.
pub async fn inspect() -> tokio_postgres::Client {
    tasks_shared::migrate::connect(&direct_database_url(), None)
        .await
        .expect("connect for inspection")
}

pub struct TestApp {
    pub address: SocketAddr,
    pub secret: String,
    pub state: Arc<State>,
    client: Client<HttpConnector, Full<Bytes>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The task id a task answer (`{"data": task}`) carries.
    pub fn task_id(&self) -> uuid::Uuid {
        let body = self.json();
        body["data"]["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no task id in {body}"))
    }

    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the contract's error shape and returns the body.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header(header::CONTENT_TYPE), Some("application/json"));
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        if status == 401 {
            let challenge = self
                .header(header::WWW_AUTHENTICATE)
                .expect("WWW-Authenticate");
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }
        if status == 503 {
            assert!(
                self.header(header::RETRY_AFTER).is_some(),
                "Retry-After missing"
            );
        }
        body
    }
}

/// A fresh user id: tests isolate themselves by user, like real tenants.
pub fn new_user_id() -> String {
    format!("user-{}", uuid::Uuid::now_v7().simple())
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the local server with the test database and an HS256 secret; `overrides` are extra
/// environment variables (e.g. `JWKS_URL`, `DATABASE_URL`).
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    prepare_database().await;
    // Request log lines would bypass the test harness' output capture; a test that reads them
    // installs its own sink first.
    tasks_shared::telemetry::capture(|_| {});
    let secret = format!("test-secret-{}", uuid::Uuid::now_v7().simple());
    let mut vars: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".to_owned(), test_database_url()),
        ("JWT_SECRET".to_owned(), secret.clone()),
        ("DATABASE_POOL_SIZE".to_owned(), "8".to_owned()),
    ]);
    for (key, value) in overrides {
        vars.insert((*key).to_owned(), (*value).to_owned());
    }
    let config = Config::from_lookup(&|name| vars.get(name).cloned(), Runtime::Local)
        .expect("test configuration");
    let state = Arc::new(State::new(config).expect("state"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(tasks_api::server::serve(listener, state.clone()));
    TestApp {
        address,
        secret,
        state,
        client: Client::builder(TokioExecutor::new()).build_http(),
        server,
    }
}

/// The issuer and audience of the Better Auth fixture tokens (`tests/fixtures/better-auth`).
pub const BETTER_AUTH_URL: &str = "https://app.example.com";

/// The server as Better Auth's resource server: keys from `jwks`, this issuer and audience.
pub async fn better_auth_app(jwks: &jwks::JwksServer, issuer: &str, audience: &str) -> TestApp {
    better_auth_app_at(&jwks.url(), issuer, audience).await
}

/// [`better_auth_app`] with its key set at `jwks_url` (which may be down, or nothing at all).
pub async fn better_auth_app_at(jwks_url: &str, issuer: &str, audience: &str) -> TestApp {
    spawn_app_with(&[
        ("JWKS_URL", jwks_url),
        ("JWT_ISSUER", issuer),
        ("JWT_AUDIENCE", audience),
    ])
    .await
}

impl TestApp {
    /// An HS256 token for `user_id`, valid for an hour.
    pub fn token(&self, user_id: &str) -> String {
        self.token_with(
            user_id,
            &TokenOptions {
                ttl_seconds: 3600,
                ..TokenOptions::default()
            },
        )
    }

    pub fn token_with(&self, user_id: &str, options: &TokenOptions) -> String {
        mint_hs256(&self.secret, user_id, options)
    }

    /// A new user and a token for it.
    pub fn new_user(&self) -> (String, String) {
        let id = new_user_id();
        let token = self.token(&id);
        (id, token)
    }

    pub async fn request(&self, request: Request<Full<Bytes>>) -> TestResponse {
        let (mut parts, body) = request.into_parts();
        parts.uri = format!("http://{}{}", self.address, parts.uri)
            .parse()
            .expect("uri");
        let response = self
            .client
            .request(Request::from_parts(parts, body))
            .await
            .expect("request failed");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// A request with exactly these header lines (repeated names stay repeated) and body bytes.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Vec<u8>,
    ) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(name, value.clone());
        }
        self.request(builder.body(Full::new(Bytes::from(body))).expect("request"))
            .await
    }

    /// `POST /api/tasks` as JSON with exactly these body bytes (which may not be JSON at all).
    pub async fn post_raw(&self, token: &str, body: Vec<u8>) -> TestResponse {
        let headers = [bearer(token), json_type()];
        self.send_raw(Method::POST, "/api/tasks", &headers, body)
            .await
    }

    /// A request with an optional bearer token and an optional JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(json.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        self.request(builder.body(body).expect("request")).await
    }

    /// Creates a task and returns its JSON (`data`).
    pub async fn create_task(&self, token: &str, title: &str) -> Value {
        let body = serde_json::json!({ "title": title });
        let response = self
            .send(Method::POST, "/api/tasks", Some(token), Some(&body))
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
        response.json()["data"].clone()
    }
}

/// How many connections the API holds under `application_name`: PostgreSQL's
/// `pg_stat_activity` directly, or PgBouncer's `SHOW CLIENTS` when the suite runs through it.
pub async fn connections_named(application_name: &str) -> usize {
    if test_database_url() == direct_database_url() {
        let db = inspect().await;
        let row = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&application_name],
            )
            .await
            .expect("pg_stat_activity");
        return row.get::<_, i64>(0) as usize;
    }
    let mut admin: tokio_postgres::Config = test_database_url().parse().expect("url");
    admin.dbname("pgbouncer");
    let (client, connection) = admin
        .connect(tokio_postgres::NoTls)
        .await
        .expect("pgbouncer admin");
    tokio::spawn(connection);
    let messages = client
        .simple_query("SHOW CLIENTS")
        .await
        .expect("SHOW CLIENTS");
    messages
        .iter()
        .filter(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                row.get("application_name") == Some(application_name)
            }
            _ => false,
        })
        .count()
}

/// The TCP address of the direct database (for putting a proxy in front of it).
pub fn direct_upstream() -> SocketAddr {
    let config: tokio_postgres::Config = direct_database_url().parse().expect("database url");
    let port = config.get_ports().first().copied().unwrap_or(5432);
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The TCP address the API's connections go to (PgBouncer when the suite runs through it), for
/// a fault proxy that must sit where the network does.
pub fn pooled_upstream() -> SocketAddr {
    let config: tokio_postgres::Config = test_database_url().parse().expect("database url");
    let port = config.get_ports().first().copied().unwrap_or(5432);
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `url` with `application_name` set, so a test can find its own server sessions.
pub fn with_application_name(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={name}")
}

/// `Authorization: Bearer <token>`, for [`TestApp::send_raw`].
pub fn bearer(token: &str) -> (HeaderName, HeaderValue) {
    (
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("token header"),
    )
}

/// `Content-Type: application/json`, for [`TestApp::send_raw`].
pub fn json_type() -> (HeaderName, HeaderValue) {
    (
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )
}

/// A header line for [`TestApp::send_raw`] (e.g. `Idempotency-Key`, `If-Match`).
pub fn header_field(name: &'static str, value: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_str(value).expect("a header value the client can send"),
    )
}

/// `GET /api/tasks` with this `Authorization` value, or without the header.
pub async fn list_with(app: &TestApp, authorization: Option<&str>) -> TestResponse {
    let headers: Vec<_> = authorization
        .map(|value| {
            let value = HeaderValue::from_str(value).expect("an Authorization value");
            (header::AUTHORIZATION, value)
        })
        .into_iter()
        .collect();
    app.send_raw(Method::GET, "/api/tasks", &headers, Vec::new())
        .await
}

/// (users rows, tasks rows, request-key rows) of a user: what a refusal must leave unchanged.
pub async fn stored_rows(db: &tokio_postgres::Client, user: &str) -> (i64, i64, i64) {
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM users WHERE id = $1),
                    (SELECT count(*) FROM tasks WHERE user_id = $1),
                    (SELECT count(*) FROM idempotency_keys WHERE user_id = $1)",
            &[&user],
        )
        .await
        .expect("count rows");
    (row.get(0), row.get(1), row.get(2))
}
