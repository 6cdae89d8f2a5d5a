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

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tasks_shared::http::routes::CATCH_ALL;
use tasks_shared::http::{ROUTES, resolve};
use tasks_tools::runtime_api::{Outcome, RuntimeApi, lambda_environment};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::Notify;

const USAGE: &str = "usage: fleet --bin-dir DIR [--listen 127.0.0.1:9000] [--idle-timeout SECONDS] \
[--max-instances N] [--throttle] [--timeout SECONDS] [--quiet]";

/// Where the counters are served (and reset with `?reset=1`).
const STATS_PATH: &str = "/_fleet/stats";
/// Lambda's limit for a synchronous invocation's payload.
const PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;
/// How often the total RSS of the live instances is sampled (each instance's own peak, `VmHWM`,
/// is also read when it stops and for every stats answer).
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone)]
struct Options {
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Instances and their pools

/// One function process with its own Runtime API, serving one invocation at a time.
struct Instance {
    /// Key of its record in [`Stats::instances`].
    id: u64,
    api: RuntimeApi,
    child: Child,
    pid: Option<u32>,
    spawned: Instant,
    last_used: Instant,
    invoked: bool,
}

/// The instances of one function.
struct Pool {
    name: &'static str,
    binary: PathBuf,
    state: Mutex<PoolState>,
    /// An instance became idle, or one was stopped (room under the cap).
    freed: Notify,
}

#[derive(Default)]
struct PoolState {
    /// Idle instances; the most recently used last (reused first, so the others can expire).
    idle: Vec<Instance>,
    /// Idle + busy + starting.
    live: usize,
}

#[derive(Default)]
struct FunctionStats {
    cold_starts: u64,
    live: usize,
    peak: usize,
    invocations: u64,
    failures: u64,
}

struct InstanceRecord {
    function: &'static str,
    pid: Option<u32>,
    init: Option<Duration>,
    peak_rss_kib: u64,
    invocations: u64,
    alive: bool,
}

#[derive(Default)]
struct Stats {
    cold_starts: u64,
    live: usize,
    peak: usize,
    invocations: u64,
    failures: u64,
    throttled: u64,
    functions: BTreeMap<&'static str, FunctionStats>,
    instances: BTreeMap<u64, InstanceRecord>,
    total_rss_kib: u64,
    peak_total_rss_kib: u64,
    since: Option<Instant>,
}

/// Why an invocation produced no response document.
enum Failure {
    Throttled,
    Timeout,
    Bad(String),
}

struct Fleet {
    options: Options,
    pools: HashMap<&'static str, Pool>,
    stats: Mutex<Stats>,
    next_instance: AtomicU64,
    next_request: AtomicU64,
}

impl Fleet {
    fn new(options: Options) -> Result<Self, String> {
        let names = ROUTES
            .iter()
            .map(|route| route.function.name())
            .chain([CATCH_ALL]);
        let mut pools = HashMap::new();
        let mut missing = Vec::new();
        for name in names {
            let binary = options.bin_dir.join(name);
            if !binary.is_file() {
                missing.push(binary.display().to_string());
            }
            pools.insert(
                name,
                Pool {
                    name,
                    binary,
                    state: Mutex::new(PoolState::default()),
                    freed: Notify::new(),
                },
            );
        }
        if !missing.is_empty() {
            return Err(format!(
                "function binaries missing (build them with `cargo build --release --bins`): {}",
                missing.join(", ")
            ));
        }
        let stats = Stats {
            since: Some(Instant::now()),
            ..Stats::default()
        };
        Ok(Self {
            options,
            pools,
            stats: Mutex::new(stats),
            next_instance: AtomicU64::new(1),
            next_request: AtomicU64::new(1),
        })
    }

    /// An idle instance (the most recently used), or `None`: the right to start one.
    async fn acquire(&self, pool: &Pool, deadline: Instant) -> Result<Option<Instance>, Failure> {
        loop {
            let notified = pool.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = lock(&pool.state);
                if let Some(instance) = state.idle.pop() {
                    return Ok(Some(instance));
                }
                if self
                    .options
                    .max_instances
                    .is_none_or(|max| state.live < max)
                {
                    state.live += 1;
                    let mut stats = lock(&self.stats);
                    stats.cold_starts += 1;
                    stats.live += 1;
                    stats.peak = stats.peak.max(stats.live);
                    let function = stats.functions.entry(pool.name).or_default();
                    function.cold_starts += 1;
                    function.live += 1;
                    function.peak = function.peak.max(function.live);
                    return Ok(None);
                }
            }
            if self.options.throttle {
                lock(&self.stats).throttled += 1;
                return Err(Failure::Throttled);
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return Err(Failure::Timeout);
            }
        }
    }

    /// Starts a process of `pool`'s function (its slot is already counted in `live`).
    async fn spawn(&self, pool: &Pool) -> Result<Instance, String> {
        let api = RuntimeApi::start()
            .await
            .map_err(|e| format!("runtime API: {e}"))?;
        let output = || {
            if self.options.quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            }
        };
        let spawned = Instant::now();
        let child = Command::new(&pool.binary)
            .envs(lambda_environment(&api, pool.name))
            .stdin(Stdio::null())
            .stdout(output())
            .stderr(output())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", pool.binary.display()))?;
        let id = self.next_instance.fetch_add(1, Ordering::Relaxed);
        let pid = child.id();
        lock(&self.stats).instances.insert(
            id,
            InstanceRecord {
                function: pool.name,
                pid,
                init: None,
                peak_rss_kib: 0,
                invocations: 0,
                alive: true,
            },
        );
        Ok(Instance {
            id,
            api,
            child,
            pid,
            spawned,
            last_used: spawned,
            invoked: false,
        })
    }

    /// Gives a slot back after a failed start.
    fn release_slot(&self, pool: &Pool) {
        lock(&pool.state).live -= 1;
        let mut stats = lock(&self.stats);
        stats.live = stats.live.saturating_sub(1);
        if let Some(function) = stats.functions.get_mut(pool.name) {
            function.live = function.live.saturating_sub(1);
        }
        drop(stats);
        pool.freed.notify_one();
    }

    /// Back to the idle list, ready for the next request.
    fn release(&self, pool: &Pool, mut instance: Instance) {
        instance.last_used = Instant::now();
        lock(&pool.state).idle.push(instance);
        pool.freed.notify_one();
    }

    /// Stops an instance (idle too long, failed, or timed out) and records its peak RSS.
    fn stop(&self, pool: &Pool, mut instance: Instance) {
        let peak = instance.pid.and_then(|pid| proc_status_kib(pid, "VmHWM:"));
        let _ = instance.child.start_kill();
        lock(&pool.state).live -= 1;
        {
            let mut stats = lock(&self.stats);
            stats.live = stats.live.saturating_sub(1);
            if let Some(function) = stats.functions.get_mut(pool.name) {
                function.live = function.live.saturating_sub(1);
            }
            if let Some(record) = stats.instances.get_mut(&instance.id) {
                record.alive = false;
                record.peak_rss_kib = record.peak_rss_kib.max(peak.unwrap_or(0));
            }
        }
        pool.freed.notify_one();
        // Reap the process.
        tokio::spawn(async move {
            let _ = instance.child.wait().await;
        });
    }

    /// Runs `event` on an instance of `pool`'s function: Lambda's synchronous invoke.
    async fn invoke(&self, pool: &Pool, event: Value) -> Result<Value, Failure> {
        let deadline = Instant::now() + self.options.timeout;
        let mut instance = match self.acquire(pool, deadline).await? {
            Some(instance) => instance,
            None => match self.spawn(pool).await {
                Ok(instance) => instance,
                Err(error) => {
                    self.release_slot(pool);
                    self.count(pool, false);
                    return Err(Failure::Bad(format!(
                        "could not start {}: {error}",
                        pool.name
                    )));
                }
            },
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let outcome = tokio::select! {
            outcome = instance.api.invoke(event, remaining) => Ok(outcome),
            status = instance.child.wait() => Err(status),
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(status) => {
                let status = status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                self.count(pool, false);
                self.stop(pool, instance);
                return Err(Failure::Bad(format!("{} exited ({status})", pool.name)));
            }
        };
        if !instance.invoked {
            instance.invoked = true;
            let init = instance
                .api
                .first_poll()
                .map(|at| at.saturating_duration_since(instance.spawned));
            if let Some(record) = lock(&self.stats).instances.get_mut(&instance.id) {
                record.init = init;
            }
        }
        if let Some(record) = lock(&self.stats).instances.get_mut(&instance.id) {
            record.invocations += 1;
        }
        match outcome {
            Some(Outcome::Response(document)) => {
                self.count(pool, true);
                self.release(pool, instance);
                Ok(document)
            }
            Some(Outcome::Error(document)) => {
                // The runtime reported a handler error and carries on: the instance stays.
                self.count(pool, false);
                self.release(pool, instance);
                Err(Failure::Bad(format!("{} failed: {document}", pool.name)))
            }
            Some(Outcome::InitError(document)) => {
                self.count(pool, false);
                self.stop(pool, instance);
                Err(Failure::Bad(format!(
                    "{} init error: {document}",
                    pool.name
                )))
            }
            None => {
                self.count(pool, false);
                self.stop(pool, instance);
                Err(Failure::Timeout)
            }
        }
    }

    fn count(&self, pool: &Pool, ok: bool) {
        let mut stats = lock(&self.stats);
        stats.invocations += 1;
        stats.failures += u64::from(!ok);
        let function = stats.functions.entry(pool.name).or_default();
        function.invocations += 1;
        function.failures += u64::from(!ok);
    }

    /// Stops the instances idle for longer than `--idle-timeout`.
    fn expire(&self) {
        for pool in self.pools.values() {
            let expired: Vec<Instance> = {
                let mut state = lock(&pool.state);
                let now = Instant::now();
                let (expired, kept) = std::mem::take(&mut state.idle)
                    .into_iter()
                    .partition(|i| now.duration_since(i.last_used) >= self.options.idle_timeout);
                state.idle = kept;
                expired
            };
            for instance in expired {
                self.stop(pool, instance);
            }
        }
    }

    /// Samples every live instance's RSS and high-water mark.
    fn sample_rss(&self) {
        let pids: Vec<(u64, u32)> = lock(&self.stats)
            .instances
            .iter()
            .filter(|(_, r)| r.alive)
            .filter_map(|(id, r)| r.pid.map(|pid| (*id, pid)))
            .collect();
        let readings: Vec<(u64, Option<u64>, Option<u64>)> = pids
            .into_iter()
            .map(|(id, pid)| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
                let field = |name: &str| status.as_deref().and_then(|s| status_kib(s, name));
                (id, field("VmRSS:"), field("VmHWM:"))
            })
            .collect();
        let mut stats = lock(&self.stats);
        let mut total = 0;
        for (id, rss, hwm) in readings {
            if let Some(record) = stats.instances.get_mut(&id)
                && record.alive
            {
                total += rss.unwrap_or(0);
                record.peak_rss_kib = record.peak_rss_kib.max(hwm.unwrap_or(0));
            }
        }
        stats.total_rss_kib = total;
        stats.peak_total_rss_kib = stats.peak_total_rss_kib.max(total);
    }

    /// Kills every instance, idle or busy (at exit).
    fn shutdown(&self) {
        for pool in self.pools.values() {
            for mut instance in std::mem::take(&mut lock(&pool.state).idle) {
                let _ = instance.child.start_kill();
            }
        }
        // Busy ones belong to requests in flight: kill them by pid.
        let pids: Vec<String> = lock(&self.stats)
            .instances
            .values()
            .filter(|r| r.alive)
            .filter_map(|r| r.pid.map(|p| p.to_string()))
            .collect();
        if !pids.is_empty() {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .args(&pids)
                .stderr(Stdio::null())
                .status();
        }
    }

    fn snapshot(&self, reset: bool) -> Value {
        self.sample_rss();
        let idle: usize = self.pools.values().map(|p| lock(&p.state).idle.len()).sum();
        let mut stats = lock(&self.stats);
        let instances: Vec<&InstanceRecord> = stats.instances.values().collect();
        let inits: Vec<f64> = instances.iter().filter_map(|r| r.init).map(ms).collect();
        let rss: Vec<f64> = instances
            .iter()
            .filter(|r| r.peak_rss_kib > 0)
            .map(|r| r.peak_rss_kib as f64)
            .collect();
        let mut functions = Map::new();
        for (name, f) in &stats.functions {
            let of = |r: &&&InstanceRecord| r.function == *name;
            let inits: Vec<f64> = instances
                .iter()
                .filter(of)
                .filter_map(|r| r.init)
                .map(ms)
                .collect();
            let rss: Vec<f64> = instances
                .iter()
                .filter(of)
                .filter(|r| r.peak_rss_kib > 0)
                .map(|r| r.peak_rss_kib as f64)
                .collect();
            functions.insert(
                (*name).to_owned(),
                json!({
                    "cold_starts": f.cold_starts, "live": f.live, "peak_instances": f.peak,
                    "invocations": f.invocations, "failures": f.failures,
                    "init_ms": distribution(inits), "peak_rss_kib": distribution(rss),
                }),
            );
        }
        let list: Vec<Value> = stats
            .instances
            .values()
            .map(|r| {
                json!({
                    "function": r.function, "pid": r.pid, "alive": r.alive,
                    "init_ms": r.init.map(ms), "peak_rss_kib": r.peak_rss_kib,
                    "invocations": r.invocations,
                })
            })
            .collect();
        let document = json!({
            "seconds": stats.since.map(|s| s.elapsed().as_secs_f64()),
            "live_instances": stats.live,
            "idle_instances": idle,
            "cold_starts": stats.cold_starts,
            "peak_instances": stats.peak,
            "invocations": stats.invocations,
            "failures": stats.failures,
            "throttled": stats.throttled,
            "total_rss_kib": stats.total_rss_kib,
            "peak_total_rss_kib": stats.peak_total_rss_kib,
            "init_ms": distribution(inits),
            "peak_rss_kib": distribution(rss),
            "functions": functions,
            "instances": list,
        });
        if reset {
            let live = stats.live;
            stats.cold_starts = 0;
            stats.peak = live;
            stats.invocations = 0;
            stats.failures = 0;
            stats.throttled = 0;
            stats.peak_total_rss_kib = stats.total_rss_kib;
            stats.since = Some(Instant::now());
            stats.instances.retain(|_, r| r.alive);
            for f in stats.functions.values_mut() {
                *f = FunctionStats {
                    live: f.live,
                    peak: f.live,
                    ..FunctionStats::default()
                };
            }
        }
        document
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// `{n, p50, p95, max}` of `values` (null when empty).
fn distribution(mut values: Vec<f64>) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    values.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
        values[rank.clamp(1, values.len()) - 1]
    };
    json!({ "n": values.len(), "p50": at(50.0), "p95": at(95.0), "max": at(100.0) })
}

fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&status, field)
}

// ---------------------------------------------------------------------------------------------
// API Gateway: request → event, response document → response

/// The function and route key API Gateway would pick: a `ROUTES` entry, else `$default`.
fn route(method: &Method, path: &str) -> (&'static str, String, Option<String>) {
    match resolve(method, path) {
        Ok(matched) => {
            let key = ROUTES
                .iter()
                .find(|route| route.function == matched.function)
                .map(|route| format!("{} {}", route.method, route.path))
                .unwrap_or_else(|| "$default".to_owned());
            (
                matched.function.name(),
                key,
                matched.task_id.map(percent_decode),
            )
        }
        Err(_) => (CATCH_ALL, "$default".to_owned(), None),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `27/Nov/2026:18:21:22 +0000`, as in `requestContext.time`.
fn clf_time(epoch_ms: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = epoch_ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1).clamp(0, 11) as usize],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The payload-2.0 event API Gateway HTTP API sends for this request.
fn event(
    parts: &http::request::Parts,
    body: &[u8],
    peer: SocketAddr,
    listen_port: u16,
    request_id: u64,
) -> (&'static str, Value) {
    let path = parts.uri.path();
    let (function, route_key, task_id) = route(&parts.method, path);
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for name in parts.headers.keys() {
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if name == header::COOKIE {
            cookies.extend(values.iter().flat_map(|v| v.split(';')).map(str::trim));
            continue;
        }
        headers.insert(name.as_str().to_owned(), json!(values.join(",")));
    }
    let epoch_ms = now_ms();
    let trace = format!("Root=1-{:08x}-{:024x}", epoch_ms / 1000, request_id);
    let source_ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        ip => ip,
    }
    .to_string();
    for (name, value) in [
        ("x-amzn-trace-id", trace),
        ("x-forwarded-for", source_ip.clone()),
        ("x-forwarded-port", listen_port.to_string()),
        ("x-forwarded-proto", "http".to_owned()),
    ] {
        headers.entry(name).or_insert(json!(value));
    }
    let domain = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let query = parts.uri.query().unwrap_or("");
    let mut parameters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        parameters
            .entry(percent_decode(key))
            .or_default()
            .push(percent_decode(value));
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "fleet",
            "domainName": domain,
            "domainPrefix": domain.split('.').next().unwrap_or(""),
            "http": {
                "method": parts.method.as_str(),
                "path": path,
                "protocol": format!("{:?}", parts.version),
                "sourceIp": source_ip,
                "userAgent": parts.headers.get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()).unwrap_or(""),
            },
            "requestId": format!("fleet-{request_id:012x}"),
            "routeKey": route_key,
            "stage": "$default",
            "time": clf_time(epoch_ms),
            "timeEpoch": epoch_ms,
        },
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !parameters.is_empty() {
        let joined: Map<String, Value> = parameters
            .into_iter()
            .map(|(k, v)| (k, json!(v.join(","))))
            .collect();
        event["queryStringParameters"] = Value::Object(joined);
    }
    if let Some(task_id) = task_id {
        event["pathParameters"] = json!({ "task_id": task_id });
    }
    if !body.is_empty() {
        match std::str::from_utf8(body) {
            Ok(text) => event["body"] = json!(text),
            Err(_) => {
                event["body"] = json!(BASE64.encode(body));
                event["isBase64Encoded"] = json!(true);
            }
        }
    }
    (function, event)
}

/// Headers a gateway sets itself: taking them from the function could break the framing.
fn hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::UPGRADE,
    ]
    .contains(name)
}

fn header_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The function's response document as the HTTP response API Gateway would send.
fn response(document: Value) -> Result<Response<Full<Bytes>>, String> {
    let Some(object) = document
        .as_object()
        .filter(|o| o.contains_key("statusCode"))
    else {
        // Payload 2.0 without `statusCode`: the whole document is a 200 JSON body.
        let mut response = Response::new(Full::new(Bytes::from(document.to_string())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    };
    let status = object
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|code| u16::try_from(code).ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or("statusCode is not an HTTP status")?;
    let mut headers = HeaderMap::new();
    let mut add = |name: &str, value: &str| -> Result<(), String> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("bad header name {name:?}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| format!("bad value for header {name}"))?;
        if !hop_by_hop(&name) {
            headers.append(name, value);
        }
        Ok(())
    };
    let multi = object.get("multiValueHeaders").and_then(Value::as_object);
    if let Some(single) = object.get("headers").and_then(Value::as_object) {
        for (name, value) in single {
            if multi.is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case(name))) {
                continue;
            }
            add(
                name,
                &header_text(value).ok_or("a header value is not text")?,
            )?;
        }
    }
    for (name, values) in multi.into_iter().flatten() {
        for value in values.as_array().into_iter().flatten() {
            add(
                name,
                &header_text(value).ok_or("a header value is not text")?,
            )?;
        }
    }
    for cookie in object
        .get("cookies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add("set-cookie", cookie.as_str().ok_or("a cookie is not text")?)?;
    }
    let text = object.get("body").and_then(Value::as_str).unwrap_or("");
    let body = if object.get("isBase64Encoded") == Some(&Value::Bool(true)) {
        Bytes::from(
            BASE64
                .decode(text)
                .map_err(|_| "body is not valid base64")?,
        )
    } else {
        Bytes::from(text.to_owned())
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// API Gateway's own error answers: `{"message": …}`.
fn gateway_error(status: StatusCode) -> Response<Full<Bytes>> {
    let message = status.canonical_reason().unwrap_or("Error");
    let mut response = Response::new(Full::new(Bytes::from(
        json!({ "message": message }).to_string(),
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(
    fleet: Arc<Fleet>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.uri().path() == STATS_PATH {
        let reset = request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "reset=1"));
        let mut response = Response::new(Full::new(Bytes::from(fleet.snapshot(reset).to_string())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return response;
    }
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, PAYLOAD_LIMIT).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return gateway_error(StatusCode::PAYLOAD_TOO_LARGE),
    };
    let request_id = fleet.next_request.fetch_add(1, Ordering::Relaxed);
    let (function, event) = event(&parts, &body, peer, fleet.options.listen.port(), request_id);
    // The invocation runs to its end even if the client goes away, as on Lambda.
    let invocation = {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            match fleet.pools.get(function) {
                Some(pool) => fleet.invoke(pool, event).await,
                None => Err(Failure::Bad(format!("no function {function}"))),
            }
        })
    };
    let failure = match invocation.await {
        Ok(Ok(document)) => match response(document) {
            Ok(response) => return response,
            Err(error) => Failure::Bad(format!("{function}: malformed response: {error}")),
        },
        Ok(Err(failure)) => failure,
        Err(error) => Failure::Bad(format!("{function}: {error}")),
    };
    match failure {
        Failure::Throttled => gateway_error(StatusCode::TOO_MANY_REQUESTS),
        Failure::Timeout => gateway_error(StatusCode::GATEWAY_TIMEOUT),
        Failure::Bad(error) => {
            eprintln!("fleet: {error}");
            gateway_error(StatusCode::BAD_GATEWAY)
        }
    }
}

fn summary(stats: &Value) -> String {
    let mut text = format!(
        "fleet: {} invocations ({} failed, {} throttled), {} cold starts, peak {} instances, \
         peak total RSS {:.1} MiB, per-instance peak RSS {} KiB, init ms {}\n",
        stats["invocations"],
        stats["failures"],
        stats["throttled"],
        stats["cold_starts"],
        stats["peak_instances"],
        stats["peak_total_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
        stats["peak_rss_kib"],
        stats["init_ms"],
    );
    for (name, f) in stats["functions"].as_object().into_iter().flatten() {
        text.push_str(&format!(
            "  {name}: {} invocations, {} cold starts, peak {} instances, init ms {}, peak RSS KiB {}\n",
            f["invocations"], f["cold_starts"], f["peak_instances"], f["init_ms"], f["peak_rss_kib"]
        ));
    }
    text
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
    let serve = async {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    eprintln!("fleet: accept: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let fleet = fleet.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let fleet = fleet.clone();
                    async move { Ok::<_, Infallible>(handle(fleet, peer, request).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    tokio::select! {
        () = serve => {}
        () = shutdown_signal() => {}
    }
    housekeeping.abort();
    let stats = fleet.snapshot(false);
    fleet.shutdown();
    eprint!("{}", summary(&stats));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clf_time_matches_api_gateway() {
        // The fixtures' timeEpoch 1795803682641 is "27/Nov/2026:18:21:22 +0000".
        assert_eq!(clf_time(1_795_803_682_641), "27/Nov/2026:18:21:22 +0000");
        assert_eq!(clf_time(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(clf_time(951_782_400_000), "29/Feb/2000:00:00:00 +0000");
    }

    #[test]
    fn routes_go_to_their_function_and_the_rest_to_the_catch_all() {
        let (function, key, id) = route(&Method::PATCH, "/api/tasks/a%2Db/toggle");
        assert_eq!(
            (function, key.as_str(), id.as_deref()),
            (
                "toggle-task",
                "PATCH /api/tasks/{task_id}/toggle",
                Some("a-b")
            )
        );
        assert_eq!(route(&Method::DELETE, "/health").0, CATCH_ALL);
        assert_eq!(route(&Method::GET, "/nope").1, "$default");
    }

    #[test]
    fn response_documents_become_responses() {
        let document = json!({
            "statusCode": 201,
            "headers": {"content-type": "application/json", "etag": "\"x\"", "vary": "a"},
            "multiValueHeaders": {"vary": ["Origin", "Accept"]},
            "cookies": ["a=1", "b=2; Path=/"],
            "body": "eyJvayI6dHJ1ZX0=",
            "isBase64Encoded": true,
        });
        let answer = response(document).unwrap();
        assert_eq!(answer.status(), 201);
        let headers = answer.headers();
        assert_eq!(headers.get_all("vary").iter().count(), 2);
        assert_eq!(headers.get_all("set-cookie").iter().count(), 2);
        assert_eq!(headers["etag"], "\"x\"");
        assert!(response(json!({"statusCode": 99})).is_err());
        assert!(
            response(json!({"statusCode": 200, "body": "%", "isBase64Encoded": true})).is_err()
        );
        assert_eq!(response(json!({"a": 1})).unwrap().status(), 200);
    }
}
