//! Development mode: a generated HS256 secret shared by `serve` and `token`, and token minting.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use rand::RngCore;
use serde::Serialize;

/// Where the generated development secret lives: inside `target/`, never committed, and the
/// same file whichever directory `serve` and `token` run from.
pub fn dev_secret_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dev-jwt-secret")
}

/// Reads the development secret, generating it on first use.
pub fn dev_secret() -> std::io::Result<String> {
    let path = dev_secret_path();
    if let Ok(secret) = std::fs::read_to_string(&path)
        && secret.trim().len() >= 32
    {
        return Ok(secret.trim().to_owned());
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, &secret)?;
    Ok(secret)
}

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

/// An HS256 token for `user_id`, as the original plan's auth service issued them.
pub fn mint_hs256(secret: &str, user_id: &str, options: &TokenOptions) -> String {
    tasks_shared::auth::install_crypto();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
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
