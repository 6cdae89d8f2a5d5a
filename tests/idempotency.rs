#![forbid(unsafe_code)]
//! Safe retries (CONTRACT 1.1, "Safe retries: `Idempotency-Key`"), end to end against the real
//! server and database: replays per route, key scope and reuse, malformed keys, the order of
//! checks, failures that are not remembered, concurrent copies of one request, retention and
//! the purge of expired keys.

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, TestResponse, bearer, header_field, inspect, json_type, spawn_app};
use futures_util::future::join_all;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use serde_json::Value;
use tokio_postgres::IsolationLevel;
use uuid::Uuid;

const KEY_HEADER: &str = "idempotency-key";
const REPLAYED: &str = "idempotent-replayed";

/// One write as the client sends it: the body as exact bytes, the key as raw header bytes (so
/// malformed values reach the server unchanged).
struct Write<'a> {
    method: Method,
    path: String,
    token: &'a str,
    key: Option<&'a [u8]>,
    body: Option<&'a str>,
}

impl<'a> Write<'a> {
    fn new(method: Method, path: impl Into<String>, token: &'a str) -> Self {
        Self {
            method,
            path: path.into(),
            token,
            key: None,
            body: None,
        }
    }

    fn key(mut self, key: &'a str) -> Self {
        self.key = Some(key.as_bytes());
        self
    }

    fn raw_key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    fn body(mut self, body: &'a str) -> Self {
        self.body = Some(body);
        self
    }

    /// Sends the write with `extra` header lines after its own.
    async fn send_with(&self, app: &TestApp, extra: &[(HeaderName, HeaderValue)]) -> TestResponse {
        let mut headers = vec![bearer(self.token)];
        if let Some(key) = self.key {
            let value = HeaderValue::from_bytes(key).expect("a header value the client can send");
            headers.push((HeaderName::from_static(KEY_HEADER), value));
        }
        if self.body.is_some() {
            headers.push(json_type());
        }
        headers.extend_from_slice(extra);
        let body = self.body.unwrap_or_default().as_bytes().to_vec();
        app.send_raw(self.method.clone(), &self.path, &headers, body)
            .await
    }

    async fn send(&self, app: &TestApp) -> TestResponse {
        self.send_with(app, &[]).await
    }
}

fn create(token: &str) -> Write<'_> {
    Write::new(Method::POST, "/api/tasks", token)
}

fn update<'a>(token: &'a str, id: &str) -> Write<'a> {
    Write::new(Method::PUT, format!("/api/tasks/{id}"), token)
}

fn delete<'a>(token: &'a str, id: &str) -> Write<'a> {
    Write::new(Method::DELETE, format!("/api/tasks/{id}"), token)
}

fn toggle<'a>(token: &'a str, id: &str) -> Write<'a> {
    Write::new(Method::PATCH, format!("/api/tasks/{id}/toggle"), token)
}

/// A key no other test (or run) uses.
fn fresh_key() -> String {
    format!("key-{}", Uuid::now_v7())
}

fn text(response: &TestResponse) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

fn assert_status(response: &TestResponse, status: StatusCode) {
    assert_eq!(response.status, status, "body: {}", text(response));
}

/// A first answer: not marked as a replay.
fn assert_first(response: &TestResponse, status: StatusCode) {
    assert_status(response, status);
    assert_eq!(
        response.header(REPLAYED),
        None,
        "a first answer is not a replay"
    );
}

/// `replay` repeats `first` exactly (status, bytes, `Location`, `ETag`, content type) and says so.
fn assert_replay_of(first: &TestResponse, replay: &TestResponse) {
    assert_eq!(
        first.header(REPLAYED),
        None,
        "the first answer is not a replay"
    );
    assert_eq!(replay.status, first.status, "replay body: {}", text(replay));
    assert_eq!(
        replay.body, first.body,
        "a replay repeats the body byte for byte"
    );
    for name in [header::LOCATION, header::ETAG, header::CONTENT_TYPE] {
        assert_eq!(replay.header(&name), first.header(&name), "{name}");
    }
    assert_eq!(replay.header(REPLAYED), Some("true"));
}

fn assert_key_reused(response: &TestResponse) {
    response.assert_error(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(response.header(REPLAYED), None);
}

fn assert_malformed_key(response: &TestResponse, what: &str) {
    let body = response.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(
        body["error"]["details"]["field"], "Idempotency-Key",
        "{what}: {body}"
    );
}

fn data(response: &TestResponse) -> Value {
    response.json()["data"].clone()
}

fn id_of(response: &TestResponse) -> String {
    data(response)["id"].as_str().expect("task id").to_owned()
}

async fn count(db: &tokio_postgres::Client, sql: &str, param: &str) -> i64 {
    db.query_one(sql, &[&param]).await.expect(sql).get(0)
}

async fn task_count(db: &tokio_postgres::Client, user: &str) -> i64 {
    count(db, "SELECT count(*) FROM tasks WHERE user_id = $1", user).await
}

/// A task as stored: `(title, is_completed, updated_at)`, or `None` when it is gone.
async fn stored_task(db: &tokio_postgres::Client, id: &str) -> Option<(String, bool, String)> {
    let id = Uuid::parse_str(id).expect("uuid");
    db.query_opt(
        "SELECT title, is_completed, updated_at::text FROM tasks WHERE id = $1",
        &[&id],
    )
    .await
    .expect("read task")
    .map(|row| (row.get(0), row.get(1), row.get(2)))
}

/// How many keys the client chose are recorded for `user` (server keys start with `req `).
async fn client_keys(db: &tokio_postgres::Client, user: &str) -> i64 {
    count(
        db,
        "SELECT count(*) FROM idempotency_keys WHERE user_id = $1 AND key NOT LIKE 'req %'",
        user,
    )
    .await
}

async fn new_task(app: &TestApp, token: &str, title: &str) -> String {
    app.create_task(token, title).await["id"]
        .as_str()
        .expect("task id")
        .to_owned()
}

const TITLE_A: &str = r#"{"title":"buy milk"}"#;
const TITLE_B: &str = r#"{"title":"buy bread"}"#;

// ---------------------------------------------------------------------------------------------
// Replays, per route
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_replay_answers_the_same_201_and_creates_nothing() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let key = fresh_key();
    let first = create(&token).key(&key).body(TITLE_A).send(&app).await;
    assert_first(&first, StatusCode::CREATED);
    let id = id_of(&first);
    assert_eq!(
        first.header(header::LOCATION),
        Some(&*format!("/api/tasks/{id}"))
    );
    assert!(first.header(header::ETAG).is_some());

    let db = inspect().await;
    let stored = stored_task(&db, &id).await;
    let replay = create(&token).key(&key).body(TITLE_A).send(&app).await;
    assert_replay_of(&first, &replay);
    let again = create(&token).key(&key).body(TITLE_A).send(&app).await;
    assert_replay_of(&first, &again);

    assert_eq!(
        task_count(&db, &user).await,
        1,
        "one task, however often retried"
    );
    assert_eq!(
        stored_task(&db, &id).await,
        stored,
        "the replay wrote nothing"
    );
    assert_eq!(client_keys(&db, &user).await, 1);
}

#[tokio::test]
async fn create_replay_after_the_task_was_deleted_does_not_recreate_it() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let key = fresh_key();
    let first = create(&token).key(&key).body(TITLE_A).send(&app).await;
    assert_first(&first, StatusCode::CREATED);
    let id = id_of(&first);
    assert_first(
        &delete(&token, &id).send(&app).await,
        StatusCode::NO_CONTENT,
    );

    let replay = create(&token).key(&key).body(TITLE_A).send(&app).await;
    assert_replay_of(&first, &replay);
    assert_eq!(task_count(&inspect().await, &user).await, 0);
}

#[tokio::test]
async fn update_replay_answers_the_recorded_200_and_writes_nothing() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let id = new_task(&app, &token, "before").await;
    let key = fresh_key();
    let body = r#"{"title":"after","description":"new text"}"#;
    let first = update(&token, &id).key(&key).body(body).send(&app).await;
    assert_first(&first, StatusCode::OK);
    assert_eq!(data(&first)["title"], "after");
    assert_eq!(
        first.header(header::ETAG),
        Some(&*format!(
            "\"{}\"",
            data(&first)["updated_at"].as_str().unwrap()
        ))
    );

    let db = inspect().await;
    let stored = stored_task(&db, &id).await;
    let replay = update(&token, &id).key(&key).body(body).send(&app).await;
    assert_replay_of(&first, &replay);
    assert_eq!(
        stored_task(&db, &id).await,
        stored,
        "updated_at unchanged by the replay"
    );

    // The replay is the recorded answer, not the task's current state.
    assert_first(&toggle(&token, &id).send(&app).await, StatusCode::OK);
    let changed = stored_task(&db, &id).await;
    let later = update(&token, &id).key(&key).body(body).send(&app).await;
    assert_replay_of(&first, &later);
    assert_eq!(stored_task(&db, &id).await, changed, "nothing overwritten");
    assert_eq!(task_count(&db, &user).await, 1);
}

#[tokio::test]
async fn toggle_replay_flips_once() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let id = new_task(&app, &token, "flip me").await;
    let key = fresh_key();
    let first = toggle(&token, &id).key(&key).send(&app).await;
    assert_first(&first, StatusCode::OK);
    assert_eq!(data(&first)["is_completed"], true);
    assert_eq!(first.json()["message"], "Task marked as complete");

    let db = inspect().await;
    let stored = stored_task(&db, &id).await;
    for _ in 0..3 {
        let replay = toggle(&token, &id).key(&key).send(&app).await;
        assert_replay_of(&first, &replay);
    }
    let after = stored_task(&db, &id).await;
    assert_eq!(after, stored, "flipped once, updated_at unchanged");
    assert!(after.unwrap().1, "still complete");
}

#[tokio::test]
async fn delete_replay_is_204_although_the_task_is_gone() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let id = new_task(&app, &token, "doomed").await;
    let key = fresh_key();
    let first = delete(&token, &id).key(&key).send(&app).await;
    assert_first(&first, StatusCode::NO_CONTENT);
    assert!(first.body.is_empty());
    assert_eq!(stored_task(&inspect().await, &id).await, None);

    let replay = delete(&token, &id).key(&key).send(&app).await;
    assert_replay_of(&first, &replay);
    assert!(replay.body.is_empty());

    // Another key (or none) is a new request: the task is gone.
    let other = delete(&token, &id).key(&fresh_key()).send(&app).await;
    other.assert_error(404, "TASK_NOT_FOUND");
    assert_eq!(other.header(REPLAYED), None);
    delete(&token, &id)
        .send(&app)
        .await
        .assert_error(404, "TASK_NOT_FOUND");
}

#[tokio::test]
async fn the_quoted_form_is_the_same_key() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let key = fresh_key();
    let quoted = format!("\"{key}\"");
    let first = create(&token).key(&quoted).body(TITLE_A).send(&app).await;
    assert_first(&first, StatusCode::CREATED);
    assert_replay_of(
        &first,
        &create(&token).key(&key).body(TITLE_A).send(&app).await,
    );
    assert_replay_of(
        &first,
        &create(&token).key(&quoted).body(TITLE_A).send(&app).await,
    );
    // And the same key in either form: another request is 422.
    assert_key_reused(&create(&token).key(&quoted).body(TITLE_B).send(&app).await);
    let db = inspect().await;
    assert_eq!(task_count(&db, &user).await, 1);
    let stored: String = db
        .query_one(
            "SELECT key FROM idempotency_keys WHERE user_id = $1 AND key NOT LIKE 'req %'",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, key, "stored without the quotes");
}

#[tokio::test]
async fn the_longest_key_and_every_visible_character_are_keys() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let longest = format!("{}{}", Uuid::now_v7().simple(), "k".repeat(255 - 32));
    assert_eq!(longest.len(), 255);
    let visible: String = format!(
        "{}{}",
        Uuid::now_v7().simple(),
        (b'!'..=b'~').map(char::from).collect::<String>()
    );
    for key in [&longest, &visible] {
        let first = create(&token).key(key).body(TITLE_A).send(&app).await;
        assert_first(&first, StatusCode::CREATED);
        assert_replay_of(
            &first,
            &create(&token).key(key).body(TITLE_A).send(&app).await,
        );
    }
    assert_eq!(task_count(&inspect().await, &user).await, 2);
}

// ---------------------------------------------------------------------------------------------
// Scope and reuse
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn keys_belong_to_their_user() {
    let app = spawn_app().await;
    let (alice, alice_token) = app.new_user();
    let (bob, bob_token) = app.new_user();
    let (carol, carol_token) = app.new_user();
    let key = fresh_key();
    let first = create(&alice_token)
        .key(&key)
        .body(TITLE_A)
        .send(&app)
        .await;
    assert_first(&first, StatusCode::CREATED);

    // The same request from Bob: his own write, not Alice's answer.
    let same = create(&bob_token).key(&key).body(TITLE_A).send(&app).await;
    assert_first(&same, StatusCode::CREATED);
    assert_ne!(id_of(&same), id_of(&first));
    assert_eq!(data(&same)["user_id"], bob);

    // Another request from Carol with Alice's key: written, not 422.
    let carol_task = app.create_task(&carol_token, "carol's").await;
    let carol_id = carol_task["id"].as_str().unwrap();
    let toggled = toggle(&carol_token, carol_id).key(&key).send(&app).await;
    assert_first(&toggled, StatusCode::OK);
    assert_eq!(data(&toggled)["is_completed"], true);
    let other_body = create(&carol_token)
        .key(&fresh_key())
        .body(TITLE_B)
        .send(&app)
        .await;
    assert_first(&other_body, StatusCode::CREATED);

    let db = inspect().await;
    assert_eq!(task_count(&db, &alice).await, 1);
    assert_eq!(task_count(&db, &bob).await, 1);
    assert_eq!(task_count(&db, &carol).await, 2);
    // Each still replays their own answer.
    assert_replay_of(
        &first,
        &create(&alice_token)
            .key(&key)
            .body(TITLE_A)
            .send(&app)
            .await,
    );
    assert_replay_of(
        &same,
        &create(&bob_token).key(&key).body(TITLE_A).send(&app).await,
    );
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_and_writes_nothing() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let key = fresh_key();
    let first = create(&token).key(&key).body(TITLE_A).send(&app).await;
    assert_first(&first, StatusCode::CREATED);
    assert_key_reused(&create(&token).key(&key).body(TITLE_B).send(&app).await);
    assert_key_reused(
        &create(&token)
            .key(&key)
            .body(r#"{"title":"buy milk","description":"x"}"#)
            .send(&app)
            .await,
    );
    let db = inspect().await;
    assert_eq!(task_count(&db, &user).await, 1);

    let id = id_of(&first);
    let key = fresh_key();
    let put = update(&token, &id).key(&key).body(TITLE_B).send(&app).await;
    assert_first(&put, StatusCode::OK);
    let stored = stored_task(&db, &id).await;
    let changed = r#"{"title":"buy bread","is_completed":true}"#;
    assert_key_reused(&update(&token, &id).key(&key).body(changed).send(&app).await);
    assert_eq!(stored_task(&db, &id).await, stored, "nothing written");
}

#[tokio::test]
async fn the_same_key_on_another_task_is_422_and_writes_nothing() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let one = app.create_task(&token, "one").await;
    let two = app.create_task(&token, "two").await;
    let (one, two) = (one["id"].as_str().unwrap(), two["id"].as_str().unwrap());
    let db = inspect().await;

    let key = fresh_key();
    assert_first(
        &update(&token, one).key(&key).body(TITLE_A).send(&app).await,
        StatusCode::OK,
    );
    let before = stored_task(&db, two).await;
    assert_key_reused(&update(&token, two).key(&key).body(TITLE_A).send(&app).await);
    assert_eq!(stored_task(&db, two).await, before);

    let key = fresh_key();
    assert_first(
        &toggle(&token, one).key(&key).send(&app).await,
        StatusCode::OK,
    );
    assert_key_reused(&toggle(&token, two).key(&key).send(&app).await);
    assert_eq!(stored_task(&db, two).await, before, "not toggled");

    let key = fresh_key();
    assert_first(
        &delete(&token, one).key(&key).send(&app).await,
        StatusCode::NO_CONTENT,
    );
    assert_key_reused(&delete(&token, two).key(&key).send(&app).await);
    assert_eq!(stored_task(&db, two).await, before, "not deleted");
    // A task that does not exist at all: still another request (422 comes before 404).
    let missing = Uuid::now_v7().to_string();
    assert_key_reused(&delete(&token, &missing).key(&key).send(&app).await);
}

#[tokio::test]
async fn the_same_key_on_another_route_is_422_and_writes_nothing() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let id = new_task(&app, &token, "target").await;
    let db = inspect().await;

    // Used for a PUT; the same key and the very same body bytes on POST, toggle, DELETE.
    let key = fresh_key();
    assert_first(
        &update(&token, &id).key(&key).body(TITLE_A).send(&app).await,
        StatusCode::OK,
    );
    let stored = stored_task(&db, &id).await;
    assert_key_reused(&create(&token).key(&key).body(TITLE_A).send(&app).await);
    assert_key_reused(&toggle(&token, &id).key(&key).send(&app).await);
    assert_key_reused(&delete(&token, &id).key(&key).send(&app).await);
    assert_eq!(stored_task(&db, &id).await, stored, "nothing written");
    assert_eq!(task_count(&db, &user).await, 1);

    // Used for a toggle: PUT and DELETE on the same task are other requests.
    let key = fresh_key();
    assert_first(
        &toggle(&token, &id).key(&key).send(&app).await,
        StatusCode::OK,
    );
    let stored = stored_task(&db, &id).await;
    assert_key_reused(&update(&token, &id).key(&key).body(TITLE_B).send(&app).await);
    assert_key_reused(&delete(&token, &id).key(&key).send(&app).await);
    assert_eq!(stored_task(&db, &id).await, stored, "nothing written");

    // Used for a POST: the new task's PUT with the same body is another request.
    let key = fresh_key();
    let created = create(&token).key(&key).body(TITLE_B).send(&app).await;
    assert_first(&created, StatusCode::CREATED);
    let new_id = id_of(&created);
    let stored = stored_task(&db, &new_id).await;
    assert_key_reused(
        &update(&token, &new_id)
            .key(&key)
            .body(TITLE_B)
            .send(&app)
            .await,
    );
    assert_eq!(stored_task(&db, &new_id).await, stored, "nothing written");
    assert_eq!(task_count(&db, &user).await, 2);
}

#[tokio::test]
async fn the_task_id_is_compared_case_insensitively() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let id = new_task(&app, &token, "case").await;
    let upper = id.to_uppercase();
    assert_ne!(upper, id);
    let db = inspect().await;

    let key = fresh_key();
    let first = update(&token, &id).key(&key).body(TITLE_A).send(&app).await;
    assert_first(&first, StatusCode::OK);
    let stored = stored_task(&db, &id).await;
    assert_replay_of(
        &first,
        &update(&token, &upper)
            .key(&key)
            .body(TITLE_A)
            .send(&app)
            .await,
    );

    let key = fresh_key();
    let first = toggle(&token, &upper).key(&key).send(&app).await;
    assert_first(&first, StatusCode::OK);
    let stored_after_toggle = stored_task(&db, &id).await;
    assert_ne!(stored_after_toggle, stored);
    assert_replay_of(&first, &toggle(&token, &id).key(&key).send(&app).await);
    assert_eq!(
        stored_task(&db, &id).await,
        stored_after_toggle,
        "flipped once"
    );
}

// ---------------------------------------------------------------------------------------------
// Malformed keys and the order of checks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_keys_are_400_on_every_write_route_and_write_nothing() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let id = new_task(&app, &token, "untouched").await;
    let db = inspect().await;
    let stored = stored_task(&db, &id).await;
    let too_long = "k".repeat(256);
    let too_long_quoted = format!("\"{too_long}\"");
    let missing = Uuid::now_v7().to_string();
    let bad: [(&str, &[u8]); 7] = [
        ("empty", b""),
        ("empty quotes", b"\"\""),
        ("256 characters", too_long.as_bytes()),
        ("256 characters quoted", too_long_quoted.as_bytes()),
        ("a space inside", b"two words"),
        ("a tab inside", b"two\twords"),
        ("non-ASCII", "café-1".as_bytes()),
    ];
    for (what, key) in bad {
        let writes = [
            create(&token).raw_key(key).body(TITLE_A),
            update(&token, &id).raw_key(key).body(TITLE_B),
            toggle(&token, &id).raw_key(key),
            delete(&token, &id).raw_key(key),
            // The key is checked before existence: a missing or malformed id is 400 too.
            delete(&token, &missing).raw_key(key),
            toggle(&token, "not-a-uuid").raw_key(key),
        ];
        for write in writes {
            let response = write.send(&app).await;
            assert_malformed_key(
                &response,
                &format!("{what}: {} {}", write.method, write.path),
            );
        }
    }
    assert_eq!(task_count(&db, &user).await, 1, "nothing created");
    assert_eq!(stored_task(&db, &id).await, stored, "nothing changed");
    assert_eq!(client_keys(&db, &user).await, 0, "no key recorded");
}

#[tokio::test]
async fn two_key_headers_are_400() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let (first, second) = (fresh_key(), fresh_key());
    let two_keys = [
        header_field(KEY_HEADER, &first),
        header_field(KEY_HEADER, &second),
    ];
    let response = create(&token)
        .body(TITLE_A)
        .send_with(&app, &two_keys)
        .await;
    assert_malformed_key(&response, "two headers");
    assert_eq!(task_count(&inspect().await, &user).await, 0);
}

#[tokio::test]
async fn body_and_key_are_checked_before_idempotency() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let db = inspect().await;

    // A malformed key with a valid body: 400 naming the key.
    assert_malformed_key(
        &create(&token).key("bad key").body(TITLE_A).send(&app).await,
        "malformed key, valid body",
    );
    // A valid key with an invalid body: 400 naming the body's field.
    let key = fresh_key();
    let invalid = create(&token)
        .key(&key)
        .body(r#"{"title":"   "}"#)
        .send(&app)
        .await;
    let body = invalid.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(body["error"]["details"]["field"], "title", "{body}");
    // Both malformed: 400 either way.
    create(&token)
        .key("bad key")
        .body(r#"{"tittle":"x"}"#)
        .send(&app)
        .await
        .assert_error(400, "VALIDATION_ERROR");

    // A used key: an invalid body is 400 (not 422), a bad token is 401 (not a replay).
    let first = create(&token).key(&key).body(TITLE_A).send(&app).await;
    assert_first(&first, StatusCode::CREATED);
    let unknown_field = create(&token)
        .key(&key)
        .body(r#"{"title":"buy milk","is_completed":true}"#)
        .send(&app)
        .await;
    let body = unknown_field.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(body["error"]["details"]["field"], "is_completed", "{body}");
    let forged = create("not.a.token")
        .key(&key)
        .body(TITLE_A)
        .send(&app)
        .await;
    forged.assert_error(401, "UNAUTHORIZED");
    assert_eq!(forged.header(REPLAYED), None);
    let id = id_of(&first);
    let put = update(&token, &id)
        .key(&key)
        .body(r#"{"title":""}"#)
        .send(&app)
        .await;
    let body = put.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(body["error"]["details"]["field"], "title", "{body}");

    assert_eq!(task_count(&db, &user).await, 1);
    assert_eq!(client_keys(&db, &user).await, 1);
}

// ---------------------------------------------------------------------------------------------
// Only successes are remembered
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_failed_create_is_not_remembered() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let key = fresh_key();
    create(&token)
        .key(&key)
        .body(r#"{"title":""}"#)
        .send(&app)
        .await
        .assert_error(400, "VALIDATION_ERROR");
    let db = inspect().await;
    assert_eq!(client_keys(&db, &user).await, 0);

    let first = create(&token).key(&key).body(TITLE_A).send(&app).await;
    assert_first(&first, StatusCode::CREATED);
    assert_replay_of(
        &first,
        &create(&token).key(&key).body(TITLE_A).send(&app).await,
    );
    assert_eq!(task_count(&db, &user).await, 1);
}

#[tokio::test]
async fn a_404_is_not_remembered() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let id = new_task(&app, &token, "exists").await;
    let missing = Uuid::now_v7().to_string();
    let db = inspect().await;

    // A 404 DELETE, then the same key for another, valid request: it runs (not 422).
    let key = fresh_key();
    delete(&token, &missing)
        .key(&key)
        .send(&app)
        .await
        .assert_error(404, "TASK_NOT_FOUND");
    let put = update(&token, &id).key(&key).body(TITLE_A).send(&app).await;
    assert_first(&put, StatusCode::OK);
    assert_eq!(data(&put)["title"], "buy milk");

    // A 404 PUT, then the same key and body on the missing task: 404 again, not a replay.
    let key = fresh_key();
    for _ in 0..2 {
        let response = update(&token, &missing)
            .key(&key)
            .body(TITLE_A)
            .send(&app)
            .await;
        response.assert_error(404, "TASK_NOT_FOUND");
    }
    // Another user's task is missing too, and the key stays free.
    let (_, other_token) = app.new_user();
    let key = fresh_key();
    toggle(&other_token, &id)
        .key(&key)
        .send(&app)
        .await
        .assert_error(404, "TASK_NOT_FOUND");
    let before = stored_task(&db, &id).await;
    let mine = toggle(&token, &id).key(&key).send(&app).await;
    assert_first(&mine, StatusCode::OK);
    assert_ne!(stored_task(&db, &id).await, before, "toggled");
}

#[tokio::test]
async fn a_412_is_not_remembered_and_a_replay_skips_preconditions() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let created = create(&token).body(TITLE_A).send(&app).await;
    assert_first(&created, StatusCode::CREATED);
    let id = id_of(&created);
    let stale = created.header(header::ETAG).unwrap().to_owned();
    let toggled = toggle(&token, &id).send(&app).await;
    assert_first(&toggled, StatusCode::OK);
    let current = toggled.header(header::ETAG).unwrap().to_owned();
    assert_ne!(stale, current);

    let key = fresh_key();
    let with_tag = async |tag: &str| {
        let if_match = [header_field("if-match", tag)];
        let write = update(&token, &id).key(&key).body(TITLE_B);
        write.send_with(&app, &if_match).await
    };
    let failed = with_tag(&stale).await;
    failed.assert_error(412, "PRECONDITION_FAILED");
    assert_eq!(failed.header(header::ETAG), Some(&*current));

    let first = with_tag(&current).await;
    assert_first(&first, StatusCode::OK);
    assert_eq!(data(&first)["title"], "buy bread");
    // The same request (headers are not part of it) replays, before If-Match is checked.
    assert_replay_of(&first, &with_tag(&stale).await);
    assert_replay_of(&first, &with_tag(&current).await);
}

#[tokio::test]
async fn a_422_leaves_the_original_record() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let key = fresh_key();
    let first = create(&token).key(&key).body(TITLE_A).send(&app).await;
    assert_first(&first, StatusCode::CREATED);
    assert_key_reused(&create(&token).key(&key).body(TITLE_B).send(&app).await);
    assert_replay_of(
        &first,
        &create(&token).key(&key).body(TITLE_A).send(&app).await,
    );
}

// ---------------------------------------------------------------------------------------------
// Concurrent copies of one request
// ---------------------------------------------------------------------------------------------

/// Of concurrent copies of one request: at least one success, all successes identical, exactly
/// one of them not a replay (the one that wrote), the rest 409 with `Retry-After`.
fn assert_one_writer(responses: &[TestResponse], status: StatusCode) -> &TestResponse {
    let successes: Vec<&TestResponse> = responses.iter().filter(|r| r.status == status).collect();
    for response in responses.iter().filter(|r| r.status != status) {
        response.assert_error(409, "IDEMPOTENCY_KEY_IN_USE");
    }
    let writers: Vec<&&TestResponse> = successes
        .iter()
        .filter(|r| r.header(REPLAYED).is_none())
        .collect();
    assert_eq!(writers.len(), 1, "exactly one copy writes");
    let writer = writers[0];
    for response in &successes {
        assert_eq!(response.body, writer.body, "every copy answers the same");
        assert_eq!(response.header(header::ETAG), writer.header(header::ETAG));
        assert_eq!(
            response.header(header::LOCATION),
            writer.header(header::LOCATION)
        );
        if response.header(REPLAYED).is_some() {
            assert_eq!(response.header(REPLAYED), Some("true"));
        }
    }
    writer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_with_one_key_create_one_task() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let key = fresh_key();
    let responses = join_all(
        (0..20).map(|_| async { create(&token).key(&key).body(TITLE_A).send(&app).await }),
    )
    .await;
    let writer = assert_one_writer(&responses, StatusCode::CREATED);
    let id = id_of(writer);
    let db = inspect().await;
    assert_eq!(task_count(&db, &user).await, 1);
    assert!(stored_task(&db, &id).await.is_some());
    assert_eq!(client_keys(&db, &user).await, 1);
    // And afterwards: a replay.
    assert_replay_of(
        writer,
        &create(&token).key(&key).body(TITLE_A).send(&app).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_toggles_with_one_key_flip_once() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let id = new_task(&app, &token, "flip once").await;
    let key = fresh_key();
    let responses =
        join_all((0..20).map(|_| async { toggle(&token, &id).key(&key).send(&app).await })).await;
    let writer = assert_one_writer(&responses, StatusCode::OK);
    assert_eq!(data(writer)["is_completed"], true);
    let stored = stored_task(&inspect().await, &id).await.unwrap();
    assert!(stored.1, "flipped exactly once");
    assert_eq!(
        writer.header(header::ETAG),
        Some(&*format!(
            "\"{}\"",
            data(writer)["updated_at"].as_str().unwrap()
        ))
    );
}

/// Polls until some backend waits for a lock `blocker` holds; panics after 10 s.
async fn wait_until_blocked_by(db: &tokio_postgres::Client, blocker: i32) {
    let started = Instant::now();
    loop {
        let waiting: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))",
                &[&blocker],
            )
            .await
            .expect("pg_blocking_pids")
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the request never waited for the key"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A session inside an open transaction that has recorded `key` for `user` (another request's
/// record, not yet committed), and its backend pid.
async fn hold_key(user: &str, key: &str) -> (tokio_postgres::Client, i32) {
    let holder = inspect().await;
    holder.batch_execute("BEGIN").await.expect("BEGIN");
    let pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    holder
        .execute(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, request_id, expires_at)
             VALUES ($1, $2, '\\x00', gen_random_uuid(), now() + interval '1 hour')",
            &[&user, &key],
        )
        .await
        .expect("hold the key");
    (holder, pid)
}

/// A key held by an uncommitted write: a request with it waits; when that write rolls back,
/// the waiting request performs the write itself ("if the first one fails, a waiting one may
/// perform the write instead").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_on_a_key_writes_when_the_holder_rolls_back() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let key = fresh_key();
    let (holder, pid) = hold_key(&user, &key).await;
    let observer = inspect().await;
    let write = create(&token).key(&key).body(TITLE_A);
    let (response, ()) = tokio::join!(write.send(&app), async {
        wait_until_blocked_by(&observer, pid).await;
        holder.batch_execute("ROLLBACK").await.unwrap();
    });
    assert_first(&response, StatusCode::CREATED);
    assert_eq!(task_count(&observer, &user).await, 1);
    assert_eq!(client_keys(&observer, &user).await, 1);
}

/// When the holder commits a record for another request, the waiting request answers 422 and
/// its own write is undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_on_a_key_reads_the_holders_record_when_it_commits() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let key = fresh_key();
    let (holder, pid) = hold_key(&user, &key).await;
    let observer = inspect().await;
    let write = create(&token).key(&key).body(TITLE_A);
    let (response, ()) = tokio::join!(write.send(&app), async {
        wait_until_blocked_by(&observer, pid).await;
        holder.batch_execute("COMMIT").await.unwrap();
    });
    assert_key_reused(&response);
    assert_eq!(
        task_count(&observer, &user).await,
        0,
        "its write was undone"
    );
}

// ---------------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------------

/// Sets the key's `expires_at` (a concurrent purge may then delete the row at once; fine).
async fn age_key(db: &tokio_postgres::Client, user: &str, key: &str, expires_at: &str) {
    db.execute(
        &format!(
            "UPDATE idempotency_keys SET expires_at = {expires_at} WHERE user_id = $1 AND key = $2"
        ),
        &[&user, &key],
    )
    .await
    .expect("age the key");
}

#[tokio::test]
async fn a_client_key_is_kept_at_least_24_hours() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let db = inspect().await;
    for write in ["create", "toggle", "delete"] {
        let key = fresh_key();
        let id = new_task(&app, &token, "kept").await;
        let response = match write {
            "create" => create(&token).key(&key).body(TITLE_A).send(&app).await,
            "toggle" => toggle(&token, &id).key(&key).send(&app).await,
            _ => delete(&token, &id).key(&key).send(&app).await,
        };
        assert!(response.status.is_success(), "{write}: {}", text(&response));
        // `now()` inside the check is at or after the write's transaction time.
        let kept: bool = db
            .query_one(
                "SELECT expires_at >= now() + interval '24 hours' - interval '1 minute'
                 FROM idempotency_keys WHERE user_id = $1 AND key = $2",
                &[&user, &key],
            )
            .await
            .expect("the key's record")
            .get(0);
        assert!(kept, "{write}: kept at least 24 hours after the write");
    }
    // Exactly: for a create, 24 hours after the task's own timestamp (same transaction).
    let key = fresh_key();
    let created = create(&token).key(&key).body(TITLE_B).send(&app).await;
    assert_first(&created, StatusCode::CREATED);
    let exact: bool = db
        .query_one(
            "SELECT k.expires_at >= t.created_at + interval '24 hours'
             FROM idempotency_keys k JOIN tasks t ON t.id = k.task_id
             WHERE k.user_id = $1 AND k.key = $2",
            &[&user, &key],
        )
        .await
        .expect("the key's record")
        .get(0);
    assert!(exact, "expires_at >= write time + 24 h");
}

/// Decision (README "Retries"): a key is remembered for 24 h and then until a write purges it
/// (the contract: "later it may be forgotten"). Once purged, an expired key is purged by the API's own writes, and
/// the same request is then new (a second task, no replay header), and remembered anew.
#[tokio::test]
async fn an_expired_key_is_purged_and_the_same_request_is_then_new() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let key = fresh_key();
    let first = create(&token).key(&key).body(TITLE_A).send(&app).await;
    assert_first(&first, StatusCode::CREATED);
    let db = inspect().await;
    // Older than any other expired key, so the next purges take it first.
    age_key(&db, &user, &key, "timestamptz '1969-01-01 00:00:00Z'").await;
    let (_, other_token) = app.new_user();
    let mut writes = 0;
    while client_keys(&db, &user).await > 0 {
        assert!(
            writes < 10,
            "10 writes did not purge the oldest expired key"
        );
        assert_first(
            &create(&other_token).body(TITLE_B).send(&app).await,
            StatusCode::CREATED,
        );
        writes += 1;
    }

    let again = create(&token).key(&key).body(TITLE_A).send(&app).await;
    assert_first(&again, StatusCode::CREATED);
    assert_ne!(id_of(&again), id_of(&first));
    assert_eq!(task_count(&db, &user).await, 2, "a new request wrote again");
    assert_replay_of(
        &again,
        &create(&token).key(&key).body(TITLE_A).send(&app).await,
    );
}

/// A write purges the oldest expired keys (up to 4) in its own transaction. Each attempt
/// records 3 expired keys of its own, older than any other, and opens a snapshot before one
/// write: after the write, that snapshot still sees the deleted rows and, in `xmax`, the
/// transaction that deleted (or locked) each, which must be the one that inserted the write's
/// task (its `xmin`). Writes of tests running alongside purge too and may take some first; such
/// an attempt is made again with new keys. So the test passes only once it has seen its own
/// write purge all three, and fails at once when a key nobody else touched was left in place.
#[tokio::test]
async fn writes_purge_expired_keys() {
    const ATTEMPTS: i32 = 10;
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let db = inspect().await;
    let mut observer = inspect().await;
    let mut seen = Vec::new();
    for attempt in 1..=ATTEMPTS {
        let owner = common::new_user_id();
        // Older than any key recorded before (the later the insert, the older the keys), so
        // leftovers of earlier attempts or runs never come first.
        db.execute(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, request_id, expires_at)
             SELECT $1, 'expired-' || n, '\\x00', gen_random_uuid(),
                    timestamptz '1960-01-01 00:00:00Z'
                    - extract(epoch FROM clock_timestamp()) * interval '1 second'
                    + n * interval '1 microsecond'
             FROM generate_series(1, 3) n",
            &[&owner],
        )
        .await
        .expect("expired keys");
        let keys_of_owner = "SELECT xmax::text FROM idempotency_keys WHERE user_id = $1";
        let snapshot = observer
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .expect("snapshot");
        let before = snapshot
            .query(keys_of_owner, &[&owner])
            .await
            .expect("keys");

        let created = create(&token).body(TITLE_A).send(&app).await;
        assert_first(&created, StatusCode::CREATED);
        let task = Uuid::parse_str(&id_of(&created)).expect("uuid");
        let writer: String = db
            .query_one("SELECT xmin::text FROM tasks WHERE id = $1", &[&task])
            .await
            .expect("the write's task")
            .get(0);
        let deleted_by: Vec<String> = snapshot
            .query(keys_of_owner, &[&owner])
            .await
            .expect("keys as the snapshot sees them")
            .iter()
            .map(|row| row.get(0))
            .collect();
        snapshot.rollback().await.expect("end the snapshot");
        let remaining = count(
            &db,
            "SELECT count(*) FROM idempotency_keys WHERE user_id = $1",
            &owner,
        )
        .await;

        let others = deleted_by.iter().any(|xmax| xmax != "0" && *xmax != writer);
        if before.len() == 3 && !others {
            assert!(
                deleted_by.iter().all(|xmax| *xmax == writer),
                "the write (transaction {writer}) left the oldest expired keys in place: \
                 deleted by {deleted_by:?}"
            );
            assert_eq!(remaining, 0, "purged by the write yet still stored");
            return;
        }
        seen.push(format!(
            "attempt {attempt}: write {writer}, {} keys before, deleted by {deleted_by:?}, {remaining} left",
            before.len()
        ));
    }
    panic!(
        "other writes purged first in each of {ATTEMPTS} attempts:\n{}",
        seen.join("\n")
    );
}

#[tokio::test]
async fn requests_without_a_key_work_and_leave_a_short_lived_server_record() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let first = create(&token).body(TITLE_A).send(&app).await;
    assert_first(&first, StatusCode::CREATED);
    let second = create(&token).body(TITLE_A).send(&app).await;
    assert_first(&second, StatusCode::CREATED);
    assert_ne!(
        id_of(&first),
        id_of(&second),
        "without a key, a resend is a new task"
    );
    let id = id_of(&first);
    assert_first(&toggle(&token, &id).send(&app).await, StatusCode::OK);
    assert_first(&toggle(&token, &id).send(&app).await, StatusCode::OK);
    assert!(
        !stored_task(&inspect().await, &id).await.unwrap().1,
        "two toggles without a key flip twice"
    );

    let db = inspect().await;
    let rows = db
        .query(
            "SELECT key, expires_at > now() + interval '1 minute',
                    expires_at < now() + interval '1 hour'
             FROM idempotency_keys WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 4, "one server record per write");
    for row in rows {
        let key: String = row.get(0);
        assert!(key.starts_with("req "), "{key}");
        assert!(row.get::<_, bool>(1), "{key}: kept for minutes");
        assert!(row.get::<_, bool>(2), "{key}: not for a day");
    }
}
