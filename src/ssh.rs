//! Hosts reached with the system's `ssh` client: a Docker engine and HAProxy's Runtime API
//! socket on a load-balancer host. One login per host and run (ssh's ControlMaster, see
//! [`Master`]) carries everything: the engine's unix socket and the Runtime API socket are
//! forwarded through it ([`SshHost::forward`]); where that cannot be, `docker system
//! dial-stdio` (what `docker -H ssh://…` runs) or `socat` runs on the host instead.
//!
//! Why not bollard's own `ssh` feature: its connector (the `openssh` crate) always runs ssh
//! with `-o StrictHostKeyChecking=accept-new`, so a host key nobody checked is trusted and
//! written to known_hosts, and it cannot pass `-F`. Here ssh keeps every one of its own
//! conventions (the agent, `~/.ssh/config`, known_hosts), and the region adds only:
//! `identity_file` (`-i`, with `IdentitiesOnly`), `known_hosts` (`StrictHostKeyChecking`,
//! `strict` by default) and `BatchMode` (never a prompt). `PACKFY_SSH_CONFIG` names an
//! ssh_config file used instead of `~/.ssh/config` (`-F`): ssh has no variable of its own
//! for it, and a CI runner or the test environment maps host names to addresses there, as
//! people do with bastions and aliases.
//!
//! hyper keeps the engine's connections alive and reuses them; each new one is a channel of
//! the login (forwarded), or an ssh process running dial-stdio (the fallback).

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::anyhow;
use bollard::{BollardRequest, Docker};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::config::model::KnownHosts;
use crate::error::{Error, ExitCode};

/// The environment variable naming an ssh_config file to use instead of `~/.ssh/config`.
pub const SSH_CONFIG_VAR: &str = "PACKFY_SSH_CONFIG";

/// How long a login may take before the host counts as unreachable (ssh's `ConnectTimeout`
/// covers the TCP connection only; this covers the whole check).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);

/// One `ssh://[user@]host[:port]` endpoint and how to log in to it.
#[derive(Debug, Clone)]
pub struct SshHost {
    /// As the region wrote it (expanded), for messages.
    pub endpoint: String,
    user: Option<String>,
    host: String,
    port: Option<u16>,
    identity_file: Option<PathBuf>,
    known_hosts: KnownHosts,
    config: Option<PathBuf>,
    /// The master connection every later ssh of this host goes through, once logged in.
    mux: Option<Arc<Master>>,
}

impl SshHost {
    /// Parses `ssh://[user@]host[:port]`; None when the endpoint is not `ssh://`.
    pub fn parse(
        endpoint: &str,
        identity_file: Option<&str>,
        known_hosts: KnownHosts,
    ) -> Option<Result<SshHost, String>> {
        let rest = endpoint.strip_prefix("ssh://")?;
        let rest = rest.trim_end_matches('/');
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.contains(']') || h.ends_with(']') => match p.parse::<u16>() {
                Ok(p) => (h, Some(p)),
                Err(_) => {
                    return Some(Err(format!("'{endpoint}': the port '{p}' is not a number")))
                }
            },
            _ => (hostport, None),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.starts_with('-') || host.contains(['/', ' ']) {
            return Some(Err(format!("'{endpoint}' names no host")));
        }
        Some(Ok(SshHost {
            endpoint: endpoint.to_string(),
            user: user.filter(|u| !u.is_empty()),
            host: host.to_string(),
            port,
            identity_file: identity_file.map(home_path),
            known_hosts,
            config: std::env::var_os(SSH_CONFIG_VAR)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            mux: None,
        }))
    }

    /// The host name as written (`mx1.packfy.example`).
    pub fn name(&self) -> &str {
        &self.host
    }

    /// The ssh arguments that log in to this host (everything before the remote command).
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(cfg) = &self.config {
            args.extend(["-F".into(), cfg.display().to_string()]);
        }
        let strict = match self.known_hosts {
            KnownHosts::Strict => "yes",
            KnownHosts::AcceptNew => "accept-new",
        };
        args.extend([
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!("StrictHostKeyChecking={strict}"),
            "-o".into(),
            "ConnectTimeout=10".into(),
            "-o".into(),
            "ServerAliveInterval=5".into(),
            "-o".into(),
            "ServerAliveCountMax=3".into(),
        ]);
        if let Some(key) = &self.identity_file {
            args.extend([
                "-i".into(),
                key.display().to_string(),
                "-o".into(),
                "IdentitiesOnly=yes".into(),
            ]);
        }
        if let Some(mux) = &self.mux {
            args.extend([
                "-o".into(),
                format!("ControlPath={}", mux.socket.display()),
                "-o".into(),
                "ControlMaster=no".into(),
            ]);
        }
        if let Some(user) = &self.user {
            args.extend(["-l".into(), user.clone()]);
        }
        if let Some(port) = self.port {
            args.extend(["-p".into(), port.to_string()]);
        }
        args.push("--".into());
        args.push(self.host.clone());
        args
    }

    /// `ssh … HOST REMOTE…`, its output piped, killed when dropped.
    pub fn command(&self, remote: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(self.args())
            .args(remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// `ssh HOST REMOTE…` as a byte stream to and from the remote command. Nobody reads
    /// ssh's complaints on it: a failed login shows as a closed stream, and [`SshHost::check`]
    /// has quoted ssh before any stream is opened.
    pub fn pipe(&self, remote: &[&str]) -> io::Result<Pipe> {
        let mut cmd = self.command(remote);
        cmd.stderr(Stdio::null());
        let mut child = cmd.spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        Ok(Pipe {
            _child: child,
            stdin: Some(stdin),
            stdout,
        })
    }

    /// Logs in once, as the master connection that every later ssh to this host shares
    /// (ssh's ControlMaster): a Runtime API session or a new engine connection is then a new
    /// session on it, not a new login (tens of milliseconds instead of a key exchange, which
    /// takes seconds on a loaded machine). When no master comes up, [`SshHost::check`] logs in
    /// the plain way: its failure quotes ssh (exit 6); if it succeeds, each ssh logs in by
    /// itself.
    pub async fn login(mut self) -> Result<SshHost, Error> {
        self.check_key()?;
        match Master::start(&self).await {
            Ok(master) => self.mux = Some(Arc::new(master)),
            Err(Some(stderr)) => {
                let said = ssh_said(&stderr);
                return Err(self.unreachable(format!("ssh said: {said}"), hint_for(&said, &self)));
            }
            Err(None) => self.check().await?,
        }
        Ok(self)
    }

    /// The `identity_file`, when one is named, exists.
    fn check_key(&self) -> Result<(), Error> {
        match &self.identity_file {
            Some(key) if !key.is_file() => Err(self.unreachable(
                format!("identity_file {} does not exist", key.display()),
                "target.docker.identity_file names the private key to log in with",
            )),
            _ => Ok(()),
        }
    }

    /// Logs in and runs `true`: exit 6 naming the host and quoting what ssh said when the
    /// host cannot be reached, its key is unknown or no key of ours is accepted.
    pub async fn check(&self) -> Result<(), Error> {
        self.check_key()?;
        let mut cmd = self.command(&["true"]);
        cmd.stdin(Stdio::null());
        let out = match tokio::time::timeout(LOGIN_TIMEOUT, cmd.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                return Err(self.unreachable(
                    format!("cannot run ssh: {e}"),
                    "packfy-deploy logs in to ssh:// hosts with the system's `ssh` client",
                ))
            }
            Err(_) => {
                return Err(self.unreachable(
                    format!("no login within {}s", LOGIN_TIMEOUT.as_secs()),
                    "is the host up and its sshd reachable from here?",
                ))
            }
        };
        if out.status.success() {
            return Ok(());
        }
        let said = ssh_said(&String::from_utf8_lossy(&out.stderr));
        Err(self.unreachable(format!("ssh said: {said}"), hint_for(&said, self)))
    }

    /// The address the host is reached at, which is also where its containers publish their
    /// ports: the `HostName` ssh resolves the name to (`ssh -G`, so aliases in ssh_config
    /// count), looked up when it is a name.
    pub async fn address(&self) -> Result<IpAddr, Error> {
        let mut cmd = Command::new("ssh");
        let mut args = self.args();
        // `-G` prints the configuration instead of connecting; it takes the same options.
        args.insert(0, "-G".into());
        cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
        let out = cmd
            .output()
            .await
            .map_err(|e| self.unreachable(format!("cannot run ssh -G: {e}"), ""))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let hostname = text
            .lines()
            .find_map(|l| l.strip_prefix("hostname "))
            .unwrap_or(&self.host)
            .trim()
            .to_string();
        if let Ok(ip) = hostname.parse::<IpAddr>() {
            return Ok(ip);
        }
        let mut addrs = tokio::net::lookup_host((hostname.as_str(), 22))
            .await
            .map_err(|e| {
                self.unreachable(
                    format!("cannot resolve {hostname}: {e}"),
                    "the host's name must resolve here: HAProxy routes to its address",
                )
            })?;
        addrs
            .next()
            .map(|a| a.ip())
            .ok_or_else(|| self.unreachable(format!("{hostname} resolves to no address"), ""))
    }

    /// `remote`, a unix socket on the host, forwarded to a new socket in the master's
    /// directory (`ssh -O forward -L LOCAL:REMOTE`): a connection to it is a channel of the
    /// logged-in master, not an ssh process and a program started on the host (milliseconds
    /// instead of a tenth of a second or more). None without a master, or when ssh refuses.
    /// A forward sshd does not allow (`AllowStreamLocalForwarding no`), or to a socket that is
    /// not there, shows as connections closed before they answer: callers try it once first.
    pub async fn forward(&self, remote: &str) -> Option<PathBuf> {
        let mux = self.mux.as_ref()?;
        if remote.contains(':') || !remote.starts_with('/') {
            return None;
        }
        let n = mux.forwards.fetch_add(1, Ordering::Relaxed);
        let local = mux.socket.with_file_name(format!("forward-{n}"));
        let mut args = self.args();
        let at = args.len() - 2; // before `-- HOST`
        args.splice(
            at..at,
            [
                "-O".to_string(),
                "forward".into(),
                "-L".into(),
                format!("{}:{remote}", local.display()),
            ],
        );
        let mut cmd = Command::new("ssh");
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        match tokio::time::timeout(LOGIN_TIMEOUT, cmd.status()).await {
            Ok(Ok(st)) if st.success() => Some(local),
            _ => {
                tracing::debug!(host = %self.endpoint, remote, "no forward");
                None
            }
        }
    }

    /// A Docker client for the host's engine. When the engine's unix socket there is known
    /// ([`docker_socket`]) and forwards ([`SshHost::forward`]) and answers a ping through it,
    /// connections go through the forward (one that cannot be connected to any more, its
    /// master gone, falls back to dial-stdio); otherwise every connection is `ssh HOST docker
    /// system dial-stdio`, which is what `docker -H ssh://…` runs.
    pub async fn docker(self: &Arc<Self>, timeout_secs: u64) -> Result<Docker, Error> {
        let remote = self.mux.as_ref().and_then(|m| m.docker_socket.clone());
        if let Some(remote) = remote {
            if let Some(local) = self.forward(&remote).await {
                let docker = self.docker_over(Some(local), timeout_secs)?;
                let answered = tokio::time::timeout(FORWARD_PING, docker.ping()).await;
                if matches!(answered, Ok(Ok(_))) {
                    tracing::debug!(host = %self.endpoint, remote, "engine through a forwarded socket");
                    return Ok(docker);
                }
                tracing::debug!(host = %self.endpoint, remote, "no answer through the forwarded socket; dial-stdio");
            }
        }
        self.docker_over(None, timeout_secs)
    }

    fn docker_over(
        self: &Arc<Self>,
        forward: Option<PathBuf>,
        timeout_secs: u64,
    ) -> Result<Docker, Error> {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build::<_, Body>(EngineConnector {
                host: Arc::clone(self),
                forward,
            });
        let client = Arc::new(client);
        Docker::connect_with_custom_transport(
            move |req: BollardRequest| {
                let client = Arc::clone(&client);
                async move {
                    client
                        .request(req)
                        .await
                        .map_err(bollard::errors::Error::from)
                }
            },
            Some("http://docker.ssh"),
            timeout_secs,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| self.unreachable(format!("{e}"), ""))
    }

    /// Exit 6 naming the host.
    pub fn unreachable(&self, what: String, hint: &str) -> Error {
        let e = Error::failed(
            ExitCode::Unreachable,
            anyhow!("cannot reach {}: {what}", self.endpoint),
        );
        if hint.is_empty() {
            e
        } else {
            e.with_hint(hint.to_string())
        }
    }
}

/// ssh's master connection to one host (`ssh -M -S SOCKET HOST cat`), in a directory of
/// its own (mode 0700) that is removed with it, with the sockets forwarded through it
/// ([`SshHost::forward`]). Its remote command reads the pipe this process holds, so the
/// master ends when this process does, however it ends: the pipe closes, `cat` exits, the
/// session and the master with it.
#[derive(Debug)]
struct Master {
    socket: PathBuf,
    /// The Docker engine's unix socket on the host, when known (see [`docker_socket`]).
    docker_socket: Option<String>,
    /// Forwarded sockets made so far (their names in the directory).
    forwards: AtomicUsize,
    // Dropped in this order: the master ends, then its directory goes.
    _out: tokio::io::BufReader<ChildStdout>,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl Master {
    /// The master, logged in; else what ssh said when it gave up (None: no master for another
    /// reason — it could not start, or took longer than a login may).
    ///
    /// Its session prints one line when it starts (so the login is seen at once, not polled
    /// for) saying where the host's Docker engine listens: `DOCKER_HOST`, `DOCKER_CONTEXT`,
    /// and whether `~/.docker/config.json` chooses a context (see [`docker_socket`]).
    async fn start(host: &SshHost) -> Result<Master, Option<String>> {
        use std::os::unix::fs::PermissionsExt;
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(|_| None)?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|_| None)?;
        let socket = dir.path().join("master");
        let mut args = host.args();
        let at = args.len() - 2; // before `-- HOST`
        args.splice(
            at..at,
            [
                "-M".to_string(),
                "-o".into(),
                format!("ControlPath={}", socket.display()),
                "-o".into(),
                "ControlPersist=no".into(),
            ],
        );
        let mut child = Command::new("ssh")
            .args(args)
            .arg(READY_COMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|_| None)?;
        // Once a process, while its first login goes on (a directory listing, off the
        // runtime's threads): what processes killed before it left.
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(|| drop(tokio::task::spawn_blocking(sweep_stale_dirs)));
        let mut out = tokio::io::BufReader::new(child.stdout.take().ok_or(None)?);
        let mut line = String::new();
        let said = tokio::time::timeout(LOGIN_TIMEOUT, async {
            loop {
                line.clear();
                match out.read_line(&mut line).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) if line.starts_with(READY) => return Some(line.clone()),
                    Ok(_) => {}
                }
            }
        })
        .await;
        let ready = match said {
            Ok(Some(ready)) => ready,
            Ok(None) => {
                // The master exited: it did not log in, and its stderr says why (BatchMode: a
                // few lines at most).
                let _ = child.wait().await;
                let mut said = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = err.read_to_string(&mut said).await;
                }
                return Err((!said.trim().is_empty()).then_some(said));
            }
            Err(_) => {
                tracing::debug!(host = %host.endpoint, "no ssh master connection; every ssh logs in");
                return Err(None);
            }
        };
        // ssh listens on the control socket once logged in, before the session starts.
        for _ in 0..100 {
            if socket.exists() {
                return Ok(Master {
                    socket,
                    docker_socket: docker_socket(&ready),
                    forwards: AtomicUsize::new(0),
                    _out: out,
                    _child: child,
                    _dir: dir,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::debug!(host = %host.endpoint, "ssh logged in but made no control socket; every ssh logs in");
        Err(None)
    }
}

/// The masters' temporary directories (control socket, forwarded sockets): `DIR_PREFIX`,
/// the process ID, `-`, random characters.
const DIR_PREFIX: &str = "packfy-ssh-";

/// Removes this user's master directories left by processes that are gone. A process killed
/// with SIGKILL runs no destructor: its master ssh ends with it (its session reads this
/// process's pipe), but the directory stays, with its stale sockets in it.
fn sweep_stale_dirs() {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let mine = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        if mine && pid > 0 && !alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether a process with this ID exists (`kill(pid, 0)`: ESRCH when none; EPERM when it
/// exists but is another user's).
fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The master's session: one line, then `cat` reading this process's pipe until it closes.
/// `sh -c`, whatever the user's login shell is.
const READY_COMMAND: &str = r#"exec sh -c 'printf "packfy-ready %s %s %s\n" "${DOCKER_HOST:-none}" "${DOCKER_CONTEXT:-none}" "$(grep -qs currentContext "$HOME/.docker/config.json" && echo context || echo none)"; exec cat >/dev/null'"#;
const READY: &str = "packfy-ready ";

/// Where the Docker engine listens on the host, from the master's ready line: the unix socket
/// `docker system dial-stdio` would connect to there, when that can be known without running
/// it — `DOCKER_HOST=unix://…`, or no `DOCKER_HOST` and no context chosen (the default
/// socket). None otherwise (a TCP or ssh `DOCKER_HOST`, a context): dial-stdio decides.
fn docker_socket(ready: &str) -> Option<String> {
    let mut words = ready.strip_prefix(READY)?.split_whitespace();
    let (host, context, config) = (words.next()?, words.next()?, words.next()?);
    if let Some(path) = host.strip_prefix("unix://") {
        return (path.starts_with('/') && !path.contains(':')).then(|| path.to_string());
    }
    (host == "none" && matches!(context, "none" | "default") && config == "none")
        .then(|| "/var/run/docker.sock".to_string())
}

/// `identity_file` with `${VAR}` expanded and a leading `~/` as the home directory (ssh
/// would expand it too, but the file is checked here first).
fn home_path(file: &str) -> PathBuf {
    let file = crate::config::expand_env(file);
    match (file.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(file),
    }
}

/// The body type of bollard's requests (bollard names it only through [`BollardRequest`]).
type Body = <BollardRequest as RequestBody>::Body;
trait RequestBody {
    type Body;
}
impl<B> RequestBody for http::Request<B> {
    type Body = B;
}

/// ssh's complaint, without its chatter ("Warning: Permanently added…") and at most three
/// lines.
fn ssh_said(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    if tail.is_empty() {
        "(nothing; ssh exited with an error)".into()
    } else {
        tail.join(" / ")
    }
}

fn hint_for(said: &str, host: &SshHost) -> &'static str {
    if said.contains("Host key verification failed")
        || said.contains("No ED25519 host key")
        || said.contains("host key for")
    {
        if said.contains("HAS CHANGED") || said.contains("REMOTE HOST IDENTIFICATION") {
            "the host's key is not the one known_hosts holds: find out why before you trust it"
        } else {
            "the host's key is not in known_hosts: add it (ssh-keyscan, checked by hand), or set `target.docker.known_hosts: accept-new` for the region"
        }
    } else if said.contains("Permission denied") {
        if host.identity_file.is_some() {
            "the host does not accept target.docker.identity_file's key for this user"
        } else {
            "no key of this machine is accepted: load one into the agent (ssh-add), or set target.docker.identity_file"
        }
    } else if said.contains("Could not resolve hostname") {
        "the host name does not resolve here (an alias belongs in ~/.ssh/config or the file PACKFY_SSH_CONFIG names)"
    } else {
        "is the host up, and does `ssh HOST docker version` work from here?"
    }
}

/// How long the first ping through a forwarded engine socket may take before dial-stdio is
/// used instead.
const FORWARD_PING: Duration = Duration::from_secs(5);

/// Opens a connection to the engine: the forwarded socket when there is one and it can be
/// connected to, else `ssh HOST docker system dial-stdio`.
#[derive(Clone)]
struct EngineConnector {
    host: Arc<SshHost>,
    forward: Option<PathBuf>,
}

impl tower_service::Service<http::Uri> for EngineConnector {
    type Response = TokioIo<EngineStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let host = Arc::clone(&self.host);
        let forward = self.forward.clone();
        Box::pin(async move {
            if let Some(path) = forward {
                match tokio::net::UnixStream::connect(&path).await {
                    Ok(s) => return Ok(TokioIo::new(EngineStream::Forwarded(s))),
                    Err(e) => {
                        tracing::debug!(host = %host.endpoint, error = %e, "forwarded socket gone; dial-stdio")
                    }
                }
            }
            Ok(TokioIo::new(EngineStream::Pipe(Box::new(host.pipe(&[
                "docker",
                "system",
                "dial-stdio",
            ])?))))
        })
    }
}

/// One connection to an engine over ssh: a forwarded socket, or dial-stdio's pipe.
pub enum EngineStream {
    Forwarded(tokio::net::UnixStream),
    Pipe(Box<Pipe>),
}

impl AsyncRead for EngineStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EngineStream::Forwarded(s) => Pin::new(s).poll_read(cx, buf),
            EngineStream::Pipe(p) => Pin::new(p).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for EngineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EngineStream::Forwarded(s) => Pin::new(s).poll_write(cx, buf),
            EngineStream::Pipe(p) => Pin::new(p).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EngineStream::Forwarded(s) => Pin::new(s).poll_flush(cx),
            EngineStream::Pipe(p) => Pin::new(p).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EngineStream::Forwarded(s) => Pin::new(s).poll_shutdown(cx),
            EngineStream::Pipe(p) => Pin::new(p).poll_shutdown(cx),
        }
    }
}

impl Connection for EngineStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// ssh's stdin and stdout as one byte stream.
pub struct Pipe {
    _child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
}

impl AsyncRead for Pipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stdin.as_mut() {
            Some(w) => Pin::new(w).poll_write(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stdin.as_mut() {
            Some(w) => Pin::new(w).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(w) = self.stdin.as_mut() {
            std::task::ready!(Pin::new(w).poll_shutdown(cx))?;
        }
        self.stdin = None;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> SshHost {
        SshHost::parse(s, None, KnownHosts::Strict)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn directories_of_processes_that_are_gone_are_swept_and_others_kept() {
        let tmp = std::env::temp_dir();
        // A process that has ended (and been reaped): its ID names no process now.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();
        let stale = tmp.join(format!("{DIR_PREFIX}{gone_pid}-sweeptest"));
        let live = tmp.join(format!("{DIR_PREFIX}{}-sweeptest", std::process::id()));
        let other = tmp.join(format!("{DIR_PREFIX}sweeptest"));
        for d in [&stale, &live, &other] {
            std::fs::create_dir_all(d.join("sub")).unwrap();
            std::fs::write(d.join("sub/forward-0"), "").unwrap();
        }
        sweep_stale_dirs();
        let (stale_left, live_left, other_left) = (stale.exists(), live.exists(), other.exists());
        for d in [&stale, &live, &other] {
            let _ = std::fs::remove_dir_all(d);
        }
        assert!(!stale_left, "{} is left", stale.display());
        assert!(live_left && other_left);
    }

    #[test]
    fn the_engine_socket_is_forwarded_only_when_the_login_says_where_it_is() {
        let said = |line: &str| docker_socket(line);
        // DOCKER_HOST names a unix socket: that one.
        assert_eq!(
            said("packfy-ready unix:///run/user/1000/docker.sock none none\n").as_deref(),
            Some("/run/user/1000/docker.sock")
        );
        // Nothing set, no context chosen: the default socket.
        assert_eq!(
            said("packfy-ready none none none\n").as_deref(),
            Some("/var/run/docker.sock")
        );
        assert_eq!(
            said("packfy-ready none default none").as_deref(),
            Some("/var/run/docker.sock")
        );
        // Anything dial-stdio would decide otherwise keeps dial-stdio.
        for line in [
            "packfy-ready tcp://10.0.0.5:2376 none none",
            "packfy-ready ssh://other none none",
            "packfy-ready none remote none",
            "packfy-ready none none context",
            "packfy-ready unix://relative.sock none none",
            "packfy-ready none none",
            "something else",
        ] {
            assert_eq!(said(line), None, "{line}");
        }
    }

    #[test]
    fn endpoints_are_user_host_and_port() {
        let h = parse("ssh://deploy@mx1.packfy.example:2222");
        assert_eq!(
            (h.user.as_deref(), h.host.as_str(), h.port),
            (Some("deploy"), "mx1.packfy.example", Some(2222))
        );
        let h = parse("ssh://mx2");
        assert_eq!(
            (h.user.as_deref(), h.host.as_str(), h.port),
            (None, "mx2", None)
        );
        assert!(SshHost::parse("unix:///x.sock", None, KnownHosts::Strict).is_none());
        assert!(SshHost::parse("ssh://deploy@", None, KnownHosts::Strict)
            .unwrap()
            .is_err());
        assert!(
            SshHost::parse("ssh://-oProxyCommand=x", None, KnownHosts::Strict)
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn strictness_and_key_reach_ssh() {
        let h = SshHost::parse("ssh://deploy@mx1:22", Some("/k/id"), KnownHosts::Strict)
            .unwrap()
            .unwrap();
        let args = h.args().join(" ");
        assert!(args.contains("StrictHostKeyChecking=yes"), "{args}");
        assert!(args.contains("-i /k/id -o IdentitiesOnly=yes"), "{args}");
        assert!(args.ends_with("-l deploy -p 22 -- mx1"), "{args}");
        let h = SshHost::parse("ssh://mx1", None, KnownHosts::AcceptNew)
            .unwrap()
            .unwrap();
        assert!(h
            .args()
            .join(" ")
            .contains("StrictHostKeyChecking=accept-new"));
    }

    #[test]
    fn what_ssh_said_is_kept_short() {
        let said = ssh_said("Warning: Permanently added 'x' (ED25519) to the list of known hosts.\nroot@x: Permission denied (publickey).\n");
        assert_eq!(said, "root@x: Permission denied (publickey).");
    }
}
