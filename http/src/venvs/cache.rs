//! The organization's package cache (GestVenv): `GET`/`DELETE /cache`, `POST /cache/packages`
//! (downloads wheels into it: an operation), `GET /cache/export?format=tar.gz` (streamed) and
//! `POST /cache/import` (the same archive back, checked whole before anything lands).

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::venvs::cache::{CacheInfo, ImportError, ImportLimits};
use atelier_domain::identity::Permission;
use atelier_domain::venvs::environment::MAX_PACKAGES;
use atelier_domain::venvs::operation::OperationRequest;
use atelier_domain::venvs::requirement::parse_list;
use atelier_domain::venvs::values::PythonVersion;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};

use super::operations::{OperationView, queued_reply};
use crate::conventions::{command_error, json_body};
use crate::kit::{Principal, command_context};
use crate::problem::{ApiError, FieldError, Problem, collect};
use crate::state::AppState;

/// The cache, as figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CacheView {
    /// Where it is on the server.
    pub location: String,
    /// Its size, in bytes.
    pub size_bytes: u64,
    /// Files in it.
    pub file_count: u64,
    /// Distributions kept for installs (`.whl`, `.tar.gz`).
    pub package_count: u64,
    /// Their file names.
    pub packages: Vec<String>,
    /// Bytes per part: `pip`, `uv` (the tools' caches), `wheels` (downloaded), `other`.
    #[schema(value_type = Object)]
    pub parts: std::collections::BTreeMap<String, u64>,
}

impl From<CacheInfo> for CacheView {
    fn from(i: CacheInfo) -> Self {
        Self {
            location: i.location,
            size_bytes: i.size_bytes,
            file_count: i.file_count,
            package_count: i.package_count,
            packages: i.packages,
            parts: i.parts,
        }
    }
}

fn blocking_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::bug(format!("a cache task failed: {e}"))
}

/// Says what the organization's cache holds.
#[utoipa::path(
    get, path = "/api/v1/cache", tag = "venvs", operation_id = "cache_info",
    responses((status = 200, description = "The cache", body = CacheView)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.cache.info", skip_all, fields(org = %principal.org_id))]
pub async fn info(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let (cache, org) = (state.venvs.cache.clone(), principal.org_id);
    let info = web::block(move || cache.info(org))
        .await
        .map_err(blocking_error)?
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(CacheView::from(info)))
}

/// What a clear freed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClearedView {
    /// Bytes freed.
    pub freed_bytes: u64,
}

/// Empties the organization's cache (installs then fetch from the index again).
#[utoipa::path(
    delete, path = "/api/v1/cache", tag = "venvs", operation_id = "clear_cache",
    responses((status = 200, description = "Emptied", body = ClearedView)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.cache.clear", skip_all, fields(org = %principal.org_id))]
pub async fn clear(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let (cache, org) = (state.venvs.cache.clone(), principal.org_id);
    let freed = web::block(move || cache.clear(org))
        .await
        .map_err(blocking_error)?
        .map_err(|e| ApiError::internal(&e))?;
    tracing::info!(freed, "cache cleared");
    Ok(HttpResponse::Ok().json(ClearedView { freed_bytes: freed }))
}

/// Packages to download into the cache.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"packages": ["requests", "django"], "python_version": "3.11"}))]
pub struct CachePackagesBody {
    /// PEP 508 requirements, 1 to 1000.
    pub packages: Vec<String>,
    /// The Python they are for (default 3.11), one this server has.
    pub python_version: Option<String>,
}

/// Downloads packages' wheels into the organization's cache (an operation): its later installs
/// take them from there.
#[utoipa::path(
    post, path = "/api/v1/cache/packages", tag = "venvs", operation_id = "cache_packages",
    request_body = CachePackagesBody,
    responses(
        (status = 202, description = "The operation downloading them", body = OperationView),
        (status = 400, description = "Invalid requirements or Python, every one named", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.cache.packages", skip_all, fields(org = %principal.org_id))]
pub async fn packages(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let b = json_body::<CachePackagesBody>(&req, &body)?;
    let mut errors = Vec::new();
    let python_version = collect(
        &mut errors,
        PythonVersion::parse(b.python_version.as_deref().unwrap_or("3.11")),
    );
    if let Some(v) = python_version
        && !state
            .venvs
            .backends
            .pythons()
            .iter()
            .any(|p| p.version == v)
    {
        errors.push(FieldError {
            field: "python_version".into(),
            message: format!("Python {v} is not installed on this server"),
        });
    }
    let packages = if b.packages.is_empty() {
        errors.push(FieldError {
            field: "packages".into(),
            message: "must name at least one package".into(),
        });
        None
    } else {
        match parse_list("packages", &b.packages, MAX_PACKAGES) {
            Ok(p) => Some(p),
            Err(bad) => {
                errors.extend(bad.into_iter().map(FieldError::from));
                None
            }
        }
    };
    let (Some(python_version), Some(packages)) = (python_version, packages) else {
        return Err(ApiError::validation(errors));
    };
    crate::pagination::validate(errors)?;
    let written = state
        .venvs
        .operations
        .queue_unattached(
            &command_context(&principal),
            OperationRequest::CachePackages {
                packages,
                python_version,
            },
        )
        .await
        .map_err(|e| command_error(e, super::operations::rejected))?;
    queued_reply(&written)
}

/// Export parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `tar.gz` (the default and only format).
    pub format: Option<String>,
}

/// Streams the organization's cache as a tar.gz archive (`POST /cache/import` takes it back,
/// here or on another server).
#[utoipa::path(
    get, path = "/api/v1/cache/export", tag = "venvs", operation_id = "export_cache",
    params(ExportParams),
    responses(
        (status = 200, description = "The archive, `application/gzip`", content_type = "application/gzip", body = Vec<u8>),
        (status = 400, description = "An unknown format", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.cache.export", skip_all, fields(org = %principal.org_id))]
pub async fn export(
    state: web::Data<AppState>,
    principal: Principal,
    params: web::Query<ExportParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    if let Some(f) = params.format.as_deref()
        && f != "tar.gz"
    {
        return Err(ApiError::invalid_field("format", "must be tar.gz"));
    }
    let (cache, org) = (state.venvs.cache.clone(), principal.org_id);
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let out = ChannelWriter { tx: tx.clone() };
        if let Err(e) = cache.export(org, out) {
            tracing::warn!(error = %e, "a cache export failed");
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = tokio_stream_of(rx).map(|r| r.map_err(actix_web::error::ErrorInternalServerError));
    Ok(HttpResponse::Ok()
        .content_type("application/gzip")
        .insert_header((
            "content-disposition",
            "attachment; filename=\"atelier-cache.tar.gz\"",
        ))
        .streaming(stream))
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Writes into a channel, from a blocking thread: an archive streamed as it is made.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What an import brought.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportedView {
    /// Files imported.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The cache now.
    pub cache: CacheView,
}

/// Imports a tar.gz archive of a cache (as `GET /cache/export` makes) into the organization's
/// cache. Sent as `Content-Type: application/gzip`. Refused whole, with nothing written, when it
/// is not such an archive, holds a link, a device, an absolute path or one that climbs out
/// (`..`), or is larger than the limits.
#[utoipa::path(
    post, path = "/api/v1/cache/import", tag = "venvs", operation_id = "import_cache",
    request_body(content = Vec<u8>, content_type = "application/gzip", description = "A tar.gz archive of a cache"),
    responses(
        (status = 200, description = "Imported", body = ImportedView),
        (status = 400, description = "Not an archive the cache takes (why is said), nothing written", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not sent as application/gzip", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.cache.import", skip_all, fields(org = %principal.org_id))]
pub async fn import(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    mut body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let gzip = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/gzip") || t.starts_with("application/x-gzip"));
    if !gzip {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the archive as Content-Type: application/gzip",
        ));
    }
    let limits = ImportLimits::default();
    // The upload goes to a file first (never whole in memory), under the size limit.
    let upload = tempfile::NamedTempFile::new().map_err(|e| ApiError::internal(&e))?;
    let mut file = tokio::fs::File::from_std(upload.reopen().map_err(|e| ApiError::internal(&e))?);
    let mut received: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("the upload failed: {e}")))?;
        received += chunk.len() as u64;
        if received > limits.max_total_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("an archive may be {} bytes at most", limits.max_total_bytes),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(&e))?;
    }
    file.flush().await.map_err(|e| ApiError::internal(&e))?;
    drop(file);
    let (cache, org) = (state.venvs.cache.clone(), principal.org_id);
    let outcome = web::block(move || {
        let imported = cache.import(org, upload.path(), limits);
        imported.map(|counts| (counts, cache.info(org)))
    })
    .await
    .map_err(blocking_error)?;
    match outcome {
        Ok(((files, bytes), info)) => {
            let info = info.map_err(|e| ApiError::internal(&e))?;
            tracing::info!(files, bytes, "cache imported");
            Ok(HttpResponse::Ok().json(ImportedView {
                files,
                bytes,
                cache: CacheView::from(info),
            }))
        }
        Err(ImportError::Io(e)) => Err(ApiError::internal(&e)),
        Err(refused) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_ARCHIVE",
            format!("{refused}; nothing was imported"),
        )),
    }
}
