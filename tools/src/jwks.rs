//! A JWKS endpoint over plain HTTP (the functions accept an `http://` `JWKS_URL`) whose
//! document, availability and delay its owner controls, counting fetches: for loadgen,
//! cold-bench and the JWT benchmark. A superset of `tests/common/jwks.rs` (same `url`, `hits`,
//! `set_delay`, `set_document`; 500 while the document is `None`): that file can become
//! `pub use tasks_tools::jwks::JwksServer;` plus its `fixture()`, with `.expect("JWKS")` after
//! each `JwksServer::start(…).await` (this one returns the bind error instead of panicking).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

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

/// Serves until dropped.
pub struct JwksServer {
    pub address: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    hits: Arc<AtomicUsize>,
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
        let hits = Arc::new(AtomicUsize::new(0));
        let (shared, counter) = (behaviour.clone(), hits.clone());
        let task = crate::http_server::serve(listener, move |_peer, _request| {
            counter.fetch_add(1, Ordering::SeqCst);
            let (document, delay) = {
                let b = shared.lock().unwrap_or_else(PoisonError::into_inner);
                (b.document.clone(), b.delay)
            };
            async move {
                tokio::time::sleep(delay).await;
                answer(document)
            }
        });
        Ok(Self {
            address,
            behaviour,
            hits,
            task,
        })
    }

    /// Better Auth's path on this server.
    pub fn url(&self) -> String {
        format!("http://{}/api/auth/jwks", self.address)
    }

    /// Requests answered (or being answered) so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
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
