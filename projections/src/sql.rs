//! What every context's read models and queries share: search patterns, and what a list needs
//! so that its cost does not grow with its table: keyset pages, bounded (or kept) counts, and
//! a statement built per request from the filters it has ([`Matching`], [`list_page`]).

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Arguments, FromRow, PgPool, Postgres, Row};
use uuid::Uuid;

/// A `LIKE`/`ILIKE` pattern matching `search` anywhere, with its wildcards escaped.
pub fn like_pattern(search: &str) -> String {
    let escaped = search
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// Past this many matching rows a list's `total` stops counting: counting reads every row it
/// counts, so an exact total of 10⁶ rows costs as much as reading them. A UI shows "10,000+".
pub const COUNT_CAP: u64 = 10_000;

/// A list's total: exact, or (`capped`) a lower bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Total {
    /// Rows counted.
    pub count: u64,
    /// Whether counting stopped before the end: more rows than `count` may match.
    pub capped: bool,
}

impl Total {
    /// Most rows the count of a page at `offset` (`None`: a keyset page) reads: [`COUNT_CAP`],
    /// or through the row after the page when that is further, so that a page-numbered page
    /// always knows its own place (the OFFSET reads those rows anyway).
    pub fn limit(offset: Option<u64>, per_page: u32) -> u64 {
        match offset {
            Some(offset) => COUNT_CAP.max(offset + u64::from(per_page) + 1),
            None => COUNT_CAP,
        }
    }

    /// The total a page already tells without counting: a page at `offset` that holds
    /// `fetched` rows and no next one ends the list, unless it is past the end (empty but not
    /// first), which says nothing of where the end is.
    pub fn from_page(offset: Option<u64>, fetched: usize, has_next: bool) -> Option<Self> {
        let offset = offset?;
        (!has_next && (fetched > 0 || offset == 0)).then_some(Self {
            count: offset + fetched as u64,
            capped: false,
        })
    }

    /// A total known exactly (kept, not counted).
    pub fn exact(count: i64) -> Self {
        Self {
            count: count.max(0) as u64,
            capped: false,
        }
    }

    /// The total from a count that read at most `limit` rows.
    pub fn counted(count: i64, limit: u64) -> Self {
        let count = count.max(0) as u64;
        Self {
            count,
            capped: count >= limit,
        }
    }
}

/// `SELECT count(*)` of at most `$limit_param` rows of `rows` (a `SELECT 1 FROM … WHERE …`
/// without ORDER BY): its cost is bounded by the limit, not by the table.
pub fn bounded_count(rows: &str, limit_param: usize) -> String {
    format!("SELECT count(*) FROM ({rows} LIMIT ${limit_param}) AS bounded")
}

/// The value of a list's sort key at a row: what a keyset page starts after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortValue {
    /// A text key (a name's sort key).
    Text(String),
    /// A time.
    Time(DateTime<Utc>),
}

impl SortValue {
    /// Its text form, in a cursor.
    pub fn to_text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Time(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }
    }

    /// Reads the text form back, as a time when `time`.
    pub fn from_text(s: &str, time: bool) -> Option<Self> {
        if time {
            DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| Self::Time(t.with_timezone(&Utc)))
        } else {
            Some(Self::Text(s.to_owned()))
        }
    }
}

/// Where a keyset page starts: after the row with this sort key and id (the id breaks ties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyset {
    /// The sort key of the last row seen.
    pub key: SortValue,
    /// Its id.
    pub id: Uuid,
}

/// The condition that keeps the rows after `($key_param, $key_param + 1)` in the order
/// `column, id` (descending when `descending`): a row comparison that an index on
/// `(org_id, column, id)` answers by seeking, with no OFFSET. The key is cast to `cast`
/// (`text`, `timestamptz`).
pub fn keyset_after(column: &str, cast: &str, descending: bool, key_param: usize) -> String {
    let op = if descending { "<" } else { ">" };
    format!(
        "({column}, id) {op} (${key_param}::{cast}, ${}::uuid)",
        key_param + 1
    )
}

/// One order a list may be sorted in: its name in the API and in cursors (`-queued_at`: a
/// leading `-` is descending), the column it sorts by, then `id`, which breaks ties, and whether
/// that column is a time (else text). A keyset page seeks an index on `(…, column, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    /// Its name (`name`, `-created_at`).
    pub name: &'static str,
    /// The column (`name_key`, `created_at`): from this closed list, never from input.
    pub column: &'static str,
    /// Whether the column is a time (`timestamptz`), else text.
    pub time: bool,
    /// Whether the last come first.
    pub descending: bool,
}

impl Sort {
    /// An order by a time column; descending when `name` starts with `-`.
    pub const fn by_time(name: &'static str, column: &'static str) -> Self {
        Self {
            name,
            column,
            time: true,
            descending: name.as_bytes()[0] == b'-',
        }
    }

    /// An order by a text column (a name's sort key); descending when `name` starts with `-`.
    pub const fn by_text(name: &'static str, column: &'static str) -> Self {
        Self {
            name,
            column,
            time: false,
            descending: name.as_bytes()[0] == b'-',
        }
    }

    /// Its `ORDER BY`.
    pub fn order_by(self) -> String {
        let direction = if self.descending { "DESC" } else { "ASC" };
        format!("{} {direction}, id {direction}", self.column)
    }

    /// The condition that keeps the rows after `($key_param, $key_param + 1)` in this order.
    pub fn after(self, key_param: usize) -> String {
        keyset_after(
            self.column,
            if self.time { "timestamptz" } else { "text" },
            self.descending,
            key_param,
        )
    }
}

/// The orders a list accepts, and the one it has when none is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sorts {
    /// Every one, in the order the API lists them.
    pub all: &'static [Sort],
    /// The one without `sort=`.
    pub default: Sort,
}

impl Sorts {
    /// The order named `name`, if the list has it.
    pub fn parse(&self, name: &str) -> Option<Sort> {
        self.all.iter().copied().find(|s| s.name == name)
    }

    /// The names the API accepts (`name, -name, …`).
    pub fn accepted(&self) -> String {
        self.all
            .iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Which page of a list: by number (OFFSET), or with `after` the rows after a keyset, with no
/// OFFSET; `sort` is the order of both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    /// Page number, from 1 (with `after`, the page the cursor leads to: not used to seek).
    pub page: u32,
    /// Rows per page, 1 to 100.
    pub per_page: u32,
    /// The order.
    pub sort: Sort,
    /// A keyset page: the rows after this one in `sort`.
    pub after: Option<Keyset>,
}

impl Paging {
    /// Rows before the page, for a page by number.
    fn offset(&self) -> Option<u64> {
        self.after
            .is_none()
            .then(|| u64::from(self.page.saturating_sub(1)) * u64::from(self.per_page))
    }
}

/// The rows a list reads, `FROM <table> WHERE …`, with only the conditions its request has, and
/// the values of their parameters (`$1`, `$2`… in the order they are added). One statement per
/// combination rather than `($n IS NULL OR column = $n)` for each filter: PostgreSQL switches a
/// prepared statement to a generic plan after five runs, and the generic plan of such a
/// disjunction estimates one matching row, scans the whole organization and sorts it, where the
/// statement with only its own conditions walks the sort's index.
pub struct Matching {
    table: &'static str,
    conditions: Vec<String>,
    args: PgArguments,
    error: Option<sqlx::error::BoxDynError>,
}

impl Matching {
    /// The rows of `table` (every one, until conditions are added).
    pub fn new(table: &'static str) -> Self {
        Self {
            table,
            conditions: Vec::new(),
            args: PgArguments::default(),
            error: None,
        }
    }

    /// Adds a parameter's value and answers its placeholder (`$3`), to write into a condition.
    pub fn param<'t, T>(&mut self, value: T) -> String
    where
        T: sqlx::Encode<'t, Postgres> + sqlx::Type<Postgres>,
    {
        if let Err(e) = self.args.add(value) {
            self.error.get_or_insert(e);
        }
        format!("${}", self.args.len())
    }

    /// Keeps only the rows where `condition` holds (SQL written by the caller, with the
    /// placeholders [`Matching::param`] answered: never input).
    pub fn and(&mut self, condition: impl Into<String>) -> &mut Self {
        self.conditions.push(condition.into());
        self
    }

    /// Keeps only the rows whose `column` is `value`; answers the value's placeholder.
    pub fn and_eq<'t, T>(&mut self, column: &str, value: T) -> String
    where
        T: sqlx::Encode<'t, Postgres> + sqlx::Type<Postgres>,
    {
        let param = self.param(value);
        self.and(format!("{column} = {param}"));
        param
    }

    /// `FROM <table> WHERE <conditions and extra>`.
    fn rows_sql(&self, extra: Option<&str>) -> String {
        let conditions: Vec<&str> = self
            .conditions
            .iter()
            .map(String::as_str)
            .chain(extra)
            .collect();
        if conditions.is_empty() {
            format!("FROM {}", self.table)
        } else {
            format!("FROM {} WHERE {}", self.table, conditions.join(" AND "))
        }
    }
}

/// Where a list's total comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counting {
    /// Counted, at most [`Total::limit`] rows: a search or filter, whose matches nobody keeps.
    Bounded,
    /// Kept by the list's projection in the same transaction as its rows: exact, one indexed
    /// row whatever the size. A scalar statement over the [`Matching`]'s placeholders
    /// ([`Counting::kept`]).
    Kept(String),
}

impl Counting {
    /// The count kept in `column` of `table`'s row whose `keys` (column, placeholder of a
    /// [`Matching`] parameter) match; 0 without a row.
    pub fn kept(table: &str, column: &str, keys: &[(&str, &str)]) -> Self {
        let keys: Vec<String> = keys.iter().map(|(k, p)| format!("{k} = {p}")).collect();
        Self::Kept(format!(
            "SELECT COALESCE((SELECT {column} FROM {table} WHERE {}), 0)",
            keys.join(" AND ")
        ))
    }
}

/// A count a projection keeps beside its rows, in the same transaction (`project_counts`…):
/// the total a list reads when nothing filters it. One row per value of `keys`, the count in
/// `column`; every name comes from the projection's constant, never from input.
#[derive(Debug, Clone, Copy)]
pub struct KeptCount {
    /// The table (`project_counts`).
    pub table: &'static str,
    /// The count's column (`projects`).
    pub column: &'static str,
    /// The key columns (`org_id`), the same names in the table of the rows counted.
    pub keys: &'static [&'static str],
}

impl KeptCount {
    /// One more for these key values (in the order of `keys`), creating the row at 1.
    pub async fn add_one(
        &self,
        tx: &mut sqlx::PgConnection,
        values: &[Uuid],
    ) -> Result<(), sqlx::Error> {
        debug_assert_eq!(
            values.len(),
            self.keys.len(),
            "one value per key of {}",
            self.table
        );
        let (table, column, keys) = (self.table, self.column, self.keys.join(", "));
        let placeholders: Vec<String> = (1..=values.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {table} ({keys}, {column}) VALUES ({}, 1) \
             ON CONFLICT ({keys}) DO UPDATE SET {column} = {table}.{column} + 1",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for v in values {
            query = query.bind(*v);
        }
        query.execute(tx).await?;
        Ok(())
    }

    /// Deletes the row of `rows` whose `id` is `id` and counts one fewer for its keys: how
    /// many counts moved (0 when the row was not there).
    pub async fn delete_one(
        &self,
        tx: &mut sqlx::PgConnection,
        rows: &'static str,
        id: Uuid,
    ) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
        let (table, column) = (self.table, self.column);
        let joined: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("c.{k} = gone.{k}"))
            .collect();
        let sql = format!(
            "WITH gone AS (DELETE FROM {rows} WHERE id = $1 RETURNING {}) \
             UPDATE {table} c SET {column} = c.{column} - 1 FROM gone WHERE {}",
            self.keys.join(", "),
            joined.join(" AND ")
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .execute(tx)
            .await
    }

    /// The list's total read from it, for the placeholders of a [`Matching`]'s parameters
    /// holding the key values (in the order of `keys`).
    pub fn counting(&self, placeholders: &[&str]) -> Counting {
        let keys: Vec<(&str, &str)> = self
            .keys
            .iter()
            .copied()
            .zip(placeholders.iter().copied())
            .collect();
        Counting::kept(self.table, self.column, &keys)
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage<R> {
    /// Its rows.
    pub rows: Vec<R>,
    /// How many match in all: kept, or counted up to [`COUNT_CAP`] (or through this page).
    pub total: Total,
    /// Whether rows follow.
    pub has_next: bool,
    /// Where the next page starts (when rows follow).
    pub next: Option<Keyset>,
}

/// One page of `columns` of the rows `matching` keeps, by number (OFFSET) or after a keyset
/// (seeking an index on `(…, sort column, id)`), and their total as `counting` says, in one
/// statement: the count rides along as an uncorrelated subquery (an InitPlan, run once), and
/// one row more than the page tells whether another follows. Only a page past the end, which
/// has no row to carry the count, takes a second statement.
pub async fn list_page<R>(
    pool: &PgPool,
    columns: &str,
    matching: Matching,
    paging: &Paging,
    counting: &Counting,
) -> Result<ListPage<R>, sqlx::Error>
where
    R: for<'r> FromRow<'r, PgRow>,
{
    if let Some(e) = matching.error {
        return Err(sqlx::Error::Encode(e));
    }
    let sort = paging.sort;
    let offset = paging.offset();
    let limit = Total::limit(offset, paging.per_page);
    let rows_matching = matching.rows_sql(None);
    let count = |args: &mut PgArguments| -> Result<String, sqlx::Error> {
        Ok(match counting {
            Counting::Bounded => {
                args.add(limit as i64).map_err(sqlx::Error::Encode)?;
                bounded_count(&format!("SELECT 1 {rows_matching}"), args.len())
            }
            Counting::Kept(kept) => kept.clone(),
        })
    };
    let mut args = matching.args.clone();
    let after = match &paging.after {
        Some(keyset) => {
            match &keyset.key {
                SortValue::Text(s) => args.add(s.as_str()),
                SortValue::Time(t) => args.add(*t),
            }
            .and_then(|()| args.add(keyset.id))
            .map_err(sqlx::Error::Encode)?;
            Some(sort.after(args.len() - 1))
        }
        None => None,
    };
    args.add(i64::from(paging.per_page) + 1)
        .map_err(sqlx::Error::Encode)?;
    let mut window = format!("LIMIT ${}", args.len());
    if let Some(offset) = offset {
        args.add(offset as i64).map_err(sqlx::Error::Encode)?;
        window.push_str(&format!(" OFFSET ${}", args.len()));
    }
    let count_sql = count(&mut args)?;
    let sql = format!(
        "SELECT {columns}, {} AS keyset_key, ({count_sql}) AS bounded_total {} ORDER BY {} {window}",
        sort.column,
        matching.rows_sql(after.as_deref()),
        sort.order_by(),
    );
    let mut rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
        .fetch_all(pool)
        .await?;
    let has_next = rows.len() > paging.per_page as usize;
    rows.truncate(paging.per_page as usize);
    let counted = |count: i64| match counting {
        Counting::Bounded => Total::counted(count, limit),
        Counting::Kept(_) => Total::exact(count),
    };
    let total = match (Total::from_page(offset, rows.len(), has_next), rows.first()) {
        (Some(total), _) => total,
        (None, Some(first)) => counted(first.try_get("bounded_total")?),
        (None, None) => {
            // Parameters the count does not name are declared and unused: PostgreSQL takes them.
            let mut args = matching.args;
            let sql = format!("SELECT ({})", count(&mut args)?);
            counted(
                sqlx::query_scalar_with(sqlx::AssertSqlSafe(sql), args)
                    .fetch_one(pool)
                    .await?,
            )
        }
    };
    let next = match rows.last() {
        Some(last) if has_next => Some(Keyset {
            key: if sort.time {
                SortValue::Time(last.try_get("keyset_key")?)
            } else {
                SortValue::Text(last.try_get("keyset_key")?)
            },
            id: last.try_get("id")?,
        }),
        _ => None,
    };
    Ok(ListPage {
        rows: rows.iter().map(R::from_row).collect::<Result<_, _>>()?,
        total,
        has_next,
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_matched_literally() {
        assert_eq!(like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }

    #[test]
    fn a_bounded_count_reads_the_cap_or_through_the_page_and_says_when_it_stopped() {
        assert_eq!(Total::limit(None, 20), COUNT_CAP);
        assert_eq!(Total::limit(Some(0), 20), COUNT_CAP);
        assert_eq!(Total::limit(Some(50_000), 20), 50_021);
        assert!(Total::counted(10_000, 10_000).capped);
        assert!(!Total::counted(9_999, 10_000).capped);
    }

    #[test]
    fn a_last_page_tells_its_total_but_a_page_past_the_end_does_not() {
        let last = Total::from_page(Some(40), 3, false).unwrap();
        assert_eq!((last.count, last.capped), (43, false));
        assert_eq!(Total::from_page(Some(0), 0, false).unwrap().count, 0);
        assert_eq!(Total::from_page(Some(40), 0, false), None);
        assert_eq!(Total::from_page(Some(0), 20, true), None);
        assert_eq!(Total::from_page(None, 3, false), None);
    }

    #[test]
    fn a_time_key_round_trips_through_its_text_to_the_microsecond() {
        let t = DateTime::parse_from_rfc3339("2026-12-07T01:02:03.456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let text = SortValue::Time(t).to_text();
        assert_eq!(SortValue::from_text(&text, true), Some(SortValue::Time(t)));
        assert_eq!(SortValue::from_text("yesterday", true), None);
        assert_eq!(
            keyset_after("name_key", "text", true, 3),
            "(name_key, id) < ($3::text, $4::uuid)"
        );
    }

    const LATEST: Sort = Sort::by_time("-queued_at", "queued_at");
    const SORTS: Sorts = Sorts {
        all: &[Sort::by_text("name", "name_key"), LATEST],
        default: LATEST,
    };

    #[test]
    fn a_sort_is_descending_when_its_name_says_so_and_only_listed_names_parse() {
        const { assert!(LATEST.descending && LATEST.time) };
        assert_eq!(LATEST.order_by(), "queued_at DESC, id DESC");
        assert_eq!(
            LATEST.after(2),
            "(queued_at, id) < ($2::timestamptz, $3::uuid)"
        );
        let name = SORTS.parse("name").unwrap();
        assert_eq!((name.descending, name.time), (false, false));
        assert_eq!(name.after(5), "(name_key, id) > ($5::text, $6::uuid)");
        assert_eq!(SORTS.parse("queued_at"), None);
        assert_eq!(SORTS.parse("name; DROP TABLE builds"), None);
        assert_eq!(SORTS.accepted(), "name, -queued_at");
    }

    #[test]
    fn a_statement_holds_only_the_conditions_asked_for_numbered_as_they_come() {
        let mut all = Matching::new("organizations");
        assert_eq!(all.rows_sql(None), "FROM organizations");
        assert_eq!(all.rows_sql(Some("x")), "FROM organizations WHERE x");
        let org = all.and_eq("org_id", Uuid::nil());
        let status = all.param("failed");
        all.and(format!("status = {status}"));
        assert_eq!((org.as_str(), status.as_str()), ("$1", "$2"));
        assert_eq!(
            all.rows_sql(Some("k")),
            "FROM organizations WHERE org_id = $1 AND status = $2 AND k"
        );
        let builds = KeptCount {
            table: "build_counts",
            column: "builds",
            keys: &["org_id", "project_id"],
        };
        assert_eq!(
            builds.counting(&["$1", "$2"]),
            Counting::Kept(
                "SELECT COALESCE((SELECT builds FROM build_counts WHERE org_id = $1 \
                 AND project_id = $2), 0)"
                    .into()
            )
        );
    }
}
