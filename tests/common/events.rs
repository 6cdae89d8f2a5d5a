//! The API Gateway v2 event fixtures in `events/`, and edits tests make to them
//! (`tasks_tools::events`, which the benchmarks use too; here failures panic).

use serde_json::Value;

pub fn event(name: &str) -> Value {
    tasks_tools::events::fixture(name).unwrap_or_else(|e| panic!("{e}"))
}

/// The event addressed to task `id` instead of the fixture's.
pub fn for_task(event: Value, id: &str) -> Value {
    tasks_tools::events::for_task(event, id).unwrap_or_else(|e| panic!("{e}"))
}

/// The event with `Authorization: Bearer <token>`.
pub fn authorize(event: Value, token: &str) -> Value {
    tasks_tools::events::authorize(event, token)
}
