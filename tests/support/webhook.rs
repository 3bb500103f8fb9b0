//! A webhook receiver for tests: a std `TcpListener` on 127.0.0.1 that records every request
//! and answers from a script (the last reply repeats). One thread per connection, HTTP/1.1
//! with `Content-Length` bodies, every answer closes its connection.
//!
//! ```ignore
//! let rx = Receiver::start(&[Reply::Status(500), Reply::Status(200)]);
//! // … POST to rx.url("/hook") …
//! let reqs = rx.wait_for(2, Duration::from_secs(5));
//! assert!(reqs[1].verify_signature(b"key"));
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, an empty body.
    Status(u16),
    /// This status with one extra header (`Retry-After: 1`) and a body.
    With(u16, &'static str, &'static str),
    /// Read the request, then never answer (the connection stays open for a minute).
    Hang,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// Checks `X-Packfy-Signature: sha256=<hex>` against HMAC-SHA256(key, body), in constant time.
    pub fn verify_signature(&self, key: &[u8]) -> bool {
        let Some(hex_sig) = self
            .header("x-packfy-signature")
            .and_then(|v| v.strip_prefix("sha256="))
        else {
            return false;
        };
        let Ok(sig) = hex::decode(hex_sig) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
        mac.update(&self.body);
        mac.verify_slice(&sig).is_ok()
    }
}

/// A running receiver; it stops accepting when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    pub fn start(script: &[Reply]) -> Receiver {
        assert!(!script.is_empty(), "a receiver needs at least one reply");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (reqs, stop2, script) = (requests.clone(), stop.clone(), script.to_vec());
        thread::spawn(move || {
            let served = Arc::new(Mutex::new(0usize));
            for conn in listener.incoming() {
                if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (reqs, script, served) = (reqs.clone(), script.clone(), served.clone());
                thread::spawn(move || serve(conn, &reqs, &script, &served));
            }
        });
        Receiver {
            addr,
            requests,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests once there are at least `n`; panics after `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let start = Instant::now();
        loop {
            let r = self.requests();
            if r.len() >= n {
                return r;
            }
            assert!(
                start.elapsed() < timeout,
                "the receiver got {} request(s), expected {n}",
                r.len()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(conn: TcpStream, reqs: &Mutex<Vec<Request>>, script: &[Reply], served: &Mutex<usize>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone the stream"));
    // One request per connection is enough: every answer says `Connection: close`.
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let reply = {
        let mut n = served.lock().unwrap();
        let reply = script[(*n).min(script.len() - 1)].clone();
        *n += 1;
        reqs.lock().unwrap().push(Request {
            method,
            path,
            headers,
            body,
            at: Instant::now(),
        });
        reply
    };
    let mut conn = conn;
    let (status, extra, text) = match reply {
        Reply::Hang => {
            thread::sleep(Duration::from_secs(60));
            return;
        }
        Reply::Status(s) => (s, "", ""),
        Reply::With(s, h, t) => (s, h, t),
    };
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!("{extra}\r\n")
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n{extra}\r\n{text}",
        text.len()
    );
    let _ = conn.flush();
}
