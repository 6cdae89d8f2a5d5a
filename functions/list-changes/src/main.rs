#![forbid(unsafe_code)]
//! Lambda function `list-changes`: glue only. State is built once per cold start and reused by every
//! warm invocation; the handler lives in `tasks_shared::handlers`.

use tasks_shared::http::Function;
use tasks_shared::lambda_http::{self, Error, service_fn};
use tasks_shared::{State, handlers};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let state = State::for_lambda().await?;
    lambda_http::run(service_fn(|request| {
        handlers::serve(&state, Function::ListChanges, request)
    }))
    .await
}
