//! The Docker target against the real engine, registry, HAProxy and sample app of the test
//! environment (`make env-up`). Each test deploys its own region (a unique name, so scopes
//! never overlap) through its own leased HAProxy lane.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::fixture::{region_name, Health, RegionFile, RegionsDir, Rollout, Service};
use support::{code, container_ids, docker, http_request, stderr, Lane, Load, TestEnv};

const SECRET_VALUE: &str = "s3cr3t-token-do-not-print-7731";

/// A region of its own, in a temporary regions directory.
struct Region {
    name: String,
    dir: RegionsDir,
    host: String,
    frontend: String,
    file: RegionFile,
}

impl Region {
    /// Writes `regions/<name>.yaml`: the sample app behind the leased lane, with fast checks.
    fn new(env: &TestEnv, lane: Option<&Lane>) -> Region {
        Self::on(&env.docker_host, lane)
    }

    fn on(host: &str, lane: Option<&Lane>) -> Region {
        let web = sample_web("60s");
        let file = RegionFile::docker(host)
            .currency("USD")
            .keep_releases(3)
            .service(web);
        let file = match lane {
            Some(l) => file.lane(l, "web"),
            None => file.traffic_none(),
        };
        let r = Region {
            name: region_name("rg", 20),
            dir: RegionsDir::new(),
            host: host.to_string(),
            frontend: lane.map(|l| l.frontend.clone()).unwrap_or_default(),
            file,
        };
        r.dir.write(&r.name, &r.file);
        r
    }

    /// The region with its file changed by `change` (and rewritten).
    fn with(mut self, change: impl FnOnce(RegionFile) -> RegionFile) -> Region {
        self.file = change(self.file.clone());
        self.dir.write(&self.name, &self.file);
        self
    }

    /// A region on the first daemon whose `web` image, `REGISTRY/<region>`, builds from the
    /// sample app's context; and that image name.
    fn built_into(env: &TestEnv, registry: &str) -> (Region, String) {
        let r = Region::on(&env.docker_hosts[0], None);
        r.add_build_context(env);
        let repo = format!("{registry}/{}", r.name);
        let r = r.with(|f| f.map_service("web", |s| s.image(&repo).build("ctx")));
        (r, repo)
    }

    /// The same region, now on the engine at `host`.
    fn moved_to(self, host: &str) -> Region {
        let mut r = self.with(|f| f.docker_host(host));
        r.host = host.to_string();
        r
    }

    /// A build context of the sample app beside the regions (`ctx/`).
    fn add_build_context(&self, env: &TestEnv) {
        let ctx = self.dir.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        std::fs::copy(&env.sample_bin, ctx.join("packfy-sample")).unwrap();
        std::fs::copy(
            support::repo_root().join("tests/sample-app/Dockerfile"),
            ctx.join("Dockerfile"),
        )
        .unwrap();
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = support::cli(self.dir.path(), args);
        c.env("PACKFY_TEST_API_TOKEN", SECRET_VALUE);
        c
    }

    /// Runs the command; fails the test if its output shows the secret or a panic.
    fn run(&self, args: &[&str]) -> Output {
        support::run_cli(&mut self.cmd(args), &[SECRET_VALUE])
    }

    fn deploy(&self, version: &str) -> Output {
        self.deploy_with(&[], version)
    }

    /// `packfy-deploy GLOBAL… deploy --region NAME --version VERSION`.
    fn deploy_with(&self, global: &[&str], version: &str) -> Output {
        let deploy = ["deploy", "--region", &self.name, "--version", version];
        self.run(&[global, &deploy[..]].concat())
    }

    /// Versions of the running containers of this region.
    fn running_versions(&self) -> Vec<String> {
        support::running_versions(&self.host, &self.name)
    }

    fn history_json(&self) -> serde_json::Value {
        let out = self.run(&["history", "--region", &self.name, "-o", "json"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // Remove everything this region created on the engine, whatever the test did.
        support::remove_labelled(&self.host, &format!("packfy.region={}", self.name));
    }
}

/// The sample app, 3 replicas, with fast checks; `deadline` is the longest a release may take
/// to turn healthy.
fn sample_web(deadline: &str) -> Service {
    Service::new("web", "packfy-sample")
        .replicas(3)
        .port(8080)
        .secret_env("API_TOKEN", "env:PACKFY_TEST_API_TOKEN")
        .health(
            Health::http("/health")
                .start_period("3s")
                .interval("500ms")
                .timeout("500ms")
                .healthy_threshold(2)
                .unhealthy_threshold(3)
                .deadline(deadline),
        )
        .rollout(Rollout::new().bake("3s").drain_timeout("5s"))
        .stop_grace_period("5s")
}

#[test]
fn rolling_deploy_under_load_has_no_failed_requests_and_bad_releases_roll_back() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let r = Region::new(&env, Some(&lane));
    let tag = |v: &str| format!("{v}-{}", r.name);
    let (v1, v2, v3, v5) = (tag("v1"), tag("v2"), tag("v3"), tag("v5"));
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    let _i2 = env.build_sample(&r.host, &v2, &[]);
    let _i3 = env.build_sample(&r.host, &v3, &[("NEVER_HEALTHY", "1")]);
    let _i5 = env.build_sample(&r.host, &v5, &[("ERROR_RATE", "0.2")]);

    // v1, 3 replicas.
    let out = r.deploy(&v1);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(r.running_versions(), vec![v1.clone(); 3]);
    assert_eq!(
        http_request(&r.frontend, "/version").unwrap().body.trim(),
        v1
    );

    // v2 under load: zero failed requests, all replicas v2.
    let (out, load) = Load::around(&r.frontend, 3, || r.deploy(&v2));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    load.assert_none_failed("v1 → v2", 100);
    assert_eq!(r.running_versions(), vec![v2.clone(); 3]);

    // v3 never becomes healthy: exit 3, v2 still serving, no failed request.
    let (out, load) = Load::around(&r.frontend, 3, || r.deploy(&v3));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("rolled back"), "{}", stderr(&out));
    load.assert_none_failed("the v3 attempt", 0);
    assert_eq!(r.running_versions(), vec![v2.clone(); 3]);
    assert_eq!(
        http_request(&r.frontend, "/version").unwrap().body.trim(),
        v2
    );
    let h = r.history_json();
    assert_eq!(h[0]["version"], v3.as_str());
    assert_eq!(h[0]["outcome"], "rolled_back");

    // v5 answers 500 to 20% of `/`: the bake sees HAProxy's 5xx counters and rolls back.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, fe) = (stop.clone(), r.frontend.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(90) {
                let _ = http_request(&fe, "/");
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let out = r.deploy(&v5);
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("5xx"), "{}", stderr(&out));
    assert_eq!(r.running_versions(), vec![v2.clone(); 3]);
}

#[test]
fn a_container_that_exits_is_caught_long_before_the_deadline() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    // a long deadline: only the exit can end the deploy early
    let r = Region::new(&env, Some(&lane)).with(|f| f.service(sample_web("300s")));
    let (v1, v4) = (format!("v1-{}", r.name), format!("v4-{}", r.name));
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    // Healthy at once, then gone after 2 s: it is in rotation when it dies.
    let _i4 = env.build_sample(&r.host, &v4, &[("EXIT_AFTER_SECS", "2")]);
    assert_eq!(code(&r.deploy(&v1)), 0);
    let t0 = Instant::now();
    let out = r.deploy(&v4);
    let took = t0.elapsed();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exited with code"),
        "{}",
        stderr(&out)
    );
    // The health deadline is 300 s; an exit after 2 s must be seen long before it (in
    // seconds on an idle machine; the bound leaves room for a loaded one).
    assert!(
        took < Duration::from_secs(120),
        "took {took:?} to notice the exit"
    );
    assert_eq!(r.running_versions(), vec![v1.clone(); 3]);
}

#[test]
fn rollback_to_a_chosen_release_and_with_nothing_to_go_back_to() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let r = Region::new(&env, Some(&lane));
    let (v1, v2) = (format!("v1-{}", r.name), format!("v2-{}", r.name));
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    let _i2 = env.build_sample(&r.host, &v2, &[]);

    assert_eq!(code(&r.deploy(&v1)), 0);
    let out = r.run(&["rollback", "--region", &r.name]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no earlier healthy release"),
        "{}",
        stderr(&out)
    );

    assert_eq!(code(&r.deploy(&v2)), 0);
    let t0 = Instant::now();
    let out = r.run(&["rollback", "--region", &r.name, "--to", "r1"]);
    let took = t0.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(r.running_versions(), vec![v1.clone(); 3]);
    assert_eq!(
        http_request(&r.frontend, "/version").unwrap().body.trim(),
        v1
    );
    eprintln!("rollback to r1 took {took:?}");
    let h = r.history_json();
    assert_eq!(h[0]["kind"], "rollback");
    assert_eq!(h[0]["target"], "r1");
    assert_eq!(h[1]["outcome"], "reverted");
}

#[test]
fn a_second_deploy_is_refused_while_locked_and_a_stale_lock_is_taken_over() {
    let Some(env) = TestEnv::get() else { return };
    let r = Region::new(&env, None).with(|f| f.lock_ttl("6s"));
    let v1 = format!("v1-{}", r.name);
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    let mut c = r.cmd(&[
        "lock",
        "--region",
        &r.name,
        "--reason",
        "maintenance window",
    ]);
    c.env("PACKFY_ACTOR", "alice");
    let out = c.output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = r.deploy(&v1);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("locked by alice"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("maintenance window"),
        "{}",
        stderr(&out)
    );
    assert!(r.running_versions().is_empty());

    std::thread::sleep(Duration::from_millis(6500));
    let out = r.deploy(&v1);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("taking over a stale lock"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_killed_deploy_is_recognised_and_rolled_back() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let r = Region::new(&env, Some(&lane));
    let (v1, v2) = (format!("v1-{}", r.name), format!("v2-{}", r.name));
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    let _i2 = env.build_sample(&r.host, &v2, &[("HEALTHY_AFTER_SECS", "2")]);
    assert_eq!(code(&r.deploy(&v1)), 0);

    let child = support::spawn_cli(
        &mut r.cmd(&["deploy", "--region", &r.name, "--version", &v2]),
        &[SECRET_VALUE],
    );
    // Kill it once the second new container exists: one v2 serves, one v1 is stopped.
    let filter = format!("label=packfy.region={}", r.name);
    support::wait_until(
        Duration::from_secs(60),
        "the deploy to reach its second batch",
        || {
            let names = docker(
                &r.host,
                ["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
            );
            String::from_utf8_lossy(&names.stdout).contains("-r2-5")
        },
    );
    child.signal("KILL");
    // What it printed before it died shows no secret (Spawned::wait checks).
    let out = child.wait();
    assert_eq!(support::signal_of(&out), Some(9), "{}", support::text(&out));

    let out = r.run(&["status", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("interrupted"), "{text}");

    let out = r.run(&["rollback", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(r.running_versions(), vec![v1.clone(); 3]);
    for _ in 0..20 {
        assert_eq!(
            http_request(&r.frontend, "/version").unwrap().body.trim(),
            v1
        );
    }
    let h = r.history_json();
    let r2 = h
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "r2")
        .unwrap();
    assert_eq!(r2["outcome"], "rolled_back");
    let out = r.run(&["status", "--region", &r.name]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("interrupted"));
}

#[test]
fn unreachable_daemon_and_missing_image_are_clear_errors() {
    let Some(env) = TestEnv::get() else { return };
    let r = Region::on("unix:///nonexistent/docker.sock", None);
    let out = r.deploy("v1");
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unix:///nonexistent/docker.sock"),
        "{}",
        stderr(&out)
    );

    let r = Region::new(&env, None);
    let out = r.deploy("no-such-version");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("packfy-sample:no-such-version"),
        "{}",
        stderr(&out)
    );
    assert!(r.running_versions().is_empty());
}

#[test]
fn an_unreachable_registry_fails_the_push_before_anything_changes() {
    let Some(env) = TestEnv::get() else { return };
    let r = Region::new(&env, None);
    let v1 = format!("v1-{}", r.name);
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    assert_eq!(code(&r.deploy(&v1)), 0);
    // A build context of our own, and an image name whose registry nothing listens on.
    r.add_build_context(&env);
    let r = r.with(|f| f.map_service("web", |s| s.image("127.0.0.1:1/packfy-sample").build("ctx")));
    let out = r.run(&["deploy", "--region", &r.name, "--version", "v2", "--push"]);
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(stderr(&out).contains("127.0.0.1:1"), "{}", stderr(&out));
    assert_eq!(r.running_versions(), vec![v1.clone(); 3]);
    let _ = docker(
        &r.host,
        ["rmi", "-f", "--no-prune", "127.0.0.1:1/packfy-sample:v2"],
    );
}

#[test]
fn push_to_the_registry_then_deploy_on_another_daemon_pulls_it() {
    let Some(env) = TestEnv::with_docker_hosts(2) else {
        return;
    };
    let (r, repo) = Region::built_into(&env, &env.registry);
    // Build on the first daemon and push…
    let out = r.run(&["build", "--region", &r.name, "--version", "v1", "--push"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // …then deploy on the second, which has never seen the image: it pulls it.
    let r = r.moved_to(&env.docker_hosts[1]);
    let out = r.run(&pulling_deploy(&r.name));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("Pulling"), "{}", stderr(&out));
    assert_eq!(r.running_versions(), vec!["v1".to_string(); 3]);
    remove_image_everywhere(&env, &format!("{repo}:v1"));
}

#[test]
fn a_registry_that_wants_a_login_gets_the_docker_login_on_push_and_pull() {
    use base64::Engine as _;
    let Some(env) = TestEnv::with_docker_hosts(2) else {
        return;
    };
    let (r, repo) = Region::built_into(&env, &env.registry_auth);
    // The Docker config file as `docker login` leaves it, and one without that login.
    let login = r.dir.path().join("docker-login");
    let nobody = r.dir.path().join("docker-nobody");
    std::fs::create_dir(&login).unwrap();
    std::fs::create_dir(&nobody).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        env.registry_auth_user, env.registry_auth_password
    ));
    std::fs::write(
        login.join("config.json"),
        serde_json::json!({"auths": {&env.registry_auth: {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let secrets = [SECRET_VALUE, env.registry_auth_password.as_str()];
    let run = |r: &Region, config: &Path, args: &[&str]| {
        support::run_cli(r.cmd(args).env("DOCKER_CONFIG", config), &secrets)
    };
    let out = run(
        &r,
        &login,
        &["build", "--region", &r.name, "--version", "v1", "--push"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The second daemon has never seen the image. Without the login its pull is refused,
    // said so with the way out, and nothing starts.
    let r = r.moved_to(&env.docker_hosts[1]);
    let deploy = pulling_deploy(&r.name);
    let out = run(&r, &nobody, &deploy);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("docker login {}", env.registry_auth)),
        "{}",
        stderr(&out)
    );
    assert!(r.running_versions().is_empty());
    // With it, the engine pulls with the login it is handed.
    let out = run(&r, &login, &deploy);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("Pulling"), "{}", stderr(&out));
    assert_eq!(r.running_versions(), vec!["v1".to_string(); 3]);
    remove_image_everywhere(&env, &format!("{repo}:v1"));
}

/// Deploys v1 of a region without building: what its engine lacks, it pulls.
fn pulling_deploy(region: &str) -> [&str; 6] {
    [
        "deploy",
        "--region",
        region,
        "--version",
        "v1",
        "--no-build",
    ]
}

fn remove_image_everywhere(env: &TestEnv, image: &str) {
    for host in &env.docker_hosts {
        let _ = docker(host, ["rmi", "-f", "--no-prune", image]);
    }
}

#[test]
fn secrets_reach_the_container_but_no_output_or_record() {
    let Some(env) = TestEnv::get() else { return };
    let r = Region::new(&env, None);
    let v1 = format!("v1-{}", r.name);
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    let out = r.deploy_with(&["-o", "json"], &v1);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // NDJSON: one event per line, the region's summary last.
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["outcome"], "succeeded");
    assert!(events.iter().any(|e| e["step"] == "healthy"), "{stdout}");
    // In the container…
    let id = container_ids(&r.host, &[&format!("packfy.region={}", r.name)], false)
        .into_iter()
        .next()
        .unwrap();
    let inspect = docker(
        &r.host,
        ["inspect", "--format", "{{json .Config.Env}}", &id],
    );
    assert!(String::from_utf8_lossy(&inspect.stdout).contains(&format!("API_TOKEN={SECRET_VALUE}")));
    // …but in no output (Region::run checks every command; each must have done its work,
    // as one that fails early prints nothing) and no record on the target.
    // (arguments, exit code, whether stdout shows something: `diff` exits 0 in silence)
    for (args, expected, prints) in [
        (vec!["status", "--region", &r.name], 0, true),
        (vec!["-o", "json", "status", "--region", &r.name], 0, true),
        (vec!["-o", "json", "history", "--region", &r.name], 0, true),
        // v1 runs: nothing to change, nothing drifted
        (vec!["plan", "--region", &r.name, "--version", &v1], 0, true),
        (vec!["diff", &r.name, "--live", "--version", &v1], 0, false),
    ] {
        let out = r.run(&args);
        assert_eq!(code(&out), expected, "{args:?}: {}", support::text(&out));
        if prints {
            assert!(!out.stdout.is_empty(), "{args:?} printed nothing");
        }
    }
    let h = r.history_json();
    assert_eq!(h[0]["id"], "r1", "{h}");
    let records = volumes(&r.host, &r.name, Some("release"));
    assert!(!records.is_empty(), "no release record on the engine");
    for v in &records {
        let text = support::stdout(&docker(&r.host, ["volume", "inspect", v]));
        assert!(text.contains("packfy.record"), "{text}");
        assert!(
            !text.contains(SECRET_VALUE),
            "secret in the release record {v}"
        );
        assert!(text.contains("secret:env:PACKFY_TEST_API_TOKEN"), "{text}");
    }
    for v in volumes(&r.host, &r.name, None) {
        let text = support::stdout(&docker(&r.host, ["volume", "inspect", &v]));
        assert!(!text.contains(SECRET_VALUE), "secret in the volume {v}");
        assert!(
            text.contains("secret:env:PACKFY_TEST_API_TOKEN") || text.contains("packfy.lock"),
            "{text}"
        );
    }
}

/// Names of the region's volumes (of one `packfy.kind`, e.g. `release`, or all).
fn volumes(host: &str, region: &str, kind: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "volume".to_string(),
        "ls".into(),
        "-q".into(),
        "--filter".into(),
        format!("label=packfy.region={region}"),
    ];
    if let Some(kind) = kind {
        args.extend(["--filter".into(), format!("label=packfy.kind={kind}")]);
    }
    String::from_utf8_lossy(&docker(host, args).stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn staging_and_production_on_one_daemon_never_touch_each_other() {
    let Some(env) = TestEnv::get() else { return };
    let r = Region::new(&env, None).with(|f| f.keep_releases(2));
    let (v1, v2) = (format!("v1-{}", r.name), format!("v2-{}", r.name));
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    let _i2 = env.build_sample(&r.host, &v2, &[]);
    // Staging: v1, then v2, so v1's containers are stopped and kept for a rollback (keep 2):
    // a prune that ignored the environment would find them.
    for v in [&v1, &v2] {
        let out = r.deploy_with(&["--env", "staging"], v);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let staging_running = ids(&r.host, &r.name, "staging", false);
    let staging_all = ids(&r.host, &r.name, "staging", true);
    let staging_stopped: Vec<&String> = staging_all
        .iter()
        .filter(|id| !staging_running.contains(id))
        .collect();
    assert_eq!(staging_running.len(), 3);
    assert_eq!(
        staging_stopped.len(),
        3,
        "staging keeps v1's containers stopped"
    );
    for v in [&v1, &v2, &v1, &v2] {
        let out = r.deploy_with(&["--env", "production"], v);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    // Production pruned its own old releases (keep 2 → at most 2 releases' containers)…
    let prod_all = ids(&r.host, &r.name, "production", true);
    assert!(
        prod_all.len() <= 6,
        "production kept {} containers",
        prod_all.len()
    );
    // …and staging's containers are the same ones: the running ones still running, the
    // stopped ones all still there.
    assert_eq!(ids(&r.host, &r.name, "staging", false), staging_running);
    assert_eq!(ids(&r.host, &r.name, "staging", true), staging_all);
}

/// The region's containers of one environment: the running ones, or with `all` every one.
fn ids(host: &str, region: &str, env: &str, all: bool) -> Vec<String> {
    let labels = [
        format!("packfy.region={region}"),
        format!("packfy.environment={env}"),
    ];
    container_ids(host, &[&labels[0], &labels[1]], all)
}
