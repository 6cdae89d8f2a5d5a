#![forbid(unsafe_code)]
//! Tools for running and measuring the real function binaries offline (fleet, loadgen,
//! lambda-bench, cold-bench), and the pieces they share with the tests: API Gateway events, a
//! Lambda Runtime API emulator, function processes under it (with Lambda's CPU model), a JWKS
//! stub and token minting. Not published, and a dependency of no function crate (only of the
//! root package: its `token` command and its tests).

pub mod events;
pub mod function;
pub mod http_server;
pub mod jwks;
pub mod lambda_cpu;
pub mod runtime_api;
pub mod tokens;

/// A tool's exit status: 2 for bad options, 1 for a failed run; the reason on stderr after the
/// tool's name.
pub async fn run_tool<O, F>(
    tool: &str,
    options: Result<O, String>,
    run: impl FnOnce(O) -> F,
) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let (outcome, failure) = match options {
        Ok(options) => (run(options).await, 1),
        Err(message) => (Err(message), 2),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{tool}: {message}");
            std::process::ExitCode::from(failure)
        }
    }
}
