//! The gateway: an HTTP request becomes the API Gateway event (`tasks_tools::events`), runs on
//! an instance, and the function's response document becomes the HTTP response; failures get
//! API Gateway's own answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use serde_json::{Value, json};

use tasks_tools::events::from_request;

use crate::instances::{Failure, Fleet};

/// Where the counters are served (and reset with `?reset=1`).
const STATS_PATH: &str = "/_fleet/stats";
/// Lambda's limit for a synchronous invocation's payload.
const PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;
/// Headers a gateway sets itself: taking them from the function could break the framing.
pub fn hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::UPGRADE,
    ]
    .contains(name)
}

pub fn header_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The function's response document as the HTTP response API Gateway would send.
pub fn response(document: Value) -> Result<Response<Full<Bytes>>, String> {
    let Some(object) = document
        .as_object()
        .filter(|o| o.contains_key("statusCode"))
    else {
        // Payload 2.0 without `statusCode`: the whole document is a 200 JSON body.
        let mut response = Response::new(Full::new(Bytes::from(document.to_string())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    };
    let status = object
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|code| u16::try_from(code).ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or("statusCode is not an HTTP status")?;
    let mut headers = HeaderMap::new();
    let mut add = |name: &str, value: &str| -> Result<(), String> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("bad header name {name:?}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| format!("bad value for header {name}"))?;
        if !hop_by_hop(&name) {
            headers.append(name, value);
        }
        Ok(())
    };
    let multi = object.get("multiValueHeaders").and_then(Value::as_object);
    if let Some(single) = object.get("headers").and_then(Value::as_object) {
        for (name, value) in single {
            if multi.is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case(name))) {
                continue;
            }
            add(
                name,
                &header_text(value).ok_or("a header value is not text")?,
            )?;
        }
    }
    for (name, values) in multi.into_iter().flatten() {
        for value in values.as_array().into_iter().flatten() {
            add(
                name,
                &header_text(value).ok_or("a header value is not text")?,
            )?;
        }
    }
    for cookie in object
        .get("cookies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add("set-cookie", cookie.as_str().ok_or("a cookie is not text")?)?;
    }
    let text = object.get("body").and_then(Value::as_str).unwrap_or("");
    let body = if object.get("isBase64Encoded") == Some(&Value::Bool(true)) {
        Bytes::from(
            BASE64
                .decode(text)
                .map_err(|_| "body is not valid base64")?,
        )
    } else {
        Bytes::from(text.to_owned())
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// API Gateway's own error answers: `{"message": …}`.
pub fn gateway_error(status: StatusCode) -> Response<Full<Bytes>> {
    let message = status.canonical_reason().unwrap_or("Error");
    let mut response = Response::new(Full::new(Bytes::from(
        json!({ "message": message }).to_string(),
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub async fn handle(
    fleet: Arc<Fleet>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.uri().path() == STATS_PATH {
        let reset = request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "reset=1"));
        let mut response = Response::new(Full::new(Bytes::from(fleet.snapshot(reset).to_string())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return response;
    }
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, PAYLOAD_LIMIT).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return gateway_error(StatusCode::PAYLOAD_TOO_LARGE),
    };
    let request_id = fleet.next_request.fetch_add(1, Ordering::Relaxed);
    let (function, event) =
        from_request(&parts, &body, peer, fleet.options.listen.port(), request_id);
    // The invocation runs to its end even if the client goes away, as on Lambda.
    let invocation = {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            match fleet.pools.get(function) {
                Some(pool) => fleet.invoke(pool, event).await,
                None => Err(Failure::Bad(format!("no function {function}"))),
            }
        })
    };
    let failure = match invocation.await {
        Ok(Ok(document)) => match response(document) {
            Ok(response) => return response,
            Err(error) => Failure::Bad(format!("{function}: malformed response: {error}")),
        },
        Ok(Err(failure)) => failure,
        Err(error) => Failure::Bad(format!("{function}: {error}")),
    };
    match failure {
        Failure::Throttled => gateway_error(StatusCode::TOO_MANY_REQUESTS),
        Failure::Timeout => gateway_error(StatusCode::GATEWAY_TIMEOUT),
        Failure::Bad(error) => {
            eprintln!("fleet: {error}");
            gateway_error(StatusCode::BAD_GATEWAY)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub fn response_documents_become_responses() {
        let document = json!({
            "statusCode": 201,
            "headers": {"content-type": "application/json", "etag": "\"x\"", "vary": "a"},
            "multiValueHeaders": {"vary": ["Origin", "Accept"]},
            "cookies": ["a=1", "b=2; Path=/"],
            "body": "eyJvayI6dHJ1ZX0=",
            "isBase64Encoded": true,
        });
        let answer = response(document).unwrap();
        assert_eq!(answer.status(), 201);
        let headers = answer.headers();
        assert_eq!(headers.get_all("vary").iter().count(), 2);
        assert_eq!(headers.get_all("set-cookie").iter().count(), 2);
        assert_eq!(headers["etag"], "\"x\"");
        assert!(response(json!({"statusCode": 99})).is_err());
        assert!(
            response(json!({"statusCode": 200, "body": "%", "isBase64Encoded": true})).is_err()
        );
        assert_eq!(response(json!({"a": 1})).unwrap().status(), 200);
    }
}
