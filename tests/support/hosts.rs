//! The remote hosts of the test environment (tests/env/hosts.sh): network namespaces with
//! their own dockerd and sshd, reached by the CLI only over ssh://, and the lb namespace's
//! HAProxy (no retries) whose lanes tests lease like the loopback HAProxy's.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{env_vars, is_ci, lease_lane, Lane, TestEnv};

/// `PACKFY_SSH_CONFIG`, `PACKFY_HOSTS…`: what env-up wrote for the hosts part.
#[derive(Debug, Clone)]
pub struct HostsEnv {
    /// The ssh_config mapping the test hosts' names to their addresses (key, known_hosts).
    pub ssh_config: PathBuf,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    /// `h1.packfy.test …`
    pub names: Vec<String>,
    /// `10.201.0.11 …`, in the order of `names`.
    pub addrs: Vec<String>,
    /// Each host's dockerd socket: for the tests' own looking, never for the CLI.
    pub sockets: Vec<String>,
    /// `lb.packfy.test` and its HAProxy's Runtime API socket path.
    pub lb: String,
    pub lb_socket: PathBuf,
    /// `lb2.packfy.test`, a second load balancer with the lb's configuration (only the
    /// tests of several load balancers use it), its Runtime API socket, and its link's veth.
    pub lb2: String,
    pub lb2_socket: PathBuf,
    pub lb2_veth: String,
    lane_frontends: Vec<String>,
    lb2_frontends: Vec<String>,
    lane_backends: Vec<String>,
    env_dir: PathBuf,
}

impl HostsEnv {
    /// The hosts, or `None` (after a note) when the part is not up; under CI it panics.
    pub fn get(env: &TestEnv) -> Option<HostsEnv> {
        match Self::load(env) {
            Ok(h) => Some(h),
            Err(why) if is_ci() => panic!("test hosts not available under CI: {why}"),
            Err(why) => {
                eprintln!("skipping: test hosts not up (PACKFY_ENV_PARTS with hosts): {why}");
                None
            }
        }
    }

    fn load(env: &TestEnv) -> Result<HostsEnv, String> {
        let vars = env_vars()?;
        let var = |k: &str| {
            vars.get(k)
                .filter(|v| !v.trim().is_empty())
                .cloned()
                .ok_or_else(|| format!("missing {k}"))
        };
        let list = |k: &str| var(k).map(|v| v.split_whitespace().map(String::from).collect());
        let h = HostsEnv {
            ssh_config: PathBuf::from(var("PACKFY_SSH_CONFIG")?),
            key: PathBuf::from(var("PACKFY_SSH_KEY")?),
            known_hosts: PathBuf::from(var("PACKFY_SSH_KNOWN_HOSTS")?),
            names: list("PACKFY_HOSTS")?,
            addrs: list("PACKFY_HOSTS_ADDRS")?,
            sockets: list("PACKFY_HOSTS_DOCKER_SOCKETS")?,
            lb: var("PACKFY_HOSTS_LB")?,
            lb_socket: PathBuf::from(var("PACKFY_HOSTS_LB_SOCKET")?),
            lb2: var("PACKFY_HOSTS_LB2")?,
            lb2_socket: PathBuf::from(var("PACKFY_HOSTS_LB2_SOCKET")?),
            lb2_veth: var("PACKFY_HOSTS_LB2_VETH")?,
            lane_frontends: list("PACKFY_HOSTS_LB_FRONTENDS")?,
            lb2_frontends: list("PACKFY_HOSTS_LB2_FRONTENDS")?,
            lane_backends: list("PACKFY_HOSTS_LB_BACKENDS")?,
            env_dir: env.env_dir.clone(),
        };
        if !h.ssh_config.exists() {
            return Err(format!(
                "{} is gone (stale env.sh?)",
                h.ssh_config.display()
            ));
        }
        Ok(h)
    }

    /// `ssh://root@NAME` of host `i` (0-based).
    pub fn endpoint(&self, i: usize) -> String {
        format!("ssh://root@{}", self.names[i])
    }

    /// The Runtime API of the lb's HAProxy as a region writes it: over ssh.
    pub fn lb_runtime_api(&self) -> String {
        format!("ssh://root@{}{}", self.lb, self.lb_socket.display())
    }

    /// The Runtime API of lb2's HAProxy as a region writes it: over ssh.
    pub fn lb2_runtime_api(&self) -> String {
        format!("ssh://root@{}{}", self.lb2, self.lb2_socket.display())
    }

    /// The same lane on lb2 (same backend, lb2's frontend and socket), held by `lane`'s
    /// lease: lb2 has the lb's configuration. Its servers are deleted now and on drop.
    pub fn lb2_lane(&self, lane: &Lane) -> Lane {
        let i = self
            .lane_backends
            .iter()
            .position(|b| *b == lane.backend)
            .expect("a lane of the lb");
        lane.twin(&self.lb2_socket, &self.lb2_frontends[i])
    }

    /// Leases a lane of the lb's HAProxy; `Lane::cmd` talks to its socket directly (the
    /// test looks; the CLI goes through ssh).
    pub fn lease_lane(&self) -> Lane {
        lease_lane(
            &self.lane_backends,
            &self.lane_frontends,
            &self.lb_socket,
            &self.env_dir,
        )
    }

    /// Sets the CLI's ssh configuration (`PACKFY_SSH_CONFIG`) on `cmd`.
    pub fn ssh_env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("PACKFY_SSH_CONFIG", &self.ssh_config)
    }

    /// A copy of the ssh_config in `dir` with `line` replaced by `with` (e.g. known_hosts
    /// pointed at an empty file): the test's own ssh view, the environment's untouched.
    pub fn ssh_config_with(&self, dir: &Path, line: &str, with: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.ssh_config).expect("read ssh_config");
        let changed: Vec<String> = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with(line) {
                    format!("    {with}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        let path = dir.join("ssh_config");
        std::fs::write(&path, changed.join("\n") + "\n").expect("write ssh_config");
        path
    }
}
