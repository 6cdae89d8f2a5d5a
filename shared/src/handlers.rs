//! The eight route handlers, plus the two entry points that route to them.
//!
//! A handler takes its dependencies (`&State`) and the request; nothing here knows whether the
//! request came from API Gateway or the local server. Checks run in the contract's order:
//! routing → authentication → body and headers → idempotency → existence → preconditions (the
//! last three inside the write's one statement, see `tasks::sql`).

use std::convert::Infallible;

use http::{HeaderName, HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use uuid::Uuid;

use crate::State;
use crate::auth::Identity;
use crate::db::DbError;
use crate::http::conditional::{self, Condition};
use crate::http::routes::Matched;
use crate::http::{ApiError, Function, ROUTES, body, json_response, resolve};
use crate::idempotency::RequestKey;
use crate::tasks::sql::Outcome;
use crate::tasks::{
    BodyKind, ChangesPage, ChangesQuery, Cursor, ListQuery, Task, TaskEnvelope, TaskInput,
    TaskPage, parse_task_id, sql,
};

/// Marks a response that repeats an earlier request's answer (CONTRACT "Safe retries").
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
use crate::{telemetry, timestamp};

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

/// Lambda entry point of the catch-all function ([`crate::http::routes::CATCH_ALL`]): API
/// Gateway sends it what no route matched, answered as the local server answers it (404, or 405
/// with `Allow`). A request that does match a route is not this function's either: 404.
pub async fn unmatched(request: Request) -> Result<Response<Body>, Infallible> {
    let meta = request_meta(&request, None);
    let refusal = async {
        Err(match route(&request) {
            Err(error) => error,
            Ok(_) => ApiError::NotFound,
        })
    };
    Ok(finish(meta, refusal).await)
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
    let meta = request_meta(request, matched.as_ref().ok().map(|m| m.function));
    let result = async {
        let Matched { function, task_id } = matched?;
        handle(state, function, task_id, request).await
    };
    finish(meta, result).await
}

/// Every response of every entry point is finished here, inside [`telemetry::observe`], which
/// writes the request's log line: an error becomes its contract response.
async fn finish(
    meta: telemetry::RequestMeta,
    result: impl Future<Output = Result<Response<Body>, ApiError>>,
) -> Response<Body> {
    let answer = async {
        result.await.unwrap_or_else(|error| {
            telemetry::note_error(error.code(), error.unavailable_dependency());
            error.into_response()
        })
    };
    telemetry::observe(meta, answer, |response| response.status().as_u16()).await
}

/// The log line's view of a request: ids and the route template, nothing the client wrote.
fn request_meta(request: &Request, function: Option<Function>) -> telemetry::RequestMeta {
    let lambda = request.lambda_context_ref();
    let route = function
        .and_then(|f| ROUTES.iter().find(|route| route.function == f))
        .map_or_else(
            || "unmatched".to_owned(),
            |route| format!("{} {}", route.method, route.path),
        );
    telemetry::RequestMeta {
        request_id: lambda.map_or_else(|| Uuid::now_v7().to_string(), |c| c.request_id.clone()),
        route,
        trace_id: lambda.and_then(|c| c.xray_trace_id.clone()),
    }
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
    // A cold instance connects to the database while the token is verified (which may fetch
    // the JWKS), so its first response costs the longer of the two, not their sum. A refused
    // token does not wait for the connection; a failed connect is 503 once the token passed.
    let mut connect = std::pin::pin!(state.db.connect_if_cold());
    let mut auth = std::pin::pin!(state.verifier.authenticate(request.headers()));
    let who = tokio::select! {
        who = &mut auth => {
            let who = who?;
            connect.await?;
            who
        }
        connected = &mut connect => {
            let who = auth.await?;
            connected?;
            who
        }
    };
    let db = &state.db;
    let headers = request.headers();
    let history = state.config.changes_retention_seconds;
    match function {
        Function::Health => Ok(health(state).await),
        Function::ListTasks => {
            let query = ListQuery::parse(request.uri().query())?;
            let if_none_match = conditional::if_none_match(headers)?;
            let mut tasks = sql::list(db, &who, &query).await?;
            let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
            let next_cursor = if tasks.len() > limit {
                tasks.truncate(limit);
                tasks.last().map(|t| Cursor::after(t).encode())
            } else {
                None
            };
            let etag = conditional::page_etag(
                tasks.iter().map(|task| (task.id, task.updated_at)),
                next_cursor.as_deref(),
            );
            Ok(unless_none_match(etag, if_none_match.as_ref(), || {
                json_response(
                    StatusCode::OK,
                    &TaskPage {
                        count: tasks.len(),
                        data: tasks,
                        next_cursor,
                        message: "Tasks retrieved successfully",
                    },
                )
            }))
        }
        Function::CreateTask => {
            let input = task_input(request, BodyKind::Create)?;
            let key = RequestKey::for_request(headers, function, None, request.body().as_ref())?;
            let outcome = sql::create(db, &who, &input, &key, history).await?;
            answer(outcome, |task| {
                let mut response = envelope(StatusCode::CREATED, task, "Task created successfully");
                let location = format!("/api/tasks/{}", task.id);
                if let Ok(value) = HeaderValue::from_str(&location) {
                    response.headers_mut().insert(header::LOCATION, value);
                }
                response
            })
        }
        Function::GetTask => {
            let if_none_match = conditional::if_none_match(headers)?;
            let id = task_id_of(task_id)?;
            let task = sql::get(db, &who, id)
                .await?
                .ok_or(ApiError::TaskNotFound)?;
            let etag = conditional::task_etag(task.updated_at);
            Ok(unless_none_match(etag, if_none_match.as_ref(), || {
                envelope(StatusCode::OK, &task, "Task retrieved successfully")
            }))
        }
        Function::UpdateTask => {
            let input = task_input(request, BodyKind::Replace)?;
            let target = by_id(&who, request, function, task_id)?;
            let outcome = sql::update(db, &target, &input, history).await?;
            answer(outcome, |task| {
                envelope(StatusCode::OK, task, "Task updated successfully")
            })
        }
        Function::DeleteTask => {
            let target = by_id(&who, request, function, task_id)?;
            answer(sql::delete(db, &target, history).await?, |()| {
                let mut response = Response::new(Body::Empty);
                *response.status_mut() = StatusCode::NO_CONTENT;
                response
            })
        }
        Function::ToggleTask => {
            let target = by_id(&who, request, function, task_id)?;
            answer(sql::toggle(db, &target, history).await?, |task| {
                let message = if task.is_completed {
                    "Task marked as complete"
                } else {
                    "Task marked as incomplete"
                };
                envelope(StatusCode::OK, task, message)
            })
        }
        Function::ListChanges => {
            let query = ChangesQuery::parse(request.uri().query(), &who.user_id)?;
            let read = sql::changes(db, &who, &query).await?;
            let page = ChangesPage::build(&query, read, &who.user_id)?;
            Ok(json_response(StatusCode::OK, &page))
        }
    }
}

/// A write by id, after the checks it makes before the database, in the contract's order: the
/// request's headers (400) before the task id (a malformed one is 404, like a missing task).
fn by_id<'a>(
    who: &'a Identity,
    request: &Request,
    function: Function,
    task_id: Option<&str>,
) -> Result<sql::ById<'a>, ApiError> {
    let headers = request.headers();
    let if_match = conditional::if_match(headers)?;
    let parsed_id = task_id.and_then(parse_task_id);
    let key = RequestKey::for_request(headers, function, parsed_id, request.body().as_ref())?;
    let id = parsed_id.ok_or(ApiError::TaskNotFound)?;
    Ok(sql::ById {
        who,
        id,
        key,
        if_match: if_match.and_then(|c| c.timestamps()),
    })
}

/// A write's outcome as a response: `respond` builds the success (also for a replay, which adds
/// `Idempotent-Replayed: true`); the other outcomes are errors.
fn answer<T>(
    outcome: Outcome<T>,
    respond: impl Fn(&T) -> Response<Body>,
) -> Result<Response<Body>, ApiError> {
    match outcome {
        Outcome::Written(value) => Ok(respond(&value)),
        Outcome::Replayed(value) => {
            let mut response = respond(&value);
            response.headers_mut().insert(
                HeaderName::from_static(REPLAYED_HEADER),
                HeaderValue::from_static("true"),
            );
            Ok(response)
        }
        Outcome::KeyReused => Err(ApiError::KeyReused),
        Outcome::PreconditionFailed { updated_at } => Err(ApiError::PreconditionFailed {
            etag: conditional::task_etag(updated_at),
        }),
        Outcome::NotFound => Err(ApiError::TaskNotFound),
    }
}

/// The 200 that `build` makes, or a 304 without a body (never built) if `If-None-Match`
/// matches; both carry the `ETag`.
fn unless_none_match(
    etag: String,
    if_none_match: Option<&Condition>,
    build: impl FnOnce() -> Response<Body>,
) -> Response<Body> {
    let mut response = if if_none_match.is_some_and(|condition| condition.matches_weakly(&etag)) {
        let mut not_modified = Response::new(Body::Empty);
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        not_modified
    } else {
        build()
    };
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
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

/// Every single-task response: the envelope, and the task's `ETag`.
fn envelope(status: StatusCode, task: &Task, message: &'static str) -> Response<Body> {
    let mut response = json_response(
        status,
        &TaskEnvelope {
            data: task,
            message,
        },
    );
    if let Ok(value) = HeaderValue::from_str(&conditional::task_etag(task.updated_at)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
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
            DbError::Unavailable(cause) => ApiError::Unavailable {
                dependency: telemetry::Dependency::Database,
                cause,
            },
            // A concurrent copy of the write still held its key after a second run.
            DbError::Conflict => ApiError::KeyInUse,
            other => ApiError::Internal(other.to_string()),
        }
    }
}
