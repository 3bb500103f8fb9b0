//! Client of HAProxy's Runtime API (the `stats socket … level admin` of HAProxy 2.6).
//!
//! [`RuntimeApi`] talks to one load balancer: over a unix socket or TCP one connection per
//! command (HAProxy's non-interactive mode answers one line and closes, so no session state
//! can leak from one call into the next); over ssh one kept-open session in `prompt` mode
//! ([`Session`]). [`Haproxy`] is a region's load balancers, one or several: every change goes
//! to each of them and reads are merged (see [`super::fanout`]).
//!
//! What HAProxy 2.6 does, checked against the test environment's HAProxy 2.6.12, and why the
//! helpers below look the way they do:
//! - `add server` applies none of the backend's `default-server` keywords, and a new server
//!   starts in maintenance with its health check disabled.
//! - Leaving maintenance resets a checked server's health to "just risen": it is `UP` and
//!   takes traffic before its first check has run (`UP 1/3`, check `INI`). [`RuntimeApi::add_server`]
//!   therefore passes through `drain` and forces the health down before `ready`, so the
//!   server only takes traffic once `rise` checks have passed.
//! - A server in `drain` or `maint` keeps its in-flight requests until they end; `maint`
//!   does not cut them. `del server` refuses while any are attached ("Server still has
//!   connections attached to it, cannot remove it.") and refuses outside maintenance.
//! - Idle keep-alive connections do not block `del server` (HAProxy purges them itself);
//!   a request in flight does. `scur` counts requests in flight, not idle client
//!   connections, so it is what a drain waits on.
//! - `enable server` is deprecated in 2.6 in favour of `set server … state ready`.
//! - HAProxy 2.6 has no per-server check path: an HTTP check uses the backend's own
//!   `option httpchk`; without it the check is a TCP connect.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::ssh::SshHost;

pub use super::fanout::Haproxy;

/// How long one command may take, connection included.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The same over ssh: the answer crosses an ssh session and a `socat` on the load balancer,
/// each a process that a busy machine schedules late (5 s was missed under load average
/// 10–18 in the test environment while HAProxy itself answered at once).
pub const SSH_COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

/// How often `wait_*` read `show stat`: cheap for HAProxy, and well under the 500 ms check
/// interval so a state change is seen within a check or two.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often [`RuntimeApi::wait_up`] asks while a server has passed no check yet: its first
/// pass comes at any moment (one command is a millisecond or two, over ssh too).
const UP_POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How often it asks once the pass that makes the server UP may come: every millisecond
/// waited after it is added to the deploy.
const UP_FINAL_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long `del_server` keeps retrying while HAProxy still counts connections on the
/// server; `shutdown sessions` cuts them, but their release is asynchronous.
const DEL_SERVER_PATIENCE: Duration = Duration::from_secs(3);

/// Success replies of the commands that change state. Anything else is a refusal.
const ADDED: &str = "New server registered.";
const DELETED: &str = "Server deleted.";

/// Beginnings of the error answers HAProxy 2.6 gives (cli.c, server.c, proxy.c). The first
/// line of a data answer (`# pxname,…`, `Name: HAProxy`) never begins with these.
const ERROR_PREFIXES: &[&str] = &[
    "Unknown command",
    "No such",
    "Permission denied",
    "Require ",
    "Only servers",
    "Server still has",
    "Already exists",
    "unknown keyword",
    "invalid ",
    "Invalid ",
    "character '",
    "'",
    "Can't",
    "Cannot",
    "cannot",
    "Failed",
    "failed",
    "Missing",
    "missing",
    "Unable",
    "Not enough",
    "Unexpected",
    "Health check was not",
    "Agent check was not",
];

/// A failure to talk to HAProxy or a command it refused.
#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    /// Nothing answers at the Runtime API address (or the connection broke mid-answer).
    #[error("HAProxy's runtime API at `{addr}` is unreachable")]
    Unreachable {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// HAProxy answered, and the answer is an error; `reply` is its text.
    #[error("HAProxy refused `{command}`: {reply}")]
    Command { command: String, reply: String },
    /// The command got no complete answer within the timeout.
    #[error("HAProxy's runtime API at `{addr}` did not answer in time")]
    Timeout { addr: String },
    /// A backend or server name HAProxy would reject (or that would change the command);
    /// nothing was sent.
    #[error("invalid HAProxy {kind} name `{name}`: use letters, digits, '-', '_' and '.'")]
    InvalidName { kind: &'static str, name: String },
    /// What one load balancer of a region's several answered (`addr` names it); the error is
    /// shown in the message, not as a cause, so a `{:#}` chain does not say it twice.
    #[error("load balancer `{addr}`: {error}")]
    On {
        addr: String,
        error: Box<HaproxyError>,
    },
}

/// The administrative state of a server (`set server … state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Takes new traffic (once its health check, if any, says so).
    Ready,
    /// Keeps the requests it has, takes no new ones; still health-checked.
    Drain,
    /// Out of service; the only state from which `del server` works.
    Maint,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Ready => "ready",
            ServerState::Drain => "drain",
            ServerState::Maint => "maint",
        }
    }
}

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One server's row of `show stat`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerStat {
    pub backend: String,
    pub name: String,
    /// `IP:PORT` as HAProxy prints it.
    pub addr: String,
    /// `UP`, `DOWN`, `MAINT`, `DRAIN`, `no check`, and transitions such as `UP 1/3`
    /// (up, failing) or `DOWN 1/2` (down, recovering).
    pub status: String,
    /// Sessions on the server now.
    pub scur: u64,
    /// Sessions since the server was added.
    pub stot: u64,
    pub hrsp_2xx: u64,
    pub hrsp_5xx: u64,
    /// HTTP responses of every class (`hrsp_1xx` … `hrsp_other`); health checks not included.
    pub responses: u64,
    /// Last check result: `L7OK`, `L7STS`, `L4CON`, `INI` (none yet), empty without checks.
    pub check_status: String,
    /// Passes a checked server needs to come up (`rise`); 0 without checks.
    pub check_rise: u32,
    /// HAProxy's health counter: a server going up has passed this many checks in a row, and
    /// is up from `check_rise` on.
    pub check_health: u32,
    /// The server's effective weight (`set server … weight`); 0 while in drain or maintenance.
    pub weight: u64,
    /// Average response time in ms over the server's last 1024 answers (`rtime`).
    pub rtime_ms: u64,
}

impl ServerStat {
    /// Whether the server is in service: up by its checks, or unchecked and enabled.
    pub fn is_up(&self) -> bool {
        self.status == "UP" || self.status.starts_with("UP ") || self.status == "no check"
    }
}

/// Health check timing put on the `add server` line (HAProxy 2.6 does not apply the
/// backend's `default-server` to servers added at run time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckTiming {
    /// Time between checks (`inter`).
    pub inter: Duration,
    /// Consecutive passes before the server takes traffic (`rise`).
    pub rise: u32,
    /// Consecutive failures before it stops taking traffic (`fall`).
    pub fall: u32,
}

/// How often HAProxy checks a server that has not passed a check yet (`downinter`, at most
/// `inter`): see [`RuntimeApi::add_server`]. A check of a server that refuses connections
/// costs HAProxy next to nothing, and one that hangs is checked once per check timeout.
const DOWN_INTER: Duration = Duration::from_millis(20);

impl Default for CheckTiming {
    /// A checked server takes traffic about `(rise - 1) × inter` = 0.5 s after it answers: fast
    /// enough for rolling deploys and tests, and two passes rule out a lucky first answer.
    fn default() -> Self {
        CheckTiming {
            inter: Duration::from_millis(500),
            rise: 2,
            fall: 3,
        }
    }
}

#[derive(Debug, Clone)]
enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
    /// A unix socket on another machine, forwarded through the ssh login (a connection per
    /// command, as on this machine); where that cannot be, `socat` there, kept open between
    /// commands (see [`Session`]).
    Ssh(Arc<SshHost>, String, Arc<tokio::sync::Mutex<SshLink>>),
}

/// How commands reach a Runtime API over ssh.
#[derive(Debug, Default)]
struct SshLink {
    forward: Forward,
    session: Option<Session>,
}

#[derive(Debug, Default)]
enum Forward {
    /// Not tried yet: the first command tries.
    #[default]
    Untried,
    /// The socket forwarded here ([`SshHost::forward`]).
    Through(PathBuf),
    /// No forward (refused, or it closed before answering): the [`Session`].
    No,
}

/// How long an open session may sit unused and still be trusted: HAProxy closes an idle CLI
/// connection after `stats timeout` (10 s unless configured), so one idle longer is reopened
/// rather than found closed.
const SESSION_IDLE: Duration = Duration::from_secs(5);

/// One Runtime API connection over ssh in HAProxy's interactive mode (`prompt`): every answer
/// ends with the prompt `> `, so commands follow one another on one open channel — a round
/// trip each, instead of a new ssh session each (0.25–0.4 s on a loaded machine), which the
/// polls of a rollout pay many times over.
pub struct Session {
    pipe: crate::ssh::Pipe,
    used: Instant,
    /// A command was sent and its answer not read to the end (the caller gave up: timeout):
    /// what comes next on the channel is not ours, so the session is not used again.
    busy: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("used", &self.used).finish()
    }
}

impl Session {
    async fn open(host: &SshHost, path: &str) -> std::io::Result<Session> {
        let socket = format!("UNIX-CONNECT:{path}");
        let pipe = host.pipe(&["socat", "STDIO", &socket])?;
        let mut s = Session {
            pipe,
            used: Instant::now(),
            busy: false,
        };
        s.ask("prompt", 0).await?;
        Ok(s)
    }

    /// Sends `cmd` (commands joined with `;`) and reads until each has answered: `prompts`
    /// prompts (one per command; `prompt` itself answers with one more). Returns the answers
    /// as the non-interactive mode gives them (the prompts taken out).
    async fn ask(&mut self, cmd: &str, commands: usize) -> std::io::Result<String> {
        self.busy = true;
        // Closed before it read our line (ssh or socat gone, or HAProxy's idle timeout):
        // nothing was done, and saying so lets the caller send it again on a new session.
        let closed = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::BrokenPipe => {
                std::io::Error::new(std::io::ErrorKind::ConnectionAborted, e)
            }
            _ => e,
        };
        self.pipe
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(closed)?;
        self.pipe.flush().await.map_err(closed)?;
        let want = commands.max(1);
        let mut reply = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = self.pipe.read(&mut chunk).await?;
            if n == 0 && reply.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the Runtime API session was closed",
                ));
            }
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "the Runtime API session closed mid-answer, after {} byte(s)",
                        reply.len()
                    ),
                ));
            }
            reply.extend_from_slice(&chunk[..n]);
            if reply.ends_with(b"\n> ") && count_prompts(&reply) >= want {
                break;
            }
        }
        self.busy = false;
        self.used = Instant::now();
        let text = String::from_utf8_lossy(&reply).replace("\n> ", "\n");
        Ok(text)
    }
}

/// The prompts in an interactive answer: each command's answer ends with "\n> ".
fn count_prompts(reply: &[u8]) -> usize {
    reply.windows(3).filter(|w| w == b"\n> ").count()
}

/// The commands of one line: HAProxy splits it at each `;` (our names never hold one).
fn commands_in(line: &str) -> usize {
    line.split(';').count()
}

/// One load balancer's Runtime API. Cheap to clone (an ssh session is shared by the clones);
/// a unix or TCP address opens a connection per command. A region's load balancers together
/// are a [`Haproxy`].
#[derive(Debug, Clone)]
pub struct RuntimeApi {
    addr: String,
    endpoint: Endpoint,
    timeout: Duration,
    checks: CheckTiming,
}

impl RuntimeApi {
    /// `runtime_api` is a unix socket path (`/run/haproxy.sock`, `unix:/run/haproxy.sock`)
    /// or a TCP address (`127.0.0.1:9999`, `tcp:127.0.0.1:9999`).
    pub fn new(runtime_api: &str) -> Self {
        let addr = runtime_api.trim().to_string();
        let endpoint = if let Some(path) = strip_any(&addr, &["unix://", "unix:", "unix@"]) {
            Endpoint::Unix(PathBuf::from(path))
        } else if let Some(hostport) = strip_any(&addr, &["tcp://", "tcp:", "ipv4@", "ipv6@"]) {
            Endpoint::Tcp(hostport.to_string())
        } else if addr.contains('/') {
            Endpoint::Unix(PathBuf::from(&addr))
        } else {
            Endpoint::Tcp(addr.clone())
        };
        RuntimeApi {
            addr,
            endpoint,
            timeout: COMMAND_TIMEOUT,
            checks: CheckTiming::default(),
        }
    }

    /// The Runtime API's unix socket `path` on `host`, reached over ssh (`socat` runs there).
    pub fn over_ssh(host: SshHost, path: &str) -> Self {
        RuntimeApi {
            addr: format!("{}{path}", host.endpoint.trim_end_matches('/')),
            endpoint: Endpoint::Ssh(Arc::new(host), path.to_string(), Arc::default()),
            timeout: SSH_COMMAND_TIMEOUT,
            checks: CheckTiming::default(),
        }
    }

    /// Sets how long one command may take (default [`COMMAND_TIMEOUT`], over ssh
    /// [`SSH_COMMAND_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the check timing of servers added with a check (default [`CheckTiming::default`]).
    pub fn with_check_timing(mut self, checks: CheckTiming) -> Self {
        self.checks = checks;
        self
    }

    /// The Runtime API address as given to [`RuntimeApi::new`].
    pub fn address(&self) -> &str {
        &self.addr
    }

    pub fn check_timing(&self) -> CheckTiming {
        self.checks
    }

    /// Sends one command line and returns HAProxy's answer. Several commands may be joined
    /// with `;` (HAProxy runs them in order); an error reply to any of them is an error.
    pub async fn command(&self, cmd: &str) -> Result<String, HaproxyError> {
        if cmd.contains(['\n', '\r']) {
            return Err(HaproxyError::Command {
                command: cmd.to_string(),
                reply: "a runtime API command is one line".to_string(),
            });
        }
        tracing::debug!(haproxy = %self.addr, command = cmd, "runtime API");
        let reply = match tokio::time::timeout(self.timeout, self.exchange(cmd)).await {
            Ok(reply) => reply?,
            Err(_) => {
                return Err(HaproxyError::Timeout {
                    addr: self.addr.clone(),
                })
            }
        };
        if let Some(reply) = error_reply(&reply) {
            return Err(HaproxyError::Command {
                command: cmd.to_string(),
                reply,
            });
        }
        Ok(reply)
    }

    /// Checks that the Runtime API answers (`show info`).
    pub async fn ping(&self) -> Result<(), HaproxyError> {
        let reply = self.command("show info").await?;
        if reply.lines().any(|l| l.starts_with("Name: ")) {
            Ok(())
        } else {
            Err(HaproxyError::Command {
                command: "show info".to_string(),
                reply: first_line(&reply),
            })
        }
    }

    /// Adds `server` to `backend` at `addr` and puts it in service.
    ///
    /// With `check_path`, the server is health-checked (timing from [`CheckTiming`]) and
    /// takes traffic only after `rise` checks have passed (see [`RuntimeApi::wait_up`]). The
    /// check is the backend's own (`option httpchk GET …` in HAProxy's configuration):
    /// HAProxy 2.6 cannot set a path per server, so `check_path` only turns checking on.
    ///
    /// Idempotent: a server of that name at the same address is put back in service (from
    /// drain or maintenance); at another address it is an error.
    pub async fn add_server(
        &self,
        backend: &str,
        server: &str,
        addr: SocketAddr,
        check_path: Option<&str>,
    ) -> Result<(), HaproxyError> {
        let target = target(backend, server)?;
        let mut add = format!("add server {target} {}", haproxy_addr(addr));
        if check_path.is_some() {
            let c = self.checks;
            let inter = c.inter.as_millis().max(1);
            // `downinter`: while the server has passed no check yet (a container starting),
            // HAProxy checks it every DOWN_INTER instead of every `inter`, so its first pass
            // comes as soon as it answers, not one `inter` after it was added; the `rise`
            // passes after that one are still `inter` apart (HAProxy's `fastinter` defaults
            // to `inter`). A new server takes traffic ~`(rise - 1) × inter` after it answers
            // instead of `rise × inter` after it was added.
            add.push_str(&format!(
                " check inter {inter}ms downinter {}ms rise {} fall {}",
                inter.min(DOWN_INTER.as_millis()),
                c.rise.max(1),
                c.fall.max(1)
            ));
        }
        let in_maint = match self.mutate(&add, &[ADDED]).await {
            Ok(()) => true,
            Err(HaproxyError::Command { reply, .. }) if reply.starts_with("Already exists") => {
                let existing = self.server(backend, server).await?;
                let same = existing
                    .as_ref()
                    .and_then(|s| s.addr.parse::<SocketAddr>().ok())
                    .is_some_and(|a| a == addr);
                if !same {
                    return Err(HaproxyError::Command {
                        command: add,
                        reply: format!(
                            "server `{target}` already exists at {}",
                            existing.map_or_else(|| "?".to_string(), |s| s.addr)
                        ),
                    });
                }
                existing.is_some_and(|s| s.status.starts_with("MAINT"))
            }
            Err(e) => return Err(e),
        };
        if !in_maint {
            return self.set_state(backend, server, ServerState::Ready).await;
        }
        let enable = if check_path.is_some() {
            // Leaving maintenance would make the server UP before any check ran; going
            // through drain and forcing the health down first makes it earn `rise` passes.
            format!(
                "enable health {target}; set server {target} state drain; \
                 set server {target} health down; set server {target} state ready"
            )
        } else {
            format!("set server {target} state ready")
        };
        self.mutate(&enable, &[]).await
    }

    /// `set server BACKEND/SERVER state ready|drain|maint`.
    pub async fn set_state(
        &self,
        backend: &str,
        server: &str,
        state: ServerState,
    ) -> Result<(), HaproxyError> {
        let target = target(backend, server)?;
        self.mutate(&format!("set server {target} state {state}"), &[])
            .await
    }

    /// `set server BACKEND/SERVER weight N`.
    pub async fn set_weight(
        &self,
        backend: &str,
        server: &str,
        weight: u32,
    ) -> Result<(), HaproxyError> {
        let target = target(backend, server)?;
        self.mutate(&format!("set server {target} weight {weight}"), &[])
            .await
    }

    /// Runs state-changing commands in one line, so HAProxy applies them together (a
    /// canary's weights, an abort's weights and drains). Nothing to run is done.
    pub async fn run_all(&self, cmds: &[String]) -> Result<(), HaproxyError> {
        if cmds.is_empty() {
            return Ok(());
        }
        self.mutate(&cmds.join("; "), &[]).await
    }

    /// Removes a server: maintenance, its sessions cut, `del server` (retried while HAProxy
    /// still counts connections on it). A server that does not exist is already removed.
    /// Drain it first ([`RuntimeApi::wait_drained`]): this cuts whatever is still running.
    pub async fn del_server(&self, backend: &str, server: &str) -> Result<(), HaproxyError> {
        let target = target(backend, server)?;
        match self
            .mutate(&format!("set server {target} state maint"), &[])
            .await
        {
            Err(e) if no_such_server(&e) => return Ok(()),
            r => r?,
        }
        let deadline = Instant::now() + DEL_SERVER_PATIENCE;
        loop {
            match self
                .mutate(&format!("shutdown sessions server {target}"), &[])
                .await
            {
                Err(e) if no_such_server(&e) => return Ok(()),
                r => r?,
            }
            match self
                .mutate(&format!("del server {target}"), &[DELETED])
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if no_such_server(&e) => return Ok(()),
                Err(HaproxyError::Command { reply, .. })
                    if reply.starts_with("Server still has") && Instant::now() < deadline =>
                {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The servers of `backend` (not its FRONTEND/BACKEND summary rows).
    pub async fn servers(&self, backend: &str) -> Result<Vec<ServerStat>, HaproxyError> {
        check_name("backend", backend)?;
        // `4 -1`: servers only, all of them.
        let text = self.command(&format!("show stat {backend} 4 -1")).await?;
        let mut servers = parse_stat_csv(&text);
        servers.retain(|s| s.backend == backend);
        Ok(servers)
    }

    /// One server's stats, or `None` when the backend has no such server.
    pub async fn server(
        &self,
        backend: &str,
        server: &str,
    ) -> Result<Option<ServerStat>, HaproxyError> {
        check_name("server", server)?;
        Ok(self
            .servers(backend)
            .await?
            .into_iter()
            .find(|s| s.name == server))
    }

    /// Waits until the server has no sessions left (true) or `timeout` passes (false). A
    /// server that does not exist has nothing to drain.
    pub async fn wait_drained(
        &self,
        backend: &str,
        server: &str,
        timeout: Duration,
    ) -> Result<bool, HaproxyError> {
        self.wait_for(backend, server, timeout, POLL_INTERVAL, |s| {
            Ok(s.is_none_or(|s| s.scur == 0))
        })
        .await
    }

    /// Waits until the server is in service (true) or `timeout` passes (false): `UP` by
    /// its checks, or `no check` for an unchecked server. A missing server is an error.
    ///
    /// Its checks are `inter` apart once one has passed (this API's `inter`, the one it adds
    /// servers with), so the pass that makes it UP cannot come before `rise - health` of
    /// them: until then this sleeps, and asks often only when it may come (`up_not_before`).
    pub async fn wait_up(
        &self,
        backend: &str,
        server: &str,
        timeout: Duration,
    ) -> Result<bool, HaproxyError> {
        let deadline = Instant::now() + timeout;
        // The health counter asked last and when; the earliest moment it can be UP.
        let mut last: Option<(u32, Instant)> = None;
        let mut not_before: Option<Instant> = None;
        loop {
            let asked = Instant::now();
            let Some(s) = self.server(backend, server).await? else {
                return Err(HaproxyError::Command {
                    command: format!("show stat {backend} 4 -1"),
                    reply: format!("no server `{server}` in backend `{backend}`"),
                });
            };
            if s.is_up() {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            not_before = up_not_before(&s, last, not_before, self.checks.inter);
            last = Some((s.check_health, asked));
            let next = not_before.map_or(now + UP_POLL_INTERVAL, |t| {
                t.max(now + UP_FINAL_POLL_INTERVAL)
            });
            tokio::time::sleep_until(next.min(deadline)).await;
        }
    }

    /// Polls the server's stats until `done` says so (true) or `timeout` passes (false).
    async fn wait_for(
        &self,
        backend: &str,
        server: &str,
        timeout: Duration,
        every: Duration,
        done: impl Fn(Option<&ServerStat>) -> Result<bool, HaproxyError>,
    ) -> Result<bool, HaproxyError> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self.server(backend, server).await?.as_ref())? {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(every.min(deadline - now)).await;
        }
    }

    /// Runs a state-changing command whose every reply line must be one of `success` (or
    /// empty, which is how HAProxy says "done" to most of them).
    async fn mutate(&self, cmd: &str, success: &[&str]) -> Result<(), HaproxyError> {
        let reply = self.command(cmd).await?;
        let refused = reply
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !success.contains(l));
        match refused {
            None => Ok(()),
            Some(_) => Err(HaproxyError::Command {
                command: cmd.to_string(),
                reply: reply.trim().to_string(),
            }),
        }
    }

    async fn exchange(&self, cmd: &str) -> Result<String, HaproxyError> {
        let unreachable = |source| HaproxyError::Unreachable {
            addr: self.addr.clone(),
            source,
        };
        let bytes = match &self.endpoint {
            Endpoint::Unix(path) => over_unix(path, cmd).await.map_err(unreachable)?,
            Endpoint::Tcp(hostport) => {
                let stream = tokio::net::TcpStream::connect(hostport.as_str())
                    .await
                    .map_err(unreachable)?;
                talk(stream, cmd).await.map_err(unreachable)?
            }
            Endpoint::Ssh(host, path, session) => {
                return self.exchange_ssh(host, path, session, cmd).await;
            }
        };
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl RuntimeApi {
    /// One command over ssh: through the forwarded socket, a connection of its own as on this
    /// machine; without one, on the region's open session, opening it when there is none (or
    /// the last one was left mid-answer or sat idle too long). A session found closed before it
    /// answered a single byte is opened again and the command sent once more: HAProxy closes
    /// idle connections, never one in the middle of a command.
    async fn exchange_ssh(
        &self,
        host: &SshHost,
        path: &str,
        link: &tokio::sync::Mutex<SshLink>,
        cmd: &str,
    ) -> Result<String, HaproxyError> {
        let mut link = link.lock().await;
        if matches!(link.forward, Forward::Untried) {
            link.forward = match host.forward(path).await {
                Some(local) => Forward::Through(local),
                None => Forward::No,
            };
        }
        if let Forward::Through(local) = &link.forward {
            // A forward that closes before answering never reached HAProxy (sshd refuses
            // forwarding, or the socket is not there): the session is asked instead.
            match over_unix(local, cmd).await {
                Ok(bytes) if !bytes.is_empty() => {
                    return Ok(String::from_utf8_lossy(&bytes).into_owned())
                }
                Ok(_) => {
                    tracing::debug!(haproxy = %self.addr, "the forwarded socket closed unanswered; a session instead")
                }
                Err(e) => {
                    tracing::debug!(haproxy = %self.addr, error = %e, "the forwarded socket failed; a session instead")
                }
            }
            link.forward = Forward::No;
        }
        let unreachable = |e: std::io::Error| HaproxyError::Unreachable {
            addr: self.addr.clone(),
            source: std::io::Error::new(
                e.kind(),
                format!(
                    "{e} (`ssh {} socat STDIO UNIX-CONNECT:{path}`)",
                    host.name()
                ),
            ),
        };
        let slot = &mut link.session;
        if slot
            .as_ref()
            .is_some_and(|s| s.busy || s.used.elapsed() > SESSION_IDLE)
        {
            *slot = None;
        }
        let mut retried = false;
        loop {
            let fresh = slot.is_none();
            if fresh {
                *slot = Some(Session::open(host, path).await.map_err(unreachable)?);
            }
            let s = slot.as_mut().expect("opened above");
            match s.ask(cmd, commands_in(cmd)).await {
                Ok(reply) => return Ok(reply),
                Err(e) => {
                    *slot = None;
                    let unanswered = e.kind() == std::io::ErrorKind::ConnectionAborted;
                    if fresh || retried || !unanswered {
                        return Err(unreachable(e));
                    }
                    retried = true;
                }
            }
        }
    }
}

/// One command on a connection of its own to a unix socket (HAProxy's, or one forwarded here).
async fn over_unix(path: &std::path::Path, cmd: &str) -> std::io::Result<Vec<u8>> {
    talk(tokio::net::UnixStream::connect(path).await?, cmd).await
}

async fn talk<S>(mut stream: S, cmd: &str) -> std::io::Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(format!("{cmd}\n").as_bytes()).await?;
    // Half-closing tells HAProxy there is no second line; it answers and closes.
    stream.shutdown().await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    Ok(reply)
}

/// HAProxy's answer to a command naming a backend it does not have (`show stat`: "No such
/// proxy."): HAProxy makes no backend at run time, haproxy.cfg must have it.
pub fn no_such_backend(e: &HaproxyError) -> bool {
    match e {
        HaproxyError::Command { reply, .. } => reply.starts_with("No such proxy"),
        HaproxyError::On { error, .. } => no_such_backend(error),
        _ => false,
    }
}

pub(super) fn no_such_server(e: &HaproxyError) -> bool {
    match e {
        HaproxyError::Command { reply, .. } => reply.starts_with("No such server"),
        HaproxyError::On { error, .. } => no_such_server(error),
        _ => false,
    }
}

fn strip_any<'a>(s: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    prefixes.iter().find_map(|p| s.strip_prefix(p))
}

/// The reply, trimmed, when it holds an error. HAProxy ends each command's answer with an
/// empty line, so only the first line of each answer is looked at: data further down
/// (`FailedResolutions: 0` in `show info`) is not an error.
fn error_reply(reply: &str) -> Option<String> {
    let mut answer_start = true;
    let mut failed = false;
    for line in reply.lines() {
        if line.trim().is_empty() {
            answer_start = true;
            continue;
        }
        failed |= answer_start && ERROR_PREFIXES.iter().any(|p| line.starts_with(p));
        answer_start = false;
    }
    failed.then(|| reply.trim().to_string())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_string()
}

/// HAProxy's own address syntax; `ipv6@` avoids any doubt about brackets.
fn haproxy_addr(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("ipv6@{}:{}", a.ip(), a.port()),
    }
}

fn target(backend: &str, server: &str) -> Result<String, HaproxyError> {
    check_name("backend", backend)?;
    check_name("server", server)?;
    Ok(format!("{backend}/{server}"))
}

/// HAProxy's identifier characters, minus ':' (which HAProxy allows but which would make a
/// name look like an address in our logs). Anything else could also split or extend the
/// command line (spaces, ';', '/').
fn check_name(kind: &'static str, name: &str) -> Result<(), HaproxyError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(HaproxyError::InvalidName {
            kind,
            name: name.to_string(),
        })
    }
}

/// Server rows of `show stat` CSV output; columns are found by the header line's names, so
/// the fields HAProxy adds in later versions do not matter.
pub fn parse_stat_csv(text: &str) -> Vec<ServerStat> {
    let mut lines = text.lines();
    let Some(header) = lines.find_map(|l| l.strip_prefix("# ")) else {
        return Vec::new();
    };
    let columns = split_csv(header);
    let col = |name: &str| columns.iter().position(|c| c == name);
    let weight = col("weight");
    let (check_rise, check_health) = (col("check_rise"), col("check_health"));
    let rtime = col("rtime");
    let (pxname, svname, addr, status, scur, stot, check_status) = (
        col("pxname"),
        col("svname"),
        col("addr"),
        col("status"),
        col("scur"),
        col("stot"),
        col("check_status"),
    );
    let hrsp: Vec<Option<usize>> = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"]
        .iter()
        .map(|class| col(&format!("hrsp_{class}")))
        .collect();
    lines
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(split_csv)
        .filter(|f| {
            let name = get(f, svname);
            !name.is_empty() && name != "FRONTEND" && name != "BACKEND"
        })
        .map(|f| {
            let num = |i: Option<usize>| get(&f, i).parse::<u64>().unwrap_or(0);
            ServerStat {
                backend: get(&f, pxname).to_string(),
                name: get(&f, svname).to_string(),
                addr: get(&f, addr).to_string(),
                status: get(&f, status).to_string(),
                scur: num(scur),
                stot: num(stot),
                hrsp_2xx: num(hrsp[1]),
                hrsp_5xx: num(hrsp[4]),
                responses: hrsp.iter().map(|&i| num(i)).sum(),
                check_status: get(&f, check_status).to_string(),
                check_rise: num(check_rise) as u32,
                check_health: num(check_health) as u32,
                weight: num(weight),
                rtime_ms: num(rtime),
            }
        })
        .collect()
}

/// The earliest moment a checked server going up can be UP, from its stats now, the health
/// counter asked before (`last`: the value, and when it was asked) and the moment found then
/// (`before`). None while it has passed no check (its first pass comes at any moment), when
/// the pass it is at came at an unknown time, or without checks.
///
/// A pass seen now (the counter went up since `last`) came after `last` was asked; the
/// `rise - health` passes still needed come `inter` apart after it.
fn up_not_before(
    s: &ServerStat,
    last: Option<(u32, Instant)>,
    before: Option<Instant>,
    inter: Duration,
) -> Option<Instant> {
    if s.check_rise == 0 || s.check_health == 0 || s.check_health >= s.check_rise {
        return None;
    }
    match last {
        Some((h, _)) if h == s.check_health => before,
        Some((h, asked)) if h < s.check_health => {
            Some(asked + inter * (s.check_rise - s.check_health))
        }
        _ => None,
    }
}

fn get(fields: &[String], i: Option<usize>) -> &str {
    i.and_then(|i| fields.get(i)).map_or("", String::as_str)
}

/// Splits one CSV line; HAProxy quotes a field (doubling its quotes) when it holds a comma.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `show stat` of HAProxy 2.6.12 (the test environment's), trimmed to one other
    /// backend, a frontend, and one lane with a server in each state: `web-up` (checked,
    /// served four 200s and one injected 500), `web-down` (its /health answers 503),
    /// `web-maint` (just added), `web-drain`, `web-nocheck`.
    const SHOW_STAT: &str = r"# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,
packfy_local,BACKEND,0,0,0,0,410,0,0,0,0,0,,0,0,0,0,UP,0,0,0,,0,312,,,1,3,0,,0,,1,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,0,0,0,0,,,0,0,0,0,0,,,,,0,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
fe_packfy_t6,FRONTEND,,,0,2,4096,54,4832,8289,0,0,0,,,,,OPEN,,,,,,,,,1,18,0,,,,0,10,0,10,,,,0,47,0,0,10,0,,10,10,57,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,10,10,54,0,0,0,0,,,0,0,,,,,,,0,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,54,57,4629,8310,0,0,
packfy_t6,web-up,0,0,0,1,,5,410,857,,0,,0,0,0,0,UP,1,1,0,0,1,1,1,,1,19,1,,5,,2,5,,5,L7OK,200,0,0,4,0,0,1,0,,,,5,0,0,,,,,1,,,0,0,0,0,,,,Layer7 check passed,,2,3,4,,,,127.0.0.1:19504,,http,,,,,,,,0,5,0,,,0,0,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
packfy_t6,web-down,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,0,1,2,2,,1,19,2,,0,,2,0,,0,L7STS,503,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Service Unavailable,,0,0,0,0,,,,Layer7 wrong status,,2,3,0,,,,127.0.0.1:19503,,http,,,,,,,,0,0,0,,,0,0,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
packfy_t6,web-maint,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,,,2,,,1,19,3,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:19501,,http,,,,,,,,0,0,0,,,0,0,0,0,0,0,0,0,0,0,0,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
packfy_t6,web-drain,0,0,0,1,,5,410,835,,0,,0,0,0,0,DRAIN,1,1,0,0,0,1,0,,1,19,4,,5,,2,5,,5,L7OK,200,0,0,5,0,0,0,0,,,,5,0,0,,,,,1,,,0,0,0,0,,,,Layer7 check passed,,2,3,4,,,,127.0.0.1:19501,,http,,,,,,,,0,5,0,,,0,0,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
packfy_t6,web-nocheck,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check,1,1,0,,,1,,,1,19,5,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:19501,,http,,,,,,,,0,0,0,,,0,0,0,0,0,0,0,0,0,0,0,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
packfy_t6,BACKEND,0,0,0,1,410,57,4832,8289,0,0,,9,0,0,1,UP,2,2,0,,5,2,33,,1,19,0,,49,,1,10,,10,,,,0,47,0,0,10,0,,,,57,0,0,0,0,0,0,1,,,0,0,36,36,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,49,0,0,0,,,0,0,2000,2000,0,,,,,2,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,268,268,50248,8947,0,0,
";

    fn by_name<'a>(stats: &'a [ServerStat], name: &str) -> &'a ServerStat {
        stats.iter().find(|s| s.name == name).unwrap()
    }

    #[test]
    fn a_rising_server_cannot_be_up_before_its_remaining_passes() {
        let inter = Duration::from_millis(500);
        let at = |health, rise| ServerStat {
            check_health: health,
            check_rise: rise,
            status: "DOWN".into(),
            ..Default::default()
        };
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(25);
        // No pass yet, no checks, or a pass of unknown time: ask again soon.
        assert_eq!(up_not_before(&at(0, 2), Some((0, t0)), None, inter), None);
        assert_eq!(up_not_before(&at(0, 0), Some((0, t0)), None, inter), None);
        assert_eq!(up_not_before(&at(1, 2), None, None, inter), None);
        // The first pass came after t0 was asked: the second is one interval after it.
        assert_eq!(
            up_not_before(&at(1, 2), Some((0, t0)), None, inter),
            Some(t0 + inter)
        );
        assert_eq!(
            up_not_before(&at(1, 3), Some((0, t0)), None, inter),
            Some(t0 + 2 * inter)
        );
        // No new pass since: the moment found before holds.
        let found = Some(t0 + inter);
        assert_eq!(up_not_before(&at(1, 2), Some((1, t1)), found, inter), found);
        // The next pass, seen after t1: one more interval from it.
        assert_eq!(
            up_not_before(&at(2, 3), Some((1, t1)), found, inter),
            Some(t1 + inter)
        );
        // A failed check put the counter back: its next first pass comes at any moment.
        assert_eq!(up_not_before(&at(0, 3), Some((1, t1)), found, inter), None);
    }

    #[test]
    fn parses_servers_of_real_show_stat_and_skips_summary_rows() {
        let stats = parse_stat_csv(SHOW_STAT);
        let names: Vec<_> = stats.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "web-up",
                "web-down",
                "web-maint",
                "web-drain",
                "web-nocheck"
            ]
        );
        assert_eq!(
            by_name(&stats, "web-up"),
            &ServerStat {
                backend: "packfy_t6".into(),
                name: "web-up".into(),
                addr: "127.0.0.1:19504".into(),
                status: "UP".into(),
                scur: 0,
                stot: 5,
                hrsp_2xx: 4,
                hrsp_5xx: 1,
                responses: 5,
                check_status: "L7OK".into(),
                check_rise: 2,
                check_health: 4,
                weight: 1,
                rtime_ms: 0,
            }
        );
        let status = |n| by_name(&stats, n).status.clone();
        assert_eq!(status("web-down"), "DOWN");
        assert_eq!(by_name(&stats, "web-down").check_status, "L7STS");
        assert_eq!(by_name(&stats, "web-down").check_health, 0);
        assert_eq!(status("web-maint"), "MAINT");
        assert_eq!(status("web-drain"), "DRAIN");
        assert_eq!(status("web-nocheck"), "no check");
        assert_eq!(by_name(&stats, "web-nocheck").check_status, "");
    }

    #[test]
    fn up_means_in_service() {
        let with = |status: &str| ServerStat {
            status: status.into(),
            ..Default::default()
        };
        for up in ["UP", "UP 1/3", "no check"] {
            assert!(with(up).is_up(), "{up}");
        }
        for not in [
            "DOWN",
            "DOWN 1/2",
            "MAINT",
            "DRAIN",
            "MAINT (resolution)",
            "",
        ] {
            assert!(!with(not).is_up(), "{not}");
        }
    }

    #[test]
    fn parse_tolerates_missing_header_quotes_and_short_rows() {
        assert!(parse_stat_csv("").is_empty());
        assert!(parse_stat_csv("No such proxy.\n").is_empty());
        let text = "# pxname,svname,status,check_desc,scur\nbe,s1,UP,\"a, \"\"b\"\"\",7\nbe,s2\n";
        let stats = parse_stat_csv(text);
        assert_eq!(stats.len(), 2);
        assert_eq!(stats[0].scur, 7);
        assert_eq!(stats[0].status, "UP");
        assert_eq!(stats[1].status, "");
        assert_eq!(split_csv("a,\"b,c\",\"d\"\"e\""), ["a", "b,c", "d\"e"]);
    }

    #[test]
    fn error_replies_are_recognised_and_data_is_not() {
        for reply in [
            "No such server.\n\n",
            "No such backend.\n",
            "Unknown command, but maybe one of the following ones is a better match:\n  help\n",
            "Permission denied\n\n",
            "Only servers in maintenance mode can be deleted.\n",
            "Server still has connections attached to it, cannot remove it.\n",
            "Already exists a server with the same name in backend.\n",
            "unknown keyword 'bogus'.\n\n",
            "character '!' is not permitted in server name 'bad!'.\n",
            "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n",
            "\n\nNo such server.\n\n",
            "\n\n\nPermission denied\n\n",
        ] {
            assert!(error_reply(reply).is_some(), "{reply:?}");
        }
        for reply in [
            "",
            "\n",
            "New server registered.\n\n",
            SHOW_STAT,
            "Name: HAProxy\nVersion: 2.6.12\nFailedResolutions: 0\nCumConns: 2\n\n",
            "Name: x\nNo such thing: 0\n",
        ] {
            assert!(error_reply(reply).is_none(), "{reply:?}");
        }
    }

    #[test]
    fn names_are_checked_before_anything_is_sent() {
        for ok in ["packfy_local", "web-1", "svc.v2_3"] {
            assert!(check_name("server", ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a;b", "a/b", "a\nb", "bad!", "é"] {
            assert!(
                matches!(
                    check_name("server", bad),
                    Err(HaproxyError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn addresses() {
        let endpoint = |a: &str| match RuntimeApi::new(a).endpoint {
            Endpoint::Unix(p) => format!("unix {}", p.display()),
            Endpoint::Tcp(h) => format!("tcp {h}"),
            Endpoint::Ssh(h, p, _) => format!("ssh {} {p}", h.name()),
        };
        let unix = |a: &str| endpoint(a) == "unix /run/h.sock";
        assert!(unix("/run/h.sock"));
        assert!(unix("unix:/run/h.sock"));
        assert!(unix("unix:///run/h.sock"));
        let tcp = |a: &str| endpoint(a) == "tcp 127.0.0.1:9999";
        assert!(tcp("127.0.0.1:9999"));
        assert!(tcp("tcp://127.0.0.1:9999"));
        assert_eq!(RuntimeApi::new("unix:/x").address(), "unix:/x");
        assert_eq!(haproxy_addr("[::1]:8080".parse().unwrap()), "ipv6@::1:8080");
        assert_eq!(
            haproxy_addr("127.0.0.1:8080".parse().unwrap()),
            "127.0.0.1:8080"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable() {
        let dir = std::env::temp_dir().join(format!("packfy-haproxy-{}", std::process::id()));
        let h = Haproxy::new(dir.join("none.sock").to_str().unwrap());
        let err = h.ping().await.unwrap_err();
        assert!(matches!(err, HaproxyError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().contains("none.sock"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // Accepts and holds the connection without answering.
        let hold = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(conn);
        });
        let h = Haproxy::new(&addr).with_timeout(Duration::from_millis(200));
        let err = h.command("show info").await.unwrap_err();
        assert!(
            matches!(err, HaproxyError::Timeout { ref addr } if addr == h.address()),
            "{err:?}"
        );
        hold.abort();
    }

    #[tokio::test]
    async fn replies_are_read_to_the_end_and_errors_carry_them() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for reply in ["Name: HAProxy\nVersion: 2.6\n\n", "No such server.\n\n"] {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut cmd = Vec::new();
                conn.read_to_end(&mut cmd).await.unwrap();
                seen.push(String::from_utf8(cmd).unwrap());
                conn.write_all(reply.as_bytes()).await.unwrap();
            }
            seen
        });
        let h = Haproxy::new(&addr);
        h.ping().await.unwrap();
        let err = h
            .set_state("be", "web-1", ServerState::Drain)
            .await
            .unwrap_err();
        match err {
            HaproxyError::Command { command, reply } => {
                assert_eq!(command, "set server be/web-1 state drain");
                assert_eq!(reply, "No such server.");
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(
            server.await.unwrap(),
            ["show info\n", "set server be/web-1 state drain\n"]
        );
    }

    #[tokio::test]
    async fn invalid_names_and_multi_line_commands_are_not_sent() {
        // Port 1 on loopback: if anything were sent, the error would be Unreachable.
        let h = Haproxy::new("127.0.0.1:1");
        let err = h
            .add_server("be", "web 1", "127.0.0.1:80".parse().unwrap(), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, HaproxyError::InvalidName { kind: "server", .. }),
            "{err:?}"
        );
        let err = h.servers("be;show info").await.unwrap_err();
        assert!(
            matches!(
                err,
                HaproxyError::InvalidName {
                    kind: "backend",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = h.command("show info\nshow stat").await.unwrap_err();
        assert!(matches!(err, HaproxyError::Command { .. }), "{err:?}");
    }
}
