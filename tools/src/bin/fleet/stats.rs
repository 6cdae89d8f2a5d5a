//! The fleet's counters (`GET /_fleet/stats`, and the summary printed at exit): cold starts,
//! instances, invocations, per-instance init time and peak RSS, the fleet's total RSS.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use tasks_tools::function::status_kib;

use crate::instances::Fleet;
use crate::lock;

#[derive(Default)]
pub struct FunctionStats {
    pub cold_starts: u64,
    pub live: usize,
    pub peak: usize,
    pub invocations: u64,
    pub failures: u64,
}

pub struct InstanceRecord {
    pub function: &'static str,
    pub pid: Option<u32>,
    pub init: Option<Duration>,
    pub peak_rss_kib: u64,
    pub invocations: u64,
    pub alive: bool,
}

#[derive(Default)]
pub struct Stats {
    pub cold_starts: u64,
    pub live: usize,
    pub peak: usize,
    pub invocations: u64,
    pub failures: u64,
    pub throttled: u64,
    pub functions: BTreeMap<&'static str, FunctionStats>,
    pub instances: BTreeMap<u64, InstanceRecord>,
    pub total_rss_kib: u64,
    pub peak_total_rss_kib: u64,
    pub since: Option<Instant>,
}

impl Fleet {
    /// Samples every live instance's RSS and high-water mark.
    pub fn sample_rss(&self) {
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

    pub fn snapshot(&self, reset: bool) -> Value {
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

pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// `{n, p50, p95, max}` of `values` (null when empty).
pub fn distribution(mut values: Vec<f64>) -> Value {
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

pub fn summary(stats: &Value) -> String {
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
