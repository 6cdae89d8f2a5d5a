//! Tokens built by hand, for tests that send what no issuer would: other algorithms, missing or
//! mistyped claims, payloads that are not even JSON. (`TestApp::token` mints the valid HS256
//! tokens the product's own `token` command makes.)

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

/// The current Unix time in seconds, what `exp`, `nbf` and `iat` count.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .expect("the clock is after 1970")
}

/// `value`'s compact JSON as a JWS segment (base64url, unpadded).
pub fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// The base64url HMAC signature (`alg`: HS256, HS384 or HS512) of a JWS signing input
/// (`header.payload`).
pub fn hmac(alg: Algorithm, secret: &str, message: &str) -> String {
    tasks_shared::auth::install_crypto();
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg).expect("HMAC signing")
}

/// `claims` signed with `secret` under `alg` (an HMAC algorithm), header `{"alg", "typ": "JWT"}`.
pub fn sign(alg: Algorithm, secret: &str, claims: &Value) -> String {
    tasks_shared::auth::install_crypto();
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HMAC signing")
}

/// An HS256 token whose payload is `payload` verbatim, so it may hold what no `Value` can (lone
/// surrogate escapes, duplicate members, text that is not JSON).
pub fn sign_raw_hs256(secret: &str, payload: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
    let signature = hmac(Algorithm::HS256, secret, &message);
    format!("{message}.{signature}")
}
