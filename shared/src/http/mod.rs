//! HTTP concerns shared by every entry point: routing, bodies, conditional requests, errors.

pub mod body;
pub mod conditional;
pub mod error;
pub mod routes;

pub use error::{ApiError, json_response};
pub use routes::{Function, ROUTES, resolve};
