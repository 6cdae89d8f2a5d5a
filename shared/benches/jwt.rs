#![forbid(unsafe_code)]
//! JWT verification per algorithm with a warm key cache (`cargo bench -p tasks-shared --bench jwt`).
//! Asymmetric cases verify the real Better Auth tokens in tests/fixtures/better-auth.
//! `verify_better_auth` and `verify_hs256` measure the full check (`Verifier::verify_uncached`:
//! what a token's first request costs); `verify_cached` a later request with the same token.

use std::sync::OnceLock;

use divan::Bencher;
use tasks_shared::auth::Verifier;
use tasks_shared::config::AuthSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// Serves one fixed JWKS document over HTTP on 127.0.0.1 and returns its URL.
fn serve_jwks(document: String) -> String {
    runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0u8; 4096];
                let _ = stream.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{document}",
                    document.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        url
    })
}

/// A verifier whose cache already holds the key for `token`.
fn warm_verifier(name: &str) -> (Verifier, String) {
    let token = fixture(&format!("{name}.jwt"));
    let settings = AuthSettings {
        jwks_url: Some(serve_jwks(fixture(&format!("{name}.jwks.json")))),
        issuer: Some("https://app.example.com".into()),
        audience: Some("https://app.example.com".into()),
        ..AuthSettings::default()
    };
    let verifier = Verifier::new(&settings);
    runtime()
        .block_on(verifier.verify(&token))
        .expect("fixture token verifies");
    (verifier, token)
}

#[divan::bench(args = ["eddsa", "es256", "rs256", "ps256"])]
fn verify_better_auth(bencher: Bencher, name: &str) {
    let (verifier, token) = warm_verifier(name);
    bencher.bench_local(|| {
        runtime()
            .block_on(verifier.verify_uncached(divan::black_box(&token)))
            .is_ok()
    });
}

/// The same token again: answered by the cache of verified tokens.
#[divan::bench(args = ["eddsa"])]
fn verify_cached(bencher: Bencher, name: &str) {
    let (verifier, token) = warm_verifier(name);
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
    let verifier = Verifier::new(&settings);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({"sub": "bench-user", "email": "b@example.com", "iat": now, "exp": now + 3600});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode");
    runtime()
        .block_on(verifier.verify(&token))
        .expect("verifies");
    bencher.bench_local(|| {
        runtime()
            .block_on(verifier.verify_uncached(divan::black_box(&token)))
            .is_ok()
    });
}
