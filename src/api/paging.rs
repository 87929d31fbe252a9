//! Query strings of the listings (SPEC §4, §6): their `name=value` pairs,
//! whole numbers, and the `limit` of a page.

use crate::error::ApiError;

/// The most entries one page of a listing holds (and the default).
pub const MAX_PAGE: usize = 1000;

/// The `name=value` pairs of a query string (a bare name has an empty value).
pub fn pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Digits only (no sign, no spaces), within `u64`.
pub fn whole_number(value: &str) -> Option<u64> {
    value.bytes().all(|b| b.is_ascii_digit()).then(|| value.parse().ok())?
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
        assert_eq!(limit("99999999999999999999").ok(), None, "not a u64 is not a number");
        for bad in ["0", "", "-1", "+1", " 1", "1.0", "ten"] {
            assert!(limit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn query_pairs() {
        let all: Vec<_> = pairs(Some("a=1&&b&c=x=y")).collect();
        assert_eq!(all, [("a", "1"), ("b", ""), ("c", "x=y")]);
        assert_eq!(pairs(None).count(), 0);
    }
}
