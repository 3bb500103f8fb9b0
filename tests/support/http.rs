//! HTTP/1.1 over plain TCP with std only: one-shot requests, kept-alive connections, a
//! response parser, and waiting for a state ([`wait_until`], [`wait_http_status`]).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// An HTTP response as [`http_request`] reads it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// One `GET path` to `addr` (`127.0.0.1:PORT`) over HTTP/1.1 with `Connection: close`,
/// timing out after 10 s. Errors when nothing answers, for readiness loops.
pub fn http_request(addr: &str, path: &str) -> io::Result<HttpResponse> {
    let timeout = Duration::from_secs(10);
    let sock = addr.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no address for {addr}"),
        )
    })?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(3))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    // One write and no Nagle delay: `write!` sends the request in pieces, and each piece
    // after the first waited for the delayed ACK (~40 ms a request, measured: a load client
    // with a new connection per request made 20 requests/s).
    s.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: packfy-tests\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// A kept-alive HTTP/1.1 connection: several requests, one TCP connection (as HAProxy and
/// real clients reuse them). Responses must carry a Content-Length.
pub struct HttpConnection {
    addr: String,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConnection {
    pub fn open(addr: &str) -> io::Result<HttpConnection> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        // One write per request and no Nagle delay: small writes otherwise wait on delayed
        // ACKs and cap a keep-alive load loop near 25 requests/s per connection.
        stream.set_nodelay(true)?;
        Ok(HttpConnection {
            addr: addr.to_string(),
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends `GET path` (keep-alive) without reading the answer: see [`HttpConnection::read`].
    pub fn send(&mut self, path: &str) -> io::Result<()> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: packfy-tests\r\n\r\n",
            self.addr
        );
        self.stream.write_all(request.as_bytes())
    }

    /// Reads the answer to the oldest request sent.
    pub fn read(&mut self) -> io::Result<HttpResponse> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let rest = self.buf.split_off(end + 4 + len);
                    let whole = std::mem::replace(&mut self.buf, rest);
                    return parse_response(&whole);
                }
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a whole response",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// `GET path` and its answer.
    pub fn get(&mut self, path: &str) -> io::Result<HttpResponse> {
        self.send(path)?;
        self.read()
    }
}

/// Parses a whole HTTP/1.x response (Content-Length or chunked body).
pub fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    } else if let Some(n) = headers
        .get("content-length")
        .and_then(|n| n.parse::<usize>().ok())
    {
        body.truncate(n);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// `GET path` on `addr`: `(status, body)`. Panics when nothing answers.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let r = http_request(addr, path).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
    (r.status, r.body)
}

/// Polls `check` every 100 ms until it returns true; panics after `timeout`, naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `GET path` on `addr` answers `status`.
pub fn wait_http_status(addr: &str, path: &str, status: u16, timeout: Duration) {
    wait_until(
        timeout,
        &format!("http://{addr}{path} to answer {status}"),
        || http_request(addr, path).is_ok_and(|r| r.status == status),
    );
}
