//! Tasks: the wire model and validation, list paging, the change feed, and the user-scoped SQL.

pub mod changes;
pub mod list;
pub mod model;
pub mod sql;

pub use changes::{Change, ChangesPage, ChangesQuery, SyncToken};
pub use list::{Cursor, ListQuery, StatusFilter};
pub use model::{BodyKind, Task, TaskEnvelope, TaskInput, TaskPage, parse_task_id};
