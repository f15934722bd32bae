//! Deployments: the frameworks catalog, create (`POST /deployments`, the seed's `POST /deploy`),
//! list, read, status, logs (paged, or followed as server-sent events), versions, the
//! variables, and what people do to a deployment (stop, start, cancel, redeploy, rollback,
//! delete).

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::deploy::EnvChange;
use atelier_commands::handler::Written;
use atelier_commands::rate_limit::{Decision, Limit};
use atelier_domain::deploy::deployment::{
    Action, Deployment, DeploymentData, DeploymentError, DeploymentStatus,
};
use atelier_domain::deploy::framework::{CATALOG, Framework};
use atelier_domain::deploy::spec::{DeploymentType, EnvVar, SpecInput, parse_env};
use atelier_domain::identity::Permission;
use atelier_projections::deploy::{
    DEPLOYMENT_SORTS, DEPLOYMENTS, DeploymentQuery, DeploymentRow, deployment_versions,
    get_deployment, list_deployments,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::conventions::{
    Reply, await_projection, command_error, etag, idempotent, if_match, if_none_match, json_body,
};
use crate::identity::auth::AuthState;
use crate::kit::{Principal, command_context, path_id};
use crate::live::hub::Hub;
use crate::live::log_socket::{self, LogSocketQuery};
use crate::logs::{Follower, LogEvent, LogPage, LogParams, OwnerState, Probe};
use crate::pagination::{CursorParams, KeysetPage, PageParams};
use crate::problem::{ApiError, FieldError, Problem, collect};
use crate::state::AppState;

/// What a secret's value reads as.
pub const MASK: &str = "********";

/// How many deployments one user may create in a window (WindFlow: 10 a minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreationLimit(pub Limit);

impl Default for CreationLimit {
    fn default() -> Self {
        Self(Limit {
            max: 10,
            window: Duration::from_secs(60),
        })
    }
}

/// Its resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResourcesView {
    /// Cores: 1–16 (vm), 1–8 (lxc).
    pub cores: u32,
    /// Memory in MB: 512–32768 (vm), 256–16384 (lxc).
    pub memory: u32,
    /// Disk in GB: 10–500 (vm), 5–200 (lxc).
    pub disk: u32,
}

/// An environment variable, as the API shows it: a secret's value is masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnvView {
    /// Its name.
    pub name: String,
    /// Its value (`********` for a secret).
    pub value: String,
    /// Whether it is secret.
    pub secret: bool,
}

fn env_views(env: &[EnvVar]) -> Vec<EnvView> {
    env.iter()
        .map(|v| EnvView {
            name: v.name.clone(),
            value: if v.is_secret() {
                MASK.to_owned()
            } else {
                v.value.clone().unwrap_or_default()
            },
            secret: v.is_secret(),
        })
        .collect()
}

/// A deployment, as the API shows it (the PaaS seed's fields, and WindFlow's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentView {
    /// Its id.
    pub id: Uuid,
    /// Its name, unique within the organization while it is not deleted.
    pub name: String,
    /// `vm` or `lxc`.
    pub deployment_type: String,
    /// Its framework's key (see `GET /frameworks`).
    pub framework: String,
    /// Its repository (`null` for a stack's deployment).
    pub github_url: Option<String>,
    /// The stack it runs, for a stack's deployment (`framework` is then `compose`).
    pub stack_id: Option<Uuid>,
    /// Which version of that stack.
    pub stack_version: Option<u32>,
    /// Its resources.
    pub resources: ResourcesView,
    /// The target it is deployed to.
    pub target_id: Option<Uuid>,
    /// `pending`, `provisioning`, `deploying`, `running`, `failed`, `stopped` or `deleted`.
    pub status: String,
    /// The version it runs (every spec change and rollback makes one).
    pub version: u32,
    /// How many versions it has.
    pub versions: u32,
    /// Its address, once provisioned.
    pub ip_address: Option<String>,
    /// Its VM id, once provisioned (from 100).
    pub vm_id: Option<u32>,
    /// Where its app answers, once running.
    pub access_url: Option<String>,
    /// Why it failed: `error`, `timed_out`, `interrupted`, `cancelled`, `exited`.
    pub failure: Option<String>,
    /// What went wrong.
    pub error_message: Option<String>,
    /// Its variables (secrets masked).
    pub env: Vec<EnvView>,
    /// The runner that owns it.
    pub runner: Option<String>,
    /// The driver that provisioned it.
    pub driver: Option<String>,
    /// Whether a deleted deployment's resources are destroyed.
    pub destroyed: bool,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When its app last started answering.
    pub deployed_at: Option<DateTime<Utc>>,
    /// Its revision: the `ETag`, and what `If-Match` names.
    pub revision: u64,
}

impl From<DeploymentRow> for DeploymentView {
    fn from(r: DeploymentRow) -> Self {
        let env: Vec<EnvVar> = serde_json::from_value(r.env).unwrap_or_default();
        Self {
            id: r.id,
            name: r.name,
            deployment_type: r.deployment_type,
            framework: r.framework,
            github_url: r.github_url,
            stack_id: r.stack_id,
            stack_version: r.stack_version.map(|v| v as u32),
            resources: ResourcesView {
                cores: r.cores as u32,
                memory: r.memory as u32,
                disk: r.disk as u32,
            },
            target_id: r.target_id,
            status: r.status,
            version: r.version as u32,
            versions: r.versions as u32,
            ip_address: r.ip_address,
            vm_id: r.vm_id.map(|v| v as u32),
            access_url: r.access_url,
            failure: r.failure,
            error_message: r.error_message,
            env: env_views(&env),
            runner: r.runner,
            driver: r.driver,
            destroyed: r.destroyed,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
            deployed_at: r.deployed_at,
            revision: r.revision as u64,
        }
    }
}

fn data_view(d: &DeploymentData, revision: Option<u64>) -> DeploymentView {
    let spec = d.spec();
    DeploymentView {
        id: d.id,
        name: spec.name.as_str().to_owned(),
        deployment_type: spec.deployment_type.as_str().to_owned(),
        framework: spec.framework.clone(),
        github_url: spec.github_url.as_ref().map(|g| g.as_str().to_owned()),
        stack_id: spec.stack.as_ref().map(|s| s.stack_id),
        stack_version: spec.stack.as_ref().map(|s| s.version),
        resources: ResourcesView {
            cores: spec.resources.cores,
            memory: spec.resources.memory,
            disk: spec.resources.disk,
        },
        target_id: spec.target_id,
        status: d.status.as_str().to_owned(),
        version: d.version,
        versions: d.versions.len() as u32,
        ip_address: d.ip_address.clone(),
        vm_id: d.vm_id,
        access_url: d.access_url.clone(),
        failure: d.failure.map(|f| f.as_str().to_owned()),
        error_message: d.error_message.clone(),
        env: env_views(&spec.env),
        runner: d.runner.clone(),
        driver: d.driver.clone(),
        destroyed: d.destroyed,
        created_by: d.created_by.clone(),
        created_at: d.created_at,
        updated_at: d.updated_at,
        deployed_at: d.deployed_at,
        revision: revision.unwrap_or(0),
    }
}

fn view(written: &Written<Deployment>) -> Result<DeploymentView, ApiError> {
    written
        .state
        .data()
        .map(|d| data_view(d, written.revision))
        .ok_or_else(|| ApiError::not_found("no such deployment"))
}

fn rejected(e: DeploymentError) -> ApiError {
    match e {
        DeploymentError::NotFound => ApiError::not_found("no such deployment"),
        DeploymentError::AlreadyExists => ApiError::conflict("the deployment already exists"),
        DeploymentError::IllegalTransition { action, status } => ApiError::new(
            StatusCode::CONFLICT,
            "ILLEGAL_TRANSITION",
            format!("cannot {action} a deployment that is {}", status.as_str()),
        ),
        DeploymentError::NoSuchVersion(v) => ApiError::new(
            StatusCode::CONFLICT,
            "NO_SUCH_VERSION",
            if v == 0 {
                "the deployment has no earlier version to roll back to".to_owned()
            } else {
                format!("the deployment has no version {v} other than the one it runs")
            },
        ),
        DeploymentError::OwnedElsewhere(runner) => {
            ApiError::conflict(format!("the deployment belongs to runner {runner}"))
        }
    }
}

/// The catalog, as the seed shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FrameworksView {
    /// Always `true`.
    pub success: bool,
    /// Every framework by key.
    #[schema(value_type = Object)]
    pub frameworks: BTreeMap<&'static str, &'static Framework>,
}

/// The frameworks a deployment may run, by key (the PaaS seed's shape), each with the commands
/// the `process` driver runs.
#[utoipa::path(
    get, path = "/api/v1/frameworks", tag = "deploy", operation_id = "list_frameworks",
    responses((status = 200, description = "The catalog", body = FrameworksView,
        example = json!({"success": true, "frameworks": {"django": {"name": "Django", "language": "python", "version": "4.2", "port": 8000, "install_cmd": "pip install django gunicorn", "build_cmd": "…", "start_cmd": "…"}}}))),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.frameworks", skip_all)]
pub async fn frameworks(principal: Principal) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    Ok(HttpResponse::Ok().json(FrameworksView {
        success: true,
        frameworks: CATALOG.iter().map(|f| (f.key, f)).collect(),
    }))
}

/// A deployment's resources, as a create gives them.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ResourcesBody {
    /// Cores: 1–16 (vm), 1–8 (lxc).
    #[schema(value_type = Option<i64>)]
    pub cores: Option<serde_json::Value>,
    /// Memory in MB: 512–32768 (vm), 256–16384 (lxc).
    #[schema(value_type = Option<i64>)]
    pub memory: Option<serde_json::Value>,
    /// Disk in GB: 10–500 (vm), 5–200 (lxc).
    #[schema(value_type = Option<i64>)]
    pub disk: Option<serde_json::Value>,
}

/// One variable as input gives it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EnvItem {
    /// Its name (`[A-Za-z_][A-Za-z0-9_]*`; `PORT`, `HOST` and `ATELIER_*` are reserved).
    pub name: String,
    /// Its value; for a secret already set, leave it out to keep the current value.
    #[serde(default)]
    pub value: Option<String>,
    /// Whether the value is secret (it never reaches events, logs or answers).
    #[serde(default)]
    pub secret: bool,
}

/// Variables: a list of `{name, value, secret}`, or an object of plain `NAME: value`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EnvBody {
    /// With secrets.
    List(Vec<EnvItem>),
    /// Plain values.
    Map(BTreeMap<String, String>),
}

impl EnvBody {
    fn items(&self) -> Vec<EnvItem> {
        match self {
            Self::List(items) => items.clone(),
            Self::Map(map) => map
                .iter()
                .map(|(name, value)| EnvItem {
                    name: name.clone(),
                    value: Some(value.clone()),
                    secret: false,
                })
                .collect(),
        }
    }
}

/// A new deployment (the PaaS seed's body).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[schema(example = json!({"name": "my-app", "deployment_type": "vm", "framework": "django", "github_url": "https://github.com/user/repo", "resources": {"cores": 2, "memory": 2048, "disk": 20}}))]
pub struct DeploymentBody {
    /// 3 to 50 characters `[A-Za-z0-9_-]`, unique within the organization.
    pub name: Option<String>,
    /// `vm` or `lxc`.
    pub deployment_type: Option<String>,
    /// A key of `GET /frameworks`.
    pub framework: Option<String>,
    /// `https://github.com/owner/repo`.
    pub github_url: Option<String>,
    /// Its resources.
    #[serde(default)]
    pub resources: ResourcesBody,
    /// The target (see `/targets`), if any.
    #[schema(value_type = Option<Uuid>)]
    #[serde(alias = "target")]
    pub target_id: Option<String>,
    /// Its variables.
    pub env: Option<EnvBody>,
}

fn integer(
    field: &str,
    value: &Option<serde_json::Value>,
    errors: &mut Vec<FieldError>,
) -> Option<i64> {
    match value {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) => Some(n),
            None => {
                errors.push(FieldError {
                    field: field.to_owned(),
                    message: "must be a whole number".to_owned(),
                });
                Some(-1)
            }
        },
    }
}

/// Parses variables: those to set, and secrets given without a value (kept as they are).
fn env_change(body: &EnvBody, errors: &mut Vec<FieldError>) -> EnvChange {
    let items = body.items();
    let mut keep = Vec::new();
    let mut given = Vec::new();
    for item in items {
        match item.value {
            Some(value) => given.push((item.name, value, item.secret)),
            None if item.secret => keep.push(item.name),
            None => errors.push(FieldError {
                field: "env".into(),
                message: format!("{} has no value", item.name),
            }),
        }
    }
    let mut invalid = Vec::new();
    let mut set = parse_env(&given, &mut invalid);
    errors.extend(invalid.into_iter().map(FieldError::from));
    if keep.iter().any(|k| set.iter().any(|s| &s.name == k)) {
        errors.push(FieldError {
            field: "env".into(),
            message: "a variable is given twice".into(),
        });
        set.clear();
    }
    EnvChange { set, keep }
}

impl DeploymentBody {
    fn parse(
        &self,
    ) -> Result<
        (
            atelier_domain::deploy::spec::ParsedSpec,
            Vec<atelier_domain::deploy::spec::EnvInput>,
        ),
        ApiError,
    > {
        let mut errors = Vec::new();
        let cores = integer("resources.cores", &self.resources.cores, &mut errors);
        let memory = integer("resources.memory", &self.resources.memory, &mut errors);
        let disk = integer("resources.disk", &self.resources.disk, &mut errors);
        let target_id = match self.target_id.as_deref() {
            None | Some("") => None,
            Some(raw) => match Uuid::parse_str(raw) {
                Ok(id) => Some(id),
                Err(_) => {
                    errors.push(FieldError {
                        field: "target_id".into(),
                        message: "must be a target's id".into(),
                    });
                    None
                }
            },
        };
        let input = SpecInput {
            name: self.name.as_deref(),
            deployment_type: self.deployment_type.as_deref(),
            framework: self.framework.as_deref(),
            github_url: self.github_url.as_deref(),
            cores,
            memory,
            disk,
            target_id,
        };
        let spec = match input.parse() {
            Ok(spec) => Some(spec),
            Err(invalid) => {
                // A whole-number error above already names its field.
                for e in invalid {
                    if !errors.iter().any(|f| f.field == e.field) {
                        errors.push(e.into());
                    }
                }
                None
            }
        };
        let env = match &self.env {
            None => EnvChange::default(),
            Some(body) => env_change(body, &mut errors),
        };
        if !env.keep.is_empty() {
            errors.push(FieldError {
                field: "env".into(),
                message: format!("{} has no value", env.keep.join(", ")),
            });
        }
        match spec {
            Some(spec) if errors.is_empty() => Ok((spec, env.set)),
            _ => Err(ApiError::validation(errors)),
        }
    }
}

/// List filters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this status (deleted deployments are listed only with `status=deleted`).
    pub status: Option<String>,
    /// Only this framework.
    pub framework: Option<String>,
    /// Only this type: `vm` or `lxc`.
    #[serde(alias = "type")]
    pub deployment_type: Option<String>,
    /// Only this target.
    pub target_id: Option<String>,
    /// Part of the name, case-insensitive.
    pub search: Option<String>,
    /// Wait until the list reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// Lists the organization's deployments, newest first, by page number or by keyset cursor.
///
/// Every page carries `pagination.next_cursor`: `cursor=<next_cursor>` answers the deployments
/// after that page's last one (with the same filters), with a cost that does not grow with the
/// depth, and deployments created meanwhile do not shift it. `total` counts at most 10,000
/// matches (`total_capped` says when it stopped: the total is then a lower bound); `has_next`
/// is exact.
#[utoipa::path(
    get, path = "/api/v1/deployments", tag = "deploy", operation_id = "list_deployments",
    params(PageParams, CursorParams, ListParams),
    responses((status = 200, description = "A page of deployments", body = KeysetPage<DeploymentView>)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.deployments.list", skip_all, fields(org = %principal.org_id))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    page: web::Query<PageParams>,
    cursor: web::Query<CursorParams>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let mut errors = Vec::new();
    let paging = crate::pagination::paging(&DEPLOYMENT_SORTS, &page, &cursor, None, &mut errors);
    let status = params.status.as_deref().and_then(|s| {
        let parsed = DeploymentStatus::parse(s);
        if parsed.is_none() {
            errors.push(FieldError {
                field: "status".into(),
                message: format!(
                    "must be one of {}",
                    DeploymentStatus::ALL
                        .map(DeploymentStatus::as_str)
                        .join(", ")
                ),
            });
        }
        parsed
    });
    let deployment_type = params.deployment_type.as_deref().and_then(|t| {
        collect(&mut errors, DeploymentType::parse(t)).map(|t| t.as_str().to_owned())
    });
    let framework = params.framework.as_deref().map(|f| {
        if atelier_domain::deploy::framework::framework(f).is_none() {
            errors.push(FieldError {
                field: "framework".into(),
                message: format!(
                    "must be one of {}",
                    atelier_domain::deploy::framework::keys()
                ),
            });
        }
        f.to_owned()
    });
    let target_id = params
        .target_id
        .as_deref()
        .and_then(|t| match Uuid::parse_str(t) {
            Ok(id) => Some(id),
            Err(_) => {
                errors.push(FieldError {
                    field: "target_id".into(),
                    message: "must be a target's id".into(),
                });
                None
            }
        });
    let search = crate::pagination::search(params.search.as_deref(), &mut errors);
    crate::pagination::validate(errors)?;
    await_projection(&state, &req, DEPLOYMENTS).await?;
    let query = DeploymentQuery {
        paging,
        status,
        framework,
        deployment_type,
        target_id,
        search,
    };
    let listed = list_deployments(&state.pool, principal.org_id, &query)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(KeysetPage::of(&query.paging, listed, DeploymentView::from)))
}

/// Creates a deployment (pending; a runner provisions it). Every invalid field is reported at
/// once. At most 10 creations a minute per user by default (429 with `Retry-After`).
/// `Idempotency-Key` makes retries safe. `POST /deploy` is the same (the PaaS seed's path).
#[utoipa::path(
    post, path = "/api/v1/deployments", tag = "deploy", operation_id = "create_deployment",
    request_body = DeploymentBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retried request")),
    responses(
        (status = 202, description = "Accepted, pending; ETag is its revision, Atelier-Position the write's place in the log", body = DeploymentView),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many creations; Retry-After says when to try again", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.deployments.create", skip_all, fields(org = %principal.org_id))]
pub async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let (spec, env) = json_body::<DeploymentBody>(&req, &body)?.parse()?;
    idempotent(&state, &req, principal.org_id, &body, async || {
        let limit = state.settings.deploy_creations.0;
        // A limit of 0 is none (benchmarks; an operator who limits elsewhere).
        let permit = if limit.max == 0 {
            None
        } else {
            let key = format!("deploy.create:{}", principal.actor());
            match state
                .deploy
                .limiter
                .hit(&key, limit)
                .await
                .map_err(|e| ApiError::internal(&e))?
            {
                Decision::Allowed(permit) => Some(permit),
                Decision::Limited { retry_after } => {
                    metrics::counter!("atelier_rate_limited_total", "limit" => "deploy.create")
                        .increment(1);
                    return Err(ApiError::rate_limited(
                        format!(
                            "at most {} deployments may be created in {} s; try again later",
                            limit.max,
                            limit.window.as_secs()
                        ),
                        retry_after.as_secs_f64().ceil() as u64,
                    ));
                }
            }
        };
        let remaining = permit.as_ref().map(|p| p.remaining);
        let written = match state
            .deploy
            .deployments
            .create(&command_context(&principal), spec, env)
            .await
        {
            Ok(w) => w,
            Err(e) => {
                // What was refused does not count.
                if let Some(permit) = permit {
                    let _ = state.deploy.limiter.refund(permit).await;
                }
                return Err(command_error(e, rejected));
            }
        };
        let view = view(&written)?;
        let mut reply = Reply::json(StatusCode::ACCEPTED, &view)
            .header("location", format!("/api/v1/deployments/{}", view.id))
            .etag(written.revision)
            .position(written.position);
        if let Some(remaining) = remaining {
            reply = reply.header("x-ratelimit-remaining", remaining);
        }
        Ok(reply)
    })
    .await
}

async fn find(state: &AppState, org_id: Uuid, id: Uuid) -> Result<DeploymentRow, ApiError> {
    get_deployment(&state.pool, org_id, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("no such deployment"))
}

/// Query parameters of a single deployment.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Wait until the deployment reflects the write that returned this `Atelier-Position`.
    pub min_position: Option<String>,
}

/// Reads a deployment (a deleted one too: its history stays).
#[utoipa::path(
    get, path = "/api/v1/deployments/{id}", tag = "deploy", operation_id = "get_deployment",
    params(("id" = Uuid, Path, description = "The deployment's id"), GetParams),
    responses(
        (status = 200, description = "The deployment; ETag is its revision", body = DeploymentView),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
        (status = 404, description = "No such deployment in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.deployments.get", skip_all, fields(org = %principal.org_id))]
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "deployment")?;
    await_projection(&state, &req, DEPLOYMENTS).await?;
    let view = DeploymentView::from(find(&state, principal.org_id, id).await?);
    if if_none_match(req.headers(), view.revision) {
        return Ok(HttpResponse::NotModified()
            .insert_header(("etag", etag(view.revision)))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .insert_header(("etag", etag(view.revision)))
        .json(view))
}

/// A deployment's status (WindFlow's `GET /deployments/{id}/status`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusView {
    /// The deployment.
    pub deployment_id: Uuid,
    /// Its status.
    pub status: String,
    /// Whether it is on its way (pending, provisioning, deploying).
    pub in_progress: bool,
    /// The version it runs.
    pub version: u32,
    /// Where its app answers.
    pub access_url: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
    /// What went wrong.
    pub error_message: Option<String>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Its revision.
    pub revision: u64,
}

/// A deployment's status.
#[utoipa::path(
    get, path = "/api/v1/deployments/{id}/status", tag = "deploy", operation_id = "get_deployment_status",
    params(("id" = Uuid, Path, description = "The deployment's id"), GetParams),
    responses(
        (status = 200, description = "Where it is", body = StatusView),
        (status = 404, description = "No such deployment in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.deployments.status", skip_all, fields(org = %principal.org_id))]
pub async fn status(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "deployment")?;
    await_projection(&state, &req, DEPLOYMENTS).await?;
    let row = find(&state, principal.org_id, id).await?;
    let in_progress = DeploymentStatus::parse(&row.status).is_some_and(|s| s.is_in_progress());
    Ok(HttpResponse::Ok()
        .insert_header(("etag", etag(row.revision as u64)))
        .json(StatusView {
            deployment_id: row.id,
            status: row.status,
            in_progress,
            version: row.version as u32,
            access_url: row.access_url,
            failure: row.failure,
            error_message: row.error_message,
            updated_at: row.updated_at,
            revision: row.revision as u64,
        }))
}

/// A page of a deployment's log, with the seed's `logs` text.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeploymentLogPage {
    /// The page's lines as one text (the PaaS seed's `logs`).
    pub logs: String,
    /// The lines.
    #[serde(flatten)]
    pub page: LogPage,
}

/// Reads a deployment's log from an offset, or follows it live (`follow=true`:
/// `text/event-stream`, one `log` event per line with `id:` its number, then one `end` event
/// once the deployment settles: running, failed, stopped or deleted).
///
/// The same path upgraded to a WebSocket (`Upgrade: websocket`, WindFlow's log socket; the
/// token in `Authorization` or `access_token=`, the first line in `offset=`) sends
/// `{"type":"log","data":{seq,stream,line,at}}` per line, `{"type":"status","data":{status,
/// access_url,error_message}}` as the deployment moves, then `{"type":"end","data":{…,
/// next_offset}}` and a close with 1000 once it settles; a deployment that is not the
/// organization's closes the socket with 4003.
#[utoipa::path(
    get, path = "/api/v1/deployments/{id}/logs", tag = "deploy", operation_id = "get_deployment_logs",
    params(("id" = Uuid, Path, description = "The deployment's id"), LogParams),
    responses(
        (status = 200, description = "Lines (`application/json`), or with `follow=true` a stream of server-sent events", content(
            (DeploymentLogPage = "application/json"),
            (LogEvent = "text/event-stream"),
        )),
        (status = 404, description = "No such deployment in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.deployments.logs", skip_all, fields(org = %principal.org_id))]
pub async fn logs(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    params: web::Query<LogParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "deployment")?;
    let window = params.window(&req)?;
    await_projection(&state, &req, DEPLOYMENTS).await?;
    let row = find(&state, principal.org_id, id).await?;
    if window.follow {
        return Ok(crate::logs::follow(
            state.deploy.logs.clone(),
            principal.org_id,
            id,
            window.offset,
            probe(&state, principal.org_id, id),
            None,
        ));
    }
    let page = crate::logs::page(
        &state.deploy.logs,
        principal.org_id,
        id,
        window,
        settled(&row.status),
    )
    .await?;
    let logs = page
        .data
        .iter()
        .map(|l| l.line.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    Ok(HttpResponse::Ok().json(DeploymentLogPage { logs, page }))
}

fn settled(status: &str) -> bool {
    DeploymentStatus::parse(status).is_some_and(|s| s.is_settled())
}

/// What a followed deployment log reports of the deployment: its status, address and error.
fn probe(state: &AppState, org_id: Uuid, id: Uuid) -> Probe {
    let pool = state.pool.clone();
    Box::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            let d = get_deployment(&pool, org_id, id).await.ok()??;
            Some(OwnerState {
                settled: settled(&d.status),
                value: serde_json::json!({
                    "status": d.status,
                    "access_url": d.access_url,
                    "error_message": d.error_message,
                }),
            })
        })
    })
}

/// WindFlow's log socket: `GET /deployments/{id}/logs` with `Upgrade: websocket` (see
/// [`crate::live::log_socket`]): `{type:"log"}` per line, `{type:"status"}` as the deployment
/// moves, `{type:"end"}` once it settles; another organization's deployment closes with 4003.
#[tracing::instrument(name = "http.deployments.logs_socket", skip_all)]
pub async fn logs_socket(
    state: web::Data<AppState>,
    hub: web::Data<Hub>,
    auth: web::Data<AuthState>,
    req: HttpRequest,
    body: web::Payload,
    id: web::Path<String>,
    query: web::Query<LogSocketQuery>,
) -> Result<HttpResponse, ApiError> {
    let caller = log_socket::caller(&req, &query, &auth).await?;
    caller.0.require(Permission::Read)?;
    let offset = query.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::invalid_field("offset", "must be 0 or more"));
    }
    await_projection(&state, &req, DEPLOYMENTS).await?;
    let org_id = caller.0.org_id;
    // An id that is not a deployment of the caller's is refused the way WindFlow does it, after
    // the upgrade: one answer for "not yours" and "no such one".
    let visible = match Uuid::try_parse(&id) {
        Ok(id) => get_deployment(&state.pool, org_id, id)
            .await
            .map_err(|e| ApiError::internal(&e))?
            .map(|d| d.id),
        Err(_) => None,
    };
    let follower = visible.map(|id| {
        Follower::new(
            state.deploy.logs.clone(),
            org_id,
            id,
            offset,
            probe(&state, org_id, id),
        )
    });
    log_socket::open(&req, body, &hub, auth.into_inner(), caller, follower)
}

/// One version of a deployment's spec.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionView {
    /// Its number.
    pub version: u32,
    /// `created`, `env` or `rollback`.
    pub cause: String,
    /// For a rollback, the version it replaced.
    pub rolled_back_from: Option<u32>,
    /// The spec (secrets masked).
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// Who.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Every version of a deployment, newest first: what a rollback can go back to.
#[utoipa::path(
    get, path = "/api/v1/deployments/{id}/versions", tag = "deploy", operation_id = "list_deployment_versions",
    params(("id" = Uuid, Path, description = "The deployment's id"), GetParams),
    responses(
        (status = 200, description = "Its versions", body = Vec<VersionView>),
        (status = 404, description = "No such deployment in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.deployments.versions", skip_all, fields(org = %principal.org_id))]
pub async fn versions(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "deployment")?;
    await_projection(&state, &req, DEPLOYMENTS).await?;
    find(&state, principal.org_id, id).await?;
    let rows = deployment_versions(&state.pool, principal.org_id, id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let views: Vec<VersionView> = rows
        .into_iter()
        .map(|r| {
            let mut spec = r.spec;
            let env: Vec<EnvVar> = spec
                .get("env")
                .cloned()
                .and_then(|e| serde_json::from_value(e).ok())
                .unwrap_or_default();
            if let Some(o) = spec.as_object_mut() {
                o.insert(
                    "env".into(),
                    serde_json::to_value(env_views(&env)).unwrap_or_default(),
                );
            }
            VersionView {
                version: r.version as u32,
                cause: r.cause,
                rolled_back_from: r.rolled_back_from.map(|v| v as u32),
                spec,
                created_by: r.created_by,
                created_at: r.created_at,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

async fn act(
    state: &AppState,
    principal: &Principal,
    req: &HttpRequest,
    id: &str,
    action: Action,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(id, "deployment")?;
    let expected = if_match(req.headers())?;
    let written = state
        .deploy
        .deployments
        .act(&command_context(principal), id, expected, action)
        .await
        .map_err(|e| command_error(e, rejected))?;
    let view = view(&written)?;
    Ok(Reply::json(StatusCode::ACCEPTED, &view)
        .etag(written.revision)
        .position(written.position)
        .into_response())
}

macro_rules! action_handler {
    ($name:ident, $path:literal, $op:literal, $span:literal, $action:expr, $doc:literal, $conflict:literal) => {
        #[doc = $doc]
        #[utoipa::path(
            post, path = $path, tag = "deploy", operation_id = $op,
            params(
                ("id" = Uuid, Path, description = "The deployment's id"),
                ("If-Match" = Option<String>, Header, description = "The ETag the action is based on"),
            ),
            responses(
                (status = 202, description = "Accepted: the deployment as it is now (its runner acts on it)", body = DeploymentView),
                (status = 404, description = "No such deployment in this organization", body = Problem, content_type = "application/problem+json"),
                (status = 409, description = $conflict, body = Problem, content_type = "application/problem+json"),
            ),
            security(("bearer" = []))
        )]
        #[tracing::instrument(name = $span, skip_all, fields(org = %principal.org_id))]
        pub async fn $name(
            state: web::Data<AppState>,
            principal: Principal,
            req: HttpRequest,
            id: web::Path<String>,
        ) -> Result<HttpResponse, ApiError> {
            act(&state, &principal, &req, &id, $action).await
        }
    };
}

action_handler!(
    stop,
    "/api/v1/deployments/{id}/stop",
    "stop_deployment",
    "http.deployments.stop",
    Action::Stop,
    "Stops a running deployment's app (its infrastructure stays); stopping a stopped one does nothing.",
    "ILLEGAL_TRANSITION: it is not running"
);
action_handler!(
    start,
    "/api/v1/deployments/{id}/start",
    "start_deployment",
    "http.deployments.start",
    Action::Start,
    "Starts a stopped deployment's app again (it goes through deploying).",
    "ILLEGAL_TRANSITION: it is not stopped"
);
action_handler!(
    cancel,
    "/api/v1/deployments/{id}/cancel",
    "cancel_deployment",
    "http.deployments.cancel",
    Action::Cancel,
    "Cancels a rollout under way (pending, provisioning or deploying): it fails as cancelled and what was provisioned is destroyed.",
    "ILLEGAL_TRANSITION: no rollout is under way"
);
action_handler!(
    redeploy,
    "/api/v1/deployments/{id}/redeploy",
    "redeploy_deployment",
    "http.deployments.redeploy",
    Action::Redeploy,
    "Deploys the current version again (from running, stopped or failed).",
    "ILLEGAL_TRANSITION: a rollout is under way, or it is deleted"
);

/// A rollback: to a version (`to_version`, or WindFlow's `to_revision`), by default the one
/// before the current.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RollbackBody {
    /// The version to re-apply.
    #[serde(alias = "to_revision")]
    pub to_version: Option<u32>,
}

/// Rolls a deployment back: a new version that re-applies an earlier version's spec, rolled
/// out at once.
#[utoipa::path(
    post, path = "/api/v1/deployments/{id}/rollback", tag = "deploy", operation_id = "rollback_deployment",
    request_body(content = Option<RollbackBody>, description = "Optional; without it, the version before the current"),
    params(
        ("id" = Uuid, Path, description = "The deployment's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the rollback is based on"),
    ),
    responses(
        (status = 202, description = "Accepted: the new version, pending", body = DeploymentView),
        (status = 404, description = "No such deployment in this organization", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "NO_SUCH_VERSION, or ILLEGAL_TRANSITION (a rollout is under way, or it is deleted)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.deployments.rollback", skip_all, fields(org = %principal.org_id))]
pub async fn rollback(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let to_version = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        json_body::<RollbackBody>(&req, &body)?.to_version
    };
    act(
        &state,
        &principal,
        &req,
        &id,
        Action::Rollback { to_version },
    )
    .await
}

/// Deletes a deployment: its runner destroys what was provisioned; its history stays readable.
#[utoipa::path(
    delete, path = "/api/v1/deployments/{id}", tag = "deploy", operation_id = "delete_deployment",
    params(
        ("id" = Uuid, Path, description = "The deployment's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the deletion is based on"),
    ),
    responses(
        (status = 202, description = "Deleted; `destroyed` turns true once its resources are gone", body = DeploymentView),
        (status = 404, description = "No such deployment in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.deployments.delete", skip_all, fields(org = %principal.org_id))]
pub async fn delete(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    act(&state, &principal, &req, &id, Action::Delete).await
}

/// A deployment's variables.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnvPage {
    /// The deployment.
    pub deployment_id: Uuid,
    /// The version they belong to.
    pub version: u32,
    /// The variables (secrets masked).
    pub variables: Vec<EnvView>,
}

/// Reads a deployment's variables; secret values are masked.
#[utoipa::path(
    get, path = "/api/v1/deployments/{id}/env", tag = "deploy", operation_id = "get_deployment_env",
    params(("id" = Uuid, Path, description = "The deployment's id"), GetParams),
    responses(
        (status = 200, description = "Its variables", body = EnvPage),
        (status = 404, description = "No such deployment in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.deployments.env", skip_all, fields(org = %principal.org_id))]
pub async fn get_env(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let id = path_id(&id, "deployment")?;
    await_projection(&state, &req, DEPLOYMENTS).await?;
    let view = DeploymentView::from(find(&state, principal.org_id, id).await?);
    Ok(HttpResponse::Ok()
        .insert_header(("etag", etag(view.revision)))
        .json(EnvPage {
            deployment_id: view.id,
            version: view.version,
            variables: view.env,
        }))
}

/// New variables.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"variables": [{"name": "MODE", "value": "production"}, {"name": "API_TOKEN", "value": "s3cret", "secret": true}]}))]
pub struct EnvPutBody {
    /// Every variable (the list replaces the current one). `env` is accepted too.
    #[serde(alias = "env")]
    pub variables: EnvBody,
}

/// Replaces a deployment's variables (bulk). The change is a new version; a running app is
/// redeployed with them. A secret listed without `value` keeps its current value.
#[utoipa::path(
    put, path = "/api/v1/deployments/{id}/env", tag = "deploy", operation_id = "put_deployment_env",
    request_body = EnvPutBody,
    params(
        ("id" = Uuid, Path, description = "The deployment's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the change is based on"),
    ),
    responses(
        (status = 200, description = "The variables now", body = EnvPage),
        (status = 404, description = "No such deployment in this organization", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "ILLEGAL_TRANSITION: a rollout is under way, or it is deleted", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.deployments.put_env", skip_all, fields(org = %principal.org_id))]
pub async fn put_env(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let id = path_id(&id, "deployment")?;
    let expected = if_match(req.headers())?;
    let body = json_body::<EnvPutBody>(&req, &body)?;
    let mut errors = Vec::new();
    let change = env_change(&body.variables, &mut errors);
    crate::pagination::validate(errors)?;
    let written = state
        .deploy
        .deployments
        .set_env(&command_context(&principal), id, expected, change)
        .await
        .map_err(|e| command_error(e, rejected))?;
    let view = view(&written)?;
    Ok(Reply::json(
        StatusCode::OK,
        &EnvPage {
            deployment_id: view.id,
            version: view.version,
            variables: view.env,
        },
    )
    .etag(written.revision)
    .position(written.position)
    .into_response())
}

/// Registers the deployment routes (under `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/frameworks").route(web::get().to(frameworks)))
        .service(
            web::resource("/deployments")
                .route(web::get().to(list))
                .route(web::post().to(create)),
        )
        .service(web::resource("/deploy").route(web::post().to(create)))
        .service(
            web::resource("/deployments/{id}")
                .route(web::get().to(get))
                .route(web::delete().to(delete)),
        )
        .service(web::resource("/deployments/{id}/status").route(web::get().to(status)))
        .service(
            web::resource("/deployments/{id}/logs")
                .route(
                    web::get()
                        .guard(actix_web::guard::fn_guard(log_socket::is_upgrade))
                        .to(logs_socket),
                )
                .route(web::get().to(logs)),
        )
        .service(web::resource("/deployments/{id}/versions").route(web::get().to(versions)))
        .service(web::resource("/deployments/{id}/stop").route(web::post().to(stop)))
        .service(web::resource("/deployments/{id}/start").route(web::post().to(start)))
        .service(web::resource("/deployments/{id}/cancel").route(web::post().to(cancel)))
        .service(web::resource("/deployments/{id}/redeploy").route(web::post().to(redeploy)))
        .service(web::resource("/deployments/{id}/rollback").route(web::post().to(rollback)))
        .service(
            web::resource("/deployments/{id}/env")
                .route(web::get().to(get_env))
                .route(web::put().to(put_env)),
        );
}
