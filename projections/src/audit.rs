//! The audit read model (`audit.log`): every event of the log with who acted, through which
//! credential, for which organization and as part of which request, in columns the audit API
//! filters on; and the query over it, paged by position.
//!
//! Every context's events land here with no code of their own: the projection reads the
//! metadata every command writes (`commands::handler::CommandContext::metadata`).

use async_trait::async_trait;
use atelier_store::{Position, RecordedEvent};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::runtime::{Projection, ProjectionError};

/// The audit read model.
pub struct AuditProjection;

/// Its name.
pub const AUDIT: &str = "audit.log";

/// The audit context's projections.
pub fn projections() -> Vec<std::sync::Arc<dyn Projection>> {
    vec![std::sync::Arc::new(AuditProjection)]
}

fn text(metadata: &serde_json::Value, key: &str) -> Option<String> {
    metadata
        .get(key)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

#[async_trait]
impl Projection for AuditProjection {
    fn name(&self) -> &'static str {
        AUDIT
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_log"]
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM audit_log").execute(tx).await?;
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let m = &event.metadata;
        let org_id = text(m, "org_id")
            .and_then(|s| Uuid::parse_str(&s).ok())
            .filter(|id| !id.is_nil());
        let occurred_at = text(m, "occurred_at").and_then(|s| s.parse::<DateTime<Utc>>().ok());
        let schema = atelier_domain::aggregate::schema_of(m) as i32;
        sqlx::query(
            "INSERT INTO audit_log (commit, prepare, stream, category, revision, event_id, \
             event_type, recorded_at, occurred_at, org_id, actor, credential, request_id, \
             correlation_id, causation_id, schema, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
             ON CONFLICT (commit, prepare) DO NOTHING",
        )
        .bind(event.position.commit as i64)
        .bind(event.position.prepare as i64)
        .bind(event.stream.as_str())
        .bind(event.stream.category())
        .bind(event.revision as i64)
        .bind(event.event_id)
        .bind(&event.event_type)
        .bind(event.created)
        .bind(occurred_at)
        .bind(org_id)
        .bind(text(m, "actor"))
        .bind(text(m, "credential"))
        .bind(text(m, "request_id"))
        .bind(text(m, "correlation_id"))
        .bind(text(m, "causation_id"))
        .bind(schema)
        .bind(&event.data)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// One event as the audit shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Its place in the log.
    pub position: Position,
    /// Its stream.
    pub stream: String,
    /// Its stream's category.
    pub category: String,
    /// Its revision in the stream.
    pub revision: u64,
    /// Its id.
    pub event_id: Uuid,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the command that caused it was issued (the store's time when not recorded).
    pub occurred_at: DateTime<Utc>,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// The organization it acted for.
    pub org_id: Option<Uuid>,
    /// Who acted: a user id, `apikey:<id>`, `runner:<id>`, `system:<what>`.
    pub actor: Option<String>,
    /// The credential they acted through: `session:<id>` or `apikey:<id>`.
    pub credential: Option<String>,
    /// The HTTP request.
    pub request_id: Option<String>,
    /// What groups everything one request caused.
    pub correlation_id: Option<String>,
    /// The event or command that caused it.
    pub causation_id: Option<String>,
    /// The schema version its data was written in.
    pub schema: i32,
    /// Its data, as written (secrets are never in events).
    pub data: serde_json::Value,
}

/// Which events an audit query wants. Every field narrows; `org_id: None` is every
/// organization (for superadmins only: the HTTP layer decides).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// The organization.
    pub org_id: Option<Uuid>,
    /// The actor, exactly.
    pub actor: Option<String>,
    /// The credential, exactly.
    pub credential: Option<String>,
    /// The stream, exactly.
    pub stream: Option<String>,
    /// The stream category.
    pub category: Option<String>,
    /// The event type.
    pub event_type: Option<String>,
    /// The correlation id.
    pub correlation_id: Option<String>,
    /// Recorded at or after.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before.
    pub until: Option<DateTime<Utc>>,
    /// Strictly after this position.
    pub from_position: Option<Position>,
}

/// Which way a page runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Newest first.
    #[default]
    Newest,
    /// Oldest first.
    Oldest,
}

#[derive(sqlx::FromRow)]
struct Row {
    commit: i64,
    prepare: i64,
    stream: String,
    category: String,
    revision: i64,
    event_id: Uuid,
    event_type: String,
    recorded_at: DateTime<Utc>,
    occurred_at: Option<DateTime<Utc>>,
    org_id: Option<Uuid>,
    actor: Option<String>,
    credential: Option<String>,
    request_id: Option<String>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    schema: i32,
    data: serde_json::Value,
}

/// A page of audit entries: at most `limit`, after `cursor` (the position of the last entry of
/// the previous page) in `order`, and whether more follow. Paging by position is stable while
/// events are written: a new event never shifts a page.
pub async fn list_events(
    pool: &PgPool,
    filter: &AuditFilter,
    order: Order,
    cursor: Option<Position>,
    limit: u32,
) -> Result<(Vec<AuditEntry>, bool), sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT commit, prepare, stream, category, revision, event_id, event_type, recorded_at, \
         occurred_at, org_id, actor, credential, request_id, correlation_id, causation_id, \
         schema, data FROM audit_log WHERE true",
    );
    if let Some(org) = filter.org_id {
        q.push(" AND org_id = ").push_bind(org);
    }
    let exact = [
        ("actor", &filter.actor),
        ("credential", &filter.credential),
        ("stream", &filter.stream),
        ("category", &filter.category),
        ("event_type", &filter.event_type),
        ("correlation_id", &filter.correlation_id),
    ];
    for (column, value) in exact {
        if let Some(value) = value {
            q.push(format!(" AND {column} = ")).push_bind(value.clone());
        }
    }
    if let Some(since) = filter.since {
        q.push(" AND recorded_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        q.push(" AND recorded_at < ").push_bind(until);
    }
    if let Some(p) = filter.from_position {
        q.push(" AND (commit, prepare) > (")
            .push_bind(p.commit as i64)
            .push(", ")
            .push_bind(p.prepare as i64)
            .push(")");
    }
    let (cmp, dir) = match order {
        Order::Newest => ("<", "DESC"),
        Order::Oldest => (">", "ASC"),
    };
    if let Some(c) = cursor {
        q.push(format!(" AND (commit, prepare) {cmp} ("))
            .push_bind(c.commit as i64)
            .push(", ")
            .push_bind(c.prepare as i64)
            .push(")");
    }
    q.push(format!(" ORDER BY commit {dir}, prepare {dir} LIMIT "))
        .push_bind(i64::from(limit) + 1);
    let rows: Vec<Row> = q.build_query_as().fetch_all(pool).await?;
    let has_next = rows.len() > limit as usize;
    let entries = rows
        .into_iter()
        .take(limit as usize)
        .map(|r| AuditEntry {
            position: Position::new(r.commit as u64, r.prepare as u64),
            stream: r.stream,
            category: r.category,
            revision: r.revision as u64,
            event_id: r.event_id,
            event_type: r.event_type,
            occurred_at: r.occurred_at.unwrap_or(r.recorded_at),
            recorded_at: r.recorded_at,
            org_id: r.org_id,
            actor: r.actor,
            credential: r.credential,
            request_id: r.request_id,
            correlation_id: r.correlation_id,
            causation_id: r.causation_id,
            schema: r.schema,
            data: r.data,
        })
        .collect();
    Ok((entries, has_next))
}
