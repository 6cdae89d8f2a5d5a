//! A JWKS endpoint whose document and availability the test controls, counting fetches.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
    task: JoinHandle<()>,
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
        let (doc, counter, pause) = (document.clone(), hits.clone(), delay.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (doc, counter, pause) = (doc.clone(), counter.clone(), pause.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let body = doc.lock().expect("lock").clone();
                        let pause = *pause.lock().expect("lock");
                        async move {
                            tokio::time::sleep(pause).await;
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
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/api/auth/jwks", self.address)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
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
