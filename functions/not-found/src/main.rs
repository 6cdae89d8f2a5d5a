#![forbid(unsafe_code)]
//! Lambda function `not-found`: API Gateway's catch-all (`$default`) route. Every request no
//! route matched lands here and gets the contract's JSON 404 `NOT_FOUND` or 405
//! `METHOD_NOT_ALLOWED` with `Allow`, exactly as the local server answers it (API Gateway's own
//! answer would be `{"message":"Not Found"}`). It needs no configuration and no database.

use tasks_shared::lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    tasks_shared::lambda::run_unmatched().await
}
