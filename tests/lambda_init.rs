#![forbid(unsafe_code)]
//! A Lambda function does its cold work in init (issue 17): the real binaries under the
//! in-test Runtime API, the database behind the fault proxy. Init opens the database
//! connection before the function asks for its first event; a database that hangs, or one that
//! is down, holds init up for at most [`WARM_UP_BOUND`] and never fails it; the first request
//! then gets what any request gets (503 within the contract's 5 s while the database stays
//! away, 200 once it is back), and a connection made in init that the network dropped silently
//! before the first event costs a reconnect, not a 503.

mod common;

use std::time::{Duration, Instant};

use common::events::{authorize, event};
use common::functions::{Function, body_json};
use common::proxy::{Fault, Mode, PgProxy};
use common::{inspect, prepare_database, test_database_url};
use serde_json::{Value, json};
use tasks_shared::db::IDLE_SUSPECT_AFTER;
use tasks_shared::lambda::WARM_UP_BOUND;
use tasks_tools::tokens::hs256_for;

const SECRET: &str = "lambda-init-test-secret-0123456789abcdef";
/// The contract's bound on a 503 (default settings), counted from the process start.
const CONTRACT_503: Duration = Duration::from_secs(5);
/// Process start and the rest of init on a busy machine (debug binaries): init may take this
/// much longer than its warm-up wait.
const INIT_SLACK: Duration = Duration::from_millis(1000);

/// A function process whose database is behind `proxy`, and when it was started.
async fn start(name: &str, proxy: &PgProxy) -> (Function, Instant) {
    let vars = [
        ("DATABASE_URL", proxy.url_for(&test_database_url())),
        ("JWT_SECRET", SECRET.to_owned()),
    ];
    // Built (on first use) before the clock starts.
    common::functions::binaries_dir();
    let started = Instant::now();
    (Function::start(name, &vars).await, started)
}

/// How long after `started` the function asked for its first event (the end of its init).
/// The Runtime API records that moment but announces it to nobody, so this looks every 5 ms.
async fn init_duration(function: &Function, started: Instant) -> Duration {
    let deadline = started + Duration::from_secs(10);
    loop {
        if let Some(first_poll) = function.api.first_poll() {
            return first_poll - started;
        }
        assert!(
            Instant::now() < deadline,
            "the function never asked for an event"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn list_event(user: &str) -> Value {
    authorize(event("list-tasks"), &hs256_for(SECRET, user))
}

#[tokio::test]
async fn the_database_connection_is_made_in_init() {
    prepare_database().await;
    let proxy = PgProxy::start(common::pooled_upstream()).await;
    // A database slow to accept (a compute waking up), well within the bound: init waits it out.
    let accept_delay = WARM_UP_BOUND / 2;
    proxy.delay_connects(accept_delay);
    let (function, started) = start("list-tasks", &proxy).await;
    let init = init_duration(&function, started).await;
    eprintln!("init with a {accept_delay:?} connect: {init:?}");
    assert!(
        init >= accept_delay,
        "init did not wait for the connection: {init:?}"
    );
    assert_eq!(
        proxy.take_counts().connections,
        1,
        "connected before the first event"
    );

    let sent = Instant::now();
    let document = function.respond(&list_event(&common::new_user_id())).await;
    let first_request = sent.elapsed();
    eprintln!("first request: {first_request:?}");
    assert_eq!(document["statusCode"], 200, "{document}");
    assert_eq!(
        proxy.take_counts().connections,
        0,
        "the first request used init's connection"
    );
    assert!(
        first_request < accept_delay,
        "the first request waited for a connect: {first_request:?}"
    );
}

#[tokio::test]
async fn a_hanging_database_holds_init_up_for_the_bound_only_and_the_first_request_gets_503() {
    prepare_database().await;
    let proxy = PgProxy::start(common::pooled_upstream()).await;
    // TCP is accepted, nothing is answered.
    proxy.set(Mode::Hold);
    let (function, started) = start("list-tasks", &proxy).await;
    let init = init_duration(&function, started).await;
    eprintln!("init with a hanging database: {init:?}");
    assert!(
        init >= WARM_UP_BOUND,
        "init did not wait for the connection: {init:?}"
    );
    assert!(init < WARM_UP_BOUND + INIT_SLACK, "init hung: {init:?}");
    assert_eq!(
        proxy.take_counts().connections,
        1,
        "init's connection was held"
    );

    let document = function.respond(&list_event(&common::new_user_id())).await;
    eprintln!(
        "first request's 503 after {:?} from the process start",
        started.elapsed()
    );
    assert_eq!(document["statusCode"], 503, "{document}");
    assert_eq!(body_json(&document)["error"]["code"], "SERVICE_UNAVAILABLE");
    assert!(document["headers"]["retry-after"].is_string(), "{document}");
    assert!(
        started.elapsed() < CONTRACT_503,
        "503 after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_database_back_after_init_serves_the_first_request() {
    prepare_database().await;
    let proxy = PgProxy::start(common::pooled_upstream()).await;
    proxy.set(Mode::Hold);
    let (function, started) = start("list-tasks", &proxy).await;
    let init = init_duration(&function, started).await;
    assert!(init >= WARM_UP_BOUND, "init did not wait: {init:?}");

    proxy.set(Mode::Open);
    let sent = Instant::now();
    let document = function.respond(&list_event(&common::new_user_id())).await;
    eprintln!(
        "first request after the database came back: {:?}",
        sent.elapsed()
    );
    assert_eq!(document["statusCode"], 200, "{document}");
    assert_eq!(
        proxy.take_counts().connections,
        1,
        "the first request joined init's connection instead of opening another"
    );
}

#[tokio::test]
async fn a_refused_database_does_not_hold_init_up_and_the_first_request_gets_503() {
    prepare_database().await;
    let proxy = PgProxy::start(common::pooled_upstream()).await;
    proxy.set(Mode::Refuse);
    let (function, started) = start("list-tasks", &proxy).await;
    let init = init_duration(&function, started).await;
    eprintln!("init with a refusing database: {init:?}");
    assert!(init < WARM_UP_BOUND + INIT_SLACK, "init hung: {init:?}");

    let sent = Instant::now();
    let document = function.respond(&list_event(&common::new_user_id())).await;
    eprintln!("first request's 503 after {:?}", sent.elapsed());
    assert_eq!(document["statusCode"], 503, "{document}");
    assert_eq!(body_json(&document)["error"]["code"], "SERVICE_UNAVAILABLE");
    assert!(started.elapsed() < CONTRACT_503);

    proxy.set(Mode::Open);
    let document = function.respond(&list_event(&common::new_user_id())).await;
    assert_eq!(document["statusCode"], 200, "{document}");
    assert_eq!(
        proxy.take_counts().connections,
        1,
        "one connection, made once the database was back"
    );
}

#[tokio::test]
async fn a_connection_made_in_init_and_dropped_silently_before_the_first_event_serves_it() {
    prepare_database().await;
    let proxy = PgProxy::start(common::pooled_upstream()).await;
    let (function, started) = start("create-task", &proxy).await;
    init_duration(&function, started).await;
    assert_eq!(proxy.take_counts().connections, 1, "connected in init");
    // The instance waits for its first event long enough for the connection to be suspect,
    // and the network forgets it meanwhile.
    tokio::time::sleep(IDLE_SUSPECT_AFTER).await;
    assert_eq!(proxy.fault_established(Fault::SilentDrop), 1);

    let user = common::new_user_id();
    let title = format!("after a silent drop {}", uuid::Uuid::now_v7());
    let mut create = authorize(event("create-task"), &hs256_for(SECRET, &user));
    create["body"] = json!(json!({ "title": title }).to_string());
    let sent = Instant::now();
    let document = function.respond(&create).await;
    let elapsed = sent.elapsed();
    eprintln!("first request on a silently dropped init connection: {elapsed:?}");
    assert_eq!(document["statusCode"], 201, "{document}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    let stored: i64 = inspect()
        .await
        .query_one(
            "SELECT count(*) FROM tasks WHERE user_id = $1 AND title = $2",
            &[&user, &title],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 1, "created exactly once");
    assert!(
        proxy.take_counts().connections >= 1,
        "the dropped connection was replaced"
    );
}
