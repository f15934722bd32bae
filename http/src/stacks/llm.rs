//! WindFlow's LLM services: `POST /llm/analyze` (a configuration → findings),
//! `POST /llm/troubleshoot` (a deployment or a log → causes and fixes) and `POST /llm/optimize`
//! (a deployment's resources and figures → recommendations). Each answer says which engine
//! answered; each consultation is recorded as an event (`AssistantConsulted`).

use actix_web::{HttpRequest, HttpResponse, web};
use atelier_commands::stacks::assistant::Answer;
use atelier_domain::identity::Permission;
use atelier_domain::stacks::assistant::{
    AnalysisFinding, Diagnosis, Recommendation, ResourceFigures,
};
use atelier_domain::stacks::compose;
use atelier_domain::stacks::consultation::Consulted;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::routes::{EngineView, ValidationView, configuration};
use crate::conventions::json_body;
use crate::kit::{Principal, command_context};
use crate::problem::{ApiError, FieldError, Problem};
use crate::state::AppState;

/// Longest log text accepted, in bytes (the last part of a longer log is what matters).
pub const MAX_LOG_BYTES: usize = 64 * 1024;

async fn record<T>(
    state: &AppState,
    principal: &Principal,
    kind: &str,
    answer: &Answer<Vec<T>>,
    deployment_id: Option<Uuid>,
) -> Result<Uuid, ApiError> {
    let ctx = command_context(principal);
    let id = Uuid::now_v7();
    state
        .stacks
        .record_consultation(
            &ctx,
            Consulted {
                consultation_id: id,
                org_id: principal.org_id,
                kind: kind.to_owned(),
                engine: answer.engine.to_owned(),
                model: answer.model.clone(),
                request_hash: answer.request_hash.clone(),
                fallback: answer.fallback.clone(),
                deployment_id,
                answers: answer.value.len() as u32,
                at: ctx.occurred_at,
            },
        )
        .await
        .map_err(|e| crate::conventions::command_error(e, |e| ApiError::conflict(e.to_string())))?;
    Ok(id)
}

/// A configuration to analyze.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"configuration": {"services": {"db": {"image": "postgres:16", "ports": ["5432:5432"]}}}}))]
pub struct AnalyzeBody {
    /// A docker compose document: a mapping, or its YAML or JSON text.
    #[schema(value_type = Object)]
    pub configuration: serde_json::Value,
}

/// An analysis.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AnalysisView {
    /// The consultation, as recorded (`consultation-<id>` in the log).
    pub consultation_id: Uuid,
    /// Who answered.
    pub assistant: EngineView,
    /// Its validation.
    pub validation: ValidationView,
    /// Best-practice findings: `{path, rule, severity, message, suggestion}`.
    #[schema(value_type = Vec<Object>)]
    pub findings: Vec<AnalysisFinding>,
}

/// Analyzes a configuration: its validation, and what a platform engineer would improve.
#[utoipa::path(
    post, path = "/api/v1/llm/analyze", tag = "stacks", operation_id = "llm_analyze",
    request_body = AnalyzeBody,
    responses((status = 200, description = "The findings", body = AnalysisView)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.llm.analyze", skip_all, fields(org = %principal.org_id))]
pub async fn analyze(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Write)?;
    let body = json_body::<AnalyzeBody>(&req, &body)?;
    let config = configuration("configuration", &body.configuration)
        .map_err(|e| ApiError::validation(vec![e]))?;
    let answer = state.stacks.assistant.analyze(&config).await;
    let consultation_id = record(&state, &principal, "analyze", &answer, None).await?;
    Ok(HttpResponse::Ok().json(AnalysisView {
        consultation_id,
        assistant: EngineView::from(&answer),
        validation: ValidationView::from(compose::validate(&config)),
        findings: answer.value,
    }))
}

/// What to troubleshoot: a deployment (its log is read) or log text.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[schema(example = json!({"logs": "Error: listen EADDRINUSE: address already in use :::3000"}))]
pub struct TroubleshootBody {
    /// A deployment of the organization: its log is what is read.
    pub deployment_id: Option<Uuid>,
    /// Log text (at most 64 KiB).
    #[serde(alias = "log")]
    pub logs: Option<String>,
}

/// A diagnosis.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TroubleshootView {
    /// The consultation, as recorded.
    pub consultation_id: Uuid,
    /// Who answered.
    pub assistant: EngineView,
    /// Causes, most likely first: `{cause, rule, evidence, fixes, confidence}`.
    #[schema(value_type = Vec<Object>)]
    pub causes: Vec<Diagnosis>,
}

/// Diagnoses a failure from a deployment's log, or from log text.
#[utoipa::path(
    post, path = "/api/v1/llm/troubleshoot", tag = "stacks", operation_id = "llm_troubleshoot",
    request_body = TroubleshootBody,
    responses(
        (status = 200, description = "Causes and fixes", body = TroubleshootView),
        (status = 404, description = "No such deployment in this organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.llm.troubleshoot", skip_all, fields(org = %principal.org_id))]
pub async fn troubleshoot(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let body = json_body::<TroubleshootBody>(&req, &body)?;
    let log = match (&body.deployment_id, &body.logs) {
        (Some(id), None) => deployment_log(&state, &principal, *id).await?,
        (None, Some(text)) if text.len() <= MAX_LOG_BYTES => text.clone(),
        (None, Some(_)) => {
            return Err(ApiError::invalid_field(
                "logs",
                format!("must be at most {MAX_LOG_BYTES} bytes: send the end of the log"),
            ));
        }
        _ => {
            return Err(ApiError::validation(vec![FieldError {
                field: "deployment_id".into(),
                message: "give a deployment_id or logs (one of them)".into(),
            }]));
        }
    };
    let answer = state.stacks.assistant.troubleshoot(&log).await;
    let consultation_id = record(
        &state,
        &principal,
        "troubleshoot",
        &answer,
        body.deployment_id,
    )
    .await?;
    Ok(HttpResponse::Ok().json(TroubleshootView {
        consultation_id,
        assistant: EngineView::from(&answer),
        causes: answer.value,
    }))
}

/// Most lines of a deployment's log read for a diagnosis: its last ones, which say why it
/// failed.
const MAX_LOG_LINES: i64 = 5000;

/// The end of a deployment's log, as text: a deployment of the caller's organization (its
/// stream's first event says whose it is), else not found.
async fn deployment_log(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<String, ApiError> {
    use atelier_domain::Aggregate;
    let missing = || ApiError::not_found("no such deployment");
    let stream = atelier_store::StreamName::new(format!(
        "{}-{id}",
        atelier_domain::deploy::deployment::Deployment::CATEGORY
    ))
    .map_err(|_| missing())?;
    let first = state
        .store
        .read_stream(&stream, atelier_store::ReadStream::forward().max(1))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    if first.first().and_then(crate::audit::history::owner) != Some(principal.org_id) {
        return Err(missing());
    }
    let lines = state
        .deploy
        .logs
        .tail(principal.org_id, id, MAX_LOG_LINES)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut text = String::new();
    for line in lines.iter().rev() {
        if text.len() + line.line.len() + 1 > MAX_LOG_BYTES {
            break;
        }
        text.insert_str(0, &format!("{}\n", line.line));
    }
    Ok(text)
}

/// A deployment's resources and figures.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[schema(example = json!({"cpu_limit": 2.0, "memory_limit_mb": 4096, "cpu_usage_p95": 0.3, "memory_usage_p95_mb": 900, "restarts": 0}))]
pub struct OptimizeBody {
    /// The deployment it is about (recorded with the consultation).
    pub deployment_id: Option<Uuid>,
    /// Its figures.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub figures: serde_json::Value,
}

/// Recommendations.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecommendationsView {
    /// The consultation, as recorded.
    pub consultation_id: Uuid,
    /// Who answered.
    pub assistant: EngineView,
    /// `{resource, current, recommended, reason}`.
    #[schema(value_type = Vec<Object>)]
    pub recommendations: Vec<Recommendation>,
}

/// Recommends resources for a deployment from its limits and usage.
#[utoipa::path(
    post, path = "/api/v1/llm/optimize", tag = "stacks", operation_id = "llm_optimize",
    request_body = OptimizeBody,
    responses((status = 200, description = "Recommendations", body = RecommendationsView)),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "http.llm.optimize", skip_all, fields(org = %principal.org_id))]
pub async fn optimize(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::Read)?;
    let body = json_body::<OptimizeBody>(&req, &body)?;
    let mut figures = body.figures.clone();
    if let Some(map) = figures.as_object_mut() {
        map.remove("deployment_id");
    }
    let figures: ResourceFigures = serde_json::from_value(figures)
        .map_err(|e| ApiError::invalid_field("body", e.to_string()))?;
    let invalid = figures.check();
    if !invalid.is_empty() {
        return Err(ApiError::validation(
            invalid.into_iter().map(FieldError::from).collect(),
        ));
    }
    let answer = state.stacks.assistant.recommend(&figures).await;
    let consultation_id =
        record(&state, &principal, "optimize", &answer, body.deployment_id).await?;
    Ok(HttpResponse::Ok().json(RecommendationsView {
        consultation_id,
        assistant: EngineView::from(&answer),
        recommendations: answer.value,
    }))
}

/// Registers the LLM routes (under `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/llm/analyze", web::post().to(analyze))
        .route("/llm/troubleshoot", web::post().to(troubleshoot))
        .route("/llm/optimize", web::post().to(optimize));
}
