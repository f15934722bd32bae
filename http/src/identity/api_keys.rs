//! API keys of the caller's organization (WindFlow's): `POST /api/v1/api-keys` creates one and
//! shows its key once, `GET /api/v1/api-keys` lists them (never a key), `DELETE
//! /api/v1/api-keys/{id}` revokes one, effective on the next request. Admins (and owners) manage
//! keys, and only a person may: a key never creates or revokes keys.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::identity::api_keys::{KeyServiceError, NewKey};
use atelier_domain::identity::Permission;
use atelier_domain::identity::api_key::{ApiKey, KeyError, Scope};
use atelier_projections::identity::{ApiKeyRow, DIRECTORY, list_api_keys};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::conventions::{Reply, await_projection, command_error, json_body};
use crate::identity::auth::{AuthState, Principal};
use crate::pagination::{Page, PageParams, Pagination};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// A key to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ApiKeyBody {
    /// 1 to 100 characters.
    pub name: String,
    /// Some of `read`, `write`, `deploy`, `admin`.
    pub scopes: Vec<String>,
    /// When it stops working (RFC 3339, in the future); never when absent.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// An API key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyView {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub organization_id: Uuid,
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// Who created it (it never does more than they may).
    pub created_by: Uuid,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it was last used (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRow> for ApiKeyView {
    fn from(r: ApiKeyRow) -> Self {
        Self {
            id: r.id,
            organization_id: r.org_id,
            name: r.name,
            scopes: r.scopes,
            expires_at: r.expires_at,
            created_by: r.created_by,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
            last_used_at: r.last_used_at,
        }
    }
}

/// A key just created: the only answer that shows `key`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKeyView {
    /// The key: send it as the `api-key` header. It is not shown again.
    pub key: String,
    /// The rest.
    #[serde(flatten)]
    pub view: ApiKeyView,
}

fn rejected(e: KeyError) -> ApiError {
    match e {
        KeyError::NotFound => ApiError::not_found("no such API key"),
        KeyError::InvalidName(v) => ApiError::invalid_field(v.field, v.message),
        KeyError::ExpiresInThePast => {
            ApiError::invalid_field("expires_at", "must be in the future")
        }
        KeyError::AlreadyExists => ApiError::conflict(e.to_string()),
    }
}

fn service_error(e: KeyServiceError) -> ApiError {
    match e {
        KeyServiceError::Key(e) => command_error(e, rejected),
        KeyServiceError::Credentials(e) => ApiError::internal(&e),
    }
}

/// Creates an API key in the caller's organization (admins and owners).
#[utoipa::path(
    post, path = "/api/v1/api-keys", tag = "identity", operation_id = "create_api_key",
    request_body = ApiKeyBody,
    responses(
        (status = 201, description = "Created; `key` is shown this once", body = CreatedApiKeyView),
        (status = 403, description = "Not an admin of the organization, or an API key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.api_keys.create", skip_all, fields(org = %principal.org_id))]
pub async fn create(
    auth: web::Data<AuthState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Manage)?;
    let body = json_body::<ApiKeyBody>(&req, &body)?;
    let scopes: BTreeSet<Scope> = Scope::parse_all(body.scopes.iter().map(String::as_str))
        .map_err(|e| ApiError::validation(vec![e.into()]))?;
    let ctx = crate::kit::command_context(&principal);
    let created = auth
        .keys
        .create(
            &ctx,
            principal.user_id,
            NewKey {
                name: body.name,
                scopes,
                expires_at: body.expires_at,
            },
        )
        .await
        .map_err(service_error)?;
    let ApiKey::Present(k) = &created.written.state else {
        return Err(ApiError::bug("created API key missing"));
    };
    tracing::info!(key_id = %k.id, "API key created");
    let view = CreatedApiKeyView {
        key: created.key.clone(),
        view: ApiKeyView {
            id: k.id,
            organization_id: k.org_id,
            name: k.name.clone(),
            scopes: k.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            expires_at: k.expires_at,
            created_by: k.created_by,
            created_at: ctx.occurred_at,
            revoked_at: None,
            last_used_at: None,
        },
    };
    Ok(Reply::json(StatusCode::CREATED, &view)
        .header("cache-control", "no-store")
        .position(created.written.position)
        .into_response())
}

/// Lists the API keys of the caller's organization, newest first (admins and owners).
#[utoipa::path(
    get, path = "/api/v1/api-keys", tag = "identity", operation_id = "list_api_keys",
    params(PageParams),
    responses(
        (status = 200, description = "A page of keys, without their secrets", body = Page<ApiKeyView>),
        (status = 403, description = "Not an admin of the organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.api_keys.list", skip_all, fields(org = %principal.org_id))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    page: web::Query<PageParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Manage)?;
    let (page, per_page) = page.parse().map_err(ApiError::validation)?;
    await_projection(&state, &req, DIRECTORY).await?;
    let (rows, total) = list_api_keys(&state.pool, principal.org_id, page, per_page)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(Page {
        data: rows.into_iter().map(ApiKeyView::from).collect(),
        pagination: Pagination::new(page, per_page, total),
    }))
}

/// Revokes an API key of the caller's organization: it stops working on the next request.
#[utoipa::path(
    delete, path = "/api/v1/api-keys/{id}", tag = "identity", operation_id = "revoke_api_key",
    params(("id" = Uuid, Path, description = "The key")),
    responses(
        (status = 204, description = "Revoked (or already)"),
        (status = 403, description = "Not an admin of the organization, or an API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key in the caller's organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.api_keys.revoke", skip_all, fields(org = %principal.org_id))]
pub async fn revoke(
    auth: web::Data<AuthState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Manage)?;
    let key_id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("no such API key"))?;
    let ctx = crate::kit::command_context(&principal);
    let written = auth
        .keys
        .revoke(&ctx, key_id, principal.user_id)
        .await
        .map_err(service_error)?;
    tracing::info!(%key_id, "API key revoked");
    Ok(Reply::empty(StatusCode::NO_CONTENT)
        .position(written.position)
        .into_response())
}

/// Registers the API key routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api-keys")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(web::resource("/api-keys/{id}").route(web::delete().to(revoke)));
}
