#![forbid(unsafe_code)]
//! JWT verification per algorithm with a warm key cache (`cargo bench -p tasks-shared --bench jwt`).
//! Asymmetric cases verify the real Better Auth tokens in tests/fixtures/better-auth.
//! `verify_better_auth` and `verify_hs256` measure the full check (`Verifier::verify_uncached`:
//! what a token's first request costs); `verify_cached` a later request with the same token.

use std::sync::OnceLock;

use divan::Bencher;
use tasks_shared::auth::Verifier;
use tasks_shared::config::AuthSettings;
use tasks_tools::jwks::JwksServer;
use tasks_tools::tokens::{TokenOptions, mint_hs256};
use tokio::runtime::Runtime;

fn main() {
    divan::main();
}

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../tests/fixtures/better-auth/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path)
        .expect("fixture")
        .trim()
        .to_owned()
}

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// A verifier whose cache already holds the key for `token`, and the JWKS server it fetched
/// the key from (stopped when dropped).
fn warm_verifier(name: &str) -> (Verifier, String, JwksServer) {
    let token = fixture(&format!("{name}.jwt"));
    let jwks = runtime()
        .block_on(JwksServer::start(Some(fixture(&format!(
            "{name}.jwks.json"
        )))))
        .expect("JWKS server");
    let settings = AuthSettings {
        jwks_url: Some(jwks.url()),
        issuer: Some("https://app.example.com".into()),
        audience: Some("https://app.example.com".into()),
        ..AuthSettings::default()
    };
    let verifier = Verifier::new(&settings).expect("verifier");
    runtime()
        .block_on(verifier.verify(&token))
        .expect("fixture token verifies");
    (verifier, token, jwks)
}

#[divan::bench(args = ["eddsa", "es256", "rs256", "ps256"])]
fn verify_better_auth(bencher: Bencher, name: &str) {
    let (verifier, token, _jwks) = warm_verifier(name);
    bencher.bench_local(|| {
        runtime()
            .block_on(verifier.verify_uncached(divan::black_box(&token)))
            .is_ok()
    });
}

/// The same token again: answered by the cache of verified tokens.
#[divan::bench(args = ["eddsa"])]
fn verify_cached(bencher: Bencher, name: &str) {
    let (verifier, token, _jwks) = warm_verifier(name);
    bencher.bench_local(|| {
        runtime()
            .block_on(verifier.verify(divan::black_box(&token)))
            .is_ok()
    });
}

#[divan::bench]
fn verify_hs256(bencher: Bencher) {
    let secret = "bench-secret-bench-secret-bench-secret-0123";
    let settings = AuthSettings {
        hs256_secret: Some(secret.to_owned().into()),
        ..AuthSettings::default()
    };
    let verifier = Verifier::new(&settings).expect("verifier");
    let options = TokenOptions {
        email: Some("b@example.com"),
        ttl_seconds: 3600,
        ..TokenOptions::default()
    };
    let token = mint_hs256(secret, "bench-user", &options);
    runtime()
        .block_on(verifier.verify(&token))
        .expect("verifies");
    bencher.bench_local(|| {
        runtime()
            .block_on(verifier.verify_uncached(divan::black_box(&token)))
            .is_ok()
    });
}
