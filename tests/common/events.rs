//! The API Gateway v2 event fixtures in `events/`, and edits tests make to them.

use serde_json::{Value, json};

pub fn event(name: &str) -> Value {
    let path = format!("{}/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("event JSON")
}

/// The event with `Authorization: Bearer <token>`.
pub fn authorize(mut event: Value, token: &str) -> Value {
    event["headers"]["authorization"] = json!(format!("Bearer {token}"));
    event
}

/// The event addressed to task `id` instead of the fixture's.
pub fn for_task(mut event: Value, id: &str) -> Value {
    let fixture_id = event["pathParameters"]["task_id"]
        .as_str()
        .expect("task route")
        .to_owned();
    for pointer in ["/rawPath", "/requestContext/http/path"] {
        let path = event
            .pointer(pointer)
            .and_then(Value::as_str)
            .expect(pointer)
            .replace(&fixture_id, id);
        *event.pointer_mut(pointer).expect(pointer) = json!(path);
    }
    event["pathParameters"]["task_id"] = json!(id);
    event
}
