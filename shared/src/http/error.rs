//! The one place where failures become HTTP responses.
//!
//! Every error from every route is `{"error":{"code","message","details"?}}`. Internal errors are
//! logged here with their cause and shown to the client only as a generic message.

use http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Response};
use serde_json::{Map, Value, json};

/// The `Unauthorized` reason for a request without any bearer credential.
pub const MISSING_TOKEN: &str = "missing bearer token";

/// Seconds a client should wait before retrying a 503 or a 409 `IDEMPOTENCY_KEY_IN_USE`.
pub const RETRY_AFTER_SECONDS: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation {
        message: String,
        field: Option<String>,
        max_length: Option<usize>,
    },
    /// `reason` goes into the log and the RFC 6750 `error_description`; it never names a key or
    /// echoes the token.
    #[error("unauthorized: {reason}")]
    Unauthorized { reason: &'static str },
    #[error("task not found")]
    TaskNotFound,
    #[error("route not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: Vec<Method> },
    #[error("payload too large")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// Another request with the same `Idempotency-Key` is still running.
    #[error("idempotency key in use")]
    KeyInUse,
    /// The `Idempotency-Key` was used by this user for a different request.
    #[error("idempotency key reused")]
    KeyReused,
    /// `If-Match` names none of the task's current entity tag, given here.
    #[error("precondition failed")]
    PreconditionFailed { etag: String },
    /// A `since` token whose holder may have missed a deletion the server has since forgotten.
    #[error("sync token expired")]
    SyncTokenExpired,
    /// A dependency (the database or the JWKS endpoint) did not answer in time.
    #[error("service unavailable: {cause}")]
    Unavailable {
        dependency: crate::telemetry::Dependency,
        cause: String,
    },
    /// A bug or an unexpected failure: logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The field a validation error names (unit tests of the parsers that produce them).
    #[cfg(test)]
    pub(crate) fn validation_field(self) -> Option<String> {
        match self {
            Self::Validation { field, .. } => field,
            other => panic!("not a validation error: {other:?}"),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::Validation {
            message: message.into(),
            field: None,
            max_length: None,
        }
    }

    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            message: message.into(),
            field: Some(field.into()),
            max_length: None,
        }
    }

    pub fn too_long(field: &str, label: &str, max_length: usize) -> Self {
        Self::Validation {
            message: format!("{label} must be at most {max_length} characters"),
            field: Some(field.to_owned()),
            max_length: Some(max_length),
        }
    }

    /// For a 503: what it waited for (the request log's metrics count them apart).
    pub fn unavailable_dependency(&self) -> Option<crate::telemetry::Dependency> {
        match self {
            Self::Unavailable { dependency, .. } => Some(*dependency),
            _ => None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::TaskNotFound | Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::KeyInUse => StatusCode::CONFLICT,
            Self::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Self::SyncTokenExpired => StatusCode::GONE,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "VALIDATION_ERROR",
            Self::Unauthorized { .. } => "UNAUTHORIZED",
            Self::TaskNotFound => "TASK_NOT_FOUND",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            Self::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::KeyInUse => "IDEMPOTENCY_KEY_IN_USE",
            Self::KeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::PreconditionFailed { .. } => "PRECONDITION_FAILED",
            Self::SyncTokenExpired => "SYNC_TOKEN_EXPIRED",
            Self::Unavailable { .. } => "SERVICE_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }

    fn public_message(&self) -> String {
        match self {
            Self::Validation { message, .. } => message.clone(),
            Self::Unauthorized { .. } => "Missing or invalid access token".to_owned(),
            Self::TaskNotFound => "Task not found".to_owned(),
            Self::NotFound => "Route not found".to_owned(),
            Self::MethodNotAllowed { .. } => "Method not allowed for this route".to_owned(),
            Self::PayloadTooLarge { limit } => {
                format!("Request body must be at most {limit} bytes")
            }
            Self::UnsupportedMediaType => "Request body must be application/json".to_owned(),
            Self::KeyInUse => {
                "A request with this Idempotency-Key is still in progress; retry shortly".to_owned()
            }
            Self::KeyReused => {
                "This Idempotency-Key was already used for a different request".to_owned()
            }
            Self::PreconditionFailed { .. } => {
                "The task has changed since the given ETag (If-Match)".to_owned()
            }
            Self::SyncTokenExpired => {
                "This sync token is older than the kept history; sync again without since"
                    .to_owned()
            }
            Self::Unavailable { .. } => {
                "Service temporarily unavailable, please retry shortly".to_owned()
            }
            Self::Internal(_) => "An internal error occurred".to_owned(),
        }
    }

    fn details(&self) -> Option<Value> {
        match self {
            Self::Validation {
                field, max_length, ..
            } => {
                let mut details = Map::new();
                if let Some(field) = field {
                    details.insert("field".into(), json!(field));
                }
                if let Some(max) = max_length {
                    details.insert("max_length".into(), json!(max));
                }
                (!details.is_empty()).then_some(Value::Object(details))
            }
            Self::PayloadTooLarge { limit } => Some(json!({ "max_bytes": limit })),
            _ => None,
        }
    }

    pub fn into_response(self) -> Response<Body> {
        match &self {
            Self::Internal(cause) => tracing::error!(%cause, "internal error"),
            Self::Unavailable { dependency, cause } => {
                tracing::warn!(?dependency, %cause, "dependency unavailable")
            }
            Self::Unauthorized { reason } => tracing::info!(reason, "request refused"),
            _ => {}
        }
        let mut error = Map::new();
        error.insert("code".into(), json!(self.code()));
        error.insert("message".into(), json!(self.public_message()));
        if let Some(details) = self.details() {
            error.insert("details".into(), details);
        }
        let mut response = json_response(self.status(), &json!({ "error": error }));
        let headers = response.headers_mut();
        match &self {
            // RFC 6750 §3.1: no error code when the request carried no credentials at all.
            Self::Unauthorized { reason } if *reason == MISSING_TOKEN => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Unauthorized { reason } => {
                let value =
                    format!(r#"Bearer error="invalid_token", error_description="{reason}""#);
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            Self::MethodNotAllowed { allow } => {
                let allow = allow
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                if let Ok(value) = HeaderValue::from_str(&allow) {
                    headers.insert(header::ALLOW, value);
                }
            }
            Self::Unavailable { .. } | Self::KeyInUse => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            Self::PreconditionFailed { etag } => {
                if let Ok(value) = HeaderValue::from_str(etag) {
                    headers.insert(header::ETAG, value);
                }
            }
            _ => {}
        }
        response
    }
}

/// A JSON response with the given status. Serializing a `Value` cannot fail.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    let text = serde_json::to_string(body).unwrap_or_default();
    let mut response = Response::new(Body::Text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
