//! The local development server: exactly the Lambda routes on `127.0.0.1:PORT`, each request
//! turned into the same `lambda_http::Request` the Lambda runtime builds and handed to the same
//! handlers. CORS (done by API Gateway in production) is added here for `CORS_ALLOWED_ORIGINS`.

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tasks_shared::State;
use tasks_shared::handlers;
use tasks_shared::http::ApiError;
use tasks_shared::http::body::MAX_BODY_BYTES;
use tasks_shared::lambda_http::Body;
use tokio::net::TcpListener;

/// Methods a cross-origin caller may use (`Access-Control-Allow-Methods`). `template.yaml`'s
/// `CorsConfiguration.AllowMethods` lists the same plus `OPTIONS` (checked by
/// `tests/deployment.rs`).
pub const CORS_ALLOW_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Request headers a cross-origin caller may send (`Access-Control-Allow-Headers`): the token,
/// the JSON body, safe retries and conditional requests. `template.yaml`'s
/// `CorsConfiguration.AllowHeaders` must list the same (case-insensitively; checked by
/// `tests/deployment.rs`).
pub const CORS_ALLOW_HEADERS: &[&str] = &[
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-Match",
    "If-None-Match",
];

/// Response headers a cross-origin caller may read (`Access-Control-Expose-Headers`).
/// `template.yaml`'s `CorsConfiguration.ExposeHeaders` must list the same (case-insensitively;
/// checked by `tests/deployment.rs`).
pub const CORS_EXPOSE_HEADERS: &[&str] = &[
    "ETag",
    "Idempotent-Replayed",
    "Location",
    "Retry-After",
    "WWW-Authenticate",
];

/// How long a browser may cache a preflight, in seconds (`template.yaml`'s `MaxAge` too).
pub const CORS_MAX_AGE_SECONDS: u32 = 600;

/// Serves until the listener fails; each connection on its own task.
pub async fn serve(listener: TcpListener, state: Arc<State>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, request).await) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "connection closed with an error");
            }
        });
    }
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let origin = allowed_origin(state, request.headers());
    if let Some(origin) = &origin
        && request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(origin.clone());
    }
    let (parts, body) = request.into_parts();
    let body = match read_bounded(body).await {
        Ok(bytes) if bytes.is_empty() => Body::Empty,
        Ok(bytes) => Body::Binary(bytes),
        Err(error) => {
            tracing::debug!(%error, "could not read request body");
            return to_hyper(
                ApiError::validation("Could not read the request body").into_response(),
            );
        }
    };
    let mut response = handlers::dispatch(state, Request::from_parts(parts, body)).await;
    if let Some(origin) = origin {
        add_cors(response.headers_mut(), origin);
    }
    to_hyper(response)
}

fn to_hyper(response: Response<Body>) -> Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    Response::from_parts(parts, Full::new(bytes))
}

/// Reads at most one byte more than the handlers accept: enough for them to answer 413 in the
/// contract's order (after routing and authentication) without buffering a huge upload.
async fn read_bounded(mut body: Incoming) -> Result<Vec<u8>, hyper::Error> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            let room = MAX_BODY_BYTES + 1 - bytes.len();
            bytes.extend_from_slice(&data[..data.len().min(room)]);
            if bytes.len() > MAX_BODY_BYTES {
                break;
            }
        }
    }
    Ok(bytes)
}

fn allowed_origin(state: &State, headers: &http::HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    let allowed = &state.config.cors_allowed_origins;
    allowed
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(text))
        .then(|| origin.clone())
}

fn add_cors(headers: &mut http::HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        header_list(CORS_EXPOSE_HEADERS),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

fn preflight(origin: HeaderValue) -> Response<Full<Bytes>> {
    let mut response = plain(StatusCode::NO_CONTENT);
    let headers = response.headers_mut();
    add_cors(headers, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        header_list(CORS_ALLOW_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        header_list(CORS_ALLOW_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(CORS_MAX_AGE_SECONDS),
    );
    response
}

/// `"A, B, C"`. The lists are constant ASCII tokens, so the value is always valid.
fn header_list(items: &[&str]) -> HeaderValue {
    HeaderValue::from_str(&items.join(", ")).expect("CORS lists are ASCII header tokens")
}

fn plain(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_lists_are_valid_header_values_of_distinct_tokens() {
        for list in [CORS_ALLOW_METHODS, CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS] {
            assert_eq!(header_list(list).to_str().unwrap(), list.join(", "));
            for (i, item) in list.iter().enumerate() {
                assert!(
                    http::HeaderName::from_bytes(item.as_bytes()).is_ok(),
                    "{item}"
                );
                assert!(
                    !list[..i].iter().any(|o| o.eq_ignore_ascii_case(item)),
                    "{item} twice"
                );
            }
        }
    }
}
