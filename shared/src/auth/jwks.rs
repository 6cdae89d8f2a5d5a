//! Better Auth's published keys, cached by `kid` for the life of the instance.
//!
//! Keys are fetched on first use, or earlier by [`JwksCache::prefetch`]; never as a condition of
//! init, so a JWKS outage cannot fail a cold start. A configured document (`JWKS_JSON`) means a
//! cold start fetches nothing; the URL is then asked only for a `kid` the document lacks.
//!
//! **The refetch rule** (CONTRACT 1.2, "JWKS rotation and outages"): a `kid` that is not cached
//! triggers a fetch unless this instance started one less than [`REFETCH_INTERVAL`] ago, and
//! an instance never has two fetches in flight: a request that meets an unknown `kid` while a
//! fetch is in flight waits for that fetch and takes its outcome. Why 5 s: Better Auth signs
//! with a new key the moment it creates it and publishes nothing ahead of use, so the interval
//! is how long a rotated key's tokens can be refused (once the window has passed, the first
//! such token fetches and is accepted); and it is all a flood of made-up `kid`s can cost the
//! JWKS host: one fetch per 5 s per instance. A failed fetch starts the window like a good one,
//! so an outage is probed at the same rate; while the JWKS cannot be fetched and no cached key
//! matches, verification answers 503, not 401: the token may well be valid.
//!
//! The one exception is a failed [`JwksCache::prefetch`]: nobody asked for a key yet, so it
//! starts no window, and the first request fetches for itself. Otherwise a JWKS host that was
//! down during init and is back by the first request would still get that request a 503.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// How long after a fetch starts an unknown `kid` is refused instead of fetched: the one
/// refetch rule, for rotation and outages alike (the module header says why 5 s).
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(5);
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

/// Keys by `kid`.
pub type KeySet = HashMap<String, Arc<VerificationKey>>;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Who asked for a fetch: a request that met an unknown `kid`, or [`JwksCache::prefetch`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Request,
    Prefetch,
}

/// What the refetch rule needs to know, kept behind the fetch lock.
#[derive(Default)]
struct FetchState {
    /// When the fetch that opened the current window started (every fetch but a failed
    /// prefetch opens one).
    window_start: Option<Instant>,
    /// Whether the latest finished fetch failed: what a refused unknown `kid` is told.
    last_failed: bool,
}

impl FetchState {
    fn in_window(&self) -> bool {
        self.window_start
            .is_some_and(|start| start.elapsed() < REFETCH_INTERVAL)
    }

    /// The answer for an unknown `kid` that may not fetch: 401 if the latest fetch worked (the
    /// key set really lacks it), 503 if it failed (the token may be fine).
    fn refusal(&self) -> JwksError {
        if self.last_failed {
            JwksError::Unavailable("JWKS fetch failed moments ago".into())
        } else {
            JwksError::UnknownKid
        }
    }
}

pub struct JwksCache {
    source: Source,
    keys: RwLock<Arc<KeySet>>,
    /// Held for the whole of a fetch: what makes fetches single-flight.
    fetch: Mutex<FetchState>,
    /// Fetches finished so far, prefetch included. Read before waiting for the fetch lock, it
    /// tells a request whether a fetch finished while it waited, i.e. whether it shared one.
    finished: AtomicU64,
}

impl JwksCache {
    /// `keys`: the configured document's keys (empty when none was given).
    pub fn new(url: String, keys: KeySet) -> Self {
        Self::with_source(
            Source::Http(HttpSource {
                url,
                client: OnceCell::new(),
            }),
            keys,
        )
    }

    fn with_source(source: Source, keys: KeySet) -> Self {
        Self {
            source,
            keys: RwLock::new(Arc::new(keys)),
            fetch: Mutex::default(),
            finished: AtomicU64::new(0),
        }
    }

    /// The key `kid` names, fetching the key set under the refetch rule if it is not cached.
    pub async fn key(&self, kid: &str) -> Result<Arc<VerificationKey>, JwksError> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let finished_before = self.finished.load(Ordering::Acquire);
        let mut state = self.fetch.lock().await;
        // Whoever waited looks again: the fetch it waited for may have brought the key.
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let shared_a_fetch = self.finished.load(Ordering::Acquire) != finished_before;
        if shared_a_fetch || state.in_window() {
            return Err(state.refusal());
        }
        match self.refresh(&mut state, Trigger::Request).await {
            Ok(()) => self.cached(kid).ok_or(JwksError::UnknownKid),
            Err(cause) => Err(JwksError::Unavailable(cause)),
        }
    }

    /// Fetches the key set now if none was ever loaded (no configured document, no fetch yet),
    /// through the same single flight; otherwise does nothing. Never fails: a failed prefetch
    /// is logged and, unlike any other failed fetch, opens no window (module header), so the
    /// first request fetches for itself and gets a 503 only if the JWKS is still down then.
    pub async fn prefetch(&self) {
        let mut state = self.fetch.lock().await;
        let loaded = self.finished.load(Ordering::Acquire) > 0
            || self.keys.read().is_ok_and(|keys| !keys.is_empty());
        if loaded {
            return;
        }
        if let Err(cause) = self.refresh(&mut state, Trigger::Prefetch).await {
            tracing::warn!(%cause, "JWKS prefetch failed; the first request will fetch again");
        }
    }

    fn cached(&self, kid: &str) -> Option<Arc<VerificationKey>> {
        self.keys.read().ok()?.get(kid).cloned()
    }

    /// One fetch, with the fetch lock held (`state` is its guard's content).
    async fn refresh(&self, state: &mut FetchState, trigger: Trigger) -> Result<(), String> {
        let started = Instant::now();
        crate::telemetry::count_jwks_fetch();
        let outcome = self.source.fetch().await.map(|keys| {
            tracing::info!(keys = keys.len(), "JWKS fetched");
            if let Ok(mut cache) = self.keys.write() {
                *cache = Arc::new(keys);
            }
        });
        state.last_failed = outcome.is_err();
        if outcome.is_ok() || trigger == Trigger::Request {
            state.window_start = Some(started);
        }
        self.finished.fetch_add(1, Ordering::Release);
        outcome
    }
}

/// Where key sets come from: `JWKS_URL`, or in unit tests a script.
#[cfg_attr(
    test,
    expect(
        clippy::large_enum_variant,
        reason = "one per instance; the small variant exists only in unit tests"
    )
)]
enum Source {
    Http(HttpSource),
    #[cfg(test)]
    Scripted(Arc<tests::ScriptedSource>),
}

impl Source {
    async fn fetch(&self) -> Result<KeySet, String> {
        match self {
            Source::Http(http) => http.fetch().await,
            #[cfg(test)]
            Source::Scripted(script) => script.fetch().await,
        }
    }
}

struct HttpSource {
    url: String,
    client: OnceCell<HttpsClient>,
}

impl HttpSource {
    async fn fetch(&self) -> Result<KeySet, String> {
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
pub fn parse_key_set(body: &[u8]) -> Result<KeySet, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::watch;

    /// A JWKS host in a unit test's hands: the `kid`s it serves (`None`: it fails), a gate every
    /// fetch waits at while closed, and what it saw.
    pub(super) struct ScriptedSource {
        kids: std::sync::Mutex<Option<Vec<String>>>,
        gate: watch::Sender<bool>,
        fetches: AtomicUsize,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    impl ScriptedSource {
        pub(super) async fn fetch(&self) -> Result<KeySet, String> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let now_in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight
                .fetch_max(now_in_flight, Ordering::SeqCst);
            let mut gate = self.gate.subscribe();
            let _open = gate.wait_for(|open| *open).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let kids = self.kids.lock().expect("kids").clone();
            let kids = kids.ok_or("JWKS endpoint answered 500 Internal Server Error")?;
            Ok(kids.into_iter().map(|kid| (kid, key())).collect())
        }

        fn serve(&self, kids: Option<&[&str]>) {
            *self.kids.lock().expect("kids") =
                kids.map(|kids| kids.iter().map(|&kid| kid.to_owned()).collect());
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }

        fn max_in_flight(&self) -> usize {
            self.max_in_flight.load(Ordering::SeqCst)
        }

        fn set_gate(&self, open: bool) {
            self.gate.send_replace(open);
        }

        /// Returns once a fetch is waiting at the (closed) gate.
        async fn fetch_started(&self) {
            while self.in_flight.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Kid lookup never looks at the key itself.
    fn key() -> Arc<VerificationKey> {
        Arc::new(VerificationKey {
            key: DecodingKey::from_secret(b"unused"),
            algorithm: Algorithm::EdDSA,
        })
    }

    /// A cache over a source serving `served`, with `configured` keys (`JWKS_JSON`).
    fn scripted_cache(
        served: Option<&[&str]>,
        configured: &[&str],
    ) -> (Arc<ScriptedSource>, Arc<JwksCache>) {
        let source = Arc::new(ScriptedSource {
            kids: std::sync::Mutex::default(),
            gate: watch::Sender::new(true),
            fetches: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        source.serve(served);
        let configured = configured
            .iter()
            .map(|&kid| (kid.to_owned(), key()))
            .collect();
        let cache = JwksCache::with_source(Source::Scripted(source.clone()), configured);
        (source, Arc::new(cache))
    }

    /// Makes the last fetch look `age` old, instead of waiting for it to be.
    async fn age_last_fetch(cache: &JwksCache, age: Duration) {
        let mut state = cache.fetch.lock().await;
        let start = state.window_start.expect("a fetch opened a window");
        state.window_start = Some(
            start
                .checked_sub(age)
                .expect("monotonic clock far from zero"),
        );
    }

    /// Looks up every kid concurrently, each in its own task.
    async fn concurrently(
        cache: &Arc<JwksCache>,
        kids: impl IntoIterator<Item = String>,
    ) -> Vec<(String, Result<Arc<VerificationKey>, JwksError>)> {
        let tasks: Vec<_> = kids
            .into_iter()
            .map(|kid| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    let outcome = cache.key(&kid).await;
                    (kid, outcome)
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.expect("lookup task"));
        }
        outcomes
    }

    /// On this single-threaded runtime, every task spawned so far runs until it blocks (here:
    /// on the fetch lock) before this returns.
    async fn let_spawned_tasks_run() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn made_up_kids(wave: &str, count: usize) -> impl Iterator<Item = String> {
        (0..count).map(move |i| format!("made-up-{wave}-{i}"))
    }

    #[tokio::test]
    async fn an_unknown_kid_fetches_unless_a_fetch_started_less_than_5_s_ago() {
        let (source, cache) = scripted_cache(Some(&["old"]), &[]);
        assert!(cache.key("old").await.is_ok());
        assert_eq!(source.fetches(), 1);
        // Better Auth rotates: the new key signs at once.
        source.serve(Some(&["old", "new"]));
        assert!(matches!(cache.key("new").await, Err(JwksError::UnknownKid)));
        age_last_fetch(&cache, REFETCH_INTERVAL - Duration::from_millis(100)).await;
        assert!(matches!(cache.key("new").await, Err(JwksError::UnknownKid)));
        assert_eq!(source.fetches(), 1, "no refetch within 5 s of a fetch");
        age_last_fetch(&cache, Duration::from_millis(100)).await;
        assert!(cache.key("new").await.is_ok(), "first try once 5 s passed");
        assert_eq!(source.fetches(), 2);
        // That fetch opened a new window.
        assert!(matches!(
            cache.key("other").await,
            Err(JwksError::UnknownKid)
        ));
        assert!(cache.key("old").await.is_ok());
        assert_eq!(source.fetches(), 2);
    }

    #[tokio::test]
    async fn a_flood_of_unknown_kids_shares_one_fetch_and_waits_for_it() {
        let (source, cache) = scripted_cache(Some(&["old", "new"]), &["old"]);
        source.set_gate(false);
        let first = tokio::spawn({
            let cache = cache.clone();
            async move { cache.key("new").await.is_ok() }
        });
        source.fetch_started().await;
        // 300 more arrive while that fetch is in flight: made-up kids, and the rotated key.
        let kids = made_up_kids("first", 270).chain((0..30).map(|_| "new".to_owned()));
        let flood = tokio::spawn({
            let cache = cache.clone();
            async move { concurrently(&cache, kids).await }
        });
        let_spawned_tasks_run().await;
        source.set_gate(true);
        assert!(first.await.expect("first lookup"));
        for (kid, outcome) in flood.await.expect("flood") {
            match kid.as_str() {
                "new" => assert!(outcome.is_ok(), "waited for the fetch, found the key"),
                _ => assert!(matches!(outcome, Err(JwksError::UnknownKid)), "{kid}"),
            }
        }
        assert_eq!((source.fetches(), source.max_in_flight()), (1, 1));
        // The next flood within 5 s costs nothing; one 5 s later costs one fetch.
        let outcomes = concurrently(&cache, made_up_kids("second", 300)).await;
        assert!(
            outcomes
                .iter()
                .all(|(_, o)| matches!(o, Err(JwksError::UnknownKid)))
        );
        assert_eq!(source.fetches(), 1);
        age_last_fetch(&cache, REFETCH_INTERVAL).await;
        let outcomes = concurrently(&cache, made_up_kids("third", 300)).await;
        assert!(
            outcomes
                .iter()
                .all(|(_, o)| matches!(o, Err(JwksError::UnknownKid)))
        );
        assert_eq!((source.fetches(), source.max_in_flight()), (2, 1));
    }

    #[tokio::test]
    async fn an_outage_is_unavailable_not_unknown_and_probed_once_per_5_s() {
        let (source, cache) = scripted_cache(None, &[]);
        let outcomes = concurrently(&cache, made_up_kids("down", 200)).await;
        assert!(
            outcomes
                .iter()
                .all(|(_, o)| matches!(o, Err(JwksError::Unavailable(_))))
        );
        assert_eq!((source.fetches(), source.max_in_flight()), (1, 1));
        // Back up, but the failed fetch was moments ago: still 503, no new attempt.
        source.serve(Some(&["new"]));
        assert!(matches!(
            cache.key("new").await,
            Err(JwksError::Unavailable(_))
        ));
        assert_eq!(source.fetches(), 1);
        age_last_fetch(&cache, REFETCH_INTERVAL).await;
        assert!(cache.key("new").await.is_ok());
        assert_eq!(source.fetches(), 2);
    }

    #[tokio::test]
    async fn prefetch_loads_a_key_set_never_loaded_once() {
        let (source, cache) = scripted_cache(Some(&["old"]), &[]);
        cache.prefetch().await;
        assert_eq!(source.fetches(), 1);
        assert!(cache.key("old").await.is_ok());
        cache.prefetch().await;
        assert_eq!(
            source.fetches(),
            1,
            "nothing more: first request, second prefetch"
        );
        // A successful prefetch is a fetch like any other: it opens the 5 s window.
        source.serve(Some(&["old", "new"]));
        assert!(matches!(cache.key("new").await, Err(JwksError::UnknownKid)));
        assert_eq!(source.fetches(), 1);

        // A configured key set (`JWKS_JSON`) is loaded already.
        let (source, cache) = scripted_cache(Some(&["old"]), &["old"]);
        cache.prefetch().await;
        assert!(cache.key("old").await.is_ok());
        assert_eq!(source.fetches(), 0);
    }

    #[tokio::test]
    async fn a_failed_prefetch_leaves_the_first_request_its_own_fetch() {
        let (source, cache) = scripted_cache(None, &[]);
        cache.prefetch().await;
        assert_eq!(source.fetches(), 1, "the prefetch failed");
        // The host is back by the first request: it fetches at once, and is not refused.
        source.serve(Some(&["old"]));
        assert!(cache.key("old").await.is_ok());
        assert_eq!(source.fetches(), 2);
        cache.prefetch().await;
        assert_eq!(source.fetches(), 2);

        // A request that waited for a failing prefetch shares its outcome: 503, no second fetch.
        let (source, cache) = scripted_cache(None, &[]);
        source.set_gate(false);
        let prefetch = tokio::spawn({
            let cache = cache.clone();
            async move { cache.prefetch().await }
        });
        source.fetch_started().await;
        let request = tokio::spawn({
            let cache = cache.clone();
            async move { cache.key("old").await }
        });
        let_spawned_tasks_run().await;
        source.set_gate(true);
        prefetch.await.expect("prefetch");
        let outcome = request.await.expect("request");
        assert!(
            matches!(outcome, Err(JwksError::Unavailable(_))),
            "{:?}",
            outcome.err()
        );
        assert_eq!(source.fetches(), 1);
        // The next request, arriving after it, fetches (the prefetch opened no window).
        source.serve(Some(&["old"]));
        assert!(cache.key("old").await.is_ok());
        assert_eq!(source.fetches(), 2);
    }
}
