//! Blue-green on a Docker region against the real engine, HAProxy and sample app of the test
//! environment: the new set answers on the lane's preview backend while production answers
//! the old one, `promote` from another process switches all traffic at once, a `rollback`
//! inside `scale_down_delay` is one Runtime API line, the old set goes after the window, and
//! a failed pre-promotion analysis switches nothing (exit 3).

mod support;

use std::collections::HashMap;
use std::process::Output;
use std::time::{Duration, Instant};

use support::answers::{failed, share, Answers};
use support::fixture::{region_name, Health, RegionFile, RegionsDir, Rollout, Service};
use support::{code, stderr, Lane, TestEnv};

/// A region of its own behind a leased lane (and its preview): the sample app, 3 replicas.
struct Region {
    name: String,
    dir: RegionsDir,
    host: String,
    frontend: String,
    preview: String,
}

impl Region {
    fn new(env: &TestEnv, lane: &Lane, rollout: Rollout) -> Region {
        let preview = lane.preview_frontend.clone().unwrap_or_else(|| {
            panic!(
                "the test env has no blue-green preview frontends (PACKFY_HAPROXY_TEST_PREVIEW_FRONTENDS): run tests/env/up.sh again"
            )
        });
        let rollout = if rollout.has("preview") {
            rollout
        } else {
            rollout.set("preview", &format!("{{frontend: \"http://{preview}\"}}"))
        };
        let rollout = rollout.bake("1s").drain_timeout("5s");
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
            .rollout(rollout)
            .stop_grace_period("5s");
        let file = RegionFile::docker(&env.docker_host)
            .currency("USD")
            .keep_releases(5)
            .service(web)
            .lane(lane, "web");
        let r = Region {
            name: region_name("bg", 20),
            dir: RegionsDir::new(),
            host: env.docker_host.clone(),
            frontend: lane.frontend.clone(),
            preview,
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

    fn running_versions(&self) -> Vec<String> {
        support::running_versions(&self.host, &self.name)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(&[args, &["--region", &self.name, "-o", "json"]].concat());
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The servers of `backend` with their weights.
    fn weights(&self, lane: &Lane, backend: &str) -> Vec<(String, u64)> {
        let text = lane.cmd(&format!("show stat {backend} 4 -1"));
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let Some(name) = header.iter().position(|h| *h == "svname") else {
            return Vec::new();
        };
        let weight = header.iter().position(|h| *h == "weight").unwrap();
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > weight && f[name] != "BACKEND")
            .map(|f| (f[name].to_string(), f[weight].parse().unwrap_or(0)))
            .collect()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        support::remove_labelled(&self.host, &format!("packfy.region={}", self.name));
    }
}

/// A region of `rollout` serving `v1` (a first release rolls: nothing to switch from), and
/// the images of `versions`, each tagged `NAME-REGION`.
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

/// Waits (up to 30 s) for a window of `n` answers that are all `version`.
fn until_only(load: &Answers, version: &str, n: u64) -> HashMap<String, u64> {
    let t0 = Instant::now();
    loop {
        let w = load.window(n);
        if share(&w, version) == 100.0 || t0.elapsed() > Duration::from_secs(30) {
            return w;
        }
    }
}

#[test]
fn preview_then_promote_from_another_process_then_an_instant_rollback_inside_the_window() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let (r, tags, _images) = serving_v1(
        &env,
        &lane,
        Rollout::new().blue_green().set("scale_down_delay", "45s"),
        &[("v2", &[])],
    );
    let (v1, v2) = (tags[0].clone(), tags[1].clone());
    let preview_be = lane.preview_backend();

    let plan = support::text(&r.run(&["plan", "--region", &r.name, "--version", &v2]));
    assert!(
        plan.contains(&format!(
            "web: strategy blue_green: the full new set starts beside the old one on preview backend {preview_be} at http://{}",
            r.preview
        )) && plan.contains("then waits for `promote` to switch all traffic at once; the old set stays at weight 0 for 45s"),
        "{plan}"
    );

    let load = Answers::start(&r.frontend, "/version");
    // The deploy ends at the preview, the lock kept for it.
    let out = r.deploy(&v2);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("until promote"), "{}", stderr(&out));

    // The preview answers the new version only; production the old one only.
    let preview = Answers::start(&r.preview, "/version");
    let pw = preview.window(300);
    let (pall, perr) = preview.finish();
    assert_eq!(share(&pw, &v2), 100.0, "preview: {pw:?} {pall:?} {perr:?}");
    let prod = load.window(1000);
    assert_eq!(
        share(&prod, &v1),
        100.0,
        "production during preview: {prod:?}"
    );
    assert_eq!(r.weights(&lane, &preview_be).len(), 3);

    let status = r.json(&["status"]);
    let bg = &status[0]["blue_green"];
    assert_eq!(bg["phase"], "preview", "{status:#}");
    assert_eq!(bg["outcome"], "paused", "{status:#}");
    assert_eq!(status[0]["drift"], 0, "{status:#}");
    let human = support::text(&r.run(&["status", "--region", &r.name]));
    for line in [
        "blue-green r2 (",
        "preview: the new set answers on the preview only, waiting for promote",
        &format!("web preview: backend {preview_be} at http://{}", r.preview),
        "production backend",
    ] {
        assert!(human.contains(line), "{line:?} in {human}");
    }
    // A second deploy meets the lock the preview holds.
    let out = r.deploy(&v2);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("blue-green at its preview (production all on the old set) until promote"),
        "{}",
        stderr(&out)
    );

    // Promote from another process: it switches, then waits out the window.
    let promote = support::spawn_cli(
        &mut support::cli(r.dir.path(), &["promote", "--region", &r.name]),
        &[],
    );
    let after = until_only(&load, &v2, 300);
    assert_eq!(share(&after, &v2), 100.0, "after promote: {after:?}");
    let after = load.window(1000);
    assert_eq!(share(&after, &v2), 100.0, "after promote: {after:?}");
    let status = r.json(&["status"]);
    assert_eq!(status[0]["blue_green"]["phase"], "promoted", "{status:#}");
    let w = r.weights(&lane, &lane.backend);
    assert_eq!(w.len(), 6, "the old set stays in the backend: {w:?}");
    assert_eq!(w.iter().filter(|(_, w)| *w == 0).count(), 3, "{w:?}");
    assert!(r.weights(&lane, &preview_be).is_empty());
    let human = support::text(&r.run(&["status", "--region", &r.name]));
    assert!(human.contains("promoted, scaling down"), "{human}");

    // Rollback inside the window: one Runtime API line back, no container started.
    let t0 = Instant::now();
    let out = r.run(&["rollback", "--region", &r.name]);
    let took = t0.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    let switched = err
        .lines()
        .find(|l| l.contains("in one Runtime API line"))
        .unwrap_or_else(|| panic!("no switch line in {err}"))
        .to_string();
    let back = until_only(&load, &v1, 200);
    assert_eq!(share(&back, &v1), 100.0, "after rollback: {back:?}");
    assert_eq!(r.running_versions(), vec![v1.clone(); 3]);
    let w = r.weights(&lane, &lane.backend);
    assert!(w.len() == 3 && w.iter().all(|(_, w)| *w == 1), "{w:?}");
    eprintln!(
        "instant rollback: the rollback command took {:.2}s; {}",
        took.as_secs_f64(),
        switched.trim()
    );

    // The promoting process ends its window: the old set serves again, so it stays.
    let out = promote.wait();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no longer serves as promoted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(r.running_versions(), vec![v1.clone(); 3]);
    let (all, errors) = load.finish();
    let total: u64 = all.values().sum();
    assert_eq!(failed(&all, &[&v1, &v2]), 0, "{all:?} {errors:?}");
    eprintln!("blue-green under load: {total} answers, 0 failed ({all:?})");
}

#[test]
fn an_auto_promoted_blue_green_removes_its_old_set_after_the_window() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let (r, tags, _images) = serving_v1(
        &env,
        &lane,
        Rollout::new()
            .blue_green()
            .set("auto_promote", "true")
            .set("scale_down_delay", "3s"),
        &[("v2", &[])],
    );
    let (v1, v2) = (tags[0].clone(), tags[1].clone());
    let load = Answers::start(&r.frontend, "/version");
    let t0 = Instant::now();
    let out = r.deploy(&v2);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    for line in ["Promoted", "Keeping", "Scaled down"] {
        assert!(err.contains(line), "{line:?} in {err}");
    }
    assert!(t0.elapsed() >= Duration::from_secs(3));
    // The old set is out of the backend and stopped; only the new set serves.
    let mut versions = support::running_versions(&r.host, &r.name);
    versions.sort();
    assert_eq!(versions, vec![v2.clone(); 3]);
    let w = r.weights(&lane, &lane.backend);
    assert!(w.len() == 3 && w.iter().all(|(_, w)| *w == 1), "{w:?}");
    assert!(r.weights(&lane, &lane.preview_backend()).is_empty());
    let w = load.window(500);
    assert_eq!(share(&w, &v2), 100.0, "{w:?}");
    let status = r.json(&["status"]);
    assert!(status[0].get("blue_green").is_none(), "{status:#}");
    let h = r.json(&["history"]);
    assert_eq!(h[0]["outcome"], "succeeded", "{h:#}");
    let (all, errors) = load.finish();
    assert_eq!(failed(&all, &[&v1, &v2]), 0, "{all:?} {errors:?}");

    // A rollback after the window restarts the kept old set (no instant switch left).
    let out = r.run(&["rollback", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("in one Runtime API line"),
        "{}",
        stderr(&out)
    );
    assert_eq!(r.running_versions(), vec![v1.clone(); 3]);
}

#[test]
fn a_failed_pre_promotion_analysis_exits_3_and_switches_nothing() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let (r, tags, _images) = serving_v1(
        &env,
        &lane,
        Rollout::new()
            .blue_green()
            .analysis("{duration: 6s, max_5xx_ratio: 0.05, min_requests: 20}"),
        &[("bad", &[("ERROR_RATE", "0.3")])],
    );
    let (v1, bad) = (tags[0].clone(), tags[1].clone());
    let plan = support::text(&r.run(&["plan", "--region", &r.name, "--version", &bad]));
    assert!(
        plan.contains("judged there for 6s (HAProxy's counters of the preview)"),
        "{plan}"
    );
    let prod = Answers::start(&r.frontend, "/version");
    // Someone (a smoke test, QA) sends the preview its traffic; the analysis judges it.
    let preview = Answers::start(&r.preview, "/");
    let out = r.deploy(&bad);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let (_, _) = preview.finish();
    let (all, errors) = prod.finish();
    // Production never saw the bad release, and nothing failed there.
    assert_eq!(share(&all, &v1), 100.0, "{all:?} {errors:?}");
    assert_eq!(r.running_versions(), vec![v1.clone(); 3]);
    let w = r.weights(&lane, &lane.backend);
    assert!(w.len() == 3 && w.iter().all(|(_, w)| *w == 1), "{w:?}");
    assert!(r.weights(&lane, &lane.preview_backend()).is_empty());
    let h = r.json(&["history"]);
    assert_eq!(h[0]["outcome"], "rolled_back", "{h:#}");
    let error = h[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("5xx ratio"), "{error}");
    eprintln!("failed pre-promotion analysis: {error}");
}

#[test]
fn a_missing_preview_backend_is_refused_before_anything_changes() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let (r, tags, _images) = serving_v1(
        &env,
        &lane,
        Rollout::new()
            .blue_green()
            .set("preview", "{backend: packfy_nowhere_preview}"),
        &[("v2", &[])],
    );
    let v1 = tags[0].clone();
    let out = r.deploy(&tags[1]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "the blue-green preview backend `packfy_nowhere_preview` of web is not in HAProxy"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(r.running_versions(), vec![v1; 3]);
}

#[test]
fn abort_at_the_preview_removes_the_new_set_from_both_backends() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let (r, tags, _images) = serving_v1(&env, &lane, Rollout::new().blue_green(), &[("v2", &[])]);
    let (v1, v2) = (tags[0].clone(), tags[1].clone());
    let load = Answers::start(&r.frontend, "/version");
    let out = r.deploy(&v2);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(r.weights(&lane, &lane.preview_backend()).len(), 3);
    let out = r.run(&["abort", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(r.running_versions(), vec![v1.clone(); 3]);
    let w = r.weights(&lane, &lane.backend);
    assert!(w.len() == 3 && w.iter().all(|(_, w)| *w == 1), "{w:?}");
    assert!(r.weights(&lane, &lane.preview_backend()).is_empty());
    let h = r.json(&["history"]);
    assert_eq!(h[0]["outcome"], "rolled_back", "{h:#}");
    // The lock is free again: the next deploy goes to the preview once more.
    let out = r.deploy(&v2);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = r.run(&["abort", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (all, errors) = load.finish();
    assert_eq!(share(&all, &v1), 100.0, "{all:?} {errors:?}");
}

#[test]
fn a_rollback_after_an_interrupted_window_end_rolls_instead_of_switching_to_a_gone_set() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let (r, tags, _images) = serving_v1(
        &env,
        &lane,
        Rollout::new()
            .blue_green()
            .set("auto_promote", "true")
            .set("scale_down_delay", "60s"),
        &[("v2", &[])],
    );
    let (v1, v2) = (tags[0].clone(), tags[1].clone());
    let load = Answers::start(&r.frontend, "/version");
    // The deploy promotes, then waits out its window (without the lock): killed there.
    let deploy = support::spawn_cli(
        &mut support::cli(
            r.dir.path(),
            &["deploy", "--region", &r.name, "--version", &v2],
        ),
        &[],
    );
    support::wait_until(Duration::from_secs(120), "the promotion", || {
        let out = r.run(&["status", "--region", &r.name, "-o", "json"]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        s[0]["blue_green"]["phase"] == "promoted"
    });
    deploy.signal("KILL");
    let _ = deploy.wait();
    // What a window end killed half-way leaves: an old server already out of the backend,
    // an old container already stopped; the record still says promoted.
    let old: Vec<String> = r
        .weights(&lane, &lane.backend)
        .into_iter()
        .filter(|(_, w)| *w == 0)
        .map(|(s, _)| s)
        .collect();
    assert_eq!(old.len(), 3, "{old:?}");
    lane.cmd(&format!(
        "set server {}/{} state maint",
        lane.backend, old[0]
    ));
    lane.cmd(&format!("del server {}/{}", lane.backend, old[0]));
    let ids = support::docker(
        &r.host,
        [
            "ps",
            "-q",
            "--filter",
            &format!("label=packfy.region={}", r.name),
            "--filter",
            &format!("label=packfy.version={v1}"),
        ],
    );
    let ids = String::from_utf8_lossy(&ids.stdout).to_string();
    let first = ids.lines().next().expect("an old container").to_string();
    support::docker(&r.host, ["stop", "-t", "1", first.as_str()]);

    let out = r.run(&["rollback", "--region", &r.name]);
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(err.contains("not switching back to the old set"), "{err}");
    assert!(!err.contains("in one Runtime API line"), "{err}");
    assert_eq!(r.running_versions(), vec![v1.clone(); 3]);
    let back = until_only(&load, &v1, 200);
    assert_eq!(share(&back, &v1), 100.0, "after rollback: {back:?}");
    let w = r.weights(&lane, &lane.backend);
    assert!(w.len() == 3 && w.iter().all(|(_, w)| *w == 1), "{w:?}");
    let (all, errors) = load.finish();
    assert_eq!(failed(&all, &[&v1, &v2]), 0, "{all:?} {errors:?}");
}
