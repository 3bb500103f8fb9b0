//! One Docker engine reached over a unix socket, TCP (with TLS) or SSH.
//!
//! This file is the thin layer over bollard: connecting (with API version negotiation, so
//! Debian's 20.10 engine at API 1.41 and newer engines both work), and the few container
//! operations the executor needs. Names and labels are decided in [`naming`]; the lock and the
//! release records live in [`state`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, HostConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    StopContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

pub use crate::config::expand_env;
use crate::config::model::DockerTarget;
use crate::error::{Error, ExitCode};
use crate::ssh::SshHost;

/// How long to wait for the engine to answer a ping before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The same over ssh (the login is already checked by then): the ping starts `docker system
/// dial-stdio` on the host, a process start a busy host schedules late (10 s was missed once
/// under load average 17 in the test environment).
const SSH_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct Engine {
    pub docker: Docker,
    pub endpoint: String,
    /// The address containers publish their ports on: loopback for the engine of this
    /// machine, else the host's own address (which the load balancer routes to).
    pub publish_ip: String,
    /// The engine runs on this machine (a unix socket, or TCP on loopback): its published
    /// ports can be checked from here. Otherwise nothing here reaches a container, and
    /// health is judged where the containers run.
    pub local: bool,
}

/// What a container reports about itself, reduced to what a rollout decides on.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerState {
    pub running: bool,
    pub status: String,
    pub exit_code: i64,
    pub restart_count: i64,
    pub oom_killed: bool,
    /// The image's HEALTHCHECK status: "starting", "healthy", "unhealthy", or None without one.
    pub health: Option<String>,
    pub health_log: Option<String>,
    /// Published ports: container port → host address.
    pub ports: HashMap<u16, SocketAddr>,
    pub image_id: String,
    pub labels: HashMap<String, String>,
    /// `KEY=value` as the container runs with (the image's own variables included): compared
    /// by value or hash, never printed.
    pub env: Vec<String>,
    pub name: String,
    pub id: String,
}

/// Everything needed to create one container of a release.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// `KEY=value`, secrets resolved: never logged.
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    /// Container ports to publish on a free loopback port each.
    pub ports: Vec<u16>,
    pub command: Option<Vec<String>>,
    pub stop_grace: Duration,
    pub nano_cpus: Option<i64>,
    pub memory: Option<i64>,
}

impl Engine {
    /// Connects and pings; an engine that does not answer is exit code 6, naming the endpoint.
    /// An `ssh://` host is logged in to first, so what ssh says (unknown host key, no key
    /// accepted, no route) is what the error quotes.
    pub async fn connect(target: &DockerTarget, endpoint: &str) -> Result<Engine, Error> {
        let host = expand_env(endpoint);
        let unreachable = |e: &dyn std::fmt::Display| {
            Error::failed(ExitCode::Unreachable, anyhow!("cannot reach the Docker engine at {host}: {e}"))
                .with_hint("is the daemon running, and is the endpoint right? (target.docker.host in the region file)")
        };
        let mut publish_ip = "127.0.0.1".to_string();
        let mut local = true;
        // An ssh host's address (`ssh -G`, a process of its own) is looked up while the engine
        // answers its ping.
        let mut address = None;
        let docker = match &target.tls {
            _ if host.starts_with("ssh://") => {
                let ssh =
                    SshHost::parse(&host, target.identity_file.as_deref(), target.known_hosts)
                        .expect("an ssh:// endpoint")
                        .map_err(|e| unreachable(&e))?;
                let started = std::time::Instant::now();
                let ssh = Arc::new(ssh.login().await?);
                tracing::debug!(host = %host, ms = started.elapsed().as_millis() as u64, "logged in");
                let looked_up = Arc::clone(&ssh);
                address = Some(tokio::spawn(async move { looked_up.address().await }));
                local = false;
                ssh.docker(120).await?
            }
            Some(tls) if host.starts_with("tcp://") => Docker::connect_with_ssl(
                &host,
                std::path::Path::new(&tls.key),
                std::path::Path::new(&tls.cert),
                std::path::Path::new(&tls.ca),
                120,
                bollard::API_DEFAULT_VERSION,
            )
            .map_err(|e| unreachable(&e))?,
            _ => Docker::connect_with_host(&host).map_err(|e| unreachable(&e))?,
        };
        if let Some(addr) = host.strip_prefix("tcp://") {
            // A TCP engine publishes on its own address, which this machine reaches it by.
            let hostport = addr.trim_end_matches('/');
            if let Ok(Some(a)) = tokio::net::lookup_host(hostport)
                .await
                .map(|mut a| a.next())
            {
                if !a.ip().is_loopback() {
                    publish_ip = a.ip().to_string();
                    local = false;
                }
            }
        }
        let docker = docker.with_timeout(Duration::from_secs(120));
        let started = std::time::Instant::now();
        let patience = if host.starts_with("ssh://") {
            SSH_CONNECT_TIMEOUT
        } else {
            CONNECT_TIMEOUT
        };
        match tokio::time::timeout(patience, docker.ping()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(unreachable(&with_cause(&e))),
            Err(_) => {
                return Err(unreachable(&format!(
                    "no answer within {}s",
                    patience.as_secs()
                )))
            }
        }
        tracing::debug!(host = %host, ms = started.elapsed().as_millis() as u64, "engine answered");
        if let Some(address) = address {
            publish_ip = address.await.map_err(|e| unreachable(&e))??.to_string();
        }
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(&e))?;
        tracing::debug!(host = %host, ms = started.elapsed().as_millis() as u64, "API version");
        Ok(Engine {
            docker,
            endpoint: host,
            publish_ip,
            local,
        })
    }

    /// Containers (running or not) carrying all the given labels.
    pub async fn list(&self, labels: &[(&str, &str)]) -> anyhow::Result<Vec<ContainerSummary>> {
        let filters: HashMap<String, Vec<String>> = HashMap::from([(
            "label".to_string(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )]);
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .with_context(|| format!("cannot list containers on {}", self.endpoint))
    }

    /// Which of the containers `ids` run now (one listing, whatever their number).
    pub async fn running(&self, ids: &[&str]) -> anyhow::Result<std::collections::HashSet<String>> {
        let filters: HashMap<String, Vec<String>> = HashMap::from([(
            "id".to_string(),
            ids.iter().map(|i| i.to_string()).collect(),
        )]);
        let listed = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: false,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .with_context(|| format!("cannot list containers on {}", self.endpoint))?;
        Ok(listed
            .into_iter()
            .filter_map(|c| c.id)
            .filter(|id| ids.contains(&id.as_str()))
            .collect())
    }

    /// Creates and starts a container; returns its ID.
    pub async fn run(&self, spec: &ContainerSpec) -> anyhow::Result<String> {
        let mut exposed: Vec<String> = Vec::new();
        let mut bindings = HashMap::new();
        for port in &spec.ports {
            let key = format!("{port}/tcp");
            exposed.push(key.clone());
            bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: Some(self.publish_ip.clone()),
                    // Empty: the engine picks a free port, so old and new containers coexist.
                    host_port: Some(String::new()),
                }]),
            );
        }
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(spec.env.clone()),
            labels: Some(spec.labels.clone()),
            cmd: spec.command.clone(),
            exposed_ports: Some(exposed),
            stop_timeout: Some(spec.stop_grace.as_secs() as i64),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                nano_cpus: spec.nano_cpus,
                memory: spec.memory,
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .with_context(|| {
                format!("cannot create container {} from {}", spec.name, spec.image)
            })?;
        self.start(&created.id)
            .await
            .with_context(|| format!("cannot start container {}", spec.name))?;
        Ok(created.id)
    }

    pub async fn start(&self, id: &str) -> anyhow::Result<()> {
        self.docker.start_container(id, None).await?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after the grace period.
    pub async fn stop(&self, id: &str, grace: Duration) -> anyhow::Result<()> {
        match self
            .docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(grace.as_secs() as i32),
                    signal: None,
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            // 304: already stopped; 404: already gone.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot stop container {id}")),
        }
    }

    pub async fn remove(&self, id: &str) -> anyhow::Result<()> {
        match self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove container {id}")),
        }
    }

    pub async fn inspect(&self, id: &str) -> anyhow::Result<Option<ContainerState>> {
        match self.docker.inspect_container(id, None).await {
            Ok(c) => Ok(Some(state_of(c))),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot inspect container {id}")),
        }
    }

    /// The last `lines` lines of a container's output, for failure reports.
    pub async fn logs_tail(&self, id: &str, lines: usize) -> String {
        let mut stream = self.docker.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: lines.to_string(),
                ..Default::default()
            }),
        );
        let mut out = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        out
    }

    /// Runs `cmd` in a running container; exit 0 is a pass.
    pub async fn exec_check(&self, id: &str, cmd: &[String]) -> Result<(), String> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let exec = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("exec failed: {e}"))?;
        let mut output = String::new();
        if let Ok(StartExecResults::Attached {
            output: mut out, ..
        }) = self.docker.start_exec(&exec.id, None).await
        {
            while let Some(Ok(chunk)) = out.next().await {
                output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            }
        }
        let inspect = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| format!("exec failed: {e}"))?;
        match inspect.exit_code {
            Some(0) => Ok(()),
            Some(code) => Err(format!(
                "`{}` exited {code}: {}",
                cmd.join(" "),
                output.trim()
            )),
            None => Err("exec did not finish".into()),
        }
    }

    /// Pulls an image (from the registry its name points at); returns its ID.
    pub async fn pull(&self, reference: &str) -> anyhow::Result<String> {
        use bollard::query_parameters::CreateImageOptions;
        // The engine takes a digest where the tag goes: `fromImage=repo&tag=sha256:…`.
        let (repo, tag) = match (reference.split_once('@'), reference.rsplit_once(':')) {
            (Some((r, digest)), _) => (r, digest),
            (None, Some((r, t))) if !t.contains('/') => (r, t),
            _ => (reference, "latest"),
        };
        let credentials = super::auth::credentials(reference)?;
        let anonymous = credentials.is_none();
        let mut stream = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(repo.to_string()),
                tag: Some(tag.to_string()),
                ..Default::default()
            }),
            None,
            credentials,
        );
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                if let Some(no) =
                    super::auth::no_login(&e.to_string(), anonymous, "pulling", reference)
                {
                    return Err(no.into());
                }
                return Err(e).with_context(|| format!("pulling {reference} failed"));
            }
        }
        self.image_id(reference)
            .await?
            .ok_or_else(|| anyhow!("pulled {reference} but the engine does not list it"))
    }

    /// Pulls `reference` (`repo@sha256:…` for an image a run built once) and tags it `as_`
    /// (`repo:tag`, the name containers use); returns its ID.
    pub async fn pull_as(&self, reference: &str, as_: &str) -> anyhow::Result<String> {
        use bollard::query_parameters::TagImageOptions;
        let id = match self.image_id(reference).await? {
            Some(id) => id,
            None => self.pull(reference).await?,
        };
        if reference != as_ {
            let (repo, tag) = match as_.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, t),
                _ => (as_, "latest"),
            };
            self.docker
                .tag_image(
                    &id,
                    Some(TagImageOptions {
                        repo: Some(repo.to_string()),
                        tag: Some(tag.to_string()),
                    }),
                )
                .await
                .with_context(|| format!("cannot tag {reference} as {as_}"))?;
        }
        Ok(id)
    }

    /// The ID (content digest) an image reference resolves to on this engine, if present.
    pub async fn image_id(&self, reference: &str) -> anyhow::Result<Option<String>> {
        match self.docker.inspect_image(reference).await {
            Ok(img) => Ok(img.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot inspect image {reference}")),
        }
    }
}

/// The error and, when it does not say it already, its innermost cause: the engine client
/// says "client error (Connect)", the I/O error beneath it why ("Connection refused").
fn with_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut root = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let (top, why) = (e.to_string(), root.to_string());
    if top.contains(&why) {
        top
    } else {
        format!("{top}: {why}")
    }
}

/// The registry host an image name starts with (`127.0.0.1:5000/x`, `ghcr.io/x`,
/// `localhost/x`); None for a Docker Hub name (`x`, `library/x`).
pub fn registry_host(image: &str) -> Option<&str> {
    image
        .split_once('/')
        .map(|(host, _)| host)
        .filter(|h| h.contains('.') || h.contains(':') || *h == "localhost")
}

fn state_of(c: ContainerInspectResponse) -> ContainerState {
    let st = c.state.unwrap_or_default();
    let mut ports = HashMap::new();
    if let Some(map) = c.network_settings.and_then(|n| n.ports) {
        for (key, bindings) in map {
            let Some(port) = key.split('/').next().and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            if let Some(b) = bindings.and_then(|b| b.into_iter().next()) {
                let ip = b
                    .host_ip
                    .filter(|ip| !ip.is_empty() && ip != "0.0.0.0")
                    .unwrap_or_else(|| "127.0.0.1".into());
                if let Some(addr) = b.host_port.and_then(|p| format!("{ip}:{p}").parse().ok()) {
                    ports.insert(port, addr);
                }
            }
        }
    }
    let health = st
        .health
        .as_ref()
        .and_then(|h| h.status.map(|s| s.to_string()));
    let health_log = st
        .health
        .as_ref()
        .and_then(|h| h.log.as_ref())
        .and_then(|l| l.last())
        .and_then(|l| l.output.clone());
    ContainerState {
        running: st.running.unwrap_or(false),
        status: st.status.map(|s| s.to_string()).unwrap_or_default(),
        exit_code: st.exit_code.unwrap_or(0),
        restart_count: c.restart_count.unwrap_or(0),
        oom_killed: st.oom_killed.unwrap_or(false),
        health: health.filter(|h| !h.is_empty() && h != "none"),
        health_log,
        ports,
        image_id: c.image.unwrap_or_default(),
        labels: c
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default(),
        env: c.config.and_then(|c| c.env).unwrap_or_default(),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        id: c.id.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn expands_variables_with_defaults() {
        use crate::config::expand_env;
        std::env::set_var("PACKFY_TEST_EXPAND", "/run/x.sock");
        assert_eq!(
            expand_env("unix://${PACKFY_TEST_EXPAND}"),
            "unix:///run/x.sock"
        );
        assert_eq!(
            expand_env("${PACKFY_TEST_UNSET_VAR:-/var/run/docker.sock}"),
            "/var/run/docker.sock"
        );
        assert_eq!(expand_env("plain"), "plain");
    }
}
