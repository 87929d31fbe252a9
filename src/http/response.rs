//! An HTTP answer as a plain value, and how its head is written.

use super::budget::Held;
use crate::clock;
use crate::encoding::http_date;
use serde::Serialize;
use std::fs::File;
use std::io::Write;
use std::sync::Arc;

/// What follows the head.
#[derive(Debug)]
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// An already-open file streamed by a work thread; `len` bytes
    /// from its start. Read by position, so one handle can serve many
    /// connections at once.
    File {
        file: Arc<File>,
        len: u64,
    },
    /// Only the length of a body that is never sent: the answer to a HEAD
    /// that did not build what a GET would send.
    Unsent(u64),
    /// The start of a stream (server-sent events): no length, it ends when
    /// the connection closes.
    Stream(Vec<u8>),
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    headers: Vec<(&'static str, String)>,
    pub body: Body,
    /// The share of the answers' memory this answer holds until it is
    /// sent (dropped with it).
    held: Option<Held>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response { status, headers: Vec::new(), body: Body::Empty, held: None }
    }

    /// A JSON answer with `value` as its body.
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        Response::new(status).with_json(value)
    }

    /// An answer with `bytes` as its body (the caller sets its type).
    pub fn bytes(status: u16, bytes: Vec<u8>) -> Self {
        Response { status, headers: Vec::new(), body: Body::Bytes(bytes), held: None }
    }

    /// A JSON answer whose body is already serialised.
    pub fn json_bytes(status: u16, bytes: Vec<u8>) -> Self {
        Response::bytes(status, bytes).with_header("Content-Type", "application/json; charset=utf-8")
    }

    pub fn with_json(mut self, value: &impl Serialize) -> Self {
        // Serialising our own plain data types cannot fail.
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.header("Content-Type", "application/json; charset=utf-8");
        self.body = Body::Bytes(bytes);
        self
    }

    /// Keeps `held` (if any) for as long as this answer lives.
    pub fn holding(mut self, held: Option<Held>) -> Self {
        self.held = held;
        self
    }

    pub fn with_body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }

    pub fn header(&mut self, name: &'static str, value: impl Into<String>) {
        self.headers.push((name, value.into()));
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.header(name, value);
        self
    }

    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The in-memory body (empty for files and empty bodies).
    pub fn body_bytes(&self) -> &[u8] {
        match &self.body {
            Body::Bytes(bytes) | Body::Stream(bytes) => bytes,
            _ => &[],
        }
    }

    /// Bytes of body this answer carries (sent unless it answers a HEAD).
    pub fn body_len(&self) -> u64 {
        match &self.body {
            Body::Empty => 0,
            Body::Bytes(bytes) | Body::Stream(bytes) => bytes.len() as u64,
            Body::File { len, .. } | Body::Unsent(len) => *len,
        }
    }

    /// Its body, and the answers' memory it holds (until that is dropped).
    pub(super) fn into_body(self) -> (Body, Option<Held>) {
        (self.body, self.held)
    }

    /// Writes the status line and headers (with `extra`, `Date` and the
    /// framing headers).
    pub fn write_head(&self, out: &mut Vec<u8>, extra: &[(&'static str, String)], keep_alive: bool) {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        push_header(out, "Date", &http_date(clock::now_ms()));
        for (name, value) in self.headers.iter().chain(extra) {
            push_header(out, name, value);
        }
        if !matches!(self.status, 100..=199 | 204 | 304) && !matches!(self.body, Body::Stream(_)) {
            let _ = write!(out, "Content-Length: {}\r\n", self.body_len());
        }
        push_header(out, "Connection", if keep_alive { "keep-alive" } else { "close" });
        out.extend_from_slice(b"\r\n");
    }
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase for every status this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(response: &Response, keep_alive: bool) -> String {
        let mut out = Vec::new();
        response.write_head(&mut out, &[("X-Extra", "1".into())], keep_alive);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn head_has_length_and_connection() {
        let response = Response::json(200, &serde_json::json!({"status": "ok"}));
        let head = head_of(&response, true);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("Content-Length: 15\r\n"));
        assert!(head.contains("Connection: keep-alive\r\n"));
        assert!(head.contains("X-Extra: 1\r\n"));
        let date = head.lines().find_map(|line| line.strip_prefix("Date: ")).expect("a Date header");
        assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn no_content_has_no_length() {
        let head = head_of(&Response::new(204), false);
        assert!(!head.contains("Content-Length"));
        assert!(head.contains("Connection: close\r\n"));
    }
}
