#![forbid(unsafe_code)]
//! `tasks-api`: the local command line.
//!
//! - `serve`   — the API on 127.0.0.1:$PORT (default 8000), migrating the database first
//! - `migrate` — create the database if missing and apply migrations
//! - `token USER [EMAIL]` — print an HS256 token for USER (dev secret or `JWT_SECRET`)

use std::process::ExitCode;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use tasks_api::dev;
use tasks_shared::State;
use tasks_shared::config::{Config, Runtime};
use tasks_shared::migrate;

const USAGE: &str = "usage: tasks-api serve | migrate | token USER [EMAIL]";

#[tokio::main]
async fn main() -> ExitCode {
    tasks_shared::lambda_http::tracing::init_default_subscriber();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let outcome = match args.as_slice() {
        ["serve"] => serve().await,
        ["migrate"] => migrate().await,
        ["token", user] => token(user, None),
        ["token", user, email] => token(user, Some(email)),
        _ => Err(USAGE.to_owned()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn local_config() -> Result<Config, String> {
    Config::from_lookup(&|name| std::env::var(name).ok(), Runtime::Local).map_err(|e| e.to_string())
}

async fn migrate() -> Result<(), String> {
    let applied = migrate_database(&local_config()?).await?;
    if applied.is_empty() {
        println!("migrations: none pending");
    } else {
        println!("migrations applied: {}", applied.join(", "));
    }
    Ok(())
}

async fn migrate_database(config: &Config) -> Result<Vec<String>, String> {
    let url = config.database_url.expose_secret();
    migrate::prepare(url, config.database.ca_cert.as_deref()).await
}

async fn serve() -> Result<(), String> {
    let mut config = local_config()?;
    if !config.auth.is_configured() {
        let secret = dev::dev_secret().map_err(|e| format!("cannot store the dev secret: {e}"))?;
        config.auth.hs256_secret = Some(SecretString::from(secret));
        eprintln!(
            "DEV MODE: no JWT_SECRET or JWKS_URL set; accepting HS256 tokens signed with a generated \
             secret ({}). Get one with: cargo run -- token alice",
            dev::dev_secret_path().display()
        );
    }
    // The server starts even if the database is down: requests then get 503 until it is back.
    match migrate_database(&config).await {
        Ok(applied) if applied.is_empty() => tracing::info!("database schema up to date"),
        Ok(applied) => tracing::info!(?applied, "migrations applied"),
        Err(error) => tracing::error!(%error, "could not migrate the database; serving anyway"),
    }
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], config.port));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let state = Arc::new(State::new(config).map_err(|e| e.to_string())?);
    eprintln!("tasks API listening on http://{address}");
    tokio::select! {
        served = tasks_api::server::serve(listener, state) => served.map_err(|e| e.to_string()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

fn token(user: &str, email: Option<&str>) -> Result<(), String> {
    let config = local_config()?;
    let secret = match &config.auth.hs256_secret {
        Some(secret) => secret.expose_secret().to_owned(),
        None => dev::dev_secret().map_err(|e| format!("cannot read the dev secret: {e}"))?,
    };
    let options = dev::TokenOptions {
        email,
        issuer: config.auth.issuer.as_deref(),
        audience: config.auth.audience.as_deref(),
        ttl_seconds: 3600,
    };
    println!("{}", dev::mint_hs256(&secret, user, &options));
    Ok(())
}
