//! CORS: the headers every answer carries, and the preflight answer.

use crate::config::CorsOrigins;
use crate::http::Response;

const EXPOSE: &str = "ETag, Sync-Meta, Sync-Permission, Sync-Seq, Sync-Log-Head, Sync-Log-Base, Sync-Log-More, Sync-Envelope-Seq, \
     Sync-Identity-Version, Retry-After";
const ALLOW_METHODS: &str = "GET, HEAD, PUT, POST, DELETE, OPTIONS";
const ALLOW_HEADERS: &str =
    "Authorization, Content-Type, If-Match, If-None-Match, If-Log-Head, Sync-Meta, Sync-Log-Base, Last-Event-ID";

/// Headers added to every answer, given the request's `Origin` (if any).
pub fn headers(policy: &CorsOrigins, origin: Option<&[u8]>) -> Vec<(&'static str, String)> {
    let mut out = vec![("X-Content-Type-Options", "nosniff".to_owned())];
    match policy {
        CorsOrigins::Any => out.push(("Access-Control-Allow-Origin", "*".to_owned())),
        CorsOrigins::List(allowed) => {
            let listed = origin.and_then(|o| allowed.iter().find(|a| a.as_bytes() == o));
            if let Some(origin) = listed {
                out.push(("Access-Control-Allow-Origin", origin.clone()));
            }
            out.push(("Vary", "Origin".to_owned()));
        }
    }
    out.push(("Access-Control-Expose-Headers", EXPOSE.to_owned()));
    out
}

/// The answer to `OPTIONS` on any `/v1` path.
pub fn preflight() -> Response {
    Response::new(204)
        .with_header("Access-Control-Allow-Methods", ALLOW_METHODS)
        .with_header("Access-Control-Allow-Headers", ALLOW_HEADERS)
        .with_header("Access-Control-Max-Age", "86400")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(headers: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn any_origin_is_star() {
        let h = headers(&CorsOrigins::Any, Some(b"https://x.example"));
        assert_eq!(value(&h, "Access-Control-Allow-Origin"), Some("*"));
        assert_eq!(value(&h, "X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(value(&h, "Vary"), None);
    }

    #[test]
    fn listed_origin_is_echoed_and_others_omitted() {
        let policy = CorsOrigins::List(vec!["https://a.example".into()]);
        let h = headers(&policy, Some(b"https://a.example"));
        assert_eq!(value(&h, "Access-Control-Allow-Origin"), Some("https://a.example"));
        assert_eq!(value(&h, "Vary"), Some("Origin"));
        let h = headers(&policy, Some(b"https://evil.example"));
        assert_eq!(value(&h, "Access-Control-Allow-Origin"), None);
        let h = headers(&policy, None);
        assert_eq!(value(&h, "Access-Control-Allow-Origin"), None);
        assert!(value(&h, "Access-Control-Expose-Headers").unwrap().contains("Sync-Seq"));
    }
}
