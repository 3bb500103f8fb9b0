//! Helpers shared by the integration tests that need the real test environment (Docker
//! engines, registry, HAProxy, PostgreSQL) that `make env-up` starts.
//!
//! Use it from a test file with `mod support;`, then start each test with
//!
//! ```ignore
//! let Some(env) = support::TestEnv::get() else { return };
//! ```
//!
//! When the environment is not up, a test returns early after a note on stderr, except
//! under `CI=true`, where [`TestEnv::get`] panics naming what is missing: in CI a missing
//! part is a failure, never a silent skip.
//!
//! Conventions that keep tests independent of each other (they run in parallel threads):
//! - name containers, images and tables with [`unique_name`], and hold containers in a
//!   [`Container`] guard so they are removed even when the test panics;
//! - never share an HAProxy backend: lease one with [`TestEnv::lease_lane`] (a file lock;
//!   the lane's servers are deleted when the lease is dropped).
//!
//! Everything here uses std only, the CLI under test ([`cli`], [`run_cli`]) and the `docker`,
//! `psql` and `pg_dump` command-line tools.
//! [`webhook`] (a recording webhook receiver) also uses the crate's hmac, sha2 and serde_json.
#![allow(dead_code)]

pub mod webhook;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The repository root (the main crate's manifest directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The running test environment, as `target/test-env/env.sh` describes it.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// `DOCKER_HOST`: the first engine, e.g. `unix:///…/docker-pf1.sock`.
    pub docker_host: String,
    /// `PACKFY_DOCKER_HOSTS`: every engine (region host), the first one included.
    pub docker_hosts: Vec<String>,
    /// `PACKFY_REGISTRY`: `127.0.0.1:PORT` of the image registry (plain HTTP).
    pub registry: String,
    /// `PACKFY_HAPROXY_SOCKET`: HAProxy's Runtime API socket (level admin).
    pub haproxy_socket: PathBuf,
    /// `PACKFY_HAPROXY_FRONTEND` / `PACKFY_HAPROXY_BACKEND`: the first region's pair.
    pub haproxy_frontend: String,
    pub haproxy_backend: String,
    /// `PACKFY_HAPROXY_FRONTENDS` / `PACKFY_HAPROXY_BACKENDS`: one pair per Docker host,
    /// in the order of `docker_hosts`.
    pub haproxy_frontends: Vec<String>,
    pub haproxy_backends: Vec<String>,
    /// `PACKFY_HAPROXY_TEST_BACKENDS` / `PACKFY_HAPROXY_TEST_FRONTENDS`: the test lanes,
    /// leased with [`TestEnv::lease_lane`].
    pub lane_backends: Vec<String>,
    pub lane_frontends: Vec<String>,
    /// `PACKFY_PG_URL`: `postgresql://packfy:packfy@127.0.0.1:PORT/packfy`.
    pub pg_url: String,
    /// `PACKFY_SAMPLE_BIN`: the sample app's static binary.
    pub sample_bin: PathBuf,
    /// `PACKFY_ENV_DIR`: target/test-env (logs/, run/, locks/ …).
    pub env_dir: PathBuf,
}

const REQUIRED: &[&str] = &[
    "DOCKER_HOST",
    "PACKFY_DOCKER_HOSTS",
    "PACKFY_REGISTRY",
    "PACKFY_HAPROXY_SOCKET",
    "PACKFY_HAPROXY_FRONTEND",
    "PACKFY_HAPROXY_BACKEND",
    "PACKFY_HAPROXY_FRONTENDS",
    "PACKFY_HAPROXY_BACKENDS",
    "PACKFY_HAPROXY_TEST_FRONTENDS",
    "PACKFY_HAPROXY_TEST_BACKENDS",
    "PACKFY_PG_URL",
    "PACKFY_SAMPLE_BIN",
];

/// The test environment's variables: the process's when `PACKFY_TEST_ENV` is set (`make test`
/// sources env.sh), else `target/test-env/env.sh`'s.
fn env_vars() -> Result<HashMap<String, String>, String> {
    if std::env::var_os("PACKFY_TEST_ENV").is_some() {
        return Ok(std::env::vars().collect());
    }
    let file = repo_root().join("target/test-env/env.sh");
    let text = fs::read_to_string(&file).map_err(|e| {
        format!(
            "PACKFY_TEST_ENV is not set and {} cannot be read ({e})",
            file.display()
        )
    })?;
    Ok(parse_env_sh(&text))
}

/// The test Kubernetes cluster (tests/k8s/up.sh, part of `make env-up`): its kubeconfig, the
/// context in it, and the kubectl built with it.
#[derive(Debug, Clone)]
pub struct KubeEnv {
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub context: String,
}

impl KubeEnv {
    /// The cluster, or `None` (after a note) when it is not up; under `CI=true` a missing
    /// cluster panics naming what is missing.
    pub fn get() -> Option<KubeEnv> {
        let found = env_vars().and_then(|vars| {
            let get = |k: &str| {
                vars.get(k)
                    .filter(|v| !v.is_empty())
                    .cloned()
                    .ok_or_else(|| format!("{k} is not set (tests/k8s/up.sh writes it)"))
            };
            let env = KubeEnv {
                kubeconfig: PathBuf::from(get("PACKFY_KUBECONFIG")?),
                kubectl: PathBuf::from(get("PACKFY_KUBECTL")?),
                context: String::new(),
            };
            if !env.kubeconfig.exists() || !env.kubectl.exists() {
                return Err(format!(
                    "{} or {} does not exist",
                    env.kubeconfig.display(),
                    env.kubectl.display()
                ));
            }
            let out = Command::new(&env.kubectl)
                .args(["--kubeconfig"])
                .arg(&env.kubeconfig)
                .args(["config", "current-context"])
                .output()
                .map_err(|e| format!("cannot run kubectl: {e}"))?;
            let context = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if context.is_empty() {
                return Err("the test kubeconfig has no current context".into());
            }
            Ok(KubeEnv { context, ..env })
        });
        match found {
            Ok(k) => Some(k),
            Err(why) if is_ci() => panic!("test cluster not available under CI=true: {why}"),
            Err(why) => {
                eprintln!("skipping: test cluster not up (run `make env-up`): {why}");
                None
            }
        }
    }

    /// `kubectl ARGS` against the test cluster (whatever it exits with).
    pub fn kubectl_try<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Output {
        Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=20s")
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// `kubectl ARGS`; panics with its stderr unless it exits 0; stdout.
    pub fn kubectl<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> String {
        let out = self.kubectl_try(args);
        assert!(
            out.status.success(),
            "kubectl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

fn is_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

impl TestEnv {
    /// The environment, or `None` (after a note on stderr) when it is not up. Under
    /// `CI=true` a missing environment panics instead, naming what is missing.
    ///
    /// Read from the process environment when `PACKFY_TEST_ENV` is set (`make test` sources
    /// env.sh), else from `target/test-env/env.sh` when it exists (after `make env-up`).
    pub fn get() -> Option<TestEnv> {
        match Self::load() {
            Ok(env) => Some(env),
            Err(why) if is_ci() => panic!("test environment not available under CI=true: {why}"),
            Err(why) => {
                eprintln!("skipping: test environment not up (run `make env-up`): {why}");
                None
            }
        }
    }

    /// Like [`TestEnv::get`], but also requires at least `n` Docker hosts.
    pub fn with_docker_hosts(n: usize) -> Option<TestEnv> {
        let env = Self::get()?;
        if env.docker_hosts.len() >= n {
            return Some(env);
        }
        let why = format!(
            "this test needs {n} Docker hosts, PACKFY_DOCKER_HOSTS has {} (PACKFY_DOCKERD_COUNT)",
            env.docker_hosts.len()
        );
        if is_ci() {
            panic!("{why}");
        }
        eprintln!("skipping: {why}");
        None
    }

    fn load() -> Result<TestEnv, String> {
        let vars = env_vars()?;
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|k| vars.get(*k).is_none_or(|v| v.is_empty()))
            .collect();
        if !missing.is_empty() {
            return Err(format!("missing {}", missing.join(", ")));
        }
        let var = |k: &str| vars[k].clone();
        let list = |k: &str| {
            vars[k]
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let env = TestEnv {
            docker_host: var("DOCKER_HOST"),
            docker_hosts: list("PACKFY_DOCKER_HOSTS"),
            registry: var("PACKFY_REGISTRY"),
            haproxy_socket: PathBuf::from(var("PACKFY_HAPROXY_SOCKET")),
            haproxy_frontend: var("PACKFY_HAPROXY_FRONTEND"),
            haproxy_backend: var("PACKFY_HAPROXY_BACKEND"),
            haproxy_frontends: list("PACKFY_HAPROXY_FRONTENDS"),
            haproxy_backends: list("PACKFY_HAPROXY_BACKENDS"),
            lane_backends: list("PACKFY_HAPROXY_TEST_BACKENDS"),
            lane_frontends: list("PACKFY_HAPROXY_TEST_FRONTENDS"),
            pg_url: var("PACKFY_PG_URL"),
            sample_bin: PathBuf::from(var("PACKFY_SAMPLE_BIN")),
            env_dir: vars
                .get("PACKFY_ENV_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("target/test-env")),
        };
        // A stale env.sh (the machine was restarted, say) names sockets that are gone.
        for sock in env
            .docker_hosts
            .iter()
            .filter_map(|h| h.strip_prefix("unix://"))
        {
            if !Path::new(sock).exists() {
                return Err(format!("Docker socket {sock} does not exist"));
            }
        }
        if !env.haproxy_socket.exists() {
            return Err(format!(
                "HAProxy socket {} does not exist",
                env.haproxy_socket.display()
            ));
        }
        Ok(env)
    }

    /// Builds the sample app image `packfy-sample:VERSION` on `host` with
    /// tests/env/build-sample.sh; `build_args` are baked into the image's environment, e.g.
    /// `[("NEVER_HEALTHY", "1")]` (see tests/sample-app/Dockerfile). The image is removed
    /// when the returned guard is dropped; use a [`unique_name`] as VERSION.
    pub fn build_sample(&self, host: &str, version: &str, build_args: &[(&str, &str)]) -> Image {
        let script = repo_root().join("tests/env/build-sample.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script).arg(version).env("DOCKER_HOST", host);
        for (k, v) in build_args {
            cmd.arg(format!("{k}={v}"));
        }
        let out = run(&mut cmd);
        let reference = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        assert!(
            !reference.is_empty(),
            "build-sample.sh printed no image reference"
        );
        Image {
            host: host.to_string(),
            reference,
        }
    }

    /// Leases a test lane: an HAProxy backend and its frontend that no other test uses
    /// until the lease is dropped. Waits (up to 3 minutes) while every lane is taken. The
    /// lane starts empty, and its servers are deleted again when the lease is dropped.
    pub fn lease_lane(&self) -> Lane {
        assert!(
            !self.lane_backends.is_empty(),
            "no HAProxy test lanes (PACKFY_HAPROXY_TEST_LANES=0?)"
        );
        let dir = self.env_dir.join("locks");
        fs::create_dir_all(&dir).expect("create target/test-env/locks");
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            for (backend, frontend) in self.lane_backends.iter().zip(&self.lane_frontends) {
                if let Some(lock) = LaneLock::try_acquire(dir.join(format!("{backend}.lock"))) {
                    let lane = Lane {
                        backend: backend.clone(),
                        frontend: frontend.clone(),
                        socket: self.haproxy_socket.clone(),
                        _lock: lock,
                    };
                    lane.clear();
                    return lane;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no HAProxy test lane became free within 3 minutes"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Parses the `export KEY="value"` lines of env.sh (also `KEY=value` and single quotes).
pub fn parse_env_sh(text: &str) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    for line in text.lines().map(str::trim) {
        let line = line.strip_prefix("export ").unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let value = if let Some(v) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            v.replace("\\\"", "\"").replace("\\\\", "\\")
        } else if let Some(v) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            v.to_string()
        } else {
            // Unquoted, as printf %q writes it: backslash escapes.
            let mut out = String::new();
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    out.extend(chars.next());
                } else {
                    out.push(c);
                }
            }
            out
        };
        vars.insert(key.to_string(), value);
    }
    vars
}

/// A name no other test (or earlier run) uses: `PREFIX-PID-N-NANOS`, lowercase, valid for
/// containers, image tags, HAProxy servers and SQL identifiers (no `-` there: use
/// [`unique_ident`]).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
    .to_ascii_lowercase()
}

/// [`unique_name`] with `_` instead of `-`: an SQL identifier.
pub fn unique_ident(prefix: &str) -> String {
    unique_name(prefix).replace('-', "_")
}

/// The CLI under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_packfy-deploy");

/// `packfy-deploy --regions-dir DIR/regions ARGS`, run in `dir` as actor `tester`, with no
/// `PACKFY_ENV` inherited and stdin closed (never a terminal): the command of a test that
/// keeps its regions in a directory of its own. Add what its regions need (`.env(…)`), then
/// run it with [`run_cli`].
pub fn cli(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .arg("--regions-dir")
        .arg(dir.join("regions"))
        .args(args)
        .env("PACKFY_ACTOR", "tester")
        .env_remove("PACKFY_ENV")
        .stdin(Stdio::null());
    c
}

/// Runs `cmd` (see [`cli`]), whatever it exits with; fails the test when its stdout or
/// stderr shows one of `secrets` (values that must never be printed) or a panic.
pub fn run_cli(cmd: &mut Command, secrets: &[&str]) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    let text = text(&out);
    let args: Vec<_> = cmd.get_args().collect();
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "a secret value appeared in the output of {args:?}:\n{text}"
        );
    }
    assert!(!text.contains("panicked"), "panic in {args:?}:\n{text}");
    out
}

/// The exit code (-1 when killed by a signal).
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Standard error, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Standard output then standard error, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`; panics with its stderr unless it exits 0.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n--- stderr\n{}--- stdout\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    out
}

/// `docker ARGS` against the engine `host` (a `unix://…` URL); panics with stderr on failure.
pub fn docker<S: AsRef<OsStr>>(host: &str, args: impl IntoIterator<Item = S>) -> Output {
    run(Command::new("docker").env("DOCKER_HOST", host).args(args))
}

/// `docker ARGS` against `host`, whatever its exit status.
pub fn docker_try<S: AsRef<OsStr>>(host: &str, args: impl IntoIterator<Item = S>) -> Output {
    Command::new("docker")
        .env("DOCKER_HOST", host)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker: {e}"))
}

/// Standard output of a command, trimmed.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A container that is removed (`docker rm -f`) when dropped, also when the test panics.
pub struct Container {
    pub host: String,
    pub name: String,
}

impl Container {
    /// `docker run -d --name NAME ARGS…` on `host`; `args` are the options and image, e.g.
    /// `["-p", "127.0.0.1::8080", "-e", "PACKFY_REGION=cuba", "packfy-sample:v1"]`.
    pub fn run<S: AsRef<OsStr>>(
        host: &str,
        name: &str,
        args: impl IntoIterator<Item = S>,
    ) -> Container {
        let container = Container {
            host: host.to_string(),
            name: name.to_string(),
        };
        let mut all: Vec<std::ffi::OsString> =
            vec!["run".into(), "-d".into(), "--name".into(), name.into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        docker(host, all);
        container
    }

    /// `127.0.0.1:PORT` where the container's `port/tcp` is published.
    pub fn published(&self, port: u16) -> String {
        let out = docker(&self.host, ["port", &self.name, &format!("{port}/tcp")]);
        let text = stdout(&out);
        let line = text
            .lines()
            .find(|l| l.starts_with("127.0.0.1:") || l.starts_with("0.0.0.0:"));
        let line = line.unwrap_or_else(|| {
            panic!(
                "{} publishes {port}/tcp nowhere on IPv4: {text:?}",
                self.name
            )
        });
        line.replace("0.0.0.0:", "127.0.0.1:")
    }

    /// The container's logs (stdout and stderr), for failure messages.
    pub fn logs(&self) -> String {
        let out = docker_try(&self.host, ["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker_try(&self.host, ["rm", "-f", "-v", &self.name]);
    }
}

/// An image reference on one engine, removed (`docker rmi -f`) when dropped.
pub struct Image {
    pub host: String,
    /// e.g. `packfy-sample:proof-1234-0-5f3a`.
    pub reference: String,
}

impl Image {
    /// Also remove `reference` (another tag of the image, a pulled copy…) from `host` on drop.
    pub fn guard(host: &str, reference: &str) -> Image {
        Image {
            host: host.to_string(),
            reference: reference.to_string(),
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = docker_try(&self.host, ["rmi", "-f", &self.reference]);
    }
}

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
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: packfy-tests\r\nConnection: close\r\n\r\n")?;
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

/// Sends one command to HAProxy's Runtime API on `socket` and returns its answer.
/// Panics when the socket cannot be used.
pub fn haproxy_cmd(socket: &Path, cmd: &str) -> String {
    let talk = || -> io::Result<String> {
        let mut s = UnixStream::connect(socket)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(cmd.as_bytes())?;
        s.write_all(b"\n")?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    };
    talk().unwrap_or_else(|e| panic!("HAProxy runtime API {}: {cmd:?}: {e}", socket.display()))
}

/// One server's row of `show stat`, by column name (`status`, `weight`, `hrsp_5xx`, …).
pub fn haproxy_server_stat(
    socket: &Path,
    backend: &str,
    server: &str,
) -> Option<HashMap<String, String>> {
    let text = haproxy_cmd(socket, "show stat");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&backend) && f.get(1) == Some(&server))
        .map(|fields| {
            header
                .iter()
                .zip(fields)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
}

/// An HAProxy backend and its frontend, leased by [`TestEnv::lease_lane`] for one test.
pub struct Lane {
    pub backend: String,
    /// `127.0.0.1:PORT`.
    pub frontend: String,
    pub socket: PathBuf,
    _lock: LaneLock,
}

impl Lane {
    /// Runtime API command (see [`haproxy_cmd`]).
    pub fn cmd(&self, cmd: &str) -> String {
        haproxy_cmd(&self.socket, cmd)
    }

    /// Adds server `name` at `addr` with a health check of `GET /health` every second
    /// (down after 3 failures, up after 2 successes), enables it and its check. It serves
    /// once the check has passed: see [`Lane::wait_status`].
    pub fn add_server(&self, name: &str, addr: &str) {
        let be = &self.backend;
        for cmd in [
            format!("add server {be}/{name} {addr} check inter 1s fall 3 rise 2"),
            format!("enable health {be}/{name}"),
            format!("set server {be}/{name} state ready"),
        ] {
            let answer = self.cmd(&cmd);
            let answer = answer.trim();
            assert!(
                answer.is_empty() || answer.contains("New server registered"),
                "HAProxy refused {cmd:?}: {answer}"
            );
        }
    }

    /// The server's `show stat` status (`UP`, `DOWN`, `DRAIN`, `MAINT`, `UP 1/3` …).
    pub fn status(&self, name: &str) -> Option<String> {
        haproxy_server_stat(&self.socket, &self.backend, name)
            .and_then(|s| s.get("status").cloned())
    }

    /// Waits until the server's status is `status`.
    pub fn wait_status(&self, name: &str, status: &str, timeout: Duration) {
        wait_until(
            timeout,
            &format!("{}/{name} to be {status}", self.backend),
            || self.status(name).as_deref() == Some(status),
        );
    }

    /// Names of the servers in the backend.
    pub fn servers(&self) -> Vec<String> {
        let text = self.cmd(&format!("show servers state {}", self.backend));
        // Line 1: format version; line 2: `# be_id be_name srv_id srv_name …`.
        text.lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().nth(3).map(String::from))
            .collect()
    }

    /// Deletes every server of the backend (maintenance, sessions cut, `del server`).
    pub fn clear(&self) {
        for name in self.servers() {
            let s = format!("{}/{name}", self.backend);
            self.cmd(&format!("set server {s} state maint"));
            self.cmd(&format!("shutdown sessions server {s}"));
            let deadline = Instant::now() + Duration::from_secs(5);
            while !self
                .cmd(&format!("del server {s}"))
                .contains("Server deleted")
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // During a panic HAProxy may be what failed: do not panic again.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.clear()));
    }
}

/// A lane lock: `flock(2)` on `target/test-env/locks/BACKEND.lock`, held while this value
/// lives. The kernel releases it when the holder exits, however it exits, so no lock is ever
/// stale and lock files are never deleted (deleting one that another process has open
/// would let two processes hold "the same" lock).
///
/// The file also names the holder's pid while held (and is emptied on release), which keeps
/// it exclusive against copies of the older create-new-file locks (a file naming a live
/// process other than this one counts as held).
pub struct LaneLock {
    file: fs::File,
}

impl LaneLock {
    /// Takes the lock at `path` if it is free; never waits.
    pub fn try_acquire(path: PathBuf) -> Option<LaneLock> {
        use std::os::fd::AsRawFd;
        use std::os::raw::c_int;
        extern "C" {
            fn flock(fd: c_int, operation: c_int) -> c_int;
        }
        const LOCK_EX: c_int = 2;
        const LOCK_NB: c_int = 4;

        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { flock(file.as_raw_fd(), LOCK_EX | LOCK_NB) } != 0 {
            return None;
        }
        let mut content = String::new();
        let _ = file.read_to_string(&mut content);
        let me = std::process::id();
        let other_holder = content
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| pid != me && Path::new(&format!("/proc/{pid}")).exists());
        if other_holder {
            return None; // dropping `file` releases the flock
        }
        let _ = file.set_len(0);
        let _ = file.write_all_at(me.to_string().as_bytes(), 0);
        Some(LaneLock { file })
    }
}

impl Drop for LaneLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        // Closing the file releases the flock.
    }
}

/// `psql URL -c SQL` (stops on the first error); returns unaligned, tuples-only output.
pub fn psql(url: &str, sql: &str) -> String {
    stdout(&run(Command::new("psql").args([
        url,
        "-v",
        "ON_ERROR_STOP=1",
        "-Atq",
        "-c",
        sql,
    ])))
}

/// Removes every container and volume carrying `label` (`key=value`) on `host`, whatever
/// state they are in: the cleanup of tests that deploy a region of their own.
pub fn remove_labelled(host: &str, label: &str) {
    let filter = format!("label={label}");
    for (list, rm) in [
        (vec!["ps", "-aq", "--filter", &filter], vec!["rm", "-f"]),
        (
            vec!["volume", "ls", "-q", "--filter", &filter],
            vec!["volume", "rm", "-f"],
        ),
    ] {
        let Ok(out) = Command::new("docker")
            .env("DOCKER_HOST", host)
            .args(&list)
            .output()
        else {
            continue;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .env("DOCKER_HOST", host)
                .args(&rm)
                .args(&ids)
                .output();
        }
    }
}

/// Full IDs, sorted, of the containers on `host` that carry every label of `labels`
/// (`key=value`): the running ones, or with `all` those in any state.
pub fn container_ids(host: &str, labels: &[&str], all: bool) -> Vec<String> {
    let mut args = vec!["ps".to_string(), "-q".into(), "--no-trunc".into()];
    if all {
        args.push("-a".into());
    }
    for label in labels {
        args.extend(["--filter".into(), format!("label={label}")]);
    }
    let mut ids: Vec<String> = String::from_utf8_lossy(&docker(host, args).stdout)
        .lines()
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

/// The `packfy.version` labels of the running app containers of `region` on `host`, sorted:
/// what a deploy test asserts about what really runs.
pub fn running_versions(host: &str, region: &str) -> Vec<String> {
    let out = docker(
        host,
        [
            "ps",
            "--filter",
            &format!("label=packfy.region={region}"),
            "--filter",
            "label=packfy.kind=app",
            "--format",
            "{{.Label \"packfy.version\"}}",
        ],
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}
