#![forbid(unsafe_code)]
//! Local tooling for the tasks API: the development server (the Lambda routes on a TCP port,
//! calling the same handlers) and development tokens.

pub mod dev;
pub mod server;
