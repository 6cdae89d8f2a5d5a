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
//! Every write is wrapped the same way (see [`crate::idempotency`] for why):
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

/// The columns of a `Task`, in `task_from_row` order.
macro_rules! task_columns {
    () => {
        "id, user_id, title, description, is_completed, created_at, updated_at"
    };
}

/// For writes other than create: refresh the author's stored email (`$3`) only if the `task`
/// CTE changed a row, so a 404 leaves `users` untouched.
macro_rules! refresh_author_email {
    () => {
        "author AS (
    UPDATE users SET email = $3
    WHERE id = $2 AND $3 IS NOT NULL AND email IS DISTINCT FROM $3 AND EXISTS (SELECT 1 FROM task)
)"
    };
}

/// `updated_at` strictly increases on every write, even within one clock tick.
macro_rules! next_updated_at {
    () => {
        "updated_at = GREATEST(now(), updated_at + interval '1 microsecond')"
    };
}

/// The request key's record, if this user already used the key.
macro_rules! prior {
    () => {
        "prior AS (
    SELECT request_id, request_hash, task_id, title, description, is_completed, created_at, updated_at
    FROM idempotency_keys WHERE user_id = $2 AND key = $4
)"
    };
}

/// The user's task, locked, unless the key was already used; `$8` is not checked here, so that
/// a failed precondition can still report the current ETag.
macro_rules! current {
    () => {
        "current AS (
    SELECT id AS locked_id, updated_at AS locked_at FROM tasks
    WHERE id = $1 AND user_id = $2 AND NOT EXISTS (SELECT 1 FROM prior)
    FOR UPDATE
)"
    };
}

/// The `If-Match` condition on the locked task.
macro_rules! precondition {
    () => {
        "id = locked_id AND ($8::timestamptz[] IS NULL OR locked_at = ANY ($8))"
    };
}

/// Records the key with the task as the write answered it (every write's `task` CTE returns
/// the task columns), and purges a few expired keys (oldest first; SKIP LOCKED so concurrent
/// writes never wait for each other here). Purging up to four per write outpaces the one key
/// each write adds.
macro_rules! record_and_purge {
    () => {
        "recorded AS (
    INSERT INTO idempotency_keys (user_id, key, request_hash, request_id, expires_at,
        task_id, title, description, is_completed, created_at, updated_at)
    SELECT $2, $4, $5, $6, now() + $7 * interval '1 second',
        id, title, description, is_completed, created_at, updated_at
    FROM task
),
purged AS (
    DELETE FROM idempotency_keys expired
    USING (SELECT user_id, key FROM idempotency_keys WHERE expires_at < now()
           ORDER BY expires_at LIMIT 4 FOR UPDATE SKIP LOCKED) batch
    WHERE expired.user_id = batch.user_id AND expired.key = batch.key
)"
    };
}

/// The answer: the written task, or the key's record.
macro_rules! outcome {
    () => {
        "
SELECT 'written' AS outcome, "
    };
}

macro_rules! outcome_of_prior {
    () => {
        " FROM task
UNION ALL
SELECT CASE WHEN request_id = $6 THEN 'written' WHEN request_hash = $5 THEN 'replayed'
            ELSE 'key_reused' END,
       task_id, $2, title, description, is_completed, created_at, updated_at
FROM prior"
    };
}

/// For writes by id: the task exists but `If-Match` did not match; its current ETag.
macro_rules! outcome_of_precondition {
    () => {
        "
UNION ALL
SELECT 'precondition_failed', locked_id, $2, NULL, NULL, NULL, NULL, locked_at
FROM current WHERE NOT EXISTS (SELECT 1 FROM task)"
    };
}

const CREATE: &str = concat!(
    "WITH ",
    prior!(),
    ",
author AS (
    INSERT INTO users (id, email) SELECT $2, $3 WHERE NOT EXISTS (SELECT 1 FROM prior)
    ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email
        WHERE EXCLUDED.email IS NOT NULL AND users.email IS DISTINCT FROM EXCLUDED.email
),
task AS (
    INSERT INTO tasks (id, user_id, title, description)
    SELECT $1, $2, $8, $9 WHERE NOT EXISTS (SELECT 1 FROM prior)
    RETURNING ",
    task_columns!(),
    "
), ",
    record_and_purge!(),
    outcome!(),
    task_columns!(),
    outcome_of_prior!()
);

const GET: &str = concat!(
    "SELECT ",
    task_columns!(),
    " FROM tasks WHERE id = $1 AND user_id = $2"
);

const LIST: &str = concat!(
    "SELECT ",
    task_columns!(),
    "
FROM tasks
WHERE user_id = $1
  AND ($2::boolean IS NULL OR is_completed = $2)
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
ORDER BY created_at DESC, id DESC
LIMIT $5"
);

const UPDATE: &str = concat!(
    "WITH ",
    prior!(),
    ", ",
    current!(),
    ",
task AS (
    UPDATE tasks SET title = $9, description = $10, is_completed = COALESCE($11, is_completed), ",
    next_updated_at!(),
    "
    FROM current WHERE ",
    precondition!(),
    "
    RETURNING ",
    task_columns!(),
    "
), ",
    refresh_author_email!(),
    ", ",
    record_and_purge!(),
    outcome!(),
    task_columns!(),
    outcome_of_prior!(),
    outcome_of_precondition!()
);

/// Row locking makes concurrent toggles serialize: each flips the value the previous one wrote.
const TOGGLE: &str = concat!(
    "WITH ",
    prior!(),
    ", ",
    current!(),
    ",
task AS (
    UPDATE tasks SET is_completed = NOT is_completed, ",
    next_updated_at!(),
    "
    FROM current WHERE ",
    precondition!(),
    "
    RETURNING ",
    task_columns!(),
    "
), ",
    refresh_author_email!(),
    ", ",
    record_and_purge!(),
    outcome!(),
    task_columns!(),
    outcome_of_prior!(),
    outcome_of_precondition!()
);

/// A delete records only the task id: its answer (204) has no body.
const DELETE: &str = concat!(
    "WITH ",
    prior!(),
    ", ",
    current!(),
    ",
task AS (
    DELETE FROM tasks USING current WHERE ",
    precondition!(),
    "
    RETURNING id, user_id, NULL::varchar AS title, NULL::text AS description,
        NULL::boolean AS is_completed, NULL::timestamptz AS created_at,
        NULL::timestamptz AS updated_at
), ",
    refresh_author_email!(),
    ", ",
    record_and_purge!(),
    outcome!(),
    task_columns!(),
    outcome_of_prior!(),
    outcome_of_precondition!()
);

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
