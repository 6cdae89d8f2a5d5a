//! A real function binary started as Lambda starts it: its own Runtime API
//! ([`crate::runtime_api`]), Lambda's environment, and optionally Lambda's CPU model
//! ([`crate::lambda_cpu`]). The tests, lambda-bench, cold-bench and the fleet all start their
//! functions here.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::lambda_cpu::{CpuGroup, CpuModel, Throttle};
use crate::runtime_api::{InitEnd, Outcome, RuntimeApi, lambda_environment};

/// How to start one function process.
#[derive(Debug, Clone, Default)]
pub struct FunctionSpec {
    /// The function's name (`list-tasks`): `AWS_LAMBDA_FUNCTION_NAME`.
    pub name: String,
    pub binary: PathBuf,
    /// Environment beyond Lambda's (`DATABASE_URL`, `JWT_SECRET`, …).
    pub env: Vec<(String, String)>,
    /// Keep this process's environment (the fleet passes its own on); otherwise the function
    /// gets nothing but PATH, so a developer's shell cannot leak configuration in.
    pub inherit_env: bool,
    /// Where the function's stdout and stderr go.
    pub output: Output,
    /// A program to run the binary with, and its arguments (`qemu-aarch64 -L /usr/aarch64-linux-gnu`).
    pub runner: Vec<String>,
    pub cpu: CpuModel,
}

/// Where a function process' stdout and stderr go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Output {
    #[default]
    Discard,
    /// Through to this process' own (the fleet, unless `--quiet`).
    Inherit,
    /// Piped, to be read from [`FunctionProcess::child`] (tests that check what a function logs).
    Capture,
}

/// A running function process attached to its own Runtime API. Killed when dropped (the
/// cgroup, if any, is removed after).
pub struct FunctionProcess {
    pub name: String,
    pub api: RuntimeApi,
    pub child: Child,
    /// Just before the spawn: cold-start and init durations count from here.
    pub started: Instant,
    pub pid: Option<u32>,
    cpu: Option<Arc<CpuGroup>>,
}

impl FunctionProcess {
    pub async fn spawn(spec: &FunctionSpec) -> Result<Self, String> {
        let cpu = match spec.cpu {
            CpuModel::WholeCore => None,
            CpuModel::Lambda { memory_mb, .. } => Some(Arc::new(CpuGroup::create(memory_mb)?)),
        };
        let init_end: Option<InitEnd> = match (spec.cpu, &cpu) {
            (
                CpuModel::Lambda {
                    throttle: Throttle::InitFree,
                    ..
                },
                Some(group),
            ) => {
                let group = group.clone();
                // A failure leaves `throttled_at` empty, which `cpu_applied` reports.
                Some(Box::new(move || {
                    let _ = group.throttle();
                }))
            }
            _ => None,
        };
        if let (
            CpuModel::Lambda {
                throttle: Throttle::Always,
                ..
            },
            Some(group),
        ) = (spec.cpu, &cpu)
        {
            group.throttle()?;
        }
        let api = RuntimeApi::start_with(init_end)
            .await
            .map_err(|e| format!("runtime API: {e}"))?;
        let mut command = match spec.runner.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&spec.binary);
                command
            }
            None => Command::new(&spec.binary),
        };
        if !spec.inherit_env {
            command
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default());
        }
        let output = || match spec.output {
            Output::Discard => Stdio::null(),
            Output::Inherit => Stdio::inherit(),
            Output::Capture => Stdio::piped(),
        };
        command
            .envs(lambda_environment(&api, &spec.name, spec.cpu.memory_mb()))
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(output())
            .stderr(output())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| format!("{}: {e}", spec.binary.display()))?;
        let pid = child.id();
        if let Some(group) = &cpu {
            let added = pid
                .ok_or_else(|| "the process exited at once".to_owned())
                .and_then(|pid| group.add(pid));
            if let Err(error) = added {
                let _ = child.kill().await;
                return Err(error);
            }
        }
        Ok(Self {
            name: spec.name.clone(),
            api,
            child,
            started,
            pid,
            cpu,
        })
    }

    /// Queues `event` and waits up to `timeout` for what the function does with it.
    pub async fn invoke(&self, event: &Value, timeout: Duration) -> Option<Outcome> {
        self.api.invoke(event.clone(), timeout).await
    }

    /// The status code of the response `event` gets, or what went wrong instead.
    pub async fn status(&self, event: &Value, timeout: Duration) -> Result<u16, String> {
        match self.invoke(event, timeout).await {
            Some(Outcome::Response(document)) => document["statusCode"]
                .as_u64()
                .and_then(|code| u16::try_from(code).ok())
                .ok_or_else(|| format!("{}: a response without a status: {document}", self.name)),
            other => Err(format!("{}: invocation failed: {other:?}", self.name)),
        }
    }

    /// Spawn → first `invocation/next`: Lambda's "Init Duration".
    pub fn init_duration(&self) -> Option<Duration> {
        self.api
            .first_poll()
            .map(|at| at.saturating_duration_since(self.started))
    }

    /// Whether the CPU model was applied as asked: `Err` if the quota should be on by now
    /// (after the first invocation) and is not, so no figure is printed under a false model.
    pub fn cpu_applied(&self) -> Result<(), String> {
        match &self.cpu {
            Some(group) if group.throttled_at().is_none() && self.api.first_poll().is_some() => {
                Err(format!(
                    "the CPU quota was not applied to {} at the end of init",
                    group.path().display()
                ))
            }
            _ => Ok(()),
        }
    }

    /// Periods in which the process ran out of CPU quota (`None` without a CPU model).
    pub fn throttled_periods(&self) -> Option<u64> {
        self.cpu
            .as_ref()
            .and_then(|group| group.throttled_periods())
    }

    /// `VmHWM` (peak RSS) in KiB, while the process lives.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.pid.and_then(|pid| proc_status_kib(pid, "VmHWM:"))
    }

    /// Kills the process, waits for it, then removes its cgroup.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A `kB` field of `/proc/PID/status` (`VmHWM:`, `VmRSS:`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&status, field)
}

/// A `kB` field of a `/proc/PID/status` text.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
