//! The Kubernetes target against the real control plane of the test environment (kube-apiserver,
//! kube-controller-manager and kube-scheduler, with kwok's nodes; tests/k8s). Images are never
//! pulled there: kwok's Stages make pods of a tag ending in `never-ready` stay unready and of a
//! tag ending in `crashloop` crash-loop, which is how releases fail here.
//!
//! Each test deploys its own region into its own namespace, so tests run in parallel.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::fixture::{self, region_name, RegionFile, RegionsDir, Rollout, Service};
use support::webhook::{Receiver, Reply};
use support::{code, text, unique_name, KubeEnv, TestEnv};

const SECRET_VALUE: &str = "k8s-s3cr3t-do-not-print-4417";

struct Region {
    name: String,
    namespace: String,
    dir: RegionsDir,
    k: KubeEnv,
    kubeconfig: PathBuf,
    file: RegionFile,
}

impl Region {
    /// `regions/<name>.yaml`: the sample app, 5 replicas, in a namespace of its own.
    /// `deadline` is the progress deadline.
    fn new(k: &KubeEnv, deadline: &str) -> Region {
        let namespace = unique_name("pk").chars().take(50).collect::<String>();
        let web = Service::new("web", "sample")
            .replicas(5)
            .port(8080)
            // a plain variable, so in the ConfigMap
            .env("A", "1")
            .secret_env("API_TOKEN", "env:PACKFY_TEST_K8S_TOKEN")
            .health(fixture::Health::http("/health"))
            .rollout(
                Rollout::new()
                    .max_surge(2)
                    .max_unavailable(0)
                    .progress_deadline(deadline)
                    .bake("2s"),
            );
        let file = RegionFile::kubernetes(&k.context, &namespace)
            .app("packfy")
            .currency("USD")
            .keep_releases(4)
            .service(web);
        let r = Region {
            name: region_name("k", 20),
            namespace,
            dir: RegionsDir::new(),
            k: k.clone(),
            kubeconfig: k.kubeconfig.clone(),
            file,
        };
        r.dir.write(&r.name, &r.file);
        r
    }

    /// Rewrites the region file, changed by `change`.
    fn edit(&mut self, change: impl FnOnce(RegionFile) -> RegionFile) {
        self.file = change(self.file.clone());
        self.dir.write(&self.name, &self.file);
    }

    /// Rewrites the region file with the service `web` changed by `change`.
    fn edit_web(&mut self, change: impl FnOnce(Service) -> Service) {
        self.edit(|f| f.map_service("web", change));
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = support::cli(self.dir.path(), args);
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("PACKFY_TEST_K8S_TOKEN", SECRET_VALUE);
        c
    }

    /// Runs a command; fails the test when its output shows the secret or a panic.
    fn run(&self, args: &[&str]) -> Output {
        support::run_cli(&mut self.cmd(args), &[SECRET_VALUE])
    }

    /// Starts a command in the background; [`support::Spawned::wait`] checks its output
    /// as [`Region::run`] does.
    fn spawn(&self, args: &[&str]) -> support::Spawned {
        support::spawn_cli(&mut self.cmd(args), &[SECRET_VALUE])
    }

    fn deploy(&self, version: &str) -> Output {
        self.run(&["deploy", "--region", &self.name, "--version", version])
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        self.k.kubectl(all)
    }

    fn jsonpath(&self, what: &str, path: &str) -> String {
        self.kubectl(&["get", what, "-o", &format!("jsonpath={path}")])
    }

    fn image(&self) -> String {
        self.jsonpath(
            "deployment/packfy-web",
            "{.spec.template.spec.containers[0].image}",
        )
    }

    fn replica_sets(&self) -> usize {
        self.kubectl(&["get", "rs", "--no-headers"]).lines().count()
    }

    fn history(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["-o", "json", "history", "--region", &self.name]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    }

    fn record_count(&self) -> usize {
        self.kubectl(&[
            "get",
            "secrets",
            "-l",
            "packfy.io/record=release",
            "--no-headers",
        ])
        .lines()
        .count()
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
fn v1_then_v2_and_the_same_release_twice_changes_nothing() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "30s");
    let out = r.deploy("v1");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.image(), "sample:v1");
    let out = r.deploy("v2");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.image(), "sample:v2");
    assert_eq!(
        r.jsonpath("deployment/packfy-web", "{.status.readyReplicas}"),
        "5"
    );
    assert_eq!(
        r.jsonpath("deployment/packfy-web", "{.status.updatedReplicas}"),
        "5"
    );
    // the field manager is ours
    let managers = r.jsonpath(
        "deployment/packfy-web",
        "{.metadata.managedFields[*].manager}",
    );
    assert!(managers.contains("packfy-deploy"), "{managers}");

    // the same release again: no new ReplicaSet, revision or record
    let (sets, revision, generation, records) = (
        r.replica_sets(),
        r.jsonpath(
            "deployment/packfy-web",
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
        ),
        r.jsonpath("deployment/packfy-web", "{.metadata.generation}"),
        r.record_count(),
    );
    assert_eq!((sets, records), (2, 2));
    let out = r.deploy("v2");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("Unchanged"), "{}", text(&out));
    assert_eq!(r.replica_sets(), sets);
    assert_eq!(
        r.jsonpath(
            "deployment/packfy-web",
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        revision
    );
    assert_eq!(
        r.jsonpath("deployment/packfy-web", "{.metadata.generation}"),
        generation
    );
    assert_eq!(r.record_count(), records);
    // diff --live agrees: nothing differs
    let out = r.run(&["diff", "--live", &r.name, "--version", "v2"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = r.run(&["diff", "--live", &r.name, "--version", "v3"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.contains(
            "-Deployment/packfy-web: spec.template.spec.containers[0].image: \"sample:v2\""
        ) && shown.contains(
            "+Deployment/packfy-web: spec.template.spec.containers[0].image: \"sample:v3\""
        ),
        "{shown}"
    );
    assert!(
        !shown.contains("managedFields") && !shown.contains("resourceVersion"),
        "{shown}"
    );
    // plan says the same, through the API server's dry run
    let out = r.run(&["plan", "--region", &r.name, "--version", "v2"]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    // what kubectl shows matches status and history
    let out = r.run(&["-o", "json", "status", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = &status[0];
    assert_eq!(status["release"], "r2");
    assert_eq!(status["version"], "v2");
    assert_eq!(status["namespace"], r.namespace.as_str());
    let web = &status["services"][0];
    assert_eq!(web["image"], r.image().as_str());
    assert_eq!(
        web["ready"].to_string(),
        r.jsonpath("deployment/packfy-web", "{.status.readyReplicas}")
    );
    assert_eq!(
        web["revision"].as_str().unwrap(),
        r.jsonpath(
            "deployment/packfy-web",
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        )
    );
    let history = r.history();
    let ids: Vec<&str> = history.iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["r2", "r1"]);
    let labels = r.kubectl(&[
        "get",
        "secrets",
        "-l",
        "packfy.io/record=release",
        "-o",
        "jsonpath={range .items[*]}{.metadata.labels.packfy\\.io/release}={.metadata.labels.packfy\\.io/outcome} {end}",
    ]);
    let mut labels: Vec<&str> = labels.split_whitespace().collect();
    labels.sort();
    assert_eq!(labels, ["r1=succeeded", "r2=succeeded"]);
}

#[test]
fn a_release_that_never_becomes_ready_is_rolled_back_at_its_deadline() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "10s");
    assert_eq!(code(&r.deploy("v1")), 0);
    assert_eq!(code(&r.deploy("v2")), 0);
    let started = Instant::now();
    let out = r.deploy("v3-never-ready");
    let took = started.elapsed();
    assert_eq!(code(&out), 3, "{}", text(&out));
    // Rolled back at its 10s deadline, not at some longer wait (Kubernetes' default is
    // 600s): the bound leaves the rollback itself plenty of room on a loaded machine.
    assert!(
        took < Duration::from_secs(10 + 60),
        "rolled back after {took:?} (deadline 10s)"
    );
    assert!(
        text(&out).contains("progress deadline exceeded"),
        "{}",
        text(&out)
    );
    assert_eq!(r.image(), "sample:v2");
    assert_eq!(
        r.jsonpath("deployment/packfy-web", "{.status.readyReplicas}"),
        "5"
    );
    let h = r.history();
    assert_eq!(h[0]["id"], "r3");
    assert_eq!(h[0]["outcome"], "rolled_back");
    assert!(h[0]["error"]
        .as_str()
        .unwrap()
        .contains("progress deadline"));
}

#[test]
fn a_crash_looping_release_fails_fast() {
    let Some(k) = KubeEnv::get() else { return };
    // a long deadline: only the pods' state can end this early
    let r = Region::new(&k, "300s");
    assert_eq!(code(&r.deploy("v1")), 0);
    let started = Instant::now();
    let out = r.deploy("v4-crashloop");
    let took = started.elapsed();
    assert_eq!(code(&out), 3, "{}", text(&out));
    // well below the deadline, with room for a loaded machine
    assert!(
        took < Duration::from_secs(150),
        "took {took:?} with a 300s deadline"
    );
    assert!(text(&out).contains("CrashLoopBackOff"), "{}", text(&out));
    assert_eq!(r.image(), "sample:v1");
}

#[test]
fn an_image_that_cannot_be_pulled_fails_fast() {
    let Some(k) = KubeEnv::get() else { return };
    // a long deadline: only the pods' state can end this early
    let r = Region::new(&k, "300s");
    assert_eq!(code(&r.deploy("v1")), 0);
    let started = Instant::now();
    let out = r.deploy("v2-no-such-image");
    let took = started.elapsed();
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(text(&out).contains("ImagePullBackOff"), "{}", text(&out));
    // well below the deadline, with room for a loaded machine
    assert!(
        took < Duration::from_secs(150),
        "took {took:?} with a 300s deadline"
    );
    assert_eq!(r.image(), "sample:v1");
}

#[test]
fn pods_that_cannot_be_scheduled_fail_the_release_before_its_deadline() {
    let Some(k) = KubeEnv::get() else { return };
    let mut r = Region::new(&k, "120s");
    assert_eq!(code(&r.deploy("v1")), 0);
    // more CPU than any kwok node has (32): the scheduler says so, and waiting cannot help
    r.edit_web(|s| s.cpu_request("64"));
    let started = Instant::now();
    let out = r.deploy("v2");
    let took = started.elapsed();
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(text(&out).contains("unschedulable"), "{}", text(&out));
    assert!(text(&out).contains("Insufficient cpu"), "{}", text(&out));
    // the unschedulable grace (30s, less than half the 120s deadline), then the rollback:
    // well before the deadline, with room for a loaded machine
    assert!(
        took < Duration::from_secs(90),
        "took {took:?} with a 120s deadline"
    );
    assert_eq!(r.image(), "sample:v1");
}

#[test]
fn a_configmap_change_and_an_image_change_roll_back_together() {
    let Some(k) = KubeEnv::get() else { return };
    let mut r = Region::new(&k, "60s");
    assert_eq!(code(&r.deploy("v1")), 0);
    assert_eq!(r.jsonpath("configmap/packfy-web-env", "{.data.A}"), "1");
    // a failing release that changes both: both come back
    r.edit_web(|s| s.env("A", "2"));
    let config = || r.jsonpath("configmap/packfy-web-env", "{.data.A}");
    let out = r.deploy("v2-crashloop");
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert_eq!((config(), r.image()), ("1".into(), "sample:v1".into()));
    // a good release that changes both, then `rollback`: both come back
    let out = r.deploy("v2");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!((config(), r.image()), ("2".into(), "sample:v2".into()));
    let sets = r.replica_sets();
    let out = r.run(&["rollback", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!((config(), r.image()), ("1".into(), "sample:v1".into()));
    assert_eq!(
        r.replica_sets(),
        sets,
        "a rollback reuses the old ReplicaSet"
    );
    let h = r.history();
    assert_eq!(
        (
            h[0]["kind"].as_str(),
            h[0]["target"].as_str(),
            h[1]["outcome"].as_str()
        ),
        (Some("rollback"), Some("r1"), Some("reverted"))
    );
}

#[test]
fn an_object_the_failed_release_added_is_deleted() {
    let Some(k) = KubeEnv::get() else { return };
    let mut r = Region::new(&k, "60s");
    assert_eq!(code(&r.deploy("v1")), 0);
    // v2 adds an HPA; it crash-loops, so the HPA must go again
    r.edit_web(|s| s.autoscale(5, 10, 80));
    let out = r.deploy("v2-crashloop");
    assert_eq!(code(&out), 3, "{}", text(&out));
    let hpas = r.kubectl(&["get", "hpa", "--no-headers", "--ignore-not-found"]);
    assert!(
        hpas.trim().is_empty(),
        "the added HPA is still there: {hpas}"
    );
}

#[test]
fn an_object_the_configuration_drops_is_planned_and_deleted() {
    let Some(k) = KubeEnv::get() else { return };
    let mut r = Region::new(&k, "60s");
    let plain = r.file.clone();
    r.edit_web(|s| s.autoscale(5, 10, 80));
    assert_eq!(code(&r.deploy("v1")), 0);
    assert!(!r.kubectl(&["get", "hpa", "--no-headers"]).trim().is_empty());
    r.edit(|_| plain);
    let out = r.run(&["plan", "--region", &r.name, "--version", "v1"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains("HorizontalPodAutoscaler/packfy-web: delete (no longer rendered)"),
        "{}",
        text(&out)
    );
    let out = r.run(&["diff", "--live", &r.name, "--version", "v1"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains("-HorizontalPodAutoscaler/packfy-web: spec.maxReplicas: 10"),
        "{}",
        text(&out)
    );
    let out = r.deploy("v1");
    assert_eq!(code(&out), 0, "{}", text(&out));
    let hpas = r.kubectl(&["get", "hpa", "--no-headers", "--ignore-not-found"]);
    assert!(hpas.trim().is_empty(), "{hpas}");
}

#[test]
fn a_second_deploy_while_one_runs_exits_5() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "10s");
    assert_eq!(code(&r.deploy("v1")), 0);
    let first = r.spawn(&["deploy", "--region", &r.name, "--version", "v2-never-ready"]);
    support::wait_until(
        Duration::from_secs(20),
        "the first deploy holds the lock",
        || {
            r.k.kubectl_try(["-n", &r.namespace, "get", "lease", "packfy-production-lock"])
                .status
                .success()
        },
    );
    let out = r.deploy("v3");
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(text(&out).contains("is locked by tester"), "{}", text(&out));
    let first = first.wait();
    assert_eq!(code(&first), 3, "{}", text(&first));
    // the lock went with the first run
    let out = r.deploy("v3");
    assert_eq!(code(&out), 0, "{}", text(&out));
}

#[test]
fn sigkill_mid_rollout_then_rollback_restores() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "120s");
    assert_eq!(code(&r.deploy("v1")), 0);
    let child = r.spawn(&["deploy", "--region", &r.name, "--version", "v2-never-ready"]);
    support::wait_until(Duration::from_secs(30), "the rollout of v2 started", || {
        r.image() == "sample:v2-never-ready"
    });
    child.signal("KILL"); // no cleanup at all
    let out = child.wait();
    assert_eq!(support::signal_of(&out), Some(9), "{}", text(&out));
    let out = r.run(&["status", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("was interrupted"), "{}", text(&out));
    let out = r.run(&["rollback", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.image(), "sample:v1");
    assert_eq!(
        r.jsonpath("deployment/packfy-web", "{.status.readyReplicas}"),
        "5"
    );
    let h = r.history();
    assert_eq!(h[0]["id"], "r2");
    assert_eq!(h[0]["outcome"], "rolled_back");
    assert!(h[0]["error"].as_str().unwrap().contains("interrupted"));
}

#[test]
fn sigterm_mid_rollout_puts_the_previous_release_back() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "120s");
    assert_eq!(code(&r.deploy("v1")), 0);
    let child = r.spawn(&["deploy", "--region", &r.name, "--version", "v2-never-ready"]);
    support::wait_until(Duration::from_secs(30), "the rollout of v2 started", || {
        r.image() == "sample:v2-never-ready"
    });
    child.signal("TERM");
    let out = child.wait();
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(
        text(&out).contains("interrupted (SIGTERM)"),
        "{}",
        text(&out)
    );
    assert_eq!(r.image(), "sample:v1");
    assert_eq!(r.history()[0]["outcome"], "rolled_back");
    // the lock went with it
    let out = r.deploy("v3");
    assert_eq!(code(&out), 0, "{}", text(&out));
}

#[test]
fn status_names_pods_that_cannot_get_ready() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "60s");
    assert_eq!(code(&r.deploy("v1")), 0);
    // someone changes the image by hand to one that crash-loops
    r.kubectl(&[
        "set",
        "image",
        "deployment/packfy-web",
        "web=sample:v9-crashloop",
    ]);
    support::wait_until(Duration::from_secs(30), "a pod crash-loops", || {
        r.kubectl(&["get", "pods", "--no-headers"])
            .contains("CrashLoopBackOff")
    });
    let out = r.run(&["-o", "json", "status", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let web = &v[0]["services"][0];
    assert_eq!(web["image"], "sample:v9-crashloop");
    assert!(
        web["rollout"].as_str().unwrap().starts_with("in progress"),
        "{web}"
    );
    let problems = web["problems"].as_array().unwrap();
    assert!(!problems.is_empty(), "{web}");
    assert!(
        problems
            .iter()
            .all(|p| p.as_str().unwrap().contains("CrashLoopBackOff")),
        "{web}"
    );
    // and the release record still says what packfy-deploy deployed
    assert_eq!(v[0]["version"], "v1");
}

#[test]
fn an_unreachable_api_server_exits_6_and_changes_nothing() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "30s");
    // the same kubeconfig, its server moved to a port nothing listens on
    let text_cfg = std::fs::read_to_string(&k.kubeconfig).unwrap();
    let moved: String = text_cfg
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("server:") {
                "    server: https://127.0.0.1:1".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = r.dir.path().join("kubeconfig");
    std::fs::write(&path, moved).unwrap();
    let mut r = r;
    r.kubeconfig = path;
    for args in [
        vec!["deploy", "--region", &r.name, "--version", "v1"],
        vec!["status", "--region", &r.name],
        vec!["rollback", "--region", &r.name],
    ] {
        let out = r.run(&args);
        assert_eq!(code(&out), 6, "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("cannot reach the Kubernetes API server")
                && text(&out).contains("127.0.0.1:1"),
            "{}",
            text(&out)
        );
    }
    let out = k.kubectl_try(["get", "namespace", &r.namespace]);
    assert!(!out.status.success(), "nothing may have been created");
}

#[test]
fn conflicts_with_another_manager_stop_until_forced() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "30s");
    assert_eq!(code(&r.deploy("v1")), 0);
    // someone scales by hand: kubectl now owns spec.replicas
    r.kubectl(&["scale", "deployment/packfy-web", "--replicas=2"]);
    let out = r.deploy("v2");
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("conflict") && text(&out).contains("--force-conflicts"),
        "{}",
        text(&out)
    );
    assert_eq!(r.image(), "sample:v1", "nothing changed");
    let out = r.run(&[
        "deploy",
        "--region",
        &r.name,
        "--version",
        "v2",
        "--force-conflicts",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.jsonpath("deployment/packfy-web", "{.spec.replicas}"), "5");
    assert_eq!(r.image(), "sample:v2");
}

#[test]
fn secrets_reach_the_cluster_but_never_output_or_records() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "30s");
    let out = r.run(&[
        "-o",
        "json",
        "deploy",
        "--region",
        &r.name,
        "--version",
        "v1",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // the pods get it through a Secret of their own
    let b64 = r.jsonpath("secret/packfy-web-secrets", "{.data.API_TOKEN}");
    let decoded = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b64.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&decoded.stdout), SECRET_VALUE);
    // the release record (gzip JSON in a Secret) exists and holds no value
    assert_eq!(r.record_count(), 1);
    let rec = r.jsonpath(
        "secret/packfy.release.packfy.production.r1",
        "{.data.release}",
    );
    assert!(!rec.is_empty(), "the release record r1 has no data");
    let json = Command::new("sh")
        .args(["-c", "base64 -d | gzip -d"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(rec.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        json.status.success(),
        "the record is not gzip JSON in base64"
    );
    let json = String::from_utf8_lossy(&json.stdout);
    assert!(json.contains("\"applied\""), "{json}");
    assert!(!json.contains(SECRET_VALUE), "{json}");
    assert!(
        json.contains("<secret:env:PACKFY_TEST_K8S_TOKEN>"),
        "{json}"
    );
    // diff, plan and history never show it (Region::run checks every output); each must
    // have done its work, as a command that fails early prints nothing
    for (args, expected) in [
        // v2 differs from what runs (v1): both print the difference
        (vec!["diff", "--live", &r.name, "--version", "v2"], 1),
        (
            vec!["-o", "json", "plan", "--region", &r.name, "--version", "v2"],
            1,
        ),
        (vec!["-o", "json", "history", "--region", &r.name], 0),
    ] {
        let out = r.run(&args);
        assert_eq!(code(&out), expected, "{args:?}: {}", text(&out));
        assert!(!out.stdout.is_empty(), "{args:?} printed nothing");
    }
    let h = r.history();
    assert_eq!(h[0]["id"], "r1");
    assert!(!serde_json::to_string(&h).unwrap().contains(SECRET_VALUE));
}

/// A one-route HTTP server answering `status` until dropped.
struct Health {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl Health {
    fn serve(status: u16) -> Health {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf);
                        let _ = write!(
                            s,
                            "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Health { addr, stop }
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn the_http_bake_rolls_back_a_release_its_url_calls_unhealthy() {
    let Some(k) = KubeEnv::get() else { return };
    let good = Health::serve(200);
    let mut r = Region::new(&k, "30s");
    let with_url = |r: &mut Region, addr: &str| {
        r.edit(|f| f.health_url(Some(&format!("http://{addr}/health"))))
    };
    with_url(&mut r, &good.addr);
    let out = r.deploy("v1");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("Verified"), "{}", text(&out));
    let bad = Health::serve(503);
    with_url(&mut r, &bad.addr);
    let out = r.deploy("v2");
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(text(&out).contains("status 503"), "{}", text(&out));
    assert_eq!(r.image(), "sample:v1");
}

/// The company's own region files (regions/usa.yaml and regions/spain.yaml, every layer of
/// _defaults.yaml) deploy to a real API server: the rendered Deployments, Services, ConfigMaps,
/// HPAs and Secrets pass its validation and admission, and roll out. Their kubeconfig contexts
/// (packfy-usa, packfy-eu) are made to point at the test cluster; their namespaces are made
/// unique so runs never meet.
#[test]
fn the_company_regions_deploy_to_a_real_api_server() {
    let Some(k) = KubeEnv::get() else { return };
    let dir = tempfile::tempdir().unwrap();
    let regions = dir.path().join("regions");
    std::fs::create_dir(&regions).unwrap();
    let suffix: String = unique_name("").chars().skip(1).take(20).collect();
    let mut namespaces = Vec::new();
    for entry in std::fs::read_dir(support::repo_root().join("regions")).unwrap() {
        let path = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        for ns in ["packfy-usa", "packfy-spain"] {
            if text.contains(&format!("namespace: {ns}")) {
                let unique = format!("{ns}{suffix}");
                text = text.replace(&format!("namespace: {ns}"), &format!("namespace: {unique}"));
                namespaces.push(unique);
            }
        }
        std::fs::write(regions.join(path.file_name().unwrap()), text).unwrap();
    }
    struct Gone(KubeEnv, Vec<String>);
    impl Drop for Gone {
        fn drop(&mut self) {
            for ns in &self.1 {
                let _ = self
                    .0
                    .kubectl_try(["delete", "namespace", ns, "--wait=false"]);
            }
        }
    }
    let _gone = Gone(k.clone(), namespaces.clone());
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::copy(&k.kubeconfig, &kubeconfig).unwrap();
    // What the company's regions ask of every deploy, each made real here: the repository's
    // `make test` (a Makefile that leaves a mark per region), each region's own database
    // (the test PostgreSQL), Slack and the signed deploy webhook (a local receiver).
    let pg = TestEnv::get().expect("the company's regions dump a PostgreSQL database");
    std::fs::write(
        dir.path().join("Makefile"),
        "test:\n\ttouch tested-$$PACKFY_REGION-$$PACKFY_ENV\n",
    )
    .unwrap();
    let rx = Receiver::start(&[Reply::Status(200)]);
    let cfg = |args: &[&str]| {
        let out = Command::new(&k.kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["config"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    };
    let cluster = k.context.clone();
    for ctx in ["packfy-usa", "packfy-eu"] {
        cfg(&[
            "set-context",
            ctx,
            "--cluster",
            &cluster,
            "--user",
            &cluster,
        ]);
    }
    let run = |env: &str, region: &str| {
        let mut c = support::cli(
            dir.path(),
            &[
                "-e",
                env,
                "deploy",
                "--region",
                region,
                "--version",
                "1.0.0",
            ],
        );
        c.env("KUBECONFIG", &kubeconfig)
            .env(
                "PACKFY_DATABASE_URL",
                format!("postgres://u:{SECRET_VALUE}@db/packfy"),
            )
            .env("PACKFY_JWT_SECRET", SECRET_VALUE)
            .env("PACKFY_STRIPE_SECRET_KEY", SECRET_VALUE)
            .env("PACKFY_USA_DATABASE_URL", &pg.pg_url)
            .env("PACKFY_SPAIN_DATABASE_URL", &pg.pg_url)
            .env("PACKFY_SLACK_WEBHOOK", rx.url("/slack"))
            .env("PACKFY_DEPLOY_WEBHOOK_URL", rx.url("/deploys"))
            .env("PACKFY_WEBHOOK_KEY", SECRET_VALUE);
        support::run_cli(&mut c, &[SECRET_VALUE])
    };
    let get = |ns: &str, what: &str, path: &str| {
        k.kubectl(["-n", ns, "get", what, "-o", &format!("jsonpath={path}")])
    };
    // staging: plain Deployments (backend 2, frontend 2 replicas)
    let out = run("staging", "usa");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        dir.path().join("tested-usa-staging").exists(),
        "{}",
        text(&out)
    );
    let dump = dir.path().join("backups/usa/staging/r1/db.dump.zst");
    assert!(
        std::fs::metadata(&dump)
            .map(|m| m.len() > 0)
            .unwrap_or(false),
        "no dump at {}: {}",
        dump.display(),
        text(&out)
    );
    // start and success, each to Slack and to the signed webhook
    let sent = rx.wait_for(4, Duration::from_secs(10));
    let to = |path: &str| sent.iter().filter(|r| r.path == path).collect::<Vec<_>>();
    assert_eq!(to("/slack").len(), 2, "{sent:?}");
    assert_eq!(to("/deploys").len(), 2, "{sent:?}");
    assert!(to("/deploys")
        .iter()
        .all(|r| r.verify_signature(SECRET_VALUE.as_bytes())));
    let events: Vec<_> = to("/deploys")
        .iter()
        .map(|r| r.json()["event"].clone())
        .collect();
    assert_eq!(events, ["start", "success"], "{sent:?}");
    let usa = namespaces
        .iter()
        .find(|n| n.starts_with("packfy-usa"))
        .unwrap();
    assert_eq!(
        get(usa, "deployment/packfy-backend", "{.status.readyReplicas}"),
        "2"
    );
    assert_eq!(
        get(
            usa,
            "deployment/packfy-backend",
            "{.spec.template.spec.containers[0].image}"
        ),
        "registry.packfy.example/packfy/backend:1.0.0"
    );
    assert_eq!(
        get(
            usa,
            "configmap/packfy-backend-env",
            "{.data.PACKFY_CURRENCY}"
        ),
        "USD"
    );
    assert_eq!(
        get(usa, "service/packfy-frontend", "{.spec.ports[0].port}"),
        "3000"
    );
    // production in Spain: the backend autoscales (an HPA, no fixed replicas)
    let out = run("production", "spain");
    assert_eq!(code(&out), 0, "{}", text(&out));
    let spain = namespaces
        .iter()
        .find(|n| n.starts_with("packfy-spain"))
        .unwrap();
    assert_eq!(get(spain, "hpa/packfy-backend", "{.spec.minReplicas}"), "3");
    assert_eq!(
        get(
            spain,
            "configmap/packfy-frontend-env",
            "{.data.GDPR_BANNER}"
        ),
        "true"
    );
    assert_eq!(
        get(spain, "secret/packfy-backend-secrets", "{.type}"),
        "Opaque"
    );
    // and again: nothing to do
    let out = run("production", "spain");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("Unchanged"), "{}", text(&out));
}
