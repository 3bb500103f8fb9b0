//! Drift (issue 15) against the real tools: each kind of hand edit — `kubectl set env`,
//! `kubectl scale`, `kubectl annotate`, `kubectl patch` (an edit); `docker run` with the
//! region's labels, `docker stop`, HAProxy's `set weight` and `set server … state maint` —
//! is reported by `diff --live` (exit 1, who changed it where the target knows), shown by
//! `plan` and `status`, taken back by `deploy --reset-drift`, after which `diff --live`
//! exits 0. Secret values never appear (every command runs through `run_cli`).

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use support::fixture::{region_name, Health, RegionFile, RegionsDir, Rollout, Service};
use support::{code, container_ids, docker, text, unique_name, KubeEnv, Lane, TestEnv};

const SECRET_VALUE: &str = "drift-s3cr3t-do-not-print-5813";

/// Drift entries of `diff -o json --live` for one region.
fn drift_of(out: &Output) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)));
    v["drift"].as_array().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Docker

/// A Docker region of its own behind a leased HAProxy lane.
struct DockerRegion {
    name: String,
    dir: RegionsDir,
    host: String,
}

impl DockerRegion {
    /// Behind the lane, or with `traffic: none` without one.
    fn new(env: &TestEnv, lane: Option<&Lane>) -> DockerRegion {
        let web = Service::new("web", "packfy-sample")
            .replicas(3)
            .port(8080)
            .env("MODE", "plain")
            .secret_env("API_TOKEN", "env:PACKFY_TEST_DRIFT_TOKEN")
            .health(
                Health::http("/health")
                    .start_period("3s")
                    .interval("500ms")
                    .timeout("500ms")
                    .healthy_threshold(2)
                    .unhealthy_threshold(3)
                    .deadline("60s"),
            )
            .rollout(Rollout::new().bake("1s").drain_timeout("2s"))
            .stop_grace_period("2s");
        let file = RegionFile::docker(&env.docker_host)
            .currency("USD")
            .keep_releases(3)
            .service(web);
        let file = match lane {
            Some(l) => file.lane(l, "web"),
            None => file.traffic_none(),
        };
        let r = DockerRegion {
            name: region_name("dr", 20),
            dir: RegionsDir::new(),
            host: env.docker_host.clone(),
        };
        r.dir.write(&r.name, &file);
        r
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = support::cli(self.dir.path(), args);
        c.env("PACKFY_TEST_DRIFT_TOKEN", SECRET_VALUE);
        support::run_cli(&mut c, &[SECRET_VALUE])
    }

    /// `-o json deploy --region NAME --version VERSION`: its last line is the summary.
    fn deploy_json(&self, version: &str) -> Output {
        self.run(&[
            "-o",
            "json",
            "deploy",
            "--region",
            &self.name,
            "--version",
            version,
        ])
    }

    /// `docker run` of `image` with the region's labels (as if of release r1): the id.
    fn run_by_hand(&self, name: &str, image: &str) -> String {
        let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), name.into()];
        for l in [
            "packfy.app=packfy".to_string(),
            format!("packfy.region={}", self.name),
            "packfy.environment=production".into(),
            "packfy.kind=app".into(),
            "packfy.service=web".into(),
            "packfy.release=r1".into(),
            "packfy.index=9".into(),
        ] {
            args.extend(["--label".to_string(), l]);
        }
        args.push(image.to_string());
        let run = docker(&self.host, &args);
        assert!(run.status.success(), "{}", text(&run));
        String::from_utf8_lossy(&run.stdout).trim().to_string()
    }

    fn running(&self) -> Vec<String> {
        container_ids(
            &self.host,
            &[&format!("packfy.region={}", self.name), "packfy.kind=app"],
            false,
        )
    }
}

impl Drop for DockerRegion {
    fn drop(&mut self) {
        support::remove_labelled(&self.host, &format!("packfy.region={}", self.name));
    }
}

/// A label of a container.
fn label(host: &str, id: &str, key: &str) -> String {
    let out = docker(
        host,
        [
            "inspect",
            "--format",
            &format!("{{{{index .Config.Labels \"{key}\"}}}}"),
            id,
        ],
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn docker_hand_edits_are_drift_until_a_reset_takes_them_back() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let r = DockerRegion::new(&env, Some(&lane));
    let v1 = format!("v1-{}", r.name);
    let image = env.build_sample(&r.host, &v1, &[]);
    let out = r.run(&["deploy", "--region", &r.name, "--version", &v1]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // What the release set is what runs: no drift, and no --version needed.
    let out = r.run(&["diff", &r.name, "--live"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains(&format!("at {v1}")), "{}", text(&out));

    let serving = r.running();
    assert_eq!(serving.len(), 3);
    let server = |id: &str| {
        format!(
            "{}/production-web-{}-{}",
            r.name,
            label(&r.host, id, "packfy.release"),
            label(&r.host, id, "packfy.index")
        )
        .replacen('/', "-", 1)
    };
    let (deleted, weighted, maint) = (
        server(&serving[0]),
        server(&serving[1]),
        server(&serving[2]),
    );
    // 1. `docker run` with the region's labels, beside the release
    let hand_name = format!("{}-by-hand", r.name);
    let hand = r.run_by_hand(&hand_name, &image.reference);
    // 2. a server taken out of HAProxy by hand
    for cmd in ["set server {s} state maint", "del server {s}"] {
        lane.cmd(&cmd.replace("{s}", &format!("{}/{deleted}", lane.backend)));
    }
    // 3. HAProxy by hand: a weight and a state
    lane.cmd(&format!("set weight {}/{weighted} 50", lane.backend));
    lane.cmd(&format!("set server {}/{maint} state maint", lane.backend));

    let out = r.run(&["diff", &r.name, "--live"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let shown = text(&out);
    for want in [
        format!("container {hand_name}"),
        format!("{deleted}: \"in rotation\""),
        format!("{weighted}: weight"),
        format!("{maint}: state"),
        "\"MAINT\"".to_string(),
        "--reset-drift".to_string(),
    ] {
        assert!(shown.contains(&want), "no {want:?} in:\n{shown}");
    }
    let out = r.run(&["-o", "json", "diff", &r.name, "--live"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let drift = drift_of(&out);
    let find = |part: &str| {
        drift
            .iter()
            .find(|d| d["path"].as_str().unwrap_or("").contains(part))
            .unwrap_or_else(|| panic!("no {part} in {drift:#?}"))
            .clone()
    };
    assert_eq!(find(&hand_name)["wanted"], serde_json::Value::Null);
    assert_eq!(find(&hand_name)["live"], "running");
    assert_eq!(find(&format!("{weighted}: weight"))["live"], 50);
    assert_eq!(find(&format!("{weighted}: weight"))["wanted"], 1);
    assert_eq!(find(&format!("{maint}: state"))["wanted"], "ready");
    // `all` in a nightly job: exit 1 as well
    let out = r.run(&["diff", "--live", "--region", "all"]);
    assert_eq!(code(&out), 1, "{}", text(&out));

    let out = r.run(&["status", "--region", &r.name]);
    assert!(text(&out).contains("drift: "), "{}", text(&out));
    let out = r.run(&["plan", "--region", &r.name, "--version", &v1]);
    assert!(
        text(&out).contains("drift: ") && text(&out).contains(&hand_name),
        "{}",
        text(&out)
    );

    let out = r.run(&[
        "deploy",
        "--region",
        &r.name,
        "--version",
        &v1,
        "--reset-drift",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = r.run(&["diff", &r.name, "--live"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        container_ids(&r.host, &[&format!("packfy.region={}", r.name)], true)
            .iter()
            .all(|id| id != &hand),
        "the hand-made container is still there"
    );
    assert_eq!(r.running(), serving, "nothing was replaced");
    let mut servers = lane.servers();
    servers.sort();
    let mut wanted = vec![deleted.clone(), weighted.clone(), maint.clone()];
    wanted.sort();
    assert_eq!(servers, wanted, "the same containers serve again");
    for s in &servers {
        lane.wait_status(s, "UP", Duration::from_secs(20));
        let weight = lane.cmd(&format!("get weight {}/{s}", lane.backend));
        assert!(weight.starts_with("1 "), "{s}: {weight}");
    }
    let out = r.run(&["status", "--region", &r.name]);
    assert!(!text(&out).contains("drift: "), "{}", text(&out));
}

#[test]
fn a_deploy_that_leaves_drift_in_place_says_so_and_a_stopped_container_is_replaced() {
    let Some(env) = TestEnv::get() else { return };
    let r = DockerRegion::new(&env, None);
    let v1 = format!("v1-{}", r.name);
    let image = env.build_sample(&r.host, &v1, &[]);
    let out = r.run(&["deploy", "--region", &r.name, "--version", &v1]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let hand = r.run_by_hand(&format!("{}-by-hand", r.name), &image.reference);
    // Nothing to change, one difference left: a warning, and `drift_left` in the summary.
    let out = r.deploy_json(&v1);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["outcome"], "unchanged", "{summary}");
    assert_eq!(summary["drift_left"], 1, "{summary}");
    assert!(text(&out).contains("--reset-drift"), "{}", text(&out));
    assert!(container_ids(&r.host, &[&format!("packfy.region={}", r.name)], true).contains(&hand));
    // `docker stop` of a serving container
    let serving = r.running();
    let one = serving.iter().find(|id| **id != hand).unwrap();
    assert!(docker(&r.host, ["stop", "-t", "1", one]).status.success());
    let out = r.run(&["-o", "json", "diff", &r.name, "--live"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let drift = drift_of(&out);
    assert!(
        drift
            .iter()
            .any(|d| d["wanted"] == "running" && d["live"] == "stopped"),
        "{drift:#?}"
    );
    let out = r.run(&[
        "deploy",
        "--region",
        &r.name,
        "--version",
        &v1,
        "--reset-drift",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.running().len(), 3, "the service runs its replicas again");
    let out = r.run(&["diff", &r.name, "--live"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!container_ids(&r.host, &[&format!("packfy.region={}", r.name)], true).contains(&hand));
    let out = r.deploy_json(&v1);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("drift_left"),
        "{}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------------------
// Kubernetes

struct KubeRegion {
    name: String,
    namespace: String,
    dir: RegionsDir,
    k: KubeEnv,
    kubeconfig: PathBuf,
}

impl KubeRegion {
    fn new(k: &KubeEnv) -> KubeRegion {
        let name = region_name("kd", 20);
        let namespace = unique_name("pkd").chars().take(50).collect::<String>();
        let web = Service::new("web", "sample")
            .replicas(2)
            .port(8080)
            .env("GREETING", "hola")
            .secret_env("API_TOKEN", "env:PACKFY_TEST_DRIFT_TOKEN")
            .health(Health::http("/health"))
            .rollout(
                Rollout::new()
                    .max_surge(2)
                    .max_unavailable(0)
                    .progress_deadline("60s")
                    .bake("0s"),
            );
        let file = RegionFile::kubernetes(&k.context, &namespace)
            .app("packfy")
            .currency("USD")
            .service(web);
        let dir = RegionsDir::new();
        dir.write(&name, &file);
        KubeRegion {
            name,
            namespace,
            dir,
            k: k.clone(),
            kubeconfig: k.kubeconfig.clone(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c: Command = support::cli(self.dir.path(), args);
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("PACKFY_TEST_DRIFT_TOKEN", SECRET_VALUE);
        support::run_cli(&mut c, &[SECRET_VALUE])
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        self.k.kubectl(all)
    }

    fn jsonpath(&self, what: &str, path: &str) -> String {
        self.kubectl(&["get", what, "-o", &format!("jsonpath={path}")])
    }
}

impl Drop for KubeRegion {
    fn drop(&mut self) {
        let _ = self
            .k
            .kubectl_try(["delete", "namespace", &self.namespace, "--wait=false"]);
    }
}

#[test]
fn kubernetes_hand_edits_are_drift_naming_the_manager_until_a_reset_takes_them_back() {
    let Some(k) = KubeEnv::get() else { return };
    let r = KubeRegion::new(&k);
    let out = r.run(&["deploy", "--region", &r.name, "--version", "v1"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // The version it serves, without --version: no drift.
    let out = r.run(&["diff", &r.name, "--live"]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    let deploy = "deployment/packfy-web";
    // The common production "quick fixes", with the real tools.
    r.kubectl(&["set", "env", deploy, "GREETING=changed-by-hand"]);
    r.kubectl(&["set", "env", deploy, &format!("HAND_TOKEN={SECRET_VALUE}")]);
    r.kubectl(&["scale", deploy, "--replicas=4"]);
    r.kubectl(&["annotate", deploy, "team=ops"]);
    // `kubectl edit`, as a (strategic merge) patch: a label, and the image
    r.kubectl(&[
        "patch",
        deploy,
        "-p",
        r#"{"metadata":{"labels":{"edited":"by-hand"}},"spec":{"template":{"spec":{"containers":[{"name":"web","image":"sample:hand"}]}}}}"#,
    ]);

    let out = r.run(&["diff", &r.name, "--live"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let shown = text(&out);
    for want in [
        "env[GREETING]",
        "changed by kubectl-set",
        "spec.replicas",
        "changed by kubectl",
        "metadata.annotations.team",
        "changed by kubectl-annotate",
        "metadata.labels.edited",
        "changed by kubectl-patch",
        "\"sample:hand\"",
    ] {
        assert!(shown.contains(want), "no {want:?} in:\n{shown}");
    }
    let out = r.run(&["-o", "json", "diff", &r.name, "--live"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let drift = drift_of(&out);
    let find = |part: &str| {
        drift
            .iter()
            .find(|d| d["path"].as_str().unwrap_or("").ends_with(part))
            .unwrap_or_else(|| panic!("no {part} in {drift:#?}"))
            .clone()
    };
    let greeting = find("env[GREETING]");
    assert_eq!(greeting["changed_by"], "kubectl-set");
    assert!(greeting["changed_at"].is_string(), "{greeting}");
    assert_eq!(greeting["wanted"], serde_json::Value::Null);
    assert_eq!(greeting["live"]["value"], "changed-by-hand");
    let replicas = find("spec.replicas");
    assert_eq!(
        (replicas["wanted"].clone(), replicas["live"].clone()),
        (2.into(), 4.into())
    );
    assert_eq!(
        find("metadata.annotations.team")["changed_by"],
        "kubectl-annotate"
    );
    assert_eq!(find("containers[web].image")["wanted"], "sample:v1");
    // The deployment controller's own annotations are not drift.
    assert!(
        !drift
            .iter()
            .any(|d| d["path"].as_str().unwrap_or("").contains("revision")),
        "{drift:#?}"
    );

    let out = r.run(&["status", "--region", &r.name]);
    assert!(text(&out).contains("drift: "), "{}", text(&out));
    let out = r.run(&["plan", "--region", &r.name, "--version", "v1"]);
    assert!(
        text(&out).contains("drift: ") && text(&out).contains("kubectl-set"),
        "{}",
        text(&out)
    );
    // A deploy without --reset-drift stops at the fields another manager took, naming the way out.
    let out = r.run(&["deploy", "--region", &r.name, "--version", "v1"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("--reset-drift"), "{}", text(&out));

    let out = r.run(&[
        "deploy",
        "--region",
        &r.name,
        "--version",
        "v1",
        "--reset-drift",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = r.run(&["diff", &r.name, "--live"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let env = r.jsonpath(deploy, "{.spec.template.spec.containers[0].env[*].name}");
    assert!(
        !env.contains("GREETING") && !env.contains("HAND_TOKEN"),
        "{env}"
    );
    assert_eq!(r.jsonpath(deploy, "{.spec.replicas}"), "2");
    assert_eq!(
        r.jsonpath(deploy, "{.spec.template.spec.containers[0].image}"),
        "sample:v1"
    );
    assert_eq!(r.jsonpath(deploy, "{.metadata.annotations.team}"), "");
    assert_eq!(r.jsonpath(deploy, "{.metadata.labels.edited}"), "");
    std::thread::sleep(Duration::from_millis(10));
}
