//! Reporting a failed cold start to the Lambda Runtime API (`/runtime/init/error`), so the
//! invocation fails with a message naming the missing setting instead of a bare exit code.

use http::{Method, Request, header};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Posts the error to `/2018-06-01/runtime/init/error`; failures to report are only logged
/// because the process is about to exit anyway.
pub async fn report_init_error(error_type: &str, message: &str) {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body = serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string();
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("Lambda-Runtime-Function-Error-Type", "Runtime.InitError")
        .body(Full::new(Bytes::from(body)));
    let Ok(request) = request else {
        return;
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    if let Err(error) = client.request(request).await {
        tracing::error!(%error, "could not report the init error");
    }
}
