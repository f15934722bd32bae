//! The one pagination shape: `{ "data": [...], "pagination": { page, per_page, total, pages,
//! has_next, has_prev } }`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

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
}
