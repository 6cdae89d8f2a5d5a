//! Who is calling: bearer token extraction and JWT verification for both token families.
//!
//! - **HS256** with the shared `JWT_SECRET` (the original plan's tokens). HS384/HS512 are
//!   refused: one HMAC algorithm, one secret.
//! - **Better Auth JWKS** (`JWKS_URL`): EdDSA (Ed25519), ES256, ES384, RS256, PS256 (and the
//!   other RSA digests). The header's `kid` picks the key and the key pins the algorithm, so an
//!   HMAC token can never be checked against a public key. ES512 (P-521) is not supported by
//!   `jsonwebtoken` and is refused with 401.
//!
//! Both: `exp` required (60 s leeway, also for `nbf`), `iat` unchecked, `sub` a non-blank
//! string of at most 255 code points without U+0000, `iss`/`aud` required and checked when
//! `JWT_ISSUER`/`JWT_AUDIENCE` are set. An `email` the database could not store is dropped.

mod jwks;
mod ring_crypto;

use http::{HeaderMap, header};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use secrecy::ExposeSecret;
use serde::Deserialize;

pub use jwks::{JwksCache, JwksError};
pub use ring_crypto::install as install_crypto;

use crate::config::AuthSettings;
use crate::http::ApiError;
use crate::http::error::MISSING_TOKEN;

/// Longest accepted bearer credential (CONTRACT: 8 KiB).
pub const MAX_TOKEN_BYTES: usize = 8192;
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 60;
/// Longest accepted `sub`, in code points. It is the `users` primary key and leads two b-tree
/// indexes whose entries PostgreSQL caps at ~2.7 KB; 255 × 4 UTF-8 bytes stays far below.
pub const SUB_MAX_CHARS: usize = 255;
/// Longest `email` kept, in code points (RFC 5321's 64 + 1 + 255); longer ones count as absent.
pub const EMAIL_MAX_CHARS: usize = 320;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`: Better Auth's user id, opaque.
    pub user_id: String,
    pub email: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    email: Option<serde_json::Value>,
}

pub struct Verifier {
    hs256: Option<DecodingKey>,
    jwks: Option<JwksCache>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Verifier {
    pub fn new(settings: &AuthSettings) -> Self {
        install_crypto();
        Self {
            hs256: settings
                .hs256_secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes())),
            jwks: settings.jwks_url.clone().map(JwksCache::new),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        }
    }

    /// Authenticates a request from its `Authorization` header.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        let token = bearer_token(headers)?;
        self.verify(token).await
    }

    pub async fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let refuse = |reason| ApiError::Unauthorized { reason };
        let header = decode_header(token).map_err(|_| refuse("malformed token"))?;
        let jwks_key;
        let key = match header.alg {
            Algorithm::HS256 => self
                .hs256
                .as_ref()
                .ok_or(refuse("HS256 tokens are not accepted"))?,
            Algorithm::HS384 | Algorithm::HS512 => return Err(refuse("algorithm not allowed")),
            alg => {
                let jwks = self.jwks.as_ref().ok_or(refuse("algorithm not allowed"))?;
                let kid = header.kid.as_deref().ok_or(refuse("token has no kid"))?;
                jwks_key = jwks.key(kid).await.map_err(|e| match e {
                    JwksError::UnknownKid => refuse("unknown signing key"),
                    JwksError::Unavailable(cause) => {
                        ApiError::Unavailable(format!("JWKS unavailable: {cause}"))
                    }
                })?;
                if jwks_key.algorithm != alg {
                    return Err(refuse("algorithm does not match the key"));
                }
                &jwks_key.key
            }
        };
        let claims = decode::<Claims>(token, key, &self.validation(header.alg))
            .map_err(|e| refuse(reason_for(e.kind())))?
            .claims;
        identity(claims).map_err(refuse)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

/// The caller named by verified claims (both token families end here). A `sub` the database
/// cannot store as a key is refused; an unusable `email` is only informational, so it is dropped.
fn identity(claims: Claims) -> Result<Identity, &'static str> {
    let sub = claims.sub;
    if sub.trim().is_empty() {
        return Err("token subject is empty");
    }
    if sub.contains('\0') {
        return Err("token subject contains U+0000");
    }
    // Byte length bounds the code-point count from above: skip counting short ids.
    if sub.len() > SUB_MAX_CHARS && sub.chars().count() > SUB_MAX_CHARS {
        return Err("token subject too long");
    }
    let email = match claims.email {
        Some(serde_json::Value::String(email))
            if !email.contains('\0') && email.chars().count() <= EMAIL_MAX_CHARS =>
        {
            Some(email)
        }
        _ => None,
    };
    Ok(Identity {
        user_id: sub,
        email,
    })
}

/// The credential of an `Authorization: Bearer …` header (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let refuse = |reason| ApiError::Unauthorized { reason };
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(refuse(MISSING_TOKEN))?
        .to_str()
        .map_err(|_| refuse("malformed authorization header"))?;
    let (scheme, credential) = value
        .split_once(' ')
        .ok_or(refuse("malformed authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(refuse("authorization scheme must be Bearer"));
    }
    let credential = credential.trim();
    if credential.is_empty() {
        return Err(refuse(MISSING_TOKEN));
    }
    if credential.len() > MAX_TOKEN_BYTES {
        return Err(refuse("token too large"));
    }
    Ok(credential)
}

fn reason_for(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not yet valid",
        ErrorKind::InvalidSignature => "invalid signature",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
        ErrorKind::InvalidAlgorithm => "algorithm not allowed",
        _ => "invalid token",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn identity_of(claims: Value) -> Result<Identity, &'static str> {
        identity(serde_json::from_value(claims).expect("claims"))
    }

    #[test]
    fn sub_must_be_storable() {
        for sub in ["", " ", "\t\u{3000}", "a\u{0}b", "\u{0}"] {
            assert!(identity_of(json!({ "sub": sub })).is_err(), "{sub:?}");
        }
        let at_limit = "é".repeat(SUB_MAX_CHARS);
        assert_eq!(
            identity_of(json!({ "sub": at_limit })).unwrap().user_id,
            at_limit
        );
        // 255 four-byte code points: 1020 bytes, still within the limit.
        assert!(identity_of(json!({ "sub": "😀".repeat(SUB_MAX_CHARS) })).is_ok());
        for over in ["a".repeat(SUB_MAX_CHARS + 1), "x".repeat(4000)] {
            assert_eq!(
                identity_of(json!({ "sub": over })),
                Err("token subject too long")
            );
        }
        // Other control characters are storable: an opaque id is kept exactly.
        let odd = "\u{1}\u{1f}\u{7f} x";
        assert_eq!(identity_of(json!({ "sub": odd })).unwrap().user_id, odd);
    }

    #[test]
    fn unstorable_or_non_string_email_is_absent() {
        let email_of = |email: Value| {
            identity_of(json!({"sub": "u", "email": email}))
                .expect("identity")
                .email
        };
        assert_eq!(
            email_of(json!("a@example.com")).as_deref(),
            Some("a@example.com")
        );
        let at_limit = "é".repeat(EMAIL_MAX_CHARS);
        assert_eq!(email_of(json!(at_limit)), Some(at_limit));
        assert_eq!(email_of(json!("e".repeat(EMAIL_MAX_CHARS + 1))), None);
        assert_eq!(email_of(json!("a\u{0}@example.com")), None);
        for other in [
            json!(null),
            json!(1),
            json!(true),
            json!(["a@b"]),
            json!({"a": 1}),
        ] {
            assert_eq!(email_of(other), None);
        }
        assert_eq!(identity_of(json!({"sub": "u"})).unwrap().email, None);
    }
}
