//! Regions with several load balancers: the test hosts h1–h3 (tests/env/hosts.sh, reached by
//! the CLI only over ssh://) behind both the lb and the lb2 namespaces' HAProxy (no retries,
//! the same configuration), `traffic.haproxy.runtime_api: [lb, lb2]`, both reached over ssh.
//!
//! Only these tests use lb2, so only they may break it (its link cut); they never break a
//! host, and share h1–h3 through the hosts lock (`HostsEnv::sharing`, a file lock) with the
//! other test binaries that deploy there.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use support::fixture::{region_name, Health, RegionFile, RegionsDir, Rollout, Service};
use support::{code, docker_try, haproxy_server_stat, remove_labelled, running_versions, stderr};
use support::{http_request, HostsEnv, Lane, Load, TestEnv};

/// A test that cuts lb2 off holds it alone; the others share it.
static LB2: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn sharing() -> std::sync::RwLockReadGuard<'static, ()> {
    LB2.read().unwrap_or_else(|e| e.into_inner())
}

fn breaking() -> std::sync::RwLockWriteGuard<'static, ()> {
    LB2.write().unwrap_or_else(|e| e.into_inner())
}

fn setup() -> Option<(TestEnv, HostsEnv)> {
    let env = TestEnv::get()?;
    let hosts = HostsEnv::get(&env)?;
    Some((env, hosts))
}

/// A region of its own over the first `n` test hosts, behind both load balancers (one lane
/// leased on lb, the same backend on lb2). The sample is built on h1 and pushed to the test
/// registry; every other host pulls it.
struct Region {
    name: String,
    dir: RegionsDir,
    hosts: HostsEnv,
    n: usize,
    image: String,
    images: Vec<support::Image>,
    lb: Lane,
    lb2: Lane,
    file: RegionFile,
}

impl Region {
    fn new(env: &TestEnv, hosts: &HostsEnv, n: usize) -> Region {
        let lb = hosts.lease_lane();
        let lb2 = hosts.lb2_lane(&lb);
        let name = region_name("lbs", 20);
        let image = format!("{}/packfy-sample-{name}", env.registry);
        let endpoints: Vec<String> = (0..n).map(|i| hosts.endpoint(i)).collect();
        let file = RegionFile::new()
            .docker_hosts(&endpoints)
            .currency("USD")
            .keep_releases(5)
            .service(sample_web().image(&image).replicas(n as u32))
            .haproxy(
                &hosts.lb_runtime_api(),
                &lb.frontend,
                &[("web", &lb.backend)],
            )
            .runtime_apis(&[&hosts.lb_runtime_api(), &hosts.lb2_runtime_api()]);
        let r = Region {
            name,
            dir: RegionsDir::new(),
            hosts: hosts.clone(),
            n,
            image,
            images: Vec::new(),
            lb,
            lb2,
            file,
        };
        r.dir.write(&r.name, &r.file);
        r
    }

    /// A region over the first `n` hosts with v1 and v2 pushed, serving v1; (it, v1, v2).
    fn serving_v1(env: &TestEnv, hosts: &HostsEnv, n: usize) -> (Region, String, String) {
        let mut r = Region::new(env, hosts, n);
        let v1 = r.push(env, "v1");
        let v2 = r.push(env, "v2");
        let out = r.deploy(&v1);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        (r, v1, v2)
    }

    fn with(mut self, change: impl FnOnce(RegionFile) -> RegionFile) -> Region {
        self.file = change(self.file.clone());
        self.dir.write(&self.name, &self.file);
        self
    }

    /// Builds the sample at `version` on h1 and pushes it to the registry; returns the tag.
    fn push(&mut self, env: &TestEnv, version: &str) -> String {
        let tag = format!("{version}-{}", self.name);
        let h1 = &self.hosts.sockets[0];
        let built = env.build_sample(h1, &tag, &[]);
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

    fn versions_on(&self, h: usize) -> Vec<String> {
        running_versions(&self.hosts.sockets[h], &self.name)
    }

    /// Everything of the region on host `h`: containers (id and state) and volumes (the lock
    /// and the release records).
    fn on_host(&self, h: usize) -> Vec<String> {
        let filter = format!("label=packfy.region={}", self.name);
        let mut out = Vec::new();
        for args in [
            vec![
                "ps",
                "-a",
                "--filter",
                &filter,
                "--format",
                "{{.ID}} {{.State}}",
            ],
            vec!["volume", "ls", "-q", "--filter", &filter],
        ] {
            let o = docker_try(&self.hosts.sockets[h], &args);
            assert!(o.status.success(), "docker {args:?}: {}", stderr(&o));
            out.extend(String::from_utf8_lossy(&o.stdout).lines().map(String::from));
        }
        out.sort();
        out
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        for s in &self.hosts.sockets[..self.n] {
            remove_labelled(s, &format!("packfy.region={}", self.name));
        }
    }
}

/// The sample app; checks every 500 ms, 2 passes to take traffic.
fn sample_web() -> Service {
    Service::new("web", "packfy-sample")
        .port(8080)
        .health(
            Health::http("/health")
                .interval("500ms")
                .timeout("400ms")
                .healthy_threshold(2)
                .unhealthy_threshold(3)
                .deadline("30s"),
        )
        .rollout(Rollout::new().bake("2s").drain_timeout("5s"))
        .stop_grace_period("5s")
}

/// A lane's servers as `name → (address, status, weight)`.
fn servers(lane: &Lane) -> BTreeMap<String, (String, String, String)> {
    lane.servers()
        .into_iter()
        .map(|s| {
            let st = haproxy_server_stat(&lane.socket, &lane.backend, &s)
                .unwrap_or_else(|| panic!("no stat of {s} on {}", lane.socket.display()));
            let row = (
                st["addr"].clone(),
                st["status"].clone(),
                st["weight"].clone(),
            );
            (s, row)
        })
        .collect()
}

/// Both load balancers hold the same servers, one per host `0..n`, at that host's address,
/// in service; returns their names.
fn one_server_per_host_on_both(r: &Region) -> Vec<String> {
    let (s1, s2) = (servers(&r.lb), servers(&r.lb2));
    assert_eq!(s1, s2, "the load balancers differ: lb {s1:?}, lb2 {s2:?}");
    assert_eq!(s1.len(), r.n, "{s1:?}");
    for (h, addr) in r.hosts.addrs.iter().take(r.n).enumerate() {
        let tag = format!("-h{}-web-", h + 1);
        let (name, (at, status, _)) = s1
            .iter()
            .find(|(s, _)| s.contains(&tag))
            .unwrap_or_else(|| panic!("no server of host {h} in {s1:?}"));
        assert!(at.starts_with(&format!("{addr}:")), "{name} at {at}");
        assert_eq!(status, "UP", "{name}");
    }
    s1.into_keys().collect()
}

#[test]
fn three_hosts_behind_two_load_balancers_roll_under_load_through_both_with_no_failed_request() {
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.sharing();
    let _lb2 = sharing();
    let (r, v1, v2) = Region::serving_v1(&env, &hosts, 3);
    for h in 0..3 {
        assert_eq!(r.versions_on(h), vec![v1.clone()], "host {h}");
    }
    let before = one_server_per_host_on_both(&r);
    for lane in [&r.lb, &r.lb2] {
        let answer = http_request(&lane.frontend, "/version").unwrap();
        assert_eq!(answer.body.trim(), v1, "through {}", lane.frontend);
    }

    // v2 one host after another, under load through both load balancers, neither retrying.
    let load1 = Load::start(&r.lb.frontend, 2);
    let load2 = Load::start(&r.lb2.frontend, 2);
    std::thread::sleep(Duration::from_millis(500));
    let out = r.deploy(&v2);
    std::thread::sleep(Duration::from_millis(500));
    let (load1, load2) = (load1.finish(), load2.finish());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    load1.assert_none_failed("v1 → v2 over 3 hosts, through lb", 100);
    load2.assert_none_failed("v1 → v2 over 3 hosts, through lb2", 100);

    // Both end with exactly the new servers, at the hosts' addresses; none of the old.
    for h in 0..3 {
        assert_eq!(r.versions_on(h), vec![v2.clone()], "host {h}");
    }
    let after = one_server_per_host_on_both(&r);
    assert!(
        after.iter().all(|s| !before.contains(s)),
        "old servers left: {before:?} → {after:?}"
    );
    for lane in [&r.lb, &r.lb2] {
        let answer = http_request(&lane.frontend, "/version").unwrap();
        assert_eq!(answer.body.trim(), v2, "through {}", lane.frontend);
    }
}

/// lb2's link from the runner, set down: lb2 keeps running, the runner cannot reach it. Up
/// again on drop.
struct Cut(String);

impl Cut {
    fn new(veth: &str) -> Cut {
        let o = Command::new("ip")
            .args(["link", "set", veth, "down"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ip link set {veth} down: {}",
            stderr(&o)
        );
        Cut(veth.to_string())
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
fn a_load_balancer_out_of_reach_stops_the_deploy_with_exit_6_naming_it_and_nothing_changed() {
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.sharing();
    let _lb2 = breaking();
    let (r, v1, v2) = Region::serving_v1(&env, &hosts, 2);
    let servers_before = one_server_per_host_on_both(&r);
    let on_hosts = |r: &Region| (0..r.n).map(|h| r.on_host(h)).collect::<Vec<_>>();
    let hosts_before = on_hosts(&r);
    let lb_before = servers(&r.lb);

    let cut = Cut::new(&hosts.lb2_veth);
    let out = r.deploy(&v2);
    let err = stderr(&out);
    assert_eq!(code(&out), 6, "{err}");
    assert!(err.contains(&hosts.lb2), "names no load balancer: {err}");
    assert!(err.contains("ssh said"), "does not quote ssh: {err}");
    assert!(err.contains("nothing was changed"), "{err}");
    // Not a thing changed: the hosts' containers and volumes (no lock left), the first
    // load balancer's servers and their states.
    assert_eq!(on_hosts(&r), hosts_before);
    assert_eq!(servers(&r.lb), lb_before);
    for h in 0..2 {
        assert_eq!(r.versions_on(h), vec![v1.clone()], "host {h}");
    }
    drop(cut);

    // With the link back, the same deploy goes through on both.
    let out = r.deploy(&v2);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for h in 0..2 {
        assert_eq!(r.versions_on(h), vec![v2.clone()], "host {h}");
    }
    let after = one_server_per_host_on_both(&r);
    assert!(
        after.iter().all(|s| !servers_before.contains(s)),
        "{after:?}"
    );
}

#[test]
fn a_change_one_load_balancer_refuses_is_undone_on_both_and_names_it() {
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.sharing();
    let _lb2 = sharing();
    let (r, v1, v2) = Region::serving_v1(&env, &hosts, 2);
    let before = one_server_per_host_on_both(&r);

    // lb2 already holds the name v2's first server will take (h1's next: release r2, index
    // 2), at another address: lb2 refuses to add it there, lb has added it.
    let h1 = before
        .iter()
        .find(|s| s.contains("-h1-web-"))
        .expect("a server of h1");
    let taken = h1.replace("-r1-1", "-r2-2");
    assert_ne!(&taken, h1, "server names changed shape: {h1}");
    r.lb2.add_server(&taken, "10.201.255.254:9");

    let out = r.deploy(&v2);
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    assert!(err.contains(&hosts.lb2), "names no load balancer: {err}");
    assert!(err.contains(&taken), "{err}");
    // Undone on both: v1 serves on every host, both load balancers hold exactly v1's
    // servers again (the new one left lb, and the name left lb2 with it).
    for h in 0..2 {
        assert_eq!(r.versions_on(h), vec![v1.clone()], "host {h}");
    }
    assert_eq!(one_server_per_host_on_both(&r), before);
}

#[test]
fn a_container_that_exits_while_haproxy_checks_it_fails_the_deploy_at_once_with_its_output() {
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.sharing();
    let _lb2 = sharing();
    // Never healthy, and gone 1 s after it starts: HAProxy would never see it UP, and the
    // deadline is far; the rollout sees it exit.
    let mut r = Region::new(&env, &hosts, 1).with(|f| {
        f.map_service("web", |s| {
            s.env("NEVER_HEALTHY", "1")
                .env("EXIT_AFTER_SECS", "1")
                .health(
                    Health::http("/health")
                        .interval("500ms")
                        .timeout("400ms")
                        .deadline("120s"),
                )
        })
    });
    let v1 = r.push(&env, "v1");
    let out = r.deploy(&v1);
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    assert!(
        err.contains("exited with code 1 while HAProxy was checking it"),
        "{err}"
    );
    assert!(err.contains("EXIT_AFTER_SECS reached"), "no output: {err}");
    // Nothing of it is left in rotation on either load balancer.
    assert_eq!(servers(&r.lb), BTreeMap::new());
    assert_eq!(servers(&r.lb2), BTreeMap::new());
}

#[test]
fn a_backend_missing_from_the_load_balancers_is_exit_2_naming_it_and_them_before_anything() {
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.sharing();
    let _lb2 = sharing();
    let mut r = Region::new(&env, &hosts, 2);
    let v1 = r.push(&env, "v1");
    let frontend = r.lb.frontend.clone();
    let r = r.with(|f| {
        f.haproxy(
            &hosts.lb_runtime_api(),
            &frontend,
            &[("web", "packfy_no_such_backend")],
        )
        .runtime_apis(&[&hosts.lb_runtime_api(), &hosts.lb2_runtime_api()])
    });
    let before: Vec<Vec<String>> = (0..r.n).map(|h| r.on_host(h)).collect();
    let out = r.deploy(&v1);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(err.contains("packfy_no_such_backend"), "{err}");
    assert!(
        err.contains(&hosts.lb) && err.contains(&hosts.lb2),
        "names neither load balancer: {err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    // Nothing on the hosts: no container, no lock or record volume.
    let after: Vec<Vec<String>> = (0..r.n).map(|h| r.on_host(h)).collect();
    assert_eq!(after, before);
}

#[test]
fn a_canary_behind_two_load_balancers_weighs_both_alike_and_its_promote_ends_on_both() {
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.sharing();
    let _lb2 = sharing();
    let (r, _v1, v2) = Region::serving_v1(&env, &hosts, 2);
    let before = one_server_per_host_on_both(&r);
    let image = r.image.clone();
    let r = r.with(|f| {
        f.service(
            sample_web()
                .image(&image)
                .replicas(2)
                .rollout(Rollout::new().canary("[{weight: 50}, {pause: {}}]")),
        )
    });

    let load1 = Load::start(&r.lb.frontend, 2);
    let load2 = Load::start(&r.lb2.frontend, 2);
    std::thread::sleep(Duration::from_millis(300));
    // At its indefinite pause: both load balancers hold the old and the new servers, with
    // the same weights, each set taking part of the traffic.
    let out = r.deploy(&v2);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("paused"), "{}", stderr(&out));
    let (s1, s2) = (servers(&r.lb), servers(&r.lb2));
    assert_eq!(s1, s2, "the load balancers differ: lb {s1:?}, lb2 {s2:?}");
    let weight = |old: bool| {
        s1.iter()
            .filter(|(name, _)| before.contains(name) == old)
            .map(|(_, (_, status, w))| {
                assert_eq!(status, "UP", "{s1:?}");
                w.parse::<u32>().unwrap_or(0)
            })
            .collect::<Vec<_>>()
    };
    let (old, new) = (weight(true), weight(false));
    assert_eq!(old.len(), 2, "{s1:?}");
    assert!(!new.is_empty(), "no new server: {s1:?}");
    assert!(old.iter().chain(&new).all(|w| *w > 0), "{s1:?}");

    // Promoted: v2 alone on both, the old servers gone from both.
    let out = r.run(&["promote", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(300));
    let (load1, load2) = (load1.finish(), load2.finish());
    load1.assert_none_failed("a canary and its promote, through lb", 50);
    load2.assert_none_failed("a canary and its promote, through lb2", 50);
    for h in 0..2 {
        assert_eq!(r.versions_on(h), vec![v2.clone()], "host {h}");
    }
    let after = one_server_per_host_on_both(&r);
    assert!(after.iter().all(|s| !before.contains(s)), "{after:?}");
    for lane in [&r.lb, &r.lb2] {
        let answer = http_request(&lane.frontend, "/version").unwrap();
        assert_eq!(answer.body.trim(), v2, "through {}", lane.frontend);
    }
}
