//! The `atelier` binary as a separate process, on a database it creates: for the tests of the
//! binary itself (`tests/binary.rs`) and of its operator commands (`tests/log_cli.rs`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use atelier_store::testing::{test_server_url, with_database};

/// A database name nobody has created; dropped at the end.
pub struct FreshDatabase {
    pub url: String,
    pub name: String,
}

impl FreshDatabase {
    pub fn new() -> Self {
        let name = format!("atelier_test_{}", uuid::Uuid::new_v4().simple());
        Self {
            url: with_database(&test_server_url(), &name),
            name,
        }
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(with_database(&test_server_url(), "postgres"))
            .args([
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// A child process, killed (SIGKILL) when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary, on this database, logging warnings only.
pub fn atelier(db: &FreshDatabase) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_atelier"));
    c.env("DATABASE_URL", &db.url).env("RUST_LOG", "warn");
    c
}

/// Starts a server from `command` (which listens on `127.0.0.1:0`): the process, and the base
/// URL its first line says it listens on. The rest of its output is drained, so that it never
/// writes to a closed pipe.
pub async fn start_server(mut command: Command) -> (Process, String) {
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Process(child);
    let rx = first_line_then_drain(stdout);
    let line = tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .expect("the server did not say where it listens")
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (server, base)
}

/// The first line of a child's output; the rest is drained so it never writes to a closed pipe.
pub fn first_line_then_drain(
    stdout: std::process::ChildStdout,
) -> tokio::sync::oneshot::Receiver<String> {
    let (first, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let _ = first.send(line);
        let mut rest = String::new();
        while reader.read_line(&mut rest).unwrap_or(0) > 0 {
            rest.clear();
        }
    });
    rx
}
