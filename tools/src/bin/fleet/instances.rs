//! Instance management: each function's pool of processes (Lambda's concurrency model: one
//! invocation at a time per instance, a new instance when all are busy, scale to zero when
//! idle), and the dispatch of one invocation to an instance.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::Value;
use tasks_shared::http::ROUTES;
use tasks_shared::http::routes::CATCH_ALL;
use tasks_tools::function::{FunctionProcess, FunctionSpec, Output};
use tasks_tools::runtime_api::Outcome;
use tokio::sync::Notify;

use crate::stats::{InstanceRecord, Stats};
use crate::{Options, lock};

/// One function process with its own Runtime API, serving one invocation at a time.
pub struct Instance {
    /// Key of its record in [`Stats::instances`].
    pub id: u64,
    pub process: FunctionProcess,
    pub last_used: Instant,
    pub invoked: bool,
}

/// The instances of one function.
pub struct Pool {
    pub name: &'static str,
    pub binary: PathBuf,
    pub state: Mutex<PoolState>,
    /// An instance became idle, or one was stopped (room under the cap).
    pub freed: Notify,
}

#[derive(Default)]
pub struct PoolState {
    /// Idle instances; the most recently used last (reused first, so the others can expire).
    pub idle: Vec<Instance>,
    /// Idle + busy + starting.
    pub live: usize,
}

/// Why an invocation produced no response document.
pub enum Failure {
    Throttled,
    Timeout,
    Bad(String),
}

pub struct Fleet {
    pub options: Options,
    pub pools: HashMap<&'static str, Pool>,
    pub stats: Mutex<Stats>,
    pub next_instance: AtomicU64,
    pub next_request: AtomicU64,
}

impl Fleet {
    pub fn new(options: Options) -> Result<Self, String> {
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
    pub async fn acquire(
        &self,
        pool: &Pool,
        deadline: Instant,
    ) -> Result<Option<Instance>, Failure> {
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
    pub async fn spawn(&self, pool: &Pool) -> Result<Instance, String> {
        let spec = FunctionSpec {
            name: pool.name.to_owned(),
            binary: pool.binary.clone(),
            inherit_env: true,
            output: if self.options.quiet {
                Output::Discard
            } else {
                Output::Inherit
            },
            ..FunctionSpec::default()
        };
        let process = FunctionProcess::spawn(&spec).await?;
        let id = self.next_instance.fetch_add(1, Ordering::Relaxed);
        lock(&self.stats).instances.insert(
            id,
            InstanceRecord {
                function: pool.name,
                pid: process.pid,
                init: None,
                peak_rss_kib: 0,
                invocations: 0,
                alive: true,
            },
        );
        Ok(Instance {
            id,
            last_used: process.started,
            process,
            invoked: false,
        })
    }

    /// Gives a slot back after a failed start.
    pub fn release_slot(&self, pool: &Pool) {
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
    pub fn release(&self, pool: &Pool, mut instance: Instance) {
        instance.last_used = Instant::now();
        lock(&pool.state).idle.push(instance);
        pool.freed.notify_one();
    }

    /// Stops an instance (idle too long, failed, or timed out) and records its peak RSS.
    pub fn stop(&self, pool: &Pool, mut instance: Instance) {
        let peak = instance.process.peak_rss_kib();
        let _ = instance.process.child.start_kill();
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
            let _ = instance.process.child.wait().await;
        });
    }

    /// Runs `event` on an instance of `pool`'s function: Lambda's synchronous invoke.
    pub async fn invoke(&self, pool: &Pool, event: Value) -> Result<Value, Failure> {
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
            outcome = instance.process.api.invoke(event, remaining) => Ok(outcome),
            status = instance.process.child.wait() => Err(status),
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
            let init = instance.process.init_duration();
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

    pub fn count(&self, pool: &Pool, ok: bool) {
        let mut stats = lock(&self.stats);
        stats.invocations += 1;
        stats.failures += u64::from(!ok);
        let function = stats.functions.entry(pool.name).or_default();
        function.invocations += 1;
        function.failures += u64::from(!ok);
    }

    /// Stops the instances idle for longer than `--idle-timeout`.
    pub fn expire(&self) {
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

    /// Kills every instance, idle or busy (at exit).
    pub fn shutdown(&self) {
        for pool in self.pools.values() {
            for mut instance in std::mem::take(&mut lock(&pool.state).idle) {
                let _ = instance.process.child.start_kill();
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
}
