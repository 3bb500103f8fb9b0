//! Canaries on a Docker region against the real engine, HAProxy and sample app of the test
//! environment: weights as real traffic shares, an analysis that aborts a bad release, a
//! paused canary steered by other processes (`promote`, `abort`, `pause`).

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use support::answers::{failed, share, Answers as Load};
use support::fixture::{region_name, Health, RegionFile, RegionsDir, Rollout, Service};
use support::{code, stderr, Lane, TestEnv};

/// A region of its own behind a leased lane: the sample app, 3 replicas, fast checks.
struct Region {
    name: String,
    dir: RegionsDir,
    host: String,
    frontend: String,
    lane_backend: String,
}

impl Region {
    fn new(env: &TestEnv, lane: &Lane, rollout: Rollout) -> Region {
        let file = region_file(env, lane, rollout);
        let r = Region {
            name: region_name("cn", 20),
            dir: RegionsDir::new(),
            host: env.docker_host.clone(),
            frontend: lane.frontend.clone(),
            lane_backend: lane.backend.clone(),
        };
        r.dir.write(&r.name, &file);
        r
    }

    fn run(&self, args: &[&str]) -> Output {
        support::run_cli(&mut support::cli(self.dir.path(), args), &[])
    }

    fn deploy(&self, version: &str) -> Output {
        self.run(&["deploy", "--region", &self.name, "--version", version])
    }

    fn steer(&self, verb: &str, extra: &[&str]) -> Output {
        self.run(&[&[verb, "--region", &self.name][..], extra].concat())
    }

    fn running_versions(&self) -> Vec<String> {
        support::running_versions(&self.host, &self.name)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(&[args, &["--region", &self.name, "-o", "json"]].concat());
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn history(&self) -> serde_json::Value {
        self.json(&["history"])
    }

    /// Asserts that the last release was taken back and `v1` alone serves: its three
    /// servers at their weight, no new container left. Returns the record's `error`.
    fn taken_back(&self, lane: &Lane, v1: &str) -> String {
        assert_eq!(self.running_versions(), vec![v1.to_string(); 3]);
        let w = self.weights(lane);
        assert!(w.len() == 3 && w.iter().all(|(_, w)| *w == 1), "{w:?}");
        let h = self.history();
        assert_eq!(h[0]["outcome"], "rolled_back", "{h:#}");
        h[0]["error"].as_str().unwrap_or_default().to_string()
    }

    /// Whether a server of the release whose names contain `release` (`-r2-`) takes traffic:
    /// UP with a weight. (A new server is DOWN, and its weight not yet 0, for a moment after
    /// it is added: no traffic goes to it then, and the canary has taken no step.)
    fn takes_traffic(&self, lane: &Lane, release: &str) -> bool {
        support::haproxy_servers_stat(&lane.socket, &self.lane_backend)
            .iter()
            .any(|s| {
                s["svname"].contains(release)
                    && s["status"].starts_with("UP")
                    && s["weight"].parse().unwrap_or(0) > 0
            })
    }

    /// The servers of the lane's backend with their weights.
    fn weights(&self, lane: &Lane) -> Vec<(String, u64)> {
        support::haproxy_servers_stat(&lane.socket, &self.lane_backend)
            .iter()
            .map(|s| (s["svname"].clone(), s["weight"].parse().unwrap_or(0)))
            .collect()
    }
}

/// The sample app, 3 replicas, fast checks, behind `lane`.
fn region_file(env: &TestEnv, lane: &Lane, rollout: Rollout) -> RegionFile {
    let web = Service::new("web", "packfy-sample")
        .replicas(3)
        .port(8080)
        .health(
            Health::http("/health")
                .start_period("3s")
                .interval("500ms")
                .timeout("500ms")
                .healthy_threshold(2)
                .unhealthy_threshold(3)
                .deadline("60s"),
        )
        .rollout(rollout.bake("1s").drain_timeout("5s"))
        .stop_grace_period("5s");
    RegionFile::docker(&env.docker_host)
        .currency("USD")
        .keep_releases(5)
        .service(web)
        .lane(lane, "web")
}

impl Drop for Region {
    fn drop(&mut self) {
        support::remove_labelled(&self.host, &format!("packfy.region={}", self.name));
    }
}

/// A region of `rollout` whose first release, `v1`, serves (it rolls: nothing to compare
/// with yet), and the images of `versions` (name and the sample app's build switches), each
/// tagged `NAME-REGION`. Returns the region, the tags (v1 first) and the images' guards.
fn serving_v1(
    env: &TestEnv,
    lane: &Lane,
    rollout: Rollout,
    versions: &[(&str, &[(&str, &str)])],
) -> (Region, Vec<String>, Vec<support::Image>) {
    let r = Region::new(env, lane, rollout);
    let tags: Vec<String> = std::iter::once("v1")
        .chain(versions.iter().map(|(v, _)| *v))
        .map(|v| format!("{v}-{}", r.name))
        .collect();
    let switches = std::iter::once(&[][..]).chain(versions.iter().map(|(_, b)| *b));
    let images = tags
        .iter()
        .zip(switches)
        .map(|(t, b)| env.build_sample(&r.host, t, b))
        .collect();
    let out = r.deploy(&tags[0]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    (r, tags, images)
}

#[test]
fn canary_10_50_100_under_load_gives_each_weight_its_share_with_no_failed_request() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let (r, tags, _images) = serving_v1(
        &env,
        &lane,
        Rollout::new()
            .canary("[{weight: 10}, {pause: {}}, {weight: 50}, {pause: {}}, {weight: 100}]"),
        &[("v2", &[])],
    );
    let (v1, v2) = (tags[0].clone(), tags[1].clone());

    let plan = support::text(&r.run(&["plan", "--region", &r.name, "--version", &v2]));
    assert!(
        plan.contains(
            "web: strategy canary, HAProxy weights: weight 10% → pause (until promote) → weight 50% → pause (until promote) → weight 100%"
        ),
        "{plan}"
    );

    let load = Load::start(&r.frontend, "/version");
    // 10%: the deploy ends paused, the lock kept for the canary.
    let out = r.deploy(&v2);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("until promote"), "{}", stderr(&out));
    let w10 = load.window(1500);
    let status = r.json(&["status"]);
    let c = &status[0]["canary"];
    assert_eq!(c["weight"], 10, "{status:#}");
    assert_eq!(c["outcome"], "paused", "{status:#}");
    assert_eq!(c["weights"], serde_json::json!([1, 9]), "{status:#}");
    // The canary's weights are the release's, not drift.
    assert_eq!(status[0]["drift"], 0, "{status:#}");
    let human = support::text(&r.run(&["status", "--region", &r.name]));
    for line in [
        "canary r2 (",
        "step 2/5 (pause (until promote)), 10% to the new release",
        "server weights: new 1, old 9",
    ] {
        assert!(human.contains(line), "{line:?} in {human}");
    }

    // A second deploy meanwhile is refused, naming why.
    let again = r.deploy(&v1);
    assert_eq!(code(&again), 5, "{}", stderr(&again));
    assert!(
        stderr(&again).contains("canary r2 paused"),
        "{}",
        stderr(&again)
    );

    // 50%, promoted by another process.
    let out = r.steer("promote", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let w50 = load.window(1500);
    assert_eq!(r.weights(&lane).len(), 6, "{:?}", r.weights(&lane));

    // 100%: the old servers leave.
    let out = r.steer("promote", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let w100 = load.window(1000);
    let (all, errors) = load.finish();

    let (s10, s50, s100) = (share(&w10, &v2), share(&w50, &v2), share(&w100, &v2));
    eprintln!(
        "canary shares of {v2}: {s10:.1}% at 10 ({} answers), {s50:.1}% at 50 ({}), {s100:.1}% at 100 ({}); {} answers in all",
        w10.values().sum::<u64>(),
        w50.values().sum::<u64>(),
        w100.values().sum::<u64>(),
        all.values().sum::<u64>()
    );
    assert_eq!(
        failed(&all, &[&v1, &v2]),
        0,
        "failed answers: {all:?} {errors:?}"
    );
    assert!((s10 - 10.0).abs() <= 5.0, "{s10:.1}% at weight 10: {w10:?}");
    assert!((s50 - 50.0).abs() <= 5.0, "{s50:.1}% at weight 50: {w50:?}");
    assert!(
        (s100 - 100.0).abs() <= 5.0,
        "{s100:.1}% at weight 100: {w100:?}"
    );
    assert_eq!(r.running_versions(), vec![v2.clone(); 3]);
    assert!(
        r.weights(&lane).iter().all(|(_, w)| *w == 1),
        "{:?}",
        r.weights(&lane)
    );
    let h = r.history();
    assert_eq!(h[0]["outcome"], "succeeded", "{h:#}");
    // The lock went with the canary.
    let out = r.deploy(&v1);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn a_release_answering_30_percent_5xx_is_aborted_at_its_first_analysis() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let (r, tags, _images) = serving_v1(
        &env,
        &lane,
        Rollout::new()
            .canary("[{weight: 20}, {analysis: {duration: 30s}}, {weight: 100}]")
            .analysis("{max_5xx_ratio: 0.05, min_requests: 20}"),
        &[("bad", &[("ERROR_RATE", "0.3")])],
    );
    let (v1, bad) = (tags[0].clone(), tags[1].clone());

    let load = Load::start(&r.frontend, "/");
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let out = r.deploy(&bad);
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let (seen, _) = load.finish();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("analysis failed: 5xx ratio"), "{err}");
    assert!(err.contains("above max_5xx_ratio 5.0%"), "{err}");
    let total: u64 = seen.values().sum();
    let errors = seen.get("5xx").copied().unwrap_or(0);
    eprintln!(
        "a 30% 5xx release at 20% weight: {errors} of {total} requests ({:.2}%) saw a 5xx during the deploy ({:.1}s)",
        100.0 * errors as f64 / total.max(1) as f64,
        took.as_secs_f64()
    );
    assert!(errors > 0, "the bad release never answered: {seen:?}");
    assert_eq!(
        seen.keys().filter(|k| *k != "200" && *k != "5xx").count(),
        0,
        "{seen:?}"
    );
    let why = r.taken_back(&lane, &v1);
    assert!(
        why.contains("5xx ratio") && why.contains("answers of the new release"),
        "{why}"
    );
}

#[test]
fn a_paused_canary_is_aborted_by_another_process_and_the_next_promoted_in_full() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let (r, tags, _images) = serving_v1(
        &env,
        &lane,
        Rollout::new().canary("[{weight: 25}, {pause: {}}, {weight: 100}]"),
        &[("v2", &[]), ("v3", &[])],
    );
    let (v1, v2, v3) = (tags[0].clone(), tags[1].clone(), tags[2].clone());

    let load = Load::start(&r.frontend, "/version");
    let out = r.deploy(&v2);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(r.weights(&lane).len(), 6);
    // Nothing to resume: it waits for promote, not after `pause`; abort takes it back.
    let out = r.steer("abort", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after = load.window(300);
    assert_eq!(
        after.get(&v1).copied(),
        Some(after.values().sum()),
        "{after:?}"
    );
    assert!(r.taken_back(&lane, &v1).starts_with("aborted by"));
    let out = r.steer("promote", &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no paused canary"),
        "{}",
        stderr(&out)
    );

    // Another canary, at its indefinite pause: pausing it again says so; promote --full
    // skips what is left.
    let out = r.deploy(&v3);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        r.weights(&lane)
            .iter()
            .any(|(s, w)| s.contains("-r3-") && *w > 0),
        "{:?}\n{}",
        r.weights(&lane),
        stderr(&out)
    );
    let out = r.steer("pause", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("already"), "{}", stderr(&out));
    let out = r.steer("promote", &["--full"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (all, errors) = load.finish();
    assert_eq!(failed(&all, &[&v1, &v2, &v3]), 0, "{all:?} {errors:?}");
    assert_eq!(r.running_versions(), vec![v3.clone(); 3]);
}

#[test]
fn pause_stops_a_running_canary_and_resume_goes_on() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let (r, tags, _images) = serving_v1(
        &env,
        &lane,
        Rollout::new().canary("[{weight: 10}, {pause: 8s}, {weight: 100}]"),
        &[("v2", &[])],
    );
    let v2 = tags[1].clone();

    let mut cmd = support::cli(
        r.dir.path(),
        &["deploy", "--region", &r.name, "--version", &v2],
    );
    let deploy = support::spawn_cli(&mut cmd, &[]);
    support::wait_until(Duration::from_secs(90), "the canary takes 10%", || {
        r.takes_traffic(&lane, "-r2-")
    });
    let out = r.steer("pause", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = deploy.wait();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("paused by hand"), "{}", stderr(&out));
    let h = r.history();
    assert_eq!(h[0]["outcome"], "paused", "{h:#}");
    // `resume` runs the interrupted pause again, then the rest.
    let out = r.steer("resume", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Pausing 8s at 10%"),
        "{}",
        stderr(&out)
    );
    assert_eq!(r.running_versions(), vec![v2.clone(); 3]);
    assert_eq!(r.history()[0]["outcome"], "succeeded");
}

#[test]
fn a_canary_killed_mid_step_is_taken_back_by_the_next_command() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let (r, tags, _images) = serving_v1(
        &env,
        &lane,
        Rollout::new().canary("[{weight: 50}, {pause: 60s}, {weight: 100}]"),
        &[("v2", &[])],
    );
    let (v1, v2) = (tags[0].clone(), tags[1].clone());

    let load = Load::start(&r.frontend, "/version");
    let mut cmd = support::cli(
        r.dir.path(),
        &["deploy", "--region", &r.name, "--version", &v2],
    );
    let deploy = support::spawn_cli(&mut cmd, &[]);
    support::wait_until(Duration::from_secs(90), "the canary takes 50%", || {
        r.takes_traffic(&lane, "-r2-")
    });
    deploy.signal("KILL");
    let killed = deploy.wait();
    assert_eq!(support::signal_of(&killed), Some(9));
    // Half the traffic still goes to v2 until someone recovers it.
    let status = r.json(&["status"]);
    assert_eq!(status[0]["canary"]["outcome"], "in_progress", "{status:#}");
    assert_eq!(status[0]["canary"]["weight"], 50, "{status:#}");
    let out = r.steer("abort", &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("was interrupted"), "{}", stderr(&out));

    let out = r.run(&["rollback", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("was interrupted"), "{}", stderr(&out));
    let after = load.window(300);
    let (all, errors) = load.finish();
    assert_eq!(
        after.get(&v1).copied(),
        Some(after.values().sum()),
        "{after:?}"
    );
    assert_eq!(failed(&all, &[&v1, &v2]), 0, "{all:?} {errors:?}");
    assert!(r.taken_back(&lane, &v1).contains("interrupted"));
}

#[test]
fn a_paused_canary_holds_back_the_next_wave() {
    let Some(env) = TestEnv::get() else { return };
    let (lane_a, lane_b) = (env.lease_lane(), env.lease_lane());
    let steps = "[{weight: 10}, {pause: {}}, {weight: 100}]";
    let (a, tags, _images) =
        serving_v1(&env, &lane_a, Rollout::new().canary(steps), &[("v2", &[])]);
    let (v1, v2) = (tags[0].clone(), tags[1].clone());
    // A second region beside it, serving v1 too, in the wave after it.
    let b = region_name("cn", 20);
    let _b_gone = Region {
        name: b.clone(),
        dir: RegionsDir::new(),
        host: env.docker_host.clone(),
        frontend: lane_b.frontend.clone(),
        lane_backend: lane_b.backend.clone(),
    };
    a.dir.write(
        &b,
        &region_file(&env, &lane_b, Rollout::new().canary(steps)),
    );
    a.dir
        .write("_defaults", &RegionFile::new().waves(&[&[&a.name], &[&b]]));
    let out = a.run(&["deploy", "--region", &b, "--version", &v1]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let both = format!("{},{b}", a.name);
    let out = a.run(&["deploy", "--region", &both, "--version", &v2]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{} wait(s) at a paused canary; later waves do not start: {b}",
            a.name
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(a.history()[0]["outcome"], "paused");
    assert_eq!(
        support::running_versions(&env.docker_host, &b),
        vec![v1.clone(); 3]
    );
    let out = a.steer("abort", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn the_http_check_and_the_response_time_of_the_new_release_abort_with_their_values() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let (r, tags, _images) = serving_v1(
        &env,
        &lane,
        Rollout::new()
            .canary("[{weight: 50}, {analysis: {duration: 20s}}, {weight: 100}]")
            .analysis("{http: {path: /missing}}"),
        &[("v2", &[])],
    );
    let (v1, v2) = (tags[0].clone(), tags[1].clone());
    // Every new container must answer GET /missing with 200; the sample app says 404.
    let out = r.deploy(&v2);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let why = r.taken_back(&lane, &v1);
    assert!(
        why.contains("analysis failed: http check GET /missing failed:")
            && why.contains("answered status 404"),
        "{why}"
    );

    // Answers slower than max_response_time (HAProxy's rtime of the new servers).
    let file = region_file(
        &env,
        &lane,
        Rollout::new()
            .canary("[{weight: 50}, {analysis: {duration: 20s}}, {weight: 100}]")
            .analysis("{max_response_time: 20ms, min_requests: 5}"),
    );
    r.dir.write(&r.name, &file);
    let load = Load::start(&r.frontend, "/slow?ms=60");
    let out = r.deploy(&v2);
    let (seen, errors) = load.finish();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let why = r.taken_back(&lane, &v1);
    assert!(
        why.contains("analysis failed: response time")
            && why.contains("above max_response_time 20ms"),
        "{why}"
    );
    assert_eq!(
        failed(&seen, &[&"200".to_string()]),
        0,
        "{seen:?} {errors:?}"
    );
}

/// `analysis: {prometheus: …}` over the 5xx answers of the new release's servers in the
/// lane's backend, as the env's Prometheus scrapes them from HAProxy's exporter (every 1 s).
fn prometheus_analysis(prom: &str, backend: &str, max: f64) -> String {
    format!(
        "{{max_5xx_ratio: 1, prometheus: {{url: '{prom}', query: 'sum(haproxy_server_http_responses_total{{proxy=\"{backend}\",server=~\".*-$release-.*\",code=\"5xx\"}})', max: {max}}}}}"
    )
}

#[test]
fn a_failed_prometheus_condition_aborts_and_the_record_names_the_query_and_its_value() {
    let Some(env) = TestEnv::get() else { return };
    let Some(prom) = support::prometheus_url() else {
        return;
    };
    let lane = env.lease_lane();
    let backend = lane.backend.clone();
    let (r, tags, _images) = serving_v1(
        &env,
        &lane,
        Rollout::new()
            .canary("[{weight: 20}, {analysis: {duration: 30s}}, {weight: 100}]")
            // HAProxy's own ratio would pass anything (max_5xx_ratio 1): Prometheus judges.
            .analysis(&prometheus_analysis(&prom, &backend, 5.0)),
        &[("bad", &[("ERROR_RATE", "0.3")])],
    );
    let v1 = tags[0].clone();
    let load = Load::start(&r.frontend, "/");
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let out = r.deploy(&tags[1]);
    let took = t0.elapsed();
    let (seen, _) = load.finish();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("analysis failed: prometheus query `sum(haproxy_server_http_responses_total{"),
        "{err}"
    );
    assert!(err.contains("is above max 5"), "{err}");
    let why = r.taken_back(&lane, &v1);
    // The record names the query (the release filled in) and the value it measured.
    let h = r.history();
    let rel = h[0]["id"].as_str().unwrap().to_string();
    assert!(why.contains(&format!("server=~\".*-{rel}-.*\"")), "{why}");
    let value: f64 = why
        .split("` = ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {why}"));
    assert!(value > 5.0, "{why}");
    eprintln!(
        "Prometheus condition failed after {:.1}s with {value} 5xx answers of the new release; {} of {} requests saw a 5xx",
        took.as_secs_f64(),
        seen.get("5xx").copied().unwrap_or(0),
        seen.values().sum::<u64>()
    );
}

#[test]
fn a_canary_whose_prometheus_condition_holds_is_promoted() {
    let Some(env) = TestEnv::get() else { return };
    let Some(prom) = support::prometheus_url() else {
        return;
    };
    let lane = env.lease_lane();
    let backend = lane.backend.clone();
    let (r, tags, _images) = serving_v1(
        &env,
        &lane,
        Rollout::new()
            .canary("[{weight: 50}, {analysis: {duration: 6s}}, {pause: {}}, {weight: 100}]")
            .analysis(&prometheus_analysis(&prom, &backend, 0.0)),
        &[("good", &[])],
    );
    let good = tags[1].clone();
    let load = Load::start(&r.frontend, "/");
    std::thread::sleep(Duration::from_millis(300));
    let out = r.deploy(&good);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Paused after the analysis: the record holds what Prometheus measured — a value (0 5xx
    // answers of the new servers), not "no data": the query did see the new servers.
    let h = r.history();
    let m = &h[0]["canary"]["analysis"]["prometheus"];
    assert_eq!(m["value"].as_f64(), Some(0.0), "{h:#}");
    assert!(
        m["query"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("-{}-", h[0]["id"].as_str().unwrap())),
        "{m}"
    );
    let out = r.steer("promote", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (seen, _) = load.finish();
    assert_eq!(r.running_versions(), vec![good.clone(); 3]);
    assert_eq!(r.history()[0]["outcome"], "succeeded");
    // Load on `/` counts answers by status: every one a 200.
    assert!(seen.keys().all(|k| k == "200"), "{seen:?}");
    assert!(seen.get("200").copied().unwrap_or(0) > 0, "{seen:?}");
}
