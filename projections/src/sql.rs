//! What every context's read models and queries share: search patterns, keyset pages and
//! bounded counts.

use chrono::{DateTime, Utc};
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

/// Binds a keyset's key and id (in that order) to a query built with [`keyset_after`].
pub fn bind_keyset<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    keyset: &'q Keyset,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    let query = match &keyset.key {
        SortValue::Text(s) => query.bind(s.as_str()),
        SortValue::Time(t) => query.bind(*t),
    };
    query.bind(keyset.id)
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
}
