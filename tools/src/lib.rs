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
