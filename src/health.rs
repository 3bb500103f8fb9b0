//! Health checks: a pure state machine ([`Tracker`]) that turns check results into a
//! verdict, a loop that runs a check until there is one ([`wait_healthy`]), and the HTTP and
//! TCP probes. The targets supply the other kinds (a command in the container, the image's
//! HEALTHCHECK) as closures returning [`CheckResult`], and report a container that exited as
//! [`CheckResult::Fatal`] so a rollout fails at once instead of at the deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// When a new instance counts as healthy or unhealthy (from a service's `health` config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Time from the end of one check to the start of the next.
    pub interval: Duration,
    /// The longest one check may take; a slower one is a failure.
    pub timeout: Duration,
    /// Failures in this time after start do not count (successes do).
    pub start_period: Duration,
    /// Consecutive passes to be healthy.
    pub healthy_threshold: u32,
    /// Consecutive counted failures to be unhealthy.
    pub unhealthy_threshold: u32,
    /// The longest the instance may take to become healthy, whatever the checks say.
    pub deadline: Duration,
}

impl From<&crate::config::model::Health> for Thresholds {
    fn from(h: &crate::config::model::Health) -> Self {
        Thresholds {
            interval: h.interval.0,
            timeout: h.timeout.0,
            start_period: h.start_period.0,
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
            deadline: h.deadline.0,
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    Pass,
    /// Failed, with a short reason ("status 503", "connection refused").
    Fail(String),
    /// The instance is gone (the container exited or restarted): waiting cannot help.
    Fatal(String),
}

/// What the checks so far say.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not decided yet: keep checking.
    Pending,
    Healthy,
    /// `unhealthy_threshold` consecutive failures past the start period; the last reason.
    Unhealthy(String),
    /// A check reported the instance gone.
    Fatal(String),
    /// The deadline passed before the instance became healthy. A failure, like the others.
    TimedOut(String),
}

/// Turns a sequence of check results into a [`Verdict`]. Pure: the caller says how long
/// after start each result was observed.
#[derive(Debug, Clone)]
pub struct Tracker {
    th: Thresholds,
    passes: u32,
    failures: u32,
    last_failure: Option<String>,
}

impl Tracker {
    pub fn new(th: &Thresholds) -> Self {
        Tracker {
            th: *th,
            passes: 0,
            failures: 0,
            last_failure: None,
        }
    }

    /// Records one result observed `since_start` after the instance started.
    pub fn observe(&mut self, since_start: Duration, result: &CheckResult) -> Verdict {
        // An exit says more than a timeout, so it wins even past the deadline.
        if let CheckResult::Fatal(reason) = result {
            return Verdict::Fatal(reason.clone());
        }
        if since_start >= self.th.deadline {
            if let CheckResult::Fail(reason) = result {
                self.last_failure = Some(reason.clone());
            }
            return self.expired();
        }
        match result {
            CheckResult::Pass => {
                self.passes += 1;
                self.failures = 0;
                self.last_failure = None;
                if self.passes >= self.th.healthy_threshold.max(1) {
                    return Verdict::Healthy;
                }
            }
            CheckResult::Fail(reason) => {
                self.passes = 0;
                self.last_failure = Some(reason.clone());
                if since_start >= self.th.start_period {
                    self.failures += 1;
                    if self.failures >= self.th.unhealthy_threshold.max(1) {
                        return Verdict::Unhealthy(reason.clone());
                    }
                }
            }
            CheckResult::Fatal(_) => unreachable!("handled above"),
        }
        Verdict::Pending
    }

    /// The verdict when the deadline has passed without a decision.
    pub fn expired(&self) -> Verdict {
        let last = match &self.last_failure {
            Some(reason) => format!("last check: {reason}"),
            None if self.passes > 0 => format!(
                "{} of {} checks passed",
                self.passes,
                self.th.healthy_threshold.max(1)
            ),
            None => "no check finished".to_string(),
        };
        Verdict::TimedOut(format!(
            "not healthy within {} ({last})",
            human(self.th.deadline)
        ))
    }
}

/// Runs `check` (at once, then `interval` after each one ends) until the verdict is no
/// longer [`Verdict::Pending`]. Each check is cut at `th.timeout`, and the whole wait at
/// `th.deadline`, also in the middle of a check that hangs.
pub async fn wait_healthy<F, Fut>(th: &Thresholds, mut check: F) -> Verdict
where
    F: FnMut() -> Fut,
    Fut: Future<Output = CheckResult>,
{
    let start = Instant::now();
    let deadline = start + th.deadline;
    let mut tracker = Tracker::new(th);
    loop {
        let attempt = tokio::time::timeout(th.timeout, check());
        let result = match tokio::time::timeout_at(deadline, attempt).await {
            Err(_) => return tracker.expired(),
            Ok(Err(_)) => CheckResult::Fail(format!("timed out after {}", human(th.timeout))),
            Ok(Ok(result)) => result,
        };
        tracing::trace!(?result, "health check");
        let verdict = tracker.observe(start.elapsed(), &result);
        if verdict != Verdict::Pending {
            return verdict;
        }
        let next = Instant::now() + th.interval;
        if next >= deadline {
            tokio::time::sleep_until(deadline).await;
            return tracker.expired();
        }
        tokio::time::sleep_until(next).await;
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`; passes when the status is
/// `expect_status`.
pub async fn http_check(
    addr: SocketAddr,
    path: &str,
    expect_status: u16,
    timeout: Duration,
) -> CheckResult {
    match tokio::time::timeout(timeout, http_status(addr, path)).await {
        Err(_) => CheckResult::Fail(format!("timed out after {}", human(timeout))),
        Ok(Err(e)) => CheckResult::Fail(io_reason(&e)),
        Ok(Ok(status)) if status == expect_status => CheckResult::Pass,
        Ok(Ok(status)) => CheckResult::Fail(format!("status {status}")),
    }
}

/// Passes when `addr` accepts a TCP connection.
pub async fn tcp_check(addr: SocketAddr, timeout: Duration) -> CheckResult {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => CheckResult::Fail(format!("timed out after {}", human(timeout))),
        Ok(Err(e)) => CheckResult::Fail(io_reason(&e)),
        Ok(Ok(_)) => CheckResult::Pass,
    }
}

/// The most of a response read before its status line must have ended.
const MAX_STATUS_LINE: usize = 8 * 1024;

async fn http_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    use std::io::{Error, ErrorKind};
    if !path.starts_with('/') || path.contains(|c: char| c.is_ascii_whitespace()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("bad path {path:?}"),
        ));
    }
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: packfy-deploy\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // Only the status line matters; the rest of the answer is not waited for.
    while !head.contains(&b'\n') {
        if head.len() > MAX_STATUS_LINE {
            return Err(Error::new(ErrorKind::InvalidData, "no HTTP status line"));
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status_line(&head)
        .ok_or_else(|| Error::new(ErrorKind::InvalidData, "not an HTTP response"))
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    let code = parts.next()?;
    (code.len() == 3).then_some(())?;
    code.parse().ok()
}

/// Short reasons for the failures people see most.
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".to_string(),
        ConnectionReset => "connection reset".to_string(),
        ConnectionAborted => "connection aborted".to_string(),
        _ => e.to_string(),
    }
}

/// `1s`, `1.5s`, `250ms`, `2m`: durations as people write them in config.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn th() -> Thresholds {
        Thresholds {
            interval: ms(10),
            timeout: ms(100),
            start_period: ms(0),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            deadline: ms(1000),
        }
    }

    fn fail(r: &str) -> CheckResult {
        CheckResult::Fail(r.to_string())
    }

    #[test]
    fn from_config_copies_every_field() {
        let h = crate::config::model::Health {
            start_period: crate::config::model::Duration::from_secs(7),
            healthy_threshold: 4,
            ..Default::default()
        };
        let t = Thresholds::from(&h);
        assert_eq!(t.interval, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(5));
        assert_eq!(t.start_period, Duration::from_secs(7));
        assert_eq!(t.deadline, Duration::from_secs(120));
        assert_eq!((t.healthy_threshold, t.unhealthy_threshold), (4, 3));
    }

    #[test]
    fn healthy_after_consecutive_passes() {
        let mut t = Tracker::new(&th());
        assert_eq!(t.observe(ms(0), &CheckResult::Pass), Verdict::Pending);
        assert_eq!(t.observe(ms(10), &CheckResult::Pass), Verdict::Healthy);
    }

    #[test]
    fn a_failure_resets_the_passes() {
        let mut t = Tracker::new(&th());
        assert_eq!(t.observe(ms(0), &CheckResult::Pass), Verdict::Pending);
        assert_eq!(t.observe(ms(10), &fail("status 503")), Verdict::Pending);
        assert_eq!(t.observe(ms(20), &CheckResult::Pass), Verdict::Pending);
        assert_eq!(t.observe(ms(30), &CheckResult::Pass), Verdict::Healthy);
    }

    #[test]
    fn unhealthy_after_consecutive_failures_with_the_last_reason() {
        let mut t = Tracker::new(&th());
        assert_eq!(
            t.observe(ms(0), &fail("connection refused")),
            Verdict::Pending
        );
        assert_eq!(
            t.observe(ms(10), &fail("connection refused")),
            Verdict::Pending
        );
        assert_eq!(
            t.observe(ms(20), &fail("status 503")),
            Verdict::Unhealthy("status 503".into())
        );
    }

    #[test]
    fn a_pass_resets_the_failures() {
        let mut t = Tracker::new(&th());
        t.observe(ms(0), &fail("x"));
        t.observe(ms(10), &fail("x"));
        t.observe(ms(20), &CheckResult::Pass);
        assert_eq!(t.observe(ms(30), &fail("x")), Verdict::Pending);
        assert_eq!(t.observe(ms(40), &fail("x")), Verdict::Pending);
        assert_eq!(
            t.observe(ms(50), &fail("x")),
            Verdict::Unhealthy("x".into())
        );
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_but_passes_do() {
        let th = Thresholds {
            start_period: ms(100),
            ..th()
        };
        let mut t = Tracker::new(&th);
        for at in [0, 20, 40, 60, 80] {
            assert_eq!(t.observe(ms(at), &fail("starting")), Verdict::Pending);
        }
        assert_eq!(t.observe(ms(100), &fail("x")), Verdict::Pending);
        assert_eq!(t.observe(ms(110), &fail("x")), Verdict::Pending);
        assert_eq!(
            t.observe(ms(120), &fail("x")),
            Verdict::Unhealthy("x".into())
        );

        let mut t = Tracker::new(&th);
        assert_eq!(t.observe(ms(10), &CheckResult::Pass), Verdict::Pending);
        assert_eq!(t.observe(ms(20), &CheckResult::Pass), Verdict::Healthy);
    }

    #[test]
    fn past_the_deadline_is_timed_out_whatever_the_check_says() {
        let mut t = Tracker::new(&th());
        t.observe(ms(0), &fail("status 503"));
        t.observe(ms(500), &CheckResult::Pass);
        let v = t.observe(ms(1000), &CheckResult::Pass);
        assert_eq!(
            v,
            Verdict::TimedOut("not healthy within 1s (1 of 2 checks passed)".into())
        );
        let mut t = Tracker::new(&th());
        assert!(matches!(
            t.observe(ms(1001), &fail("status 500")),
            Verdict::TimedOut(r) if r.contains("status 500")
        ));
        assert_eq!(
            Tracker::new(&th()).expired(),
            Verdict::TimedOut("not healthy within 1s (no check finished)".into())
        );
    }

    #[test]
    fn fatal_is_immediate_even_in_the_start_period() {
        let th = Thresholds {
            start_period: ms(10_000),
            ..th()
        };
        let mut t = Tracker::new(&th);
        assert_eq!(
            t.observe(ms(0), &CheckResult::Fatal("exited with code 1".into())),
            Verdict::Fatal("exited with code 1".into())
        );
    }

    #[test]
    fn zero_thresholds_mean_one() {
        let th = Thresholds {
            healthy_threshold: 0,
            unhealthy_threshold: 0,
            ..th()
        };
        assert_eq!(
            Tracker::new(&th).observe(ms(0), &CheckResult::Pass),
            Verdict::Healthy
        );
        assert_eq!(
            Tracker::new(&th).observe(ms(0), &fail("x")),
            Verdict::Unhealthy("x".into())
        );
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(ms(250)), "250ms");
        assert_eq!(human(ms(1000)), "1s");
        assert_eq!(human(ms(1500)), "1.5s");
        assert_eq!(human(Duration::from_secs(120)), "2m");
    }

    /// A check that answers from a script, then keeps answering with its last entry.
    fn scripted(
        script: Vec<CheckResult>,
    ) -> (
        Arc<AtomicU32>,
        impl FnMut() -> std::future::Ready<CheckResult>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let check = move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) as usize;
            std::future::ready(script[n.min(script.len() - 1)].clone())
        };
        (calls, check)
    }

    #[tokio::test]
    async fn wait_healthy_stops_at_the_first_verdict() {
        let (calls, check) = scripted(vec![
            fail("connection refused"),
            CheckResult::Pass,
            CheckResult::Pass,
        ]);
        assert_eq!(wait_healthy(&th(), check).await, Verdict::Healthy);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn wait_healthy_reports_unhealthy() {
        let (calls, check) = scripted(vec![fail("status 503")]);
        assert_eq!(
            wait_healthy(&th(), check).await,
            Verdict::Unhealthy("status 503".into())
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn fatal_stops_at_once() {
        let th = Thresholds {
            start_period: Duration::from_secs(60),
            deadline: Duration::from_secs(60),
            ..th()
        };
        let (calls, check) = scripted(vec![
            fail("starting"),
            CheckResult::Fatal("exited (1)".into()),
        ]);
        let started = Instant::now();
        assert_eq!(
            wait_healthy(&th, check).await,
            Verdict::Fatal("exited (1)".into())
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_check_that_never_returns_times_out_at_the_deadline() {
        // The per-check timeout is longer than the deadline: only the deadline can end it.
        let th = Thresholds {
            timeout: Duration::from_secs(30),
            deadline: ms(200),
            ..th()
        };
        let started = Instant::now();
        let v = wait_healthy(&th, std::future::pending::<CheckResult>).await;
        let took = started.elapsed();
        assert_eq!(
            v,
            Verdict::TimedOut("not healthy within 200ms (no check finished)".into())
        );
        assert!(took >= ms(200) && took < ms(2000), "{took:?}");
    }

    #[tokio::test]
    async fn a_slow_check_fails_with_its_timeout() {
        let th = Thresholds {
            timeout: ms(20),
            unhealthy_threshold: 2,
            ..th()
        };
        let v = wait_healthy(&th, || async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            CheckResult::Pass
        })
        .await;
        assert_eq!(v, Verdict::Unhealthy("timed out after 20ms".into()));
    }

    #[tokio::test]
    async fn never_healthy_in_the_start_period_times_out_with_the_last_reason() {
        // Failures never count before the deadline, so only the deadline can end this.
        let th = Thresholds {
            start_period: Duration::from_secs(60),
            deadline: ms(100),
            ..th()
        };
        let (_, check) = scripted(vec![fail("status 503")]);
        assert_eq!(
            wait_healthy(&th, check).await,
            Verdict::TimedOut("not healthy within 100ms (last check: status 503)".into())
        );
    }

    /// Serves one canned answer per connection, after reading the request head.
    async fn serve(answer: &'static str) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 512];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            if answer.is_empty() {
                // Silent: holds the connection open without answering.
                tokio::time::sleep(Duration::from_secs(30)).await;
            } else {
                conn.write_all(answer.as_bytes()).await.unwrap();
            }
            String::from_utf8(request).unwrap()
        });
        (addr, task)
    }

    #[tokio::test]
    async fn http_check_passes_on_the_expected_status() {
        let (addr, server) =
            serve("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
        assert_eq!(
            http_check(addr, "/health", 200, ms(1000)).await,
            CheckResult::Pass
        );
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
        assert!(
            request.contains(&format!("\r\nHost: {addr}\r\n")),
            "{request}"
        );
    }

    #[tokio::test]
    async fn http_check_fails_on_another_status() {
        let (addr, _server) = serve("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        assert_eq!(
            http_check(addr, "/health", 200, ms(1000)).await,
            fail("status 503")
        );
    }

    #[tokio::test]
    async fn http_check_reasons_for_refused_silent_and_junk() {
        // A port that was just free: nothing listens there.
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert_eq!(
            http_check(refused, "/health", 200, ms(1000)).await,
            fail("connection refused")
        );
        assert_eq!(
            tcp_check(refused, ms(1000)).await,
            fail("connection refused")
        );

        let (silent, server) = serve("").await;
        assert_eq!(
            http_check(silent, "/health", 200, ms(150)).await,
            fail("timed out after 150ms")
        );
        server.abort();

        let (junk, _server) = serve("SSH-2.0-OpenSSH\r\n").await;
        assert_eq!(
            http_check(junk, "/health", 200, ms(1000)).await,
            fail("not an HTTP response")
        );
    }

    #[tokio::test]
    async fn tcp_check_passes_when_something_listens() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(tcp_check(addr, ms(1000)).await, CheckResult::Pass);
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 500\r\n"), Some(500));
        assert_eq!(parse_status_line(b"ICY 200 OK\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 20x\r\n"), None);
    }
}
