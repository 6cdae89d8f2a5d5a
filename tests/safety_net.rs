#![forbid(unsafe_code)]
//! The safety net behind validation (issue 13): if a value the database cannot store ever gets
//! past the rules, the request is a 500 whose log line names the field and SQLSTATE — never the
//! value — so it becomes a rule and a test. Validation is bypassed here on purpose.

mod common;

use http::HeaderMap;
use tasks_shared::auth::Identity;
use tasks_shared::db::{Database, DbError};
use tasks_shared::http::{ApiError, Function};
use tasks_shared::idempotency::RequestKey;
use tasks_shared::tasks::{TaskInput, sql};

#[tokio::test]
async fn a_value_the_database_refuses_is_named_in_the_log_without_its_content() {
    common::prepare_database().await;
    let settings = tasks_shared::config::DatabaseSettings {
        pool_size: 1,
        timeout: std::time::Duration::from_secs(3),
        ca_cert: None,
    };
    let db = Database::new(&common::test_database_url(), &settings).expect("pool");
    let who = Identity {
        user_id: common::new_user_id(),
        email: None,
    };
    let key =
        RequestKey::for_request(&HeaderMap::new(), Function::CreateTask, None, b"").expect("key");
    let secret_text = "private-words\u{0}after-nul";
    let input = TaskInput {
        title: secret_text.to_owned(),
        description: None,
        is_completed: None,
    };
    let error = sql::create(&db, &who, &input, &key, 2_592_000.0)
        .await
        .expect_err("PostgreSQL cannot store U+0000");
    let DbError::Rejected {
        sqlstate, field, ..
    } = &error
    else {
        panic!("expected Rejected, got {error:?}");
    };
    assert_eq!(field.as_deref(), Some("title"));
    assert!(sqlstate.starts_with("22"), "{sqlstate}");
    let logged = ApiError::from(error).to_string();
    assert!(logged.contains("field title"), "{logged}");
    assert!(!logged.contains("private-words"), "{logged}");
}
