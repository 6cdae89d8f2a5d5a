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
//!
//! Better Auth keys are fetched from `JWKS_URL` on first use (or by [`Verifier::prefetch`]) and
//! refetched for an unknown `kid` at most once per 5 s (`jwks` has the rule and why).
//!
//! A token that verified is remembered until it would stop verifying (`cache`), so a browser
//! sending the same token for 15 minutes pays for one signature check.

mod cache;
pub(crate) mod jwks;
mod ring_crypto;

use http::{HeaderMap, header};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header, get_current_timestamp,
};
use secrecy::ExposeSecret;
use serde::Deserialize;

pub use cache::{Lifetime, TokenCache};
pub use jwks::{JwksCache, JwksError, REFETCH_INTERVAL};
pub use ring_crypto::install as install_crypto;

use crate::config::{AuthSettings, ConfigError};
use crate::http::ApiError;
use crate::http::error::MISSING_TOKEN;
use crate::telemetry::Dependency;

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
    /// Read again (jsonwebtoken has validated them) to know how long the token stays valid.
    #[serde(default)]
    exp: Option<serde_json::Value>,
    #[serde(default)]
    nbf: Option<serde_json::Value>,
}

pub struct Verifier {
    hs256: Option<DecodingKey>,
    jwks: Option<JwksCache>,
    issuer: Option<String>,
    audience: Option<String>,
    verified: TokenCache,
}

impl Verifier {
    /// The verifier for `settings`. `JWKS_JSON`, when set, is parsed here, once: a document
    /// without a usable signing key is a configuration error (a function fails its init naming
    /// the variable), not a silent fetch on every cold start.
    pub fn new(settings: &AuthSettings) -> Result<Self, ConfigError> {
        install_crypto();
        let configured = match settings.jwks_document.as_deref() {
            Some(document) => match jwks::parse_key_set(document.as_bytes()) {
                Ok(keys) if !keys.is_empty() => keys,
                _ => {
                    return Err(ConfigError::invalid(
                        "JWKS_JSON",
                        "must be a JWKS document with at least one usable signing key",
                    ));
                }
            },
            None => Default::default(),
        };
        Ok(Self {
            hs256: settings
                .hs256_secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes())),
            jwks: settings
                .jwks_url
                .clone()
                .map(|url| JwksCache::new(url, configured)),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            verified: TokenCache::default(),
        })
    }

    /// Loads Better Auth's key set now, for an instance's init (issue 17): when `JWKS_URL` is
    /// set and no key set was ever loaded (no `JWKS_JSON`, no fetch yet), fetches it through the
    /// same single flight as a request; otherwise does nothing. Never fails, and waits at most
    /// for a fetch already in flight and its own (3 s each, `jwks::FETCH_TIMEOUT`). A success
    /// opens the 5 s window like any fetch; a failure is logged and left
    /// to the first request, which fetches for itself (a failed prefetch opens no 5 s window,
    /// so a JWKS host back by then is not answered 503).
    pub async fn prefetch(&self) {
        if let Some(jwks) = &self.jwks {
            jwks.prefetch().await;
        }
    }

    /// Authenticates a request from its `Authorization` header.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        let token = bearer_token(headers)?;
        self.verify(token).await
    }

    /// The caller `token` names, if it verifies now. A token that verified before and has not
    /// expired since (`exp` + leeway) is answered from memory; anything else is checked in full.
    pub async fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        if let Some(identity) = self.verified.get(token, get_current_timestamp()) {
            return Ok(identity);
        }
        let (identity, lifetime) = self.check(token).await?;
        if let Some(lifetime) = lifetime {
            self.verified
                .insert(token, &identity, lifetime, get_current_timestamp());
        }
        Ok(identity)
    }

    /// The full check, bypassing the cache of verified tokens: what a first request costs.
    pub async fn verify_uncached(&self, token: &str) -> Result<Identity, ApiError> {
        self.check(token).await.map(|(identity, _)| identity)
    }

    /// Header, key, signature and claims; on success, the identity and the token's lifetime.
    async fn check(&self, token: &str) -> Result<(Identity, Option<Lifetime>), ApiError> {
        let refuse = |reason| ApiError::Unauthorized { reason };
        let header = decode_header(token).map_err(|_| refuse("malformed token"))?;
        // RFC 7515 §4.1.11: a JWS whose `crit` names extensions the recipient does not process
        // is invalid; this verifier processes none (jsonwebtoken ignores `crit`).
        if header.crit.is_some() {
            return Err(refuse("unsupported critical header"));
        }
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
                    JwksError::Unavailable(cause) => ApiError::Unavailable {
                        dependency: Dependency::Jwks,
                        cause: format!("JWKS unavailable: {cause}"),
                    },
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
        let lifetime = Lifetime::of(claims.exp.as_ref(), claims.nbf.as_ref());
        Ok((identity(claims).map_err(refuse)?, lifetime))
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
    let mut fields = headers.get_all(header::AUTHORIZATION).iter();
    let field = fields.next().ok_or(refuse(MISSING_TOKEN))?;
    // Not a list (RFC 9110 §11.6.2): two fields are ambiguous, and API Gateway would join them
    // with a comma into one malformed value, so the local server refuses them too.
    if fields.next().is_some() {
        return Err(refuse("malformed authorization header"));
    }
    let value = field
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

    const SECRET: &str = "unit-test-secret-unit-test-secret-0123";

    fn hs256_verifier(secret: &str) -> Verifier {
        Verifier::new(&AuthSettings {
            hs256_secret: Some(secret.to_owned().into()),
            ..AuthSettings::default()
        })
        .unwrap()
    }

    #[test]
    fn a_configured_key_set_needs_a_usable_key() {
        let key_set = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        let settings = |document: &str| AuthSettings {
            jwks_url: Some("https://a/jwks".into()),
            jwks_document: Some(document.into()),
            ..AuthSettings::default()
        };
        assert!(Verifier::new(&settings(key_set)).is_ok());
        for unusable in ["{", r#"{"keys":[]}"#] {
            let Err(err) = Verifier::new(&settings(unusable)) else {
                panic!("{unusable} must be refused");
            };
            let text = err.to_string();
            assert!(
                text.contains("JWKS_JSON") && text.contains("usable signing key"),
                "{text}"
            );
        }
    }

    fn mint(secret: &str, claims: &Value) -> String {
        install_crypto();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode")
    }

    fn now() -> u64 {
        get_current_timestamp()
    }

    #[tokio::test]
    async fn a_verified_token_is_answered_from_the_cache() {
        let verifier = hs256_verifier(SECRET);
        let token = mint(
            SECRET,
            &json!({"sub": "alice", "email": "a@example.com", "exp": now() + 900}),
        );
        let first = verifier.verify(&token).await.expect("verifies");
        assert_eq!(verifier.verified.len(), 1);
        let second = verifier.verify(&token).await.expect("cached");
        assert_eq!(first, second);
        assert_eq!(second.user_id, "alice");
        assert_eq!(second.email.as_deref(), Some("a@example.com"));
        assert_eq!(verifier.verified.len(), 1);
        // The entry lasts exactly as long as the token: exp + leeway.
        let exp = now() + 900;
        let token = mint(
            SECRET,
            &json!({"sub": "bob", "exp": exp, "nbf": exp - 1000}),
        );
        verifier.verify(&token).await.expect("verifies");
        let until = exp + LEEWAY_SECONDS;
        assert!(verifier.verified.get(&token, until).is_some());
        assert!(verifier.verified.get(&token, until + 1).is_none());
        assert!(
            verifier
                .verified
                .get(&token, exp - 1000 - LEEWAY_SECONDS - 1)
                .is_none()
        );
        // The uncached path still checks in full and adds nothing.
        let carol = mint(SECRET, &json!({"sub": "carol", "exp": now() + 900}));
        verifier.verify_uncached(&carol).await.expect("verifies");
        assert_eq!(verifier.verified.len(), 2);
    }

    #[tokio::test]
    async fn expiry_is_honoured() {
        let verifier = hs256_verifier(SECRET);
        // Past exp + leeway: refused, and not remembered.
        let expired = mint(
            SECRET,
            &json!({"sub": "alice", "exp": now() - LEEWAY_SECONDS - 1}),
        );
        assert!(verifier.verify(&expired).await.is_err());
        assert!(verifier.verified.is_empty());
        // An entry whose time ran out is not used: the token is checked again, and refused.
        let identity = Identity {
            user_id: "alice".into(),
            email: None,
        };
        let ran_out = Lifetime {
            from: 0,
            until: now() - 1,
        };
        verifier
            .verified
            .insert(&expired, &identity, ran_out, now() - 10);
        assert_eq!(verifier.verified.len(), 1);
        assert!(matches!(
            verifier.verify(&expired).await,
            Err(ApiError::Unauthorized {
                reason: "token expired"
            })
        ));
        // Expired but within the leeway: accepted, and remembered only until exp + leeway.
        let exp = now() - 30;
        let lenient = mint(SECRET, &json!({"sub": "alice", "exp": exp}));
        assert!(verifier.verify(&lenient).await.is_ok());
        assert!(verifier.verify(&lenient).await.is_ok());
        assert!(
            verifier
                .verified
                .get(&lenient, exp + LEEWAY_SECONDS)
                .is_some()
        );
        assert!(
            verifier
                .verified
                .get(&lenient, exp + LEEWAY_SECONDS + 1)
                .is_none()
        );
    }

    #[tokio::test]
    async fn refused_tokens_are_never_cached() {
        let verifier = hs256_verifier(SECRET);
        let good = mint(SECRET, &json!({"sub": "alice", "exp": now() + 900}));
        verifier.verify(&good).await.expect("verifies");
        // The same claims signed with another secret, and the good token with its signature
        // altered: refused every time, however often they come, after a success.
        let forged = mint(
            "another-secret-another-secret-0123",
            &json!({"sub": "alice", "exp": now() + 900}),
        );
        let (message, signature) = good.rsplit_once('.').expect("three parts");
        let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
        let altered = format!("{message}.{flipped}{}", &signature[1..]);
        let unstorable = mint(SECRET, &json!({"sub": "a\u{0}b", "exp": now() + 900}));
        for _ in 0..3 {
            for bad in [&forged, &altered, &unstorable] {
                assert!(matches!(
                    verifier.verify(bad).await,
                    Err(ApiError::Unauthorized { .. })
                ));
            }
        }
        assert_eq!(verifier.verified.len(), 1);
        assert!(verifier.verify(&good).await.is_ok());
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
