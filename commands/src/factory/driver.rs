//! Build drivers: how a build is actually run. `simulated` behaves as the software factory's seed
//! (2 to 10 seconds, success or failure, a few lines of log); `shell` clones the project's
//! repository with git and runs its build command in a fresh directory.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use atelier_domain::factory::build::{FailureReason, Outcome};
use rand::RngExt;
use tokio::process::Command;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::RepoPolicy;
use super::logs::{LogSink, LogStream};
use crate::process::{Exit, clean_command, code_of, run_to_end};

/// What a driver runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The build.
    pub build_id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// Its project.
    pub project_id: Uuid,
    /// The repository to check out.
    pub repo_url: String,
    /// The command to run.
    pub build_command: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunResult {
    /// It ran to an end.
    Finished(Outcome),
    /// It was cancelled (and its processes killed).
    Cancelled,
}

/// Runs builds.
#[async_trait]
pub trait BuildDriver: Send + Sync + 'static {
    /// Its name, as `ATELIER_BUILD_DRIVER` spells it.
    fn name(&self) -> &'static str;
    /// Runs `job`, writing its output to `log`, until it ends or `cancel` fires.
    async fn run(&self, job: &Job, log: &LogSink, cancel: CancellationToken) -> RunResult;
}

/// The seed's simulated builds: a random duration between 2 and 10 seconds (times
/// `time_scale`), then success or failure with even odds.
#[derive(Debug, Clone)]
pub struct SimulatedDriver {
    /// Multiplies every duration (tests and benchmarks use small values).
    pub time_scale: f64,
    /// The odds of a failure, from 0 to 1.
    pub failure_rate: f64,
}

impl Default for SimulatedDriver {
    fn default() -> Self {
        Self {
            time_scale: 1.0,
            failure_rate: 0.5,
        }
    }
}

#[async_trait]
impl BuildDriver for SimulatedDriver {
    fn name(&self) -> &'static str {
        "simulated"
    }

    async fn run(&self, job: &Job, log: &LogSink, cancel: CancellationToken) -> RunResult {
        let (seconds, fails) = {
            let mut rng = rand::rng();
            (
                rng.random_range(2.0..=10.0_f64),
                rng.random_bool(self.failure_rate.clamp(0.0, 1.0)),
            )
        };
        let total = Duration::from_secs_f64(seconds * self.time_scale.max(0.0));
        let command = job.build_command.as_deref().unwrap_or("the build");
        let steps = [
            format!("Cloning {}", job.repo_url),
            format!("Running {command}"),
            "Compiling".to_owned(),
            "Running tests".to_owned(),
        ];
        log.line(
            LogStream::System,
            format!(
                "Build simulated: {seconds:.2} s (time scale {})",
                self.time_scale
            ),
        );
        for step in steps {
            log.line(LogStream::Stdout, step);
            tokio::select! {
                _ = tokio::time::sleep(total / 4) => {}
                _ = cancel.cancelled() => return RunResult::Cancelled,
            }
        }
        if fails {
            log.line(LogStream::Stderr, "error: simulated failure");
            RunResult::Finished(Outcome::Failed {
                exit_code: Some(1),
                reason: FailureReason::ExitStatus,
                message: "the simulated build failed".to_owned(),
            })
        } else {
            log.line(LogStream::Stdout, "Build succeeded");
            RunResult::Finished(Outcome::Succeeded)
        }
    }
}

/// Clones the repository with git into a fresh directory and runs the build command there with
/// `sh -c`, in its own process group, with a clean environment (the server's secrets never
/// reach a build), under a timeout that covers the clone and the command.
///
/// It clones only what [`RepoPolicy`] accepts, whatever a project holds (a project recorded
/// before local repositories were disallowed, or by another server): a local repository is
/// refused unless allowed, a remote helper (`ext::`) always, and git itself is told which
/// protocols it may use (`GIT_ALLOW_PROTOCOL`), submodules and redirects included.
#[derive(Debug, Clone)]
pub struct ShellDriver {
    /// Where builds get their directories (each removed after its build).
    pub work_dir: PathBuf,
    /// The longest a build may take.
    pub timeout: Duration,
    /// How long a process group has between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Which repositories it clones.
    pub repos: RepoPolicy,
}

impl ShellDriver {
    async fn run_process(
        &self,
        command: Command,
        log: &LogSink,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Exit {
        run_to_end(command, &log.handle(), deadline, cancel, self.kill_grace).await
    }

    fn command(&self, program: &str, job: &Job) -> Command {
        let mut c = clean_command(program);
        c.env("CI", "true")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("ATELIER_BUILD_ID", job.build_id.to_string())
            .env("ATELIER_PROJECT_ID", job.project_id.to_string());
        c
    }
}

fn failed(exit_code: Option<i32>, reason: FailureReason, message: impl Into<String>) -> RunResult {
    RunResult::Finished(Outcome::Failed {
        exit_code,
        reason,
        message: message.into(),
    })
}

#[async_trait]
impl BuildDriver for ShellDriver {
    fn name(&self) -> &'static str {
        "shell"
    }

    async fn run(&self, job: &Job, log: &LogSink, cancel: CancellationToken) -> RunResult {
        let deadline = Instant::now() + self.timeout;
        let dir = self.work_dir.join(format!("build-{}", job.build_id));
        let _ = tokio::fs::remove_dir_all(&dir).await;
        if let Err(e) = tokio::fs::create_dir_all(&self.work_dir).await {
            log.line(
                LogStream::System,
                format!("cannot create the work directory: {e}"),
            );
            return failed(
                None,
                FailureReason::Error,
                "cannot create the work directory",
            );
        }
        let result = self.run_in(job, log, &dir, deadline, &cancel).await;
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(build_id = %job.build_id, error = %e, "could not remove a build directory");
        }
        result
    }
}

impl ShellDriver {
    async fn run_in(
        &self,
        job: &Job,
        log: &LogSink,
        dir: &std::path::Path,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> RunResult {
        if let Err(refused) = self.repos.check_stored(&job.repo_url) {
            let message = format!("not cloned: the repository {refused}");
            log.line(LogStream::System, message.clone());
            return failed(None, FailureReason::Error, message);
        }
        log.line(
            LogStream::System,
            format!("$ git clone --depth 1 {}", job.repo_url),
        );
        let mut clone = self.command("git", job);
        clone
            .env("GIT_ALLOW_PROTOCOL", self.repos.git_protocols())
            .args(["clone", "--quiet", "--depth", "1", "--"])
            .arg(&job.repo_url)
            .arg(dir)
            .current_dir(&self.work_dir);
        match self.run_process(clone, log, deadline, cancel).await {
            Exit::Status(s) if s.success() => {}
            Exit::Status(s) => {
                let code = code_of(s);
                log.line(
                    LogStream::System,
                    format!("git clone failed with status {code}"),
                );
                return failed(
                    Some(code),
                    FailureReason::Error,
                    format!("git clone failed with status {code}"),
                );
            }
            Exit::TimedOut => return self.timed_out(log),
            Exit::Cancelled => return RunResult::Cancelled,
            Exit::SpawnFailed(e) => {
                log.line(LogStream::System, format!("cannot run git: {e}"));
                return failed(None, FailureReason::Error, format!("cannot run git: {e}"));
            }
        }
        let Some(script) = job.build_command.as_deref() else {
            log.line(LogStream::System, "the project has no build command");
            return failed(
                None,
                FailureReason::Error,
                "the project has no build command",
            );
        };
        log.line(LogStream::System, format!("$ {script}"));
        let mut run = self.command("sh", job);
        run.arg("-c").arg(script).current_dir(dir);
        match self.run_process(run, log, deadline, cancel).await {
            Exit::Status(s) if s.success() => {
                log.line(LogStream::System, "exited with status 0");
                RunResult::Finished(Outcome::Succeeded)
            }
            Exit::Status(s) => {
                let code = code_of(s);
                log.line(LogStream::System, format!("exited with status {code}"));
                failed(
                    Some(code),
                    FailureReason::ExitStatus,
                    format!("exited with status {code}"),
                )
            }
            Exit::TimedOut => self.timed_out(log),
            Exit::Cancelled => RunResult::Cancelled,
            Exit::SpawnFailed(e) => {
                log.line(LogStream::System, format!("cannot run the command: {e}"));
                failed(
                    None,
                    FailureReason::Error,
                    format!("cannot run the command: {e}"),
                )
            }
        }
    }

    fn timed_out(&self, log: &LogSink) -> RunResult {
        let message = format!("timed out after {} s", self.timeout.as_secs_f64());
        log.line(LogStream::System, message.clone());
        failed(None, FailureReason::TimedOut, message)
    }
}
