//! One SQL statement per route, every one keyed by the authenticated user.
//!
//! Isolation lives here: each statement filters `tasks` by `user_id = <token sub>`, so another
//! user's task is simply "no row" and the handler answers 404 without ever seeing it.
//!
//! The just-in-time `users` row rides in the same statement as the write (a data-modifying CTE),
//! so every route costs exactly one round trip and a failed write leaves no partial rows: the
//! create upserts the author; the other writes refresh the stored email only when they changed a
//! task (`EXISTS (SELECT 1 FROM task)`).

use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::list::ListQuery;
use super::model::{Task, TaskInput};
use crate::auth::Identity;
use crate::db::{Database, DbError, Retry};

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

const CREATE: &str = concat!(
    "WITH author AS (
    INSERT INTO users (id, email) VALUES ($2, $3)
    ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email
        WHERE EXCLUDED.email IS NOT NULL AND users.email IS DISTINCT FROM EXCLUDED.email
)
INSERT INTO tasks (id, user_id, title, description)
VALUES ($1, $2, $4, $5)
RETURNING ",
    task_columns!()
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
    "WITH task AS (
    UPDATE tasks SET title = $4, description = $5, is_completed = COALESCE($6, is_completed), ",
    next_updated_at!(),
    "
    WHERE id = $1 AND user_id = $2
    RETURNING ",
    task_columns!(),
    "
), ",
    refresh_author_email!(),
    "
SELECT * FROM task"
);

/// Row locking makes concurrent toggles serialize: each flips the value the previous one wrote.
const TOGGLE: &str = concat!(
    "WITH task AS (
    UPDATE tasks SET is_completed = NOT is_completed, ",
    next_updated_at!(),
    "
    WHERE id = $1 AND user_id = $2
    RETURNING ",
    task_columns!(),
    "
), ",
    refresh_author_email!(),
    "
SELECT * FROM task"
);

const DELETE: &str = concat!(
    "WITH task AS (
    DELETE FROM tasks WHERE id = $1 AND user_id = $2 RETURNING id
), ",
    refresh_author_email!(),
    "
SELECT id FROM task"
);

/// Health probe: a statement that needs a live connection and nothing else.
const PING: &str = "SELECT 1";

fn task_from_row(row: &Row) -> Result<Task, tokio_postgres::Error> {
    Ok(Task {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        title: row.try_get(2)?,
        description: row.try_get(3)?,
        is_completed: row.try_get(4)?,
        created_at: row.try_get(5)?,
        updated_at: row.try_get(6)?,
    })
}

fn one_task(rows: Vec<Row>) -> Result<Option<Task>, DbError> {
    rows.first()
        .map(task_from_row)
        .transpose()
        .map_err(DbError::Decode)
}

pub async fn create(db: &Database, who: &Identity, input: &TaskInput) -> Result<Task, DbError> {
    let id = Uuid::now_v7();
    let rows = db
        .query(
            CREATE,
            &[
                (&id, Type::UUID),
                (&who.user_id, Type::TEXT),
                (&who.email, Type::TEXT),
                (&input.title, Type::VARCHAR),
                (&input.description, Type::TEXT),
            ],
            Retry::IfNotCommitted,
        )
        .await?;
    one_task(rows)?.ok_or(DbError::MissingRow)
}

pub async fn get(db: &Database, who: &Identity, id: Uuid) -> Result<Option<Task>, DbError> {
    let rows = db
        .query(
            GET,
            &[(&id, Type::UUID), (&who.user_id, Type::TEXT)],
            Retry::Once,
        )
        .await?;
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
            Retry::Once,
        )
        .await?;
    rows.iter()
        .map(task_from_row)
        .collect::<Result<_, _>>()
        .map_err(DbError::Decode)
}

pub async fn update(
    db: &Database,
    who: &Identity,
    id: Uuid,
    input: &TaskInput,
) -> Result<Option<Task>, DbError> {
    let rows = db
        .query(
            UPDATE,
            &[
                (&id, Type::UUID),
                (&who.user_id, Type::TEXT),
                (&who.email, Type::TEXT),
                (&input.title, Type::VARCHAR),
                (&input.description, Type::TEXT),
                (&input.is_completed, Type::BOOL),
            ],
            Retry::IfNotCommitted,
        )
        .await?;
    one_task(rows)
}

pub async fn toggle(db: &Database, who: &Identity, id: Uuid) -> Result<Option<Task>, DbError> {
    one_task(write_by_id(db, TOGGLE, who, id).await?)
}

/// `true` when a task was deleted.
pub async fn delete(db: &Database, who: &Identity, id: Uuid) -> Result<bool, DbError> {
    Ok(!write_by_id(db, DELETE, who, id).await?.is_empty())
}

/// A write addressed by task id only: `$1` id, `$2` user, `$3` email.
async fn write_by_id(
    db: &Database,
    sql: &str,
    who: &Identity,
    id: Uuid,
) -> Result<Vec<Row>, DbError> {
    let params: [(&(dyn ToSql + Sync), Type); 3] = [
        (&id, Type::UUID),
        (&who.user_id, Type::TEXT),
        (&who.email, Type::TEXT),
    ];
    db.query(sql, &params, Retry::IfNotCommitted).await
}

pub async fn ping(db: &Database) -> Result<(), DbError> {
    db.query(PING, &[], Retry::Once).await.map(drop)
}
