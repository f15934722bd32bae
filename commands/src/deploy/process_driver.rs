//! The `process` provisioner: it really runs a deployment's app on this machine, as a process
//! group listening on 127.0.0.1.
//!
//! Each deployment gets `work_dir/<deployment_id>/`, holding `app/` (a shallow clone of its
//! repository, built with its framework's `build_cmd`), `app.log` (everything the app prints)
//! and `app.pid` (the id of the app's process group). The app is started with its framework's
//! `start_cmd` in a process group of its own, its output appended to `app.log` (a file, not a
//! pipe: it survives the server), so a restarted server adopts it through `app.pid`.
//!
//! Every child gets a clean environment (only `PATH`, `HOME` and `LANG` of the server's), plus
//! the deployment's variables and `HOST=127.0.0.1` (and `PORT` for the app). The variables'
//! values are never written to the log. Git is told which protocols it may use
//! (`GIT_ALLOW_PROTOCOL`: `file` only for a configured `file:` mirror, never `ext`), never
//! prompts, and is given the URL after `--`.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use atelier_domain::deploy::deployment::FailureReason;
use atelier_domain::deploy::framework::Framework;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::driver::{Allocations, Failure, Provisioned, Provisioner, Rollout};
use crate::output::{LogHandle, LogStream, MAX_LINE_BYTES};
use crate::process::{Exit, clean_command, code_of, end_group, group_alive, run_to_end};

/// The only address apps listen on, and the only one this driver connects to.
pub const LOCALHOST: &str = "127.0.0.1";
/// The checkout, in a deployment's directory.
pub const APP_DIR: &str = "app";
/// The app's output, in a deployment's directory.
pub const LOG_FILE: &str = "app.log";
/// The app's process-group id, in a deployment's directory.
pub const PID_FILE: &str = "app.pid";
/// The default of [`ProcessProvisioner::build_timeout`].
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The default of [`ProcessProvisioner::ready_timeout`].
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The default of [`ProcessProvisioner::kill_grace`].
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

/// How often the app is asked whether it answers, while it starts.
const READY_EVERY: Duration = Duration::from_millis(150);
/// The longest one readiness request may take.
const READY_REQUEST: Duration = Duration::from_secs(1);
/// How often `app.log` is read for new lines.
const TAIL_EVERY: Duration = Duration::from_millis(200);
/// How often [`Provisioner::exited`] looks at the app's group.
const EXITED_EVERY: Duration = Duration::from_millis(500);
/// How long a tailer has to forward its last lines when it is stopped.
const TAIL_FLUSH: Duration = Duration::from_secs(2);
/// How long a stop waits for the group to be gone after its SIGKILL.
const GONE_WAIT: Duration = Duration::from_secs(2);

/// Runs each deployment's app on this machine: a clone of its repository under
/// `work_dir/<deployment_id>/app`, built with its framework's `build_cmd`, started with its
/// `start_cmd` on a free port of 127.0.0.1, in its own process group (see the module's
/// documentation). Clones share one in-memory registry of the apps they started.
#[derive(Clone)]
pub struct ProcessProvisioner {
    /// Where deployments get their directories (`work_dir/<deployment_id>/`).
    pub work_dir: PathBuf,
    /// URL prefix rewrites applied to a repository's URL before it is cloned, the first
    /// matching prefix winning: `("https://github.com/", "file:///srv/mirror/")` clones
    /// `https://github.com/acme/site` from `/srv/mirror/acme/site`.
    pub mirrors: Vec<(String, String)>,
    /// The allocations (a deployment's VM id).
    pub allocations: Allocations,
    /// The runner's id (allocations are recorded under it).
    pub runner: String,
    /// The longest the clone and the build command may take together.
    pub build_timeout: Duration,
    /// The longest an app may take, from its start, to answer HTTP.
    pub ready_timeout: Duration,
    /// How long an app's process group has between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// The apps this process started: their exit statuses and log tailers.
    apps: Arc<Mutex<HashMap<Uuid, App>>>,
}

impl std::fmt::Debug for ProcessProvisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessProvisioner")
            .field("work_dir", &self.work_dir)
            .field("mirrors", &self.mirrors.len())
            .field("runner", &self.runner)
            .field("build_timeout", &self.build_timeout)
            .field("ready_timeout", &self.ready_timeout)
            .field("kill_grace", &self.kill_grace)
            .finish_non_exhaustive()
    }
}

/// An app this process started.
struct App {
    /// Its process group.
    pgid: i32,
    /// Its exit status (as [`code_of`] gives it), once its reaper saw it exit.
    status: watch::Receiver<Option<i32>>,
    /// Stops its tailer.
    tail_stop: CancellationToken,
    /// Its tailer.
    tail: JoinHandle<()>,
}

impl ProcessProvisioner {
    /// A provisioner with deployments under `work_dir`, no mirrors and the default timeouts
    /// ([`DEFAULT_BUILD_TIMEOUT`], [`DEFAULT_READY_TIMEOUT`], [`DEFAULT_KILL_GRACE`]); every
    /// field but the registry of started apps is public, to be changed after.
    pub fn new(
        work_dir: impl Into<PathBuf>,
        allocations: Allocations,
        runner: impl Into<String>,
    ) -> Self {
        Self {
            work_dir: work_dir.into(),
            mirrors: Vec::new(),
            allocations,
            runner: runner.into(),
            build_timeout: DEFAULT_BUILD_TIMEOUT,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            kill_grace: DEFAULT_KILL_GRACE,
            apps: Arc::default(),
        }
    }

    /// The directory of a deployment.
    pub fn deployment_dir(&self, deployment_id: Uuid) -> PathBuf {
        self.work_dir.join(deployment_id.to_string())
    }

    /// The URL a repository is cloned from: its URL rewritten by the first matching mirror.
    pub fn source_url(&self, url: &str) -> String {
        self.mirrors
            .iter()
            .find_map(|(prefix, to)| {
                url.strip_prefix(prefix.as_str())
                    .map(|rest| format!("{to}{rest}"))
            })
            .unwrap_or_else(|| url.to_owned())
    }

    fn apps(&self) -> MutexGuard<'_, HashMap<Uuid, App>> {
        self.apps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A child with a clean environment, the deployment's variables and `HOST`.
    fn command(program: &str, job: &Rollout) -> Command {
        let mut c = clean_command(program);
        c.envs(job.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HOST", LOCALHOST);
        c
    }

    /// The group of the app the deployment runs, if it runs one.
    async fn running(&self, deployment_id: Uuid) -> Option<i32> {
        let dir = self.deployment_dir(deployment_id);
        let pgid = read_pid(&dir.join(PID_FILE)).await?;
        (ours(pgid, &dir) && group_alive(pgid)).then_some(pgid)
    }

    /// Stops the deployment's app, if it runs one, and its tailer.
    async fn stop_app(&self, deployment_id: Uuid, log: &LogHandle) -> Result<(), String> {
        let dir = self.deployment_dir(deployment_id);
        let pid_path = dir.join(PID_FILE);
        let from_file = read_pid(&pid_path).await;
        // Without a pid file (it could not be written), the group this process started.
        let pgid = from_file.or_else(|| {
            self.apps()
                .get(&deployment_id)
                .filter(|a| a.status.borrow().is_none())
                .map(|a| a.pgid)
        });
        if let Some(pgid) = pgid
            && ours(pgid, &dir)
            && group_alive(pgid)
        {
            log.line(
                LogStream::System,
                format!("stopping the app (process group {pgid})"),
            );
            end_group(pgid, self.kill_grace).await;
            let deadline = Instant::now() + GONE_WAIT;
            while group_alive(pgid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if group_alive(pgid) {
                tracing::warn!(%deployment_id, pgid, "an app's process group outlived its SIGKILL");
            }
            log.line(LogStream::System, "the app stopped");
        }
        self.end_tail(deployment_id).await;
        match tokio::fs::remove_file(&pid_path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove {}: {e}", pid_path.display())),
        }
    }

    /// Stops the tailer of an app this process started, after it forwarded its last lines.
    async fn end_tail(&self, deployment_id: Uuid) {
        let app = self.apps().remove(&deployment_id);
        if let Some(app) = app {
            app.tail_stop.cancel();
            if tokio::time::timeout(TAIL_FLUSH, app.tail).await.is_err() {
                tracing::warn!(%deployment_id, "an app's log tailer did not stop in time");
            }
        }
    }

    /// Removes a deployment's directory (nothing there is fine).
    async fn remove_dir(&self, deployment_id: Uuid) -> Result<bool, String> {
        let dir = self.deployment_dir(deployment_id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(format!("cannot remove {}: {e}", dir.display())),
        }
    }

    /// Undoes a provisioning that did not complete.
    async fn undo_provision(&self, deployment_id: Uuid) {
        if let Err(e) = self.remove_dir(deployment_id).await {
            tracing::warn!(%deployment_id, error = %e, "cannot remove a deployment's directory");
        }
        if let Err(e) = self.allocations.release(deployment_id).await {
            tracing::warn!(%deployment_id, error = %e, "cannot release a deployment's allocation");
        }
    }

    /// Clones the repository into `dir/app` and runs the build command there.
    async fn clone_and_build(
        &self,
        job: &Rollout,
        framework: &Framework,
        dir: &Path,
        log: &LogHandle,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let deadline = Instant::now() + self.build_timeout;
        let Some(github) = job.spec.github_url.as_ref().map(|g| g.as_str()) else {
            return Err(fail(
                log,
                FailureReason::Error,
                "the deployment has no repository to clone".to_owned(),
            ));
        };
        let url = self.source_url(github);
        if url.contains("::") || url.starts_with('-') {
            return Err(fail(
                log,
                FailureReason::Error,
                format!("not cloned: {github} maps to a URL git must not be given"),
            ));
        }
        let protocols = if url.starts_with("file:") {
            "https:http:ssh:git:file"
        } else {
            "https:http:ssh:git"
        };
        let mirrored = if url == github {
            ""
        } else {
            " (from a mirror)"
        };
        log.line(
            LogStream::System,
            format!("$ git clone --depth 1 {github}{mirrored}"),
        );
        let mut clone = clean_command("git");
        clone
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", protocols)
            .args(["clone", "--quiet", "--depth", "1", "--"])
            .arg(&url)
            .arg(APP_DIR)
            .current_dir(dir);
        match run_to_end(clone, log, deadline, cancel, self.kill_grace).await {
            Exit::Status(s) if s.success() => {}
            Exit::Status(s) => {
                let message = format!("git clone failed (exit {})", code_of(s));
                return Err(fail(log, FailureReason::Error, message));
            }
            Exit::TimedOut => return Err(self.build_timed_out(log)),
            Exit::Cancelled => return Err(cancelled(log)),
            Exit::SpawnFailed(e) => {
                return Err(fail(
                    log,
                    FailureReason::Error,
                    format!("cannot run git: {e}"),
                ));
            }
        }
        log.line(LogStream::System, format!("$ {}", framework.build_cmd));
        let mut build = Self::command("sh", job);
        build
            .arg("-c")
            .arg(framework.build_cmd)
            .current_dir(dir.join(APP_DIR));
        match run_to_end(build, log, deadline, cancel, self.kill_grace).await {
            Exit::Status(s) if s.success() => {
                log.line(LogStream::System, "the build succeeded");
                Ok(())
            }
            Exit::Status(s) => {
                let message = format!("the build command failed (exit {})", code_of(s));
                Err(fail(log, FailureReason::Error, message))
            }
            Exit::TimedOut => Err(self.build_timed_out(log)),
            Exit::Cancelled => Err(cancelled(log)),
            Exit::SpawnFailed(e) => Err(fail(
                log,
                FailureReason::Error,
                format!("cannot run the build command: {e}"),
            )),
        }
    }

    fn build_timed_out(&self, log: &LogHandle) -> Failure {
        let message = format!(
            "the clone and build did not finish within {} s",
            self.build_timeout.as_secs_f64()
        );
        fail(log, FailureReason::TimedOut, message)
    }

    /// Starts the app's process group, its output appended to `app.log`, and its reaper and
    /// tailer: its group id and exit status.
    async fn spawn_app(
        &self,
        job: &Rollout,
        framework: &Framework,
        port: u16,
        log: &LogHandle,
    ) -> Result<(i32, watch::Receiver<Option<i32>>), Failure> {
        let id = job.deployment_id;
        let dir = self.deployment_dir(id);
        let log_path = dir.join(LOG_FILE);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .and_then(|f| Ok((f.metadata()?.len(), f.try_clone()?, f)));
        let (offset, out, err) = match out {
            Ok(files) => files,
            Err(e) => {
                let message = format!("cannot open {LOG_FILE}: {e}");
                return Err(fail(log, FailureReason::Error, message));
            }
        };
        let mut command = Self::command("sh", job);
        command
            .env("PORT", port.to_string())
            .arg("-c")
            .arg(framework.start_cmd)
            .current_dir(dir.join(APP_DIR))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(false);
        log.line(
            LogStream::System,
            format!("$ {} (on {LOCALHOST}:{port})", framework.start_cmd),
        );
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let message = format!("cannot start the app: {e}");
                return Err(fail(log, FailureReason::Error, message));
            }
        };
        let Some(pgid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
            let _ = child.start_kill();
            return Err(fail(log, FailureReason::Error, "the app has no process id"));
        };
        let (status_tx, status) = watch::channel(None);
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(s) => code_of(s),
                Err(_) => -1,
            };
            status_tx.send_replace(Some(code));
        });
        let tail_stop = CancellationToken::new();
        let tail = tokio::spawn(tail(
            log_path,
            offset,
            log.clone(),
            tail_stop.clone(),
            status.clone(),
        ));
        self.apps().insert(
            id,
            App {
                pgid,
                status: status.clone(),
                tail_stop,
                tail,
            },
        );
        if let Err(e) = tokio::fs::write(dir.join(PID_FILE), format!("{pgid}\n")).await {
            end_group(pgid, self.kill_grace).await;
            self.end_tail(id).await;
            let message = format!("cannot write {PID_FILE}: {e}");
            return Err(fail(log, FailureReason::Error, message));
        }
        Ok((pgid, status))
    }

    /// Waits until the app answers on `port`, exits, times out or is cancelled. A failure is
    /// not logged yet: the app's last lines go first.
    async fn await_ready(
        &self,
        pgid: i32,
        port: u16,
        mut status: watch::Receiver<Option<i32>>,
        started: Instant,
        cancel: &CancellationToken,
    ) -> Result<String, Failure> {
        let url = format!("http://{LOCALHOST}:{port}");
        // Never a proxy, never a redirect: only 127.0.0.1 is ever connected to.
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(READY_REQUEST)
            .build()
            .map_err(|e| Failure::error(format!("no HTTP client: {e}")))?;
        let deadline = started + self.ready_timeout;
        loop {
            let mut exit = *status.borrow();
            if exit.is_none() && !group_alive(pgid) {
                // Its reaper is about to record the status.
                exit = settled(&mut status).await;
                if exit.is_none() {
                    return Err(Failure::error("the app exited before it answered"));
                }
            }
            if let Some(code) = exit {
                return Err(Failure::error(format!(
                    "the app exited with status {code} before it answered"
                )));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure::Failed {
                    reason: FailureReason::TimedOut,
                    message: format!(
                        "the app did not answer on {LOCALHOST}:{port} within {} s",
                        self.ready_timeout.as_secs_f64()
                    ),
                });
            }
            let request = client
                .get(format!("{url}/"))
                .timeout((deadline - now).min(READY_REQUEST))
                .send();
            tokio::select! {
                answered = request => if answered.is_ok() {
                    return Ok(url);
                },
                _ = cancel.cancelled() => return Err(Failure::Cancelled),
            }
            tokio::select! {
                _ = tokio::time::sleep_until((Instant::now() + READY_EVERY).min(deadline)) => {}
                _ = cancel.cancelled() => return Err(Failure::Cancelled),
            }
        }
    }

    /// What happened to an app whose group is gone (`waited`: its group was just seen gone, so
    /// its reaper may be about to record its status).
    async fn exit_message(&self, deployment_id: Uuid, pgid: Option<i32>, waited: bool) -> String {
        let status = self
            .apps()
            .get(&deployment_id)
            .filter(|a| pgid.is_none_or(|p| p == a.pgid))
            .map(|a| a.status.clone());
        let mut code = None;
        if let Some(mut status) = status {
            code = *status.borrow();
            if code.is_none() && waited {
                code = settled(&mut status).await;
            }
        }
        match code {
            Some(code) => format!("the app exited (status {code})"),
            None => "the app is no longer running".to_owned(),
        }
    }
}

/// Writes a failure's message to the log as a system line, and makes it a [`Failure`].
fn fail(log: &LogHandle, reason: FailureReason, message: impl Into<String>) -> Failure {
    let message = message.into();
    log.line(LogStream::System, message.clone());
    Failure::Failed { reason, message }
}

/// Writes a failure to the log as a system line.
fn log_failure(log: &LogHandle, failure: &Failure) {
    match failure {
        Failure::Failed { message, .. } => log.line(LogStream::System, message.clone()),
        Failure::Cancelled => log.line(LogStream::System, "cancelled"),
    }
}

/// The exit status of an app whose group was just seen gone: its reaper records it at once,
/// so it is waited for only briefly.
async fn settled(status: &mut watch::Receiver<Option<i32>>) -> Option<i32> {
    tokio::time::timeout(Duration::from_millis(500), status.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(|seen| seen.ok().and_then(|code| *code))
}

fn cancelled(log: &LogHandle) -> Failure {
    log.line(LogStream::System, "cancelled");
    Failure::Cancelled
}

/// The group id in a pid file.
async fn read_pid(path: &Path) -> Option<i32> {
    let text = tokio::fs::read_to_string(path).await.ok()?;
    text.trim().parse().ok().filter(|p| *p > 1)
}

/// Whether a group id in a deployment's pid file still names its app, as far as can be told:
/// a group leader that runs in another directory is some other process that got the id
/// (after a reboot, say), never to be signalled. A leader that is gone (or cannot be looked
/// at) is given the benefit of the doubt.
fn ours(pgid: i32, dir: &Path) -> bool {
    match std::fs::read_link(format!("/proc/{pgid}/cwd")) {
        Ok(cwd) => {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            cwd.starts_with(&dir)
        }
        Err(_) => true,
    }
}

/// A free TCP port of 127.0.0.1 (bound, read and let go).
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Forwards the lines `path` gets after `offset` to `log`, until stopped or the app exited
/// (then its last lines are forwarded).
async fn tail(
    path: PathBuf,
    mut offset: u64,
    log: LogHandle,
    stop: CancellationToken,
    status: watch::Receiver<Option<i32>>,
) {
    let mut partial = Vec::new();
    loop {
        let last = tokio::select! {
            _ = tokio::time::sleep(TAIL_EVERY) => status.borrow().is_some(),
            _ = stop.cancelled() => true,
        };
        read_new(&path, &mut offset, &mut partial, &log).await;
        if last {
            if !partial.is_empty() {
                log.line(
                    LogStream::Stdout,
                    String::from_utf8_lossy(&partial).into_owned(),
                );
            }
            return;
        }
    }
}

/// Forwards the complete lines a file got after `offset`; the rest stays in `partial`.
async fn read_new(path: &Path, offset: &mut u64, partial: &mut Vec<u8>, log: &LogHandle) {
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return;
    };
    let Ok(meta) = file.metadata().await else {
        return;
    };
    if meta.len() < *offset {
        // Truncated: start again from its beginning.
        *offset = 0;
        partial.clear();
    }
    if meta.len() == *offset || file.seek(SeekFrom::Start(*offset)).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        *offset += n as u64;
        let mut rest = &buf[..n];
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            partial.extend_from_slice(&rest[..end]);
            log.line(
                LogStream::Stdout,
                String::from_utf8_lossy(partial).into_owned(),
            );
            partial.clear();
            rest = &rest[end + 1..];
        }
        partial.extend_from_slice(rest);
        if partial.len() > MAX_LINE_BYTES {
            log.line(
                LogStream::Stdout,
                String::from_utf8_lossy(partial).into_owned(),
            );
            partial.clear();
        }
    }
}

#[async_trait]
impl Provisioner for ProcessProvisioner {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn provision(
        &self,
        job: &Rollout,
        log: &LogHandle,
        cancel: &CancellationToken,
    ) -> Result<Provisioned, Failure> {
        let id = job.deployment_id;
        if job.spec.stack.is_some() {
            let message = "the process driver runs one app built from a repository; a stack's \
                           compose services need a container engine, which this driver is not \
                           (deploy stacks with the simulated driver)"
                .to_owned();
            return Err(fail(log, FailureReason::Error, message));
        }
        let Some(framework) = job.spec.framework() else {
            let message = format!("unknown framework {:?}", job.spec.framework);
            return Err(fail(log, FailureReason::Error, message));
        };
        // A redeploy replaces everything.
        if let Err(e) = self.stop_app(id, log).await {
            tracing::warn!(deployment_id = %id, error = %e, "cannot stop a deployment's app");
        }
        if let Err(e) = self.remove_dir(id).await {
            self.undo_provision(id).await;
            return Err(fail(log, FailureReason::Error, e));
        }
        let dir = self.deployment_dir(id);
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            self.undo_provision(id).await;
            let message = format!("cannot create the deployment's directory: {e}");
            return Err(fail(log, FailureReason::Error, message));
        }
        let vm_id = match self
            .allocations
            .allocate(job.org_id, id, &self.runner, None)
            .await
        {
            Ok(Some((_, vm_id))) => vm_id,
            Ok(None) => {
                self.undo_provision(id).await;
                return Err(fail(log, FailureReason::Error, "no VM id is left"));
            }
            Err(e) => {
                self.undo_provision(id).await;
                let message = format!("cannot allocate a VM id: {e}");
                return Err(fail(log, FailureReason::Error, message));
            }
        };
        log.line(
            LogStream::System,
            format!("VM id {vm_id} allocated, on {LOCALHOST}"),
        );
        match self
            .clone_and_build(job, framework, &dir, log, cancel)
            .await
        {
            Ok(()) => Ok(Provisioned {
                ip_address: LOCALHOST.to_owned(),
                vm_id,
            }),
            Err(failure) => {
                self.undo_provision(id).await;
                Err(failure)
            }
        }
    }

    async fn start(
        &self,
        job: &Rollout,
        _at: &Provisioned,
        log: &LogHandle,
        cancel: &CancellationToken,
    ) -> Result<String, Failure> {
        let id = job.deployment_id;
        let Some(framework) = job.spec.framework() else {
            let message = format!("unknown framework {:?}", job.spec.framework);
            return Err(fail(log, FailureReason::Error, message));
        };
        if !self.deployment_dir(id).join(APP_DIR).is_dir() {
            return Err(fail(
                log,
                FailureReason::Error,
                "the deployment is not provisioned: it has no checkout",
            ));
        }
        // A start replaces the app the deployment runs, if any.
        if let Err(e) = self.stop_app(id, log).await {
            return Err(fail(log, FailureReason::Error, e));
        }
        let port = match free_port() {
            Ok(port) => port,
            Err(e) => {
                let message = format!("no free port on {LOCALHOST}: {e}");
                return Err(fail(log, FailureReason::Error, message));
            }
        };
        let started = Instant::now();
        let (pgid, status) = self.spawn_app(job, framework, port, log).await?;
        match self.await_ready(pgid, port, status, started, cancel).await {
            Ok(url) => {
                log.line(LogStream::System, format!("the app answers on {url}"));
                Ok(url)
            }
            Err(failure) => {
                // Stopping it forwards its last lines first.
                if let Err(e) = self.stop_app(id, log).await {
                    tracing::warn!(deployment_id = %id, error = %e, "cannot stop an app that did not start");
                }
                log_failure(log, &failure);
                Err(failure)
            }
        }
    }

    async fn stop(&self, deployment_id: Uuid, log: &LogHandle) -> Result<(), String> {
        self.stop_app(deployment_id, log).await
    }

    async fn destroy(&self, deployment_id: Uuid, log: &LogHandle) -> Result<(), String> {
        self.stop_app(deployment_id, log).await?;
        if self.remove_dir(deployment_id).await? {
            log.line(LogStream::System, "the deployment's directory is removed");
        }
        self.allocations
            .release(deployment_id)
            .await
            .map_err(|e| e.to_string())
    }

    async fn alive(&self, deployment_id: Uuid) -> bool {
        self.running(deployment_id).await.is_some()
    }

    async fn exited(&self, deployment_id: Uuid) -> String {
        let dir = self.deployment_dir(deployment_id);
        loop {
            let Some(pgid) = read_pid(&dir.join(PID_FILE)).await else {
                return self.exit_message(deployment_id, None, false).await;
            };
            if !(ours(pgid, &dir) && group_alive(pgid)) {
                return self.exit_message(deployment_id, Some(pgid), true).await;
            }
            tokio::time::sleep(EXITED_EVERY).await;
        }
    }

    async fn inventory(&self) -> Result<Vec<Uuid>, String> {
        let mut entries = match tokio::fs::read_dir(&self.work_dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", self.work_dir.display())),
        };
        let mut ids = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(|e| e.to_string())? {
            let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
            // Only the names this driver gives (the hyphenated form).
            let id = entry
                .file_name()
                .to_str()
                .and_then(|n| Uuid::parse_str(n).ok().filter(|id| id.to_string() == n));
            if let (true, Some(id)) = (is_dir, id) {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command as StdCommand;

    use atelier_domain::deploy::spec::SpecInput;
    use atelier_store::testing::TestDatabase;
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;

    use super::*;
    use crate::output::{LogSink, LogTable, OutputLog};

    const SECRET: &str = "s3cr3t-never-logged";
    const INDEX: &str = "<h1>hello from acme</h1>\n";

    /// A database, a directory with mirrored repositories, and a log.
    struct Fixture {
        root: tempfile::TempDir,
        allocations: Allocations,
        logs: OutputLog,
        _db: TestDatabase,
    }

    impl Fixture {
        async fn new() -> anyhow::Result<Self> {
            let db = TestDatabase::create().await?;
            let pool = db.pool(4).await?;
            Ok(Self {
                root: tempfile::tempdir()?,
                allocations: Allocations::new(pool.clone()),
                logs: OutputLog::new(
                    pool,
                    LogTable {
                        table: "deployment_logs",
                        owner: "deployment_id",
                    },
                ),
                _db: db,
            })
        }

        fn mirror(&self) -> PathBuf {
            self.root.path().join("mirror")
        }

        /// A bare repository at `mirror/<owner_repo>` holding these files.
        fn repo(&self, owner_repo: &str, files: &[(&str, &str)]) -> anyhow::Result<()> {
            let src = self.root.path().join("src").join(owner_repo);
            std::fs::create_dir_all(&src)?;
            for (path, text) in files {
                let path = src.join(path);
                std::fs::create_dir_all(path.parent().unwrap())?;
                std::fs::write(path, text)?;
            }
            let git = |dir: &Path, args: &[&str]| -> anyhow::Result<()> {
                let out = StdCommand::new("git")
                    .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                    .args(["-c", "init.defaultBranch=main"])
                    .args(args)
                    .current_dir(dir)
                    .output()?;
                anyhow::ensure!(
                    out.status.success(),
                    "git {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Ok(())
            };
            git(&src, &["init", "-q"])?;
            git(&src, &["add", "."])?;
            git(&src, &["commit", "-q", "-m", "init"])?;
            let bare = self.mirror().join(owner_repo);
            std::fs::create_dir_all(bare.parent().unwrap())?;
            git(
                self.root.path(),
                &[
                    "clone",
                    "-q",
                    "--bare",
                    src.to_str().unwrap(),
                    bare.to_str().unwrap(),
                ],
            )
        }

        fn provisioner(&self) -> ProcessProvisioner {
            let mut p = ProcessProvisioner::new(
                self.root.path().join("work"),
                self.allocations.clone(),
                "runner-test",
            );
            p.mirrors = vec![(
                "https://github.com/".to_owned(),
                format!("file://{}/", self.mirror().display()),
            )];
            p.build_timeout = Duration::from_secs(60);
            p.ready_timeout = Duration::from_secs(20);
            p.kill_grace = Duration::from_secs(2);
            p
        }

        async fn log(&self, job: &Rollout) -> anyhow::Result<LogSink> {
            Ok(self.logs.writer(job.org_id, job.deployment_id).await?)
        }

        /// Every line of a deployment's log (after its sink is closed).
        async fn lines(&self, job: &Rollout) -> anyhow::Result<Vec<(String, String)>> {
            let lines = self
                .logs
                .read(job.org_id, job.deployment_id, 0, 10_000)
                .await?;
            Ok(lines.into_iter().map(|l| (l.stream, l.line)).collect())
        }
    }

    fn rollout(framework: &str, github_url: &str) -> Rollout {
        let spec = SpecInput {
            name: Some("acme-site"),
            deployment_type: Some("vm"),
            framework: Some(framework),
            github_url: Some(github_url),
            cores: Some(2),
            memory: Some(2048),
            disk: Some(20),
            target_id: None,
        }
        .parse()
        .unwrap()
        .with_env(vec![]);
        Rollout {
            deployment_id: Uuid::new_v4(),
            org_id: Uuid::new_v4(),
            version: 1,
            spec,
            env: vec![("GREETING".to_owned(), SECRET.to_owned())],
        }
    }

    /// The processes whose working directory is in `dir` (the deployment's, whatever their
    /// group).
    fn processes_in(dir: &Path) -> Vec<i32> {
        let Ok(dir) = std::fs::canonicalize(dir) else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .is_ok_and(|cwd| cwd.starts_with(&dir))
            })
            .collect()
    }

    /// Waits (up to 5 s) until the group is gone.
    async fn gone(pgid: i32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_alive(pgid) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    async fn pid_of(p: &ProcessProvisioner, id: Uuid) -> i32 {
        read_pid(&p.deployment_dir(id).join(PID_FILE))
            .await
            .expect("a pid file")
    }

    /// Kills whatever a failed test left running in its work directory.
    struct Reap(PathBuf);

    impl Drop for Reap {
        fn drop(&mut self) {
            for pid in processes_in(&self.0) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    #[tokio::test]
    async fn a_static_site_is_cloned_started_and_answers_on_its_access_url_then_is_destroyed()
    -> anyhow::Result<()> {
        let fx = Fixture::new().await?;
        fx.repo("acme/site", &[("index.html", INDEX)])?;
        let p = fx.provisioner();
        let _reap = Reap(p.work_dir.clone());
        let job = rollout("static", "https://github.com/acme/site");
        let id = job.deployment_id;
        let sink = fx.log(&job).await?;
        let log = sink.handle();
        let cancel = CancellationToken::new();
        assert_eq!(p.name(), "process");

        let at = p.provision(&job, &log, &cancel).await.unwrap();
        assert_eq!(at.ip_address, "127.0.0.1");
        assert!(at.vm_id >= 100);
        assert!(fx.allocations.holds(id).await?);
        let dir = p.deployment_dir(id);
        assert!(dir.join(APP_DIR).join("index.html").is_file());
        assert_eq!(p.inventory().await.unwrap(), vec![id]);

        let url = p.start(&job, &at, &log, &cancel).await.unwrap();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let answer = http().get(&url).send().await?;
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await?, INDEX);
        assert!(p.alive(id).await);
        let first = pid_of(&p, id).await;
        assert!(group_alive(first));

        p.stop(id, &log).await.unwrap();
        assert!(!p.alive(id).await);
        assert!(!dir.join(PID_FILE).exists());
        assert!(gone(first).await);
        assert!(
            http().get(&url).send().await.is_err(),
            "the port still answers"
        );
        p.stop(id, &log).await.unwrap();

        let again = p.start(&job, &at, &log, &cancel).await.unwrap();
        assert_eq!(http().get(&again).send().await?.text().await?, INDEX);
        let second = pid_of(&p, id).await;
        assert!(p.alive(id).await);

        p.destroy(id, &log).await.unwrap();
        assert!(!dir.exists());
        assert!(!fx.allocations.holds(id).await?);
        assert!(gone(second).await, "the app survived its destruction");
        assert!(processes_in(&p.work_dir).is_empty());
        assert!(p.inventory().await.unwrap().is_empty());
        p.destroy(id, &log).await.unwrap();
        assert!(!p.alive(id).await);

        drop(log);
        sink.close().await;
        let lines = fx.lines(&job).await?;
        assert!(lines.iter().all(|(_, l)| !l.contains(SECRET)), "{lines:?}");
        assert!(
            lines
                .iter()
                .any(|(s, l)| s == "system" && l.contains("git clone")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|(s, l)| s == "stdout" && l.contains("\"GET / HTTP/1.1\" 200")),
            "the app's output is forwarded: {lines:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_stacks_deployment_is_refused_with_the_reason_and_nothing_is_made()
    -> anyhow::Result<()> {
        use atelier_domain::deploy::spec::{DeploymentSpec, StackSource};
        let fx = Fixture::new().await?;
        let p = fx.provisioner();
        let mut job = rollout("static", "https://github.com/acme/site");
        job.spec = DeploymentSpec::for_stack(
            job.spec.name.clone(),
            job.spec.resources,
            None,
            StackSource {
                stack_id: Uuid::new_v4(),
                version: 1,
                services: vec!["web".into(), "db".into()],
            },
        );
        let id = job.deployment_id;
        let failure = p
            .provision(&job, &LogHandle::discard(), &CancellationToken::new())
            .await
            .unwrap_err();
        let Failure::Failed { reason, message } = failure else {
            panic!("{failure:?}");
        };
        assert_eq!(reason, FailureReason::Error);
        assert!(message.contains("container engine"), "{message}");
        assert!(!p.deployment_dir(id).exists());
        assert!(!fx.allocations.holds(id).await?);
        Ok(())
    }

    #[tokio::test]
    async fn a_repository_that_cannot_be_cloned_fails_with_the_reason_and_leaves_no_directory()
    -> anyhow::Result<()> {
        let fx = Fixture::new().await?;
        let p = fx.provisioner();
        let job = rollout("static", "https://github.com/acme/missing");
        let id = job.deployment_id;
        let log = LogHandle::discard();

        let failure = p
            .provision(&job, &log, &CancellationToken::new())
            .await
            .unwrap_err();
        let Failure::Failed { reason, message } = failure else {
            panic!("{failure:?}");
        };
        assert_eq!(reason, FailureReason::Error);
        assert!(message.contains("git clone failed"), "{message}");
        assert!(!p.deployment_dir(id).exists());
        assert!(!fx.allocations.holds(id).await?);
        assert!(p.inventory().await.unwrap().is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_build_command_that_fails_fails_with_its_status_and_leaves_no_directory()
    -> anyhow::Result<()> {
        let fx = Fixture::new().await?;
        // No go.mod (and maybe no Go at all): `go build` fails at once.
        fx.repo("acme/api", &[("README.md", "nothing to build\n")])?;
        let p = fx.provisioner();
        let job = rollout("go", "https://github.com/acme/api");
        let id = job.deployment_id;

        let failure = p
            .provision(&job, &LogHandle::discard(), &CancellationToken::new())
            .await
            .unwrap_err();
        let Failure::Failed { reason, message } = failure else {
            panic!("{failure:?}");
        };
        assert_eq!(reason, FailureReason::Error);
        assert!(
            message.starts_with("the build command failed (exit "),
            "{message}"
        );
        assert!(!p.deployment_dir(id).exists());
        assert!(!fx.allocations.holds(id).await?);
        Ok(())
    }

    #[tokio::test]
    async fn an_app_that_never_answers_is_stopped_and_fails_as_timed_out() -> anyhow::Result<()> {
        let fx = Fixture::new().await?;
        fx.repo("acme/site", &[("index.html", INDEX)])?;
        let mut p = fx.provisioner();
        let _reap = Reap(p.work_dir.clone());
        let job = rollout("static", "https://github.com/acme/site");
        let id = job.deployment_id;
        let log = LogHandle::discard();
        let cancel = CancellationToken::new();
        let at = p.provision(&job, &log, &cancel).await.unwrap();

        p.ready_timeout = Duration::from_millis(1);
        let failure = p.start(&job, &at, &log, &cancel).await.unwrap_err();
        let Failure::Failed { reason, message } = failure else {
            panic!("{failure:?}");
        };
        assert_eq!(reason, FailureReason::TimedOut);
        assert!(
            message.starts_with("the app did not answer on 127.0.0.1:"),
            "{message}"
        );
        assert!(!p.alive(id).await);
        let dir = p.deployment_dir(id);
        assert!(!dir.join(PID_FILE).exists());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !processes_in(&dir).is_empty() {
            assert!(Instant::now() < deadline, "the app was left running");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The checkout stays until it is destroyed.
        assert!(dir.join(APP_DIR).is_dir());
        p.destroy(id, &log).await.unwrap();
        assert!(!dir.exists());
        Ok(())
    }

    #[tokio::test]
    async fn an_app_that_exits_before_it_answers_fails_at_once_with_its_status()
    -> anyhow::Result<()> {
        let fx = Fixture::new().await?;
        // `python3 -m http.server` finds this `http` package before the standard library's.
        fx.repo(
            "acme/broken",
            &[
                ("http/__init__.py", ""),
                (
                    "http/server.py",
                    "import sys\nprint('cannot serve: broken', file=sys.stderr)\nsys.exit(3)\n",
                ),
            ],
        )?;
        let p = fx.provisioner();
        let _reap = Reap(p.work_dir.clone());
        let job = rollout("static", "https://github.com/acme/broken");
        let id = job.deployment_id;
        let sink = fx.log(&job).await?;
        let log = sink.handle();
        let cancel = CancellationToken::new();
        let at = p.provision(&job, &log, &cancel).await.unwrap();

        let started = Instant::now();
        let failure = p.start(&job, &at, &log, &cancel).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            failure,
            Failure::error("the app exited with status 3 before it answered")
        );
        assert!(!p.alive(id).await);
        p.destroy(id, &log).await.unwrap();

        drop(log);
        sink.close().await;
        let lines = fx.lines(&job).await?;
        let broken = lines
            .iter()
            .position(|(_, l)| l.contains("cannot serve: broken"))
            .unwrap_or_else(|| panic!("the app's last lines are in the log: {lines:?}"));
        let failed = lines
            .iter()
            .position(|(_, l)| l.contains("before it answered"))
            .unwrap();
        assert!(broken < failed, "{lines:?}");
        Ok(())
    }

    #[tokio::test]
    async fn exited_resolves_when_the_app_dies_by_itself() -> anyhow::Result<()> {
        let fx = Fixture::new().await?;
        fx.repo("acme/site", &[("index.html", INDEX)])?;
        let p = fx.provisioner();
        let _reap = Reap(p.work_dir.clone());
        let job = rollout("static", "https://github.com/acme/site");
        let id = job.deployment_id;
        let log = LogHandle::discard();
        let cancel = CancellationToken::new();
        let at = p.provision(&job, &log, &cancel).await.unwrap();
        p.start(&job, &at, &log, &cancel).await.unwrap();
        let pgid = pid_of(&p, id).await;

        let watcher = tokio::spawn({
            let p = p.clone();
            async move { p.exited(id).await }
        });
        killpg(Pid::from_raw(pgid), Signal::SIGKILL)?;
        let message = tokio::time::timeout(Duration::from_secs(10), watcher).await??;
        assert_eq!(message, "the app exited (status 137)");
        assert!(!p.alive(id).await);

        p.destroy(id, &log).await.unwrap();
        // Nothing left: it resolves at once.
        let message = tokio::time::timeout(Duration::from_secs(1), p.exited(id)).await?;
        assert_eq!(message, "the app is no longer running");
        Ok(())
    }
}
