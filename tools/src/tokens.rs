//! Token minting: the one HS256 issuer for the `token` command (`tasks-api`), the tools and the
//! tests.
//!
//! It lives here, not in `tasks-shared`, so the product library carries no signing code; the
//! root package depends on this crate for its `token` command, and no function crate depends on
//! either, so no function binary links it (`cargo tree -p list-tasks` shows no `tasks-tools`).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// What a token says beyond its subject.
#[derive(Debug, Clone, Default)]
pub struct TokenOptions<'a> {
    pub email: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub audience: Option<&'a str>,
    pub ttl_seconds: u64,
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// An HS256 token for `user_id`, as the original plan's auth service issued them.
pub fn mint_hs256(secret: &str, user_id: &str, options: &TokenOptions) -> String {
    tasks_shared::auth::install_crypto();
    let now = now_seconds();
    let claims = Claims {
        sub: user_id,
        email: options.email,
        iat: now,
        exp: now + options.ttl_seconds,
        iss: options.issuer,
        aud: options.audience,
    };
    // Encoding HS256 with an in-memory key cannot fail.
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

/// An hour-long HS256 token for `user_id` with nothing else in it: what the benchmarks send.
pub fn hs256_for(secret: &str, user_id: &str) -> String {
    let options = TokenOptions {
        ttl_seconds: 3600,
        ..TokenOptions::default()
    };
    mint_hs256(secret, user_id, &options)
}
