//! proptest settings shared by the generated-input suites (`hostile_input.rs`, `parsers.rs`).

use proptest::test_runner::{Config, RngAlgorithm, RngSeed};

/// `TASKS_PROPTEST_CASES` cases per property (else `default_cases`), with a fixed seed unless
/// `PROPTEST_RNG_SEED` names another, so CI is reproducible and a longer run is one variable.
pub fn config(default_cases: u32, default_seed: u64) -> Config {
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
