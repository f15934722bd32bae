//! Rebuilding a read model beside the old one, and verifying one against the log.
//!
//! A rebuild never empties what readers see. The new generation is built in a shadow schema
//! (`atelier_shadow_<name>`): one `CREATE TABLE shadow.t (LIKE public.t INCLUDING ALL)` per
//! table the projection owns ([`Projection::tables`]), then the log read from the start in
//! batches, each applied in a transaction with `SET LOCAL search_path = <shadow>, public` (the
//! projections' SQL names tables unqualified, so owned tables resolve to the shadow ones and
//! everything else to the live ones). No checkpoint row is touched while building.
//!
//! The swap is one transaction: it locks the projection's checkpoint row (the live runner's
//! batch starts with an `UPDATE` of that row, so it waits), reads the live checkpoint, applies
//! to the shadow whatever lies between the shadow's position and it (the read model never goes
//! back in time), then per owned table `DELETE FROM public.t` and copies the shadow's rows in.
//! Under MVCC readers keep seeing the old rows until the commit and the new ones after: never
//! blocked, never an empty or half-built list. The checkpoint moves to the shadow's position
//! with `generation + 1`, which fences the live runner's next batch: it restarts from the new
//! checkpoint. The shadow schema is dropped afterwards.
//!
//! Costs: like any write transaction, the swap holds the log's readable end back while it runs
//! (readers of `$all` stop below the oldest open transaction), so it lasts as long as copying the
//! read model's rows takes; so does a verification's comparison. A projection whose `apply`
//! reads tables it does not own reads the live ones while building.
//!
//! [`verify`] builds the same shadow (in `atelier_verify_<name>`) up to the live checkpoint,
//! catches it up exactly to the checkpoint while holding the row lock, compares each owned table
//! both ways (`EXCEPT ALL`) and rolls back.
//!
//! One process at a time rebuilds (or verifies) a projection: [`SchemaLock`] is a session
//! advisory lock on a connection of its own, which also runs the build's transactions; it is
//! released when the connection closes, even if the process dies.

use std::fmt::Write as _;

use atelier_store::{EventStore, Position, StoreError};
use serde::Serialize;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use tracing::info;

use crate::runtime::{MAX_BATCH, Projection};

/// The most differing rows a verification reports per table and side.
pub const MAX_REPORTED_ROWS: usize = 20;

/// Why a rebuild or a verification could not complete.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// No projection has this name.
    #[error("no projection is named {0}")]
    Unknown(String),
    /// A rebuild (or verification) of this projection is already running, here or in another
    /// process.
    #[error("projection {0} is already being rebuilt")]
    Busy(String),
    /// A table name a projection declares cannot be used as an identifier.
    #[error("projection {projection} declares an invalid table name {table:?}")]
    InvalidTable {
        /// The projection.
        projection: String,
        /// The name.
        table: String,
    },
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event could not be applied to the new generation.
    #[error("{event_type} at {stream} ({at}): {error}")]
    Apply {
        /// The event's position.
        at: Position,
        /// Its type.
        event_type: String,
        /// Its stream.
        stream: String,
        /// What went wrong.
        error: String,
    },
    /// The live checkpoint went back in time while verifying (it was reset meanwhile).
    #[error("the checkpoint of {0} went back while it was verified; run again")]
    CheckpointMovedBack(String),
}

/// How far a build has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BuildProgress {
    /// Every event up to here is applied to the new generation.
    pub position: Position,
    /// Events of the log read so far.
    pub events: u64,
}

/// What a rebuild swapped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Swapped {
    /// The checkpoint's new generation.
    pub generation: i64,
    /// The checkpoint's new position.
    pub position: Position,
}

/// Which operation a scratch schema serves: its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A rebuild's shadow, swapped in at the end.
    Rebuild,
    /// A verification's scratch copy, compared then dropped.
    Verify,
}

/// The scratch schema of `projection` for this purpose: `atelier_shadow_factory_projects`.
pub fn schema_name(purpose: Purpose, projection: &str) -> String {
    let prefix = match purpose {
        Purpose::Rebuild => "atelier_shadow_",
        Purpose::Verify => "atelier_verify_",
    };
    let suffix: String = projection
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}{suffix}")
}

/// A connection of its own holding the advisory lock of one scratch schema: whoever holds it
/// alone builds into that schema. The connection runs the build's transactions too.
pub struct SchemaLock {
    conn: PgConnection,
    schema: String,
}

impl SchemaLock {
    /// Takes the lock of the scratch schema for `purpose` and `projection`, if nobody holds it
    /// (`None` otherwise). The connection leaves the pool (it does not count against it).
    pub async fn try_acquire(
        pool: &PgPool,
        purpose: Purpose,
        projection: &str,
    ) -> Result<Option<Self>, sqlx::Error> {
        let schema = schema_name(purpose, projection);
        let mut conn = pool.acquire().await?.detach();
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(&schema)
                .fetch_one(&mut conn)
                .await?;
        if !locked {
            conn.close().await.ok();
            return Ok(None);
        }
        Ok(Some(Self { conn, schema }))
    }

    /// The schema it guards.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Releases the lock (closing the connection releases it too).
    pub async fn release(self) {
        // Closing the session ends every lock it holds.
        self.conn.close().await.ok();
    }
}

/// One table a projection owns, as the copy needs it.
#[derive(Debug, Clone)]
struct Table {
    name: &'static str,
    /// Every column but the generated ones, quoted, comma-separated.
    columns: String,
    /// Its identity columns (`GENERATED … AS IDENTITY`).
    identity: Vec<String>,
    /// Whether a column is `GENERATED ALWAYS AS IDENTITY` (the copy needs `OVERRIDING SYSTEM
    /// VALUE`).
    identity_always: bool,
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn valid_table(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A new generation of one projection's read model, being built in a scratch schema.
pub struct Shadow<'p> {
    projection: &'p dyn Projection,
    schema: String,
    tables: Vec<Table>,
    position: Position,
    events: u64,
}

impl<'p> Shadow<'p> {
    /// Creates the scratch schema (dropping one left over by an interrupted run) with an empty
    /// copy of each table the projection owns.
    pub async fn create(
        lock: &mut SchemaLock,
        projection: &'p dyn Projection,
    ) -> Result<Shadow<'p>, RebuildError> {
        let schema = lock.schema.clone();
        let conn = &mut lock.conn;
        let mut tx = conn.begin().await?;
        sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote(&schema)
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {}", quote(&schema))))
            .execute(&mut *tx)
            .await?;
        let mut tables = Vec::new();
        for &name in projection.tables() {
            if !valid_table(name) {
                return Err(RebuildError::InvalidTable {
                    projection: projection.name().to_owned(),
                    table: name.to_owned(),
                });
            }
            sqlx::query(AssertSqlSafe(format!(
                "CREATE TABLE {}.{t} (LIKE public.{t} INCLUDING ALL)",
                quote(&schema),
                t = quote(name)
            )))
            .execute(&mut *tx)
            .await?;
            let columns: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT a.attname::text, a.attidentity::text, a.attgenerated::text \
                 FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 \
                 AND NOT a.attisdropped ORDER BY a.attnum",
            )
            .bind(format!("public.{}", quote(name)))
            .fetch_all(&mut *tx)
            .await?;
            let copied: Vec<String> = columns
                .iter()
                .filter(|(_, _, generated)| generated.is_empty())
                .map(|(c, _, _)| quote(c))
                .collect();
            tables.push(Table {
                name,
                columns: copied.join(", "),
                identity: columns
                    .iter()
                    .filter(|(_, identity, _)| !identity.is_empty())
                    .map(|(c, _, _)| c.clone())
                    .collect(),
                identity_always: columns.iter().any(|(_, identity, _)| identity == "a"),
            });
        }
        tx.commit().await?;
        Ok(Shadow {
            projection,
            schema,
            tables,
            position: Position::START,
            events: 0,
        })
    }

    /// Where the new generation is: every event up to here is applied.
    pub fn position(&self) -> Position {
        self.position
    }

    /// Applies the log from the shadow's position, one transaction per batch, until the log's
    /// readable end or `until` (exactly: nothing after it), reporting each batch.
    pub async fn build(
        &mut self,
        lock: &mut SchemaLock,
        store: &dyn EventStore,
        until: Option<Position>,
        progress: &(dyn Fn(BuildProgress) + Send + Sync),
    ) -> Result<(), RebuildError> {
        loop {
            let mut tx = lock.conn.begin().await?;
            let more = self.apply_next(&mut tx, store, until).await?;
            tx.commit().await?;
            progress(BuildProgress {
                position: self.position,
                events: self.events,
            });
            if !more {
                return Ok(());
            }
        }
    }

    /// Applies the log from the shadow's position up to `until` exactly, inside `tx`.
    async fn catch_up_in(
        &mut self,
        tx: &mut PgConnection,
        store: &dyn EventStore,
        until: Position,
    ) -> Result<(), RebuildError> {
        while self.apply_next(tx, store, Some(until)).await? {}
        Ok(())
    }

    /// Applies the next batch of the log inside `tx`; whether there may be more.
    async fn apply_next(
        &mut self,
        tx: &mut PgConnection,
        store: &dyn EventStore,
        until: Option<Position>,
    ) -> Result<bool, RebuildError> {
        if until.is_some_and(|u| self.position >= u) {
            return Ok(false);
        }
        let slice = store
            .read_all(
                self.position,
                MAX_BATCH,
                &crate::runtime::filter_of(self.projection),
            )
            .await?;
        if slice.scanned == 0 {
            // The readable end of the log. A checkpoint the live runner reached lies at or
            // before it, so nothing between here and `until` remains to apply.
            if let Some(u) = until {
                self.position = self.position.max(u);
            }
            return Ok(false);
        }
        sqlx::query(AssertSqlSafe(format!(
            "SET LOCAL search_path = {}, public",
            quote(&self.schema)
        )))
        .execute(&mut *tx)
        .await?;
        let mut reached = slice.next;
        let mut more = true;
        if let Some(u) = until
            && reached >= u
        {
            reached = u;
            more = false;
        }
        for event in slice.events.iter().filter(|e| e.position <= reached) {
            if let Err(e) = self.projection.apply(&mut *tx, event).await {
                return Err(RebuildError::Apply {
                    at: event.position,
                    event_type: event.event_type.clone(),
                    stream: event.stream.to_string(),
                    error: e.to_string(),
                });
            }
        }
        self.events += slice.scanned as u64;
        self.position = reached;
        sqlx::query("SET LOCAL search_path = public")
            .execute(&mut *tx)
            .await?;
        Ok(more)
    }

    /// Swaps the new generation in (see the module's documentation); drops the shadow.
    pub async fn swap(
        mut self,
        lock: &mut SchemaLock,
        store: &dyn EventStore,
    ) -> Result<Swapped, RebuildError> {
        let name = self.projection.name();
        ensure_checkpoint(&mut lock.conn, self.projection).await?;
        let mut tx = lock.conn.begin().await?;
        let live = locked_checkpoint(&mut tx, name).await?;
        if self.position < live {
            self.catch_up_in(&mut tx, store, live).await?;
        }
        for table in &self.tables {
            let target = format!("public.{}", quote(table.name));
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {target}")))
                .execute(&mut *tx)
                .await?;
            let overriding = if table.identity_always {
                " OVERRIDING SYSTEM VALUE"
            } else {
                ""
            };
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {target} ({cols}){overriding} SELECT {cols} FROM {}.{}",
                quote(&self.schema),
                quote(table.name),
                cols = table.columns,
            )))
            .execute(&mut *tx)
            .await?;
            // Identity sequences continue after the copied values.
            for column in &table.identity {
                let c = quote(column);
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT setval(s, m) FROM (SELECT pg_get_serial_sequence($1, $2)::regclass s, \
                     (SELECT max({c}) FROM {target}) m) x \
                     WHERE m IS NOT NULL AND m > coalesce(pg_sequence_last_value(s), 0)"
                )))
                .bind(&target)
                .bind(column)
                .execute(&mut *tx)
                .await?;
            }
        }
        let generation: i64 = sqlx::query_scalar(
            "UPDATE public.projection_checkpoints SET version = $2, generation = generation + 1, \
             commit = $3, prepare = $4, status = 'running', error = NULL, failed_commit = NULL, \
             failed_prepare = NULL, updated_at = now() WHERE name = $1 RETURNING generation",
        )
        .bind(name)
        .bind(self.projection.version())
        .bind(self.position.commit as i64)
        .bind(self.position.prepare as i64)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let swapped = Swapped {
            generation,
            position: self.position,
        };
        self.drop_schema(lock).await?;
        info!(projection = name, position = %swapped.position, generation, "new generation of the read model swapped in");
        Ok(swapped)
    }

    /// Drops the scratch schema.
    pub async fn drop_schema(self, lock: &mut SchemaLock) -> Result<(), RebuildError> {
        sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote(&self.schema)
        )))
        .execute(&mut lock.conn)
        .await?;
        Ok(())
    }
}

/// Creates the projection's checkpoint row if it has none yet (a projection never run).
async fn ensure_checkpoint(
    conn: &mut PgConnection,
    projection: &dyn Projection,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO public.projection_checkpoints (name, version) VALUES ($1, $2) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(projection.name())
    .bind(projection.version())
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks the checkpoint row (the live runner waits) and reads its position.
async fn locked_checkpoint(tx: &mut PgConnection, name: &str) -> Result<Position, sqlx::Error> {
    let (c, p): (i64, i64) = sqlx::query_as(
        "SELECT commit, prepare FROM public.projection_checkpoints WHERE name = $1 FOR UPDATE",
    )
    .bind(name)
    .fetch_one(tx)
    .await?;
    Ok(Position::new(c as u64, p as u64))
}

/// Rebuilds `projection` beside its read model and swaps the new generation in, holding
/// `lock` (see [`SchemaLock::try_acquire`] with [`Purpose::Rebuild`]). A failure leaves the old
/// read model serving (the shadow is dropped).
pub async fn rebuild(
    lock: &mut SchemaLock,
    projection: &dyn Projection,
    store: &dyn EventStore,
    progress: &(dyn Fn(BuildProgress) + Send + Sync),
) -> Result<Swapped, RebuildError> {
    info!(
        projection = projection.name(),
        schema = lock.schema(),
        "rebuilding the read model beside the old one"
    );
    let mut shadow = Shadow::create(lock, projection).await?;
    let built = shadow.build(lock, store, None, progress).await;
    match built {
        Ok(()) => {}
        Err(e) => {
            shadow.drop_schema(lock).await.ok();
            return Err(e);
        }
    }
    // The swap's transaction rolls back on failure; the schema goes either way.
    let schema = lock.schema.clone();
    match shadow.swap(lock, store).await {
        Ok(s) => Ok(s),
        Err(e) => {
            sqlx::query(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote(&schema)
            )))
            .execute(&mut lock.conn)
            .await
            .ok();
            Err(e)
        }
    }
}

/// Rebuilds `projection` beside its read model, in this process, taking the lock first.
pub async fn rebuild_projection(
    pool: &PgPool,
    store: &dyn EventStore,
    projection: &dyn Projection,
    progress: &(dyn Fn(BuildProgress) + Send + Sync),
) -> Result<Swapped, RebuildError> {
    let mut lock = SchemaLock::try_acquire(pool, Purpose::Rebuild, projection.name())
        .await?
        .ok_or_else(|| RebuildError::Busy(projection.name().to_owned()))?;
    let result = rebuild(&mut lock, projection, store, progress).await;
    lock.release().await;
    result
}

/// The rows of one table that differ between the live read model and the rebuilt one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableDiff {
    /// The table.
    pub table: String,
    /// How many rows only the live read model has.
    pub only_live_count: u64,
    /// Some of them (at most [`MAX_REPORTED_ROWS`]), as JSON.
    pub only_live: Vec<String>,
    /// How many rows only the rebuilt one has.
    pub only_rebuilt_count: u64,
    /// Some of them (at most [`MAX_REPORTED_ROWS`]), as JSON.
    pub only_rebuilt: Vec<String>,
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// The projection.
    pub projection: String,
    /// The position both were compared at.
    pub position: Position,
    /// The checkpoint's status (`running`, `failed`).
    pub status: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The tables that differ (none: the read model is what the log says).
    pub differences: Vec<TableDiff>,
}

impl Verification {
    /// Whether the read model matches the log and the projection has not failed.
    pub fn is_ok(&self) -> bool {
        self.differences.is_empty() && self.status != "failed"
    }
}

/// Rebuilds `projection` into a scratch schema and compares it row by row with the live read
/// model at the same position (the live checkpoint, held still by its row lock while
/// comparing); changes nothing.
pub async fn verify(
    pool: &PgPool,
    store: &dyn EventStore,
    projection: &dyn Projection,
    progress: &(dyn Fn(BuildProgress) + Send + Sync),
) -> Result<Verification, RebuildError> {
    let mut lock = SchemaLock::try_acquire(pool, Purpose::Verify, projection.name())
        .await?
        .ok_or_else(|| RebuildError::Busy(projection.name().to_owned()))?;
    let result = verify_locked(&mut lock, store, projection, progress).await;
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        quote(lock.schema())
    )))
    .execute(&mut lock.conn)
    .await
    .ok();
    lock.release().await;
    result
}

async fn verify_locked(
    lock: &mut SchemaLock,
    store: &dyn EventStore,
    projection: &dyn Projection,
    progress: &(dyn Fn(BuildProgress) + Send + Sync),
) -> Result<Verification, RebuildError> {
    let name = projection.name();
    ensure_checkpoint(&mut lock.conn, projection).await?;
    let (c, p): (i64, i64) =
        sqlx::query_as("SELECT commit, prepare FROM public.projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_one(&mut lock.conn)
            .await?;
    let target = Position::new(c as u64, p as u64);
    let mut shadow = Shadow::create(lock, projection).await?;
    shadow.build(lock, store, Some(target), progress).await?;
    let schema = shadow.schema.clone();
    let tables = shadow.tables.clone();
    let conn = &mut lock.conn;
    let mut tx = conn.begin().await?;
    let live = locked_checkpoint(&mut tx, name).await?;
    if shadow.position > live {
        return Err(RebuildError::CheckpointMovedBack(name.to_owned()));
    }
    shadow.catch_up_in(&mut tx, store, live).await?;
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM public.projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
    let mut differences = Vec::new();
    for table in &tables {
        let live_t = format!("public.{}", quote(table.name));
        let rebuilt_t = format!("{}.{}", quote(&schema), quote(table.name));
        let (only_live_count, only_live) = except(&mut tx, &live_t, &rebuilt_t).await?;
        let (only_rebuilt_count, only_rebuilt) = except(&mut tx, &rebuilt_t, &live_t).await?;
        if only_live_count > 0 || only_rebuilt_count > 0 {
            differences.push(TableDiff {
                table: table.name.to_owned(),
                only_live_count,
                only_live,
                only_rebuilt_count,
                only_rebuilt,
            });
        }
    }
    tx.rollback().await?;
    Ok(Verification {
        projection: name.to_owned(),
        position: live,
        status,
        error,
        differences,
    })
}

/// The rows of `a` not in `b` (as many times as they are missing): how many, and the first
/// [`MAX_REPORTED_ROWS`] as JSON.
async fn except(
    tx: &mut PgConnection,
    a: &str,
    b: &str,
) -> Result<(u64, Vec<String>), sqlx::Error> {
    let mut sql = String::new();
    // Rows as jsonb: every column type compares, and the report shows each row whole.
    let _ = write!(
        sql,
        "SELECT count(*) OVER (), r::text FROM (SELECT to_jsonb(x) r FROM {a} x \
         EXCEPT ALL SELECT to_jsonb(y) FROM {b} y) d ORDER BY r::text LIMIT {MAX_REPORTED_ROWS}"
    );
    let rows: Vec<(i64, String)> = sqlx::query_as(AssertSqlSafe(sql)).fetch_all(tx).await?;
    let count = rows.first().map_or(0, |(n, _)| *n as u64);
    Ok((count, rows.into_iter().map(|(_, r)| r).collect()))
}
