#![forbid(unsafe_code)]
//! Log hygiene: everything the server logs during a tour of every refusal and error path
//! (invalid tokens of every kind, JWKS down, database down, bad bodies, routing errors, writes
//! with an `Idempotency-Key`) is captured, and no token, JWT secret, database password, email,
//! title or description appears in it at any level.
//!
//! The capture holds everything that reaches a log: a `tracing` subscriber for the whole test
//! process, writing to memory (TRACE for `tasks_shared` and `tasks_api`, more than any deployment
//! enables; INFO for every other crate, what the Lambda runtime's default subscriber logs); the
//! one-line-per-request telemetry sink (installed here before any server starts, so the first
//! sink is ours, not the harness' no-op); and the stdout and stderr of the real function
//! binaries, run under the in-test Runtime API with the same filter. The tour runs once; each
//! test checks one kind of secret in what it logged, so a leak fails on its own.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tasks_tools::function::Output;

use common::events::{authorize, event};
use common::functions::Function;
use common::jwks::{JwksServer, fixture};
use common::proxy::{Mode, PgProxy};
use common::tokens::{b64, now, sign};
use common::{
    BETTER_AUTH_URL, bearer, better_auth_app_at, header_field, json_type, list_with, spawn_app_with,
};
use http::{HeaderValue, Method, StatusCode, header};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tasks_api::dev::TokenOptions;
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;
use tracing_subscriber::EnvFilter;

/// What the capture records: everything of ours, and what any other crate says at INFO.
const FILTER: &str = "info,tasks_shared=trace,tasks_api=trace";

// ---------------------------------------------------------------------------------------------
// The capture

type Buffer = Arc<Mutex<Vec<u8>>>;

struct BufferWriter(Buffer);

impl Write for BufferWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        append(&self.0, bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Appends `bytes` to the capture.
fn append(buffer: &Buffer, bytes: &[u8]) {
    buffer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend_from_slice(bytes);
}

/// Installs the process-wide subscriber and the request-line sink (once), and returns their
/// buffer.
fn capture() -> Buffer {
    static CAPTURE: OnceLock<Buffer> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let buffer = Buffer::default();
            // The first sink wins; `spawn_app` installs a no-op one, so this must come first.
            let lines = buffer.clone();
            tasks_shared::telemetry::capture(move |line| {
                append(&lines, format!("{line}\n").as_bytes())
            });
            let writer = buffer.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new(FILTER))
                .with_ansi(false)
                .with_target(true)
                .with_writer(move || BufferWriter(writer.clone()))
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other subscriber in this test process");
            buffer
        })
        .clone()
}

fn captured() -> String {
    String::from_utf8_lossy(&capture().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

// ---------------------------------------------------------------------------------------------
// What must never be logged, collected as the tour sends it

#[derive(Default, Debug)]
struct Sent {
    /// Every bearer token sent, valid or not (and its payload and signature segments).
    tokens: Vec<String>,
    /// The JWT secrets the servers were configured with.
    jwt_secrets: Vec<String>,
    /// The password in the refused database's URL.
    database_passwords: Vec<String>,
    /// The emails in the tokens sent.
    emails: Vec<String>,
    /// Titles and descriptions sent, accepted or refused.
    texts: Vec<String>,
}

impl Sent {
    fn token(&mut self, token: &str) {
        self.tokens.push(token.to_owned());
        // A partial leak (the claims, or the signature) counts too.
        for segment in token.split('.').skip(1) {
            if segment.len() >= 16 {
                self.tokens.push(segment.to_owned());
            }
        }
    }

    fn marker(&mut self, what: &str) -> String {
        let marker = format!("{what}-{}", uuid::Uuid::now_v7().simple());
        self.texts.push(marker.clone());
        marker
    }

    fn email(&mut self) -> String {
        let local = format!("log-hygiene-{}", uuid::Uuid::now_v7().simple());
        let email = format!("{local}@example.com");
        self.emails.push(email.clone());
        self.emails.push(local);
        email
    }
}

struct Tour {
    sent: Sent,
    /// How many bytes of logs the tour produced.
    bytes: usize,
    /// What the function binaries wrote to stdout and stderr (also in the capture).
    lambda_output: String,
}

static TOUR: OnceCell<Tour> = OnceCell::const_new();

/// Runs the tour once for the whole test binary; every test reads the same capture.
async fn tour() -> &'static Tour {
    TOUR.get_or_init(|| async {
        let buffer = capture();
        let mut sent = Sent::default();
        tokens_of_every_kind(&mut sent).await;
        jwks_down(&mut sent).await;
        database_down(&mut sent).await;
        bodies_routes_and_idempotent_writes(&mut sent).await;
        let lambda_output = lambda_functions(&mut sent).await;
        append(&buffer, lambda_output.as_bytes());
        // Connection tasks log as they wind down.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let bytes = buffer.lock().unwrap_or_else(|e| e.into_inner()).len();
        Tour {
            sent,
            bytes,
            lambda_output,
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// The tour

/// Every kind of invalid token against an HS256 server; each is a 401.
async fn tokens_of_every_kind(sent: &mut Sent) {
    let app = spawn_app_with(&[]).await;
    sent.jwt_secrets.push(app.secret.clone());
    let t = now();
    let claims = |sent: &mut Sent, extra: Value| {
        let sub = common::new_user_id();
        let mut claims = json!({"sub": sub, "email": sent.email(), "exp": t + 600});
        for (key, value) in extra.as_object().expect("object") {
            claims[key] = value.clone();
        }
        claims
    };
    let secret = app.secret.clone();
    let other_secret = format!("another-secret-{}", uuid::Uuid::now_v7().simple());

    let valid = sign(Algorithm::HS256, &secret, &claims(sent, json!({})));
    let (head, _, signature) = {
        let mut parts = valid.split('.');
        (
            parts.next().expect("header").to_owned(),
            parts.next().expect("payload").to_owned(),
            parts.next().expect("signature").to_owned(),
        )
    };
    let forged_payload = b64(&claims(sent, json!({"sub": "someone-else"})));
    let cases: Vec<(&str, String)> = vec![
        (
            "bad signature",
            sign(Algorithm::HS256, &other_secret, &claims(sent, json!({}))),
        ),
        (
            "payload swapped under a real signature",
            format!("{head}.{forged_payload}.{signature}"),
        ),
        (
            "expired",
            sign(
                Algorithm::HS256,
                &secret,
                &claims(sent, json!({"exp": t - 3600})),
            ),
        ),
        (
            "not yet valid",
            sign(
                Algorithm::HS256,
                &secret,
                &claims(sent, json!({"nbf": t + 3600})),
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&claims(sent, json!({})))
            ),
        ),
        (
            "HS384",
            sign(Algorithm::HS384, &secret, &claims(sent, json!({}))),
        ),
        (
            "HS512",
            sign(Algorithm::HS512, &secret, &claims(sent, json!({}))),
        ),
        (
            "no sub",
            sign(
                Algorithm::HS256,
                &secret,
                &json!({"email": sent.email(), "exp": t + 600}),
            ),
        ),
        (
            "numeric sub",
            sign(Algorithm::HS256, &secret, &claims(sent, json!({"sub": 42}))),
        ),
        (
            "too large",
            sign(
                Algorithm::HS256,
                &secret,
                &claims(sent, json!({"pad": "p".repeat(9000)})),
            ),
        ),
        (
            "garbage",
            format!("garbage-token-{}", uuid::Uuid::now_v7().simple()),
        ),
        (
            "garbage segments",
            format!(
                "{}.{}.{}",
                uuid::Uuid::now_v7().simple(),
                uuid::Uuid::now_v7().simple(),
                uuid::Uuid::now_v7().simple()
            ),
        ),
        // Asymmetric, with no JWKS configured.
        ("EdDSA without a JWKS", fixture("eddsa.jwt")),
    ];
    for (name, token) in cases {
        sent.token(&token);
        let response = list_with(&app, Some(&format!("Bearer {token}"))).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{name}");
    }
    // Another scheme, with credentials of its own.
    let basic = {
        use base64::Engine;
        let password = format!("basic-password-{}", uuid::Uuid::now_v7().simple());
        sent.tokens.push(password.clone());
        base64::engine::general_purpose::STANDARD.encode(format!("user:{password}"))
    };
    sent.tokens.push(basic.clone());
    let response = list_with(&app, Some(&format!("Basic {basic}"))).await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED, "basic");
}

/// Better Auth tokens while the JWKS answers 500, while nothing listens at its URL, and
/// refused ones (expired, unknown key) while it is up.
async fn jwks_down(sent: &mut Sent) {
    let manifest: Value = serde_json::from_str(&fixture("manifest.json")).expect("manifest");
    for entry in manifest.as_array().expect("array") {
        if let Some(email) = entry["payload"]["email"].as_str() {
            sent.emails.push(email.to_owned());
        }
    }
    let better_auth = |url: String| async move {
        better_auth_app_at(&url, BETTER_AUTH_URL, BETTER_AUTH_URL).await
    };

    // Answering 500.
    let jwks = JwksServer::start(None).await.expect("JWKS stub");
    let app = better_auth(jwks.url()).await;
    sent.jwt_secrets.push(app.secret.clone());
    for name in ["eddsa", "es256", "rs256", "ps256"] {
        let token = fixture(&format!("{name}.jwt"));
        sent.token(&token);
        list_with(&app, Some(&format!("Bearer {token}")))
            .await
            .assert_error(503, "SERVICE_UNAVAILABLE");
    }

    // Nothing listening.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listener.local_addr().expect("address")
    };
    let app = better_auth(format!("http://{closed}/api/auth/jwks")).await;
    sent.jwt_secrets.push(app.secret.clone());
    let token = fixture("eddsa.jwt");
    sent.token(&token);
    list_with(&app, Some(&format!("Bearer {token}")))
        .await
        .assert_error(503, "SERVICE_UNAVAILABLE");

    // Up, and refusing: expired, a key it does not hold, another key's algorithm.
    let jwks = JwksServer::start(Some(fixture("eddsa-expired.jwks.json")))
        .await
        .expect("JWKS stub");
    let app = better_auth(jwks.url()).await;
    sent.jwt_secrets.push(app.secret.clone());
    for token in [fixture("eddsa-expired.jwt"), fixture("es256.jwt")] {
        sent.token(&token);
        list_with(&app, Some(&format!("Bearer {token}")))
            .await
            .assert_error(401, "UNAUTHORIZED");
    }
}

/// The test database through `proxy`, behind a URL that carries a new password (trust
/// authentication ignores it).
fn url_with_password(proxy: &PgProxy, sent: &mut Sent) -> String {
    let password = format!("hunter2-secret-{}", uuid::Uuid::now_v7().simple());
    sent.database_passwords.push(password.clone());
    let config: tokio_postgres::Config = common::direct_database_url().parse().expect("url");
    let user = config.get_user().unwrap_or("postgres");
    let db = config.get_dbname().unwrap_or("postgres");
    format!(
        "postgres://{user}:{password}@127.0.0.1:{}/{db}",
        proxy.address.port()
    )
}

/// The database unreachable behind a URL that carries a password: reads, writes (with an
/// `Idempotency-Key` and texts) and the health check are 503.
async fn database_down(sent: &mut Sent) {
    common::prepare_database().await;
    let proxy = PgProxy::start(common::direct_upstream()).await;
    let url = url_with_password(&proxy, sent);
    let app = spawn_app_with(&[("DATABASE_URL", &url), ("DATABASE_TIMEOUT_MS", "1000")]).await;
    sent.jwt_secrets.push(app.secret.clone());
    let user = common::new_user_id();
    let email = sent.email();
    let token = app.token_with(
        &user,
        &TokenOptions {
            email: Some(&email),
            ttl_seconds: 3600,
            ..TokenOptions::default()
        },
    );
    sent.token(&token);

    // Once up (trust authentication ignores the password), so a connection is pooled.
    let title = sent.marker("title-before-outage");
    let created = app
        .send(
            Method::POST,
            "/api/tasks",
            Some(&token),
            Some(&json!({"title": title})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let path = format!(
        "/api/tasks/{}",
        created.json()["data"]["id"].as_str().unwrap()
    );

    proxy.set(Mode::Refuse);
    let (title, description) = (sent.marker("title-outage"), sent.marker("desc-outage"));
    let body = json!({"title": title, "description": description});
    let key = format!("outage-key-{}", uuid::Uuid::now_v7());
    let toggle = format!("{path}/toggle");
    for (method, path, body, key) in [
        (Method::GET, "/api/tasks", None, None),
        (Method::POST, "/api/tasks", Some(&body), Some(&key)),
        (Method::PUT, path.as_str(), Some(&body), None),
        (Method::PATCH, toggle.as_str(), None, None),
        (Method::DELETE, path.as_str(), None, None),
    ] {
        let mut headers = vec![bearer(&token)];
        headers.extend(body.map(|_| json_type()));
        headers.extend(key.map(|key| header_field("idempotency-key", key)));
        let body = body.map(Value::to_string).unwrap_or_default();
        app.send_raw(method, path, &headers, body.into_bytes())
            .await
            .assert_error(503, "SERVICE_UNAVAILABLE");
    }
    let health = app.send(Method::GET, "/health", None, None).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    proxy.set(Mode::Open);
}

/// Refused bodies (413, 415, 400), routing errors (404, 405), and successful writes with an
/// `Idempotency-Key` (first, replay, reuse with another body), on a working database.
async fn bodies_routes_and_idempotent_writes(sent: &mut Sent) {
    let app = spawn_app_with(&[]).await;
    sent.jwt_secrets.push(app.secret.clone());
    let user = common::new_user_id();
    let email = sent.email();
    let token = app.token_with(
        &user,
        &TokenOptions {
            email: Some(&email),
            ttl_seconds: 3600,
            ..TokenOptions::default()
        },
    );
    sent.token(&token);
    let post = |content_type: &'static str, body: String| {
        let headers = [
            bearer(&token),
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        ];
        let app = &app;
        async move {
            app.send_raw(Method::POST, "/api/tasks", &headers, body.into_bytes())
                .await
        }
    };

    // 413: over 64 KiB, as JSON and as another type.
    let title = sent.marker("title-413");
    let huge = format!(
        r#"{{"title":"{title}","description":"{}"}}"#,
        "d".repeat(70_000)
    );
    post("application/json", huge.clone())
        .await
        .assert_error(413, "PAYLOAD_TOO_LARGE");
    post("text/plain", huge)
        .await
        .assert_error(413, "PAYLOAD_TOO_LARGE");

    // 415.
    let (title, description) = (sent.marker("title-415"), sent.marker("desc-415"));
    post(
        "text/plain",
        json!({"title": title, "description": description}).to_string(),
    )
    .await
    .assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
    let title = sent.marker("title-form");
    post(
        "application/x-www-form-urlencoded",
        format!("title={title}"),
    )
    .await
    .assert_error(415, "UNSUPPORTED_MEDIA_TYPE");

    // 400: too long, wrong types, unknown fields, not JSON, not UTF-8 around a marker.
    let long_title = sent.marker("title-too-long").repeat(20);
    let description = sent.marker("desc-with-long-title");
    let long_description = sent.marker("desc-too-long").repeat(200);
    let title = sent.marker("title-with-long-desc");
    let not_json = sent.marker("not-json");
    let typed = sent.marker("desc-wrong-type");
    let unknown = sent.marker("unknown-field");
    let blank_desc = sent.marker("desc-blank-title");
    let broken = sent.marker("broken-json");
    for body in [
        json!({"title": long_title, "description": description}).to_string(),
        json!({"title": title, "description": long_description}).to_string(),
        json!({"title": 42, "description": typed}).to_string(),
        json!({"title": "   ", "description": blank_desc}).to_string(),
        json!({"tittle": unknown}).to_string(),
        format!("{not_json} is not JSON"),
        format!(r#"{{"title": "{broken}""#),
    ] {
        post("application/json", body)
            .await
            .assert_error(400, "VALIDATION_ERROR");
    }
    let mut invalid_utf8 = sent.marker("title-not-utf8").into_bytes();
    invalid_utf8.extend_from_slice(b"\xff\xfe");
    let mut body = br#"{"title":""#.to_vec();
    body.extend_from_slice(&invalid_utf8);
    body.extend_from_slice(br#""}"#);
    app.send_raw(
        Method::POST,
        "/api/tasks",
        &[bearer(&token), json_type()],
        body,
    )
    .await
    .assert_error(400, "VALIDATION_ERROR");

    // 404 and 405, with and without a token.
    let missing = format!("/api/tasks/{}", uuid::Uuid::now_v7());
    app.send(Method::GET, &missing, Some(&token), None)
        .await
        .assert_error(404, "TASK_NOT_FOUND");
    let title = sent.marker("title-404");
    app.send(
        Method::PUT,
        &missing,
        Some(&token),
        Some(&json!({"title": title})),
    )
    .await
    .assert_error(404, "TASK_NOT_FOUND");
    app.send(Method::GET, "/nope", Some(&token), None)
        .await
        .assert_error(404, "NOT_FOUND");
    app.send(Method::POST, "/api/tasks/abc", Some(&token), None)
        .await
        .assert_error(405, "METHOD_NOT_ALLOWED");
    app.send(Method::GET, "/api/tasks/not-a-uuid", Some(&token), None)
        .await;

    // Successful writes with an Idempotency-Key: create, replay, reuse with another body,
    // update, toggle, delete; a malformed key; a stale If-Match.
    let key = format!("log-hygiene-{}", uuid::Uuid::now_v7());
    let keyed = [
        bearer(&token),
        json_type(),
        header_field("idempotency-key", &key),
    ];
    let (title, description) = (sent.marker("title-created"), sent.marker("desc-created"));
    let body = json!({"title": title, "description": description}).to_string();
    let first = app
        .send_raw(
            Method::POST,
            "/api/tasks",
            &keyed,
            body.clone().into_bytes(),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let replay = app
        .send_raw(Method::POST, "/api/tasks", &keyed, body.into_bytes())
        .await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(replay.body, first.body);
    let other = json!({"title": sent.marker("title-key-reused")}).to_string();
    app.send_raw(Method::POST, "/api/tasks", &keyed, other.into_bytes())
        .await
        .assert_error(422, "IDEMPOTENCY_KEY_REUSED");
    let bad_key = [
        bearer(&token),
        json_type(),
        header_field("idempotency-key", ""),
    ];
    let refused = json!({"title": sent.marker("title-bad-key")}).to_string();
    app.send_raw(Method::POST, "/api/tasks", &bad_key, refused.into_bytes())
        .await
        .assert_error(400, "VALIDATION_ERROR");

    let path = format!(
        "/api/tasks/{}",
        first.json()["data"]["id"].as_str().unwrap()
    );
    let fresh_key = || {
        let key = format!("log-hygiene-{}", uuid::Uuid::now_v7());
        header_field("idempotency-key", &key)
    };
    let (title, description) = (sent.marker("title-updated"), sent.marker("desc-updated"));
    let body = json!({"title": title, "description": description, "is_completed": true});
    let updated = app
        .send_raw(
            Method::PUT,
            &path,
            &[bearer(&token), json_type(), fresh_key()],
            body.to_string().into_bytes(),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK);
    let stale = json!({"title": sent.marker("title-stale")}).to_string();
    let response = app
        .send_raw(
            Method::PUT,
            &path,
            &[
                bearer(&token),
                json_type(),
                header_field("if-match", "\"stale\""),
            ],
            stale.into_bytes(),
        )
        .await;
    assert_eq!(response.status, StatusCode::PRECONDITION_FAILED);
    let toggled = app
        .send_raw(
            Method::PATCH,
            &format!("{path}/toggle"),
            &[bearer(&token), fresh_key()],
            Vec::new(),
        )
        .await;
    assert_eq!(toggled.status, StatusCode::OK);
    let deleted = app
        .send_raw(
            Method::DELETE,
            &path,
            &[bearer(&token), fresh_key()],
            Vec::new(),
        )
        .await;
    assert!(deleted.status.is_success(), "{:?}", deleted.status);
    let listed = app
        .send(Method::GET, "/api/tasks", Some(&token), None)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
}

/// The `create-task` function binary under the Runtime API, with our filter in `RUST_LOG`: a
/// create with texts and an email, a refused token, and a create while the database refuses
/// connections (503). Returns what the process wrote to stdout and stderr, once it has exited.
async fn lambda_functions(sent: &mut Sent) -> String {
    common::prepare_database().await;
    let proxy = PgProxy::start(common::direct_upstream()).await;
    let secret = format!("lambda-secret-{}", uuid::Uuid::now_v7().simple());
    sent.jwt_secrets.push(secret.clone());
    let vars = [
        ("DATABASE_URL", url_with_password(&proxy, sent)),
        ("JWT_SECRET", secret.clone()),
        ("RUST_LOG", FILTER.to_owned()),
    ];
    let mut function = Function::start_with_output("create-task", &vars, Output::Capture).await;
    let mut stdout = function.child.stdout.take().expect("piped stdout");
    let mut stderr = function.child.stderr.take().expect("piped stderr");
    let read_stdout = tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _until_exit = stdout.read_to_end(&mut bytes).await;
        bytes
    });
    let read_stderr = tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _until_exit = stderr.read_to_end(&mut bytes).await;
        bytes
    });

    let claims = json!({
        "sub": common::new_user_id(), "email": sent.email(), "exp": now() + 600,
    });
    let token = sign(Algorithm::HS256, &secret, &claims);
    sent.token(&token);
    let create = |token: &str, body: Value| {
        let mut event = authorize(event("create-task"), token);
        event["body"] = json!(body.to_string());
        event
    };
    let body =
        json!({"title": sent.marker("lambda-title"), "description": sent.marker("lambda-desc")});
    let created = function.respond(&create(&token, body)).await;
    assert_eq!(created["statusCode"], 201, "{created}");

    let forged = sign(Algorithm::HS256, "not-the-secret", &claims);
    sent.token(&forged);
    let body = json!({"title": sent.marker("lambda-refused-title")});
    let refused = function.respond(&create(&forged, body)).await;
    assert_eq!(refused["statusCode"], 401, "{refused}");

    proxy.set(Mode::Refuse);
    let body = json!({"title": sent.marker("lambda-outage-title")});
    let unavailable = function.respond(&create(&token, body)).await;
    assert_eq!(unavailable["statusCode"], 503, "{unavailable}");
    proxy.set(Mode::Open);

    function.child.start_kill().expect("stop the function");
    let _exited = function.child.wait().await;
    let mut output = read_stdout.await.expect("stdout reader");
    output.extend(read_stderr.await.expect("stderr reader"));
    String::from_utf8_lossy(&output).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The assertions

/// Fails with every log line that contains one of `secrets`.
fn assert_absent(what: &str, secrets: &[String]) {
    assert!(!secrets.is_empty(), "the tour sent no {what}");
    let logs = captured();
    let leaks: Vec<String> = logs
        .lines()
        .filter_map(|line| {
            secrets
                .iter()
                .find(|secret| line.contains(secret.as_str()))
                .map(|secret| format!("{secret:?} in: {line}"))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "{what} logged ({} lines):\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

#[tokio::test]
async fn the_capture_works() {
    let tour = tour().await;
    assert!(tour.bytes > 0, "nothing was captured");
    let logs = captured();
    // Refusals and outages are logged: the capture sees the server's own lines, from each part
    // of the tour.
    for expected in [
        "request refused",
        "JWKS unavailable",
        "health check: database unreachable",
    ] {
        assert!(logs.contains(expected), "{expected:?} not in:\n{logs}");
    }
    // The request lines: one per request, from the local server's sink and from the function.
    for expected in [
        r#""type":"request","#,
        r#""route":"POST /api/tasks","status":413"#,
        r#""status":503"#,
    ] {
        assert!(logs.contains(expected), "{expected:?} not in:\n{logs}");
    }
    // The function binary's own output: a request line per invocation, at least.
    let lambda_lines = tour
        .lambda_output
        .lines()
        .filter(|line| line.contains(r#""type":"request""#))
        .count();
    assert!(
        lambda_lines >= 3,
        "{lambda_lines} request lines from the function binary in:\n{}",
        tour.lambda_output
    );
    // And it records TRACE for our crates (the tour's paths log at INFO and WARN only).
    let canary = format!("canary-{}", uuid::Uuid::now_v7().simple());
    tracing::trace!(target: "tasks_shared::log_hygiene", %canary, "capture check");
    assert!(captured().contains(&canary), "TRACE is not captured");
    eprintln!("captured {} log lines", logs.lines().count());
}

#[tokio::test]
async fn no_token_is_logged() {
    assert_absent("tokens", &tour().await.sent.tokens);
}

#[tokio::test]
async fn no_jwt_secret_is_logged() {
    assert_absent("JWT secrets", &tour().await.sent.jwt_secrets);
}

#[tokio::test]
async fn no_database_password_is_logged() {
    assert_absent("database passwords", &tour().await.sent.database_passwords);
}

#[tokio::test]
async fn no_email_is_logged() {
    assert_absent("emails", &tour().await.sent.emails);
}

#[tokio::test]
async fn no_title_or_description_is_logged() {
    assert_absent("titles and descriptions", &tour().await.sent.texts);
}
