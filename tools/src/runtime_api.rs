//! An in-process implementation of the AWS Lambda Runtime API, for running the real function
//! binaries offline: tests hand them API Gateway events and read back what they answer; the
//! benchmark tools time cold starts and warm invocations with it. Like Lambda's, it answers
//! with TCP_NODELAY (`http_server`): otherwise every warm figure would carry the runtime's
//! delayed ACK.
//!
//! Endpoints (2018-06-01): `GET runtime/invocation/next` (long poll, with the real
//! `Lambda-Runtime-*` headers), `POST runtime/invocation/{id}/response`,
//! `POST runtime/invocation/{id}/error` and `POST runtime/init/error`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use serde_json::Value;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

const PREFIX: &str = "/2018-06-01/runtime";

/// What the function did with an invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `/response`: the API Gateway v2 response document.
    Response(Value),
    /// `/error` for this invocation.
    Error(Value),
    /// `/init/error`: the function never got to the invocation.
    InitError(Value),
}

/// Runs when the function first asks for an invocation, before the answer: the end of init.
pub type InitEnd = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<(String, Value)>>,
    queued: Notify,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    next_id: Mutex<u64>,
    /// When the function first asked for an invocation: the end of its init phase.
    first_poll: OnceLock<Instant>,
    on_init_end: Option<InitEnd>,
}

pub struct RuntimeApi {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    init_error: watch::Receiver<Option<Value>>,
    server: JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(None).await
    }

    /// Like [`RuntimeApi::start`], calling `on_init_end` when the function's first
    /// `GET invocation/next` arrives, before it is answered (where Lambda ends the unthrottled
    /// init phase: see `lambda_cpu`).
    pub async fn start_with(on_init_end: Option<InitEnd>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            on_init_end,
            ..Shared::default()
        });
        let (init_tx, init_error) = watch::channel(None);
        let init_tx = Arc::new(init_tx);
        let state = shared.clone();
        let server = crate::http_server::serve(listener, move |_peer, request| {
            let (state, init_tx) = (state.clone(), init_tx.clone());
            async move { route(&state, &init_tx, request).await }
        });
        Ok(Self {
            address,
            shared,
            init_error,
            server,
        })
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn endpoint(&self) -> String {
        self.address.to_string()
    }

    /// Queues `event` and waits (up to `timeout`) for the function's outcome.
    pub async fn invoke(&self, event: Value, timeout: Duration) -> Option<Outcome> {
        let id = {
            let mut next = self.shared.next_id.lock().ok()?;
            *next += 1;
            format!("00000000-0000-4000-8000-{:012}", *next)
        };
        let (tx, rx) = oneshot::channel();
        self.shared.waiting.lock().ok()?.insert(id.clone(), tx);
        self.shared.queue.lock().ok()?.push_back((id, event));
        self.shared.queued.notify_one();
        let mut init_error = self.init_error.clone();
        let outcome = async {
            tokio::select! {
                outcome = rx => outcome.ok(),
                error = init_error.wait_for(Option::is_some) => {
                    error.ok().and_then(|e| e.clone()).map(Outcome::InitError)
                }
            }
        };
        tokio::time::timeout(timeout, outcome).await.ok().flatten()
    }

    /// When the function first called `GET invocation/next`, i.e. finished its init phase
    /// (Lambda's "Init Duration" runs from the process start to this call).
    pub fn first_poll(&self) -> Option<Instant> {
        self.shared.first_poll.get().copied()
    }

    /// The `/init/error` document, once the function posted one.
    pub async fn init_error(&self, timeout: Duration) -> Option<Value> {
        let mut init_error = self.init_error.clone();
        let wait = async {
            init_error
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|e| e.clone())
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }
}

async fn route(
    shared: &Shared,
    init_tx: &watch::Sender<Option<Value>>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return status(StatusCode::NOT_FOUND);
    };
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return status(StatusCode::BAD_REQUEST),
    };
    let json = || serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    match (method, rest) {
        (Method::GET, "/invocation/next") => {
            if shared.first_poll.set(Instant::now()).is_ok()
                && let Some(on_init_end) = &shared.on_init_end
            {
                on_init_end();
            }
            next_invocation(shared).await
        }
        (Method::POST, "/init/error") => {
            init_tx.send_replace(Some(json()));
            status(StatusCode::ACCEPTED)
        }
        (Method::POST, rest) => {
            let Some((id, kind)) = rest
                .strip_prefix("/invocation/")
                .and_then(|r| r.split_once('/'))
            else {
                return status(StatusCode::NOT_FOUND);
            };
            let outcome = match kind {
                "response" => Outcome::Response(json()),
                "error" => Outcome::Error(json()),
                _ => return status(StatusCode::NOT_FOUND),
            };
            let waiter = shared.waiting.lock().ok().and_then(|mut w| w.remove(id));
            match waiter {
                Some(tx) => {
                    let _ = tx.send(outcome);
                    status(StatusCode::ACCEPTED)
                }
                None => status(StatusCode::BAD_REQUEST),
            }
        }
        _ => status(StatusCode::NOT_FOUND),
    }
}

/// Long-polls until an event is queued, then hands it over with Lambda's headers.
async fn next_invocation(shared: &Shared) -> Response<Full<Bytes>> {
    loop {
        let notified = shared.queued.notified();
        let next = shared.queue.lock().ok().and_then(|mut q| q.pop_front());
        if let Some((id, event)) = next {
            let deadline = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() + 10_000)
                .unwrap_or_default();
            let mut response = Response::new(Full::new(Bytes::from(event.to_string())));
            let headers = response.headers_mut();
            let pairs = [
                ("content-type", "application/json".to_owned()),
                ("lambda-runtime-aws-request-id", id),
                ("lambda-runtime-deadline-ms", deadline.to_string()),
                (
                    "lambda-runtime-invoked-function-arn",
                    "arn:aws:lambda:eu-west-1:123456789012:function:tasks-api-test".to_owned(),
                ),
                (
                    "lambda-runtime-trace-id",
                    "Root=1-6747a1b2-0f1e2d3c4b5a697887960000;Sampled=0".to_owned(),
                ),
            ];
            for (name, value) in pairs {
                if let Ok(value) = value.parse() {
                    headers.insert(name, value);
                }
            }
            return response;
        }
        notified.await;
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

/// The environment Lambda gives a function process of `memory_mb`, pointing it at `api`.
pub fn lambda_environment(
    api: &RuntimeApi,
    function: &str,
    memory_mb: u32,
) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", api.endpoint()),
        ("AWS_LAMBDA_FUNCTION_NAME", function.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function}"),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/11/27/[$LATEST]0123456789abcdef".to_owned(),
        ),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
        ("AWS_REGION", "eu-west-1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}
