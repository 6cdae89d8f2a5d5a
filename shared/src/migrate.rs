//! Schema migrations (`migrations/*.sql`, embedded at build time and applied with refinery).
//!
//! Safe to run twice (refinery records applied versions in `refinery_schema_history`) and from
//! two processes at once: the run holds a PostgreSQL advisory lock, so a second runner waits and
//! then finds nothing to do. Run migrations over a *direct* (non-pooled) connection: the lock is
//! session-level, which PgBouncer's transaction mode does not preserve.

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Arbitrary, fixed key for `pg_advisory_lock`: "tasks-api" migrations.
const MIGRATION_LOCK_KEY: i64 = 0x7461_736b_735f_6d67;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
}

/// Applies pending migrations; returns the names of those applied by this call.
pub async fn run(client: &mut Client) -> Result<Vec<String>, MigrateError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let outcome = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(client)
        .await;
    // Unlock even when the migration failed; the session ends right after anyway.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    let report = outcome?;
    unlocked?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}

/// What `serve`, `migrate`, the tests and the benchmarks do first: create the database if it is
/// missing, then apply pending migrations. Returns the names applied by this call.
pub async fn prepare(url: &str, ca_cert: Option<&str>) -> Result<Vec<String>, String> {
    create_database_if_missing(url, ca_cert).await?;
    let mut client = connect(url, ca_cert).await?;
    run(&mut client).await.map_err(|e| e.to_string())
}

/// Connects (plain TCP or verified TLS, like the request path) for a one-off admin session.
pub async fn connect(url: &str, ca_cert: Option<&str>) -> Result<Client, String> {
    crate::db::connect_admin(url, ca_cert, None).await
}

/// Creates the database named in `url` if it does not exist (local development and tests),
/// connecting to the server's `postgres` database, with the same TLS settings, to do so.
async fn create_database_if_missing(url: &str, ca_cert: Option<&str>) -> Result<(), String> {
    let config: tokio_postgres::Config = url
        .split_once('?')
        .map_or(url, |(base, _)| base)
        .parse()
        .map_err(|e| format!("bad DATABASE_URL: {e}"))?;
    let Some(name) = config.get_dbname().map(str::to_owned) else {
        return Ok(());
    };
    // Usually it exists: then no access to the `postgres` database is needed (Neon).
    let direct_error = match crate::db::connect_admin(url, ca_cert, None).await {
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    let client = crate::db::connect_admin(url, ca_cert, Some("postgres"))
        .await
        .map_err(|_| direct_error)?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(|e| e.to_string())?
        .is_some();
    if exists {
        return Ok(());
    }
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await
    {
        Ok(()) => {
            tracing::info!(database = %name, "created database");
            Ok(())
        }
        // Another process created it first.
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}
