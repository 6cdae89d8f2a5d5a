//! The database connection: pool, TLS, deadlines. The only module that talks to deadpool.
//!
//! # Statement strategy (works through PgBouncer in transaction mode)
//!
//! Every statement is sent with [`tokio_postgres::Client::query_typed`]: the parameter types are
//! given by the caller, so the driver sends Parse/Bind/Execute/Sync for the *unnamed* statement
//! in one flight. There are no named server-side prepared statements to lose when PgBouncer
//! hands the next transaction to another server connection, and every route costs exactly one
//! round trip. Each statement runs in its own implicit transaction (no `BEGIN`), and nothing
//! session-level (`SET`, advisory locks, temp tables) is used on the request path.
//!
//! # Deadlines and abandoned statements
//!
//! One deadline (`DATABASE_TIMEOUT_MS`) covers checkout, connect and the statement. When it
//! passes, a PostgreSQL cancel request is sent and the statement gets a short grace period to
//! answer: a confirmed cancel (`query_canceled`) means it will never commit, so the 503 is
//! safe; a late success is returned as a success. If neither arrives, the connection is
//! detached from the pool and closed, never reused: otherwise a statement queued in PgBouncer
//! or in the driver could still run after the client was told 503. Connections that fail with
//! a connection-level error are discarded the same way, and the pool makes a new one on the next
//! checkout, so a restarted or suspended database is picked up without restarting the process.
//!
//! Reads are retried once on a broken connection. Writes are retried only when the server said
//! the session was terminated before the statement could commit (SQLSTATE class 57P, severity
//! FATAL), so a write is never applied twice.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use rustls::RootCertStore;
use tokio::time::{Instant, timeout_at};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{ConfigError, DatabaseSettings};

mod cancel;

/// After the deadline: how long the cancel request and the statement's answer to it may take
/// before the connection is closed and the 503 goes out anyway (the database may be the thing
/// that is down). Deadline + grace stays within the contract's 5 s.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be reached or did not answer in time: 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database rejected the statement: a bug, 500.
    #[error("statement failed: {0}")]
    Statement(tokio_postgres::Error),
    #[error("unexpected row shape: {0}")]
    Decode(tokio_postgres::Error),
    #[error("statement returned no row")]
    MissingRow,
}

/// Whether a statement may be sent again after its connection broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads: any connection failure.
    Once,
    /// Writes: only when the server proved the statement did not commit.
    IfNotCommitted,
}

#[derive(Clone)]
enum Tls {
    Disabled,
    Verified(MakeRustlsConnect),
}

pub struct Database {
    pool: Pool,
    tls: Tls,
    cancel_target: Option<cancel::CancelTarget>,
    timeout: Duration,
}

impl Database {
    /// Builds the pool; connects lazily, so a cold start never waits for (or fails on) the
    /// database.
    pub fn new(url: &str, settings: &DatabaseSettings) -> Result<Self, ConfigError> {
        let (pg, tls) = connection_setup(url, settings.ca_cert.as_deref(), settings.timeout)?;
        let cancel_target = match (pg.get_hosts().first(), pg.get_ports().first()) {
            (Some(tokio_postgres::config::Host::Tcp(host)), port) => Some(cancel::CancelTarget {
                host: host.clone(),
                port: port.copied().unwrap_or(5432),
            }),
            _ => None,
        };
        let manager_config = ManagerConfig {
            // `Fast` checks only that the connection is open: no extra round trip per request.
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Tls::Disabled => Manager::from_config(pg, NoTls, manager_config),
            Tls::Verified(tls) => Manager::from_config(pg, tls.clone(), manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .build()
            .map_err(|e| ConfigError::invalid("DATABASE_URL", e.to_string()))?;
        Ok(Self {
            pool,
            tls,
            cancel_target,
            timeout: settings.timeout,
        })
    }

    /// Runs one statement within the request deadline. See the module docs for retries.
    pub async fn query(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
        retry: Retry,
    ) -> Result<Vec<Row>, DbError> {
        let deadline = Instant::now() + self.timeout;
        let mut retried = false;
        loop {
            let client = self.checkout(deadline).await?;
            let Some(result) = self.run(&client, sql, params, deadline).await else {
                // Neither finished nor confirmed cancelled: close the connection so nothing
                // queued on it (in the driver, or in PgBouncer's queue) can run later.
                drop(Object::take(client));
                return Err(DbError::Unavailable("statement timed out".into()));
            };
            match result {
                Ok(rows) => return Ok(rows),
                Err(error) if error.code() == Some(&SqlState::QUERY_CANCELED) => {
                    return Err(DbError::Unavailable(describe(&error)));
                }
                Err(error) => {
                    let broken = connection_is_broken(&error);
                    let may_retry = match retry {
                        Retry::Once => broken,
                        Retry::IfNotCommitted => session_terminated(&error),
                    };
                    if broken {
                        drop(Object::take(client));
                    }
                    if may_retry && !retried && Instant::now() < deadline {
                        retried = true;
                        tracing::info!(%error, "connection lost; retrying on a fresh one");
                        continue;
                    }
                    return Err(if broken {
                        DbError::Unavailable(describe(&error))
                    } else {
                        DbError::Statement(error)
                    });
                }
            }
        }
    }

    /// Sends the statement and waits until `deadline`. Past it, sends a cancel request and gives
    /// the statement [`CANCEL_GRACE`] to settle: it then either finished after all (its result
    /// is returned, so a write that committed is reported as done) or failed with
    /// `query_canceled`. `None`: nothing is known, and the connection must be closed.
    async fn run(
        &self,
        client: &Object,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
        deadline: Instant,
    ) -> Option<Result<Vec<Row>, tokio_postgres::Error>> {
        let mut statement = std::pin::pin!(client.query_typed(sql, params));
        if let Ok(result) = timeout_at(deadline, &mut statement).await {
            return Some(result);
        }
        let token = client.cancel_token();
        let settle = async {
            let tls = match &self.tls {
                Tls::Disabled => None,
                Tls::Verified(tls) => Some(tls),
            };
            match &self.cancel_target {
                Some(target) => {
                    if let Err(error) = cancel::cancel(&token, target, tls).await {
                        tracing::warn!(%error, "cancel request failed");
                    }
                }
                None => tracing::warn!("no TCP host to send a cancel request to"),
            }
            (&mut statement).await
        };
        tokio::time::timeout(CANCEL_GRACE, settle).await.ok()
    }

    async fn checkout(&self, deadline: Instant) -> Result<Object, DbError> {
        match timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(PoolError::Backend(error))) => Err(DbError::Unavailable(describe(&error))),
            Ok(Err(error)) => Err(DbError::Unavailable(describe(&error))),
            Err(_elapsed) => Err(DbError::Unavailable("connect timed out".into())),
        }
    }

    pub fn status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }
}

/// The tokio-postgres configuration and TLS mode for `url`, shared by the pool and admin sessions.
fn connection_setup(
    url: &str,
    ca_cert: Option<&str>,
    connect_timeout: Duration,
) -> Result<(tokio_postgres::Config, Tls), ConfigError> {
    let parsed = ParsedUrl::parse(url)?;
    let mut pg = parsed.config;
    pg.connect_timeout(connect_timeout);
    if pg.get_application_name().is_none() {
        pg.application_name("tasks-api");
    }
    let ca_file = ca_cert.or(parsed.root_cert.as_deref());
    let tls = match pg.get_ssl_mode() {
        SslMode::Require => Tls::Verified(MakeRustlsConnect::new(tls_config(ca_file)?)),
        // `prefer` (the default) and `disable` connect in plain text: TLS here always means
        // verified TLS, asked for with `sslmode=require` (or verify-ca / verify-full).
        _ => {
            pg.ssl_mode(SslMode::Disable);
            Tls::Disabled
        }
    };
    Ok((pg, tls))
}

/// One unpooled session, e.g. for migrations (which need session-level advisory locks).
/// `database` overrides the URL's database name (to reach `postgres` for `CREATE DATABASE`).
pub async fn connect_admin(
    url: &str,
    ca_cert: Option<&str>,
    database: Option<&str>,
) -> Result<tokio_postgres::Client, String> {
    let (mut pg, tls) =
        connection_setup(url, ca_cert, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    if let Some(database) = database {
        pg.dbname(database);
    }
    match tls {
        Tls::Disabled => {
            let (client, connection) = pg.connect(NoTls).await.map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Ok(client)
        }
        Tls::Verified(tls) => {
            let (client, connection) = pg.connect(tls).await.map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Ok(client)
        }
    }
}

/// An error with its causes, for logs ("error performing TLS handshake: invalid peer
/// certificate: UnknownIssuer").
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A failure of the connection rather than of the statement: the connection must go.
fn connection_is_broken(error: &tokio_postgres::Error) -> bool {
    match error.as_db_error() {
        None => true,
        Some(db) => {
            db.severity() == "FATAL"
                || db.code().code().starts_with("08")
                || session_terminated(error)
                || *db.code() == SqlState::TOO_MANY_CONNECTIONS
        }
    }
}

/// The server ended the session before running the statement to commit (admin shutdown, crash
/// shutdown, cannot connect now): the statement did not commit, so resending it is safe.
fn session_terminated(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db| {
        matches!(
            *db.code(),
            SqlState::ADMIN_SHUTDOWN | SqlState::CRASH_SHUTDOWN | SqlState::CANNOT_CONNECT_NOW
        )
    })
}

/// `DATABASE_URL` as libpq users write it, mapped onto what tokio-postgres understands:
/// `sslmode=verify-ca|verify-full` mean `require` (which is always verified here) and
/// `sslrootcert=<file>` names an extra trusted CA.
struct ParsedUrl {
    config: tokio_postgres::Config,
    root_cert: Option<String>,
}

impl ParsedUrl {
    fn parse(url: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::invalid("DATABASE_URL", reason);
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut root_cert = None;
        let mut kept = form_urlencoded::Serializer::new(String::new());
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match (key.as_ref(), value.as_ref()) {
                ("sslmode", "verify-ca" | "verify-full") => {
                    kept.append_pair("sslmode", "require");
                }
                ("sslrootcert", file) => root_cert = Some(file.to_owned()),
                (key, value) => {
                    kept.append_pair(key, value);
                }
            }
        }
        let kept = kept.finish();
        let normalized = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{kept}")
        };
        // The parse error never contains the password.
        let config = tokio_postgres::Config::from_str(&normalized)
            .map_err(|e| invalid(format!("not a PostgreSQL URL: {e}")))?;
        Ok(Self { config, root_cert })
    }
}

/// Verified TLS with the ring provider: Mozilla's roots (what Neon's certificates chain to)
/// plus an optional extra CA from a PEM file.
fn tls_config(extra_ca: Option<&str>) -> Result<rustls::ClientConfig, ConfigError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let invalid = |reason: String| ConfigError::invalid("DATABASE_CA_CERT", reason);
        let pem = std::fs::read(Path::new(path)).map_err(|e| invalid(format!("{path}: {e}")))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| invalid(format!("{path}: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("{path}: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(invalid(format!("{path}: no PEM certificate found")));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::invalid("DATABASE_URL", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::{ChannelBinding, Host};

    #[test]
    fn neon_pooled_url_parses_with_tls_and_channel_binding() {
        let url = "postgresql://alex:AbC123dEf@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/dbname?sslmode=require&channel_binding=require&options=endpoint%3Dep-cool-darkness-123456";
        let parsed = ParsedUrl::parse(url).unwrap();
        let config = parsed.config;
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        assert_eq!(config.get_channel_binding(), ChannelBinding::Require);
        assert_eq!(
            config.get_options(),
            Some("endpoint=ep-cool-darkness-123456")
        );
        assert_eq!(config.get_user(), Some("alex"));
        assert_eq!(config.get_dbname(), Some("dbname"));
        assert_eq!(
            config.get_hosts(),
            [Host::Tcp(
                "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech".into()
            )]
        );
        assert_eq!(config.get_ports(), [5432]);
    }

    #[test]
    fn libpq_only_parameters_are_mapped() {
        let parsed = ParsedUrl::parse(
            "postgres://u@db.example.com/x?sslmode=verify-full&sslrootcert=/ca.pem",
        )
        .unwrap();
        assert_eq!(parsed.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(parsed.root_cert.as_deref(), Some("/ca.pem"));
    }

    #[test]
    fn invalid_urls_name_the_variable_without_the_password() {
        let Err(err) = ParsedUrl::parse("postgres://u:hunter2@h/db?sslmode=bogus") else {
            panic!("must fail");
        };
        let text = err.to_string();
        assert!(text.contains("DATABASE_URL"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[tokio::test]
    async fn building_the_pool_does_not_connect() {
        let settings = DatabaseSettings {
            pool_size: 1,
            timeout: Duration::from_millis(200),
            ca_cert: None,
        };
        let db = Database::new("postgres://u@127.0.0.1:1/x", &settings).unwrap();
        assert_eq!(db.status().size, 0);
        let started = std::time::Instant::now();
        let err = db.query("SELECT 1", &[], Retry::Once).await.unwrap_err();
        assert!(matches!(err, DbError::Unavailable(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
