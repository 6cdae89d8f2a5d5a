//! The JWKS stub the tests run (`tasks_tools::jwks`, the one the tools run too: its `start`
//! returns the bind error, which tests `.expect`), and the fixtures and tokens to send it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub use tasks_tools::jwks::JwksServer;

/// A Better Auth fixture file (`tests/fixtures/better-auth/NAME`).
pub fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/better-auth/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_owned()
}

/// JWKS fetches the refetch rule allows an instance in `elapsed`: the first, then one per 5 s.
pub fn allowed_fetches(elapsed: std::time::Duration) -> usize {
    let window = tasks_shared::auth::REFETCH_INTERVAL;
    1 + (elapsed.as_millis() / window.as_millis()) as usize
}

/// One JWKS document holding the keys of all the named fixture key sets: Better Auth's set after
/// a rotation (the new key, and the old one kept for its grace period).
pub fn key_sets(names: &[&str]) -> String {
    let keys: Vec<serde_json::Value> = names
        .iter()
        .flat_map(|name| {
            let set: serde_json::Value =
                serde_json::from_str(&fixture(&format!("{name}.jwks.json"))).expect("JWKS JSON");
            set["keys"].as_array().expect("keys").clone()
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

/// A token for `sub` naming a `kid` no key set has (iss/aud those of the fixtures): refused at
/// the key lookup, before any signature check, so the signature is a real one borrowed.
pub fn unknown_kid_token(kid: &str, sub: &str) -> String {
    const BETTER_AUTH_URL: &str = "https://app.example.com";
    let good = fixture("eddsa.jwt");
    let signature = good.rsplit('.').next().expect("signature");
    let header =
        URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": "EdDSA", "kid": kid}).to_string());
    let claims = serde_json::json!({
        "sub": sub, "exp": 4_951_563_842u64, "iss": BETTER_AUTH_URL, "aud": BETTER_AUTH_URL,
    });
    format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}
