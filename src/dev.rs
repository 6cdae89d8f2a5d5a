//! Development mode: a generated HS256 secret shared by `serve` and `token`.

use std::path::PathBuf;

use rand::RngCore;

/// Where the generated development secret lives: inside `target/`, never committed, and the
/// same file whichever directory `serve` and `token` run from.
pub fn dev_secret_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dev-jwt-secret")
}

/// Reads the development secret, generating it on first use.
pub fn dev_secret() -> std::io::Result<String> {
    let path = dev_secret_path();
    if let Ok(secret) = std::fs::read_to_string(&path)
        && secret.trim().len() >= 32
    {
        return Ok(secret.trim().to_owned());
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, &secret)?;
    Ok(secret)
}

/// Minting lives with the tools (one copy for the CLI, the tools and the tests).
pub use tasks_tools::tokens::{TokenOptions, mint_hs256};
