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

// Tests share the hosts h1–h3. One that breaks a host (its dockerd stopped, its link cut)
// holds them alone (`HostsEnv::breaking`); every other test shares them
// (`HostsEnv::sharing`), so no deploy of one test meets the fault another test made. The lock
// is a file lock: it holds across test binaries too (tests/fleet.rs deploys to the hosts).

#[test]
fn a_remote_host_is_deployed_over_ssh_with_health_judged_there_and_no_failed_request() {
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.sharing();
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
    let _hosts = hosts.sharing();
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
    let _hosts = hosts.sharing();
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
    let _hosts = hosts.sharing();
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
    let _hosts = hosts.sharing();
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

/// A region of its own over the first `n` test hosts behind the lb's HAProxy: the sample
/// image is built on h1 and pushed to the test registry, and every other host pulls it.
struct Multi {
    name: String,
    dir: RegionsDir,
    hosts: HostsEnv,
    n: usize,
    file: RegionFile,
    image: String,
    images: Vec<support::Image>,
}

impl Multi {
    fn new(env: &TestEnv, hosts: &HostsEnv, lane: &Lane, n: usize, replicas: u32) -> Multi {
        let name = region_name("mh", 20);
        let image = format!("{}/packfy-sample-{name}", env.registry);
        let endpoints: Vec<String> = (0..n).map(|i| hosts.endpoint(i)).collect();
        let file = RegionFile::new()
            .docker_hosts(&endpoints)
            .currency("USD")
            .keep_releases(5)
            .service(sample_web().image(&image).replicas(replicas))
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

    fn with(mut self, change: impl FnOnce(RegionFile) -> RegionFile) -> Multi {
        self.file = change(self.file.clone());
        self.dir.write(&self.name, &self.file);
        self
    }

    /// Builds the sample at `version` on h1 and pushes it to the registry; returns the tag.
    fn push(&mut self, env: &TestEnv, version: &str, args: &[(&str, &str)]) -> String {
        let tag = format!("{version}-{}", self.name);
        let h1 = &self.hosts.sockets[0];
        let built = env.build_sample(h1, &tag, args);
        let reference = format!("{}:{tag}", self.image);
        support::docker(h1, ["tag", built.reference.as_str(), reference.as_str()]);
        support::docker(h1, ["push", reference.as_str()]);
        self.images.push(built);
        for s in &self.hosts.sockets[..self.n] {
            self.images.push(support::Image::guard(s, &reference));
        }
        tag
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = support::cli(self.dir.path(), args);
        c.env("PACKFY_SSH_CONFIG", &self.hosts.ssh_config)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("DOCKER_HOST");
        support::run_cli(&mut c, &[])
    }

    fn deploy(&self, version: &str) -> Output {
        self.run(&["deploy", "--region", &self.name, "--version", version])
    }

    /// The versions running on host `h` (the test looks at its dockerd directly).
    fn versions_on(&self, h: usize) -> Vec<String> {
        running_versions(&self.hosts.sockets[h], &self.name)
    }

    fn history(&self) -> serde_json::Value {
        let out = self.run(&["history", "--region", &self.name, "-o", "json"]);
        assert_eq!(code(&out), 0, "history: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The release records on host `h` (labelled volumes).
    fn records_on(&self, h: usize) -> usize {
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

/// The runner's link to a test host, set down (its veth): the host keeps running and the lb
/// still reaches it; the runner does not. Up again on drop.
struct Cut(String);

impl Cut {
    fn new(hosts: &HostsEnv, h: usize) -> Cut {
        let veth = std::env::var("PACKFY_HOSTS_VETHS")
            .ok()
            .or_else(|| support::env_vars().ok()?.get("PACKFY_HOSTS_VETHS").cloned())
            .expect("PACKFY_HOSTS_VETHS (env-up with the hosts part)");
        let veth = veth
            .split_whitespace()
            .nth(h)
            .unwrap_or_else(|| panic!("no veth for host {h}: {veth} ({hosts:?})"))
            .to_string();
        let o = Command::new("ip")
            .args(["link", "set", &veth, "down"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ip link set {veth} down: {}",
            stderr(&o)
        );
        Cut(veth)
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "set", &self.0, "up"])
            .output();
    }
}

#[test]
fn three_hosts_roll_one_after_another_under_load_with_no_failed_request() {
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.sharing();
    let lane = hosts.lease_lane();
    let mut m = Multi::new(&env, &hosts, &lane, 3, 3);
    let v1 = m.push(&env, "v1", &[]);
    let v2 = m.push(&env, "v2", &[]);
    let v3 = m.push(&env, "v3", &[("NEVER_HEALTHY", "1")]);

    let out = m.deploy(&v1);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for h in 0..3 {
        assert_eq!(m.versions_on(h), vec![v1.clone()], "host {h}");
    }
    // One server per host, named after its host, at that host's address.
    let servers = lane.servers();
    assert_eq!(servers.len(), 3, "{servers:?}");
    for (h, addr) in hosts.addrs.iter().take(3).enumerate() {
        let tag = format!("-h{}-web-", h + 1);
        let server = servers
            .iter()
            .find(|s| s.contains(&tag))
            .unwrap_or_else(|| panic!("no server of host {h} in {servers:?}"));
        let stat = haproxy_server_stat(&lane.socket, &lane.backend, server).unwrap();
        assert!(
            stat["addr"].starts_with(&format!("{addr}:")),
            "{server}: {stat:?}"
        );
    }

    // `plan` shows how many go where.
    let out = m.run(&["plan", "--region", &m.name, "--version", &v2]);
    let text = support::stdout(&out);
    assert!(
        text.contains("web: 3 replicas over 3 hosts (1 at a time): h1 1, h2 1, h3 1"),
        "{text}\n{}",
        stderr(&out)
    );

    // v2 under load through an HAProxy that does not retry, one host at a time.
    let (out, load) = Load::around(&lane.frontend, 3, || m.deploy(&v2));
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    load.assert_none_failed("v1 → v2 over 3 hosts", 100);
    for h in 0..3 {
        assert_eq!(m.versions_on(h), vec![v2.clone()], "host {h}");
    }
    // Hosts change one after another: each host's new container is healthy before the next
    // host's starts (the rollout's own lines, in order).
    let starts: Vec<usize> = (1..=3)
        .map(|h| {
            err.find(&format!("-h{h}-"))
                .unwrap_or_else(|| panic!("host h{h} not in the output: {err}"))
        })
        .collect();
    assert!(starts[0] < starts[1] && starts[1] < starts[2], "{err}");
    // Every host keeps every record.
    for h in 0..3 {
        assert_eq!(m.records_on(h), 2, "records on host {h}");
    }

    // v3 never becomes healthy: rolled back on every host, v2 serves, nothing failed.
    let (out, load) = Load::around(&lane.frontend, 3, || m.deploy(&v3));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    load.assert_none_failed("the v3 attempt over 3 hosts", 0);
    for h in 0..3 {
        assert_eq!(m.versions_on(h), vec![v2.clone()], "host {h}");
    }
    assert_eq!(lane.servers().len(), 3, "{:?}", lane.servers());
    let hist = m.history();
    assert_eq!(hist[0]["outcome"], "rolled_back", "{hist}");
}

#[test]
fn with_one_host_cut_off_history_and_rollback_go_on_and_a_deploy_touches_nothing() {
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.breaking();
    let lane = hosts.lease_lane();
    let mut m = Multi::new(&env, &hosts, &lane, 3, 3);
    let v1 = m.push(&env, "v1", &[]);
    let v2 = m.push(&env, "v2", &[]);
    for v in [&v1, &v2] {
        let out = m.deploy(v);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }

    let cut = Cut::new(&hosts, 2);
    // A deploy needs every host: exit 6 naming h3 and quoting ssh, before anything changes.
    let out = m.deploy(&v1);
    let err = stderr(&out);
    assert_eq!(code(&out), 6, "{err}");
    assert!(err.contains(&hosts.endpoint(2)), "names no host: {err}");
    assert!(err.contains("ssh"), "{err}");
    for h in 0..2 {
        assert_eq!(m.versions_on(h), vec![v2.clone()], "host {h}");
    }
    // The history is on every host: read from the two that answer.
    let hist = m.history();
    assert_eq!(hist.as_array().map(Vec::len), Some(2), "{hist}");
    assert_eq!(hist[0]["version"], v2.as_str(), "{hist}");
    // Rollback goes back on the hosts that answer and says which it could not reach.
    let out = m.run(&["rollback", "--region", &m.name]);
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(err.contains(&hosts.endpoint(2)), "{err}");
    for h in 0..2 {
        assert_eq!(m.versions_on(h), vec![v1.clone()], "host {h}");
    }
    drop(cut);
    // Link back: h3 still runs v2 (it was never reached); the next deploy puts it right and
    // finds no lock left behind.
    assert_eq!(m.versions_on(2), vec![v2.clone()]);
    let out = m.deploy(&v1);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for h in 0..3 {
        assert_eq!(m.versions_on(h), vec![v1.clone()], "host {h}");
    }
    for h in 0..3 {
        assert!(
            m.records_on(h) >= 3,
            "records on host {h}: {}",
            m.records_on(h)
        );
    }
}

#[test]
fn two_runners_racing_for_a_region_of_several_hosts_never_both_deploy() {
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.sharing();
    let lane = hosts.lease_lane();
    let mut m = Multi::new(&env, &hosts, &lane, 2, 2);
    // The pre-deploy hook holds the winner's lock long enough for the loser to find it.
    m = m.with(|f| f.hook("pre_deploy", "hold", "sleep 3"));
    let v1 = m.push(&env, "v1", &[]);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| m.deploy(&v1));
        let b = s.spawn(|| m.deploy(&v1));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut codes = [code(&a), code(&b)];
    codes.sort();
    assert_eq!(codes, [0, 5], "{}\n---\n{}", stderr(&a), stderr(&b));
    let loser = if code(&a) == 5 { &a } else { &b };
    assert!(stderr(loser).contains("locked"), "{}", stderr(loser));
    for h in 0..2 {
        assert_eq!(m.versions_on(h), vec![v1.clone()], "host {h}");
    }
    assert_eq!(m.history().as_array().map(Vec::len), Some(1));
    // And the lock is free again on both hosts.
    let out = m.run(&["status", "--region", &m.name]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn the_link_to_one_host_cut_for_10s_mid_deploy_is_restored_or_named_and_the_next_deploy_recovers() {
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.breaking();
    let lane = hosts.lease_lane();
    let mut m = Multi::new(&env, &hosts, &lane, 3, 3);
    let v1 = m.push(&env, "v1", &[]);
    let v2 = m.push(&env, "v2", &[]);
    let out = m.deploy(&v1);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let out = std::thread::scope(|s| {
        let run = s.spawn(|| m.deploy(&v2));
        // When h2 starts its v2 container, its link goes down for 10 s.
        let started = std::time::Instant::now();
        while !m.versions_on(1).contains(&v2) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(120),
                "h2 never started v2"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let cut = Cut::new(&hosts, 1);
        std::thread::sleep(std::time::Duration::from_secs(10));
        drop(cut);
        run.join().unwrap()
    });
    let err = stderr(&out);
    eprintln!(
        "the link cut mid-deploy: exit {}, last lines:\n{}",
        code(&out),
        err.lines().rev().take(6).collect::<Vec<_>>().join("\n")
    );
    match code(&out) {
        // The link came back before ssh gave up: the deploy went on.
        0 => {}
        3 | 4 => assert!(err.contains("h2"), "names no host: {err}"),
        other => panic!("exit {other}: {err}"),
    }
    // The link is back: the next deploy recovers, no lock left behind.
    let out = m.deploy(&v2);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for h in 0..3 {
        assert_eq!(m.versions_on(h), vec![v2.clone()], "host {h}");
    }
    assert_eq!(lane.servers().len(), 3, "{:?}", lane.servers());
}

/// A test host's dockerd, stopped (SIGTERM: it stops its containers and exits) and started
/// again as env-up started it, in its namespace, on drop.
struct StoppedDockerd {
    ns: String,
    argv: Vec<String>,
    socket: String,
}

impl StoppedDockerd {
    fn stop(hosts: &HostsEnv, h: usize) -> StoppedDockerd {
        let env_dir = support::env_vars().unwrap()["PACKFY_ENV_DIR"].clone();
        let runs = std::fs::read_dir(Path::new(&env_dir).join("run")).unwrap();
        let socket = hosts.sockets[h].trim_start_matches("unix://").to_string();
        let stem = Path::new(&socket)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .replace("docker-", "dockerd-");
        let pidfile = runs
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy() == format!("{stem}.pid"))
            })
            .unwrap_or_else(|| panic!("no pidfile {stem}.pid under {env_dir}/run"));
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .to_string();
        let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap()
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let ns = Command::new("ip")
            .args(["netns", "identify", &pid])
            .output()
            .unwrap();
        let ns = String::from_utf8_lossy(&ns.stdout).trim().to_string();
        assert!(!ns.is_empty(), "dockerd {pid} is in no named namespace");
        let o = Command::new("kill").args(["-TERM", &pid]).output().unwrap();
        assert!(o.status.success(), "kill {pid}: {}", stderr(&o));
        let t = std::time::Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(60),
                "dockerd {pid} did not stop"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        StoppedDockerd { ns, argv, socket }
    }
}

impl Drop for StoppedDockerd {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = Command::new("setsid")
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .args(&self.argv)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let t = std::time::Instant::now();
        let url = format!("unix://{}", self.socket);
        while !docker_try(&url, ["version"]).status.success()
            && t.elapsed() < std::time::Duration::from_secs(60)
        {
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }
}

#[test]
fn one_hosts_dockerd_stopped_mid_deploy_names_the_host_and_the_others_serve_the_previous_release() {
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.breaking();
    let lane = hosts.lease_lane();
    let mut m = Multi::new(&env, &hosts, &lane, 3, 3);
    let v1 = m.push(&env, "v1", &[]);
    let v2 = m.push(&env, "v2", &[]);
    let out = m.deploy(&v1);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let (out, stopped) = std::thread::scope(|s| {
        let run = s.spawn(|| m.deploy(&v2));
        // h1 has rolled to v2; when h2 starts its v2 container, h2's dockerd stops.
        let started = std::time::Instant::now();
        while !m.versions_on(1).contains(&v2) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(120),
                "h2 never started v2"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let stopped = StoppedDockerd::stop(&hosts, 1);
        (run.join().unwrap(), stopped)
    });
    let err = stderr(&out);
    eprintln!(
        "dockerd stopped mid-deploy: exit {}, last lines:\n{}",
        code(&out),
        err.lines().rev().take(8).collect::<Vec<_>>().join("\n")
    );
    // The failure names h2. Its new container is taken out while dockerd still answers
    // during its shutdown (exit 3: rolled back), or cannot be once it is gone (exit 4, what
    // could not be restored named with its host); the other hosts serve the previous
    // release again either way.
    assert!(matches!(code(&out), 3 | 4), "exit {}: {err}", code(&out));
    assert!(err.contains("host h2"), "names no host: {err}");
    assert_eq!(m.versions_on(0), vec![v1.clone()]);
    assert_eq!(m.versions_on(2), vec![v1.clone()]);
    drop(stopped);
    // dockerd is back: the next deploy recovers (a stale lock on h2 is taken over).
    let out = m.deploy(&v2);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for h in 0..3 {
        assert_eq!(m.versions_on(h), vec![v2.clone()], "host {h}");
    }
    assert_eq!(lane.servers().len(), 3, "{:?}", lane.servers());
}
