//! proptest settings and the runner shared by the generated-input suites (`hostile_input.rs`,
//! `parsers.rs`).

use std::fmt::Debug;
use std::future::Future;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestCaseError, TestRunner};

/// `TASKS_PROPTEST_CASES` cases per property (else `default_cases`), with a fixed seed unless
/// `PROPTEST_RNG_SEED` names another, so CI is reproducible and a longer run is one variable.
fn config(default_cases: u32, default_seed: u64) -> Config {
    let cases = std::env::var("TASKS_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    // `Config::default()` reads PROPTEST_* variables; only a missing seed is pinned here.
    let base = Config::default();
    let rng_seed = match base.rng_seed {
        RngSeed::Random => RngSeed::Fixed(default_seed),
        fixed => fixed,
    };
    Config {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed,
        ..base
    }
}

/// Runs `property` on generated values against one `context` (a server and what surrounds it,
/// built once), all on one runtime, and panics with the (shrunk) failing input.
pub fn run<C, S, F>(
    (default_cases, default_seed): (u32, u64),
    context: impl Future<Output = C>,
    strategy: S,
    property: F,
) where
    S: Strategy,
    S::Value: Debug,
    F: AsyncFn(&C, S::Value) -> Result<(), TestCaseError>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let context = runtime.block_on(context);
    let mut runner = TestRunner::new(config(default_cases, default_seed));
    let outcome = runner.run(&strategy, |value| {
        runtime.block_on(property(&context, value))
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
