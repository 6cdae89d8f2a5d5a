#![forbid(unsafe_code)]
//! Lambda function `list-tasks`: glue only. `tasks_shared::lambda::run` builds the state and warms
//! it up in init, then serves every warm invocation; the handler lives in
//! `tasks_shared::handlers`.

use tasks_shared::http::Function;
use tasks_shared::lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    tasks_shared::lambda::run(Function::ListTasks).await
}
