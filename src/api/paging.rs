//! Pages of the listings (SPEC §4, §6): their query strings (`name=value`
//! pairs, whole numbers, `limit`), and when a page is full. A page holds at
//! most `limit` entries, and fewer when other requests are waiting and it
//! has cost the loop its time budget: one listing must not hold up every
//! other request.

use crate::error::ApiError;
use crate::limits::MAX_PAGE;
use std::time::{Duration, Instant};

/// The loop time one page may take before it ends early (with `more`).
const PAGE_BUDGET: Duration = Duration::from_micros(250);
/// How many entries go in between looks at the clock.
const CLOCK_EVERY: usize = 32;

/// A page being filled.
#[derive(Debug)]
pub struct Page {
    limit: usize,
    /// When the page began, if it must end at the time budget.
    budget_from: Option<Instant>,
}

impl Page {
    /// A page of at most `limit` entries, also ended at the time budget
    /// when `others_waiting`.
    pub fn new(limit: usize, others_waiting: bool) -> Page {
        Page { limit, budget_from: others_waiting.then(Instant::now) }
    }

    /// Whether a page that holds `entries` takes no more: it reached its
    /// limit, or its time budget (never before its first entry).
    pub fn is_full(&self, entries: usize) -> bool {
        let over_budget =
            |started: Instant| entries > 0 && entries.is_multiple_of(CLOCK_EVERY) && started.elapsed() > PAGE_BUDGET;
        entries >= self.limit || self.budget_from.is_some_and(over_budget)
    }
}

/// The `name=value` pairs of a query string (a bare name has an empty value).
pub fn pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// `after` (read by `parse_after`) and `limit` of a listing's query string.
pub fn after_and_limit<T>(
    query: Option<&str>,
    parse_after: impl Fn(&str) -> Result<T, ApiError>,
) -> Result<(Option<T>, usize), ApiError> {
    let (mut after, mut limit) = (None, MAX_PAGE);
    for (name, value) in pairs(query) {
        match name {
            "after" => after = Some(parse_after(value)?),
            "limit" => limit = self::limit(value)?,
            _ => {}
        }
    }
    Ok((after, limit))
}

/// Digits only (no sign, no spaces). A whole number too large for `u64`
/// is `u64::MAX`: as a limit, a cursor or an index it is past every end
/// there is, and the SPEC calls it a whole number all the same.
pub fn whole_number(value: &str) -> Option<u64> {
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())).then(|| value.parse().unwrap_or(u64::MAX))
}

/// `limit`: a whole number ≥ 1; above [`MAX_PAGE`] it is [`MAX_PAGE`].
pub fn limit(value: &str) -> Result<usize, ApiError> {
    match whole_number(value) {
        Some(0) | None => Err(ApiError::bad_request("limit must be a whole number of at least 1.")),
        Some(n) => Ok(usize::try_from(n).unwrap_or(MAX_PAGE).min(MAX_PAGE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(limit("1").unwrap(), 1);
        assert_eq!(limit("1000").unwrap(), 1000);
        assert_eq!(limit("1001").unwrap(), MAX_PAGE);
        assert_eq!(limit("99999999999999999999").unwrap(), MAX_PAGE, "a whole number, however large");
        assert_eq!(whole_number("18446744073709551616"), Some(u64::MAX));
        assert_eq!(whole_number("007"), Some(7));
        for bad in ["0", "", "-1", "+1", " 1", "1.0", "ten"] {
            assert!(limit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pages_end_at_their_limit_or_budget() {
        let page = Page::new(3, true);
        assert!(!page.is_full(0) && !page.is_full(2));
        assert!(page.is_full(3));
        let late = Page { limit: 1000, budget_from: Some(Instant::now() - Duration::from_secs(1)) };
        assert!(!late.is_full(0), "a page always gets its first entry");
        assert!(!late.is_full(31), "the clock is read every 32 entries");
        assert!(late.is_full(32));
        let alone = Page { limit: 1000, budget_from: None };
        assert!(!alone.is_full(32) && !alone.is_full(999), "no budget when nobody waits");
    }

    #[test]
    fn query_pairs() {
        let all: Vec<_> = pairs(Some("a=1&&b&c=x=y")).collect();
        assert_eq!(all, [("a", "1"), ("b", ""), ("c", "x=y")]);
        assert_eq!(pairs(None).count(), 0);
    }
}
