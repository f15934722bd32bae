//! The system (GestVenv): `GET /system/info` (the OS, the Pythons found, the data directory and
//! its disk), `GET /system/backends` (each backend: available, version, path) and `GET
//! /system/diagnostics` (checks with pass, warn or fail and a hint each).

use actix_web::{HttpResponse, web};
use atelier_domain::identity::Permission;
use serde::Serialize;
use utoipa::ToSchema;

use crate::kit::Principal;
use crate::problem::ApiError;
use crate::state::AppState;

/// A backend, as this server has it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BackendView {
    /// `pip`, `uv`, `poetry` or `pdm`.
    pub name: String,
    /// Whether environments can be made with it here.
    pub available: bool,
    /// Its version.
    pub version: Option<String>,
    /// Its executable.
    pub path: Option<String>,
    /// Why it is not available, or what it cannot do.
    pub note: Option<String>,
}

/// The backends.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BackendsView {
    /// Each backend.
    pub backends: Vec<BackendView>,
    /// The one used when a creation names none.
    pub default: String,
}

fn backends_of(state: &AppState) -> BackendsView {
    let backends: Vec<BackendView> = state
        .venvs
        .backends
        .backends()
        .into_iter()
        .map(|b| BackendView {
            name: b.name.as_str().to_owned(),
            available: b.available,
            version: b.version,
            path: b.path.map(|p| p.display().to_string()),
            note: b.note,
        })
        .collect();
    let uv = backends.iter().any(|b| b.name == "uv" && b.available);
    BackendsView {
        backends,
        default: if uv { "uv" } else { "pip" }.to_owned(),
    }
}

/// Says which backends this server has, with their versions and paths.
#[utoipa::path(
    get, path = "/api/v1/system/backends", tag = "venvs", operation_id = "list_backends",
    responses((status = 200, description = "The backends", body = BackendsView)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.system.backends", skip_all)]
pub async fn backends(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    Ok(HttpResponse::Ok().json(backends_of(&state)))
}

/// A Python this server has.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PythonView {
    /// `3.N`: what `python_version` names.
    pub version: String,
    /// Its full version.
    pub full_version: String,
    /// Its interpreter.
    pub path: String,
}

/// The disk the data directory is on.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DiskView {
    /// Its size, in bytes.
    pub total_bytes: u64,
    /// What is free, in bytes.
    pub available_bytes: u64,
}

/// What this server is and has.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SystemInfo {
    /// The operating system (`linux`).
    pub os: String,
    /// Its release, when it says.
    pub os_release: Option<String>,
    /// The machine's architecture.
    pub arch: String,
    /// Its processors.
    pub cpus: usize,
    /// Atelier's version.
    pub version: String,
    /// The Pythons found (3.9 to 3.13).
    pub pythons: Vec<PythonView>,
    /// The backends.
    pub backends: Vec<BackendView>,
    /// Where environments live.
    pub data_dir: String,
    /// The disk under it.
    pub disk: Option<DiskView>,
}

fn disk_of(path: &std::path::Path) -> Option<DiskView> {
    // The data directory may not exist yet: its nearest existing ancestor's disk is its disk.
    let existing = path.ancestors().find(|p| p.exists())?;
    let stat = nix::sys::statvfs::statvfs(existing).ok()?;
    let block = stat.fragment_size() as u64;
    Some(DiskView {
        total_bytes: stat.blocks() as u64 * block,
        available_bytes: stat.blocks_available() as u64 * block,
    })
}

fn os_release() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
}

/// Says what this server is: its OS, the Pythons and backends found, the data directory and
/// the disk it is on.
#[utoipa::path(
    get, path = "/api/v1/system/info", tag = "venvs", operation_id = "system_info",
    responses((status = 200, description = "The system", body = SystemInfo)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.system.info", skip_all)]
pub async fn info(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let data_dir = state.venvs.data_dir.clone();
    let disk = {
        let dir = data_dir.clone();
        web::block(move || disk_of(&dir))
            .await
            .map_err(|e| ApiError::internal(&e))?
    };
    Ok(HttpResponse::Ok().json(SystemInfo {
        os: std::env::consts::OS.to_owned(),
        os_release: os_release(),
        arch: std::env::consts::ARCH.to_owned(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pythons: state
            .venvs
            .backends
            .pythons()
            .into_iter()
            .map(|p| PythonView {
                version: p.version.to_string(),
                full_version: p.full_version,
                path: p.path.display().to_string(),
            })
            .collect(),
        backends: backends_of(&state).backends,
        data_dir: data_dir.display().to_string(),
        disk,
    }))
}

/// One check of the diagnostics.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// `pass`, `warn` or `fail`.
    pub status: String,
    /// What was found.
    pub message: String,
    /// What to do about it (for `warn` and `fail`).
    pub hint: Option<String>,
}

/// The diagnostics.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Diagnostics {
    /// No check failed.
    pub healthy: bool,
    /// Each check.
    pub checks: Vec<Check>,
}

fn check(name: &str, result: Result<String, (bool, String, String)>) -> Check {
    match result {
        Ok(message) => Check {
            name: name.to_owned(),
            status: "pass".to_owned(),
            message,
            hint: None,
        },
        Err((fatal, message, hint)) => Check {
            name: name.to_owned(),
            status: if fatal { "fail" } else { "warn" }.to_owned(),
            message,
            hint: Some(hint),
        },
    }
}

/// Whether a directory can be written: made if missing, a file written and removed.
fn writable(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let probe = dir.join(format!(".atelier-probe-{}", uuid::Uuid::now_v7()));
    std::fs::write(&probe, b"probe").map_err(|e| e.to_string())?;
    std::fs::remove_file(&probe).map_err(|e| e.to_string())
}

/// The least free space the data directory should have.
const MIN_FREE_BYTES: u64 = 1 << 30;

/// Runs the checks an operator would: the data and cache directories writable, free space,
/// a Python found, pip and uv available, the database answering. Nothing is sent beyond this
/// machine (the package index is not probed).
#[utoipa::path(
    get, path = "/api/v1/system/diagnostics", tag = "venvs", operation_id = "system_diagnostics",
    responses((status = 200, description = "Each check, passed or not, with a hint", body = Diagnostics)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.system.diagnostics", skip_all)]
pub async fn diagnostics(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let data_dir = state.venvs.data_dir.clone();
    let cache_dir = state.venvs.backends.settings().cache_dir.clone();
    let (data, cache, disk) = web::block(move || {
        (
            writable(&data_dir).map(|()| data_dir.display().to_string()),
            writable(&cache_dir).map(|()| cache_dir.display().to_string()),
            disk_of(&data_dir),
        )
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let mut checks = vec![
        check(
            "data_directory",
            data.map(|d| format!("{d} is writable")).map_err(|e| {
                (
                    true,
                    format!("the data directory cannot be written: {e}"),
                    "give the server's user a writable ATELIER_VENV_DATA_DIR".to_owned(),
                )
            }),
        ),
        check(
            "cache_directory",
            cache.map(|d| format!("{d} is writable")).map_err(|e| {
                (
                    false,
                    format!("the package cache cannot be written: {e}"),
                    "installs work without it, more slowly: set a writable ATELIER_VENV_CACHE_DIR"
                        .to_owned(),
                )
            }),
        ),
        check(
            "disk_space",
            match disk {
                Some(d) if d.available_bytes >= MIN_FREE_BYTES => Ok(format!(
                    "{:.1} GiB free of {:.1} GiB",
                    d.available_bytes as f64 / (1u64 << 30) as f64,
                    d.total_bytes as f64 / (1u64 << 30) as f64
                )),
                Some(d) => Err((
                    false,
                    format!("only {} MiB free", d.available_bytes >> 20),
                    "free space, or move ATELIER_VENV_DATA_DIR: an environment takes tens of MB"
                        .to_owned(),
                )),
                None => Err((
                    false,
                    "the disk's size could not be read".to_owned(),
                    "check that the data directory's filesystem is mounted".to_owned(),
                )),
            },
        ),
    ];
    let pythons = state.venvs.backends.pythons();
    checks.push(check(
        "python",
        if pythons.is_empty() {
            Err((
                true,
                "no Python from 3.9 to 3.13 was found".to_owned(),
                "install one (python3.N on the PATH, or pyenv), then restart the server".to_owned(),
            ))
        } else {
            Ok(pythons
                .iter()
                .map(|p| p.full_version.clone())
                .collect::<Vec<_>>()
                .join(", "))
        },
    ));
    for b in state.venvs.backends.backends() {
        let name = b.name.as_str();
        if !matches!(name, "pip" | "uv") {
            continue;
        }
        checks.push(check(
            &format!("backend_{name}"),
            if b.available {
                Ok(format!("{name} {}", b.version.unwrap_or_default()))
            } else {
                Err((
                    name == "pip",
                    b.note.unwrap_or_else(|| format!("{name} is not available")),
                    if name == "uv" {
                        "install uv (`pip install uv`) or set ATELIER_UV, then restart the server"
                            .to_owned()
                    } else {
                        "install a Python with its venv and ensurepip modules (Debian: python3-venv)"
                            .to_owned()
                    },
                ))
            },
        ));
    }
    checks.push(check(
        "database",
        if atelier_projections::health::database_ok(&state.pool).await {
            Ok("PostgreSQL answers".to_owned())
        } else {
            Err((
                true,
                "PostgreSQL does not answer".to_owned(),
                "check DATABASE_URL and that the server runs".to_owned(),
            ))
        },
    ));
    Ok(HttpResponse::Ok().json(Diagnostics {
        healthy: checks.iter().all(|c| c.status != "fail"),
        checks,
    }))
}
