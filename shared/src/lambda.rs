//! The Lambda entry point: what every function's `main` calls, so the mains stay glue.
//!
//! # Cold work in init
//!
//! Lambda runs a function's init (process start until its first `GET /next`) at full CPU, and
//! every invocation after it at the memory size's share of a core (7.2% at 128 MB). So init
//! opens the database connection (TCP, TLS, SCRAM) and, when the key set is not configured,
//! fetches the JWKS, concurrently, instead of leaving both to the first request. The first
//! request finds the connection in the pool and the keys in the cache.
//!
//! Init waits for that warm-up at most [`WARM_UP_BOUND`], then asks for its first event
//! regardless: a database or JWKS host that is slow or down never fails or hangs init. What is
//! not done by then carries on in the background, and the first request joins it rather than
//! starting again (the pool hands it the connection being made; the key set's single fetch is
//! shared), each under the request's own deadline, so the connect/fetch/503 rules are the
//! ones every request has.

use std::sync::Arc;
use std::time::Duration;

use lambda_http::{Adapter, Error, lambda_runtime, service_fn};

use crate::http::Function;
use crate::{State, handlers};

/// How long init waits for the warm-up. The contract answers 503 within 5 s; a first request
/// may take its database deadline (3 s by default) plus the cancel grace (1 s) to give up, so a
/// cold start that waited this long in init, then the first request's worst case, still
/// answers within 5 s with room for the rest of init (the secrets, ~50–80 ms). It covers a Neon
/// compute waking from scale-to-zero (a few hundred ms) plus the connect itself (a few ms of
/// CPU at init's full speed); a slower wake finishes in the background.
pub const WARM_UP_BOUND: Duration = Duration::from_millis(750);

/// Runs `function` on Lambda: the state and the warm-up in init, then the invocations.
pub async fn run(function: Function) -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let state = Arc::new(State::for_lambda().await?);
    warm_up(&state, WARM_UP_BOUND).await;
    let state = &*state;
    lambda_runtime::Runtime::new(Adapter::from(service_fn(move |request| {
        handlers::serve(state, function, request)
    })))
    .run()
    .await
}

/// Runs the catch-all function ([`handlers::unmatched`]): no state, nothing to warm.
pub async fn run_unmatched() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    lambda_runtime::Runtime::new(Adapter::from(service_fn(handlers::unmatched)))
        .run()
        .await
}

/// Starts the warm-up and waits for it at most `bound`; returns whether it finished. It never
/// fails: errors are left to the first request, which meets them again and reports them.
pub async fn warm_up(state: &Arc<State>, bound: Duration) -> bool {
    let state = Arc::clone(state);
    let warm_up = tokio::spawn(async move {
        // The key set is fetched only when JWKS_URL is set and no keys are loaded (JWKS_JSON);
        // a failed prefetch is left to the first request, which fetches for itself.
        tokio::join!(state.db.prewarm(), state.verifier.prefetch());
    });
    let finished = tokio::time::timeout(bound, warm_up).await.is_ok();
    if !finished {
        tracing::info!(
            bound_ms = bound.as_millis(),
            "warm-up still running at the end of init; the first request joins it"
        );
    }
    finished
}
