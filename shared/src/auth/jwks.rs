//! Better Auth's published keys, cached by `kid` for the life of the instance.
//!
//! Refetch policy: keys are fetched on first use (never at cold start, so a JWKS outage cannot
//! fail init), unless the document itself was configured (`JWKS_JSON`): then a cold start
//! fetches nothing, and the URL is only asked for a `kid` the document lacks (key rotation). A token with an unknown `kid` triggers at most one refetch per
//! [`REFETCH_INTERVAL`]; after a *failed* fetch the next attempt may come after
//! [`RETRY_AFTER_FAILURE`] so an outage ends quickly. While the JWKS cannot be fetched and no
//! cached key matches, verification answers 503, not 401: the token may well be valid.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, OnceCell};
use tokio::time::Instant;

pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Bounded so that a hanging JWKS endpoint still yields a 503 within the contract's 5 s.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("no key with this kid")]
    UnknownKid,
    #[error("{0}")]
    Unavailable(String),
}

/// A verification key and the one algorithm it may be used with.
pub struct VerificationKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_failed: bool,
}

pub struct JwksCache {
    url: String,
    keys: RwLock<Arc<HashMap<String, Arc<VerificationKey>>>>,
    fetch: Mutex<FetchState>,
    client: OnceCell<HttpsClient>,
}

impl JwksCache {
    /// `keys`: the configured document's keys (empty when none was given).
    pub fn new(url: String, keys: HashMap<String, Arc<VerificationKey>>) -> Self {
        Self {
            url,
            keys: RwLock::new(Arc::new(keys)),
            fetch: Mutex::default(),
            client: OnceCell::new(),
        }
    }

    pub async fn key(&self, kid: &str) -> Result<Arc<VerificationKey>, JwksError> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        // One fetch at a time; whoever waited re-checks the cache first.
        let mut state = self.fetch.lock().await;
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let wait = if state.last_failed {
            RETRY_AFTER_FAILURE
        } else {
            REFETCH_INTERVAL
        };
        if state.last_attempt.is_some_and(|at| at.elapsed() < wait) {
            return Err(if state.last_failed {
                JwksError::Unavailable("JWKS fetch failed recently".into())
            } else {
                JwksError::UnknownKid
            });
        }
        state.last_attempt = Some(Instant::now());
        match self.fetch_keys().await {
            Ok(keys) => {
                state.last_failed = false;
                tracing::info!(keys = keys.len(), "JWKS fetched");
                let found = keys.get(kid).cloned();
                if let Ok(mut cache) = self.keys.write() {
                    *cache = Arc::new(keys);
                }
                found.ok_or(JwksError::UnknownKid)
            }
            Err(cause) => {
                state.last_failed = true;
                Err(JwksError::Unavailable(cause))
            }
        }
    }

    fn cached(&self, kid: &str) -> Option<Arc<VerificationKey>> {
        self.keys.read().ok()?.get(kid).cloned()
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, Arc<VerificationKey>>, String> {
        crate::telemetry::count_jwks_fetch();
        let client = self
            .client
            .get_or_try_init(|| async { https_client() })
            .await?;
        let uri: hyper::Uri = self.url.parse().map_err(|e| format!("bad JWKS_URL: {e}"))?;
        let fetch = async {
            let response = client.get(uri).await.map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("JWKS endpoint answered {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            parse_key_set(&body)
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .map_err(|_| "JWKS fetch timed out".to_owned())?
    }
}

fn https_client() -> Result<HttpsClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Parses a JWKS document, keeping every usable signing key and skipping the rest (unsupported
/// curves, encryption keys, keys without `kid`) so one odd key cannot hide the others.
pub fn parse_key_set(body: &[u8]) -> Result<HashMap<String, Arc<VerificationKey>>, String> {
    #[derive(serde::Deserialize)]
    struct KeySet {
        keys: Vec<serde_json::Value>,
    }
    let set: KeySet = serde_json::from_slice(body).map_err(|e| format!("bad JWKS: {e}"))?;
    let mut keys = HashMap::new();
    for raw in set.keys {
        match verification_key(raw) {
            Some((kid, key)) => {
                keys.insert(kid, Arc::new(key));
            }
            None => tracing::debug!("skipping an unusable JWKS key"),
        }
    }
    Ok(keys)
}

fn verification_key(raw: serde_json::Value) -> Option<(String, VerificationKey)> {
    let usage = raw.get("use").and_then(|u| u.as_str());
    if usage.is_some_and(|u| u != "sig") {
        return None;
    }
    let declared = raw.get("alg").and_then(|a| a.as_str()).map(str::to_owned);
    let kid = raw.get("kid")?.as_str()?.to_owned();
    let crv = raw.get("crv").and_then(|c| c.as_str()).map(str::to_owned);
    let kty = raw.get("kty")?.as_str()?.to_owned();
    let jwk: Jwk = serde_json::from_value(raw).ok()?;
    // The algorithm a key may verify: its declared `alg`, else the one its type implies.
    let algorithm = match declared.as_deref() {
        Some(alg) => alg.parse::<Algorithm>().ok()?,
        None => match (kty.as_str(), crv.as_deref()) {
            ("OKP", Some("Ed25519")) => Algorithm::EdDSA,
            ("EC", Some("P-256")) => Algorithm::ES256,
            ("EC", Some("P-384")) => Algorithm::ES384,
            ("RSA", _) => Algorithm::RS256,
            _ => return None,
        },
    };
    let consistent = match algorithm {
        Algorithm::EdDSA => kty == "OKP" && crv.as_deref() == Some("Ed25519"),
        Algorithm::ES256 => kty == "EC" && crv.as_deref() == Some("P-256"),
        Algorithm::ES384 => kty == "EC" && crv.as_deref() == Some("P-384"),
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => kty == "RSA",
        // Never verify with an HMAC "key" published in a JWKS, nor anything unknown.
        _ => false,
    };
    if !consistent {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some((kid, VerificationKey { key, algorithm }))
}
