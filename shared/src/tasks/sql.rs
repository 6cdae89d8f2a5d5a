//! One SQL statement per route, every one keyed by the authenticated user.
//!
//! Isolation lives here: each statement filters `tasks` by `user_id = <token sub>`, so another
//! user's task is simply "no row" and the handler answers 404 without ever seeing it.
//!
//! The just-in-time `users` row rides in the same statement as the write (a data-modifying CTE),
//! so every route costs exactly one round trip and a failed write leaves no partial rows: the
//! create upserts the author; the other writes refresh the stored email only when they changed a
//! task (`EXISTS (SELECT 1 FROM task)`).
//!
//! # Writes: request key, precondition, change position and outcome in one call
//!
//! The four writes are one PL/pgSQL function, `tasks_write_v2` (`migrations/V7__change_feed.sql`),
//! called once per request: PostgreSQL keeps its plans per server connection instead of parsing
//! and planning a long statement on every request, and the mechanism every write shares is
//! written once, with only the task step depending on the operation:
//!
//! - the request key's record, if there is one, is the answer and nothing is written (`written`
//!   when this very request made it — a resend —, `replayed` for the same request made earlier,
//!   `key_reused` for another request); see [`crate::idempotency`] for why;
//! - update, toggle and delete lock the user's task, so the `If-Match` check, the write and the
//!   412's current ETag all see the same, newest version: of two writes sent with one ETag, one
//!   wins and the other gets 412 with the winner's ETag;
//! - the user's change position moves (under the user row's lock, held until commit: see
//!   [`super::changes`]), the task step runs, the key is recorded with the task as answered, and
//!   a few expired keys and the user's expired deletion records are purged, so retention needs
//!   no job of its own.
//!
//! Parameters: `$1` operation, `$2` task id, `$3` user id, `$4` email, `$5` key, `$6` request
//! hash, `$7` request id, `$8` key retention in seconds, `$9` the `If-Match` timestamps (NULL: no
//! condition), `$10`–`$12` the body's fields, `$13` deletion history retention in seconds. The
//! call returns at most one row, `(outcome, task columns…)`; no row means no such task for this
//! user (404).

use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::changes::{Change, ChangesQuery, ChangesRead};
use super::list::ListQuery;
use super::model::{Task, TaskInput};
use crate::auth::Identity;
use crate::db::{Database, DbError, Param};
use crate::idempotency::RequestKey;

const WRITE: &str =
    "SELECT * FROM tasks_write_v2($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// The reads are PL/pgSQL functions too (`migrations/V6__read_functions.sql`), for their cached
/// plans; they return the task columns in `task_from_row` order.
const GET: &str = "SELECT * FROM tasks_get_v1($1, $2)";
const LIST: &str = "SELECT * FROM tasks_list_v1($1, $2, $3, $4, $5)";
/// One page of changes and the user's positions, in one snapshot (`migrations/V7__change_feed.sql`).
const CHANGES: &str = "SELECT * FROM tasks_changes_v1($1, $2, $3, $4)";

/// The parameters' names, `$1` first, for the log when the database refuses one (a validation
/// rule is missing then: see `DbError::Rejected`).
const WRITE_PARAMS: &[&str] = &[
    "operation",
    "task id",
    "sub",
    "email",
    "Idempotency-Key",
    "request hash",
    "request id",
    "retention",
    "If-Match",
    "title",
    "description",
    "is_completed",
    "history retention",
];
const GET_PARAMS: &[&str] = &["task id", "sub"];
const LIST_PARAMS: &[&str] = &["sub", "status", "cursor", "cursor", "limit"];
const CHANGES_PARAMS: &[&str] = &["sub", "since", "since", "limit"];

/// Health probe: a statement that needs a live connection and nothing else.
const PING: &str = "SELECT 1";

/// What a write statement answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// Written by this request (possibly found committed after its connection broke).
    Written(T),
    /// The same request, made earlier with this `Idempotency-Key`: its answer again.
    Replayed(T),
    /// This `Idempotency-Key` was used for a different request: nothing written.
    KeyReused,
    /// `If-Match` named none of the task's current tag: nothing written.
    PreconditionFailed { updated_at: OffsetDateTime },
    /// No such task for this user.
    NotFound,
}

fn task_from_row(row: &Row, first: usize) -> Result<Task, tokio_postgres::Error> {
    Ok(Task {
        id: row.try_get(first)?,
        user_id: row.try_get(first + 1)?,
        title: row.try_get(first + 2)?,
        description: row.try_get(first + 3)?,
        is_completed: row.try_get(first + 4)?,
        created_at: row.try_get(first + 5)?,
        updated_at: row.try_get(first + 6)?,
    })
}

fn one_task(rows: Vec<Row>) -> Result<Option<Task>, DbError> {
    rows.first()
        .map(|row| task_from_row(row, 0))
        .transpose()
        .map_err(DbError::Decode)
}

/// Which write `tasks_write_v2` performs (its `$1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Create,
    Update,
    Toggle,
    Delete,
}

impl Operation {
    fn as_sql(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Toggle => "toggle",
            Self::Delete => "delete",
        }
    }
}

/// A write addressed by task id: who, which task, under which key, and the `If-Match`
/// timestamps (`None`: no condition).
pub struct ById<'a> {
    pub who: &'a Identity,
    pub id: Uuid,
    pub key: RequestKey,
    pub if_match: Option<Vec<OffsetDateTime>>,
}

/// Runs one write and reads its outcome row; `answer` decodes what a success returns.
///
/// A unique violation means a concurrent copy of this write (same key) committed while this one
/// ran: the call is run once more, and now finds the winner's record. If that copy is still in
/// the way, the conflict is the caller's answer (409).
async fn write<T>(
    db: &Database,
    (operation, id, who, key, if_match): Target<'_>,
    input: Option<&TaskInput>,
    history_seconds: f64,
    answer: impl Fn(&Row) -> Result<T, tokio_postgres::Error>,
) -> Result<Outcome<T>, DbError> {
    let operation = operation.as_sql();
    let retention = key.retention_seconds();
    // On the heap: the write's future stays as small as before (the Lambda handler and the
    // tests poll it on a thread's stack, which a debug build fills quickly).
    let title = input.map(|i| &i.title);
    let description = input.and_then(|i| i.description.as_ref());
    let is_completed = input.and_then(|i| i.is_completed);
    let params: Vec<Param> = vec![
        (&operation, Type::TEXT),
        (id, Type::UUID),
        (&who.user_id, Type::TEXT),
        (&who.email, Type::TEXT),
        (&key.key, Type::TEXT),
        (&key.request_hash, Type::BYTEA),
        (&key.request_id, Type::UUID),
        (&retention, Type::FLOAT8),
        (if_match, Type::TIMESTAMPTZ_ARRAY),
        (&title, Type::VARCHAR),
        (&description, Type::TEXT),
        (&is_completed, Type::BOOL),
        (&history_seconds, Type::FLOAT8),
    ];
    let rows = db
        .write(WRITE, &params)
        .await
        .map_err(|error| error.naming(WRITE_PARAMS))?;
    let Some(row) = rows.first() else {
        return Ok(Outcome::NotFound);
    };
    let outcome: &str = row.try_get(0).map_err(DbError::Decode)?;
    let decoded = |row| answer(row).map_err(DbError::Decode);
    Ok(match outcome {
        "written" => Outcome::Written(decoded(row)?),
        "replayed" => Outcome::Replayed(decoded(row)?),
        "key_reused" => Outcome::KeyReused,
        "precondition_failed" => Outcome::PreconditionFailed {
            updated_at: row.try_get(7).map_err(DbError::Decode)?,
        },
        other => return Err(DbError::UnexpectedOutcome(other.to_owned())),
    })
}

fn task_answer(row: &Row) -> Result<Task, tokio_postgres::Error> {
    task_from_row(row, 1)
}

/// Creates a task; `history_seconds` is `CHANGES_RETENTION_SECONDS`, for the purge every write
/// makes (so are the other writes').
pub async fn create(
    db: &Database,
    who: &Identity,
    input: &TaskInput,
    key: &RequestKey,
    history_seconds: f64,
) -> Result<Outcome<Task>, DbError> {
    let id = Uuid::now_v7();
    let target = (Operation::Create, &id, who, key, &None);
    write(db, target, Some(input), history_seconds, task_answer).await
}

pub async fn update(
    db: &Database,
    target: &ById<'_>,
    input: &TaskInput,
    history_seconds: f64,
) -> Result<Outcome<Task>, DbError> {
    let by_id = by_id(Operation::Update, target);
    write(db, by_id, Some(input), history_seconds, task_answer).await
}

pub async fn toggle(
    db: &Database,
    target: &ById<'_>,
    history_seconds: f64,
) -> Result<Outcome<Task>, DbError> {
    let by_id = by_id(Operation::Toggle, target);
    write(db, by_id, None, history_seconds, task_answer).await
}

pub async fn delete(
    db: &Database,
    target: &ById<'_>,
    history_seconds: f64,
) -> Result<Outcome<()>, DbError> {
    let by_id = by_id(Operation::Delete, target);
    write(db, by_id, None, history_seconds, |_| Ok(())).await
}

/// What every write names: operation, task id, author, request key, `If-Match` timestamps.
type Target<'a> = (
    Operation,
    &'a Uuid,
    &'a Identity,
    &'a RequestKey,
    &'a Option<Vec<OffsetDateTime>>,
);

fn by_id<'a>(operation: Operation, target: &'a ById<'_>) -> Target<'a> {
    (
        operation,
        &target.id,
        target.who,
        &target.key,
        &target.if_match,
    )
}

pub async fn get(db: &Database, who: &Identity, id: Uuid) -> Result<Option<Task>, DbError> {
    let rows = db
        .query(GET, &[(&id, Type::UUID), (&who.user_id, Type::TEXT)])
        .await
        .map_err(|error| error.naming(GET_PARAMS))?;
    one_task(rows)
}

/// Up to `query.limit + 1` tasks: the extra row only tells whether another page exists.
pub async fn list(db: &Database, who: &Identity, query: &ListQuery) -> Result<Vec<Task>, DbError> {
    let status = query.status.is_completed();
    let after_created_at = query.after.map(|c| c.created_at);
    let after_id = query.after.map(|c| c.id);
    let fetch = query.limit + 1;
    let rows = db
        .query(
            LIST,
            &[
                (&who.user_id, Type::TEXT),
                (&status, Type::BOOL),
                (&after_created_at, Type::TIMESTAMPTZ),
                (&after_id, Type::UUID),
                (&fetch, Type::INT8),
            ],
        )
        .await
        .map_err(|error| error.naming(LIST_PARAMS))?;
    rows.iter()
        .map(|row| task_from_row(row, 0))
        .collect::<Result<_, _>>()
        .map_err(DbError::Decode)
}

/// One page read: the user's positions and up to `query.limit + 1` changes after the token's
/// position, all from one snapshot (see [`super::changes`]).
pub async fn changes(
    db: &Database,
    who: &Identity,
    query: &ChangesQuery,
) -> Result<ChangesRead, DbError> {
    let since = query.since.map_or(0, |token| token.position);
    let started = query.since.map(|token| token.started);
    let fetch = query.limit + 1;
    let rows = db
        .query(
            CHANGES,
            &[
                (&who.user_id, Type::TEXT),
                (&since, Type::INT8),
                (&started, Type::INT8),
                (&fetch, Type::INT8),
            ],
        )
        .await
        .map_err(|error| error.naming(CHANGES_PARAMS))?;
    changes_read(&rows, started, fetch).map_err(DbError::Decode)
}

/// The page read's rows in any order: the header (`'position'`: counter, start, purge mark; none
/// for a user who never wrote), and up to `fetch` tasks and up to `fetch` deletions, each with
/// its position and, from the fifth column, the task (only the id for a delete). The two sides
/// are merged by position and the first `fetch` kept.
fn changes_read(
    rows: &[Row],
    started: Option<i64>,
    fetch: i64,
) -> Result<ChangesRead, tokio_postgres::Error> {
    let mut read = ChangesRead {
        latest: 0,
        started: started.unwrap_or(0),
        purged_through: 0,
        changes: Vec::with_capacity(rows.len()),
    };
    for row in rows {
        let kind: &str = row.try_get(0)?;
        let change = match kind {
            "position" => {
                read.latest = row.try_get(1)?;
                read.started = row.try_get(2)?;
                read.purged_through = row.try_get(3)?;
                continue;
            }
            "delete" => Change::Delete {
                id: row.try_get(4)?,
            },
            _ => Change::Upsert {
                task: task_from_row(row, 4)?,
            },
        };
        read.changes.push((row.try_get(1)?, change));
    }
    read.changes.sort_by_key(|(position, _)| *position);
    read.changes
        .truncate(usize::try_from(fetch).unwrap_or(usize::MAX));
    Ok(read)
}

pub async fn ping(db: &Database) -> Result<(), DbError> {
    db.query(PING, &[]).await.map(drop)
}
