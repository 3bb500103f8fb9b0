//! Canary and blue-green on regions of remote Docker hosts (tests/env/hosts.sh: network
//! namespaces h1–h3 with their own dockerd and sshd, reached by the CLI only over ssh://,
//! behind the lb namespace's HAProxy with `retries 0`): the new release spread over the hosts,
//! weights across every host's servers, analysis over all the new servers, the state on every
//! host so that a process reaching any of them steers it.
//!
//! The hosts are shared with tests/hosts.rs, whose tests break hosts: every test here holds
//! them shared ([`HostsEnv::sharing`], a file lock across test binaries).

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::answers::{failed, share, Answers};
use support::fixture::{Health, Rollout, Service};
use support::{code, docker_try, haproxy_server_stat, stderr, HostsEnv, Lane, Multi, TestEnv};

/// The sample app, 3 replicas (one per host over three), fast checks, `rollout`.
fn web(rollout: Rollout) -> Service {
    Service::new("web", "packfy-sample")
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
        .stop_grace_period("5s")
}

fn setup() -> Option<(TestEnv, HostsEnv)> {
    let env = TestEnv::get()?;
    let hosts = HostsEnv::get(&env)?;
    Some((env, hosts))
}

/// The servers of `backend` with their weights.
fn weights(lane: &Lane, backend: &str) -> Vec<(String, u64)> {
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

/// The server of host `h` (0-based) of release `release` in `backend`, with its weight;
/// asserts there is exactly one and that it points at that host's address.
fn server_on(
    hosts: &HostsEnv,
    lane: &Lane,
    backend: &str,
    h: usize,
    release: &str,
) -> (String, u64) {
    let tag = format!("-h{}-web-{release}-", h + 1);
    let w = weights(lane, backend);
    let mine: Vec<&(String, u64)> = w.iter().filter(|(s, _)| s.contains(&tag)).collect();
    assert_eq!(
        mine.len(),
        1,
        "one server of {release} on h{} in {w:?}",
        h + 1
    );
    let stat = haproxy_server_stat(&lane.socket, backend, &mine[0].0).unwrap();
    assert!(
        stat["addr"].starts_with(&format!("{}:", hosts.addrs[h])),
        "{} is at {}, not on h{}'s address {}",
        mine[0].0,
        stat["addr"],
        h + 1,
        hosts.addrs[h]
    );
    mine[0].clone()
}

/// Every container of the region on host `h`, running or not: (version, id, started at).
fn containers_on(m: &Multi, h: usize) -> Vec<(String, String, String)> {
    let filter = format!("label=packfy.region={}", m.name);
    let o = docker_try(
        &m.hosts.sockets[h],
        [
            "ps",
            "-aq",
            "--filter",
            filter.as_str(),
            "--filter",
            "label=packfy.kind=app",
        ],
    );
    let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(String::from)
        .collect();
    let mut out: Vec<(String, String, String)> = ids
        .iter()
        .map(|id| {
            let o = docker_try(
                &m.hosts.sockets[h],
                [
                    "inspect",
                    "-f",
                    "{{index .Config.Labels \"packfy.version\"}} {{.State.StartedAt}}",
                    id.as_str(),
                ],
            );
            let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
            let (v, at) = text.split_once(' ').unwrap_or((&text, ""));
            (v.to_string(), id.clone(), at.to_string())
        })
        .collect();
    out.sort();
    out
}

/// A copy of the environment's ssh_config in `dir` in which hosts `down` (0-based) refuse
/// the connection (port 9): what a runner sees that reaches only the others.
fn reaching_without(hosts: &HostsEnv, dir: &Path, down: &[usize]) -> PathBuf {
    let mut text = std::fs::read_to_string(&hosts.ssh_config).expect("read ssh_config");
    for &h in down {
        let line = format!("HostName {}", hosts.addrs[h]);
        assert!(text.contains(&line), "{line} in {text}");
        text = text.replace(&line, &format!("{line}\n    Port 9"));
    }
    let path = dir.join(format!("ssh_config_without_{down:?}"));
    std::fs::write(&path, text).expect("write ssh_config");
    path
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

fn json(out: &std::process::Output) -> serde_json::Value {
    assert_eq!(code(out), 0, "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The lock volumes of the region on host `h`.
fn locks_on(m: &Multi, h: usize) -> usize {
    let filter = format!("label=packfy.region={}", m.name);
    let o = docker_try(
        &m.hosts.sockets[h],
        [
            "volume",
            "ls",
            "-q",
            "--filter",
            filter.as_str(),
            "--filter",
            "label=packfy.kind=lock",
        ],
    );
    String::from_utf8_lossy(&o.stdout).lines().count()
}

#[test]
fn a_canary_over_3_hosts_gives_each_weight_its_share_under_load_and_is_steered_through_any_host() {
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.sharing();
    let lane = hosts.lease_lane();
    let steps = "[{weight: 10}, {pause: {}}, {weight: 50}, {pause: {}}, {weight: 100}]";
    let mut m = Multi::new(&env, &hosts, &lane, 3, web(Rollout::new().canary(steps)));
    let v1 = m.push(&env, "v1", &[]);
    let v2 = m.push(&env, "v2", &[]);
    let out = m.deploy(&v1);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let plan = support::text(&m.run(&["plan", "--region", &m.name, "--version", &v2]));
    for line in [
        "web: strategy canary, HAProxy weights: weight 10% → pause (until promote) → weight 50% → pause (until promote) → weight 100%",
        "web: 3 replicas over 3 hosts (1 at a time): h1 1, h2 1, h3 1",
    ] {
        assert!(plan.contains(line), "{line:?} in {plan}");
    }

    let load = Answers::start(&lane.frontend, "/version");
    // 10%: one new container per host, each server at its host's address; weights over all
    // six servers (new 1, old 9: 3·1 / (3·1 + 3·9) = 10%).
    let out = m.deploy(&v2);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("until promote"), "{}", stderr(&out));
    assert_eq!(weights(&lane, &lane.backend).len(), 6);
    for h in 0..3 {
        assert_eq!(server_on(&hosts, &lane, &lane.backend, h, "r2").1, 1);
        assert_eq!(server_on(&hosts, &lane, &lane.backend, h, "r1").1, 9);
        let mut both = vec![v1.clone(), v2.clone()];
        both.sort();
        assert_eq!(m.versions_on(h), both, "host h{}", h + 1);
    }
    let w10 = load.window(1500);

    // The canary is recorded on every host: a runner that reaches h3 alone reads it there.
    let dir = tempfile::tempdir().unwrap();
    let only_h3 = reaching_without(&hosts, dir.path(), &[0, 1]);
    let st = json(&support::run_cli(
        &mut m.cmd(&only_h3, &["status", "--region", &m.name, "-o", "json"]),
        &[],
    ));
    let c = &st[0]["canary"];
    assert_eq!(c["weight"], 10, "{st:#}");
    assert_eq!(c["outcome"], "paused", "{st:#}");
    assert_eq!(c["weights"], serde_json::json!([1, 9]), "{st:#}");

    // 50%, promoted by a runner that cannot reach h1 (h1 misses this step's record).
    let no_h1 = reaching_without(&hosts, dir.path(), &[0]);
    let out = support::run_cli(&mut m.cmd(&no_h1, &["promote", "--region", &m.name]), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let w50 = load.window(1500);
    for h in 0..3 {
        assert_eq!(server_on(&hosts, &lane, &lane.backend, h, "r2").1, 1);
        assert_eq!(server_on(&hosts, &lane, &lane.backend, h, "r1").1, 1);
    }

    // The last step retires the old set on every host: the runner without h1 is refused
    // before anything changes (the weights stay at 50%).
    let out = support::run_cli(&mut m.cmd(&no_h1, &["promote", "--region", &m.name]), &[]);
    let err = stderr(&out);
    assert_eq!(code(&out), 6, "{err}");
    assert!(
        err.contains("does not answer") && err.contains("nothing was changed"),
        "{err}"
    );
    for h in 0..3 {
        assert_eq!(server_on(&hosts, &lane, &lane.backend, h, "r2").1, 1);
        assert_eq!(server_on(&hosts, &lane, &lane.backend, h, "r1").1, 1);
    }

    // 100%, promoted by a runner that reaches every host: it goes on from 50% (the latest
    // record, not h1's stale one), takes over the lock held again on h2 and h3, and retires
    // the old containers on every host.
    let out = m.run(&["promote", "--region", &m.name]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let w100 = until_only(&load, &v2, 1000);
    let (all, errors) = load.finish();

    let (s10, s50, s100) = (share(&w10, &v2), share(&w50, &v2), share(&w100, &v2));
    eprintln!(
        "canary over 3 hosts, shares of {v2}: {s10:.1}% at 10 ({} answers), {s50:.1}% at 50 ({}), {s100:.1}% at 100 ({}); {} answers in all",
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
    let w = weights(&lane, &lane.backend);
    assert!(w.len() == 3 && w.iter().all(|(_, w)| *w == 1), "{w:?}");
    for h in 0..3 {
        assert_eq!(m.versions_on(h), vec![v2.clone()], "host h{}", h + 1);
        server_on(&hosts, &lane, &lane.backend, h, "r2");
        assert_eq!(locks_on(&m, h), 0, "a lock left on h{}", h + 1);
    }
    let hist = m.history();
    assert_eq!(hist[0]["outcome"], "succeeded", "{hist:#}");
}

#[test]
fn a_release_answering_30_percent_5xx_over_3_hosts_is_aborted_at_its_first_analysis_on_every_host()
{
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.sharing();
    let lane = hosts.lease_lane();
    let rollout = Rollout::new()
        .canary("[{weight: 20}, {analysis: {duration: 30s}}, {weight: 100}]")
        .analysis("{max_5xx_ratio: 0.05, min_requests: 20}");
    let mut m = Multi::new(&env, &hosts, &lane, 3, web(rollout));
    let v1 = m.push(&env, "v1", &[]);
    let bad = m.push(&env, "bad", &[("ERROR_RATE", "0.3")]);
    let out = m.deploy(&v1);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let before: Vec<_> = (0..3).map(|h| containers_on(&m, h)).collect();

    let load = Answers::start(&lane.frontend, "/");
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let out = m.deploy(&bad);
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let (seen, _) = load.finish();
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    assert!(err.contains("analysis failed: 5xx ratio"), "{err}");
    assert!(err.contains("above max_5xx_ratio 5.0%"), "{err}");
    let total: u64 = seen.values().sum();
    let errors = seen.get("5xx").copied().unwrap_or(0);
    eprintln!(
        "a 30% 5xx release at 20% weight over 3 hosts: {errors} of {total} requests ({:.2}%) saw a 5xx during the deploy ({:.1}s)",
        100.0 * errors as f64 / total.max(1) as f64,
        took.as_secs_f64()
    );
    assert!(errors > 0, "the bad release never answered: {seen:?}");
    assert_eq!(
        seen.keys().filter(|k| *k != "200" && *k != "5xx").count(),
        0,
        "{seen:?}"
    );
    // Every host is back to its old server only: the new containers are gone, the old ones
    // never stopped, each old server at full weight.
    let w = weights(&lane, &lane.backend);
    assert!(w.len() == 3 && w.iter().all(|(_, w)| *w == 1), "{w:?}");
    for (h, was) in before.iter().enumerate() {
        server_on(&hosts, &lane, &lane.backend, h, "r1");
        assert_eq!(&containers_on(&m, h), was, "host h{}", h + 1);
    }
    let hist = m.history();
    assert_eq!(hist[0]["outcome"], "rolled_back", "{hist:#}");
    let why = hist[0]["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("5xx ratio") && why.contains("answers of the new release"),
        "{why}"
    );
}

#[test]
fn a_canary_over_3_hosts_killed_mid_step_is_taken_back_on_every_host_by_the_next_command() {
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.sharing();
    let lane = hosts.lease_lane();
    let rollout = Rollout::new().canary("[{weight: 50}, {pause: 90s}, {weight: 100}]");
    let mut m = Multi::new(&env, &hosts, &lane, 3, web(rollout));
    let v1 = m.push(&env, "v1", &[]);
    let v2 = m.push(&env, "v2", &[]);
    let out = m.deploy(&v1);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let load = Answers::start(&lane.frontend, "/version");
    let deploy = support::spawn_cli(
        &mut m.cmd(
            &hosts.ssh_config,
            &["deploy", "--region", &m.name, "--version", &v2],
        ),
        &[],
    );
    support::wait_until(Duration::from_secs(120), "the canary takes 50%", || {
        let w = weights(&lane, &lane.backend);
        w.iter()
            .filter(|(s, w)| s.contains("-r2-") && *w > 0)
            .count()
            == 3
    });
    deploy.signal("KILL");
    let killed = deploy.wait();
    assert_eq!(support::signal_of(&killed), Some(9));
    for h in 0..3 {
        assert_eq!(m.versions_on(h).len(), 2, "host h{}", h + 1);
    }

    // The next command finds the killed canary on the hosts and takes it back everywhere.
    let out = m.run(&["rollback", "--region", &m.name]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("was interrupted"), "{}", stderr(&out));
    let after = until_only(&load, &v1, 300);
    let (all, errors) = load.finish();
    assert_eq!(share(&after, &v1), 100.0, "{after:?}");
    assert_eq!(failed(&all, &[&v1, &v2]), 0, "{all:?} {errors:?}");
    let w = weights(&lane, &lane.backend);
    assert!(w.len() == 3 && w.iter().all(|(_, w)| *w == 1), "{w:?}");
    for h in 0..3 {
        assert_eq!(m.versions_on(h), vec![v1.clone()], "host h{}", h + 1);
        server_on(&hosts, &lane, &lane.backend, h, "r1");
        assert_eq!(locks_on(&m, h), 0, "a lock left on h{}", h + 1);
    }
    eprintln!(
        "killed canary over 3 hosts taken back: {} answers, 0 failed",
        all.values().sum::<u64>()
    );
}

/// The lane's preview frontend (the lb has one per lane since tests/env/hosts.sh made them).
fn preview_of(lane: &Lane) -> String {
    lane.preview_frontend.clone().unwrap_or_else(|| {
        panic!("the lb has no blue-green preview frontends (PACKFY_HOSTS_LB_PREVIEW_FRONTENDS): run tests/env/up.sh again")
    })
}

#[test]
fn a_blue_green_over_3_hosts_previews_then_is_promoted_by_another_process_then_rolled_back_at_once()
{
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.sharing();
    let lane = hosts.lease_lane();
    let preview = preview_of(&lane);
    let rollout = Rollout::new()
        .blue_green()
        .set("scale_down_delay", "60s")
        .set("preview", &format!("{{frontend: \"http://{preview}\"}}"));
    let mut m = Multi::new(&env, &hosts, &lane, 3, web(rollout));
    let v1 = m.push(&env, "v1", &[]);
    let v2 = m.push(&env, "v2", &[]);
    let out = m.deploy(&v1);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let preview_be = lane.preview_backend();

    let load = Answers::start(&lane.frontend, "/version");
    let out = m.deploy(&v2);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("until promote"), "{}", stderr(&out));
    // The new set, one per host, answers on the preview only; production answers the old.
    for h in 0..3 {
        server_on(&hosts, &lane, &preview_be, h, "r2");
        assert_eq!(server_on(&hosts, &lane, &lane.backend, h, "r2").1, 0);
    }
    let pv = Answers::start(&preview, "/version");
    let pw = pv.window(300);
    let (pall, perr) = pv.finish();
    assert_eq!(share(&pw, &v2), 100.0, "preview: {pw:?} {pall:?} {perr:?}");
    let prod = load.window(1000);
    assert_eq!(
        share(&prod, &v1),
        100.0,
        "production at the preview: {prod:?}"
    );

    // Promote from another process: all production traffic switches at once; it then waits
    // out the window.
    let promote = support::spawn_cli(
        &mut m.cmd(&hosts.ssh_config, &["promote", "--region", &m.name]),
        &[],
    );
    let after = until_only(&load, &v2, 300);
    if share(&after, &v2) != 100.0 {
        let out = promote.wait();
        panic!(
            "after promote: {after:?}; promote: exit {}\n{}",
            code(&out),
            stderr(&out)
        );
    }
    let after = load.window(1000);
    assert_eq!(share(&after, &v2), 100.0, "after promote: {after:?}");
    for h in 0..3 {
        assert_eq!(server_on(&hosts, &lane, &lane.backend, h, "r1").1, 0);
        assert_eq!(server_on(&hosts, &lane, &lane.backend, h, "r2").1, 1);
    }
    assert!(weights(&lane, &preview_be).is_empty());
    let kept: Vec<_> = (0..3).map(|h| containers_on(&m, h)).collect();

    // Rollback inside the window: one Runtime API line back to the old set on every host;
    // no container is started (the old ones never stopped), none created.
    let t0 = Instant::now();
    let out = m.run(&["rollback", "--region", &m.name]);
    let took = t0.elapsed();
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    let switched = err
        .lines()
        .find(|l| l.contains("in one Runtime API line"))
        .unwrap_or_else(|| panic!("no switch line in {err}"))
        .to_string();
    assert!(!err.contains("Starting"), "{err}");
    let back = until_only(&load, &v1, 300);
    assert_eq!(share(&back, &v1), 100.0, "after rollback: {back:?}");
    let w = weights(&lane, &lane.backend);
    assert!(w.len() == 3 && w.iter().all(|(_, w)| *w == 1), "{w:?}");
    for (h, kept) in kept.iter().enumerate() {
        server_on(&hosts, &lane, &lane.backend, h, "r1");
        assert_eq!(m.versions_on(h), vec![v1.clone()], "host h{}", h + 1);
        let now = containers_on(&m, h);
        let old = |set: &[(String, String, String)]| -> Vec<(String, String, String)> {
            set.iter().filter(|c| c.0 == v1).cloned().collect()
        };
        assert_eq!(old(&now), old(kept), "v1 restarted on h{}", h + 1);
        assert_eq!(now.len(), kept.len(), "h{}: {now:?}", h + 1);
    }
    eprintln!(
        "instant rollback over 3 hosts: the rollback command took {:.2}s; {}",
        took.as_secs_f64(),
        switched.trim()
    );

    let out = promote.wait();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no longer serves as promoted"),
        "{}",
        stderr(&out)
    );
    let (all, errors) = load.finish();
    assert_eq!(failed(&all, &[&v1, &v2]), 0, "{all:?} {errors:?}");
    eprintln!(
        "blue-green over 3 hosts under load: {} answers, 0 failed ({all:?})",
        all.values().sum::<u64>()
    );
}

#[test]
fn a_blue_green_on_one_remote_host_previews_is_promoted_and_its_old_set_goes_after_the_window() {
    let Some((env, hosts)) = setup() else { return };
    let _hosts = hosts.sharing();
    let lane = hosts.lease_lane();
    let preview = preview_of(&lane);
    let rollout = Rollout::new()
        .blue_green()
        .set("scale_down_delay", "10s")
        .set("preview", &format!("{{frontend: \"http://{preview}\"}}"));
    let mut m = Multi::new(&env, &hosts, &lane, 1, web(rollout).replicas(2));
    let v1 = m.push(&env, "v1", &[]);
    let v2 = m.push(&env, "v2", &[]);
    let out = m.deploy(&v1);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let preview_be = lane.preview_backend();

    let load = Answers::start(&lane.frontend, "/version");
    let out = m.deploy(&v2);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Servers at h1's address, the new ones in the preview backend at full weight.
    let pw = weights(&lane, &preview_be);
    assert_eq!(pw.len(), 2, "{pw:?}");
    for (s, w) in &pw {
        assert_eq!(*w, 1, "{pw:?}");
        let stat = haproxy_server_stat(&lane.socket, &preview_be, s).unwrap();
        assert!(
            stat["addr"].starts_with(&format!("{}:", hosts.addrs[0])),
            "{stat:?}"
        );
    }
    let pv = Answers::start(&preview, "/version");
    let pwin = pv.window(300);
    drop(pv);
    assert_eq!(share(&pwin, &v2), 100.0, "preview: {pwin:?}");
    let prod = load.window(500);
    assert_eq!(
        share(&prod, &v1),
        100.0,
        "production at the preview: {prod:?}"
    );

    // Promoted by another process, which waits out the 10 s window and removes the old set.
    let out = m.run(&["promote", "--region", &m.name]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after = until_only(&load, &v2, 500);
    let (all, errors) = load.finish();
    assert_eq!(share(&after, &v2), 100.0, "{after:?}");
    assert_eq!(failed(&all, &[&v1, &v2]), 0, "{all:?} {errors:?}");
    assert_eq!(m.versions_on(0), vec![v2.clone(); 2]);
    let w = weights(&lane, &lane.backend);
    assert!(
        w.len() == 2 && w.iter().all(|(s, w)| s.contains("-r2-") && *w == 1),
        "{w:?}"
    );
    assert!(weights(&lane, &preview_be).is_empty());
    let hist = m.history();
    assert_eq!(hist[0]["outcome"], "succeeded", "{hist:#}");
    eprintln!(
        "blue-green on one remote host: {} answers, 0 failed",
        all.values().sum::<u64>()
    );
}
