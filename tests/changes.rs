#![forbid(unsafe_code)]
//! Incremental sync, `GET /api/changes` (CONTRACT 1.2): paging, tokens, history, what counts as
//! a change, and the convergence rule under concurrent writers, against the real database.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::proxy::{Fault, PgProxy};
use common::{TestApp, TestResponse, bearer, json_type, spawn_app, spawn_app_with};
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tasks_shared::tasks::SyncToken;

/// A client's copy of its tasks, kept by applying pages of changes.
#[derive(Default)]
struct Replica {
    tasks: BTreeMap<String, Value>,
    token: Option<String>,
    pages: usize,
}

impl Replica {
    /// Pulls and applies one page; returns `has_more`.
    async fn pull(&mut self, app: &TestApp, token: &str, limit: u32) -> bool {
        let response = changes(app, token, self.token.as_deref(), limit).await;
        assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
        let page = response.json();
        let data = page["data"].as_array().expect("data");
        assert_eq!(page["count"].as_u64(), Some(data.len() as u64));
        assert!(data.len() <= limit as usize);
        for change in data {
            match change["op"].as_str() {
                Some("upsert") => {
                    let task = change["task"].clone();
                    let id = task["id"].as_str().expect("id").to_owned();
                    self.tasks.insert(id, task);
                }
                Some("delete") => {
                    self.tasks.remove(change["id"].as_str().expect("id"));
                }
                other => panic!("unknown op {other:?} in {change}"),
            }
        }
        self.token = Some(page["next_token"].as_str().expect("next_token").to_owned());
        self.pages += 1;
        page["has_more"].as_bool().expect("has_more")
    }

    /// Pulls until a page says `has_more: false`.
    async fn drain(&mut self, app: &TestApp, token: &str, limit: u32) {
        while self.pull(app, token, limit).await {}
    }
}

async fn changes(app: &TestApp, token: &str, since: Option<&str>, limit: u32) -> TestResponse {
    let path = match since {
        Some(since) => format!("/api/changes?limit={limit}&since={since}"),
        None => format!("/api/changes?limit={limit}"),
    };
    app.send(Method::GET, &path, Some(token), None).await
}

/// The user's tasks as the list route gives them, by id.
async fn listed(app: &TestApp, token: &str) -> BTreeMap<String, Value> {
    let mut tasks = BTreeMap::new();
    let mut path = "/api/tasks?limit=500".to_owned();
    loop {
        let page = app.send(Method::GET, &path, Some(token), None).await.json();
        for task in page["data"].as_array().expect("data") {
            tasks.insert(task["id"].as_str().expect("id").to_owned(), task.clone());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/tasks?limit=500&cursor={cursor}"),
            None => return tasks,
        }
    }
}

/// A write with an optional `Idempotency-Key` and `If-Match`.
async fn write(
    app: &TestApp,
    token: &str,
    (method, path): (Method, &str),
    body: Option<&Value>,
    key: Option<&str>,
    if_match: Option<&str>,
) -> TestResponse {
    let mut headers: Vec<(HeaderName, HeaderValue)> = vec![bearer(token), json_type()];
    if let Some(key) = key {
        headers.push((
            HeaderName::from_static("idempotency-key"),
            HeaderValue::from_str(key).expect("key"),
        ));
    }
    if let Some(tag) = if_match {
        headers.push((header::IF_MATCH, HeaderValue::from_str(tag).expect("tag")));
    }
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    app.send_raw(method, path, &headers, body).await
}

/// A write the contract refuses: route, body, `Idempotency-Key`, `If-Match`, then the expected
/// status and error code.
type Refusal<'a> = (
    (Method, &'a str),
    Option<&'a Value>,
    Option<&'a str>,
    Option<&'a str>,
    u16,
    &'a str,
);

/// The user's counter and purge mark as stored.
async fn positions(db: &tokio_postgres::Client, user: &str) -> (i64, i64) {
    db.query_opt(
        "SELECT change_seq, history_purged_through FROM users WHERE id = $1",
        &[&user],
    )
    .await
    .expect("positions")
    .map_or((0, 0), |row| (row.get(0), row.get(1)))
}

fn ids(page: &Value) -> Vec<(String, String)> {
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|change| {
            let op = change["op"].as_str().expect("op").to_owned();
            let id = change["task"]["id"]
                .as_str()
                .or(change["id"].as_str())
                .expect("id");
            (op, id.to_owned())
        })
        .collect()
}

fn upsert(id: &str) -> (String, String) {
    ("upsert".to_owned(), id.to_owned())
}

#[tokio::test]
async fn pages_list_changes_in_commit_order_once_each() {
    let app = spawn_app().await;
    let (_, token) = app.new_user();
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(app.create_task(&token, &format!("task {i}")).await);
    }
    let id = |i: usize| created[i]["id"].as_str().unwrap().to_owned();

    // From scratch: every task, oldest change first, two per page.
    let mut since: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let page = changes(&app, &token, since.as_deref(), 2).await.json();
        since = Some(page["next_token"].as_str().unwrap().to_owned());
        let more = page["has_more"] == true;
        pages.push((ids(&page), more));
        if !more {
            break;
        }
    }
    assert_eq!(
        pages,
        vec![
            (vec![upsert(&id(0)), upsert(&id(1))], true),
            (vec![upsert(&id(2)), upsert(&id(3))], true),
            (vec![upsert(&id(4))], false),
        ]
    );
    assert_eq!(
        changes(&app, &token, since.as_deref(), 2).await.json()["data"],
        json!([])
    );

    // Nothing new: an empty page, no more, and a token that still works.
    let empty = changes(&app, &token, since.as_deref(), 100).await.json();
    assert_eq!(
        (empty["count"].as_u64(), &empty["has_more"]),
        (Some(0), &json!(false))
    );
    let since = empty["next_token"].as_str().unwrap().to_owned();

    // A task changed several times appears once, in its latest state, at its latest position;
    // one created and deleted since appears as a delete only.
    let first = format!("/api/tasks/{}", id(0));
    app.send(
        Method::PATCH,
        &format!("{first}/toggle"),
        Some(&token),
        None,
    )
    .await;
    let renamed = json!({"title": "renamed", "description": "d"});
    app.send(
        Method::PUT,
        &format!("/api/tasks/{}", id(3)),
        Some(&token),
        Some(&renamed),
    )
    .await;
    app.send(Method::PUT, &first, Some(&token), Some(&renamed))
        .await;
    let fleeting = app.create_task(&token, "fleeting").await;
    let fleeting_id = fleeting["id"].as_str().unwrap();
    let deleted = app
        .send(
            Method::DELETE,
            &format!("/api/tasks/{fleeting_id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let page = changes(&app, &token, Some(&since), 100).await.json();
    assert_eq!(
        ids(&page),
        vec![
            upsert(&id(3)),
            upsert(&id(0)),
            ("delete".to_owned(), fleeting_id.to_owned())
        ]
    );
    let latest = app
        .send(Method::GET, &first, Some(&token), None)
        .await
        .json();
    assert_eq!(page["data"][1]["task"], latest["data"], "the latest state");
    assert_eq!(page["has_more"], false);

    // A sync from scratch now need not list the deletion of a task it never held.
    let mut fresh = Replica::default();
    fresh.drain(&app, &token, 3).await;
    assert_eq!(fresh.tasks, listed(&app, &token).await);
    assert_eq!(fresh.tasks.len(), 5);
}

#[tokio::test]
async fn tokens_are_bound_to_their_user_and_to_positions_reached() {
    let app = spawn_app().await;
    let (alice, alice_token) = app.new_user();
    let (bob, bob_token) = app.new_user();
    app.create_task(&alice_token, "alice's").await;
    app.create_task(&alice_token, "alice's too").await;

    // Isolation: bob sees nothing of alice's.
    let bobs = changes(&app, &bob_token, None, 100).await.json();
    assert_eq!(bobs["data"], json!([]));
    let alices = changes(&app, &alice_token, None, 100).await.json();
    assert_eq!(alices["count"], 2);
    let alice_since = alices["next_token"].as_str().unwrap();

    let refused = |response: TestResponse, field: &str| {
        let body = response.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(body["error"]["details"]["field"], field, "{body}");
    };
    // Another user's token, as is or with its tag recomputed for nobody in particular.
    refused(
        changes(&app, &bob_token, Some(alice_since), 10).await,
        "since",
    );
    // Malformed.
    for since in [
        "x",
        "",
        "%00",
        &alice_since[1..],
        &format!("{alice_since}A"),
    ] {
        let path = format!("/api/changes?since={since}");
        refused(
            app.send(Method::GET, &path, Some(&alice_token), None).await,
            "since",
        );
    }
    // Ahead of alice's counter (2): a position or a start no token of hers can hold.
    for (started, position) in [(0, 3), (3, 3), (3, 0), (0, i64::MAX)] {
        let ahead = SyncToken { started, position }.encode(&alice);
        refused(changes(&app, &alice_token, Some(&ahead), 10).await, "since");
    }
    let at_counter = SyncToken {
        started: 0,
        position: 2,
    }
    .encode(&alice);
    let page = changes(&app, &alice_token, Some(&at_counter), 10).await;
    assert_eq!(page.status, StatusCode::OK);
    // A user who never wrote is at position 0.
    let zero = SyncToken {
        started: 0,
        position: 0,
    }
    .encode(&bob);
    assert_eq!(
        changes(&app, &bob_token, Some(&zero), 10).await.status,
        StatusCode::OK
    );
    // Bad limits.
    for limit in ["0", "501", "ten", "-1", ""] {
        let path = format!("/api/changes?limit={limit}");
        refused(
            app.send(Method::GET, &path, Some(&alice_token), None).await,
            "limit",
        );
    }
    // Authentication comes first.
    app.send(Method::GET, "/api/changes?since=x", None, None)
        .await
        .assert_error(401, "UNAUTHORIZED");
}

#[tokio::test]
async fn replays_and_failed_writes_add_no_change() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let db = common::inspect().await;
    let task = app.create_task(&token, "kept").await;
    let item = format!("/api/tasks/{}", task["id"].as_str().unwrap());
    let keyed = json!({"title": "keyed"});
    let create_keyed = || {
        write(
            &app,
            &token,
            (Method::POST, "/api/tasks"),
            Some(&keyed),
            Some("k-1"),
            None,
        )
    };
    assert_eq!(create_keyed().await.status, StatusCode::CREATED);
    let mut replica = Replica::default();
    replica.drain(&app, &token, 100).await;
    let before = positions(&db, &user).await;
    assert_eq!(before.0, 2);

    let replay = create_keyed().await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    // Every refusal the contract orders before the write: none may move the counter.
    let other = json!({"title": "other"});
    let empty = json!({"title": ""});
    let stale = "\"2020-01-01T00:00:00.000000Z\"";
    let toggle = format!("{item}/toggle");
    let missing = format!("/api/tasks/{}", uuid::Uuid::now_v7());
    #[rustfmt::skip]
    let refused: [Refusal; 6] = [
        ((Method::POST, "/api/tasks"), Some(&other), Some("k-1"), None, 422, "IDEMPOTENCY_KEY_REUSED"),
        ((Method::PATCH, &toggle), None, None, Some(stale), 412, "PRECONDITION_FAILED"),
        ((Method::DELETE, &item), None, Some("k-2"), Some(stale), 412, "PRECONDITION_FAILED"),
        ((Method::PUT, &missing), Some(&other), None, None, 404, "TASK_NOT_FOUND"),
        ((Method::DELETE, &missing), None, Some("k-3"), None, 404, "TASK_NOT_FOUND"),
        ((Method::PUT, &item), Some(&empty), None, None, 400, "VALIDATION_ERROR"),
    ];
    for (route, body, key, if_match, status, code) in refused {
        write(&app, &token, route, body, key, if_match)
            .await
            .assert_error(status, code);
    }

    assert_eq!(
        positions(&db, &user).await,
        before,
        "the counter did not move"
    );
    assert!(!replica.pull(&app, &token, 100).await);
    assert_eq!(replica.pages, 2);
    let page = changes(&app, &token, replica.token.as_deref(), 100)
        .await
        .json();
    assert_eq!(page["data"], json!([]), "no change recorded");
}

#[tokio::test]
async fn a_token_older_than_the_kept_history_is_410_and_a_sync_from_scratch_finishes() {
    let app = spawn_app_with(&[("CHANGES_RETENTION_SECONDS", "60")]).await;
    let (user, token) = app.new_user();
    let db = common::inspect().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let task = app.create_task(&token, &format!("t{i}")).await;
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    let mut old_client = Replica::default();
    old_client.drain(&app, &token, 100).await; // holds positions 1–3
    let deleted = app
        .send(
            Method::DELETE,
            &format!("/api/tasks/{}", ids[0]),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT); // position 4

    // A sync from scratch starts (at 4) and reads one page.
    let mut fresh = Replica::default();
    assert!(fresh.pull(&app, &token, 1).await, "more to come");

    // A deletion younger than the retention survives writes.
    let toggle = format!("/api/tasks/{}/toggle", ids[1]);
    app.send(Method::PATCH, &toggle, Some(&token), None).await; // 5
    assert_eq!(positions(&db, &user).await, (5, 0));
    // Older than the retention: the user's next write purges it.
    let aged = db
        .execute(
            "UPDATE task_deletions SET deleted_at = now() - interval '1 hour' WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    assert_eq!(aged, 1);
    app.send(Method::PATCH, &toggle, Some(&token), None).await; // 6
    assert_eq!(positions(&db, &user).await, (6, 4));
    let kept: i64 = db
        .query_one(
            "SELECT count(*) FROM task_deletions WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 0);

    // The old client may have missed that deletion: 410, and it starts again.
    changes(&app, &token, old_client.token.as_deref(), 100)
        .await
        .assert_error(410, "SYNC_TOKEN_EXPIRED");
    let mut restarted = Replica::default();
    restarted.drain(&app, &token, 100).await;
    assert_eq!(restarted.tasks, listed(&app, &token).await);

    // The sync from scratch never needed it (it started after the deletion): it finishes.
    fresh.drain(&app, &token, 1).await;
    assert_eq!(fresh.tasks, listed(&app, &token).await);
    assert_eq!(fresh.tasks.len(), 2);
}

#[tokio::test]
async fn a_write_resent_after_a_lost_answer_adds_exactly_one_change() {
    common::prepare_database().await;
    let proxy = PgProxy::start(common::pooled_upstream()).await;
    let url = proxy.url_for(&common::test_database_url());
    let app = spawn_app_with(&[("DATABASE_URL", &url), ("DATABASE_POOL_SIZE", "1")]).await;
    let (user, token) = app.new_user();
    let db = common::inspect().await;
    let task = app.create_task(&token, "warm-up").await;
    let item = format!("/api/tasks/{}", task["id"].as_str().unwrap());
    let mut replica = Replica::default();
    replica.drain(&app, &token, 100).await;
    proxy.take_counts();

    let writes: [(Method, String, Option<Value>); 3] = [
        (
            Method::POST,
            "/api/tasks".to_owned(),
            Some(json!({"title": "resent"})),
        ),
        (Method::PATCH, format!("{item}/toggle"), None),
        (Method::DELETE, item.clone(), None),
    ];
    for (method, path, body) in writes {
        let (counter, _) = positions(&db, &user).await;
        assert_eq!(proxy.fault_established(Fault::LoseAnswer), 1, "armed");
        let response = app
            .send(method.clone(), &path, Some(&token), body.as_ref())
            .await;
        assert!(
            response.status.is_success(),
            "{method}: {:?}",
            response.body
        );
        assert!(
            proxy.take_counts().connections >= 1,
            "{method}: the answer was lost and resent"
        );
        assert_eq!(
            positions(&db, &user).await.0,
            counter + 1,
            "{method}: one change"
        );
        assert!(!replica.pull(&app, &token, 100).await);
        let page = changes(&app, &token, None, 100).await.json();
        assert_eq!(page["count"].as_u64(), Some(replica.tasks.len() as u64));
    }
    assert_eq!(replica.tasks, listed(&app, &token).await);
    assert_eq!(replica.tasks.len(), 1, "the resent create; warm-up deleted");
}

/// One writer's random work: creates, updates, toggles and deletes over the tasks any writer
/// created; some writes carry an `Idempotency-Key` and are sent twice (the second a replay).
async fn random_writes(
    app: Arc<TestApp>,
    token: String,
    seed: u64,
    writer: u64,
    ids: Arc<std::sync::Mutex<Vec<String>>>,
) {
    let mut rng = SmallRng::seed_from_u64(seed * 31 + writer);
    for step in 0..25 {
        let known = ids.lock().unwrap().clone();
        let key = rng
            .random_bool(0.3)
            .then(|| format!("w{seed}-{writer}-{step}"));
        let pick = |rng: &mut SmallRng| known.get(rng.random_range(0..known.len().max(1))).cloned();
        let choice = if known.is_empty() {
            0
        } else {
            rng.random_range(0..10)
        };
        let (method, path, body) = match (choice, pick(&mut rng)) {
            (0..=2, _) | (_, None) => (
                Method::POST,
                "/api/tasks".to_owned(),
                Some(
                    json!({"title": format!("t {writer}-{step}"), "description": rng.random_bool(0.5).then_some("d")}),
                ),
            ),
            (3..=4, Some(id)) => (
                Method::PUT,
                format!("/api/tasks/{id}"),
                Some(
                    json!({"title": format!("u {writer}-{step}"), "is_completed": rng.random_bool(0.5)}),
                ),
            ),
            (5..=7, Some(id)) => (Method::PATCH, format!("/api/tasks/{id}/toggle"), None),
            (_, Some(id)) => (Method::DELETE, format!("/api/tasks/{id}"), None),
        };
        let sends = if key.is_some() { 2 } else { 1 };
        for _ in 0..sends {
            let response = write(
                &app,
                &token,
                (method.clone(), &path),
                body.as_ref(),
                key.as_deref(),
                None,
            )
            .await;
            let status = response.status.as_u16();
            assert!(
                matches!(status, 200 | 201 | 204 | 404),
                "{method} {path}: {status} {:?}",
                response.body
            );
            if status == 201 {
                let id = response.json()["data"]["id"].as_str().unwrap().to_owned();
                let mut ids = ids.lock().unwrap();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
    }
}

/// CONTRACT "No change is ever missed or reordered": a client that syncs from scratch and
/// applies every page while others write holds exactly the listed tasks once a page says
/// `has_more: false` after the last write committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_syncing_client_converges_while_three_writers_run() {
    let app = Arc::new(spawn_app().await);
    for seed in [1, 2, 3] {
        let (_, token) = app.new_user();
        let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stopped = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..3)
            .map(|writer| {
                tokio::spawn(random_writes(
                    app.clone(),
                    token.clone(),
                    seed,
                    writer,
                    ids.clone(),
                ))
            })
            .collect();
        let syncer = {
            let (app, token, stopped) = (app.clone(), token.clone(), stopped.clone());
            tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(seed);
                let mut replica = Replica::default();
                loop {
                    // Read before the page: only a page requested after the writers stopped counts.
                    let after_writes = stopped.load(Ordering::SeqCst);
                    let more = replica.pull(&app, &token, rng.random_range(1..=4)).await;
                    if after_writes && !more {
                        return replica;
                    }
                }
            })
        };
        for writer in writers {
            writer.await.expect("writer");
        }
        stopped.store(true, Ordering::SeqCst);
        let replica = syncer.await.expect("syncer");
        let expected = listed(&app, &token).await;
        assert!(
            replica.pages > 3,
            "seed {seed}: pages interleaved with writes"
        );
        assert!(!expected.is_empty(), "seed {seed}");
        assert_eq!(
            replica.tasks, expected,
            "seed {seed}: the synced copy is the list"
        );
    }
}

/// Why the position is a counter taken under the user's lock and not `updated_at`: a write
/// stamps `now()`, its transaction's start, but commits later; a reader that already moved past
/// a later-stamped change never sees it. Here the timestamp variant of the page read (a test-only
/// statement, below) misses a task for good, while the API's sync does not.
#[tokio::test]
async fn a_position_taken_from_updated_at_would_miss_a_change() {
    let app = spawn_app().await;
    let (user, token) = app.new_user();
    let db = common::inspect().await;
    app.create_task(&token, "a").await;
    let mut counter_sync = Replica::default();
    counter_sync.drain(&app, &token, 100).await;

    // A write whose transaction starts (and takes its `now()`) first …
    let slow = common::inspect().await;
    slow.batch_execute("BEGIN; SELECT now()").await.unwrap();
    // … while another write, started later, commits first.
    app.create_task(&token, "b").await;

    // The timestamp variant reads everything so far and remembers the newest `updated_at`.
    let by_updated_at = "SELECT id::text, updated_at FROM tasks WHERE user_id = $1 \
                         AND updated_at > $2 ORDER BY updated_at, id";
    let epoch = std::time::SystemTime::UNIX_EPOCH;
    let mut timestamp_copy = std::collections::BTreeSet::new();
    let mut since = epoch;
    for row in db.query(by_updated_at, &[&user, &since]).await.unwrap() {
        timestamp_copy.insert(row.get::<_, String>(0));
        since = row.get(1);
    }
    counter_sync.drain(&app, &token, 100).await;

    // The first write commits now, stamped before `since`.
    let late = uuid::Uuid::now_v7();
    slow.query(
        "SELECT * FROM tasks_write_v2('create', $1, $2, NULL, $3, '\\x00', $1, 60, NULL, 'late', \
         NULL, NULL, 2592000)",
        &[&late, &user, &format!("req {late}")],
    )
    .await
    .unwrap();
    slow.batch_execute("COMMIT").await.unwrap();

    for row in db.query(by_updated_at, &[&user, &since]).await.unwrap() {
        timestamp_copy.insert(row.get::<_, String>(0));
    }
    counter_sync.drain(&app, &token, 100).await;
    let expected = listed(&app, &token).await;
    assert_eq!(expected.len(), 3);
    let expected_ids: std::collections::BTreeSet<String> = expected.keys().cloned().collect();
    assert_ne!(
        timestamp_copy, expected_ids,
        "updated_at positions lose the late commit"
    );
    assert!(!timestamp_copy.contains(&late.to_string()));
    assert_eq!(counter_sync.tasks, expected, "counter positions do not");
}

/// Issue 20: the request-key mechanism exists once in the live database; the V5 functions the
/// previous release calls are wrappers over it.
#[tokio::test]
async fn the_write_mechanism_is_written_once() {
    common::prepare_database().await;
    let db = common::inspect().await;
    let definition = |name: &'static str| {
        let db = &db;
        async move {
            db.query_one(
                "SELECT pg_get_functiondef(p.oid) FROM pg_proc p WHERE p.proname = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
        }
    };
    for name in [
        "tasks_create_v1",
        "tasks_update_v1",
        "tasks_toggle_v1",
        "tasks_delete_v1",
    ] {
        let wrapper = definition(name).await;
        assert!(wrapper.contains("tasks_write_v2("), "{name}: {wrapper}");
        assert!(!wrapper.contains("idempotency_keys"), "{name}: {wrapper}");
    }
    let core = definition("tasks_write_v2").await;
    assert_eq!(core.matches("INSERT INTO idempotency_keys").count(), 1);
    assert_eq!(core.matches("DELETE FROM idempotency_keys").count(), 1);
    assert_eq!(
        core.matches("SET change_seq = u.change_seq + 1").count(),
        2,
        "create's upsert and the others' update"
    );
}
