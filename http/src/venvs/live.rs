//! GestVenv on the live feed: its nine server message types with its shapes, its two client
//! commands (`environment:refresh`, `package:install`), and subscriptions to an environment by
//! its name.
//!
//! | event | sent as | data |
//! |---|---|---|
//! | `EnvironmentCreated` | `environment:created` | `{environment, environment_id}` |
//! | `EnvironmentReady`, `EnvironmentCreationFailed`, `EnvironmentUpdated`, `EnvironmentActivated` | `environment:updated` | `{environment, environment_id, changes}` |
//! | `EnvironmentDeleted`, `EnvironmentExpired` | `environment:deleted` | `{environment_id, reason}` |
//! | `PackageInstalled` | `package:installed` | `{environment_id, package}` |
//! | `PackageUninstalled` | `package:uninstalled` | `{environment_id, package_name}` |
//! | `OperationStarted`, `OperationProgress`, `OperationCompleted`, `OperationFailed` | `operation:started`, `:progress`, `:completed`, `:failed` | the event's (`operation_id`, `type`, `progress`, `message`, `result`, `duration`, `error`) |

use actix_web::web;
use atelier_domain::identity::Permission;
use atelier_domain::venvs::environment::EnvironmentEvent;
use atelier_domain::venvs::operation::OperationRequest;
use atelier_domain::venvs::requirement::Requirement;
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::RecordedEvent;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::contexts::LiveCommand;
use crate::kit::Principal;
use crate::problem::ApiError;
use crate::state::AppState;

/// How an environment's event is sent (operations keep the plain form: their types and data
/// are GestVenv's already).
pub fn message(record: &RecordedEvent) -> Option<(&'static str, Value)> {
    if record.stream.category() != atelier_domain::venvs::environment::Environment::CATEGORY {
        return None;
    }
    let event =
        EnvironmentEvent::decode_stored(&record.event_type, &record.metadata, &record.data).ok()?;
    use EnvironmentEvent as E;
    Some(match event {
        E::EnvironmentCreated {
            environment_id,
            name,
            python_version,
            backend,
            description,
            packages,
            ephemeral,
            operation_id,
            by,
            at,
            ..
        } => (
            "environment:created",
            json!({
                "environment_id": environment_id,
                "environment": {
                    "id": environment_id,
                    "name": name,
                    "python_version": python_version,
                    "backend": backend,
                    "description": description,
                    "status": "creating",
                    "packages": [],
                    "requested_packages": packages,
                    "ephemeral": ephemeral.map(|e| json!({"ttl": e.ttl_secs, "expires_at": e.expires_at, "isolation_level": e.isolation_level})),
                    "operation_id": operation_id,
                    "created_by": by,
                    "created_at": at,
                },
            }),
        ),
        E::EnvironmentReady {
            environment_id,
            python,
            at,
        } => updated(
            environment_id,
            json!({"status": "ready", "python": python, "updated_at": at}),
            &["status", "python"],
        ),
        E::EnvironmentCreationFailed {
            environment_id,
            error,
            at,
        } => updated(
            environment_id,
            json!({"status": "failed", "error": error, "updated_at": at}),
            &["status", "error"],
        ),
        E::EnvironmentUpdated {
            environment_id,
            description,
            changes,
            at,
        } => {
            let changes: Vec<&str> = changes.iter().map(String::as_str).collect();
            updated(
                environment_id,
                json!({"description": description, "updated_at": at}),
                &changes,
            )
        }
        E::EnvironmentActivated { environment_id, at } => updated(
            environment_id,
            json!({"active": true, "activated_at": at, "updated_at": at}),
            &["active"],
        ),
        E::EnvironmentDeleted {
            environment_id,
            by,
            at,
        } => (
            "environment:deleted",
            json!({"environment_id": environment_id, "reason": "deleted", "by": by, "at": at}),
        ),
        E::EnvironmentExpired {
            environment_id,
            expires_at,
            at,
        } => (
            "environment:deleted",
            json!({"environment_id": environment_id, "reason": "expired", "expires_at": expires_at, "at": at}),
        ),
        E::PackageInstalled { .. } => ("package:installed", record.data.value().clone()),
        E::PackageUninstalled { .. } => ("package:uninstalled", record.data.value().clone()),
    })
}

fn updated(environment_id: Uuid, mut fields: Value, changes: &[&str]) -> (&'static str, Value) {
    if let Some(o) = fields.as_object_mut() {
        o.insert("id".into(), json!(environment_id));
    }
    (
        "environment:updated",
        json!({"environment_id": environment_id, "environment": fields, "changes": changes}),
    )
}

/// GestVenv's client commands.
pub const COMMANDS: &[LiveCommand] = &[
    LiveCommand {
        kind: "environment:refresh",
        run: refresh,
    },
    LiveCommand {
        kind: "package:install",
        run: install,
    },
];

/// A string field of a command, or a 400 naming it.
fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, ApiError> {
    match fields.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(ApiError::invalid_field(name, "must be a non-empty string")),
    }
}

/// `{type:"environment:refresh", environment_id}`: reads the environment's packages again and
/// records what changed (an operation; answered with its id).
fn refresh(
    state: web::Data<AppState>,
    principal: Principal,
    fields: Map<String, Value>,
) -> BoxFuture<'static, Result<Value, ApiError>> {
    Box::pin(async move {
        principal.require(Permission::Write)?;
        let raw = text(&fields, "environment_id")?;
        let id = super::environments::resolve(&state, principal.org_id, raw).await?;
        let written = queue(&state, &principal, id, OperationRequest::Refresh).await?;
        Ok(json!({
            "type": "environment:refresh",
            "environment_id": id,
            "operation_id": written,
            "status": "queued",
        }))
    })
}

/// `{type:"package:install", environment_id, package_name, version?}`: installs a package (an
/// operation; answered with its id).
fn install(
    state: web::Data<AppState>,
    principal: Principal,
    fields: Map<String, Value>,
) -> BoxFuture<'static, Result<Value, ApiError>> {
    Box::pin(async move {
        principal.require(Permission::Write)?;
        let raw = text(&fields, "environment_id")?;
        let name = text(&fields, "package_name")?;
        let mut requirement = Requirement::parse(name)
            .map_err(|e| ApiError::invalid_field("package_name", e.message))?;
        match fields.get("version") {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) => {
                requirement = requirement
                    .with_version(v)
                    .map_err(|e| ApiError::invalid_field("version", e.message))?;
            }
            Some(_) => return Err(ApiError::invalid_field("version", "must be a string")),
        }
        let id = super::environments::resolve(&state, principal.org_id, raw).await?;
        let request = OperationRequest::Install {
            packages: vec![requirement],
            upgrade: false,
        };
        let operation_id = queue(&state, &principal, id, request).await?;
        Ok(json!({
            "type": "package:install",
            "environment_id": id,
            "package_name": name,
            "operation_id": operation_id,
            "status": "queued",
        }))
    })
}

async fn queue(
    state: &AppState,
    principal: &Principal,
    environment_id: Uuid,
    request: OperationRequest,
) -> Result<Uuid, ApiError> {
    let written =
        super::packages::queue_operation(state, principal, environment_id, request).await?;
    written
        .state
        .data()
        .map(|o| o.id)
        .ok_or_else(|| ApiError::bug("a queued operation without state"))
}

/// An environment a subscription names by its name: its id.
pub fn alias(
    state: web::Data<AppState>,
    org_id: Uuid,
    category: &str,
    id: &str,
) -> Option<BoxFuture<'static, Option<String>>> {
    if category != atelier_domain::venvs::environment::Environment::CATEGORY
        || Uuid::try_parse(id).is_ok()
    {
        return None;
    }
    let name = id.to_owned();
    Some(Box::pin(async move {
        state
            .venvs
            .environments
            .resolve(org_id, &name)
            .await
            .ok()
            .flatten()
            .map(|id| id.to_string())
    }))
}
