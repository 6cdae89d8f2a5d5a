#![forbid(unsafe_code)]
//! A local API Gateway (HTTP API, payload 2.0) + Lambda service for the real function
//! binaries, with Lambda's concurrency model — a development and benchmarking tool, not part
//! of any shipped function.
//!
//!     fleet --bin-dir target/release [--listen 127.0.0.1:9000] [--idle-timeout 60]
//!           [--max-instances N] [--throttle] [--timeout 30] [--quiet]
//!
//! Each request is matched against `ROUTES` (anything else goes to the `not-found` catch-all,
//! as `template.yaml`'s `$default` route), turned into the API Gateway v2 event and handed to an
//! *instance* of that route's function: one child process of its binary in `--bin-dir`, with the
//! Lambda environment and its own Runtime API endpoint (`tasks_tools::runtime_api`), serving one
//! request at a time. A request that finds every instance of its function busy starts a new one
//! (a cold start); an instance idle for `--idle-timeout` seconds is stopped (scale to zero).
//! `--max-instances` caps the instances per function (like reserved concurrency): further
//! requests wait for a free instance, or get 429 with `--throttle`. The function's response
//! document becomes the HTTP response (status, `headers`, `multiValueHeaders`, `cookies`, body,
//! base64). The function processes inherit the fleet's environment (`DATABASE_URL`,
//! `JWT_SECRET`, …) plus the Lambda variables.
//!
//! Failures are answered the way a gateway would: the function failed to start, crashed,
//! posted an error or a malformed document → 502; it ran past `--timeout` → 504 (and the
//! instance is replaced); request body over Lambda's 6 MB payload limit → 413.
//!
//! `GET /_fleet/stats` answers the counters as JSON (`?reset=1` also resets them): cold starts,
//! live and peak instances (total and per function), per-instance init time (spawn → first
//! `invocation/next`, Lambda's "Init Duration") and peak RSS (`VmHWM`), and the peak of the
//! fleet's total RSS (sum of `VmRSS`, sampled every 500 ms). The same summary is printed on
//! exit (Ctrl-C / SIGTERM).

mod gateway;
mod instances;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use instances::Fleet;
use tokio::net::TcpListener;

const USAGE: &str = "usage: fleet --bin-dir DIR [--listen 127.0.0.1:9000] [--idle-timeout SECONDS] \
[--max-instances N] [--throttle] [--timeout SECONDS] [--quiet]";

/// How often the total RSS of the live instances is sampled (each instance's own peak, `VmHWM`,
/// is also read when it stops and for every stats answer).
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Options {
    listen: SocketAddr,
    bin_dir: PathBuf,
    idle_timeout: Duration,
    max_instances: Option<usize>,
    throttle: bool,
    timeout: Duration,
    quiet: bool,
}

fn seconds(value: &str, name: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{name}: a number of seconds, > 0"))
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
        bin_dir: PathBuf::new(),
        idle_timeout: Duration::from_secs(60),
        max_instances: None,
        throttle: false,
        timeout: Duration::from_secs(30),
        quiet: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(name) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{name}: missing value"));
        match name.as_str() {
            "--listen" => {
                options.listen = value()?
                    .parse()
                    .map_err(|_| "--listen: an address like 127.0.0.1:9000")?
            }
            "--bin-dir" => options.bin_dir = PathBuf::from(value()?),
            "--idle-timeout" => options.idle_timeout = seconds(&value()?, &name)?,
            "--timeout" => options.timeout = seconds(&value()?, &name)?,
            "--max-instances" => {
                let max = value()?
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--max-instances: a number > 0")?;
                options.max_instances = Some(max);
            }
            "--throttle" => options.throttle = true,
            "--quiet" => options.quiet = true,
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    if options.bin_dir.as_os_str().is_empty() {
        return Err(format!("--bin-dir is required\n{USAGE}"));
    }
    Ok(options)
}

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

async fn run(options: Options) -> Result<(), String> {
    let fleet = Arc::new(Fleet::new(options.clone())?);
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", options.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!(
        "fleet: API Gateway on http://{address}, functions from {}, idle timeout {:?}{}",
        options.bin_dir.display(),
        options.idle_timeout,
        options
            .max_instances
            .map(|m| format!(", at most {m} instances per function"))
            .unwrap_or_default()
    );
    // Housekeeping: scale idle functions to zero, sample the instances' memory.
    let housekeeping = {
        let fleet = fleet.clone();
        let tick = (options.idle_timeout / 4).clamp(Duration::from_millis(20), RSS_SAMPLE_EVERY);
        tokio::spawn(async move {
            let mut last_sample = Instant::now();
            loop {
                tokio::time::sleep(tick).await;
                fleet.expire();
                if last_sample.elapsed() >= RSS_SAMPLE_EVERY {
                    last_sample = Instant::now();
                    let fleet = fleet.clone();
                    let _ = tokio::task::spawn_blocking(move || fleet.sample_rss()).await;
                }
            }
        })
    };
    let server = {
        let fleet = fleet.clone();
        tasks_tools::http_server::serve(listener, move |peer, request| {
            gateway::handle(fleet.clone(), peer, request)
        })
    };
    shutdown_signal().await;
    server.abort();
    housekeeping.abort();
    let stats = fleet.snapshot(false);
    fleet.shutdown();
    eprint!("{}", stats::summary(&stats));
    Ok(())
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("fleet: {error}");
            return ExitCode::from(2);
        }
    };
    // One thread: the fleet's own work is small next to the functions', and a single-threaded
    // runtime spends less CPU per request (no cross-thread wake-ups), leaving the cores to them.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fleet: tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fleet: {error}");
            ExitCode::FAILURE
        }
    }
}
