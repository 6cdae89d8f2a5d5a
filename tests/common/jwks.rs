//! A JWKS endpoint whose document and availability the test controls, counting fetches (and
//! how many were ever in flight at once), and tokens to send it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

pub struct JwksServer {
    pub address: SocketAddr,
    document: Arc<Mutex<Option<String>>>,
    hits: Arc<AtomicUsize>,
    delay: Arc<Mutex<std::time::Duration>>,
    fetches: Arc<Fetches>,
    task: JoinHandle<()>,
}

/// When each fetch arrived, and how many were being answered at once.
#[derive(Default)]
struct Fetches {
    arrivals: Mutex<Vec<Instant>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    /// Serves `document`, or answers 500 while it is `None`.
    pub async fn start(document: Option<String>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let document = Arc::new(Mutex::new(document));
        let hits = Arc::new(AtomicUsize::new(0));
        let delay = Arc::new(Mutex::new(std::time::Duration::ZERO));
        let fetches = Arc::new(Fetches::default());
        let (doc, counter, pause, seen) = (
            document.clone(),
            hits.clone(),
            delay.clone(),
            fetches.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (doc, counter, pause, seen) =
                    (doc.clone(), counter.clone(), pause.clone(), seen.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        seen.arrivals.lock().expect("lock").push(Instant::now());
                        let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
                        let body = doc.lock().expect("lock").clone();
                        let pause = *pause.lock().expect("lock");
                        let seen = seen.clone();
                        async move {
                            tokio::time::sleep(pause).await;
                            // Before the answer is written: a client that waits for it cannot
                            // start its next fetch before this one stops counting.
                            seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                            let response = match body {
                                Some(body) => Response::new(Full::new(Bytes::from(body))),
                                None => {
                                    let mut r = Response::new(Full::new(Bytes::new()));
                                    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                                    r
                                }
                            };
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            address,
            document,
            hits,
            delay,
            fetches,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/api/auth/jwks", self.address)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The most fetches that were ever being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.fetches.max_in_flight.load(Ordering::SeqCst)
    }

    /// When the latest fetch arrived.
    pub fn last_fetch_at(&self) -> Option<Instant> {
        self.fetches.arrivals.lock().expect("lock").last().copied()
    }

    /// Every answer comes `delay` late (a JWKS host in another region).
    pub fn set_delay(&self, delay: std::time::Duration) {
        *self.delay.lock().expect("lock") = delay;
    }

    pub fn set_document(&self, document: Option<String>) {
        *self.document.lock().expect("lock") = document;
    }
}

/// A Better Auth fixture file (`tests/fixtures/better-auth/NAME`).
pub fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/better-auth/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_owned()
}

/// JWKS fetches the refetch rule allows an instance in `elapsed`: the first, then one per 5 s.
pub fn allowed_fetches(elapsed: std::time::Duration) -> usize {
    let window = tasks_shared::auth::REFETCH_INTERVAL;
    1 + (elapsed.as_millis() / window.as_millis()) as usize
}

/// One JWKS document holding the keys of all the named fixture key sets: Better Auth's set after
/// a rotation (the new key, and the old one kept for its grace period).
pub fn key_sets(names: &[&str]) -> String {
    let keys: Vec<serde_json::Value> = names
        .iter()
        .flat_map(|name| {
            let set: serde_json::Value =
                serde_json::from_str(&fixture(&format!("{name}.jwks.json"))).expect("JWKS JSON");
            set["keys"].as_array().expect("keys").clone()
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

/// A token for `sub` naming a `kid` no key set has (iss/aud those of the fixtures): refused at
/// the key lookup, before any signature check, so the signature is a real one borrowed.
pub fn unknown_kid_token(kid: &str, sub: &str) -> String {
    const BETTER_AUTH_URL: &str = "https://app.example.com";
    let good = fixture("eddsa.jwt");
    let signature = good.rsplit('.').next().expect("signature");
    let header =
        URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": "EdDSA", "kid": kid}).to_string());
    let claims = serde_json::json!({
        "sub": sub, "exp": 4_951_563_842u64, "iss": BETTER_AUTH_URL, "aud": BETTER_AUTH_URL,
    });
    format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}
