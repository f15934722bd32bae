//! The `surveillance.detections` read model: an organization's detections, newest first, with
//! each standing acknowledgement (who, when) in its own table, and the statistics over them.

use async_trait::async_trait;
use atelier_domain::surveillance::detection::{Detection, DetectionEvent, DetectionType, Severity};
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::RecordedEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::runtime::{Projection, ProjectionError};
use crate::sql::{Counting, KeptCount, ListPage, Matching, Paging, Sort, Sorts, list_page};

/// The count this projection keeps beside its rows (the list's total).
pub const DETECTION_COUNTS: KeptCount = KeptCount {
    table: "detection_counts",
    column: "detections",
    keys: &["org_id"],
};

/// The `surveillance.detections` read model.
pub struct DetectionsProjection;

/// Its name.
pub const DETECTIONS: &str = "surveillance.detections";

fn json(v: &impl Serialize) -> Result<serde_json::Value, ProjectionError> {
    serde_json::to_value(v).map_err(|e| ProjectionError::Invalid(e.to_string()))
}

/// Recomputes a detection's `acknowledged` and first acknowledgement from its rows.
async fn refresh_acknowledged(
    tx: &mut PgConnection,
    id: Uuid,
    revision: i64,
) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
    sqlx::query(
        "UPDATE surveillance_detections d SET \
         acknowledged = EXISTS (SELECT 1 FROM surveillance_acknowledgements a WHERE a.detection_id = d.id), \
         first_acknowledged_at = (SELECT min(at) FROM surveillance_acknowledgements a WHERE a.detection_id = d.id), \
         revision = $2 WHERE id = $1",
    )
    .bind(id)
    .bind(revision)
    .execute(tx)
    .await
}

#[async_trait]
impl Projection for DetectionsProjection {
    fn name(&self) -> &'static str {
        DETECTIONS
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "surveillance_detections",
            "surveillance_acknowledgements",
            "detection_counts",
        ]
    }

    fn categories(&self) -> Option<&'static [&'static str]> {
        Some(&[Detection::CATEGORY])
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM surveillance_acknowledgements")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM surveillance_detections")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM detection_counts")
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.stream.category() != Detection::CATEGORY {
            return Ok(());
        }
        let revision = event.revision as i64;
        use DetectionEvent as E;
        let (id, updated) = match DetectionEvent::decode_stored(
            &event.event_type,
            &event.metadata,
            &event.data,
        )? {
            E::DetectionRecorded {
                detection_id,
                org_id,
                camera_id,
                detection_type,
                severity,
                confidence,
                bbox,
                snapshot,
                description,
                source,
                occurred_at,
            } => {
                let inserted = sqlx::query(
                    "INSERT INTO surveillance_detections (id, org_id, camera_id, detection_type, \
                     severity, confidence, bbox, snapshot_id, description, source, occurred_at, \
                     notes, acknowledged, revision) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, '', false, $12) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(detection_id)
                .bind(org_id)
                .bind(camera_id)
                .bind(detection_type.as_str())
                .bind(severity.as_str())
                .bind(confidence.get())
                .bind(bbox.map(|b| json(&b)).transpose()?)
                .bind(snapshot.map(|s| s.id))
                .bind(description)
                .bind(json(&source)?)
                .bind(occurred_at)
                .bind(revision)
                .execute(&mut *tx)
                .await?;
                // A detection recorded again (the same id) counts once.
                if inserted.rows_affected() == 1 {
                    DETECTION_COUNTS.add_one(&mut *tx, &[org_id]).await?;
                }
                (detection_id, inserted)
            }
            E::DetectionAnnotated {
                detection_id,
                notes,
                ..
            } => (
                detection_id,
                sqlx::query(
                    "UPDATE surveillance_detections SET notes = $2, revision = $3 WHERE id = $1",
                )
                .bind(detection_id)
                .bind(notes)
                .bind(revision)
                .execute(&mut *tx)
                .await?,
            ),
            E::DetectionAcknowledged {
                detection_id,
                by,
                at,
            } => {
                sqlx::query(
                    "INSERT INTO surveillance_acknowledgements (detection_id, org_id, user_id, at) \
                     SELECT id, org_id, $2, $3 FROM surveillance_detections WHERE id = $1 \
                     ON CONFLICT DO NOTHING",
                )
                .bind(detection_id)
                .bind(by)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                (
                    detection_id,
                    refresh_acknowledged(&mut *tx, detection_id, revision).await?,
                )
            }
            E::DetectionAcknowledgementWithdrawn {
                detection_id, by, ..
            } => {
                sqlx::query(
                    "DELETE FROM surveillance_acknowledgements WHERE detection_id = $1 AND user_id = $2",
                )
                .bind(detection_id)
                .bind(by)
                .execute(&mut *tx)
                .await?;
                (
                    detection_id,
                    refresh_acknowledged(&mut *tx, detection_id, revision).await?,
                )
            }
            E::DetectionDeleted { detection_id, .. } => {
                sqlx::query("DELETE FROM surveillance_acknowledgements WHERE detection_id = $1")
                    .bind(detection_id)
                    .execute(&mut *tx)
                    .await?;
                (
                    detection_id,
                    DETECTION_COUNTS
                        .delete_one(&mut *tx, "surveillance_detections", detection_id)
                        .await?,
                )
            }
        };
        if updated.rows_affected() != 1 && event.revision > 0 {
            return Err(ProjectionError::Invalid(format!(
                "detection {id} is not in the read model"
            )));
        }
        Ok(())
    }
}

/// A detection as lists show it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DetectionRow {
    /// Its id.
    pub id: Uuid,
    /// The camera.
    pub camera_id: Uuid,
    /// What was seen.
    pub detection_type: String,
    /// How serious.
    pub severity: String,
    /// How sure.
    pub confidence: f64,
    /// Where.
    pub bbox: Option<serde_json::Value>,
    /// The snapshot, if any.
    pub snapshot_id: Option<Uuid>,
    /// What the detector said.
    pub description: String,
    /// Who reported it.
    pub source: serde_json::Value,
    /// When it was seen.
    pub occurred_at: DateTime<Utc>,
    /// Notes.
    pub notes: String,
    /// Whether anyone acknowledged it.
    pub acknowledged: bool,
    /// When it was first acknowledged.
    pub first_acknowledged_at: Option<DateTime<Utc>>,
    /// Its revision.
    pub revision: i64,
}

/// One acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AcknowledgementRow {
    /// The detection.
    pub detection_id: Uuid,
    /// Who.
    pub user_id: Uuid,
    /// When.
    pub at: DateTime<Utc>,
}

const COLUMNS: &str = "id, camera_id, detection_type, severity, confidence, bbox, snapshot_id, \
     description, source, occurred_at, notes, acknowledged, first_acknowledged_at, revision";

/// What a detection list is filtered by (Sentinel's `EventFilters`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectionFilter {
    /// One camera.
    pub camera_id: Option<Uuid>,
    /// These types.
    pub types: Vec<DetectionType>,
    /// These severities.
    pub severities: Vec<Severity>,
    /// Acknowledged or not.
    pub acknowledged: Option<bool>,
    /// Seen at or after.
    pub since: Option<DateTime<Utc>>,
    /// Seen before.
    pub until: Option<DateTime<Utc>>,
    /// At least this confident.
    pub min_confidence: Option<f64>,
}

const WHERE: &str = "WHERE org_id = $1 AND ($2::uuid IS NULL OR camera_id = $2) \
     AND (cardinality($3::text[]) = 0 OR detection_type = ANY($3)) \
     AND (cardinality($4::text[]) = 0 OR severity = ANY($4)) \
     AND ($5::boolean IS NULL OR acknowledged = $5) \
     AND ($6::timestamptz IS NULL OR occurred_at >= $6) \
     AND ($7::timestamptz IS NULL OR occurred_at < $7) \
     AND ($8::float8 IS NULL OR confidence >= $8)";

impl DetectionFilter {
    /// Whether it keeps every detection.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Detections are listed newest first; `surveillance_detections_org_time` on `(org_id,
/// occurred_at DESC, id DESC)` serves the list without filters and with `since`/`until`,
/// `surveillance_detections_org_camera` one camera's, `surveillance_detections_unacknowledged`
/// those nobody acknowledged.
pub const DETECTION_SORTS: Sorts = Sorts {
    all: &[Sort::by_time("-occurred_at", "occurred_at")],
    default: Sort::by_time("-occurred_at", "occurred_at"),
};

/// A page of an organization's detections, newest first, by number or after a keyset. Without
/// a filter the total is the organization's, kept by the projection (`detection_counts`); with
/// one, counted up to [`crate::sql::COUNT_CAP`].
pub async fn list_detections(
    pool: &PgPool,
    org_id: Uuid,
    filter: &DetectionFilter,
    paging: &Paging,
) -> Result<ListPage<DetectionRow>, sqlx::Error> {
    let mut matching = Matching::new("surveillance_detections");
    let org = matching.and_eq("org_id", org_id);
    if let Some(camera_id) = filter.camera_id {
        matching.and_eq("camera_id", camera_id);
    }
    if !filter.types.is_empty() {
        let types: Vec<&str> = filter.types.iter().map(|t| t.as_str()).collect();
        let types = matching.param(types);
        matching.and(format!("detection_type = ANY({types})"));
    }
    if !filter.severities.is_empty() {
        let severities: Vec<&str> = filter.severities.iter().map(|s| s.as_str()).collect();
        let severities = matching.param(severities);
        matching.and(format!("severity = ANY({severities})"));
    }
    if let Some(acknowledged) = filter.acknowledged {
        // Written out, so that the partial index of the unacknowledged ones applies.
        matching.and(if acknowledged {
            "acknowledged"
        } else {
            "NOT acknowledged"
        });
    }
    if let Some(since) = filter.since {
        let since = matching.param(since);
        matching.and(format!("occurred_at >= {since}"));
    }
    if let Some(until) = filter.until {
        let until = matching.param(until);
        matching.and(format!("occurred_at < {until}"));
    }
    if let Some(min_confidence) = filter.min_confidence {
        let min_confidence = matching.param(min_confidence);
        matching.and(format!("confidence >= {min_confidence}"));
    }
    let counting = if filter.is_empty() {
        DETECTION_COUNTS.counting(&[&org])
    } else {
        Counting::Bounded
    };
    list_page(pool, COLUMNS, matching, paging, &counting).await
}

/// One detection of an organization.
pub async fn get_detection(
    pool: &PgPool,
    org_id: Uuid,
    id: Uuid,
) -> Result<Option<DetectionRow>, sqlx::Error> {
    sqlx::query_as::<_, DetectionRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM surveillance_detections WHERE org_id = $1 AND id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The standing acknowledgements of these detections of an organization, in order.
pub async fn acknowledgements(
    pool: &PgPool,
    org_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<AcknowledgementRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT detection_id, user_id, at FROM surveillance_acknowledgements \
         WHERE org_id = $1 AND detection_id = ANY($2) ORDER BY at, user_id",
    )
    .bind(org_id)
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// Statistics over an organization's detections (Sentinel's `EventStatsResponse`, with the
/// time to acknowledge).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionStats {
    /// Detections in all.
    pub total: u64,
    /// Not acknowledged by anyone.
    pub unacknowledged: u64,
    /// By type.
    pub by_type: std::collections::BTreeMap<String, u64>,
    /// By severity (every severity present).
    pub by_severity: std::collections::BTreeMap<String, u64>,
    /// By camera id.
    pub by_camera: std::collections::BTreeMap<Uuid, u64>,
    /// Per hour over the last 24 hours, oldest first (24 entries, 0 when none).
    pub per_hour: Vec<HourCount>,
    /// Seconds from a detection to its first acknowledgement, over acknowledged ones.
    pub time_to_acknowledge: TimeToAcknowledge,
}

/// Detections in one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourCount {
    /// The hour's start.
    pub hour: DateTime<Utc>,
    /// Detections in it.
    pub count: u64,
}

/// Time to acknowledge, in seconds (`None` when nothing was acknowledged).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeToAcknowledge {
    /// Detections acknowledged.
    pub acknowledged: u64,
    /// Mean.
    pub mean_seconds: Option<f64>,
    /// Median.
    pub median_seconds: Option<f64>,
    /// 90th percentile.
    pub p90_seconds: Option<f64>,
}

/// Statistics over an organization's detections matching `filter`, the hours counted back
/// from `now`.
pub async fn detection_stats(
    pool: &PgPool,
    org_id: Uuid,
    filter: &DetectionFilter,
    now: DateTime<Utc>,
) -> Result<DetectionStats, sqlx::Error> {
    let types: Vec<&str> = filter.types.iter().map(|t| t.as_str()).collect();
    let severities: Vec<&str> = filter.severities.iter().map(|s| s.as_str()).collect();
    macro_rules! bind_filter {
        ($q:expr) => {
            $q.bind(org_id)
                .bind(filter.camera_id)
                .bind(&types)
                .bind(&severities)
                .bind(filter.acknowledged)
                .bind(filter.since)
                .bind(filter.until)
                .bind(filter.min_confidence)
        };
    }
    let groups: Vec<(String, String, Uuid, bool, i64)> =
        bind_filter!(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT detection_type, severity, camera_id, acknowledged, count(*) \
             FROM surveillance_detections {WHERE} \
             GROUP BY detection_type, severity, camera_id, acknowledged"
        ))))
        .fetch_all(pool)
        .await?;
    let mut stats = DetectionStats {
        total: 0,
        unacknowledged: 0,
        by_type: Default::default(),
        by_severity: Severity::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), 0))
            .collect(),
        by_camera: Default::default(),
        per_hour: Vec::new(),
        time_to_acknowledge: TimeToAcknowledge {
            acknowledged: 0,
            mean_seconds: None,
            median_seconds: None,
            p90_seconds: None,
        },
    };
    for (kind, severity, camera, acknowledged, n) in groups {
        let n = n as u64;
        stats.total += n;
        if !acknowledged {
            stats.unacknowledged += n;
        }
        *stats.by_type.entry(kind).or_default() += n;
        *stats.by_severity.entry(severity).or_default() += n;
        *stats.by_camera.entry(camera).or_default() += n;
    }
    let hours: Vec<(DateTime<Utc>, i64)> =
        bind_filter!(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT h.hour, count(d.id) FROM generate_series( \
               date_trunc('hour', $9::timestamptz) - interval '23 hours', \
               date_trunc('hour', $9::timestamptz), interval '1 hour') AS h(hour) \
             LEFT JOIN (SELECT id, occurred_at FROM surveillance_detections {WHERE}) d \
               ON d.occurred_at >= h.hour AND d.occurred_at < h.hour + interval '1 hour' \
             GROUP BY h.hour ORDER BY h.hour"
        ))))
        .bind(now)
        .fetch_all(pool)
        .await?;
    stats.per_hour = hours
        .into_iter()
        .map(|(hour, count)| HourCount {
            hour,
            count: count as u64,
        })
        .collect();
    let (acknowledged, mean, median, p90): (i64, Option<f64>, Option<f64>, Option<f64>) =
        bind_filter!(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), avg(s), percentile_cont(0.5) WITHIN GROUP (ORDER BY s), \
             percentile_cont(0.9) WITHIN GROUP (ORDER BY s) FROM ( \
               SELECT extract(epoch FROM first_acknowledged_at - occurred_at)::float8 AS s \
               FROM surveillance_detections {WHERE} AND first_acknowledged_at IS NOT NULL) t"
        ))))
        .fetch_one(pool)
        .await?;
    stats.time_to_acknowledge = TimeToAcknowledge {
        acknowledged: acknowledged as u64,
        mean_seconds: mean,
        median_seconds: median,
        p90_seconds: p90,
    };
    Ok(stats)
}

/// An organization's detections since `since`, by severity (every severity present), and how
/// many are not acknowledged at all.
pub async fn dashboard_counts(
    pool: &PgPool,
    org_id: Uuid,
    since: DateTime<Utc>,
) -> Result<(Vec<(String, u64)>, u64), sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT severity, count(*) FROM surveillance_detections \
         WHERE org_id = $1 AND occurred_at >= $2 GROUP BY severity",
    )
    .bind(org_id)
    .bind(since)
    .fetch_all(pool)
    .await?;
    let unacknowledged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM surveillance_detections WHERE org_id = $1 AND NOT acknowledged",
    )
    .bind(org_id)
    .fetch_one(pool)
    .await?;
    Ok((
        Severity::ALL
            .iter()
            .map(|s| {
                let n = rows
                    .iter()
                    .find(|(r, _)| r == s.as_str())
                    .map_or(0, |(_, n)| *n);
                (s.as_str().to_owned(), n as u64)
            })
            .collect(),
        unacknowledged as u64,
    ))
}
