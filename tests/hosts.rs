//! Regions on remote Docker hosts: the test environment's network namespaces (tests/env/
//! hosts.sh), each with its own dockerd and sshd, which the CLI reaches only over ssh://,
//! behind the lb namespace's HAProxy (no retries), whose Runtime API is reached over ssh too.
//! The runner's packets to a host's address are refused unless they go to sshd, so a health
//! check or a request made from the CLI's machine straight to a container fails here.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::fixture::{region_name, Health, RegionFile, RegionsDir, Rollout, Service};
use support::{
    code, docker_try, haproxy_server_stat, http_request, remove_labelled, running_versions, stderr,
    HostsEnv, Lane, Load, TestEnv,
};

/// A region of its own on test host `h1`, in a temporary regions directory.
struct Region {
    name: String,
    dir: RegionsDir,
    hosts: HostsEnv,
    /// h1's dockerd socket: what the test looks at (the CLI goes through ssh).
    socket: String,
    file: RegionFile,
}

impl Region {
    fn new(hosts: &HostsEnv, lane: Option<&Lane>) -> Region {
        let file = RegionFile::docker(&hosts.endpoint(0))
            .currency("USD")
            .keep_releases(3)
            .service(sample_web());
        let file = match lane {
            Some(l) => file.haproxy(
                &hosts.lb_runtime_api(),
                &format!("http://{}", l.frontend),
                &[("web", &l.backend)],
            ),
            None => file.traffic_none(),
        };
        let r = Region {
            name: region_name("hs", 20),
            dir: RegionsDir::new(),
            hosts: hosts.clone(),
            socket: hosts.sockets[0].clone(),
            file,
        };
        r.dir.write(&r.name, &r.file);
        r
    }

    fn with(mut self, change: impl FnOnce(RegionFile) -> RegionFile) -> Region {
        self.file = change(self.file.clone());
        self.dir.write(&self.name, &self.file);
        self
    }

    /// The CLI with the environment's ssh configuration (or `ssh_config`), no agent.
    fn cmd(&self, ssh_config: Option<&Path>, args: &[&str]) -> Command {
        let mut c = support::cli(self.dir.path(), args);
        c.env(
            "PACKFY_SSH_CONFIG",
            ssh_config.unwrap_or(&self.hosts.ssh_config),
        )
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("DOCKER_HOST");
        c
    }

    fn run(&self, ssh_config: Option<&Path>, args: &[&str]) -> Output {
        support::run_cli(&mut self.cmd(ssh_config, args), &[])
    }

    fn deploy(&self, version: &str) -> Output {
        self.run(
            None,
            &["deploy", "--region", &self.name, "--version", version],
        )
    }

    fn running_versions(&self) -> Vec<String> {
        running_versions(&self.socket, &self.name)
    }

    /// Everything on h1 that carries this region's label: containers and volumes (the lock
    /// and the release records are labelled volumes).
    fn labelled_on_host(&self) -> Vec<String> {
        let filter = format!("label=packfy.region={}", self.name);
        let mut out = Vec::new();
        for args in [
            vec!["ps", "-aq", "--filter", &filter],
            vec!["volume", "ls", "-q", "--filter", &filter],
        ] {
            let o = docker_try(&self.socket, &args);
            assert!(o.status.success(), "docker {args:?}: {}", stderr(&o));
            out.extend(String::from_utf8_lossy(&o.stdout).lines().map(String::from));
        }
        out
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        remove_labelled(&self.socket, &format!("packfy.region={}", self.name));
    }
}

/// The sample app, 2 replicas; checks every 500 ms, 2 passes to take traffic.
fn sample_web() -> Service {
    Service::new("web", "packfy-sample")
        .replicas(2)
        .port(8080)
        .health(
            Health::http("/health")
                .interval("500ms")
                .timeout("400ms")
                .healthy_threshold(2)
                .unhealthy_threshold(3)
                .deadline("20s"),
        )
        .rollout(Rollout::new().bake("2s").drain_timeout("5s"))
        .stop_grace_period("5s")
}

fn setup() -> Option<(TestEnv, HostsEnv)> {
    let env = TestEnv::get()?;
    let hosts = HostsEnv::get(&env)?;
    Some((env, hosts))
}

#[test]
fn a_remote_host_is_deployed_over_ssh_with_health_judged_there_and_no_failed_request() {
    let Some((env, hosts)) = setup() else { return };
    let lane = hosts.lease_lane();
    let r = Region::new(&hosts, Some(&lane));
    let tag = |v: &str| format!("{v}-{}", r.name);
    let (v1, v2, v3) = (tag("v1"), tag("v2"), tag("v3"));
    let _i1 = env.build_sample(&r.socket, &v1, &[]);
    let _i2 = env.build_sample(&r.socket, &v2, &[]);
    let _i3 = env.build_sample(&r.socket, &v3, &[("NEVER_HEALTHY", "1")]);

    let out = r.deploy(&v1);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(r.running_versions(), vec![v1.clone(); 2]);
    assert_eq!(
        http_request(&lane.frontend, "/version")
            .unwrap()
            .body
            .trim(),
        v1
    );
    // HAProxy routes to the host's address, where the containers publish their ports.
    for server in lane.servers() {
        let stat = haproxy_server_stat(&lane.socket, &lane.backend, &server).unwrap();
        let addr = &stat["addr"];
        assert!(
            addr.starts_with(&format!("{}:", hosts.addrs[0])),
            "{server} is at {addr}, not on h1's address {}",
            hosts.addrs[0]
        );
    }

    // v2 under load through an HAProxy that does not retry: not one request fails.
    let (out, load) = Load::around(&lane.frontend, 3, || r.deploy(&v2));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    load.assert_none_failed("v1 → v2 on a remote host", 100);
    assert_eq!(r.running_versions(), vec![v2.clone(); 2]);

    // v3 never answers /health with 200: HAProxy never sees it UP, the deploy rolls back
    // (exit 3), v2 keeps serving and no request fails.
    let (out, load) = Load::around(&lane.frontend, 3, || r.deploy(&v3));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("never saw") && err.contains("UP"), "{err}");
    load.assert_none_failed("the v3 attempt on a remote host", 0);
    assert_eq!(r.running_versions(), vec![v2.clone(); 2]);
    assert_eq!(
        http_request(&lane.frontend, "/version")
            .unwrap()
            .body
            .trim(),
        v2
    );

    // Back to v1 over ssh: its retained containers restart, HAProxy judges them again.
    let (out, load) = Load::around(&lane.frontend, 3, || {
        r.run(None, &["rollback", "--region", &r.name, "--to", "r1"])
    });
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    load.assert_none_failed("the rollback to v1 on a remote host", 0);
    assert_eq!(r.running_versions(), vec![v1.clone(); 2]);
    let out = r.run(None, &["history", "--region", &r.name, "-o", "json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h[0]["version"], v1.as_str(), "{h}");
    assert_eq!(h[1]["version"], v3.as_str(), "{h}");
    assert_eq!(h[1]["outcome"], "rolled_back", "{h}");
}

#[test]
fn an_unknown_host_key_is_refused_with_exit_6_naming_the_host_and_nothing_touched() {
    let Some((_env, hosts)) = setup() else { return };
    let r = Region::new(&hosts, None)
        .with(|f| f.map_service("web", |s| s.health(Health::image()).replicas(1)));
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("known_hosts");
    std::fs::write(&empty, "").unwrap();
    let cfg = hosts.ssh_config_with(
        tmp.path(),
        "UserKnownHostsFile",
        &format!("UserKnownHostsFile {}", empty.display()),
    );

    for args in [
        vec!["deploy", "--region", &r.name, "--version", "v1"],
        vec!["status", "--region", &r.name],
        vec!["history", "--region", &r.name],
    ] {
        let out = r.run(Some(&cfg), &args);
        let err = stderr(&out);
        assert_eq!(code(&out), 6, "{args:?}: {err}");
        assert!(
            err.contains(&hosts.endpoint(0)),
            "{args:?} names no host: {err}"
        );
        assert!(err.contains("Host key verification failed"), "{err}");
        assert!(err.contains("known_hosts"), "no hint: {err}");
    }
    assert_eq!(r.labelled_on_host(), Vec::<String>::new());
    assert_eq!(
        std::fs::read_to_string(&empty).unwrap(),
        "",
        "the key was written"
    );

    // The region may say otherwise: `known_hosts: accept-new` trusts it once and records it.
    let r = r.with(|f| f.docker_ssh("known_hosts", "accept-new"));
    let out = r.run(Some(&cfg), &["history", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let known = std::fs::read_to_string(&empty).unwrap();
    assert!(known.contains("ssh-ed25519"), "not recorded: {known}");
}

#[test]
fn a_missing_or_refused_key_is_exit_6_naming_the_host_and_nothing_touched() {
    let Some((_env, hosts)) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // The test's ssh view offers no key but the region's identity_file.
    let cfg = hosts.ssh_config_with(tmp.path(), "IdentityFile", "IdentityFile none");
    let stranger = tmp.path().join("id_stranger");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    let missing = tmp.path().join("id_nowhere");

    for (key, says) in [
        (stranger.display().to_string(), "Permission denied"),
        (missing.display().to_string(), "does not exist"),
    ] {
        let r = Region::new(&hosts, None)
            .with(|f| f.map_service("web", |s| s.health(Health::image())))
            .with(|f| f.docker_ssh("identity_file", &key));
        let out = r.run(
            Some(&cfg),
            &["deploy", "--region", &r.name, "--version", "v1"],
        );
        let err = stderr(&out);
        assert_eq!(code(&out), 6, "{err}");
        assert!(err.contains(&hosts.endpoint(0)), "names no host: {err}");
        assert!(err.contains(says), "{err}");
        assert!(err.contains("identity_file"), "no hint: {err}");
        assert_eq!(r.labelled_on_host(), Vec::<String>::new());
    }
}

#[test]
fn a_remote_host_without_a_load_balancer_refuses_http_checks_it_cannot_make() {
    let Some((_env, hosts)) = setup() else { return };
    let r = Region::new(&hosts, None);
    let out = r.deploy("v1");
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(err.contains("traffic: none"), "{err}");
    assert_eq!(r.labelled_on_host(), Vec::<String>::new());
}

#[test]
fn a_canary_whose_analysis_checks_containers_from_here_is_refused_on_a_remote_host() {
    let Some((_env, hosts)) = setup() else { return };
    let lane = hosts.lease_lane();
    let r = Region::new(&hosts, Some(&lane)).with(|f| {
        f.map_service("web", |s| {
            s.rollout(
                Rollout::new()
                    .canary("[{weight: 10}, {analysis: {duration: 5s}}, {weight: 100}]")
                    .analysis("{http: {path: /health}}"),
            )
        })
    });
    let out = r.deploy("v1");
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(err.contains("analysis.http"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(r.labelled_on_host(), Vec::<String>::new());
}
