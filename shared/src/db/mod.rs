//! The database connection: pool, TLS, deadlines, broken connections. The only module that
//! talks to deadpool.
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
//! # Every statement may be sent twice
//!
//! [`Database::query`] resends a statement on a fresh connection whenever its connection broke
//! (reset, closed, terminated by the server) and the deadline allows, whether or not the first
//! copy reached the database. That is safe because every statement is: reads trivially, and
//! every write carries its request key (see [`crate::idempotency`]), so a second copy finds the
//! first one's record, or waits for it, instead of writing again. This one rule covers the idle
//! connection that resets on use, the connection killed under a statement, and the answer lost
//! after a write was delivered.
//!
//! # Silent connections
//!
//! A connection can go silent — bytes stop both ways, the socket stays open — and TCP will not
//! notice for minutes: a NAT or pooler that forgot the flow while it was idle (a Lambda instance
//! frozen between invocations), or, in the middle of a statement, a proxy failing over or a
//! half-dead pooler link. So **every** statement must answer within [`STALL_TIMEOUT`], a timer
//! on the statement already in flight (no extra round trip). Otherwise its connection is
//! presumed dead: the statement is cancelled in the background (in case it did arrive) and the
//! connection closed; the pool drops its long-idle connections (idle ≥ [`IDLE_SUSPECT_AFTER`]);
//! and the statement is resent on a **fresh** connection, never on another pooled one, which the
//! same event may have silenced too (a Lambda instance's pool has just the one).
//!
//! 500 ms: a live statement answers here in about a millisecond (on Neon in the same region, a
//! few; the slowest request of a fully loaded local server, queueing included, ~70 ms: see
//! BENCHMARKS.md "Load"), so a live one rarely reaches it, while a silent one costs 0.5 s plus
//! a connect, far inside the 3 s deadline. Copies are bounded: behind the stalled statement's
//! cancel goes a probe (`SELECT 1`); if it answers, the connection was alive and the database is
//! slow (a row lock, a busy server), and no further copy is resent on a stall — the resend waits
//! for its answer until the deadline: a slow but live statement costs one extra copy, never a
//! storm. While stalled connections stay silent, up to [`MAX_STALL_RESENDS`] copies go out,
//! 500 ms apart at most. A resend never waits on a stalled copy's locks past the deadline: that
//! copy is cancelled as the resend goes out (a write that committed is found by its key), and
//! the resend itself is cancelled at the deadline like any statement. Keeping an idle
//! connection instead of reconnecting after every pause costs nothing when it is alive; a full
//! connect (TLS and SCRAM to Neon) on every request after a pause of a few seconds — the
//! everyday case of a serverless API — would cost more than the rare stall: see BENCHMARKS.md
//! "Reconnect".
//!
//! Nothing keeps a transaction open across round trips (each statement is its own implicit
//! transaction, which ends with its statement even when the client has vanished), so an
//! abandoned copy holds its locks only until it finishes or its cancel arrives; the database's
//! `statement_timeout` (`migrations/V3__server_timeouts.sql`) bounds a copy whose cancel was lost.
//!
//! # Deadlines and abandoned statements
//!
//! One deadline (`DATABASE_TIMEOUT_MS`) covers checkout, connect, the statement and its resends.
//! When it passes, a PostgreSQL cancel request is sent and the statement gets a short grace
//! period to answer: a confirmed cancel (`query_canceled`) means it will never commit, so the
//! 503 is safe; a late success is returned as a success. If neither arrives, the connection is
//! detached from the pool and closed, never reused: otherwise a statement queued in PgBouncer
//! or in the driver could still run after the client was told 503. A new request whose first
//! connect fails gets its 503 at once; once a statement was sent, connecting is retried until
//! the deadline, because its outcome is not known yet.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Manager as _, Metrics, RecycleResult};
use rustls::RootCertStore;
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};
use tokio_postgres::config::{SslMode, SslNegotiation};
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

/// Idle this long, a connection may have been dropped silently: after a stall, the pool drops
/// such connections rather than try them one by one.
pub const IDLE_SUSPECT_AFTER: Duration = Duration::from_secs(1);

/// How long any statement may go without an answer before its connection is presumed silent
/// (see the module docs for why 500 ms).
pub const STALL_TIMEOUT: Duration = Duration::from_millis(500);

/// Resends of one statement after a stall: three silent connections in one request are
/// served, a fourth copy waits for its answer until the deadline. Once a stalled connection
/// answers its probe, the database is slow, not the network, and no copy is resent on a stall
/// any more: a slow but live statement costs one extra copy.
pub const MAX_STALL_RESENDS: u32 = 3;

/// How long a resend may take to connect before the attempt is given up and another made (the
/// same event may silence a connection being opened): a connect takes ~5 ms here, 15–50 ms to
/// Neon with TLS and SCRAM.
const RESEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends of one statement, besides the deadline: a database that resets every connection
/// is not hammered.
const MAX_ATTEMPTS: u32 = 6;

/// What asks a stalled connection whether it is alive.
const PROBE: &str = "SELECT 1";

/// A statement parameter and its PostgreSQL type (`query_typed` needs both).
pub type Param<'a> = (&'a (dyn ToSql + Sync), Type);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be reached or did not answer in time: 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique constraint fired: another copy of the same write (same request key, or the same
    /// create resent) committed first. [`Database::write`] runs the statement again to read its
    /// outcome.
    #[error("conflicting concurrent write")]
    Conflict,
    /// The database rejected the statement: a bug, 500.
    #[error("statement failed: {0}")]
    Statement(tokio_postgres::Error),
    /// The database refused a value (a data exception, or a constraint other than a key
    /// conflict): a validation rule is missing, 500. Names the parameter and never the value
    /// (PostgreSQL's message and detail may quote it, so they are not kept).
    #[error(
        "the database rejected the input (SQLSTATE {sqlstate}): {}",
        field.map_or_else(|| describe_position(*parameter, constraint.as_deref()), |f| format!("field {f}"))
    )]
    Rejected {
        sqlstate: String,
        /// 1-based, when PostgreSQL said which parameter.
        parameter: Option<usize>,
        constraint: Option<String>,
        /// The parameter's name, once the statement's author supplied the names.
        field: Option<&'static str>,
    },
    #[error("unexpected row shape: {0}")]
    Decode(tokio_postgres::Error),
    #[error("write statement answered {0:?}")]
    UnexpectedOutcome(String),
}

fn describe_position(parameter: Option<usize>, constraint: Option<&str>) -> String {
    match (parameter, constraint) {
        (Some(n), _) => format!("parameter ${n}"),
        (None, Some(constraint)) => format!("constraint {constraint}"),
        (None, None) => "no parameter named".to_owned(),
    }
}

impl DbError {
    /// Names the parameter a [`DbError::Rejected`] refers to: `names[i]` is `$(i+1)`.
    pub fn naming(self, names: &[&'static str]) -> Self {
        match self {
            Self::Rejected {
                sqlstate,
                parameter,
                constraint,
                field: None,
            } => Self::Rejected {
                field: parameter.and_then(|n| names.get(n.checked_sub(1)?).copied()),
                sqlstate,
                parameter,
                constraint,
            },
            other => other,
        }
    }

    /// A data exception (class 22) or a constraint (class 23, key conflicts aside) refused one
    /// of the statement's values.
    fn rejected(error: &tokio_postgres::Error) -> Option<Self> {
        let db = error.as_db_error()?;
        let sqlstate = db.code().code();
        if !(sqlstate.starts_with("22") || sqlstate.starts_with("23")) {
            return None;
        }
        // "unnamed portal parameter $4 = '…'": only the number is kept.
        let parameter = db.where_().and_then(|context| {
            let (_, after) = context.split_once("parameter $")?;
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        });
        Some(Self::Rejected {
            sqlstate: sqlstate.to_owned(),
            parameter,
            constraint: db.constraint().map(str::to_owned),
            field: None,
        })
    }
}

#[derive(Clone)]
enum Tls {
    Disabled,
    Verified(MakeRustlsConnect),
}

impl Tls {
    fn connector(&self) -> Option<&MakeRustlsConnect> {
        match self {
            Self::Disabled => None,
            Self::Verified(tls) => Some(tls),
        }
    }
}

/// A pooled connection and how long it sat idle before this checkout.
pub struct Connection {
    client: deadpool_postgres::ClientWrapper,
    idle: Duration,
}

/// deadpool-postgres' manager, plus the idle time of each checkout (deadpool's metrics only
/// know it before they are updated, that is inside `recycle`).
struct Connections(deadpool_postgres::Manager);

impl managed::Manager for Connections {
    type Type = Connection;
    type Error = tokio_postgres::Error;

    async fn create(&self) -> Result<Connection, tokio_postgres::Error> {
        Ok(Connection {
            client: self.0.create().await?,
            idle: Duration::ZERO,
        })
    }

    async fn recycle(
        &self,
        connection: &mut Connection,
        metrics: &Metrics,
    ) -> RecycleResult<tokio_postgres::Error> {
        self.0.recycle(&mut connection.client, metrics).await?;
        connection.idle = metrics.last_used();
        Ok(())
    }

    fn detach(&self, connection: &mut Connection) {
        self.0.detach(&mut connection.client);
    }
}

type Pool = managed::Pool<Connections>;
type Object = managed::Object<Connections>;

pub struct Database {
    pool: Pool,
    tls: Tls,
    cancel_target: Option<cancel::CancelTarget>,
    timeout: Duration,
}

/// How one send of a statement ended.
enum Attempt {
    Finished(Result<Vec<Row>, tokio_postgres::Error>),
    /// No answer within [`STALL_TIMEOUT`]: the connection is presumed silent.
    Stalled,
    /// Past the deadline, neither finished nor confirmed cancelled: nothing is known.
    Abandoned,
}

/// What the stalls of one statement have shown so far.
#[derive(Default)]
struct StallWatch {
    /// Fires if the last stalled connection answers its probe; dropped if it stays silent.
    last_stalled_was_alive: Option<oneshot::Receiver<()>>,
    /// A stalled connection proved alive: statements are slow, connections are not silent.
    database_is_slow: bool,
}

/// The connection a statement is sent on.
enum Lease {
    /// Returns to the pool when dropped.
    Pooled(Object),
    /// Opened for a resend when the pool could not give a fresh one: closed when dropped.
    Unpooled(Connection),
}

impl Lease {
    fn connection(&self) -> &Connection {
        match self {
            Self::Pooled(object) => object,
            Self::Unpooled(connection) => connection,
        }
    }

    /// Takes the connection out of the pool for good (it is broken, or silent).
    fn discard(self) -> Connection {
        match self {
            Self::Pooled(object) => Object::take(object),
            Self::Unpooled(connection) => connection,
        }
    }
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
        let manager_config = deadpool_postgres::ManagerConfig {
            // `Fast` checks only that the connection is open: no extra round trip per request.
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Tls::Disabled => deadpool_postgres::Manager::from_config(pg, NoTls, manager_config),
            Tls::Verified(tls) => {
                deadpool_postgres::Manager::from_config(pg, tls.clone(), manager_config)
            }
        };
        let pool = Pool::builder(Connections(manager))
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

    /// Runs one statement within the request deadline, resending it on a fresh connection when
    /// its connection broke or went silent. The statement must be safe to send twice (see the
    /// module docs).
    pub async fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, DbError> {
        let started = Instant::now();
        let result = self.query_until(sql, params, started + self.timeout).await;
        crate::telemetry::add_db_time(started.elapsed());
        result
    }

    /// [`Database::query`] for a write whose unique violation means "a concurrent copy of this
    /// very write committed first" ([`DbError::Conflict`]): the statement runs once more to read
    /// that copy's outcome, within the same deadline (so the request's 503 still comes within
    /// the contract's 5 s).
    pub async fn write(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, DbError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let result = match self.query_until(sql, params, deadline).await {
            Err(DbError::Conflict) => self.query_until(sql, params, deadline).await,
            other => other,
        };
        crate::telemetry::add_db_time(started.elapsed());
        result
    }

    async fn query_until(
        &self,
        sql: &str,
        params: &[Param<'_>],
        deadline: Instant,
    ) -> Result<Vec<Row>, DbError> {
        let mut stalled = Vec::new();
        let result = self.send_until(sql, params, deadline, &mut stalled).await;
        if matches!(result, Err(DbError::Unavailable(_))) {
            // A 503 promises that nothing runs later: a stalled copy whose cancel request has
            // not gone through yet is closed now, so that nothing held on its way (in a proxy,
            // or queued in PgBouncer) can reach the database after the answer
            // (`tests/outage.rs`, `a_write_answered_503_never_runs_later`).
            for close in stalled {
                let _ = close.send(());
            }
        }
        result
    }

    /// [`Self::query_until`]'s sends; `stalled` collects a handle per stalled copy that
    /// closes its connection at once.
    async fn send_until(
        &self,
        sql: &str,
        params: &[Param<'_>],
        deadline: Instant,
        stalled: &mut Vec<oneshot::Sender<()>>,
    ) -> Result<Vec<Row>, DbError> {
        let mut lease = Lease::Pooled(self.checkout(deadline).await?);
        let mut sends = 0;
        // Sends and failed connects since the statement was first sent, for the back-off.
        let mut failures = 0;
        let mut stalls = 0;
        let mut watch = StallWatch::default();
        loop {
            sends += 1;
            let stall_at = (stalls < MAX_STALL_RESENDS && !watch.database_is_slow)
                .then(|| Instant::now() + STALL_TIMEOUT)
                .filter(|at| *at < deadline);
            let attempt = self
                .run(
                    lease.connection(),
                    (sql, params),
                    (stall_at, &mut watch),
                    deadline,
                )
                .await;
            let mut failure = match attempt {
                Attempt::Finished(Ok(rows)) => return Ok(rows),
                Attempt::Finished(Err(error)) => {
                    if error.code() == Some(&SqlState::QUERY_CANCELED) {
                        return Err(DbError::Unavailable(describe(&error)));
                    }
                    if error.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                        return Err(DbError::Conflict);
                    }
                    if let Some(rejected) = DbError::rejected(&error) {
                        return Err(rejected);
                    }
                    if !connection_is_broken(&error) {
                        return Err(DbError::Statement(error));
                    }
                    drop(lease.discard());
                    describe(&error)
                }
                Attempt::Stalled => {
                    stalls += 1;
                    // A long-idle connection has had every chance to be forgotten by the same
                    // NAT or pooler; recently used ones answer for themselves (their own timer).
                    self.pool
                        .retain(|_, metrics| metrics.last_used() < IDLE_SUSPECT_AFTER);
                    let connection = lease.discard();
                    let failure = format!(
                        "no answer within {STALL_TIMEOUT:?} (after {:?} idle)",
                        connection.idle
                    );
                    let (alive, close) = self.cancel_probe_then_close(connection);
                    watch.last_stalled_was_alive = Some(alive);
                    stalled.push(close);
                    failure
                }
                Attempt::Abandoned => {
                    // Close it so nothing queued on it (in the driver, or in PgBouncer's queue)
                    // can run later.
                    drop(lease.discard());
                    return Err(DbError::Unavailable("statement timed out".into()));
                }
            };
            // A copy was sent and its connection is gone: keep trying to learn its outcome.
            lease = loop {
                failures += 1;
                if sends >= MAX_ATTEMPTS || !self.pause_before_resend(failures, deadline).await {
                    return Err(DbError::Unavailable(failure));
                }
                let connect_by = deadline.min(Instant::now() + RESEND_CONNECT_TIMEOUT);
                match self.fresh_connection(connect_by).await {
                    Ok(lease) => break lease,
                    Err(error) => failure = error.to_string(),
                }
            };
            tracing::info!(cause = %failure, send = sends + 1, "connection lost; resending on a fresh one");
        }
    }

    /// Whether to try again after `failures` sends or connects that failed: the first resend
    /// goes at once (the old connection is simply gone), later ones back off while the
    /// database restarts.
    async fn pause_before_resend(&self, failures: u32, deadline: Instant) -> bool {
        let pause = match failures {
            0 | 1 => Duration::ZERO,
            n => Duration::from_millis(50 << (n - 2).min(3)),
        };
        let resume = Instant::now() + pause;
        if resume >= deadline {
            return false;
        }
        tokio::time::sleep_until(resume).await;
        true
    }

    /// A connection opened for a resend, never one that was idle in the pool (the event that
    /// silenced or broke the last one may have hit those too). It joins the pool when the pool
    /// has room and nothing idle to offer instead (always, on a Lambda instance's pool of one);
    /// otherwise it is used once and closed.
    async fn fresh_connection(&self, deadline: Instant) -> Result<Lease, DbError> {
        let status = self.pool.status();
        if status.size < status.max_size && status.available == 0 {
            let object = self.checkout(deadline).await?;
            // Recycled means it came from the idle list after all (returned meanwhile).
            if Object::metrics(&object).recycle_count == 0 {
                return Ok(Lease::Pooled(object));
            }
        }
        match timeout_at(deadline, self.pool.manager().create()).await {
            Ok(Ok(connection)) => Ok(Lease::Unpooled(connection)),
            Ok(Err(error)) => Err(DbError::Unavailable(describe(&error))),
            Err(_elapsed) => Err(DbError::Unavailable("connect timed out".into())),
        }
    }

    /// Sends the statement and waits for its answer: until `stall_at` if given (then
    /// [`Attempt::Stalled`], unless the stalled connection before this one proves alive: then
    /// the database is slow, and this copy waits on), else until `deadline`. Past the deadline, sends a cancel
    /// request and gives the statement [`CANCEL_GRACE`] to settle: it then either finished after
    /// all (its result is returned, so a write that committed is reported as done) or failed
    /// with `query_canceled`.
    async fn run(
        &self,
        connection: &Connection,
        (sql, params): (&str, &[Param<'_>]),
        (stall_at, watch): (Option<Instant>, &mut StallWatch),
        deadline: Instant,
    ) -> Attempt {
        let client = &connection.client;
        let mut statement = std::pin::pin!(client.query_typed(sql, params));
        if let Some(stall_at) = stall_at {
            if let Ok(result) = timeout_at(stall_at, &mut statement).await {
                return Attempt::Finished(result);
            }
            // The last stalled connection's probe has had as long as this copy: its verdict
            // is due (it comes within STALL_TIMEOUT of the stall).
            if let Some(alive) = watch.last_stalled_was_alive.take() {
                tokio::select! {
                    result = &mut statement => return Attempt::Finished(result),
                    verdict = alive => watch.database_is_slow = verdict.is_ok(),
                }
            }
            if !watch.database_is_slow {
                return Attempt::Stalled;
            }
        }
        if let Ok(result) = timeout_at(deadline, &mut statement).await {
            return Attempt::Finished(result);
        }
        let token = client.cancel_token();
        let settle = async {
            self.cancel(&token).await;
            (&mut statement).await
        };
        match tokio::time::timeout(CANCEL_GRACE, settle).await {
            Ok(result) => Attempt::Finished(result),
            Err(_) => Attempt::Abandoned,
        }
    }

    async fn cancel(&self, token: &tokio_postgres::CancelToken) {
        match &self.cancel_target {
            Some(target) => {
                if let Err(error) = cancel::cancel(token, target, self.tls.connector()).await {
                    tracing::warn!(%error, "cancel request failed");
                }
            }
            None => tracing::warn!("no TCP host to send a cancel request to"),
        }
    }

    /// A stalled statement may have arrived after all (slow, not silent): it is cancelled so that
    /// it cannot commit after this request has been answered, in the background, while the
    /// request is resent. Behind it, a probe (`SELECT 1`) tells whether the connection was
    /// alive: the returned receiver fires if it answers within [`STALL_TIMEOUT`], and is
    /// dropped otherwise (a round trip paid only after a stall).
    /// The connection stays open until the cancel request has been delivered: PgBouncer forgets
    /// a client once it closes, and then drops the client's cancel request, leaving the
    /// statement running (`tests/network_faults.rs`,
    /// `a_slow_statement_is_resent_once_and_applied_once`), unless the request is answered
    /// 503 first: then the second handle returned closes it at once (see [`Self::query_until`]).
    fn cancel_probe_then_close(
        &self,
        connection: Connection,
    ) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (alive, answered) = oneshot::channel();
        let (close, close_now) = oneshot::channel();
        let token = connection.client.cancel_token();
        let target = self.cancel_target.clone();
        let tls = self.tls.clone();
        tokio::spawn(async move {
            let probe = async {
                // Any answer from the server, even "canceled" (the cancel may hit the probe).
                let answer =
                    tokio::time::timeout(STALL_TIMEOUT, connection.client.query_typed(PROBE, &[]))
                        .await;
                if answer.is_ok_and(|answer| {
                    answer.map_or_else(|error| error.as_db_error().is_some(), |_| true)
                }) {
                    let _ = alive.send(());
                }
            };
            let cancel = async {
                let sent = match &target {
                    Some(target) => cancel::cancel(&token, target, tls.connector()).await,
                    None => Err("no TCP host to send a cancel request to".to_owned()),
                };
                if let Err(error) = sent {
                    tracing::info!(%error, "cancel request for a stalled connection did not go through");
                }
            };
            let settled = tokio::time::timeout(CANCEL_GRACE, async { tokio::join!(probe, cancel) });
            // A dropped handle (the request got its answer) leaves the cancel to finish.
            tokio::select! {
                _ = settled => {}
                Ok(()) = close_now => {}
            }
            drop(connection);
        });
        (answered, close)
    }

    async fn checkout(&self, deadline: Instant) -> Result<Object, DbError> {
        match timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(DbError::Unavailable(describe(&error))),
            Err(_elapsed) => Err(DbError::Unavailable("connect timed out".into())),
        }
    }

    /// On a cold instance, opens the pool's first connection; a no-op once one exists. Failures
    /// are left to the statement that follows, which reports them.
    pub async fn prewarm(&self) {
        let _left_to_the_statement = self.connect_if_cold().await;
    }

    /// [`Self::prewarm`], saying whether the connect failed. A request whose first connect
    /// failed answers 503 at once: connecting again would spend a second deadline, and the
    /// 503 would come after 2 × `DATABASE_TIMEOUT_MS` instead of within the contract's 5 s.
    pub async fn connect_if_cold(&self) -> Result<(), DbError> {
        if self.pool.status().size == 0 {
            let _returned_to_the_pool = self.checkout(Instant::now() + self.timeout).await?;
        }
        Ok(())
    }

    pub fn status(&self) -> deadpool::Status {
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
    // `sslnegotiation=direct`: the TLS handshake starts at once, without the SSLRequest round
    // trip (Neon's proxy, PostgreSQL 17+). tokio-postgres does the rest; the ALPN is ours.
    let direct = pg.get_ssl_negotiation() == SslNegotiation::Direct;
    let tls = match pg.get_ssl_mode() {
        SslMode::Require => Tls::Verified(MakeRustlsConnect::new(tls_config(ca_file, direct)?)),
        // As libpq: direct negotiation only with TLS required, never a plain-text fallback.
        _ if direct => {
            return Err(ConfigError::invalid(
                "DATABASE_URL",
                "sslnegotiation=direct needs sslmode=require (or verify-ca / verify-full)",
            ));
        }
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
/// `sslrootcert=<file>` names an extra trusted CA. The rest, `sslnegotiation=direct` included,
/// is tokio-postgres' own.
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

/// The ALPN protocol a direct TLS connection to PostgreSQL must offer: PostgreSQL 17+ refuses
/// direct TLS without it, and neither tokio-postgres nor tokio-postgres-rustls sets it.
const POSTGRESQL_ALPN: &[u8] = b"postgresql";

/// Verified TLS with the ring provider: Mozilla's roots (what Neon's certificates chain to)
/// plus an optional extra CA from a PEM file. `direct`: offer ALPN `postgresql`.
fn tls_config(extra_ca: Option<&str>, direct: bool) -> Result<rustls::ClientConfig, ConfigError> {
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
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::invalid("DATABASE_URL", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if direct {
        config.alpn_protocols = vec![POSTGRESQL_ALPN.to_vec()];
    }
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
    fn direct_negotiation_offers_the_postgresql_alpn() {
        let url = "postgres://u@db.example.com/x?sslmode=require&sslnegotiation=direct";
        let (pg, tls) = connection_setup(url, None, Duration::from_secs(1)).unwrap();
        assert_eq!(pg.get_ssl_negotiation(), SslNegotiation::Direct);
        assert!(matches!(tls, Tls::Verified(_)));
        assert_eq!(
            tls_config(None, true).unwrap().alpn_protocols,
            [b"postgresql"]
        );
        // The SSLRequest way (the default) offers no ALPN, as before.
        let (pg, _) = connection_setup(
            "postgres://u@h/x?sslmode=require",
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(pg.get_ssl_negotiation(), SslNegotiation::Postgres);
        assert!(tls_config(None, false).unwrap().alpn_protocols.is_empty());
    }

    #[test]
    fn direct_negotiation_requires_tls() {
        for query in [
            "sslnegotiation=direct",
            "sslnegotiation=direct&sslmode=disable",
        ] {
            let url = format!("postgres://u:hunter2@h/x?{query}");
            let Err(err) = connection_setup(&url, None, Duration::from_secs(1)) else {
                panic!("{query} must be refused");
            };
            let text = err.to_string();
            assert!(
                text.contains("DATABASE_URL") && text.contains("sslmode=require"),
                "{text}"
            );
            assert!(!text.contains("hunter2"), "{text}");
        }
        let verify_full = "postgres://u@h/x?sslmode=verify-full&sslnegotiation=direct";
        assert!(connection_setup(verify_full, None, Duration::from_secs(1)).is_ok());
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
        let err = db.query("SELECT 1", &[]).await.unwrap_err();
        assert!(matches!(err, DbError::Unavailable(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
