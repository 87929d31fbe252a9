//! Parsing a request head with `httparse` under our limits, and deciding how
//! its body is framed (the request-smuggling rules live here).

use super::rejection::Rejection;
use crate::limits::MAX_HEADERS;
use std::net::IpAddr;

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    /// The path as sent, still percent-encoded, without the query.
    pub path: String,
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// Names in lower case, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// The `Origin` a head names, read from as much of it as has arrived (a
/// head refused before it was parsed, for its CORS headers): only a whole
/// line counts.
pub fn origin_in_partial_head(bytes: &[u8]) -> Option<&[u8]> {
    let head = bytes.windows(4).position(|w| w == b"\r\n\r\n").map_or(bytes, |end| &bytes[..end + 2]);
    let pieces: Vec<&[u8]> = head.split(|&b| b == b'\n').collect();
    // The first piece is the request line, the last one what follows the
    // last line end (a line still arriving, or nothing).
    let whole_lines = pieces.get(1..pieces.len().saturating_sub(1)).unwrap_or_default();
    whole_lines.iter().find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon].eq_ignore_ascii_case(b"origin").then(|| line[colon + 1..].trim_ascii())
    })
}

/// Size limits on a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_line: usize,
    pub max_head: usize,
    pub max_headers: usize,
}

/// The outcome of parsing what has arrived so far.
#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A whole head, and how many bytes of the buffer it used.
    Complete(RequestHead, usize),
}

impl RequestHead {
    /// The first value of a header, as bytes.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// The last value of a header that may come in several lines.
    pub fn last_header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// The value of a header that may appear once; several lines of it are
    /// a bad header value (400), not a choice of the first.
    pub fn single_header(&self, name: &str) -> Result<Option<&[u8]>, Rejection> {
        let mut lines = self.headers.iter().filter(|(n, _)| n == name);
        let first = lines.next().map(|(_, value)| value.as_slice());
        if lines.next().is_some() {
            return Err(Rejection::bad_request(format!("The {name} header may appear only once.")));
        }
        Ok(first)
    }

    /// The value of a header that may appear once, as text; a value that
    /// is not visible ASCII is a bad header value (400).
    pub fn header_str(&self, name: &str) -> Result<Option<&str>, Rejection> {
        self.single_header(name)?.map(|value| visible_text(name, value)).transpose()
    }

    /// A comma-separated list header (`If-Match`, `If-None-Match`), whose
    /// lines all count: several lines mean their values joined with ", "
    /// (RFC 9110 §5.3); a line repeated word for word counts once (so two
    /// lines of `*` are still `*`).
    pub fn list_header(&self, name: &str) -> Result<Option<String>, Rejection> {
        let mut joined: Option<String> = None;
        let lines: Vec<&[u8]> = self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_slice()).collect();
        for (i, value) in lines.iter().enumerate() {
            if lines[..i].contains(value) {
                continue;
            }
            let text = visible_text(name, value)?;
            match &mut joined {
                Some(list) => {
                    list.push_str(", ");
                    list.push_str(text);
                }
                None => joined = Some(text.to_owned()),
            }
        }
        Ok(joined)
    }

    /// The client's address: the peer's, or when the peer is a trusted
    /// proxy the last entry of the last `X-Forwarded-For` line (the one
    /// the proxy added) when it is an address.
    pub fn client_address(&self, peer: IpAddr, proxies: &super::proxies::TrustedProxies) -> IpAddr {
        let trust_proxy = proxies.trusts(peer);
        let forwarded = || {
            let header = std::str::from_utf8(self.last_header("x-forwarded-for")?).ok()?;
            header.rsplit(',').next()?.trim().parse().ok()
        };
        if trust_proxy { forwarded().unwrap_or(peer) } else { peer }
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// Parses the bytes received so far. Errors are answered, then the
/// connection is closed.
pub fn parse(buf: &[u8], limits: HeadLimits) -> Result<Parsed, Rejection> {
    let line_end = buf.iter().position(|&b| b == b'\n');
    if line_end.map_or(buf.len(), |end| end) > limits.max_line {
        return Err(Rejection::UriTooLong);
    }
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots[..limits.max_headers.min(MAX_HEADERS)]);
    let status = request.parse(buf).map_err(|err| match err {
        httparse::Error::Version => Rejection::HttpVersionNotSupported,
        httparse::Error::TooManyHeaders => Rejection::HeadersTooLarge,
        _ => Rejection::bad_request("Malformed request head."),
    });
    let status = match status {
        Err(err) if buf.len() > limits.max_head => {
            // A head past the limit that also fails to parse is still too large.
            return Err(if matches!(err, Rejection::BadRequest(_)) { Rejection::HeadersTooLarge } else { err });
        }
        other => other?,
    };
    let consumed = match status {
        httparse::Status::Partial if buf.len() > limits.max_head => {
            return Err(Rejection::HeadersTooLarge);
        }
        httparse::Status::Partial => return Ok(Parsed::Partial),
        httparse::Status::Complete(consumed) if consumed > limits.max_head => {
            return Err(Rejection::HeadersTooLarge);
        }
        httparse::Status::Complete(consumed) => consumed,
    };
    let version_minor = request.version.unwrap_or(1);
    let target = origin_form(request.path.unwrap_or("/"));
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.to_owned(), None),
    };
    let headers: Vec<(String, Vec<u8>)> =
        request.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1, never two in any version.
    match headers.iter().filter(|(n, _)| n == "host").count() {
        0 if version_minor == 1 => return Err(Rejection::bad_request("HTTP/1.1 requests need a Host header.")),
        0 | 1 => {}
        _ => return Err(Rejection::bad_request("More than one Host header.")),
    }
    let framing = framing(version_minor, &headers)?;
    let keep_alive = keep_alive(version_minor, &headers);
    let expect_continue =
        version_minor == 1 && headers.iter().any(|(n, v)| n == "expect" && v.eq_ignore_ascii_case(b"100-continue"));
    let head = RequestHead {
        method: request.method.unwrap_or("GET").to_owned(),
        path,
        query,
        version_minor,
        headers,
        framing,
        keep_alive,
        expect_continue,
    };
    Ok(Parsed::Complete(head, consumed))
}

/// The path and query of a request target: an absolute-form target
/// (`http://host/path?q`, RFC 9112 §3.2.2, which servers must accept) is
/// reduced to its path and query.
fn origin_form(target: &str) -> &str {
    let scheme_end = ["http://", "https://"]
        .iter()
        .find(|scheme| target.get(..scheme.len()).is_some_and(|start| start.eq_ignore_ascii_case(scheme)))
        .map(|scheme| scheme.len());
    match scheme_end {
        Some(start) => {
            let after_authority = &target[start..];
            match after_authority.find(['/', '?']) {
                Some(at) if after_authority[at..].starts_with('/') => &after_authority[at..],
                _ => "/",
            }
        }
        None => target,
    }
}

/// RFC 9112 §6: Transfer-Encoding and Content-Length together, several
/// differing lengths, or a coding other than `chunked` are refused, so no
/// proxy in front of us can disagree with us about where a body ends.
pub fn framing(version_minor: u8, headers: &[(String, Vec<u8>)]) -> Result<Framing, Rejection> {
    let values = |name: &str| -> Vec<String> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| {
                String::from_utf8_lossy(v).split(',').map(|s| s.trim().to_ascii_lowercase()).collect::<Vec<_>>()
            })
            .collect()
    };
    let codings = values("transfer-encoding");
    let lengths = values("content-length");
    if !codings.is_empty() {
        if version_minor == 0 {
            return Err(Rejection::bad_request("Transfer-Encoding is not allowed in HTTP/1.0."));
        }
        if !lengths.is_empty() {
            return Err(Rejection::bad_request("Content-Length and Transfer-Encoding together are not allowed."));
        }
        if codings != ["chunked"] {
            return Err(Rejection::bad_request("Only the chunked transfer coding is supported."));
        }
        return Ok(Framing::Chunked);
    }
    let mut length = None;
    for text in &lengths {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Rejection::bad_request("Content-Length must be a decimal number."));
        }
        let value: u64 = text.parse().map_err(|_| Rejection::PayloadTooLarge("request body"))?;
        if length.is_some_and(|previous| previous != value) {
            return Err(Rejection::bad_request("Differing Content-Length values."));
        }
        length = Some(value);
    }
    Ok(match length {
        Some(0) | None => Framing::None,
        Some(n) => Framing::Length(n),
    })
}

/// The size of a chunk from its size line (without CRLF): 1 to 16 hex
/// digits, optionally followed by white space and `;` extensions, which are
/// ignored. Leading white space or anything else is malformed (`None`).
/// How many bytes a chunked body at the start of `bytes` takes, once its
/// last chunk and trailer have arrived: `Ok(None)` while it goes on,
/// `Err` if what arrived is malformed (reading it says how).
pub fn chunked_length(bytes: &[u8]) -> Result<Option<usize>, Malformed> {
    let line_end = |from: usize| bytes.get(from..).and_then(|rest| rest.windows(2).position(|w| w == b"\r\n"));
    let mut at = 0;
    loop {
        let Some(end) = line_end(at).map(|end| at + end) else { return Ok(None) };
        let size = chunk_size(&bytes[at..end]).and_then(|size| usize::try_from(size).ok()).ok_or(Malformed)?;
        at = end + 2;
        if size == 0 {
            // Trailer fields, then the blank line.
            loop {
                let Some(end) = line_end(at).map(|end| at + end) else { return Ok(None) };
                if end == at {
                    return Ok(Some(at + 2));
                }
                at = end + 2;
            }
        }
        at = at.checked_add(size).and_then(|at| at.checked_add(2)).ok_or(Malformed)?;
        if at > bytes.len() {
            return Ok(None);
        }
    }
}

/// A chunked body that can only be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

pub fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = match line.iter().position(|&b| b == b';') {
        Some(at) => line[..at].trim_ascii_end(),
        None => line,
    };
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &c| Some(acc << 4 | u64::from(crate::encoding::hex_digit(c)?)))
}

fn keep_alive(version_minor: u8, headers: &[(String, Vec<u8>)]) -> bool {
    let mut tokens = headers
        .iter()
        .filter(|(n, _)| n == "connection")
        .flat_map(|(_, v)| v.split(|&b| b == b',').map(|t| t.trim_ascii().to_ascii_lowercase()));
    let mut keep = version_minor == 1;
    for token in tokens.by_ref() {
        if token == b"close" {
            return false;
        }
        if token == b"keep-alive" {
            keep = true;
        }
    }
    keep
}

/// A header value as text: visible ASCII, spaces and tabs, else 400.
fn visible_text<'a>(name: &str, value: &'a [u8]) -> Result<&'a str, Rejection> {
    match std::str::from_utf8(value) {
        Ok(text) if value.iter().all(|&b| b == b' ' || b == b'\t' || b.is_ascii_graphic()) => Ok(text),
        _ => Err(Rejection::bad_request(format!("The {name} header has characters outside visible ASCII."))),
    }
}

/// What every per-address limit keys on (SPEC reading 36): an IPv4
/// address as it is (a /32), an IPv6 address by its /64 (one subscriber's
/// prefix: its addresses are as easy to change as a port), an IPv4-mapped
/// IPv6 address as the IPv4 address it maps.
pub fn share_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_of_a_head_that_has_partly_arrived() {
        let whole = b"GET / HTTP/1.1\r\nHost: a\r\norigin:  https://app.example \r\nX: y\r\n\r\nOrigin: body";
        assert_eq!(origin_in_partial_head(whole), Some(&b"https://app.example"[..]));
        assert_eq!(origin_in_partial_head(b"GET / HTTP/1.1\r\nOrigin: https://a\r\nX"), Some(&b"https://a"[..]));
        assert_eq!(origin_in_partial_head(b"GET / HTTP/1.1\r\nOrigin: https://a"), None, "a line still arriving");
        assert_eq!(origin_in_partial_head(b"Origin: https://a\r\n"), None, "the request line is no header");
        assert_eq!(origin_in_partial_head(b""), None);
        assert_eq!(origin_in_partial_head(b"GET / HTTP/1.1\r\n\r\nOrigin: https://a\r\n"), None, "after the head");
    }

    const LIMITS: HeadLimits = HeadLimits { max_line: 64, max_head: 256, max_headers: 4 };

    #[test]
    fn the_end_of_a_chunked_body_is_found_as_it_arrives() {
        let body = b"5;x=y\r\nhello\r\n0\r\nTrailer: t\r\n\r\nNEXT";
        assert_eq!(chunked_length(body), Ok(Some(body.len() - 4)));
        for cut in 0..body.len() - 4 {
            assert_eq!(chunked_length(&body[..cut]), Ok(None), "{cut}");
        }
        assert_eq!(chunked_length(b"zz\r\n"), Err(Malformed));
        assert_eq!(chunked_length(b"ffffffffffffffff\r\n"), Err(Malformed), "longer than memory");
    }

    fn parse_ok(text: &str) -> (RequestHead, usize) {
        match parse(text.as_bytes(), LIMITS) {
            Ok(Parsed::Complete(head, used)) => (head, used),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn parse_err(text: &[u8]) -> (u16, &'static str) {
        match parse(text, LIMITS) {
            Err(err) => crate::error::ApiError::from(err).status_and_code(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn single_headers_appear_once_and_list_headers_join_their_lines() {
        let (head, _) = parse_ok("GET / HTTP/1.0\r\nA: 1\r\nB: \"x\"\r\nA: 2\r\nB: \"y\"\r\n\r\n");
        assert_eq!(
            crate::error::ApiError::from(head.header_str("a").unwrap_err()).status_and_code(),
            (400, "bad_request")
        );
        assert!(head.single_header("a").is_err());
        assert_eq!(head.list_header("b").unwrap().as_deref(), Some("\"x\", \"y\""));
        assert_eq!(head.list_header("c").unwrap(), None);
        let (head, _) = parse_ok("GET / HTTP/1.0\r\nB: *\r\nB: *\r\n\r\n");
        assert_eq!(head.list_header("b").unwrap().as_deref(), Some("*"), "a repeated line counts once");
        assert_eq!(head.header_str("c").unwrap(), None);
        let (head, _) = parse_ok("GET / HTTP/1.0\r\nB: \"x\"\r\n\r\n");
        assert_eq!(head.header_str("b").unwrap(), Some("\"x\""));
        assert_eq!(head.list_header("b").unwrap().as_deref(), Some("\"x\""));
    }

    fn hdrs(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn parses_path_query_and_headers() {
        let (head, used) = parse_ok("GET /v1/changes?since=3 HTTP/1.1\r\nHost: x\r\nOrigin: o\r\n\r\nrest");
        assert_eq!(head.path, "/v1/changes");
        assert_eq!(head.query.as_deref(), Some("since=3"));
        assert_eq!(head.header("origin"), Some(&b"o"[..]));
        assert_eq!(head.framing, Framing::None);
        assert!(head.keep_alive);
        assert_eq!(used, 56);
    }

    #[test]
    fn host_is_required_once_and_absolute_targets_are_accepted() {
        assert_eq!(parse_err(b"GET / HTTP/1.1\r\n\r\n"), (400, "bad_request"));
        assert_eq!(parse_err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), (400, "bad_request"));
        assert_eq!(parse_err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"), (400, "bad_request"));
        let (head, _) = parse_ok("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(head.path, "/");
        let (head, _) = parse_ok("GET HTTP://x:8/v1/changes?since=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((head.path.as_str(), head.query.as_deref()), ("/v1/changes", Some("since=1")));
        assert_eq!(origin_form("https://x"), "/");
        assert_eq!(origin_form("http://x?q"), "/");
        assert_eq!(origin_form("/v1/x"), "/v1/x");
    }

    #[test]
    fn partial_until_blank_line() {
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n", LIMITS), Ok(Parsed::Partial)));
    }

    #[test]
    fn limits_give_414_and_431() {
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100));
        assert_eq!(parse_err(long_line.as_bytes()), (414, "uri_too_long"));
        assert_eq!(parse_err("a".repeat(100).as_bytes()), (414, "uri_too_long"));
        let many = "GET / HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\n\r\n";
        assert_eq!(parse_err(many.as_bytes()), (431, "headers_too_large"));
        let big = format!("GET / HTTP/1.1\r\na: {}\r\n", "x".repeat(300));
        assert_eq!(parse_err(big.as_bytes()), (431, "headers_too_large"));
    }

    #[test]
    fn other_versions_get_505_and_garbage_400() {
        assert_eq!(parse_err(b"GET / HTTP/2.0\r\n\r\n"), (505, "http_version_not_supported"));
        assert_eq!(parse_err(b"\x00\x01garbage\r\n\r\n"), (400, "bad_request"));
    }

    #[test]
    fn framing_rules() {
        assert_eq!(framing(1, &hdrs(&[("content-length", "5")])).unwrap(), Framing::Length(5));
        assert_eq!(framing(1, &hdrs(&[("content-length", "5"), ("content-length", "5")])).unwrap(), Framing::Length(5));
        assert_eq!(framing(1, &hdrs(&[("content-length", "0")])).unwrap(), Framing::None);
        assert_eq!(framing(1, &hdrs(&[("transfer-encoding", "Chunked")])).unwrap(), Framing::Chunked);
        assert_eq!(
            framing(1, &hdrs(&[("content-length", "18446744073709551615")])).unwrap(),
            Framing::Length(u64::MAX)
        );
        let status = |h: &[(&str, &str)], minor| {
            crate::error::ApiError::from(framing(minor, &hdrs(h)).unwrap_err()).status_and_code().0
        };
        assert_eq!(status(&[("content-length", "5"), ("content-length", "6")], 1), 400);
        assert_eq!(status(&[("content-length", "5, 6")], 1), 400);
        assert_eq!(status(&[("content-length", "-1")], 1), 400);
        assert_eq!(status(&[("content-length", "+5")], 1), 400);
        assert_eq!(status(&[("content-length", "")], 1), 400);
        assert_eq!(status(&[("content-length", "99999999999999999999999")], 1), 413);
        assert_eq!(status(&[("content-length", "5"), ("transfer-encoding", "chunked")], 1), 400);
        assert_eq!(status(&[("transfer-encoding", "gzip, chunked")], 1), 400);
        assert_eq!(status(&[("transfer-encoding", "chunked")], 0), 400);
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(chunk_size(b"1a"), Some(26));
        assert_eq!(chunk_size(b"0"), Some(0));
        assert_eq!(chunk_size(b"A ; name=value"), Some(10));
        assert_eq!(chunk_size(b"ffffffffffffffff"), Some(u64::MAX));
        for bad in [&b""[..], b" 5", b"5 ", b"\t5", b"5x", b"-1", b"0x5", b";", b"1ffffffffffffffff", b"5\r"] {
            assert_eq!(chunk_size(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest::proptest! {
        /// Every well-formed size line reads back its number; anything that
        /// does not start with a hex digit is refused.
        #[test]
        fn chunk_sizes_round_trip(size in proptest::prelude::any::<u64>(), upper in proptest::prelude::any::<bool>(), ext in "( ?;[a-z=]{0,8})?") {
            let digits = if upper { format!("{size:X}") } else { format!("{size:x}") };
            proptest::prop_assert_eq!(chunk_size(format!("{digits}{ext}").as_bytes()), Some(size));
            proptest::prop_assert_eq!(chunk_size(format!(" {digits}").as_bytes()), None);
        }
    }

    #[test]
    fn keep_alive_defaults_by_version() {
        assert!(keep_alive(1, &[]));
        assert!(!keep_alive(0, &[]));
        assert!(keep_alive(0, &hdrs(&[("connection", "Keep-Alive")])));
        assert!(!keep_alive(1, &hdrs(&[("connection", "keep-alive, close")])));
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse(&bytes, LIMITS);
        }

        #[test]
        fn parsing_head_shaped_garbage_never_panics(
            line in "[A-Z]{0,6} /\\PC{0,40} HTTP/1\\.[0-9]",
            headers in proptest::collection::vec(("[A-Za-z-]{1,20}", "\\PC{0,30}"), 0..6),
        ) {
            let mut text = format!("{line}\r\n");
            for (name, value) in headers {
                text.push_str(&format!("{name}: {value}\r\n"));
            }
            text.push_str("\r\n");
            let _ = parse(text.as_bytes(), LIMITS);
        }
    }

    #[test]
    fn limits_key_ipv6_by_its_64_and_ipv4_as_it_is() {
        let share = |text: &str| share_of(text.parse().unwrap()).to_string();
        assert_eq!(share("192.0.2.7"), "192.0.2.7");
        assert_eq!(share("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
        assert_eq!(share("2001:db8:1:2::ffff"), share("2001:db8:1:2:abcd::1"));
        assert_ne!(share("2001:db8:1:2::1"), share("2001:db8:1:3::1"));
        assert_eq!(share("::ffff:192.0.2.9"), "192.0.2.9");
    }
}
