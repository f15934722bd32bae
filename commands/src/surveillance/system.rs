//! The host's figures (Sentinel's `GET /stats/system`): CPU, memory, the disk holding a path,
//! this server's process, and NVIDIA GPUs when `nvidia-smi` is on the `PATH`.
//!
//! CPU usage is a difference between two readings, so a request cannot measure it by itself
//! without waiting: a [`SystemMonitor`] keeps a `sysinfo::System` that a background task
//! refreshes every [`REFRESH_EVERY`] (the first time [`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`]
//! after the start), and [`SystemMonitor::stats`] reads the latest figures at once. The GPUs are
//! read by the same task, never by a request.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::task::JoinHandle;

/// How often the background task refreshes the figures.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// The longest `nvidia-smi` may take before its figures are given up for this refresh.
pub const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(2);

/// The host's figures at the last refresh.
#[derive(Debug, Clone, Serialize)]
pub struct SystemStats {
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    /// `None` when the path's filesystem cannot be read (the path does not exist).
    pub disk: Option<DiskStats>,
    pub process: ProcessStats,
    /// Empty when the host has no NVIDIA GPU, or no `nvidia-smi`.
    pub gpu: Vec<GpuStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuStats {
    /// All logical cores together, 0 to 100.
    pub usage_percent: f32,
    /// Each logical core's, 0 to 100.
    pub per_core_percent: Vec<f32>,
    /// Logical cores.
    pub core_count: usize,
    pub physical_core_count: Option<usize>,
    pub load_average: LoadAverage,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadAverage {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryStats {
    pub total_bytes: u64,
    /// Total less available.
    pub used_bytes: u64,
    pub available_bytes: u64,
    /// Used over total, 0 to 100.
    pub percent: f32,
}

/// The filesystem holding a path, counted as `df` does.
#[derive(Debug, Clone, Serialize)]
pub struct DiskStats {
    pub path: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    /// What an unprivileged process may still write.
    pub available_bytes: u64,
    /// Used over used and available, 0 to 100 (`df`'s `Use%`).
    pub percent: f32,
}

/// This server's process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStats {
    pub pid: u32,
    pub rss_bytes: u64,
    /// Over all logical cores, 0 to 100 (one core fully busy on four cores is 25).
    pub cpu_percent: f32,
    pub uptime_seconds: u64,
}

/// One NVIDIA GPU as `nvidia-smi` reports it; a figure it does not give (`[N/A]`) is `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuStats {
    pub index: usize,
    pub name: String,
    pub utilization_percent: Option<f32>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
}

struct Shared {
    system: Mutex<System>,
    gpu: Mutex<Vec<GpuStats>>,
    pid: Option<Pid>,
    /// How many background refreshes have completed.
    refreshes: tokio::sync::watch::Sender<u64>,
}

/// Keeps the host's figures fresh in the background; dropping it stops the task.
pub struct SystemMonitor {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl SystemMonitor {
    /// Takes a first reading and starts the task that refreshes it. Must be called within a tokio
    /// runtime. CPU usages read 0 until the task's first refresh.
    pub fn start() -> SystemMonitor {
        let pid = sysinfo::get_current_pid().ok();
        let mut system = System::new();
        refresh(&mut system, pid);
        let shared = Arc::new(Shared {
            system: Mutex::new(system),
            gpu: Mutex::new(Vec::new()),
            pid,
            refreshes: tokio::sync::watch::Sender::new(0),
        });
        let task = tokio::spawn(run(Arc::clone(&shared)));
        SystemMonitor { shared, task }
    }

    /// Resolves once the background task has refreshed the figures at least once (CPU usages
    /// are differences between two readings: before that they read 0).
    pub async fn refreshed(&self) {
        let mut rx = self.shared.refreshes.subscribe();
        // An error means the task is gone; there is nothing more to wait for.
        let _ = rx.wait_for(|n| *n > 0).await;
    }

    /// The latest figures, and those of the filesystem holding `disk_path` read now.
    pub fn stats(&self, disk_path: &Path) -> SystemStats {
        let gpu = lock(&self.shared.gpu).clone();
        let system = lock(&self.shared.system);
        let cpus = system.cpus();
        let core_count = cpus.len();
        let total_memory = system.total_memory();
        let available_memory = system.available_memory().min(total_memory);
        let used_memory = total_memory - available_memory;
        let process = self
            .shared
            .pid
            .and_then(|pid| system.process(pid).map(|p| (pid, p)));
        SystemStats {
            cpu: CpuStats {
                usage_percent: percent_of(system.global_cpu_usage()),
                per_core_percent: cpus.iter().map(|c| percent_of(c.cpu_usage())).collect(),
                core_count,
                physical_core_count: System::physical_core_count(),
                load_average: {
                    let load = System::load_average();
                    LoadAverage {
                        one: load.one,
                        five: load.five,
                        fifteen: load.fifteen,
                    }
                },
            },
            memory: MemoryStats {
                total_bytes: total_memory,
                used_bytes: used_memory,
                available_bytes: available_memory,
                percent: ratio(used_memory, total_memory),
            },
            disk: disk_stats(disk_path),
            process: match process {
                Some((pid, p)) => ProcessStats {
                    pid: pid.as_u32(),
                    rss_bytes: p.memory(),
                    cpu_percent: percent_of(p.cpu_usage() / core_count.max(1) as f32),
                    uptime_seconds: p.run_time(),
                },
                None => ProcessStats {
                    pid: std::process::id(),
                    rss_bytes: 0,
                    cpu_percent: 0.0,
                    uptime_seconds: 0,
                },
            },
            gpu,
        }
    }
}

impl Drop for SystemMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A refresh that panicked leaves figures that are still worth reading.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn run(shared: Arc<Shared>) {
    let nvidia_smi = find_on_path("nvidia-smi");
    let mut wait = sysinfo::MINIMUM_CPU_UPDATE_INTERVAL;
    loop {
        tokio::time::sleep(wait).await;
        wait = REFRESH_EVERY;
        let refreshing = Arc::clone(&shared);
        // Reading /proc is blocking IO: off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || {
            refresh(&mut lock(&refreshing.system), refreshing.pid)
        })
        .await;
        if let Some(program) = &nvidia_smi {
            let gpu = read_gpus(program).await;
            *lock(&shared.gpu) = gpu;
        }
        shared.refreshes.send_modify(|n| *n += 1);
    }
}

fn refresh(system: &mut System, pid: Option<Pid>) {
    system.refresh_cpu_usage();
    system.refresh_memory();
    if let Some(pid) = pid {
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            false,
            ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
    }
}

fn percent_of(value: f32) -> f32 {
    if value.is_finite() {
        value.clamp(0.0, 100.0)
    } else {
        0.0
    }
}

fn ratio(part: u64, whole: u64) -> f32 {
    if whole == 0 {
        0.0
    } else {
        percent_of((part as f64 / whole as f64 * 100.0) as f32)
    }
}

#[allow(
    clippy::useless_conversion,
    reason = "c_ulong and fsblkcnt_t are 32 bits wide on some targets"
)]
fn disk_stats(path: &Path) -> Option<DiskStats> {
    let fs = nix::sys::statvfs::statvfs(path).ok()?;
    let unit = u64::from(fs.fragment_size());
    let total = u64::from(fs.blocks()) * unit;
    let free = u64::from(fs.blocks_free()) * unit;
    let available = u64::from(fs.blocks_available()) * unit;
    let used = total.saturating_sub(free);
    Some(DiskStats {
        path: path.display().to_string(),
        total_bytes: total,
        used_bytes: used,
        available_bytes: available,
        percent: ratio(used, used + available),
    })
}

/// The first executable file of that name in the `PATH`'s directories.
fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The GPUs `nvidia-smi` reports within [`NVIDIA_SMI_TIMEOUT`]; none when it fails.
async fn read_gpus(program: &Path) -> Vec<GpuStats> {
    let output = tokio::process::Command::new(program)
        .args([
            "--query-gpu=name,utilization.gpu,memory.used,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(NVIDIA_SMI_TIMEOUT, output).await {
        Ok(Ok(output)) if output.status.success() => {
            parse_nvidia_smi(&String::from_utf8_lossy(&output.stdout))
        }
        _ => Vec::new(),
    }
}

/// `nvidia-smi --query-gpu=name,utilization.gpu,memory.used,memory.total
/// --format=csv,noheader,nounits`: one line per GPU, memory in MiB.
fn parse_nvidia_smi(text: &str) -> Vec<GpuStats> {
    const MIB: u64 = 1024 * 1024;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .filter_map(|(index, line)| {
            // The name comes first and may hold commas; the three figures do not.
            let mut fields = line.rsplitn(4, ',').map(str::trim);
            let total = fields.next()?;
            let used = fields.next()?;
            let utilization = fields.next()?;
            let name = fields.next()?;
            Some(GpuStats {
                index,
                name: name.to_owned(),
                utilization_percent: utilization.parse::<f32>().ok().map(percent_of),
                memory_used_bytes: used.parse::<u64>().ok().map(|m| m * MIB),
                memory_total_bytes: total.parse::<u64>().ok().map(|m| m * MIB),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_figures_are_plausible_once_the_monitor_has_refreshed() {
        let monitor = SystemMonitor::start();
        // The background task's first refresh, so that CPU usages are differences between two
        // readings.
        tokio::time::timeout(Duration::from_secs(60), monitor.refreshed())
            .await
            .expect("no refresh");

        let stats = monitor.stats(Path::new("/"));

        assert!(stats.cpu.core_count > 0);
        assert_eq!(stats.cpu.per_core_percent.len(), stats.cpu.core_count);
        assert!((0.0..=100.0).contains(&stats.cpu.usage_percent));
        assert!(
            stats
                .cpu
                .per_core_percent
                .iter()
                .all(|p| (0.0..=100.0).contains(p))
        );
        assert!(stats.cpu.load_average.one >= 0.0);
        assert!(stats.memory.total_bytes > 0);
        assert!(stats.memory.available_bytes <= stats.memory.total_bytes);
        assert!(stats.memory.used_bytes <= stats.memory.total_bytes);
        assert!((0.0..=100.0).contains(&stats.memory.percent));
        let disk = stats
            .disk
            .as_ref()
            .expect("the root filesystem is readable");
        assert!(disk.total_bytes > 0);
        assert!(disk.used_bytes <= disk.total_bytes);
        assert!((0.0..=100.0).contains(&disk.percent));
        assert_eq!(stats.process.pid, std::process::id());
        assert!(stats.process.rss_bytes > 0);
        assert!((0.0..=100.0).contains(&stats.process.cpu_percent));
        if find_on_path("nvidia-smi").is_none() {
            assert!(stats.gpu.is_empty());
        }
        // What a handler answers.
        let json = serde_json::to_value(&stats).unwrap();
        assert!(json["memory"]["total_bytes"].as_u64().unwrap() > 0);
    }

    #[tokio::test]
    async fn a_path_that_does_not_exist_has_no_disk_figures() {
        let monitor = SystemMonitor::start();
        assert!(
            monitor
                .stats(Path::new("/no/such/path/here"))
                .disk
                .is_none()
        );
    }

    #[test]
    fn nvidia_smi_lines_become_gpus_and_missing_figures_become_none() {
        let gpus = parse_nvidia_smi(
            "NVIDIA GeForce RTX 3080, 17, 1024, 10240\nTesla T4, [N/A], 0, 15360\n\n",
        );
        assert_eq!(
            gpus,
            [
                GpuStats {
                    index: 0,
                    name: "NVIDIA GeForce RTX 3080".into(),
                    utilization_percent: Some(17.0),
                    memory_used_bytes: Some(1024 * 1024 * 1024),
                    memory_total_bytes: Some(10240 * 1024 * 1024),
                },
                GpuStats {
                    index: 1,
                    name: "Tesla T4".into(),
                    utilization_percent: None,
                    memory_used_bytes: Some(0),
                    memory_total_bytes: Some(15360 * 1024 * 1024),
                },
            ]
        );
        assert!(parse_nvidia_smi("").is_empty());
    }

    #[test]
    fn a_missing_program_is_not_found_on_the_path() {
        assert_eq!(find_on_path("surely-no-such-program-atelier"), None);
        assert!(find_on_path("sh").is_some());
    }
}
