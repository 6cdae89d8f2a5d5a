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
//! string, `iss`/`aud` required and checked when `JWT_ISSUER`/`JWT_AUDIENCE` are set.

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
        if claims.sub.trim().is_empty() {
            return Err(refuse("token subject is empty"));
        }
        Ok(Identity {
            user_id: claims.sub,
            email: claims.email.and_then(|e| e.as_str().map(str::to_owned)),
        })
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
