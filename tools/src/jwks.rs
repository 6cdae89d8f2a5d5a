//! A JWKS endpoint over plain HTTP (the functions accept an `http://` `JWKS_URL`) whose
//! document, availability and delay its owner controls, recording the fetches it answers (how
//! many, when the latest arrived, the most at once): for loadgen, cold-bench, the JWT benchmark
//! and the tests (`tests/common/jwks.rs` re-exports it beside its fixtures and tokens).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Bytes;
use tokio::task::JoinHandle;

/// What the endpoint answers: the document (200), or 500 while it is `None`, `delay` late.
#[derive(Default)]
struct Behaviour {
    document: Option<Bytes>,
    delay: Duration,
}

/// The fetches seen so far: how many, when the latest arrived, how many were being answered
/// at once (a verifier must never have two in flight).
#[derive(Default)]
struct Fetches {
    count: AtomicUsize,
    last_arrival: Mutex<Option<Instant>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Fetches {
    fn arrived(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        *self
            .last_arrival
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
    }
}

/// Serves until dropped.
pub struct JwksServer {
    pub address: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    fetches: Arc<Fetches>,
    task: JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    /// Serves `document` (or 500 while it is `None`) on a free port of 127.0.0.1.
    pub async fn start(document: Option<String>) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), document).await
    }

    /// The same on `address` (loadgen's fixed `--jwks-port`).
    pub async fn start_on(address: SocketAddr, document: Option<String>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let behaviour = Arc::new(Mutex::new(Behaviour {
            document: document.map(Bytes::from),
            delay: Duration::ZERO,
        }));
        let fetches = Arc::new(Fetches::default());
        let (shared, seen) = (behaviour.clone(), fetches.clone());
        let task = crate::http_server::serve(listener, move |_peer, _request| {
            seen.arrived();
            let (document, delay) = {
                let b = shared.lock().unwrap_or_else(PoisonError::into_inner);
                (b.document.clone(), b.delay)
            };
            let seen = seen.clone();
            async move {
                tokio::time::sleep(delay).await;
                // Before the answer is written: a client that waits for it cannot start its
                // next fetch before this one stops counting.
                seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                answer(document)
            }
        });
        Ok(Self {
            address,
            behaviour,
            fetches,
            task,
        })
    }

    /// Better Auth's path on this server.
    pub fn url(&self) -> String {
        format!("http://{}/api/auth/jwks", self.address)
    }

    /// Requests answered (or being answered) so far.
    pub fn hits(&self) -> usize {
        self.fetches.count.load(Ordering::SeqCst)
    }

    /// The most fetches that were ever being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.fetches.max_in_flight.load(Ordering::SeqCst)
    }

    /// When the latest fetch arrived.
    pub fn last_fetch_at(&self) -> Option<Instant> {
        *self
            .fetches
            .last_arrival
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every answer comes `delay` late (a JWKS host in another region).
    pub fn set_delay(&self, delay: Duration) {
        self.behaviour().delay = delay;
    }

    /// Serves `document` from now on, or 500 for `None`.
    pub fn set_document(&self, document: Option<String>) {
        self.behaviour().document = document.map(Bytes::from);
    }

    fn behaviour(&self) -> std::sync::MutexGuard<'_, Behaviour> {
        self.behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn answer(document: Option<Bytes>) -> Response<Full<Bytes>> {
    match document {
        Some(document) => {
            let mut response = Response::new(Full::new(document));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        None => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}
