//! Lambda's CPU model for a function process, with a Linux CPU cgroup.
//!
//! Lambda gives a function CPU in proportion to its memory (1,769 MB = one vCPU), enforced per
//! 20 ms period: quota = 20 ms × MB / 1769 (1.45 ms at 128 MB). On-demand init runs
//! unthrottled; the quota applies from the runtime's first `GET invocation/next` on.
//! [`Throttle::InitFree`] models exactly that (the Runtime API emulator calls
//! [`CpuGroup::throttle`] when that request arrives, before answering it);
//! [`Throttle::Always`] applies the quota from the spawn on, the pessimistic bound.
//!
//! Controllers: cgroup v1's `cpu` (`/sys/fs/cgroup/cpu`: `cpu.cfs_period_us`,
//! `cpu.cfs_quota_us`) or cgroup v2's `cpu.max` (`/sys/fs/cgroup` with `cpu` among its
//! controllers); `LAMBDA_CPU_CGROUP` names another parent directory (a delegated v2 subtree,
//! say). Creating groups needs root or a delegation: where neither controller is writable,
//! [`CpuGroup::create`] says so, and the benchmarks refuse to print figures. Each group is
//! removed when dropped.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lambda's enforcement period.
pub const PERIOD_US: u64 = 20_000;
/// The memory size that buys one vCPU.
pub const MB_PER_VCPU: u64 = 1_769;
/// Lambda's memory range.
const MEMORY_MB: std::ops::RangeInclusive<u32> = 128..=10_240;

/// When the quota applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// As Lambda on demand: unthrottled until the first `invocation/next`, then the quota.
    InitFree,
    /// The quota for the process's whole life (init included): the pessimistic bound.
    Always,
}

/// The CPU a function process gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuModel {
    /// No quota: whatever the machine gives (what every figure before issue 17 used).
    #[default]
    WholeCore,
    Lambda {
        memory_mb: u32,
        throttle: Throttle,
    },
}

impl CpuModel {
    /// From `--memory` (MB, or `none` for a whole core) and `--throttle`
    /// (`init-free`, the default, or `always`).
    pub fn parse(memory: Option<&str>, throttle: Option<&str>) -> Result<Self, String> {
        let throttle = match throttle.unwrap_or("init-free") {
            "init-free" => Throttle::InitFree,
            "always" => Throttle::Always,
            other => return Err(format!("--throttle: init-free or always, not {other:?}")),
        };
        match memory {
            None | Some("none") => Ok(Self::WholeCore),
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|mb| MEMORY_MB.contains(mb))
                .map(|memory_mb| Self::Lambda {
                    memory_mb,
                    throttle,
                })
                .ok_or_else(|| format!("--memory: MB from 128 to 10240, or none, not {text:?}")),
        }
    }

    /// CPU time allowed per 20 ms period, in µs (`None`: unlimited).
    pub fn quota_us(self) -> Option<u64> {
        match self {
            Self::WholeCore => None,
            Self::Lambda { memory_mb, .. } => Some(quota_us(memory_mb)),
        }
    }

    /// The memory size a function is told (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`).
    pub fn memory_mb(self) -> u32 {
        match self {
            Self::WholeCore => 128,
            Self::Lambda { memory_mb, .. } => memory_mb,
        }
    }

    /// A short label: `whole core`, `128 MB init-free`, `128 MB always`.
    pub fn label(self) -> String {
        match self {
            Self::WholeCore => "whole core".to_owned(),
            Self::Lambda {
                memory_mb,
                throttle: Throttle::InitFree,
            } => format!("{memory_mb} MB init-free"),
            Self::Lambda {
                memory_mb,
                throttle: Throttle::Always,
            } => format!("{memory_mb} MB always"),
        }
    }

    /// One line for a benchmark's header.
    pub fn describe(self) -> String {
        match self {
            Self::WholeCore => "CPU: no quota (a whole core at least)".to_owned(),
            Self::Lambda {
                memory_mb,
                throttle,
            } => {
                let quota = quota_us(memory_mb);
                format!(
                    "CPU: Lambda at {memory_mb} MB — quota {quota} µs per {PERIOD_US} µs period ({:.1}% of a core), {}",
                    quota as f64 * 100.0 / PERIOD_US as f64,
                    match throttle {
                        Throttle::InitFree =>
                            "init unthrottled, quota from the first invocation/next (as Lambda on demand)",
                        Throttle::Always => "quota for the whole process life (pessimistic bound)",
                    }
                )
            }
        }
    }
}

fn quota_us(memory_mb: u32) -> u64 {
    PERIOD_US * u64::from(memory_mb) / MB_PER_VCPU
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// A CPU cgroup holding one function process: created with the period and no quota,
/// throttled by [`CpuGroup::throttle`], removed on drop.
#[derive(Debug)]
pub struct CpuGroup {
    dir: PathBuf,
    version: Version,
    quota_us: u64,
    /// Set once the quota is applied.
    throttled_at: Mutex<Option<Instant>>,
}

impl CpuGroup {
    /// A new group whose quota (once applied) is `memory_mb`'s, or a plain statement of why
    /// none can be made here.
    pub fn create(memory_mb: u32) -> Result<Self, String> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let (parent, version) = parent()?;
        let name = format!(
            "tasks-tools-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = parent.join(name);
        std::fs::create_dir(&dir).map_err(|e| {
            format!(
                "cannot model Lambda's CPU: cannot create a cgroup in {} ({e}); run as root \
                 or point LAMBDA_CPU_CGROUP at a writable cpu cgroup",
                parent.display()
            )
        })?;
        let group = Self {
            dir,
            version,
            quota_us: quota_us(memory_mb),
            throttled_at: Mutex::new(None),
        };
        let unlimited = match version {
            Version::V1 => write(&group.dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())
                .and_then(|()| write(&group.dir.join("cpu.cfs_quota_us"), "-1")),
            Version::V2 => write(&group.dir.join("cpu.max"), &format!("max {PERIOD_US}")),
        };
        unlimited.map_err(|e| format!("cannot model Lambda's CPU: {e}"))?;
        Ok(group)
    }

    /// Moves process `pid` (all its threads) into the group.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// Applies the quota from now on.
    pub fn throttle(&self) -> Result<(), String> {
        match self.version {
            Version::V1 => write(
                &self.dir.join("cpu.cfs_quota_us"),
                &self.quota_us.to_string(),
            ),
            Version::V2 => write(
                &self.dir.join("cpu.max"),
                &format!("{} {PERIOD_US}", self.quota_us),
            ),
        }?;
        *self
            .throttled_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        Ok(())
    }

    /// When the quota was applied, if it was.
    pub fn throttled_at(&self) -> Option<Instant> {
        *self
            .throttled_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Periods in which the group ran out of quota (`nr_throttled` in `cpu.stat`).
    pub fn throttled_periods(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
        stat.lines()
            .find_map(|line| line.strip_prefix("nr_throttled "))
            .and_then(|n| n.trim().parse().ok())
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for CpuGroup {
    /// Removes the group. A process still in it (killed but not yet gone) is moved to the
    /// parent first, since only an empty group can be removed.
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while std::fs::remove_dir(&self.dir).is_err() && self.dir.exists() {
            if let (Some(parent), Ok(procs)) = (
                self.dir.parent(),
                std::fs::read_to_string(self.dir.join("cgroup.procs")),
            ) {
                for pid in procs.split_whitespace() {
                    let _ = write(&parent.join("cgroup.procs"), pid);
                }
            }
            if Instant::now() > deadline {
                eprintln!("lambda_cpu: could not remove {}", self.dir.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Where groups are created, and with which interface.
fn parent() -> Result<(PathBuf, Version), String> {
    let explicit = std::env::var_os("LAMBDA_CPU_CGROUP").map(PathBuf::from);
    let candidates = match &explicit {
        Some(dir) => vec![dir.clone()],
        None => vec![
            PathBuf::from("/sys/fs/cgroup/cpu"),
            PathBuf::from("/sys/fs/cgroup"),
        ],
    };
    let mut reasons = Vec::new();
    for dir in candidates {
        if dir.join("cpu.cfs_quota_us").is_file() {
            return Ok((dir, Version::V1));
        }
        let controllers = std::fs::read_to_string(dir.join("cgroup.controllers"));
        match controllers {
            Ok(list) if list.split_whitespace().any(|c| c == "cpu") => {
                // Children get the cpu controller only if the parent hands it down.
                let subtree = dir.join("cgroup.subtree_control");
                let enabled = std::fs::read_to_string(&subtree)
                    .is_ok_and(|s| s.split_whitespace().any(|c| c == "cpu"));
                if enabled || write(&subtree, "+cpu").is_ok() {
                    return Ok((dir, Version::V2));
                }
                reasons.push(format!(
                    "{}: cgroup v2 cannot enable cpu for its children",
                    dir.display()
                ));
            }
            Ok(_) => reasons.push(format!("{}: cgroup v2 without cpu", dir.display())),
            Err(_) => reasons.push(format!("{}: no cpu controller", dir.display())),
        }
    }
    Err(format!(
        "cannot model Lambda's CPU: no writable cgroup cpu controller ({})",
        reasons.join("; ")
    ))
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("write {value} to {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_the_quota_is_lambdas() {
        assert_eq!(CpuModel::parse(None, None), Ok(CpuModel::WholeCore));
        assert_eq!(
            CpuModel::parse(Some("128"), None),
            Ok(CpuModel::Lambda {
                memory_mb: 128,
                throttle: Throttle::InitFree
            })
        );
        let always = CpuModel::parse(Some("1769"), Some("always")).unwrap();
        assert_eq!(always.quota_us(), Some(20_000));
        assert_eq!(
            CpuModel::parse(Some("128"), None).unwrap().quota_us(),
            Some(1_447)
        );
        assert!(CpuModel::parse(Some("64"), None).is_err());
        assert!(CpuModel::parse(Some("128"), Some("never")).is_err());
    }

    /// A busy process in a 128 MB group gets throttled once the quota applies, and the group
    /// is gone after the drop. Skips where no cgroup can be made (not root); CI runs as root.
    #[test]
    fn a_busy_process_is_throttled_and_the_group_removed() {
        let group = match CpuGroup::create(128) {
            Ok(group) => group,
            Err(reason) => {
                eprintln!("SKIPPED: {reason}");
                return;
            }
        };
        let dir = group.path().to_owned();
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("spawn sh");
        group.add(busy.id()).expect("add the process");
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(procs.split_whitespace().any(|p| p == busy.id().to_string()));
        assert_eq!(group.throttled_periods(), Some(0), "no quota yet");
        group.throttle().expect("apply the quota");
        assert!(group.throttled_at().is_some());
        // A busy loop exhausts 1.45 ms of quota in its first period.
        let deadline = Instant::now() + Duration::from_secs(5);
        while group.throttled_periods().unwrap_or(0) == 0 {
            assert!(Instant::now() < deadline, "never throttled");
            std::thread::yield_now();
        }
        busy.kill().expect("kill");
        busy.wait().expect("reap");
        drop(group);
        assert!(!dir.exists(), "{} removed", dir.display());
    }
}
