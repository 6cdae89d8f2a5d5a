#![forbid(unsafe_code)]
//! Secrets Manager at cold start, against a local AWS emulator (moto) — no AWS account needed.

mod common;

use common::events::event;

use std::process::Stdio;
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use common::functions::{Function, body_json};
use common::tools::{find, free_port, wait_for_port};
use common::{prepare_database, test_database_url};
use serde_json::json;
use tasks_tools::tokens::hs256_for;
use tokio::process::{Child, Command};

struct Moto {
    endpoint: String,
    _server: Child,
}

async fn start_moto() -> Option<Moto> {
    let binary = find("moto_server")?;
    let port = free_port();
    let server = Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start moto_server");
    wait_for_port(port, 60).await;
    Some(Moto {
        endpoint: format!("http://127.0.0.1:{port}"),
        _server: server,
    })
}

fn aws_vars(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_SESSION_TOKEN", "testing".to_owned()),
    ]
}

async fn create_secret(endpoint: &str, name: &str, value: &str) -> String {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http_client)
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    let created = Client::new(&config)
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .expect("create secret in moto");
    created.arn().expect("arn").to_owned()
}

#[tokio::test]
async fn secrets_are_read_from_secrets_manager_at_cold_start() {
    let Some(moto) = start_moto().await else {
        return;
    };
    prepare_database().await;
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let jwt_secret = format!("secret-from-secrets-manager-{suffix}");
    let db_arn = create_secret(
        &moto.endpoint,
        &format!("db-{suffix}"),
        &test_database_url(),
    )
    .await;
    let jwt_arn = create_secret(&moto.endpoint, &format!("jwt-{suffix}"), &jwt_secret).await;

    let mut vars = aws_vars(&moto.endpoint);
    vars.push(("DATABASE_URL_SECRET_ARN", db_arn));
    vars.push(("JWT_SECRET_ARN", jwt_arn));
    let function = Function::start("list-tasks", &vars).await;
    let token = hs256_for(&jwt_secret, "secrets-user");
    let mut list = event("list-tasks");
    list["headers"]["authorization"] = json!(format!("Bearer {token}"));
    let document = function.respond(&list).await;
    assert_eq!(document["statusCode"], 200, "{document}");
    assert_eq!(
        body_json(&document)["message"],
        "Tasks retrieved successfully"
    );
}

#[tokio::test]
async fn a_missing_secret_fails_init_naming_it() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let mut vars = aws_vars(&moto.endpoint);
    let missing = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:does-not-exist-AbCdEf";
    vars.push(("DATABASE_URL_SECRET_ARN", missing.to_owned()));
    vars.push((
        "JWT_SECRET",
        "plain-secret-plain-secret-plain-secret".to_owned(),
    ));
    let function = Function::start("health", &vars).await;
    let error = function
        .api
        .init_error(Duration::from_secs(20))
        .await
        .expect("init error");
    let message = error["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("DATABASE_URL_SECRET_ARN") && message.contains(missing),
        "{message}"
    );
}

#[tokio::test]
async fn plain_values_make_no_aws_call() {
    // The ARNs point at an endpoint where nothing listens: init would fail if it were called.
    let mut vars = aws_vars("http://127.0.0.1:9");
    vars.push((
        "DATABASE_URL_SECRET_ARN",
        "arn:aws:secretsmanager:eu-west-1:1:secret:x".to_owned(),
    ));
    vars.push((
        "JWT_SECRET_ARN",
        "arn:aws:secretsmanager:eu-west-1:1:secret:y".to_owned(),
    ));
    vars.push(("DATABASE_URL", test_database_url()));
    vars.push((
        "JWT_SECRET",
        "plain-secret-plain-secret-plain-secret".to_owned(),
    ));
    let function = Function::start("health", &vars).await;
    let document = function.respond(&event("health")).await;
    assert_eq!(document["statusCode"], 200, "{document}");
}
