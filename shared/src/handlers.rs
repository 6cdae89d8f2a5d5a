//! The seven route handlers, plus the two entry points that route to them.
//!
//! A handler takes its dependencies (`&State`) and the request; nothing here knows whether the
//! request came from API Gateway or the local server. Checks run in the contract's order:
//! routing → authentication → body → existence.

use std::convert::Infallible;

use http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use uuid::Uuid;

use crate::State;
use crate::db::DbError;
use crate::http::routes::Matched;
use crate::http::{ApiError, Function, body, json_response, resolve};
use crate::tasks::{
    BodyKind, Cursor, ListQuery, Task, TaskEnvelope, TaskInput, TaskPage, parse_task_id, sql,
};
use crate::timestamp;

/// Lambda entry point for `function`: the event must be for that function's route (API Gateway
/// only routes it there); anything else is answered as the local server would answer it.
pub async fn serve(
    state: &State,
    function: Function,
    request: Request,
) -> Result<Response<Body>, Infallible> {
    let matched = route(&request).and_then(|matched| {
        if matched.function == function {
            Ok(matched)
        } else {
            Err(ApiError::NotFound)
        }
    });
    Ok(respond(state, matched, &request).await)
}

/// Local server entry point: every route.
pub async fn dispatch(state: &State, request: Request) -> Response<Body> {
    let matched = route(&request);
    respond(state, matched, &request).await
}

fn route(request: &Request) -> Result<Matched<'_>, ApiError> {
    // API Gateway's raw path is independent of the stage name; the local server has only the URI.
    let path = match request.raw_http_path() {
        "" => request.uri().path(),
        raw => raw,
    };
    resolve(request.method(), path)
}

async fn respond(
    state: &State,
    matched: Result<Matched<'_>, ApiError>,
    request: &Request,
) -> Response<Body> {
    let result = match matched {
        Ok(Matched { function, task_id }) => handle(state, function, task_id, request).await,
        Err(error) => Err(error),
    };
    result.unwrap_or_else(ApiError::into_response)
}

async fn handle(
    state: &State,
    function: Function,
    task_id: Option<&str>,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    if function == Function::Health {
        return Ok(health(state).await);
    }
    let who = state.verifier.authenticate(request.headers()).await?;
    let db = &state.db;
    match function {
        Function::Health => Ok(health(state).await),
        Function::ListTasks => {
            let query = ListQuery::parse(request.uri().query())?;
            let mut tasks = sql::list(db, &who, &query).await?;
            let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
            let next_cursor = if tasks.len() > limit {
                tasks.truncate(limit);
                tasks.last().map(|t| Cursor::after(t).encode())
            } else {
                None
            };
            Ok(json_response(
                StatusCode::OK,
                &TaskPage {
                    count: tasks.len(),
                    data: tasks,
                    next_cursor,
                    message: "Tasks retrieved successfully",
                },
            ))
        }
        Function::CreateTask => {
            let input = task_input(request, BodyKind::Create)?;
            let task = sql::create(db, &who, &input).await?;
            let mut response = envelope(StatusCode::CREATED, &task, "Task created successfully");
            let location = format!("/api/tasks/{}", task.id);
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            Ok(response)
        }
        Function::GetTask => {
            let id = task_id_of(task_id)?;
            let task = found(sql::get(db, &who, id).await?)?;
            Ok(envelope(
                StatusCode::OK,
                &task,
                "Task retrieved successfully",
            ))
        }
        Function::UpdateTask => {
            let input = task_input(request, BodyKind::Replace)?;
            let id = task_id_of(task_id)?;
            let task = found(sql::update(db, &who, id, &input).await?)?;
            Ok(envelope(StatusCode::OK, &task, "Task updated successfully"))
        }
        Function::DeleteTask => {
            let id = task_id_of(task_id)?;
            if !sql::delete(db, &who, id).await? {
                return Err(ApiError::TaskNotFound);
            }
            let mut response = Response::new(Body::Empty);
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok(response)
        }
        Function::ToggleTask => {
            let id = task_id_of(task_id)?;
            let task = found(sql::toggle(db, &who, id).await?)?;
            let message = if task.is_completed {
                "Task marked as complete"
            } else {
                "Task marked as incomplete"
            };
            Ok(envelope(StatusCode::OK, &task, message))
        }
    }
}

/// `/health` needs no token; it says whether the database answers.
async fn health(state: &State) -> Response<Body> {
    let (status, overall, database) = match sql::ping(&state.db).await {
        Ok(()) => (StatusCode::OK, "ok", "ok"),
        Err(error) => {
            tracing::warn!(%error, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "degraded", "unreachable")
        }
    };
    let body = HealthBody {
        status: overall,
        database,
        timestamp: timestamp::format(time::OffsetDateTime::now_utc()),
    };
    let mut response = json_response(status, &body);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(crate::http::error::RETRY_AFTER_SECONDS),
        );
    }
    response
}

fn task_input(request: &Request, kind: BodyKind) -> Result<TaskInput, ApiError> {
    let object = body::json_object(request.headers(), request.body())?;
    TaskInput::from_json(object, kind)
}

/// A path segment that is not a canonical UUID cannot name a task: 404, like a missing one.
fn task_id_of(raw: Option<&str>) -> Result<Uuid, ApiError> {
    raw.and_then(parse_task_id).ok_or(ApiError::TaskNotFound)
}

fn found(task: Option<Task>) -> Result<Task, ApiError> {
    task.ok_or(ApiError::TaskNotFound)
}

fn envelope(status: StatusCode, task: &Task, message: &'static str) -> Response<Body> {
    json_response(
        status,
        &TaskEnvelope {
            data: task,
            message,
        },
    )
}

#[derive(Serialize)]
struct HealthBody {
    status: &'static str,
    database: &'static str,
    timestamp: String,
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Unavailable(cause) => ApiError::Unavailable(cause),
            other => ApiError::Internal(other.to_string()),
        }
    }
}
