//! The remote hosts of the test environment (tests/env/hosts.sh): network namespaces with
//! their own dockerd and sshd, reached by the CLI only over ssh://, and the lb namespace's
//! HAProxy (no retries) whose lanes tests lease like the loopback HAProxy's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::fixture::{region_name, RegionFile, RegionsDir, Service};
use super::{
    cli, code, docker, docker_try, env_vars, is_ci, lease_lane, remove_labelled, run_cli,
    running_versions, stderr, Image, Lane, TestEnv,
};

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
    /// The frontends of the lanes' blue-green previews (`BACKEND_preview`), in lane order.
    lane_preview_frontends: Vec<String>,
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
            // Older environments have no previews on the lb: only blue-green tests need them.
            lane_preview_frontends: list("PACKFY_HOSTS_LB_PREVIEW_FRONTENDS").unwrap_or_default(),
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
        let mut lane = lease_lane(
            &self.lane_backends,
            &self.lane_frontends,
            &self.lb_socket,
            &self.env_dir,
        );
        let i = self.lane_backends.iter().position(|b| *b == lane.backend);
        lane.preview_frontend = i.and_then(|i| self.lane_preview_frontends.get(i).cloned());
        lane
    }

    /// Shares the hosts h1–h3 with the other tests that leave them as they are (any test
    /// binary, any thread): see [`HostsLock`].
    pub fn sharing(&self) -> HostsLock {
        HostsLock::take(&self.env_dir, false)
    }

    /// Holds the hosts h1–h3 alone, for a test that breaks one (its dockerd stopped, its link
    /// cut): see [`HostsLock`].
    pub fn breaking(&self) -> HostsLock {
        HostsLock::take(&self.env_dir, true)
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

/// The tests' hold on the hosts h1–h3: shared by tests that leave them as they are, exclusive
/// for one that breaks a host, so no deploy meets a fault another test made. Tests run in
/// threads of several test binaries (tests/hosts.rs, tests/hosts_progressive.rs, tests/fleet.rs), so the hold
/// is `flock(2)` on `target/test-env/locks/hosts.lock` (shared or exclusive; the kernel drops
/// it when the process ends, however it ends), taken after an in-process read/write lock that
/// queues this binary's own threads fairly.
pub struct HostsLock {
    _file: std::fs::File,
    _shared: Option<std::sync::RwLockReadGuard<'static, ()>>,
    _alone: Option<std::sync::RwLockWriteGuard<'static, ()>>,
}

static HOSTS: std::sync::RwLock<()> = std::sync::RwLock::new(());

impl HostsLock {
    fn take(env_dir: &Path, exclusive: bool) -> HostsLock {
        use std::os::fd::AsRawFd;
        use std::os::raw::c_int;
        extern "C" {
            fn flock(fd: c_int, operation: c_int) -> c_int;
        }
        const LOCK_SH: c_int = 1;
        const LOCK_EX: c_int = 2;
        let (shared, alone) = if exclusive {
            (None, Some(HOSTS.write().unwrap_or_else(|e| e.into_inner())))
        } else {
            (Some(HOSTS.read().unwrap_or_else(|e| e.into_inner())), None)
        };
        let dir = env_dir.join("locks");
        std::fs::create_dir_all(&dir).expect("create target/test-env/locks");
        let path = dir.join("hosts.lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
        let op = if exclusive { LOCK_EX } else { LOCK_SH };
        // SAFETY: flock on a file descriptor this function owns; it waits for the lock.
        while unsafe { flock(file.as_raw_fd(), op) } != 0 {
            let e = std::io::Error::last_os_error();
            assert!(
                e.kind() == std::io::ErrorKind::Interrupted,
                "flock {}: {e}",
                path.display()
            );
        }
        HostsLock {
            _file: file,
            _shared: shared,
            _alone: alone,
        }
    }
}

/// A region of its own over the first `n` test hosts behind the lb's HAProxy, its service
/// `web` behind `lane`: the sample image is built on h1 and pushed to the test registry, and
/// every other host pulls it.
pub struct Multi {
    pub name: String,
    pub dir: RegionsDir,
    pub hosts: HostsEnv,
    pub n: usize,
    pub file: RegionFile,
    pub image: String,
    images: Vec<Image>,
}

impl Multi {
    /// `web`: the service (named `web`), its image set to the region's own repository.
    pub fn new(env: &TestEnv, hosts: &HostsEnv, lane: &Lane, n: usize, web: Service) -> Multi {
        let name = region_name("mh", 20);
        let image = format!("{}/packfy-sample-{name}", env.registry);
        let endpoints: Vec<String> = (0..n).map(|i| hosts.endpoint(i)).collect();
        let file = RegionFile::new()
            .docker_hosts(&endpoints)
            .currency("USD")
            .keep_releases(5)
            .service(web.image(&image))
            .haproxy(
                &hosts.lb_runtime_api(),
                &format!("http://{}", lane.frontend),
                &[("web", &lane.backend)],
            );
        let m = Multi {
            name,
            dir: RegionsDir::new(),
            hosts: hosts.clone(),
            n,
            file,
            image,
            images: Vec::new(),
        };
        m.dir.write(&m.name, &m.file);
        m
    }

    pub fn with(mut self, change: impl FnOnce(RegionFile) -> RegionFile) -> Multi {
        self.file = change(self.file.clone());
        self.dir.write(&self.name, &self.file);
        self
    }

    /// Builds the sample at `version` on h1 and pushes it to the registry; returns the tag.
    pub fn push(&mut self, env: &TestEnv, version: &str, args: &[(&str, &str)]) -> String {
        let tag = format!("{version}-{}", self.name);
        let h1 = &self.hosts.sockets[0];
        let built = env.build_sample(h1, &tag, args);
        let reference = format!("{}:{tag}", self.image);
        docker(h1, ["tag", built.reference.as_str(), reference.as_str()]);
        docker(h1, ["push", reference.as_str()]);
        self.images.push(built);
        for s in &self.hosts.sockets[..self.n] {
            self.images.push(Image::guard(s, &reference));
        }
        tag
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run_cli(&mut self.cmd(&self.hosts.ssh_config, args), &[])
    }

    /// The CLI on this region's directory with `ssh_config` as its ssh view (the
    /// environment's, or a copy in which some hosts cannot be reached), no agent.
    pub fn cmd(&self, ssh_config: &Path, args: &[&str]) -> Command {
        let mut c = cli(self.dir.path(), args);
        c.env("PACKFY_SSH_CONFIG", ssh_config)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("DOCKER_HOST");
        c
    }

    pub fn deploy(&self, version: &str) -> Output {
        self.run(&["deploy", "--region", &self.name, "--version", version])
    }

    /// The versions running on host `h` (the test looks at its dockerd directly).
    pub fn versions_on(&self, h: usize) -> Vec<String> {
        running_versions(&self.hosts.sockets[h], &self.name)
    }

    pub fn history(&self) -> serde_json::Value {
        let out = self.run(&["history", "--region", &self.name, "-o", "json"]);
        assert_eq!(code(&out), 0, "history: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The release records on host `h` (labelled volumes).
    pub fn records_on(&self, h: usize) -> usize {
        let filter = format!("label=packfy.region={}", self.name);
        let o = docker_try(
            &self.hosts.sockets[h],
            [
                "volume",
                "ls",
                "-q",
                "--filter",
                filter.as_str(),
                "--filter",
                "label=packfy.kind=release",
            ],
        );
        String::from_utf8_lossy(&o.stdout).lines().count()
    }
}

impl Drop for Multi {
    fn drop(&mut self) {
        for s in &self.hosts.sockets[..self.n] {
            remove_labelled(s, &format!("packfy.region={}", self.name));
        }
    }
}
