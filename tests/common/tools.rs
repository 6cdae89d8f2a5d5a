//! External tools some tests drive (moto, pgbouncer). `.ci/run` installs them and sets
//! `TASKS_REQUIRE_TOOLS=1`, so in CI a missing tool fails the test; on a developer machine
//! without it the test says loudly that it skipped.

use std::path::PathBuf;

/// Where `.ci/run` installs the Python tools.
pub const TOOLS_VENV_BIN: &str = "/opt/tasks-tools/bin";

/// Finds `name` on PATH, in the tools venv or in /usr/sbin; `None` means "skip".
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from(TOOLS_VENV_BIN), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            std::env::var("TASKS_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{name} is required (TASKS_REQUIRE_TOOLS=1) but not installed; run .ci/run"
        );
        eprintln!("SKIPPED: {name} is not installed (.ci/run installs it)");
    }
    found
}

/// A free TCP port on 127.0.0.1 (the OS picks it; the listener is closed before use).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until something accepts TCP connections on `port`, or panics after `seconds`.
pub async fn wait_for_port(port: u16, seconds: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on port {port}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
