#![forbid(unsafe_code)]
//! The tasks API: everything the nine Lambda functions and the local server share.
//!
//! Data flows one way: event → [`http::body`] (parse, bound, validate) → [`auth`] (who) →
//! [`tasks::sql`] (one statement, user-scoped) → [`http::error`] / handler response.

pub mod auth;
pub mod config;
pub mod db;
pub mod handlers;
pub mod http;
pub mod idempotency;
pub mod lambda;
mod lambda_init;
pub mod migrate;
pub mod secrets;
pub mod tasks;
pub mod telemetry;
pub mod timestamp;

pub use lambda_http;

use secrecy::ExposeSecret;

use crate::auth::Verifier;
use crate::config::{Config, ConfigError, Runtime};
use crate::db::Database;

/// What a handler needs, built once per cold start and shared by every invocation.
pub struct State {
    pub config: Config,
    pub db: Database,
    pub verifier: Verifier,
}

impl State {
    /// Builds the state without any network I/O: the pool connects on first use and the JWKS
    /// is fetched on first use (the local server's lazy start; a Lambda function warms both up
    /// in init, see [`lambda`]).
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let db = Database::new(config.database_url.expose_secret(), &config.database)?;
        let verifier = Verifier::new(&config.auth)?;
        Ok(Self {
            config,
            db,
            verifier,
        })
    }

    /// A Lambda function's cold start: the environment (secrets resolved from Secrets Manager
    /// when `*_ARN` variables are used), with every setting mandatory. A failure is reported to
    /// the Runtime API's `/init/error` before it is returned.
    pub async fn for_lambda() -> Result<Self, ConfigError> {
        let state = async {
            let resolved = secrets::resolve(&|name| std::env::var(name).ok()).await?;
            let env = |name: &str| {
                resolved
                    .get(name)
                    .cloned()
                    .or_else(|| std::env::var(name).ok())
            };
            Self::new(Config::from_lookup(&env, Runtime::Lambda)?)
        };
        match state.await {
            Ok(state) => Ok(state),
            Err(error) => {
                tracing::error!(%error, "cold start failed");
                lambda_init::report_init_error("ConfigError", &error.to_string()).await;
                Err(error)
            }
        }
    }
}
