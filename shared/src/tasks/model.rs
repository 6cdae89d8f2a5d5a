//! What a task is on the wire, and the validation of what clients send.

use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::http::ApiError;

pub const TITLE_MAX_CHARS: usize = 500;
pub const DESCRIPTION_MAX_CHARS: usize = 5000;

/// PostgreSQL `text`/`varchar` cannot hold U+0000 (the server rejects it with a data exception),
/// so text containing it is refused here, where the field is still known.
fn storable(text: &str) -> bool {
    !text.contains('\0')
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    pub id: Uuid,
    pub user_id: String,
    pub title: String,
    pub description: Option<String>,
    pub is_completed: bool,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub created_at: OffsetDateTime,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub updated_at: OffsetDateTime,
}

/// `{"data": Task, "message": …}`: the body of every single-task success.
#[derive(Debug, Serialize)]
pub struct TaskEnvelope<'a> {
    pub data: &'a Task,
    pub message: &'static str,
}

/// `{"data": [Task…], "count", "next_cursor", "message"}`: a list page.
#[derive(Debug, Serialize)]
pub struct TaskPage {
    pub data: Vec<Task>,
    pub count: usize,
    pub next_cursor: Option<String>,
    pub message: &'static str,
}

/// A validated task body. POST uses `title` and `description`; PUT may also set `is_completed`
/// (`None` leaves it unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInput {
    pub title: String,
    pub description: Option<String>,
    pub is_completed: Option<bool>,
}

/// Which body a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Create,
    Replace,
}

impl TaskInput {
    /// Validates fields in the order sent and reports the first offending one.
    pub fn from_json(body: Map<String, Value>, kind: BodyKind) -> Result<Self, ApiError> {
        let mut title = None;
        let mut description = None;
        let mut is_completed = None;
        for (key, value) in body {
            match key.as_str() {
                "title" => title = Some(parse_title(value)?),
                "description" => description = parse_description(value)?,
                "is_completed" if kind == BodyKind::Replace => match value {
                    Value::Bool(done) => is_completed = Some(done),
                    _ => {
                        return Err(ApiError::invalid_field(
                            "is_completed",
                            "is_completed must be a boolean",
                        ));
                    }
                },
                _ => {
                    let message = format!("Unknown field: {key}");
                    return Err(ApiError::invalid_field(key, message));
                }
            }
        }
        let title = title.ok_or_else(|| ApiError::invalid_field("title", "Title is required"))?;
        Ok(Self {
            title,
            description,
            is_completed,
        })
    }
}

fn parse_title(value: Value) -> Result<String, ApiError> {
    let Value::String(raw) = value else {
        return Err(ApiError::invalid_field("title", "Title must be a string"));
    };
    // `str::trim` strips Unicode White_Space, as the contract asks.
    let title = raw.trim();
    if title.is_empty() {
        return Err(ApiError::invalid_field("title", "Title cannot be empty"));
    }
    if title.chars().count() > TITLE_MAX_CHARS {
        return Err(ApiError::too_long("title", "Title", TITLE_MAX_CHARS));
    }
    if !storable(title) {
        return Err(ApiError::invalid_field(
            "title",
            "Title cannot contain the NUL character (U+0000)",
        ));
    }
    Ok(if title.len() == raw.len() {
        raw
    } else {
        title.to_owned()
    })
}

fn parse_description(value: Value) -> Result<Option<String>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) if text.chars().count() > DESCRIPTION_MAX_CHARS => Err(
            ApiError::too_long("description", "Description", DESCRIPTION_MAX_CHARS),
        ),
        Value::String(text) if !storable(&text) => Err(ApiError::invalid_field(
            "description",
            "Description cannot contain the NUL character (U+0000)",
        )),
        Value::String(text) => Ok(Some(text)),
        _ => Err(ApiError::invalid_field(
            "description",
            "Description must be a string or null",
        )),
    }
}

/// A task id from the path: canonical hyphenated form only, any case. Anything else cannot name
/// a task, so callers answer 404.
pub fn parse_task_id(raw: &str) -> Option<Uuid> {
    let bytes = raw.as_bytes();
    let canonical = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    canonical.then(|| Uuid::parse_str(raw).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(body: Value, kind: BodyKind) -> Result<TaskInput, ApiError> {
        let Value::Object(map) = body else { panic!() };
        TaskInput::from_json(map, kind)
    }

    fn field_of(err: ApiError) -> (Option<String>, Option<usize>) {
        match err {
            ApiError::Validation {
                field, max_length, ..
            } => (field, max_length),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn title_is_trimmed_and_bounded_in_code_points() {
        let ok = input(json!({"title": "\u{3000} Buy milk \n"}), BodyKind::Create).unwrap();
        assert_eq!(ok.title, "Buy milk");
        let max = "é".repeat(TITLE_MAX_CHARS);
        assert_eq!(
            input(json!({"title": max}), BodyKind::Create)
                .unwrap()
                .title
                .chars()
                .count(),
            500
        );
        let over = "é".repeat(TITLE_MAX_CHARS + 1);
        let err = input(json!({"title": over}), BodyKind::Create).unwrap_err();
        assert_eq!(field_of(err), (Some("title".into()), Some(500)));
        let err = input(json!({"title": " \t\u{00a0}"}), BodyKind::Create).unwrap_err();
        assert_eq!(err.to_string(), "Title cannot be empty");
    }

    #[test]
    fn description_is_kept_exactly_and_bounded() {
        let ok = input(json!({"title": "t", "description": ""}), BodyKind::Create).unwrap();
        assert_eq!(ok.description.as_deref(), Some(""));
        let ok = input(
            json!({"title": "t", "description": "  x "}),
            BodyKind::Create,
        )
        .unwrap();
        assert_eq!(ok.description.as_deref(), Some("  x "));
        let ok = input(
            json!({"title": "t", "description": "😀".repeat(5000)}),
            BodyKind::Create,
        );
        assert!(ok.is_ok());
        let err = input(
            json!({"title": "t", "description": "a".repeat(5001)}),
            BodyKind::Create,
        );
        assert_eq!(
            field_of(err.unwrap_err()),
            (Some("description".into()), Some(5000))
        );
    }

    #[test]
    fn nul_is_refused_in_title_and_description() {
        for title in ["a\u{0}b", "\u{0}", " \u{0} ", "\u{0}\u{0}"] {
            let err = input(json!({ "title": title }), BodyKind::Create).unwrap_err();
            assert_eq!(field_of(err), (Some("title".into()), None), "{title:?}");
            let err = input(json!({ "title": title }), BodyKind::Replace).unwrap_err();
            assert_eq!(field_of(err).0.as_deref(), Some("title"));
        }
        for kind in [BodyKind::Create, BodyKind::Replace] {
            let err = input(json!({"title": "t", "description": "a\u{0}b"}), kind).unwrap_err();
            assert_eq!(field_of(err), (Some("description".into()), None));
        }
        // The first offending field in body order is still the one reported.
        let err = input(
            json!({"description": "\u{0}", "title": "\u{0}"}),
            BodyKind::Create,
        )
        .unwrap_err();
        assert_eq!(field_of(err).0.as_deref(), Some("description"));
        // Every other control character is storable and kept.
        let controls: String = ('\u{1}'..='\u{1f}').chain(['\u{7f}', '\u{85}']).collect();
        let ok = input(
            json!({"title": format!("x{controls}x"), "description": controls}),
            BodyKind::Create,
        )
        .unwrap();
        assert_eq!(ok.title, format!("x{controls}x"));
        assert_eq!(ok.description.as_deref(), Some(controls.as_str()));
    }

    #[test]
    fn first_offending_field_in_body_order_is_reported() {
        let err = input(json!({"tittle": "x", "title": ""}), BodyKind::Create).unwrap_err();
        assert_eq!(field_of(err).0.as_deref(), Some("tittle"));
        let err = input(json!({"description": 1, "tittle": "x"}), BodyKind::Create).unwrap_err();
        assert_eq!(field_of(err).0.as_deref(), Some("description"));
        let err = input(json!({"description": "x"}), BodyKind::Create).unwrap_err();
        assert_eq!(field_of(err).0.as_deref(), Some("title"));
    }

    #[test]
    fn is_completed_only_on_replace_and_only_boolean() {
        let err = input(
            json!({"title": "t", "is_completed": true}),
            BodyKind::Create,
        )
        .unwrap_err();
        assert_eq!(field_of(err).0.as_deref(), Some("is_completed"));
        for bad in [json!(null), json!("true"), json!(1)] {
            let err = input(
                json!({"title": "t", "is_completed": bad}),
                BodyKind::Replace,
            );
            assert_eq!(
                field_of(err.unwrap_err()).0.as_deref(),
                Some("is_completed")
            );
        }
        let ok = input(
            json!({"title": "t", "is_completed": true}),
            BodyKind::Replace,
        )
        .unwrap();
        assert_eq!(ok.is_completed, Some(true));
        let ok = input(json!({"title": "t"}), BodyKind::Replace).unwrap();
        assert_eq!(ok.is_completed, None);
    }

    #[test]
    fn task_ids_must_be_canonical_uuids() {
        let id = "0193f0c2-5d8e-7c1a-9b2e-3f4a5b6c7d8e";
        assert!(parse_task_id(id).is_some());
        assert_eq!(parse_task_id(&id.to_uppercase()), parse_task_id(id));
        for bad in [
            "0193f0c25d8e7c1a9b2e3f4a5b6c7d8e",
            "{0193f0c2-5d8e-7c1a-9b2e-3f4a5b6c7d8e}",
            "urn:uuid:0193f0c2-5d8e-7c1a-9b2e-3f4a5b6c7d8e",
            "0193f0c2-5d8e-7c1a-9b2e-3f4a5b6c7d8g",
            "not-a-uuid",
            "",
        ] {
            assert!(parse_task_id(bad).is_none(), "{bad}");
        }
    }
}
