#![forbid(unsafe_code)]
//! Tools for running and measuring the real function binaries offline, and the pieces they
//! share with the tests: a Lambda Runtime API emulator and token minting. Not published, and a
//! dependency of no function crate (only of the root package's CLI and tests).

pub mod runtime_api;
pub mod tokens;
