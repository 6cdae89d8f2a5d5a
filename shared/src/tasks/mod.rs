//! Tasks: the wire model and validation, list paging, and the user-scoped SQL.

pub mod list;
pub mod model;
pub mod sql;

pub use list::{Cursor, ListQuery, StatusFilter};
pub use model::{BodyKind, Task, TaskEnvelope, TaskInput, TaskPage, parse_task_id};
