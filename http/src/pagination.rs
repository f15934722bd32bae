//! The one pagination shape: `{ "data": [...], "pagination": { page, per_page, total, pages,
//! has_next, has_prev } }`; lists that also page by keyset add `total_capped` and
//! `next_cursor` to it ([`KeysetPagination`]).

use atelier_projections::sql::{Keyset, ListPage, Paging, SortValue, Sorts, Total};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::problem::{ApiError, FieldError};

/// Most rows a page may hold.
pub const MAX_PER_PAGE: u32 = 100;
/// Rows per page when none is asked.
pub const DEFAULT_PER_PAGE: u32 = 20;

/// The highest page number accepted.
pub const MAX_PAGE: u32 = u32::MAX / 1024;

/// Page parameters. They arrive as strings, so that a bad value becomes a problem naming the
/// field, but are documented as the integers they must be.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page number, from 1 (default 1).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 4_194_303)]
    pub page: Option<String>,
    /// Rows per page, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub per_page: Option<String>,
}

impl PageParams {
    /// `(page, per_page)`, recording what is invalid in `errors` (with every other field of a
    /// list's parameters, so that one answer names them all).
    pub fn collect(&self, errors: &mut Vec<FieldError>) -> (u32, u32) {
        self.parse().unwrap_or_else(|e| {
            errors.extend(e);
            (1, 1)
        })
    }

    /// Validated `(page, per_page)`.
    pub fn parse(&self) -> Result<(u32, u32), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut number = |field: &str, raw: &Option<String>, default: u32, max: u32| match raw {
            None => default,
            Some(s) => match s.trim().parse::<u32>() {
                Ok(n) if n >= 1 && n <= max => n,
                _ => {
                    errors.push(FieldError {
                        field: field.to_owned(),
                        message: format!("must be a whole number from 1 to {max}"),
                    });
                    default
                }
            },
        };
        let page = number("page", &self.page, 1, MAX_PAGE);
        let per_page = number("per_page", &self.per_page, DEFAULT_PER_PAGE, MAX_PER_PAGE);
        if errors.is_empty() {
            Ok((page, per_page))
        } else {
            Err(errors)
        }
    }
}

/// Where a page sits in the whole list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Pagination {
    /// This page, from 1.
    pub page: u32,
    /// Rows per page.
    pub per_page: u32,
    /// Rows in the whole list.
    pub total: u64,
    /// Pages in the whole list.
    pub pages: u64,
    /// Whether a later page has rows.
    pub has_next: bool,
    /// Whether an earlier page exists.
    pub has_prev: bool,
}

impl Pagination {
    /// The pagination of page `page` of `per_page` rows among `total`.
    pub fn new(page: u32, per_page: u32, total: u64) -> Self {
        let pages = total.div_ceil(u64::from(per_page));
        Self {
            page,
            per_page,
            total,
            pages,
            has_next: u64::from(page) < pages,
            has_prev: page > 1,
        }
    }
}

/// A page of rows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The rows.
    pub data: Vec<T>,
    /// Where they sit.
    pub pagination: Pagination,
}

/// Where a page of a list paged by cursor sits: the log read by position, where new rows keep
/// arriving and a page number would shift under the reader. The next page is asked with
/// `cursor=<next_cursor>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CursorPagination {
    /// Rows per page.
    pub per_page: u32,
    /// Whether more rows follow.
    pub has_next: bool,
    /// What to pass as `cursor` for the next page (`None`: this is the last).
    pub next_cursor: Option<String>,
}

/// A page of rows paged by cursor.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CursorPage<T> {
    /// The rows.
    pub data: Vec<T>,
    /// Where they sit.
    pub pagination: CursorPagination,
}

/// A keyset list's `cursor` parameter.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CursorParams {
    /// A previous page's `pagination.next_cursor`: the rows after that page's last row, in the
    /// same sort, whatever was added or removed before it meanwhile. Opaque; excludes `page`.
    /// Its cost does not grow with the depth, where `page` reads every row before the page.
    #[param(max_length = 1024)]
    pub cursor: Option<String>,
}

/// The longest cursor accepted, in characters.
pub const MAX_CURSOR_CHARS: usize = 1024;

/// Where a keyset page starts, as a cursor carries it: the list's sort, the sort key and id of
/// the last row seen, and the number of the page it leads to. A cursor is not a secret and
/// grants nothing: every query still names the caller's organization, so another
/// organization's cursor only says where to start among the caller's own rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListCursor {
    /// The sort it was made for (`-name`…).
    #[serde(rename = "s")]
    pub sort: String,
    /// The last row's sort key, in text.
    #[serde(rename = "k")]
    pub key: String,
    /// The last row's id.
    #[serde(rename = "i")]
    pub id: Uuid,
    /// The number of the page it leads to.
    #[serde(rename = "p")]
    pub page: u32,
}

impl ListCursor {
    /// Its opaque form: base64url (no padding) of its JSON.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("a cursor serializes"))
    }

    /// Reads an opaque form back; `None` when it is not one.
    pub fn decode(raw: &str) -> Option<Self> {
        if raw.len() > MAX_CURSOR_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        let cursor: Self = serde_json::from_slice(&bytes).ok()?;
        (cursor.page >= 2).then_some(cursor)
    }

    /// The error naming `cursor` when a cursor is not one a list gave.
    pub fn invalid() -> FieldError {
        FieldError {
            field: "cursor".into(),
            message: "is not a cursor this list gave: pass pagination.next_cursor unchanged".into(),
        }
    }
}

impl CursorParams {
    /// The cursor, none when absent or empty; one that does not decode is recorded in `errors`.
    pub fn collect(&self, errors: &mut Vec<FieldError>) -> Option<ListCursor> {
        let raw = self
            .cursor
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())?;
        let cursor = ListCursor::decode(raw);
        if cursor.is_none() {
            errors.push(ListCursor::invalid());
        }
        cursor
    }
}

/// Which page a list paged by number or by keyset is asked (`page`, `per_page`, `cursor` and
/// the list's `sort`: `None` when it has no such parameter), every invalid one recorded in
/// `errors`: a page number beside a cursor (which carries its own), an unknown sort, and a
/// cursor made for another sort than the one asked (or, without `sort=`, than any of the
/// list's). Without `sort=` a cursor's own sort holds, so that `cursor=` alone continues a walk.
pub fn paging(
    sorts: &Sorts,
    page: &PageParams,
    cursor: &CursorParams,
    sort: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Paging {
    let (page_number, per_page) = page.collect(errors);
    let cursor = cursor.collect(errors);
    if cursor.is_some() && page.page.is_some() {
        errors.push(FieldError {
            field: "page".into(),
            message: "cannot be given with cursor, which carries its own place".into(),
        });
    }
    let sort = match sort {
        None => cursor
            .as_ref()
            .and_then(|c| sorts.parse(&c.sort))
            .unwrap_or(sorts.default),
        Some(s) => sorts.parse(s).unwrap_or_else(|| {
            errors.push(FieldError {
                field: "sort".into(),
                message: format!("must be one of {}", sorts.accepted()),
            });
            sorts.default
        }),
    };
    let after = cursor.as_ref().and_then(|c| {
        let keyset = (c.sort == sort.name)
            .then(|| SortValue::from_text(&c.key, sort.time))
            .flatten()
            .map(|key| Keyset { key, id: c.id });
        if keyset.is_none() {
            errors.push(FieldError {
                field: "cursor".into(),
                message: if sorts.all.len() > 1 {
                    format!(
                        "was not made for sort={}: pass the sort it was made for, or none",
                        sort.name
                    )
                } else {
                    "was not made for this list: pass its pagination.next_cursor unchanged".into()
                },
            });
        }
        keyset
    });
    Paging {
        page: cursor.as_ref().map_or(page_number, |c| c.page),
        per_page,
        sort,
        after,
    }
}

/// Where a page of a list paged by number or by keyset sits: [`Pagination`]'s fields, with
/// a total that stops counting at a cap, and the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeysetPagination {
    /// This page, from 1 (on a keyset page: the page the cursor led to, counted from the first
    /// page it came from).
    pub page: u32,
    /// Rows per page.
    pub per_page: u32,
    /// Rows in the whole list: exact for a list that keeps its count (without a search or a
    /// filter: projects, a project's builds, operations, detections); else counted, and when
    /// `total_capped`, a lower bound: counting stops at 10,000 rows (or, for a page by number,
    /// at the row after the page).
    pub total: u64,
    /// Pages in `total` (a lower bound when `total_capped`).
    pub pages: u64,
    /// Whether a later page has rows (exact, even when the total is capped).
    pub has_next: bool,
    /// Whether an earlier page exists.
    pub has_prev: bool,
    /// Whether counting stopped before the end of the list: more rows than `total` may exist.
    pub total_capped: bool,
    /// What to pass as `cursor` for the next page in the same sort, from any page (`null`: this
    /// is the last).
    pub next_cursor: Option<String>,
}

impl KeysetPagination {
    /// The pagination of page `page` of `per_page` rows among `total` (`capped`: a lower
    /// bound), and the cursor of the next page when there is one.
    pub fn new(
        page: u32,
        per_page: u32,
        total: u64,
        total_capped: bool,
        next_cursor: Option<String>,
    ) -> Self {
        Self {
            page,
            per_page,
            total,
            pages: total.div_ceil(u64::from(per_page)),
            has_next: next_cursor.is_some(),
            has_prev: page > 1,
            total_capped,
            next_cursor,
        }
    }
}

/// A page of rows of a list paged by number or by keyset.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeysetPage<T> {
    /// The rows.
    pub data: Vec<T>,
    /// Where they sit.
    pub pagination: KeysetPagination,
}

impl<T> KeysetPage<T> {
    /// The page `paging` asked, its rows shown by `view`, with the cursor of the next page
    /// (the sort, the last row's key and id, the next page's number) when rows follow.
    pub fn of<R>(paging: &Paging, listed: ListPage<R>, view: impl FnMut(R) -> T) -> Self {
        Self::with(
            paging,
            listed.rows.into_iter().map(view).collect(),
            listed.total,
            listed.next.as_ref(),
        )
    }

    /// The page `paging` asked, of these rows already shown, among `total`, the next starting
    /// after `next`.
    pub fn with(paging: &Paging, data: Vec<T>, total: Total, next: Option<&Keyset>) -> Self {
        let next_cursor = next.map(|next| {
            ListCursor {
                sort: paging.sort.name.to_owned(),
                key: next.key.to_text(),
                id: next.id,
                page: paging.page.saturating_add(1),
            }
            .encode()
        });
        Self {
            data,
            pagination: KeysetPagination::new(
                paging.page,
                paging.per_page,
                total.count,
                total.capped,
                next_cursor,
            ),
        }
    }
}

/// Merges validation errors of several parameter groups into one problem.
pub fn validate(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errors))
    }
}

/// The longest `search` accepted, in characters.
pub const MAX_SEARCH_CHARS: usize = 100;

/// A list's `search` parameter: trimmed, none when empty; too long is recorded in `errors`.
pub fn search(raw: Option<&str>, errors: &mut Vec<FieldError>) -> Option<String> {
    let search = raw.map(str::trim).filter(|s| !s.is_empty())?;
    if search.chars().count() > MAX_SEARCH_CHARS {
        errors.push(FieldError {
            field: "search".into(),
            message: format!("must be at most {MAX_SEARCH_CHARS} characters"),
        });
    }
    Some(search.to_owned())
}

/// A list's boolean filter (`is_active=true`): none when absent or empty; anything but `true`
/// or `false` is recorded in `errors`.
pub fn flag(field: &str, raw: Option<&str>, errors: &mut Vec<FieldError>) -> Option<bool> {
    match raw.map(str::trim) {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            errors.push(FieldError {
                field: field.into(),
                message: "must be true or false".into(),
            });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_counts_pages_and_neighbours() {
        let p = Pagination::new(2, 10, 25);
        assert_eq!((p.pages, p.has_next, p.has_prev), (3, true, true));
        let p = Pagination::new(1, 10, 0);
        assert_eq!((p.pages, p.has_next, p.has_prev), (0, false, false));
        let p = Pagination::new(3, 10, 30);
        assert!(!p.has_next);
    }

    #[test]
    fn page_parameters_out_of_range_are_validation_errors() {
        let ok = PageParams {
            page: Some("2".into()),
            per_page: Some("100".into()),
        };
        assert_eq!(ok.parse(), Ok((2, 100)));
        let bad = PageParams {
            page: Some("0".into()),
            per_page: Some("101".into()),
        };
        let errors = bad.parse().unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(PageParams::default().parse(), Ok((1, DEFAULT_PER_PAGE)));
    }

    #[test]
    fn a_cursor_round_trips_and_anything_else_is_an_error_naming_the_cursor() {
        let cursor = ListCursor {
            sort: "-name".into(),
            key: "zeta".into(),
            id: Uuid::now_v7(),
            page: 4,
        };
        let text = cursor.encode();
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(ListCursor::decode(&text), Some(cursor));
        for bad in ["", "not a cursor", "e30", &"A".repeat(2000), &text[1..]] {
            assert_eq!(ListCursor::decode(bad), None, "{bad}");
        }
        let mut errors = Vec::new();
        let params = CursorParams {
            cursor: Some("%%%".into()),
        };
        assert_eq!(params.collect(&mut errors), None);
        assert_eq!(errors[0].field, "cursor");
    }

    #[test]
    fn a_keyset_page_has_a_next_page_exactly_when_it_has_a_cursor() {
        let p = KeysetPagination::new(3, 10, 10_000, true, Some("c".into()));
        assert_eq!((p.pages, p.has_next, p.has_prev), (1000, true, true));
        let p = KeysetPagination::new(1, 10, 5, false, None);
        assert_eq!((p.pages, p.has_next, p.has_prev), (1, false, false));
    }
}
