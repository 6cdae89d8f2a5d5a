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
//! # Writes: request key, precondition and outcome in the same statement
//!
//! The four writes are PL/pgSQL functions (`migrations/V5__write_functions.sql`), each one
//! statement run by one short call: PostgreSQL keeps their plans per server connection instead
//! of parsing and planning a long statement on every request. Every write is wrapped the same
//! way (see [`crate::idempotency`] for why):
//!
//! - `prior` reads the request key's record; if there is one, nothing is written and the record
//!   is the answer (`written` when this very request made it — a resend —, `replayed` for the
//!   same request made earlier, `key_reused` for another request);
//! - `current` (update, toggle, delete) locks the user's task, so the `If-Match` check, the write
//!   and the 412's current ETag all see the same, newest version: of two writes sent with one
//!   ETag, one wins and the other gets 412 with the winner's ETag;
//! - `task` is the write itself, `recorded` stores the key with the task as answered, and
//!   `purged` deletes a few expired keys, so retention needs no job of its own.
//!
//! Parameters shared by every write: `$1` task id, `$2` user id, `$3` email, `$4` key, `$5`
//! request hash, `$6` request id, `$7` retention in seconds; `$8` the `If-Match` timestamps
//! (NULL: no condition) for the writes by id. The statement returns at most one row,
//! `(outcome, task columns…)`; no row means no such task for this user (404).

use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::list::ListQuery;
use super::model::{Task, TaskInput};
use crate::auth::Identity;
use crate::db::{Database, DbError, Param};
use crate::idempotency::RequestKey;

const CREATE: &str = "SELECT * FROM tasks_create_v1($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const UPDATE: &str = "SELECT * FROM tasks_update_v1($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
const TOGGLE: &str = "SELECT * FROM tasks_toggle_v1($1, $2, $3, $4, $5, $6, $7, $8)";
const DELETE: &str = "SELECT * FROM tasks_delete_v1($1, $2, $3, $4, $5, $6, $7, $8)";

/// The reads are PL/pgSQL functions too (`migrations/V6__read_functions.sql`), for their cached
/// plans; they return the task columns in `task_from_row` order.
const GET: &str = "SELECT * FROM tasks_get_v1($1, $2)";
const LIST: &str = "SELECT * FROM tasks_list_v1($1, $2, $3, $4, $5)";

/// The parameters' names, `$1` first (a write's own after the shared `WRITE_PARAMS`), for the log when the database refuses one (a validation
/// rule is missing then: see `DbError::Rejected`).
const WRITE_PARAMS: &[&str] = &[
    "task id",
    "sub",
    "email",
    "Idempotency-Key",
    "request hash",
    "request id",
    "retention",
];
const CREATE_PARAMS: &[&str] = &["title", "description"];
const UPDATE_PARAMS: &[&str] = &["If-Match", "title", "description", "is_completed"];
const BY_ID_PARAMS: &[&str] = &["If-Match"];
const GET_PARAMS: &[&str] = &["task id", "sub"];
const LIST_PARAMS: &[&str] = &["sub", "status", "cursor", "cursor", "limit"];

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

/// Runs a write statement and reads its outcome row; `answer` decodes what a success returns.
///
/// A unique violation means a concurrent copy of this write (same key) committed while this one
/// ran: the statement is run once more, and now finds the winner's record. If that copy is
/// still in the way, the conflict is the caller's answer (409).
async fn write<T>(
    db: &Database,
    (sql, own_names): (&str, &[&'static str]),
    params: &[Param<'_>],
    answer: impl Fn(&Row) -> Result<T, tokio_postgres::Error>,
) -> Result<Outcome<T>, DbError> {
    let rows = match db.query(sql, params).await {
        Err(DbError::Conflict) => db.query(sql, params).await,
        other => other,
    }
    .map_err(|error| error.naming(&[WRITE_PARAMS, own_names].concat()))?;
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

/// `$1`–`$7`, the parameters every write shares (see the module docs).
fn shared_params<'a>(
    id: &'a Uuid,
    who: &'a Identity,
    key: &'a RequestKey,
    retention: &'a f64,
) -> Vec<Param<'a>> {
    vec![
        (id, Type::UUID),
        (&who.user_id, Type::TEXT),
        (&who.email, Type::TEXT),
        (&key.key, Type::TEXT),
        (&key.request_hash, Type::BYTEA),
        (&key.request_id, Type::UUID),
        (retention, Type::FLOAT8),
    ]
}

fn task_answer(row: &Row) -> Result<Task, tokio_postgres::Error> {
    task_from_row(row, 1)
}

pub async fn create(
    db: &Database,
    who: &Identity,
    input: &TaskInput,
    key: &RequestKey,
) -> Result<Outcome<Task>, DbError> {
    let id = Uuid::now_v7();
    let retention = key.retention_seconds();
    let mut params = shared_params(&id, who, key, &retention);
    params.extend::<[Param; 2]>([
        (&input.title, Type::VARCHAR),
        (&input.description, Type::TEXT),
    ]);
    write(db, (CREATE, CREATE_PARAMS), &params, task_answer).await
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

/// A write addressed by task id: who, which task, under which key, and the `If-Match`
/// timestamps (`None`: no condition).
pub struct ById<'a> {
    pub who: &'a Identity,
    pub id: Uuid,
    pub key: RequestKey,
    pub if_match: Option<Vec<OffsetDateTime>>,
}

pub async fn update(
    db: &Database,
    target: &ById<'_>,
    input: &TaskInput,
) -> Result<Outcome<Task>, DbError> {
    let retention = target.key.retention_seconds();
    let mut params = shared_params(&target.id, target.who, &target.key, &retention);
    params.extend::<[Param; 4]>([
        (&target.if_match, Type::TIMESTAMPTZ_ARRAY),
        (&input.title, Type::VARCHAR),
        (&input.description, Type::TEXT),
        (&input.is_completed, Type::BOOL),
    ]);
    write(db, (UPDATE, UPDATE_PARAMS), &params, task_answer).await
}

pub async fn toggle(db: &Database, target: &ById<'_>) -> Result<Outcome<Task>, DbError> {
    by_id(db, TOGGLE, target, task_answer).await
}

pub async fn delete(db: &Database, target: &ById<'_>) -> Result<Outcome<()>, DbError> {
    by_id(db, DELETE, target, |_| Ok(())).await
}

/// A write whose only parameters are the shared ones and `If-Match`.
async fn by_id<T>(
    db: &Database,
    sql: &str,
    target: &ById<'_>,
    answer: impl Fn(&Row) -> Result<T, tokio_postgres::Error>,
) -> Result<Outcome<T>, DbError> {
    let retention = target.key.retention_seconds();
    let mut params = shared_params(&target.id, target.who, &target.key, &retention);
    params.push((&target.if_match, Type::TIMESTAMPTZ_ARRAY));
    write(db, (sql, BY_ID_PARAMS), &params, answer).await
}

pub async fn ping(db: &Database) -> Result<(), DbError> {
    db.query(PING, &[]).await.map(drop)
}
