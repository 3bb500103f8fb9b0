//! A canary on a Kubernetes region (no traffic router): the weight of a step is the share of
//! replicas of a `<name>-canary` Deployment beside the stable one, both behind the Service.
//! Against the real control plane of the test environment (kube-apiserver, controllers,
//! kwok's nodes; tests/k8s): replica counts are read back with kubectl at every step. kwok's
//! Stages keep pods of a tag ending in `never-ready` unready.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use support::fixture::{self, region_name, RegionFile, RegionsDir, Rollout, Service};
use support::{code, text, unique_name, KubeEnv};

struct Region {
    name: String,
    namespace: String,
    dir: RegionsDir,
    k: KubeEnv,
    kubeconfig: PathBuf,
}

impl Region {
    /// `regions/<name>.yaml`: the sample app, 10 replicas, a canary with `steps` (and
    /// `analysis`, a YAML flow mapping, when given), in a namespace of its own.
    fn new(k: &KubeEnv, steps: &str, analysis: Option<&str>) -> Region {
        let namespace = unique_name("pkc").chars().take(50).collect::<String>();
        let mut rollout = Rollout::new()
            .max_surge(2)
            .max_unavailable(0)
            .progress_deadline("20s")
            .canary(steps);
        if let Some(a) = analysis {
            rollout = rollout.analysis(a);
        }
        let web = Service::new("web", "sample")
            .replicas(10)
            .port(8080)
            .health(fixture::Health::http("/health"))
            .rollout(rollout);
        let file = RegionFile::kubernetes(&k.context, &namespace)
            .app("packfy")
            .currency("USD")
            .service(web);
        let r = Region {
            name: region_name("kc", 20),
            namespace,
            dir: RegionsDir::new(),
            k: k.clone(),
            kubeconfig: k.kubeconfig.clone(),
        };
        r.dir.write(&r.name, &file);
        r
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = support::cli(self.dir.path(), args);
        c.env("KUBECONFIG", &self.kubeconfig);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        support::run_cli(&mut self.cmd(args), &[])
    }

    fn deploy(&self, version: &str) -> Output {
        self.run(&["deploy", "--region", &self.name, "--version", version])
    }

    fn steer(&self, verb: &str) -> Output {
        self.run(&[verb, "--region", &self.name])
    }

    fn jsonpath(&self, what: &str, path: &str) -> String {
        self.k.kubectl([
            "-n",
            self.namespace.as_str(),
            "get",
            what,
            "-o",
            &format!("jsonpath={path}"),
        ])
    }

    /// (replicas, ready replicas, image) of a Deployment, `None` when it does not exist.
    fn deployment(&self, name: &str) -> Option<(u32, u32, String)> {
        let out = self.k.kubectl_try([
            "-n",
            self.namespace.as_str(),
            "get",
            &format!("deployment/{name}"),
            "-o",
            "jsonpath={.spec.replicas} {.status.readyReplicas} {.spec.template.spec.containers[0].image}",
        ]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("NotFound"), "kubectl: {err}");
            return None;
        }
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        let f: Vec<&str> = s.split(' ').collect();
        Some((
            f[0].parse().unwrap(),
            f[1].parse().unwrap_or(0),
            f[2].to_string(),
        ))
    }

    fn stable(&self) -> Option<(u32, u32, String)> {
        self.deployment("packfy-web")
    }

    fn canary(&self) -> Option<(u32, u32, String)> {
        self.deployment("packfy-web-canary")
    }

    /// Release records, newest first.
    fn history(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["-o", "json", "history", "--region", &self.name]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn status_json(&self) -> serde_json::Value {
        let out = self.run(&["-o", "json", "status", "--region", &self.name]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let _ = self
            .k
            .kubectl_try(["delete", "namespace", &self.namespace, "--wait=false"]);
    }
}

#[test]
fn canary_replicas_follow_the_steps_and_another_process_promotes_the_pauses() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(
        &k,
        "[{weight: 10}, {pause: {}}, {weight: 50}, {pause: {}}, {weight: 100}]",
        None,
    );
    // The first release has nothing to compare with: it rolls out.
    let out = r.deploy("v1");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.stable(), Some((10, 10, "sample:v1".into())));
    assert_eq!(r.canary(), None);

    // plan says the weight is approximated by replicas
    let out = r.run(&["plan", "--region", &r.name, "--version", "v2"]);
    assert!(
        text(&out).contains("weight approximated by the share of replicas")
            && text(&out).contains("10% → 1 canary/9 stable"),
        "{}",
        text(&out)
    );

    // 10 %: one canary pod of the new release, nine stable ones; the deploy ends paused.
    let out = r.deploy("v2");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("until promote"), "{}", text(&out));
    assert_eq!(r.canary(), Some((1, 1, "sample:v2".into())));
    assert_eq!(r.stable(), Some((9, 9, "sample:v1".into())));
    // The Service selects both.
    let selector = r.jsonpath("service/packfy-web", "{.spec.selector}");
    assert!(!selector.contains("track"), "{selector}");
    let pods = r.k.kubectl([
        "-n",
        r.namespace.as_str(),
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/component=web",
        "--no-headers",
    ]);
    assert_eq!(pods.lines().count(), 10, "{pods}");
    let st = r.status_json();
    let c = &st[0]["canary"];
    assert_eq!(c["weight"], 10, "{st}");
    assert_eq!(c["services"][0]["canary_replicas"], 1, "{st}");

    // The paused canary holds the lock: a second deploy is exit 5, with the reason.
    let out = r.deploy("v3");
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(text(&out).contains("canary"), "{}", text(&out));

    // Another process promotes: 50 %, paused again.
    let out = r.steer("promote");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.canary(), Some((5, 5, "sample:v2".into())));
    assert_eq!(r.stable(), Some((5, 5, "sample:v1".into())));

    // And again: 100 %: the stable Deployment takes the new template, the canary goes.
    let out = r.steer("promote");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.stable(), Some((10, 10, "sample:v2".into())));
    assert_eq!(r.canary(), None);
    let h = r.history();
    let last = h.first().unwrap();
    assert_eq!(last["version"], "v2");
    assert_eq!(last["outcome"], "succeeded", "{last}");
    // The lock is free again.
    let out = r.deploy("v2");
    assert_eq!(code(&out), 0, "{}", text(&out));
}

#[test]
fn abort_deletes_the_canary_and_restores_the_stable_deployment() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "[{weight: 30}, {pause: {}}, {weight: 100}]", None);
    assert_eq!(code(&r.deploy("v1")), 0);
    let out = r.deploy("v2");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.canary(), Some((3, 3, "sample:v2".into())));
    assert_eq!(r.stable(), Some((7, 7, "sample:v1".into())));

    let out = r.steer("abort");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.canary(), None);
    assert_eq!(r.stable(), Some((10, 10, "sample:v1".into())));
    let h = r.history();
    assert_eq!(h.first().unwrap()["outcome"], "rolled_back");
    // Nothing left paused: promote has nothing to do (exit 2).
    assert_eq!(code(&r.steer("promote")), 2);

    // Again, and `promote --full` skips the remaining steps: 100 % at once.
    let out = r.deploy("v2");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.canary(), Some((3, 3, "sample:v2".into())));
    let out = r.run(&["promote", "--region", &r.name, "--full"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.stable(), Some((10, 10, "sample:v2".into())));
    assert_eq!(r.canary(), None);
    assert_eq!(r.history().first().unwrap()["outcome"], "succeeded");
}

#[test]
fn a_canary_that_never_gets_ready_is_aborted_with_exit_3() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "[{weight: 20}, {weight: 100}]", None);
    assert_eq!(code(&r.deploy("v1")), 0);
    let out = r.deploy("v2-never-ready");
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert_eq!(r.canary(), None);
    assert_eq!(r.stable(), Some((10, 10, "sample:v1".into())));
}

#[test]
fn a_failed_prometheus_condition_aborts_and_the_record_names_query_and_value() {
    let Some(k) = KubeEnv::get() else { return };
    let Some(prom) = support::prometheus_url() else {
        return;
    };
    // A query of the real Prometheus whose value is known: the number of scrape targets
    // that are up (HAProxy's exporter: 1) must be at most 0.5.
    let r = Region::new(
        &k,
        "[{weight: 10}, {analysis: {duration: 3s}}, {weight: 100}]",
        Some(&format!(
            "{{prometheus: {{url: '{prom}', query: 'sum(up{{job=\"haproxy\"}})', max: 0.5}}}}"
        )),
    );
    assert_eq!(code(&r.deploy("v1")), 0);
    let out = r.deploy("v2");
    assert_eq!(code(&out), 3, "{}", text(&out));
    let h = r.history();
    let last = h.first().unwrap();
    assert_eq!(last["outcome"], "rolled_back", "{last}");
    let err = last.to_string();
    assert!(
        err.contains("sum(up{job=\\\"haproxy\\\"})") && err.contains("= 1 is above max 0.5"),
        "{last}"
    );
    assert_eq!(r.canary(), None);
    assert_eq!(r.stable(), Some((10, 10, "sample:v1".into())));
}

#[test]
fn a_running_canary_is_paused_by_another_process_and_then_aborted() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "[{weight: 10}, {pause: 2m}, {weight: 100}]", None);
    assert_eq!(code(&r.deploy("v1")), 0);
    let deploy = support::spawn_cli(
        &mut r.cmd(&["deploy", "--region", &r.name, "--version", "v2"]),
        &[],
    );
    // Wait for the 10 % step to be in place (the deploy then sits in its timed pause).
    support::wait_until(Duration::from_secs(60), "the canary at 10%", || {
        r.canary() == Some((1, 1, "sample:v2".into()))
            && r.stable().is_some_and(|s| s.0 == 9 && s.1 == 9)
    });
    let out = r.steer("pause");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("Asked"), "{}", text(&out));
    // The running deploy stops at its next tick, paused (exit 0), the canary left as it is.
    let out = deploy.wait();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("paused by hand"), "{}", text(&out));
    assert_eq!(r.history().first().unwrap()["outcome"], "paused");
    assert_eq!(r.canary(), Some((1, 1, "sample:v2".into())));
    let out = r.steer("abort");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.canary(), None);
    assert_eq!(r.stable(), Some((10, 10, "sample:v1".into())));
}
