//! The tools that make Python environments and install packages into them: pip (`python -m
//! venv`, then the environment's own pip) and uv (`uv venv`, `uv pip`). Poetry and PDM are
//! detected and reported, but environments cannot be made with them yet: [`Backends::check`]
//! refuses them and every operation answers [`Failure::Unsupported`] for them.
//!
//! [`Backends::discover`] looks, without the network, for the Pythons 3.9 to 3.13 and the
//! backends this server has. Every operation then runs its tool with an argument vector (never
//! a shell), in a process group of its own (see [`crate::process`]), with a clean environment
//! (`PATH`, `HOME` and `LANG` of the server's, plus the few variables the tool needs: never the
//! server's own), from `/`, its output forwarded line by line to a [`LogHandle`], under
//! [`BackendSettings::timeout`], and cancellable: a cancelled or timed-out operation ends the
//! tool's whole process group. Only an install reaches the network (the package index the
//! tool is configured with); uv is never allowed to download a Python.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use atelier_domain::venvs::values::{BackendKind, PythonVersion};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{ChildStderr, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::output::{LogHandle, LogStream};
use crate::process::{Exit, GroupGuard, clean_command, code_of, forward, stop};

/// The default of [`BackendSettings::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);
/// The longest a [`Failure::Failed`] message is, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024;
/// The longest one discovery probe (`python3.N -c …`, `uv --version`) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a tool's process group has between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// The most stderr lines kept for a failure's message.
const TAIL_LINES: usize = 64;
/// The most stderr lines a failure's message quotes.
const MESSAGE_LINES: usize = 12;
/// The most standard output kept when it is read rather than logged (a package list).
const MAX_CAPTURE: usize = 16 * 1024 * 1024;
/// How long a finished tool's output readers are waited for (a stray process may hold the
/// pipes open).
const READER_WAIT: Duration = Duration::from_secs(2);

/// What a Python is asked at discovery: its full version, its real executable (not a pyenv
/// shim) and the pip version its `ensurepip` bundles (empty without `venv` or `ensurepip`).
const PYTHON_PROBE: &str = "import sys
print(sys.version.split()[0])
print(sys.executable)
try:
    import venv, ensurepip
    print(ensurepip.version())
except Exception:
    print('')
";

/// Where the tools are looked for and how long they may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSettings {
    /// uv's executable; `None` looks for `uv` on `PATH`. A path given here is the only one
    /// tried.
    pub uv: Option<PathBuf>,
    /// Explicit interpreters: a version listed here is looked for at its path only. The
    /// others are looked for as `python3.N` on `PATH`, then under pyenv's `versions/` folder.
    pub pythons: Vec<(PythonVersion, PathBuf)>,
    /// The tools' download caches: `cache_dir/pip` and `cache_dir/uv`.
    pub cache_dir: PathBuf,
    /// The longest one operation (a creation, an install…) may take.
    pub timeout: Duration,
    /// The package index pip and uv install from (`None`: their own configuration, PyPI by
    /// default): a mirror or a private index.
    pub index_url: Option<String>,
}

impl Default for BackendSettings {
    /// uv and the Pythons looked for on `PATH`, the caches under the system's temporary
    /// directory (`atelier-venvs-cache`), and [`DEFAULT_TIMEOUT`].
    fn default() -> Self {
        Self {
            uv: None,
            pythons: Vec::new(),
            cache_dir: std::env::temp_dir().join("atelier-venvs-cache"),
            timeout: DEFAULT_TIMEOUT,
            index_url: None,
        }
    }
}

/// A backend as this server has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendInfo {
    /// Which backend.
    pub name: BackendKind,
    /// Whether environments can be made with it here (a detected Poetry or PDM is not).
    pub available: bool,
    /// Its version, when it was found (pip's: the pip the newest usable Python bundles).
    pub version: Option<String>,
    /// Its executable, when it was found (none for pip: each environment has its own).
    pub path: Option<PathBuf>,
    /// Why it is unavailable, or what to know about it.
    pub note: Option<String>,
}

/// A Python this server has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PythonInfo {
    /// Its minor version (`3.11`).
    pub version: PythonVersion,
    /// Its full version (`3.11.7`).
    pub full_version: String,
    /// Its interpreter.
    pub path: PathBuf,
}

/// A package an environment holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPackage {
    /// Its name, as the tool reports it.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// Why an environment cannot be made with a backend and a Python on this server (the
/// request is refused: a 400 answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// The backend is not installed here.
    #[error("the {} backend is not installed on this server", .0.as_str())]
    Backend(BackendKind),
    /// The backend is installed, but environments cannot be made with it yet.
    #[error(
        "the {} backend is installed on this server, but environments can only be made with \
         pip or uv for now",
        .0.as_str()
    )]
    Unsupported(BackendKind),
    /// The Python is not installed here.
    #[error("Python {0} is not installed on this server")]
    Python(PythonVersion),
    /// The Python has no `venv` or `ensurepip` module: pip environments cannot be made with
    /// it.
    #[error(
        "Python {0} on this server has no venv or ensurepip module: pip environments cannot be \
         made with it"
    )]
    NoVenv(PythonVersion),
}

/// Why an operation did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The tool failed or could not be run: what it ran and the last meaningful lines it wrote
    /// to its standard error (at most [`MAX_MESSAGE_BYTES`]; never an environment value).
    #[error("{message}")]
    Failed {
        /// What went wrong.
        message: String,
    },
    /// It was cancelled; the tool's process group is ended.
    #[error("cancelled")]
    Cancelled,
    /// It ran past [`BackendSettings::timeout`]; the tool's process group is ended.
    #[error("timed out")]
    TimedOut,
    /// The backend cannot do this (Poetry and PDM, for now).
    #[error("{0}")]
    Unsupported(String),
}

impl Failure {
    fn failed(message: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
        }
    }
}

/// A Python found at discovery.
#[derive(Debug, Clone)]
struct Python {
    full_version: String,
    path: PathBuf,
    /// The pip its `ensurepip` bundles; `None` without `venv` or `ensurepip`.
    bundled_pip: Option<String>,
}

/// A tool found at discovery.
#[derive(Debug, Clone)]
struct Tool {
    path: PathBuf,
    version: String,
}

/// How an operation runs its tool.
enum Runner<'a> {
    /// The environment's own pip (pip environments are made by a Python itself).
    Pip,
    /// uv, at this path.
    Uv(&'a Path),
}

/// The Pythons and backends this server has (found by [`Backends::discover`]), and the
/// operations that make environments and change their packages.
#[derive(Debug, Clone)]
pub struct Backends {
    settings: BackendSettings,
    pythons: BTreeMap<PythonVersion, Python>,
    /// uv, or why it is missing.
    uv: Result<Tool, String>,
    /// Poetry, or why it is missing.
    poetry: Result<Tool, String>,
    /// PDM, or why it is missing.
    pdm: Result<Tool, String>,
}

impl Backends {
    /// Finds, without the network, each Python 3.9 to 3.13 (an explicit path of
    /// [`BackendSettings::pythons`], else `python3.N` on `PATH`, else the newest
    /// `versions/3.N.*/bin/python3.N` of pyenv's root: its full version, its real executable
    /// and whether it has `venv` and `ensurepip`) and each backend (pip: a Python with `venv`
    /// and `ensurepip`; uv: [`BackendSettings::uv`] or `uv` on `PATH`; Poetry, PDM: on `PATH`;
    /// each asked `--version`). Probes run concurrently, each for at most 30 s.
    pub async fn discover(settings: &BackendSettings) -> Backends {
        let pythons = futures::future::join_all(
            PythonVersion::all().map(|version| find_python(settings, version)),
        )
        .await
        .into_iter()
        .flatten()
        .collect();
        let (uv, poetry, pdm) = tokio::join!(
            find_tool("uv", settings.uv.clone()),
            find_tool("poetry", None),
            find_tool("pdm", None),
        );
        Backends {
            settings: settings.clone(),
            pythons,
            uv,
            poetry,
            pdm,
        }
    }

    /// The settings it was discovered with.
    pub fn settings(&self) -> &BackendSettings {
        &self.settings
    }

    /// The same tools with their caches under `cache_dir` (an organization's own cache: what
    /// one organization downloads or imports never reaches another's installs).
    pub fn with_cache_dir(&self, cache_dir: PathBuf) -> Backends {
        let mut b = self.clone();
        b.settings.cache_dir = cache_dir;
        b
    }

    /// Where downloaded distributions are kept (`cache_dir/wheels`): installs look there first
    /// (`--find-links`).
    pub fn wheels_dir(&self) -> PathBuf {
        self.settings.cache_dir.join("wheels")
    }

    /// Downloads requirements' wheels for a Python version into [`Backends::wheels_dir`], with
    /// pip (`python3.N -m pip download --only-binary=:all: --dest … -- <requirements…>`): the
    /// same packages are installed from there later without the index. The requirements must
    /// already be validated.
    pub async fn download(
        &self,
        python: PythonVersion,
        requirements: &[String],
        log: &LogHandle,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let Some(interpreter) = self.pythons.get(&python).map(|p| p.path.clone()) else {
            return Err(fail(
                log,
                format!("Python {python} is not installed on this server"),
            ));
        };
        if requirements.is_empty() {
            log.line(LogStream::System, "nothing to download");
            return Ok(());
        }
        let dest = self.wheels_dir();
        tokio::fs::create_dir_all(&dest)
            .await
            .map_err(|e| fail(log, format!("cannot create {}: {e}", dest.display())))?;
        let mut command = self.pip_command(&interpreter);
        command
            .args([
                "-I",
                "-m",
                "pip",
                "download",
                "--only-binary=:all:",
                "--dest",
            ])
            .arg(&dest)
            .arg("--")
            .args(requirements);
        self.execute("pip download", &mut command, log, cancel)
            .await
    }

    /// Every backend, in [`BackendKind::ALL`]'s order, found or not.
    pub fn backends(&self) -> Vec<BackendInfo> {
        BackendKind::ALL
            .into_iter()
            .map(|name| match name {
                BackendKind::Pip => self.pip_info(),
                BackendKind::Uv => tool_info(name, &self.uv, None),
                BackendKind::Poetry | BackendKind::Pdm => {
                    let tool = if name == BackendKind::Poetry {
                        &self.poetry
                    } else {
                        &self.pdm
                    };
                    let note = format!(
                        "{} is installed, but environments can only be made with pip or uv for now",
                        name.as_str()
                    );
                    tool_info(name, tool, Some(note))
                }
            })
            .collect()
    }

    fn pip_info(&self) -> BackendInfo {
        let usable: Vec<(&PythonVersion, &str)> = self
            .pythons
            .iter()
            .filter_map(|(v, p)| p.bundled_pip.as_deref().map(|pip| (v, pip)))
            .collect();
        match usable.last() {
            Some((newest, pip)) => {
                let versions: Vec<String> = usable.iter().map(|(v, _)| v.to_string()).collect();
                BackendInfo {
                    name: BackendKind::Pip,
                    available: true,
                    version: Some((*pip).to_owned()),
                    path: None,
                    note: Some(format!(
                        "python -m venv with Python {}; each environment gets the pip its \
                         Python bundles (the version shown is Python {newest}'s)",
                        versions.join(", ")
                    )),
                }
            }
            None => BackendInfo {
                name: BackendKind::Pip,
                available: false,
                version: None,
                path: None,
                note: Some(
                    "no Python 3.9 to 3.13 with the venv and ensurepip modules was found".into(),
                ),
            },
        }
    }

    /// Every Python found, oldest first.
    pub fn pythons(&self) -> Vec<PythonInfo> {
        self.pythons
            .iter()
            .map(|(version, p)| PythonInfo {
                version: *version,
                full_version: p.full_version.clone(),
                path: p.path.clone(),
            })
            .collect()
    }

    /// Whether an environment can be made here with this backend and this Python: pip needs
    /// the Python with `venv` and `ensurepip`, uv needs uv and the Python; Poetry and PDM are
    /// refused (missing, or not supported yet).
    pub fn check(&self, backend: BackendKind, python: PythonVersion) -> Result<(), Unavailable> {
        match backend {
            BackendKind::Pip => {
                let found = self
                    .pythons
                    .get(&python)
                    .ok_or(Unavailable::Python(python))?;
                if found.bundled_pip.is_none() {
                    return Err(Unavailable::NoVenv(python));
                }
                Ok(())
            }
            BackendKind::Uv => {
                if self.uv.is_err() {
                    return Err(Unavailable::Backend(backend));
                }
                if !self.pythons.contains_key(&python) {
                    return Err(Unavailable::Python(python));
                }
                Ok(())
            }
            BackendKind::Poetry | BackendKind::Pdm => {
                let tool = if backend == BackendKind::Poetry {
                    &self.poetry
                } else {
                    &self.pdm
                };
                Err(match tool {
                    Ok(_) => Unavailable::Unsupported(backend),
                    Err(_) => Unavailable::Backend(backend),
                })
            }
        }
    }

    /// How this backend's operations run, or why they cannot.
    fn runner(&self, backend: BackendKind) -> Result<Runner<'_>, Failure> {
        match backend {
            BackendKind::Pip => Ok(Runner::Pip),
            BackendKind::Uv => match &self.uv {
                Ok(uv) => Ok(Runner::Uv(&uv.path)),
                Err(_) => Err(Failure::failed(
                    Unavailable::Backend(BackendKind::Uv).to_string(),
                )),
            },
            BackendKind::Poetry | BackendKind::Pdm => Err(Failure::Unsupported(format!(
                "environments cannot be made or changed with {} yet: use pip or uv",
                backend.as_str()
            ))),
        }
    }

    /// [`Backends::runner`], its failure logged.
    fn logged_runner(&self, backend: BackendKind, log: &LogHandle) -> Result<Runner<'_>, Failure> {
        self.runner(backend)
            .inspect_err(|failure| log.line(LogStream::System, failure.to_string()))
    }

    /// Makes an environment in `dir` (absolute; it must not exist yet, and is removed again
    /// if the creation fails, times out or is cancelled): pip runs `python3.N -m venv -- dir`
    /// (the environment gets the pip its Python bundles, without the network); uv runs
    /// `uv venv --python <python3.N's path> -- dir`.
    pub async fn create(
        &self,
        backend: BackendKind,
        python: PythonVersion,
        dir: &Path,
        log: &LogHandle,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let runner = self.logged_runner(backend, log)?;
        if let Err(refused) = self.check(backend, python) {
            return Err(fail(log, refused.to_string()));
        }
        let Some(interpreter) = self.pythons.get(&python).map(|p| p.path.as_path()) else {
            return Err(fail(log, Unavailable::Python(python).to_string()));
        };
        if !dir.is_absolute() {
            return Err(fail(
                log,
                format!("{} is not an absolute path", dir.display()),
            ));
        }
        if tokio::fs::symlink_metadata(dir).await.is_ok() {
            return Err(fail(log, format!("{} already exists", dir.display())));
        }
        let (what, mut command) = match runner {
            Runner::Pip => {
                let mut c = self.pip_command(interpreter);
                c.args(["-I", "-m", "venv", "--"]).arg(dir);
                (format!("python{python} -m venv"), c)
            }
            Runner::Uv(uv) => {
                let mut c = self.uv_command(uv);
                c.args(["venv", "--python"])
                    .arg(interpreter)
                    .arg("--")
                    .arg(dir);
                ("uv venv".to_owned(), c)
            }
        };
        let result = self.execute(&what, &mut command, log, cancel).await;
        if result.is_err() {
            match tokio::fs::remove_dir_all(dir).await {
                Ok(()) => log.line(
                    LogStream::System,
                    format!("removed the partly made {}", dir.display()),
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a partly made environment");
                }
            }
        }
        result
    }

    /// Installs requirements into the environment in `dir`: pip runs `<dir>/bin/python -m pip
    /// install [--upgrade] -- <requirements…>`, uv `uv pip install --python <dir>/bin/python
    /// [--upgrade] -- <requirements…>`. The requirements must already be validated (by the
    /// domain's requirement rules); after `--` neither tool reads one as an option. None at all
    /// does nothing.
    pub async fn install(
        &self,
        backend: BackendKind,
        dir: &Path,
        requirements: &[String],
        upgrade: bool,
        log: &LogHandle,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let runner = self.logged_runner(backend, log)?;
        let python = env_python(dir).await.map_err(|m| fail(log, m))?;
        if requirements.is_empty() {
            log.line(LogStream::System, "nothing to install");
            return Ok(());
        }
        let (what, mut command) = self.pip_subcommand(&runner, &python, "install");
        if upgrade {
            command.arg("--upgrade");
        }
        let wheels = self.wheels_dir();
        if wheels.is_dir() {
            command.arg("--find-links").arg(wheels);
        }
        command.arg("--").args(requirements);
        self.execute(&what, &mut command, log, cancel).await
    }

    /// Uninstalls packages (already validated names; one not installed is skipped) from the
    /// environment in `dir`: pip runs `<dir>/bin/python -m pip uninstall -y -- <names…>`, uv
    /// `uv pip uninstall --python <dir>/bin/python -- <names…>`. None at all does nothing.
    pub async fn uninstall(
        &self,
        backend: BackendKind,
        dir: &Path,
        names: &[String],
        log: &LogHandle,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let runner = self.logged_runner(backend, log)?;
        let python = env_python(dir).await.map_err(|m| fail(log, m))?;
        if names.is_empty() {
            log.line(LogStream::System, "nothing to uninstall");
            return Ok(());
        }
        let (what, mut command) = self.pip_subcommand(&runner, &python, "uninstall");
        if matches!(runner, Runner::Pip) {
            command.arg("-y");
        }
        command.arg("--").args(names);
        self.execute(&what, &mut command, log, cancel).await
    }

    /// Every package the environment in `dir` holds, as its tool reports it (pip, setuptools…
    /// included), sorted by normalized name: pip runs `<dir>/bin/python -m pip list --format
    /// json`, uv `uv pip list --python <dir>/bin/python --format json`. Nothing is logged.
    pub async fn list(
        &self,
        backend: BackendKind,
        dir: &Path,
    ) -> Result<Vec<InstalledPackage>, Failure> {
        let runner = self.runner(backend)?;
        let python = env_python(dir).await.map_err(Failure::failed)?;
        let (what, mut command) = self.pip_subcommand(&runner, &python, "list");
        command.args(["--format", "json"]);
        let ran = run(
            &mut command,
            &LogHandle::discard(),
            &CancellationToken::new(),
            self.settings.timeout,
            true,
        )
        .await;
        outcome(&what, &ran, self.settings.timeout, &LogHandle::discard())?;
        parse_list(&ran.stdout).map_err(|e| Failure::failed(format!("{what} printed no list: {e}")))
    }

    /// The environment's packages as requirements with exact versions: one `name==version`
    /// line each, sorted by normalized name (from [`Backends::list`]).
    pub async fn freeze(&self, backend: BackendKind, dir: &Path) -> Result<String, Failure> {
        Ok(freeze_text(&self.list(backend, dir).await?))
    }

    /// `pip <sub>` of the environment's Python, or `uv pip <sub> --python <it>`, and how a
    /// failure names it.
    fn pip_subcommand(&self, runner: &Runner<'_>, python: &Path, sub: &str) -> (String, Command) {
        match runner {
            Runner::Pip => {
                let mut c = self.pip_command(python);
                c.args(["-I", "-m", "pip", sub]);
                (format!("pip {sub}"), c)
            }
            Runner::Uv(uv) => {
                let mut c = self.uv_command(uv);
                c.args(["pip", sub, "--python"]).arg(python);
                (format!("uv pip {sub}"), c)
            }
        }
    }

    /// A Python run with pip's variables: its cache, no version check, no prompt.
    fn pip_command(&self, python: &Path) -> Command {
        let cache = self.settings.cache_dir.join("pip");
        // pip makes it too; a cache it cannot make only makes installs slower.
        let _ = std::fs::create_dir_all(&cache);
        let mut c = clean_command(&python.to_string_lossy());
        c.env("PIP_CACHE_DIR", cache)
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env("PIP_NO_INPUT", "1");
        if let Some(index) = &self.settings.index_url {
            c.env("PIP_INDEX_URL", index);
        }
        c
    }

    /// uv run with its variables: its cache, no progress bars, never a Python download, and
    /// the system's certificates (as pip has them: uv otherwise trusts only its own bundled
    /// roots; `UV_SYSTEM_CERTS` is the name uv 0.13 reads, `UV_NATIVE_TLS` the older one).
    fn uv_command(&self, uv: &Path) -> Command {
        let cache = self.settings.cache_dir.join("uv");
        let _ = std::fs::create_dir_all(&cache);
        let mut c = clean_command(&uv.to_string_lossy());
        c.env("UV_CACHE_DIR", cache)
            .env("UV_NO_PROGRESS", "1")
            .env("UV_PYTHON_DOWNLOADS", "never")
            .env("UV_SYSTEM_CERTS", "1")
            .env("UV_NATIVE_TLS", "1");
        if let Some(index) = &self.settings.index_url {
            c.env("UV_DEFAULT_INDEX", index).env("UV_INDEX_URL", index);
        }
        c
    }

    /// Runs an operation's tool, logging what it runs and how it failed.
    async fn execute(
        &self,
        what: &str,
        command: &mut Command,
        log: &LogHandle,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        log.line(LogStream::System, format!("$ {}", shown(command)));
        let ran = run(command, log, cancel, self.settings.timeout, false).await;
        outcome(what, &ran, self.settings.timeout, log)
    }
}

/// A tool as [`Backends::backends`] reports it (`unsupported`: the note of a tool found but
/// not usable).
fn tool_info(
    name: BackendKind,
    tool: &Result<Tool, String>,
    unsupported: Option<String>,
) -> BackendInfo {
    match tool {
        Ok(tool) => BackendInfo {
            name,
            available: unsupported.is_none(),
            version: Some(tool.version.clone()),
            path: Some(tool.path.clone()),
            note: unsupported,
        },
        Err(why) => BackendInfo {
            name,
            available: false,
            version: None,
            path: None,
            note: Some(why.clone()),
        },
    }
}

/// The first candidate for this version that answers as it.
async fn find_python(
    settings: &BackendSettings,
    version: PythonVersion,
) -> Option<(PythonVersion, Python)> {
    let explicit = settings
        .pythons
        .iter()
        .find(|(v, _)| *v == version)
        .map(|(_, p)| p.clone());
    let candidates: Vec<PathBuf> = match explicit {
        Some(path) => vec![path],
        None => {
            let name = format!("python{version}");
            on_path(&name)
                .into_iter()
                .chain(in_pyenv(version, &name))
                .collect()
        }
    };
    for candidate in candidates {
        if let Some(python) = probe_python(&candidate, version).await {
            return Some((version, python));
        }
    }
    None
}

/// What a candidate interpreter says it is, if it is this version.
async fn probe_python(candidate: &Path, version: PythonVersion) -> Option<Python> {
    let mut command = clean_command(&candidate.to_string_lossy());
    command.args(["-I", "-c", PYTHON_PROBE]);
    let ran = probe(&mut command).await?;
    let text = String::from_utf8_lossy(&ran);
    let mut lines = text.lines().map(str::trim);
    let full_version = lines.next()?.to_owned();
    let executable = lines.next().unwrap_or_default();
    let bundled_pip = lines.next().filter(|l| !l.is_empty()).map(str::to_owned);
    if !full_version.starts_with(&format!("{version}.")) {
        tracing::warn!(
            candidate = %candidate.display(),
            %full_version,
            "an interpreter is not the Python it was found as"
        );
        return None;
    }
    let path = if executable.is_empty() {
        candidate.to_path_buf()
    } else {
        PathBuf::from(executable)
    };
    Some(Python {
        full_version,
        path,
        bundled_pip,
    })
}

/// A tool at its explicit path, or on `PATH`, with the version it reports; or why not.
async fn find_tool(name: &str, explicit: Option<PathBuf>) -> Result<Tool, String> {
    let path = match explicit {
        Some(path) if path.is_file() => path,
        Some(path) => return Err(format!("{name} was not found at {}", path.display())),
        None => on_path(name).ok_or_else(|| format!("{name} was not found on PATH"))?,
    };
    let mut command = clean_command(&path.to_string_lossy());
    // PDM may look for a newer PDM on the network: never here.
    command.env("PDM_CHECK_UPDATE", "false").arg("--version");
    let out = probe(&mut command)
        .await
        .ok_or_else(|| format!("`{} --version` did not answer", path.display()))?;
    let text = String::from_utf8_lossy(&out);
    let version = version_in(&text)
        .ok_or_else(|| format!("`{} --version` printed no version", path.display()))?;
    Ok(Tool { path, version })
}

/// Runs a discovery probe: its standard output if it succeeded.
async fn probe(command: &mut Command) -> Option<Vec<u8>> {
    let ran = run(
        command,
        &LogHandle::discard(),
        &CancellationToken::new(),
        PROBE_TIMEOUT,
        true,
    )
    .await;
    match ran.exit {
        Exit::Status(s) if s.success() => Some(ran.stdout),
        _ => None,
    }
}

/// The first executable file of this name in a `PATH` directory.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|file| {
            std::fs::metadata(file)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The newest pyenv interpreter of this version (`<root>/versions/3.N.P/bin/python3.N`, the
/// root being `PYENV_ROOT` or `~/.pyenv`): pyenv's shims on `PATH` only run the versions
/// pyenv is set to.
fn in_pyenv(version: PythonVersion, name: &str) -> Option<PathBuf> {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))?;
    let prefix = format!("{version}.");
    std::fs::read_dir(root.join("versions"))
        .ok()?
        .filter_map(|e| {
            let entry = e.ok()?;
            let patch: u32 = entry
                .file_name()
                .to_str()?
                .strip_prefix(&prefix)?
                .parse()
                .ok()?;
            let interpreter = entry.path().join("bin").join(name);
            interpreter.is_file().then_some((patch, interpreter))
        })
        .max_by_key(|(patch, _)| *patch)
        .map(|(_, interpreter)| interpreter)
}

/// The version in what `tool --version` printed: its first word that starts with a digit
/// (`uv 0.5.1 (…)`, `Poetry (version 1.8.3)`, `PDM, version 2.19.1`).
fn version_in(text: &str) -> Option<String> {
    text.split_whitespace()
        .map(|w| w.trim_matches(|c: char| matches!(c, '(' | ')' | ',')))
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_owned)
}

/// The interpreter of the environment in `dir`.
async fn env_python(dir: &Path) -> Result<PathBuf, String> {
    let python = dir.join("bin").join("python");
    match tokio::fs::metadata(&python).await {
        Ok(m) if m.is_file() => Ok(python),
        _ => Err(format!(
            "{} holds no Python environment (no bin/python)",
            dir.display()
        )),
    }
}

/// A command as a log line shows it.
fn shown(command: &Command) -> String {
    let std = command.as_std();
    std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes a failure's message to the log as a system line, and makes it a [`Failure`].
fn fail(log: &LogHandle, message: impl Into<String>) -> Failure {
    let message = message.into();
    log.line(LogStream::System, message.clone());
    Failure::Failed { message }
}

/// What a tool's run means for its operation (a failure is logged).
fn outcome(what: &str, ran: &Ran, timeout: Duration, log: &LogHandle) -> Result<(), Failure> {
    match &ran.exit {
        Exit::Status(s) if s.success() => Ok(()),
        Exit::Status(s) => {
            let head = format!("{what} failed (exit {})", code_of(*s));
            Err(fail(log, failure_message(&head, &ran.stderr)))
        }
        Exit::TimedOut => {
            log.line(
                LogStream::System,
                format!(
                    "{what} did not finish within {} s: stopped",
                    timeout.as_secs_f64()
                ),
            );
            Err(Failure::TimedOut)
        }
        Exit::Cancelled => {
            log.line(LogStream::System, format!("{what} cancelled"));
            Err(Failure::Cancelled)
        }
        Exit::SpawnFailed(e) => Err(fail(log, format!("cannot run {what}: {e}"))),
    }
}

/// `head`, then the last [`meaningful`] stderr lines that fit
/// in [`MAX_MESSAGE_BYTES`] (at most [`MESSAGE_LINES`] of them; the last one is cut if it
/// alone is too long).
fn failure_message(head: &str, stderr: &[String]) -> String {
    let head = cut(head, MAX_MESSAGE_BYTES / 4);
    let mut room = MAX_MESSAGE_BYTES - head.len() - 2;
    let mut picked: Vec<&str> = Vec::new();
    for line in stderr
        .iter()
        .rev()
        .map(|l| l.trim_end())
        .filter(|l| meaningful(l))
    {
        if picked.len() == MESSAGE_LINES {
            break;
        }
        // Each line but the first takes a line break too.
        let need = line.len() + usize::from(!picked.is_empty());
        if need > room {
            if picked.is_empty() {
                picked.push(cut(line, room));
            }
            break;
        }
        room -= need;
        picked.push(line);
    }
    if picked.is_empty() {
        return head.to_owned();
    }
    picked.reverse();
    format!("{head}: {}", picked.join("\n"))
}

/// Whether a stderr line says something about a failure: not blank, not pip's `[notice]`s,
/// not uv's `Using Python 3.11.7 environment at: …`.
fn meaningful(line: &str) -> bool {
    let line = line.trim();
    let noise = line.is_empty()
        || line.starts_with("[notice]")
        || (line.starts_with("Using Python ") && line.contains(" environment at"));
    !noise
}

/// The longest start of `text` of at most `max` bytes that ends at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A package name normalized as PyPI compares them (PEP 503): lowercase, each run of `-`,
/// `_` and `.` one `-`.
fn normalized(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            separator = true;
        } else {
            if separator && !out.is_empty() {
                out.push('-');
            }
            separator = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The packages of a `--format json` list (other fields ignored), sorted by normalized name.
fn parse_list(stdout: &[u8]) -> Result<Vec<InstalledPackage>, serde_json::Error> {
    let text = String::from_utf8_lossy(stdout);
    let mut packages: Vec<InstalledPackage> = if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(text.trim())?
    };
    packages.sort_by_cached_key(|p| (normalized(&p.name), p.version.clone()));
    Ok(packages)
}

/// `name==version` lines, sorted by normalized name.
fn freeze_text(packages: &[InstalledPackage]) -> String {
    let mut sorted: Vec<&InstalledPackage> = packages.iter().collect();
    sorted.sort_by_cached_key(|p| normalized(&p.name));
    sorted
        .into_iter()
        .map(|p| format!("{}=={}\n", p.name, p.version))
        .collect()
}

/// What a finished tool run left.
struct Ran {
    exit: Exit,
    /// Its standard output, when it was read rather than logged (at most [`MAX_CAPTURE`]).
    stdout: Vec<u8>,
    /// Its last lines of standard error (at most [`TAIL_LINES`]).
    stderr: Vec<String>,
}

/// Runs a tool in its own process group, from `/`, to its end, its timeout or its
/// cancellation (then its whole group is ended). Its stderr goes to `log` and its last lines
/// are kept; its stdout is kept (`capture`) or goes to `log`.
async fn run(
    command: &mut Command,
    log: &LogHandle,
    cancel: &CancellationToken,
    timeout: Duration,
    capture: bool,
) -> Ran {
    let nothing = |exit| Ran {
        exit,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    if cancel.is_cancelled() {
        return nothing(Exit::Cancelled);
    }
    let deadline = Instant::now() + timeout;
    command
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return nothing(Exit::SpawnFailed(e.to_string())),
    };
    let guard = GroupGuard::of(&child);
    let stdout = child.stdout.take().map(|out| {
        if capture {
            keep(out)
        } else {
            let logged = forward(out, log.clone(), LogStream::Stdout);
            tokio::spawn(async move {
                let _ = logged.await;
                Vec::new()
            })
        }
    });
    let stderr = child.stderr.take().map(|err| tail(err, log.clone()));
    let exit = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => Exit::Status(s),
            Err(e) => Exit::SpawnFailed(e.to_string()),
        },
        _ = tokio::time::sleep_until(deadline) => Exit::TimedOut,
        _ = cancel.cancelled() => Exit::Cancelled,
    };
    // Whatever the tool left in its group goes with it.
    stop(&mut child, guard, KILL_GRACE).await;
    Ran {
        exit,
        stdout: finished(stdout).await,
        stderr: finished(stderr).await,
    }
}

/// What an output reader got, if it ends soon.
async fn finished<T: Default>(reader: Option<JoinHandle<T>>) -> T {
    match reader {
        Some(reader) => match tokio::time::timeout(READER_WAIT, reader).await {
            Ok(Ok(got)) => got,
            _ => T::default(),
        },
        None => T::default(),
    }
}

/// Reads a tool's standard output whole (up to [`MAX_CAPTURE`]; the rest is read and
/// dropped, so the tool never blocks on it).
fn keep(mut out: ChildStdout) -> JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match out.read(&mut chunk).await {
                Ok(0) | Err(_) => return kept,
                Ok(n) => {
                    let room = MAX_CAPTURE - kept.len();
                    kept.extend_from_slice(&chunk[..n.min(room)]);
                }
            }
        }
    })
}

/// Forwards a tool's standard error to the log, line by line, and keeps its last lines.
fn tail(err: ChildStderr, log: LogHandle) -> JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(err);
        let mut buf = Vec::new();
        let mut last = VecDeque::with_capacity(TAIL_LINES);
        loop {
            buf.clear();
            match lines.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => return last.into(),
                Ok(_) => {
                    while matches!(buf.last(), Some(b'\n' | b'\r')) {
                        buf.pop();
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if last.len() == TAIL_LINES {
                        last.pop_front();
                    }
                    last.push_back(cut(&line, MAX_MESSAGE_BYTES).to_owned());
                    log.line(LogStream::Stderr, line);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::group_alive;

    /// The longest a test's process may take to be gone after its operation returned.
    const GONE_WAIT: Duration = Duration::from_secs(5);
    const MISSING: &str = "atelier-no-such-package-xyz==1.0";

    fn v(raw: &str) -> PythonVersion {
        PythonVersion::parse(raw).unwrap()
    }

    fn settings() -> BackendSettings {
        BackendSettings {
            timeout: Duration::from_secs(300),
            ..BackendSettings::default()
        }
    }

    fn info(backends: &Backends, kind: BackendKind) -> BackendInfo {
        backends
            .backends()
            .into_iter()
            .find(|b| b.name == kind)
            .unwrap()
    }

    /// Backends with uv, or a failure that says uv is missing (never a silent pass).
    async fn with_uv() -> Backends {
        let backends = Backends::discover(&settings()).await;
        let uv = info(&backends, BackendKind::Uv);
        assert!(
            uv.available,
            "uv is not installed on this machine ({}): this test needs it (`pip install uv`, \
             or BackendSettings::uv)",
            uv.note.unwrap_or_default()
        );
        backends
    }

    /// The processes whose command line mentions `text`, with their process groups.
    fn processes_mentioning(text: &Path) -> Vec<(i32, i32)> {
        let text = text.to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if !cmdline.contains(&text) {
                    return None;
                }
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // After the command's name: state, parent, process group.
                let pgid = stat.rsplit_once(')')?.1.split_whitespace().nth(2)?;
                Some((pid, pgid.parse().ok()?))
            })
            .collect()
    }

    /// The process group of the first process that mentions `dir` (waited for up to 30 s).
    async fn started(dir: &Path) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((_, pgid)) = processes_mentioning(dir).first() {
                return *pgid;
            }
            assert!(Instant::now() < deadline, "the tool never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether the group and every process mentioning `dir` are gone (waited for a little).
    async fn gone(pgid: i32, dir: &Path) -> bool {
        let deadline = Instant::now() + GONE_WAIT;
        while group_alive(pgid) || !processes_mentioning(dir).is_empty() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Creates, installs six, lists, freezes, uninstalls and lists again.
    async fn full_cycle(backends: &Backends, backend: BackendKind) -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("env");
        let log = LogHandle::discard();
        let cancel = CancellationToken::new();
        backends
            .create(backend, v("3.11"), &dir, &log, &cancel)
            .await?;
        assert!(dir.join("bin").join("python").is_file());

        backends
            .install(backend, &dir, &["six".to_owned()], false, &log, &cancel)
            .await?;
        let listed = backends.list(backend, &dir).await?;
        let six = listed
            .iter()
            .find(|p| p.name == "six")
            .unwrap_or_else(|| panic!("six is listed: {listed:?}"));
        assert!(
            six.version.starts_with(|c: char| c.is_ascii_digit()),
            "{six:?}"
        );
        let keys: Vec<String> = listed.iter().map(|p| normalized(&p.name)).collect();
        assert!(keys.is_sorted(), "{keys:?}");
        let frozen = backends.freeze(backend, &dir).await?;
        assert!(
            frozen.contains(&format!("six=={}\n", six.version)),
            "{frozen}"
        );
        assert!(frozen.lines().all(|l| l.contains("==")), "{frozen}");

        backends
            .install(backend, &dir, &["six".to_owned()], true, &log, &cancel)
            .await?;
        backends
            .uninstall(backend, &dir, &["six".to_owned()], &log, &cancel)
            .await?;
        let listed = backends.list(backend, &dir).await?;
        assert!(listed.iter().all(|p| p.name != "six"), "{listed:?}");
        assert!(!backends.freeze(backend, &dir).await?.contains("six=="));
        Ok(())
    }

    /// An install of a package that does not exist: the failure's message.
    async fn missing_package(backends: &Backends, backend: BackendKind) -> anyhow::Result<String> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("env");
        let log = LogHandle::discard();
        let cancel = CancellationToken::new();
        backends
            .create(backend, v("3.11"), &dir, &log, &cancel)
            .await?;
        let failure = backends
            .install(backend, &dir, &[MISSING.to_owned()], false, &log, &cancel)
            .await
            .unwrap_err();
        let Failure::Failed { message } = failure else {
            panic!("{failure:?}");
        };
        assert!(message.len() <= MAX_MESSAGE_BYTES, "{message}");
        assert!(message.contains("atelier-no-such-package-xyz"), "{message}");
        Ok(message)
    }

    #[tokio::test]
    async fn discovery_finds_python_3_11_and_pip_and_reports_every_backend() {
        let backends = Backends::discover(&settings()).await;
        let pythons = backends.pythons();
        let py311 = pythons
            .iter()
            .find(|p| p.version == v("3.11"))
            .unwrap_or_else(|| panic!("Python 3.11 is found: {pythons:?}"));
        assert!(py311.full_version.starts_with("3.11."), "{py311:?}");
        assert!(
            py311.path.is_absolute() && py311.path.is_file(),
            "{py311:?}"
        );
        assert!(
            pythons.windows(2).all(|w| w[0].version < w[1].version),
            "{pythons:?}"
        );

        let all = backends.backends();
        let names: Vec<BackendKind> = all.iter().map(|b| b.name).collect();
        assert_eq!(names, BackendKind::ALL);
        let pip = info(&backends, BackendKind::Pip);
        assert!(pip.available, "{pip:?}");
        assert!(
            pip.version.as_deref().is_some_and(|v| v.contains('.')),
            "{pip:?}"
        );
        assert_eq!(backends.check(BackendKind::Pip, v("3.11")), Ok(()));
        for kind in [BackendKind::Poetry, BackendKind::Pdm] {
            assert!(!info(&backends, kind).available, "{kind:?}");
        }
        let json = serde_json::to_value(&pip).unwrap();
        assert_eq!(json["name"], "pip");
    }

    #[tokio::test]
    async fn check_refuses_a_missing_backend_or_python_and_names_it() {
        let backends = Backends::discover(&BackendSettings {
            uv: Some("/nonexistent/atelier/uv".into()),
            pythons: vec![(v("3.9"), "/nonexistent/atelier/python3.9".into())],
            ..settings()
        })
        .await;
        let uv = info(&backends, BackendKind::Uv);
        assert!(!uv.available);
        assert!(
            uv.note
                .as_deref()
                .unwrap()
                .contains("/nonexistent/atelier/uv"),
            "{uv:?}"
        );

        let refused = backends.check(BackendKind::Uv, v("3.11")).unwrap_err();
        assert_eq!(refused, Unavailable::Backend(BackendKind::Uv));
        assert_eq!(
            refused.to_string(),
            "the uv backend is not installed on this server"
        );
        let refused = backends.check(BackendKind::Pip, v("3.9")).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "Python 3.9 is not installed on this server"
        );
        assert!(backends.pythons().iter().all(|p| p.version != v("3.9")));
        for kind in [BackendKind::Poetry, BackendKind::Pdm] {
            let refused = backends.check(kind, v("3.11")).unwrap_err();
            assert!(refused.to_string().contains(kind.as_str()), "{refused}");
        }
        assert_eq!(backends.check(BackendKind::Pip, v("3.11")), Ok(()));

        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("env");
        let failure = backends
            .create(
                BackendKind::Uv,
                v("3.11"),
                &dir,
                &LogHandle::discard(),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            failure,
            Failure::failed("the uv backend is not installed on this server")
        );
        let failure = backends.list(BackendKind::Poetry, &dir).await.unwrap_err();
        assert!(
            matches!(&failure, Failure::Unsupported(m) if m.contains("poetry")),
            "{failure:?}"
        );
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn a_pip_environment_is_created_given_six_listed_frozen_and_emptied_again()
    -> anyhow::Result<()> {
        let backends = Backends::discover(&settings()).await;
        full_cycle(&backends, BackendKind::Pip).await
    }

    #[tokio::test]
    async fn a_uv_environment_is_created_given_six_listed_frozen_and_emptied_again()
    -> anyhow::Result<()> {
        let backends = with_uv().await;
        full_cycle(&backends, BackendKind::Uv).await
    }

    #[tokio::test]
    async fn an_install_cancelled_right_after_it_started_is_cancelled_and_leaves_no_process()
    -> anyhow::Result<()> {
        let backends = Backends::discover(&settings()).await;
        let root = tempfile::tempdir()?;
        let dir = root.path().join("env");
        let log = LogHandle::discard();
        backends
            .create(
                BackendKind::Pip,
                v("3.11"),
                &dir,
                &log,
                &CancellationToken::new(),
            )
            .await?;

        let cancel = CancellationToken::new();
        let install = tokio::spawn({
            let (backends, dir, cancel) = (backends.clone(), dir.clone(), cancel.clone());
            async move {
                backends
                    .install(
                        BackendKind::Pip,
                        &dir,
                        &["six".to_owned()],
                        false,
                        &LogHandle::discard(),
                        &cancel,
                    )
                    .await
            }
        });
        let pgid = started(&dir).await;
        cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), install).await??;
        assert_eq!(result, Err(Failure::Cancelled));
        assert!(gone(pgid, &dir).await, "the install's processes live on");
        assert!(dir.join("bin").join("python").is_file());
        Ok(())
    }

    #[tokio::test]
    async fn a_creation_cancelled_while_it_runs_leaves_no_directory_and_no_process()
    -> anyhow::Result<()> {
        let backends = Backends::discover(&settings()).await;
        let root = tempfile::tempdir()?;
        let dir = root.path().join("env");
        let cancel = CancellationToken::new();
        let create = tokio::spawn({
            let (backends, dir, cancel) = (backends.clone(), dir.clone(), cancel.clone());
            async move {
                backends
                    .create(
                        BackendKind::Pip,
                        v("3.11"),
                        &dir,
                        &LogHandle::discard(),
                        &cancel,
                    )
                    .await
            }
        });
        let pgid = started(&dir).await;
        cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), create).await??;
        assert_eq!(result, Err(Failure::Cancelled));
        assert!(gone(pgid, &dir).await, "the creation's processes live on");
        assert!(!dir.exists());

        let failure = backends
            .create(
                BackendKind::Pip,
                v("3.11"),
                &dir,
                &LogHandle::discard(),
                &cancel,
            )
            .await
            .unwrap_err();
        assert_eq!(failure, Failure::Cancelled, "nothing starts once cancelled");
        assert!(!dir.exists());
        Ok(())
    }

    #[tokio::test]
    async fn a_creation_into_an_existing_directory_is_refused_and_leaves_it_alone()
    -> anyhow::Result<()> {
        let backends = Backends::discover(&settings()).await;
        let root = tempfile::tempdir()?;
        std::fs::write(root.path().join("keep.txt"), "mine")?;
        let failure = backends
            .create(
                BackendKind::Pip,
                v("3.11"),
                root.path(),
                &LogHandle::discard(),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&failure, Failure::Failed { message } if message.ends_with("already exists")),
            "{failure:?}"
        );
        assert!(root.path().join("keep.txt").is_file());
        Ok(())
    }

    #[tokio::test]
    async fn a_pip_install_of_a_package_that_does_not_exist_fails_with_pips_reason()
    -> anyhow::Result<()> {
        let backends = Backends::discover(&settings()).await;
        let message = missing_package(&backends, BackendKind::Pip).await?;
        assert!(
            message.starts_with("pip install failed (exit 1): "),
            "{message}"
        );
        assert!(
            message.contains("No matching distribution found"),
            "{message}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_uv_install_of_a_package_that_does_not_exist_fails_with_uvs_reason()
    -> anyhow::Result<()> {
        let backends = with_uv().await;
        let message = missing_package(&backends, BackendKind::Uv).await?;
        assert!(
            message.starts_with("uv pip install failed (exit "),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn a_failure_message_keeps_the_last_meaningful_lines_within_its_bound() {
        let stderr: Vec<String> = [
            "Using Python 3.11.7 environment at: /srv/env",
            "ERROR: first",
            "  ",
            "[notice] upgrade pip",
            "ERROR: last",
            "",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            failure_message("pip install failed (exit 1)", &stderr),
            "pip install failed (exit 1): ERROR: first\nERROR: last"
        );
        assert_eq!(failure_message("uv failed", &[]), "uv failed");

        let long: Vec<String> = (0..100)
            .map(|i| format!("{i:03} {}", "é".repeat(200)))
            .collect();
        let message = failure_message("pip install failed (exit 1)", &long);
        assert!(message.len() <= MAX_MESSAGE_BYTES, "{}", message.len());
        assert!(message.ends_with(&long[99]), "the last line is kept whole");
        assert!(message.contains("096 é"), "{message}");
        assert!(!message.contains("095 é"), "only what fits: {message}");

        let huge = vec!["x".repeat(10_000)];
        let message = failure_message("pip install failed (exit 1)", &huge);
        assert!(message.len() <= MAX_MESSAGE_BYTES);
        assert!(message.starts_with("pip install failed (exit 1): xxx"));
    }

    #[test]
    fn a_list_is_sorted_by_normalized_name_and_frozen_with_exact_versions() {
        let listed = parse_list(
            br#"[{"name": "Zope.Interface", "version": "6.0"},
                 {"name": "six", "version": "1.16.0", "editable_project_location": null},
                 {"name": "pip", "version": "24.0"},
                 {"name": "Ruamel_Yaml", "version": "0.18.6"}]"#,
        )
        .unwrap();
        let names: Vec<&str> = listed.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["pip", "Ruamel_Yaml", "six", "Zope.Interface"]);
        assert_eq!(
            freeze_text(&listed),
            "pip==24.0\nRuamel_Yaml==0.18.6\nsix==1.16.0\nZope.Interface==6.0\n"
        );
        assert!(parse_list(b"\n").unwrap().is_empty());
        assert!(parse_list(b"not json").is_err());
        assert_eq!(normalized("Foo__Bar.-baz"), "foo-bar-baz");
    }

    #[test]
    fn a_tools_version_is_read_from_what_it_prints() {
        assert_eq!(
            version_in("uv 0.5.1 (f3a1d9c 2024-11-08)").as_deref(),
            Some("0.5.1")
        );
        assert_eq!(
            version_in("Poetry (version 1.8.3)").as_deref(),
            Some("1.8.3")
        );
        assert_eq!(version_in("PDM, version 2.19.1").as_deref(), Some("2.19.1"));
        assert_eq!(version_in("no version here"), None);
    }
}
