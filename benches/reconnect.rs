#![forbid(unsafe_code)]
//! What a reconnect costs against a statement on a warm connection (BENCHMARKS.md "Reconnect";
//! the idle-connection rule in `shared/src/db/mod.rs` rests on it):
//!
//! - `warm_statement`: `SELECT 1` (`query_typed`, as the API sends every statement) on an open
//!   plain connection to the local PostgreSQL;
//! - `connect_plain`: connect (no TLS, trust auth) + `SELECT 1`, same server;
//! - `connect_tls_scram`: connect with verified TLS (rustls, ring) + SCRAM-SHA-256 with
//!   `channel_binding=require` + `SELECT 1`, against a throwaway cluster with `ssl=on`
//!   (`tests/common/tls_cluster.rs`; `SKIPPED` when PostgreSQL's server tools are missing).
//!
//! `cargo bench --bench reconnect`; `cargo test --benches` runs each once. The local server is
//! `postgres://postgres@127.0.0.1:5432/postgres`, or `RECONNECT_BENCH_URL`. Connections are
//! closed outside the timed section. After benchmarking (not in test mode) each bench also
//! measures the client's own CPU time per run (this thread's, from /proc/thread-self/schedstat),
//! printed after divan's table: the part a CPU-starved Lambda would stretch.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use divan::Bencher;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_postgres::config::{ChannelBinding, SslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, NoTls, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

#[path = "../tests/common/tls_cluster.rs"]
mod tls_cluster;

/// Connections measured outside divan for the client CPU figure.
const CPU_RUNS: u32 = 100;

/// Client CPU lines, printed after divan's table (printing during it would break its lines).
static CPU_REPORT: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn main() {
    divan::main();
    for line in CPU_REPORT.lock().unwrap().iter() {
        println!("{line}");
    }
}

fn report(line: String) {
    CPU_REPORT.lock().unwrap().push(line);
}

/// `cargo test --benches` runs the binary without `--bench`; `cargo bench` passes it.
fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

type ConnectionTask = JoinHandle<Result<(), tokio_postgres::Error>>;

/// The local PostgreSQL, in plain text (as local development runs).
fn local_config() -> Config {
    let url = std::env::var("RECONNECT_BENCH_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut config: Config = url.parse().expect("RECONNECT_BENCH_URL");
    config.ssl_mode(SslMode::Disable);
    config
}

async fn select_one(client: &Client) {
    let rows = client.query_typed("SELECT 1", &[]).await.expect("SELECT 1");
    assert_eq!(rows[0].get::<_, i32>(0), 1);
}

/// A new connection that has answered its first statement.
async fn connect_and_select<T>(config: &Config, tls: T) -> (Client, ConnectionTask)
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await.expect("connect");
    let task = tokio::spawn(connection);
    select_one(&client).await;
    (client, task)
}

/// Closes a connection politely (Terminate) and waits until it is gone.
async fn close(client: Client, task: ConnectionTask) {
    drop(client);
    let _ = task.await;
}

/// Benchmarks connect + `SELECT 1`, then (not in test mode) prints the client's CPU time per
/// connect. Each sample is one connect; the connection is closed before the next sample
/// starts, outside the timed section.
fn bench_connect<T>(bencher: Bencher, name: &str, config: &Config, tls: T)
where
    T: MakeTlsConnect<Socket> + Clone,
    T::Stream: Send + 'static,
{
    let rt = runtime();
    // Connection tasks whose client the previous sample dropped: awaited between samples.
    let closing: RefCell<Vec<ConnectionTask>> = RefCell::new(Vec::new());
    bencher
        .with_inputs(|| {
            let tasks: Vec<ConnectionTask> = closing.borrow_mut().drain(..).collect();
            rt.block_on(async {
                for task in tasks {
                    let _ = task.await;
                }
            });
        })
        .bench_local_values(|()| {
            let (client, task) = rt.block_on(connect_and_select(config, tls.clone()));
            closing.borrow_mut().push(task);
            client // dropped by divan after the sample's timing
        });
    let tasks: Vec<ConnectionTask> = closing.borrow_mut().drain(..).collect();
    rt.block_on(async {
        for task in tasks {
            let _ = task.await;
        }
    });
    if test_mode() {
        return;
    }
    let cpu = client_cpu(
        &rt,
        CPU_RUNS,
        || connect_and_select(config, tls.clone()),
        |(client, task)| rt.block_on(close(client, task)),
    );
    report(match cpu {
        Some((cpu, wall)) => format!(
            "{name}: client CPU {:.3} ms of {:.3} ms wall per connect + SELECT 1 (mean of {CPU_RUNS})",
            cpu.as_secs_f64() * 1e3,
            wall.as_secs_f64() * 1e3,
        ),
        None => format!("{name}: client CPU not measured (no /proc/thread-self/schedstat)"),
    });
}

/// Mean CPU time of this thread, and mean wall time, per run of `step` (awaited on this thread:
/// with the current-thread runtime and no DNS look-up, all the client's work runs here).
/// `after` runs outside the measurement. `None` when the CPU time cannot be read.
fn client_cpu<O, F: Future<Output = O>>(
    rt: &Runtime,
    runs: u32,
    mut step: impl FnMut() -> F,
    mut after: impl FnMut(O),
) -> Option<(Duration, Duration)> {
    let mut cpu = Duration::ZERO;
    let mut wall = Duration::ZERO;
    for _ in 0..runs {
        let (cpu_before, started) = (thread_cpu()?, Instant::now());
        let output = rt.block_on(step());
        let (cpu_after, ended) = (thread_cpu()?, Instant::now());
        cpu += cpu_after.saturating_sub(cpu_before);
        wall += ended - started;
        after(output);
    }
    Some((cpu / runs, wall / runs))
}

/// CPU time this thread has run (first field of /proc/thread-self/schedstat, nanoseconds;
/// updated at every context switch, so exact enough right after an await that blocked).
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// What a live idle connection costs its next statement: one round trip.
#[divan::bench(sample_count = 300, sample_size = 20)]
fn warm_statement(bencher: Bencher) {
    let rt = runtime();
    let (client, task) = rt.block_on(connect_and_select(&local_config(), NoTls));
    bencher.bench_local(|| rt.block_on(select_one(&client)));
    if !test_mode() {
        let runs = 20 * CPU_RUNS;
        let cpu = client_cpu(&rt, runs, || select_one(&client), |()| ());
        report(match cpu {
            Some((cpu, wall)) => format!(
                "warm_statement: client CPU {:.1} µs of {:.1} µs wall per SELECT 1 (mean of {runs})",
                cpu.as_secs_f64() * 1e6,
                wall.as_secs_f64() * 1e6,
            ),
            None => "warm_statement: client CPU not measured".to_owned(),
        });
    }
    rt.block_on(close(client, task));
}

/// A reconnect to a server that trusts the client: TCP, startup, backend start, `SELECT 1`.
#[divan::bench(sample_count = 200, sample_size = 1)]
fn connect_plain(bencher: Bencher) {
    bench_connect(bencher, "connect_plain", &local_config(), NoTls);
}

/// A reconnect as to Neon: TCP, TLS handshake with certificate verification, SCRAM-SHA-256
/// (PBKDF2 on the client) bound to the TLS channel, backend start, `SELECT 1`.
#[divan::bench(sample_count = 100, sample_size = 1)]
fn connect_tls_scram(bencher: Bencher) {
    let Some(cluster) = tls_cluster::TlsCluster::start() else {
        eprintln!("SKIPPED connect_tls_scram: initdb/pg_ctl not installed");
        return;
    };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cluster.ca_der.clone().into())
        .expect("CA certificate");
    // As the pool builds it (shared/src/db/mod.rs `tls_config`): ring, default protocol
    // versions, one config for every connection.
    let tls_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = MakeRustlsConnect::new(tls_config);
    let mut config = Config::new();
    config
        // Verified against the certificate's name; the address is given, so no DNS look-up.
        .host("localhost")
        .hostaddr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .port(cluster.port)
        .user("postgres")
        .password(tls_cluster::PASSWORD)
        .dbname("postgres")
        .ssl_mode(SslMode::Require)
        .channel_binding(ChannelBinding::Require);
    bench_connect(bencher, "connect_tls_scram", &config, tls);
}
