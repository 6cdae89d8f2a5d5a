#![forbid(unsafe_code)]
//! 100 concurrent writers through PgBouncer for 30 s while PostgreSQL restarts in the middle:
//! every acknowledged write is stored exactly once, and the only errors are 503s during the
//! outage. Each logical write carries an `Idempotency-Key` and is retried with it after a 503, as
//! the README tells frontends to: none is lost, none doubled.
//!
//! The restart is checked, not assumed: PostgreSQL's `pg_postmaster_start_time()` must have moved
//! on between the start and the end of the run, so a restart command that does nothing fails the
//! test. Without `TASKS_SOAK_RESTART_CMD` the test fails at once rather than soak without one.
//!
//! It restarts the machine's PostgreSQL, so it only runs when asked:
//!     TASKS_SOAK_RESTART_CMD='pg_ctlcluster --skip-systemctl-redirect 15 main restart' \
//!     TEST_DATABASE_URL=postgres://postgres@127.0.0.1:6432/tasks_test \
//!     TEST_DIRECT_DATABASE_URL=postgres://postgres@127.0.0.1:5432/tasks_test \
//!     cargo test --test soak -- --ignored --nocapture
//! (`.ci/run` does this after the other suites.)

mod common;

use std::time::{Duration, Instant};

use common::{bearer, header_field, inspect, json_type, spawn_app_with};
use futures_util::future::join_all;
use http::{Method, StatusCode};
use serde_json::{Value, json};

const CLIENTS: usize = 100;
const RUN: Duration = Duration::from_secs(30);
const RESTART_AT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Tally {
    acknowledged: Vec<uuid::Uuid>,
    titles: Vec<String>,
    unavailable: Vec<Duration>,
    other_errors: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts PostgreSQL; run by .ci/run"]
async fn acknowledged_writes_survive_a_restart_under_load() {
    let Ok(restart) = std::env::var("TASKS_SOAK_RESTART_CMD") else {
        panic!(
            "TASKS_SOAK_RESTART_CMD is not set: this test restarts PostgreSQL and checks that it \
             did; nothing was run"
        );
    };
    let app = spawn_app_with(&[("DATABASE_POOL_SIZE", "16")]).await;
    let postmaster_started_before = postmaster_start_time().await;
    let started = Instant::now();
    let command = restart.clone();
    let restarter = tokio::spawn(async move {
        tokio::time::sleep(RESTART_AT).await;
        let begun = started.elapsed();
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .status()
            .await;
        assert!(status.is_ok_and(|s| s.success()), "restart command failed");
        (begun, started.elapsed())
    });
    let clients = (0..CLIENTS).map(|i| {
        let app = &app;
        async move {
            let (_, token) = app.new_user();
            let mut tally = Tally::default();
            let mut n = 0;
            let mut pending: Option<(String, Value)> = None;
            while started.elapsed() < RUN {
                // A new logical write, or the retry of the one that got a 503.
                let (key, body) = pending.take().unwrap_or_else(|| {
                    n += 1;
                    let title = format!("soak {i}-{n} {}", uuid::Uuid::now_v7());
                    (format!("soak-{i}-{n}"), json!({ "title": title }))
                });
                let headers = [
                    bearer(&token),
                    json_type(),
                    header_field("idempotency-key", &key),
                ];
                let response = app
                    .send_raw(
                        Method::POST,
                        "/api/tasks",
                        &headers,
                        body.to_string().into_bytes(),
                    )
                    .await;
                match response.status {
                    StatusCode::CREATED => {
                        let data = &response.json()["data"];
                        let id = data["id"].as_str().unwrap().parse().unwrap();
                        tally.acknowledged.push(id);
                        tally
                            .titles
                            .push(data["title"].as_str().unwrap().to_owned());
                    }
                    StatusCode::SERVICE_UNAVAILABLE => {
                        pending = Some((key, body));
                        tally.unavailable.push(started.elapsed());
                        // Clients back off as Retry-After asks (shortened: 100 ms).
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => tally
                        .other_errors
                        .push(format!("{other}: {:?}", response.body)),
                }
            }
            tally
        }
    });
    let tallies = join_all(clients).await;
    let (restart_began, restart_ended) = restarter.await.unwrap();

    let acknowledged: Vec<uuid::Uuid> = tallies
        .iter()
        .flat_map(|t| t.acknowledged.clone())
        .collect();
    let unavailable: Vec<Duration> = tallies.iter().flat_map(|t| t.unavailable.clone()).collect();
    let other: Vec<&String> = tallies.iter().flat_map(|t| &t.other_errors).collect();
    let postmaster_started_after = postmaster_start_time().await;
    let db = inspect().await;
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM tasks WHERE id = ANY($1)",
            &[&acknowledged],
        )
        .await
        .unwrap()
        .get(0);
    let titles: Vec<String> = tallies.iter().flat_map(|t| t.titles.clone()).collect();
    let stored_titles: i64 = db
        .query_one(
            "SELECT count(*) FROM tasks WHERE title = ANY($1)",
            &[&titles],
        )
        .await
        .unwrap()
        .get(0);
    let last_503 = unavailable.iter().max().copied().unwrap_or_default();
    let first_503 = unavailable.iter().min().copied().unwrap_or_default();
    eprintln!(
        "soak: {} acknowledged, {} stored, {} x 503 between {:?} and {:?}, restart {:?}..{:?}, other errors {}, postmaster started {} then {}",
        acknowledged.len(),
        stored,
        unavailable.len(),
        first_503,
        last_503,
        restart_began,
        restart_ended,
        other.len(),
        postmaster_started_before,
        postmaster_started_after,
    );
    assert_ne!(
        postmaster_started_before, postmaster_started_after,
        "PostgreSQL did not restart: {restart:?} left the postmaster running"
    );
    assert!(other.is_empty(), "only 503s are allowed: {other:?}");
    assert_eq!(
        stored as usize,
        acknowledged.len(),
        "every acknowledged write is stored"
    );
    assert_eq!(
        stored_titles as usize,
        titles.len(),
        "no acknowledged write was applied twice (a retried write has one row)"
    );
    assert!(acknowledged.len() > 1000, "the load actually ran");
    // 503s only around the restart: from its start to a few seconds after it finished.
    if !unavailable.is_empty() {
        assert!(
            first_503 >= restart_began,
            "503 before the outage: {first_503:?}"
        );
        assert!(
            last_503 <= restart_ended + Duration::from_secs(10),
            "503s long after recovery: {last_503:?}"
        );
    }
}

/// When the PostgreSQL postmaster started: a restart changes it, nothing else does.
async fn postmaster_start_time() -> String {
    inspect()
        .await
        .query_one("SELECT pg_postmaster_start_time()::text", &[])
        .await
        .expect("pg_postmaster_start_time()")
        .get(0)
}
