//! Conditional requests: parsing `If-Match` / `If-None-Match` and deciding,
//! from the store's current token, whether a write may proceed. Pure, so the
//! whole table of the SPEC is unit-tested here.

use crate::error::ApiError;

/// What a write request demands of the store's current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No conditional header: only a create may proceed.
    None,
    /// `If-None-Match: *`: the store must not exist.
    Absent,
    /// `If-Match: *`: the store must exist (explicit overwrite).
    AnyVersion,
    /// `If-Match: "t1", "t2"`: the current token must be one of these.
    OneOf(Vec<String>),
}

/// Why a write may not proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 428: an existing store written without `If-Match`.
    Required,
    /// 412: the precondition names another version.
    Failed,
}

/// Parses the conditional headers of a PUT or DELETE.
pub fn parse_write(if_match: Option<&str>, if_none_match: Option<&str>) -> Result<Precondition, ApiError> {
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("If-Match and If-None-Match together are not allowed.")),
        (None, None) => Ok(Precondition::None),
        (None, Some(value)) if value.trim() == "*" => Ok(Precondition::Absent),
        (None, Some(_)) => Err(ApiError::bad_request("On a write, If-None-Match may only be *.")),
        (Some(value), None) => Ok(match parse_tags(value)? {
            Tags::Any => Precondition::AnyVersion,
            // RFC 9110: If-Match compares strongly, so weak tags never match.
            Tags::List(tags) => Precondition::OneOf(tags.into_iter().filter(|t| !t.weak).map(|t| t.opaque).collect()),
        }),
    }
}

/// Decides a write against the current token (`None`: the store is missing).
pub fn decide(precondition: &Precondition, current: Option<&str>) -> Result<(), Refusal> {
    match (precondition, current) {
        (Precondition::None | Precondition::Absent, None) => Ok(()),
        (Precondition::None, Some(_)) => Err(Refusal::Required),
        (Precondition::Absent, Some(_)) => Err(Refusal::Failed),
        (Precondition::AnyVersion | Precondition::OneOf(_), None) => Err(Refusal::Failed),
        (Precondition::AnyVersion, Some(_)) => Ok(()),
        (Precondition::OneOf(tags), Some(token)) => {
            if tags.iter().any(|t| t == token) {
                Ok(())
            } else {
                Err(Refusal::Failed)
            }
        }
    }
}

/// A parsed `If-None-Match` of a read.
#[derive(Debug)]
pub struct NoneMatch(Tags);

/// Parses `If-None-Match` on a read (checked before authentication).
pub fn parse_none_match(header: &str) -> Result<NoneMatch, ApiError> {
    parse_tags(header).map(NoneMatch)
}

impl NoneMatch {
    /// Whether the current token matches (→ 304). Weak comparison, as
    /// RFC 9110 asks for this header.
    pub fn matches(&self, current: &str) -> bool {
        match &self.0 {
            Tags::Any => true,
            Tags::List(tags) => tags.iter().any(|t| t.opaque == current),
        }
    }
}

#[derive(Debug)]
struct Tag {
    weak: bool,
    opaque: String,
}

#[derive(Debug)]
enum Tags {
    Any,
    List(Vec<Tag>),
}

/// `*` or a comma-separated list of entity tags (`"x"` or `W/"x"`). An
/// entity tag may itself contain commas (RFC 9110 §8.8.3: any visible
/// character but `"`), so the list is read tag by tag, not split.
fn parse_tags(value: &str) -> Result<Tags, ApiError> {
    let bad = || ApiError::bad_request("Malformed entity tag in a conditional header.");
    let value = value.trim();
    if value == "*" {
        return Ok(Tags::Any);
    }
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let (weak, quoted) = match rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let inner = quoted.strip_prefix('"').ok_or_else(bad)?;
        let end = inner.find('"').ok_or_else(bad)?;
        let opaque = &inner[..end];
        if !opaque.bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b)) {
            return Err(bad());
        }
        tags.push(Tag { weak, opaque: opaque.to_owned() });
        rest = &inner[end + 1..];
        // After a tag: the end, or white space and a comma.
        let after = rest.trim_start_matches([' ', '\t']);
        if !after.is_empty() && !after.starts_with(',') {
            return Err(bad());
        }
    }
    if tags.is_empty() {
        return Err(bad());
    }
    Ok(Tags::List(tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(if_match: Option<&str>, if_none_match: Option<&str>) -> Precondition {
        parse_write(if_match, if_none_match).unwrap()
    }

    #[test]
    fn the_spec_table() {
        let none = write(None, None);
        let absent = write(None, Some("*"));
        let exact = write(Some("\"abc\""), None);
        let any = write(Some("*"), None);
        // store missing
        assert_eq!(decide(&none, None), Ok(()));
        assert_eq!(decide(&absent, None), Ok(()));
        assert_eq!(decide(&exact, None), Err(Refusal::Failed));
        assert_eq!(decide(&any, None), Err(Refusal::Failed));
        // store exists
        assert_eq!(decide(&none, Some("abc")), Err(Refusal::Required));
        assert_eq!(decide(&absent, Some("abc")), Err(Refusal::Failed));
        assert_eq!(decide(&exact, Some("abc")), Ok(()));
        assert_eq!(decide(&exact, Some("abd")), Err(Refusal::Failed));
        assert_eq!(decide(&any, Some("abc")), Ok(()));
    }

    #[test]
    fn lists_and_weak_tags() {
        let list = write(Some("\"x\", \"abc\""), None);
        assert_eq!(decide(&list, Some("abc")), Ok(()));
        let weak = write(Some("W/\"abc\""), None);
        assert_eq!(decide(&weak, Some("abc")), Err(Refusal::Failed));
        let matches = |header: &str| parse_none_match(header).unwrap().matches("abc");
        assert!(matches("W/\"abc\""));
        assert!(matches("\"x\", \"abc\""));
        assert!(matches("*"));
        assert!(!matches("\"x\""));
        let comma = write(Some("\"a,b\""), None);
        assert_eq!(comma, Precondition::OneOf(vec!["a,b".into()]));
        assert_eq!(write(Some("\"a,b\" ,W/\"c\",\"d\""), None), Precondition::OneOf(vec!["a,b".into(), "d".into()]));
    }

    #[test]
    fn malformed_headers_are_400() {
        for bad in ["abc", "\"abc", "\"a\"b\"", "", ",", "W/abc", "\"a\"\"b\"", "\"a b\"", "\"a\" x"] {
            assert!(parse_write(Some(bad), None).is_err(), "{bad:?}");
            assert!(parse_none_match(bad).is_err(), "{bad:?}");
        }
        assert!(parse_write(None, Some("\"abc\"")).is_err());
        assert!(parse_write(Some("*"), Some("*")).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(if_match in proptest::option::of("\\PC{0,40}"), if_none_match in proptest::option::of("\\PC{0,40}")) {
            let _ = parse_write(if_match.as_deref(), if_none_match.as_deref());
            if let Some(header) = if_none_match {
                let _ = parse_none_match(&header);
            }
        }

        #[test]
        fn decisions_follow_the_table(
            tags in proptest::collection::vec("[0-9a-f]{2}", 1..4),
            current in proptest::option::of("[0-9a-f]{2}"),
            kind in 0..4u8,
        ) {
            let list = tags.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ");
            let precondition = match kind {
                0 => parse_write(None, None),
                1 => parse_write(None, Some("*")),
                2 => parse_write(Some("*"), None),
                _ => parse_write(Some(&list), None),
            }.unwrap();
            let expected = match (kind, &current) {
                (0 | 1, None) => Ok(()),
                (0, Some(_)) => Err(Refusal::Required),
                (1, Some(_)) | (2.., None) => Err(Refusal::Failed),
                (2, Some(_)) => Ok(()),
                (_, Some(token)) if tags.contains(token) => Ok(()),
                (_, Some(_)) => Err(Refusal::Failed),
            };
            proptest::prop_assert_eq!(decide(&precondition, current.as_deref()), expected);
        }
    }
}
