#![forbid(unsafe_code)]
//! Request work without the database: body parsing + validation + response serialization for a
//! create, and query parsing + serialization of a 100-task list page
//! (`cargo bench -p tasks-shared --bench request`).

use http::{HeaderMap, HeaderValue, StatusCode, header};
use lambda_http::Body;
use tasks_shared::http::{body, json_response};
use tasks_shared::tasks::{BodyKind, Cursor, ListQuery, Task, TaskEnvelope, TaskInput, TaskPage};
use time::OffsetDateTime;
use uuid::Uuid;

fn main() {
    divan::main();
}

fn task(i: usize) -> Task {
    let now = OffsetDateTime::now_utc();
    Task {
        id: Uuid::now_v7(),
        user_id: "rA1MVom1dyt3gtMippgECyOkqsaWiInL".into(),
        title: format!("Task number {i}: buy milk and bread"),
        description: i
            .is_multiple_of(2)
            .then(|| "Semi-skimmed, two litres; wholemeal bread".to_owned()),
        is_completed: i.is_multiple_of(3),
        created_at: now,
        updated_at: now,
    }
}

#[divan::bench]
fn create_parse_validate_serialize(bencher: divan::Bencher) {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    let request_body =
        Body::from(r#"{"title":"  Buy milk  ","description":"2 litres, semi-skimmed"}"#);
    let stored = task(0);
    bencher.bench_local(|| {
        let object = body::json_object(&headers, divan::black_box(&request_body)).expect("json");
        let input = TaskInput::from_json(object, BodyKind::Create).expect("valid");
        let response = json_response(
            StatusCode::CREATED,
            &TaskEnvelope {
                data: &stored,
                message: "Task created successfully",
            },
        );
        (input, response)
    });
}

#[divan::bench]
fn list_100_parse_serialize(bencher: divan::Bencher) {
    let tasks: Vec<Task> = (0..100).map(task).collect();
    let cursor = Cursor::after(&tasks[99]).encode();
    let query = format!("status=pending&limit=100&cursor={cursor}");
    bencher.bench_local(|| {
        let parsed = ListQuery::parse(Some(divan::black_box(&query))).expect("query");
        let page = TaskPage {
            count: tasks.len(),
            data: tasks.clone(),
            next_cursor: Some(Cursor::after(&tasks[99]).encode()),
            message: "Tasks retrieved successfully",
        };
        (parsed, json_response(StatusCode::OK, &page))
    });
}
