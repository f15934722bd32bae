//! Child processes the workers run (a build's command, a deployment's app): each in its own
//! process group with a clean environment, its output forwarded line by line to an
//! [`crate::output`] log, and the whole group ended when it is done with, times out, is
//! cancelled or its owner goes away.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::output::{LogHandle, LogStream};

/// Why a process stopped.
#[derive(Debug)]
pub enum Exit {
    /// It exited.
    Status(std::process::ExitStatus),
    /// It ran past its deadline and was killed.
    TimedOut,
    /// It was cancelled and killed.
    Cancelled,
    /// It could not be started.
    SpawnFailed(String),
}

/// Kills a process group when dropped: processes never outlive the task that owns them.
#[derive(Debug)]
pub struct GroupGuard(Option<Pid>);

impl GroupGuard {
    /// The guard of the group led by this child (its pid is the group's id).
    pub fn of(child: &Child) -> Self {
        Self(
            child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
        )
    }

    /// The group's id.
    pub fn pgid(&self) -> Option<i32> {
        self.0.map(Pid::as_raw)
    }

    /// Sends a signal to the whole group.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.0 {
            // ESRCH: the group is already gone.
            let _ = killpg(pid, signal);
        }
    }

    /// Lets the group live on (its owner hands it to another).
    pub fn release(mut self) -> Option<i32> {
        self.0.take().map(Pid::as_raw)
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Whether any process of this group is alive.
pub fn group_alive(pgid: i32) -> bool {
    pgid > 1 && killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Ends a group that is not a child of ours (found after a restart): SIGTERM, then SIGKILL
/// after `grace` if it still lives.
pub async fn end_group(pgid: i32, grace: Duration) {
    if pgid <= 1 {
        return;
    }
    let pid = Pid::from_raw(pgid);
    let _ = killpg(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while group_alive(pgid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = killpg(pid, Signal::SIGKILL);
}

/// Forwards a process's output to a log, line by line.
pub fn forward(
    reader: impl AsyncRead + Unpin + Send + 'static,
    log: LogHandle,
    stream: LogStream,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match lines.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                    }
                    log.line(stream, String::from_utf8_lossy(&buf).into_owned());
                }
            }
        }
    })
}

/// A command with a clean environment: only `PATH`, `HOME` and `LANG` of the server's (the
/// server's own secrets never reach a child).
pub fn clean_command(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env(
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()),
        )
        .env("LANG", "C.UTF-8");
    c
}

/// Starts a command in its own process group, its output forwarded to `log`.
pub fn spawn(
    mut command: Command,
    log: &LogHandle,
) -> std::io::Result<(Child, GroupGuard, Vec<tokio::task::JoinHandle<()>>)> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let guard = GroupGuard::of(&child);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(forward(out, log.clone(), LogStream::Stdout));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(forward(err, log.clone(), LogStream::Stderr));
    }
    Ok((child, guard, readers))
}

/// Ends a child's group: SIGTERM, then SIGKILL after `grace`.
pub async fn stop(child: &mut Child, guard: GroupGuard, grace: Duration) {
    guard.signal(Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        guard.signal(Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Whatever the command left behind in its group goes with it.
    drop(guard);
}

/// Waits for the output readers (not long: a stray process may hold the pipes open).
pub async fn drain(readers: Vec<tokio::task::JoinHandle<()>>) {
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }
}

/// Runs one process to its end, its deadline or its cancellation; its output goes to `log`.
pub async fn run_to_end(
    command: Command,
    log: &LogHandle,
    deadline: Instant,
    cancel: &CancellationToken,
    kill_grace: Duration,
) -> Exit {
    let (mut child, guard, readers) = match spawn(command, log) {
        Ok(c) => c,
        Err(e) => return Exit::SpawnFailed(e.to_string()),
    };
    let exit = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => Exit::Status(s),
            Err(e) => Exit::SpawnFailed(e.to_string()),
        },
        _ = tokio::time::sleep_until(deadline) => Exit::TimedOut,
        _ = cancel.cancelled() => Exit::Cancelled,
    };
    stop(&mut child, guard, kill_grace).await;
    drain(readers).await;
    exit
}

/// An exit status as a number: the code, or 128 + the signal that ended it.
pub fn code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}
