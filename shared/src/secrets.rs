//! Secrets Manager at cold start: `DATABASE_URL_SECRET_ARN` and `JWT_SECRET_ARN`.
//!
//! Each secret is read once per cold start, both concurrently, before the first request. A plain
//! `DATABASE_URL` / `JWT_SECRET` wins over its `*_ARN` twin and then no AWS call is made at all
//! (not even loading the AWS configuration). The SDK's HTTPS client uses rustls with the ring
//! provider, like the rest of the process.

use std::collections::HashMap;

use aws_sdk_secretsmanager::Client;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

use crate::config::ConfigError;

/// (plain variable, variable naming the secret that holds its value)
const SECRET_VARIABLES: [(&str, &str); 2] = [
    ("DATABASE_URL", "DATABASE_URL_SECRET_ARN"),
    ("JWT_SECRET", "JWT_SECRET_ARN"),
];

/// The plain variables whose values had to be fetched, by name.
pub async fn resolve(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HashMap<&'static str, String>, ConfigError> {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let wanted: Vec<(&'static str, &'static str, String)> = SECRET_VARIABLES
        .iter()
        .filter(|(plain, _)| set(plain).is_none())
        .filter_map(|(plain, arn_var)| set(arn_var).map(|arn| (*plain, *arn_var, arn)))
        .collect();
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let sdk = aws_config::from_env().http_client(http_client).load().await;
    let client = Client::new(&sdk);
    let fetches = wanted.iter().map(|(plain, arn_var, arn)| {
        let client = &client;
        async move {
            fetch(client, arn)
                .await
                .map(|value| (*plain, value))
                .map_err(|reason| ConfigError::invalid(arn_var, format!("secret {arn}: {reason}")))
        }
    });
    futures_util::future::try_join_all(fetches)
        .await
        .map(|pairs| pairs.into_iter().collect())
}

async fn fetch(client: &Client, arn: &str) -> Result<String, String> {
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())?;
    output
        .secret_string()
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| "has no string value".to_owned())
}
