//! Just enough HTTP/1.x: request heads with an optional `Content-Length` body, keep-alive
//! as HTTP/1.0 and 1.1 define it, responses with a `Content-Length`.

use std::io::{self, BufRead, Read, Write};

/// Largest request head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted (it is read and thrown away).
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, PartialEq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Whether the client wants the connection kept open after the response.
    pub keep_alive: bool,
    pub content_length: usize,
}

impl Request {
    /// Parses a request head (request line and header lines, without the blank line).
    pub fn parse(head: &[u8]) -> Result<Request, String> {
        let text = std::str::from_utf8(head).map_err(|_| "request head is not UTF-8")?;
        let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split_whitespace();
        let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(t), Some(v)) if parts.next().is_none() => (m, t, v),
            _ => return Err(format!("bad request line {request_line:?}")),
        };
        let mut keep_alive = match version {
            "HTTP/1.1" => true,
            "HTTP/1.0" => false,
            _ => return Err(format!("unsupported version {version:?}")),
        };
        let mut content_length = 0;
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("bad header {line:?}"))?;
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "connection" => {
                    for token in value.split(',').map(|t| t.trim().to_ascii_lowercase()) {
                        match token.as_str() {
                            "close" => keep_alive = false,
                            "keep-alive" => keep_alive = true,
                            _ => {}
                        }
                    }
                }
                "content-length" => {
                    content_length = value
                        .parse()
                        .map_err(|_| format!("bad content-length {value:?}"))?;
                    if content_length > MAX_BODY {
                        return Err(format!("body of {content_length} bytes is too large"));
                    }
                }
                "transfer-encoding" => {
                    return Err("chunked request bodies are not supported".into())
                }
                _ => {}
            }
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Ok(Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            keep_alive,
            content_length,
        })
    }

    /// The value of query parameter `name`, if present.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn json(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "application/json",
            body,
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// Writes the response; `extra` are additional `Name: value` header lines.
    pub fn write_to(
        &self,
        w: &mut impl Write,
        head_only: bool,
        keep_alive: bool,
        extra: &[(&str, &str)],
    ) -> io::Result<()> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        for (name, value) in extra {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        if !head_only {
            out.push_str(&self.body);
        }
        w.write_all(out.as_bytes())?;
        w.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// What reading the next request head gave.
pub enum Head {
    Complete(Vec<u8>),
    /// The peer closed the connection (or `give_up` said so) before a request began.
    Closed,
}

/// Reads one request head. The underlying stream has a short read timeout; each time it
/// fires, `give_up(started)` is asked whether to stop waiting (`started` tells whether part
/// of a request was already read: a started request is never abandoned for shutdown).
pub fn read_head(r: &mut impl BufRead, mut give_up: impl FnMut(bool) -> bool) -> io::Result<Head> {
    let mut head = Vec::new();
    loop {
        match r.read_until(b'\n', &mut head) {
            Ok(0) if head.is_empty() => return Ok(Head::Closed),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-request",
                ))
            }
            Ok(_) => {
                // Blank lines before a request line are allowed (RFC 9112 2.2).
                if head.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    head.clear();
                    continue;
                }
                if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
                    let trim = if head.ends_with(b"\r\n\r\n") { 4 } else { 2 };
                    head.truncate(head.len() - trim);
                    return Ok(Head::Complete(head));
                }
            }
            Err(e) if is_timeout(&e) => {
                if give_up(!head.is_empty()) {
                    return Ok(Head::Closed);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
}

/// Reads and discards `n` body bytes, retrying across read timeouts.
pub fn skip_body(r: &mut impl Read, mut n: usize) -> io::Result<()> {
    let mut buf = [0u8; 8192];
    while n > 0 {
        let want = n.min(buf.len());
        match r.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-body",
                ))
            }
            Ok(k) => n -= k,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Seconds since the Unix epoch as RFC 3339 UTC, e.g. `2026-11-23T10:00:00Z`.
pub fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn parses_keep_alive_rules() {
        let r = Request::parse(b"GET /slow?ms=20&x=1 HTTP/1.1\r\nHost: a").unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.keep_alive),
            ("GET", "/slow", true)
        );
        assert_eq!(r.query_param("ms"), Some("20"));
        assert_eq!(r.query_param("y"), None);
        assert!(
            !Request::parse(b"GET / HTTP/1.1\r\nConnection: close")
                .unwrap()
                .keep_alive
        );
        assert!(!Request::parse(b"GET / HTTP/1.0").unwrap().keep_alive);
        assert!(
            Request::parse(b"GET / HTTP/1.0\r\nconnection: Keep-Alive")
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(Request::parse(b"GET /").is_err());
        assert!(Request::parse(b"GET / HTTP/2").is_err());
        assert!(Request::parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked").is_err());
        assert!(Request::parse(b"GET / HTTP/1.1\r\nno-colon").is_err());
    }

    #[test]
    fn reads_pipelined_heads() {
        let mut c =
            Cursor::new(b"\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n\r\n".to_vec());
        let mut heads = Vec::new();
        while let Head::Complete(h) = read_head(&mut c, |_| true).unwrap() {
            heads.push(Request::parse(&h).unwrap().path);
        }
        assert_eq!(heads, vec!["/a", "/b"]);
    }

    #[test]
    fn writes_responses() {
        let mut out = Vec::new();
        Response::text(200, "v1")
            .write_to(&mut out, false, false, &[("X-A", "b")])
            .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(s.contains("Content-Length: 2\r\nConnection: close\r\nX-A: b\r\n\r\nv1"));
    }

    #[test]
    fn formats() {
        assert_eq!(json_str("a\"b\\\n"), r#""a\"b\\\n""#);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
