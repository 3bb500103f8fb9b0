//! Multi-region deploys against several real Docker daemons (each standing in for a region's
//! host): waves in order, a failure in a wave rolls that region back, `on_failure` decides the
//! fate of its wave partners, later waves never start, and the JSON output matches what the
//! engines really run.

mod support;

use std::path::Path;
use std::process::Output;

use support::fixture::{
    region_name, Health, Notification, RegionFile, RegionsDir, Rollout, Service,
};
use support::{code, stderr, unique_name, TestEnv};

const HMAC_KEY: &str = "fleet-test-hmac-key-0042";

struct Fleet {
    dir: RegionsDir,
    /// (region, engine)
    regions: Vec<(String, String)>,
    on_failure: String,
}

impl Fleet {
    fn new(env: &TestEnv, on_failure: &str) -> Fleet {
        Self::with_defaults(env, on_failure, RegionFile::new())
    }

    /// `defaults` (hooks, notifications) become `_defaults.yaml`, with the fleet's waves.
    fn with_defaults(env: &TestEnv, on_failure: &str, defaults: RegionFile) -> Fleet {
        let dir = RegionsDir::new();
        let tag = region_name("f", 10);
        let mut regions = Vec::new();
        for (i, host) in env.docker_hosts.iter().take(3).enumerate() {
            for suffix in ["a", "b"] {
                let name = format!("{tag}{i}{suffix}");
                dir.write(&name, &docker_region(host));
                regions.push((name, host.clone()));
            }
        }
        let fleet = Fleet {
            dir,
            regions,
            on_failure: on_failure.to_string(),
        };
        fleet.write_defaults(defaults);
        fleet
    }

    /// (Re)writes `_defaults.yaml`: `defaults` and the waves. Wave 1: a canary; wave 2: two
    /// regions on two daemons; wave 3: the rest.
    fn write_defaults(&self, defaults: RegionFile) {
        let n: Vec<&str> = self.regions.iter().map(|(n, _)| n.as_str()).collect();
        let defaults = defaults
            .waves(&[&[n[0]], &[n[2], n[4]], &[n[1], n[3], n[5]]])
            .max_parallel(2)
            .on_failure(&self.on_failure);
        self.dir.write("_defaults", &defaults);
    }

    fn run(&self, args: &[&str]) -> Output {
        run(self.dir.path(), args, &[])
    }

    fn versions(&self, region: &str) -> Vec<String> {
        versions_on(&self.regions, region)
    }
}

/// `packfy-deploy --regions-dir DIR/regions ARGS` as `ci-bot`, with the HMAC key in its
/// environment (and never in its output) and `envs` added.
fn run(dir: &Path, args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut cmd = support::cli(dir, args);
    cmd.env("PACKFY_TEST_HMAC_KEY", HMAC_KEY)
        .env("PACKFY_ACTOR", "ci-bot")
        .envs(envs.iter().copied());
    support::run_cli(&mut cmd, &[HMAC_KEY])
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (name, host) in &self.regions {
            support::remove_labelled(host, &format!("packfy.region={name}"));
        }
    }
}

/// A region of the sample app on the Docker engine `host`, 2 replicas, fast checks.
fn docker_region(host: &str) -> RegionFile {
    let web = Service::new("web", "packfy-sample")
        .replicas(2)
        .port(8080)
        .health(
            Health::http("/health")
                .start_period("2s")
                .interval("500ms")
                .timeout("500ms")
                .deadline("30s"),
        )
        .rollout(Rollout::new().bake("1s"))
        .stop_grace_period("2s");
    RegionFile::docker(host)
        .currency("USD")
        .traffic_none()
        .service(web)
}

/// A region of the sample image (never pulled: kwok runs no containers) in `namespace`.
fn kubernetes_region(context: &str, namespace: &str) -> RegionFile {
    let web = Service::new("web", "sample")
        .replicas(3)
        .port(8080)
        .rollout(Rollout::new().progress_deadline("60s").bake("0s"));
    RegionFile::kubernetes(context, namespace)
        .currency("USD")
        .service(web)
}

fn events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not NDJSON ({e}): {l}")))
        .collect()
}

/// The outcome of `region` in a run summary, if the summary lists it.
fn outcome(summary: &serde_json::Value, region: &str) -> Option<String> {
    summary["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == region)
        .map(|r| r["outcome"].as_str().unwrap().to_string())
}

/// The regions a run summary lists as not started, sorted.
fn not_started(summary: &serde_json::Value) -> Vec<&str> {
    let mut names: Vec<&str> = summary["not_started"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    names.sort();
    names
}

/// (region, event) of each notice the receiver got, in arrival order.
fn notices(requests: &[support::webhook::Request]) -> Vec<(String, String)> {
    requests
        .iter()
        .map(|r| {
            let j = r.json();
            (
                j["region"].as_str().unwrap().to_string(),
                j["event"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn waves_stop_at_a_failure_and_on_failure_rolls_the_wave_back() {
    let Some(env) = TestEnv::with_docker_hosts(3) else {
        return;
    };
    let fleet = Fleet::new(&env, "rollback_wave");
    let (v1, v2) = (unique_name("v1"), unique_name("v2"));
    let mut images = Vec::new();
    for host in env.docker_hosts.iter().take(3) {
        images.push(env.build_sample(host, &v1, &[]));
        // v2 is healthy everywhere but on the third daemon, where it never becomes healthy.
        let bad = host == &env.docker_hosts[2];
        images.push(env.build_sample(host, &v2, if bad { &[("NEVER_HEALTHY", "1")] } else { &[] }));
    }
    let names: Vec<String> = fleet.regions.iter().map(|(n, _)| n.clone()).collect();

    let out = fleet.run(&["-o", "json", "deploy", "--region", "all", "--version", &v1]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let ev = events(&out);
    let summary = ev.last().unwrap();
    assert_eq!(summary["event"], "run_summary");
    for n in &names {
        assert_eq!(fleet.versions(n), vec![v1.clone(); 2], "{n}");
        assert_eq!(outcome(summary, n).as_deref(), Some("succeeded"), "{n}");
    }
    // Wave order: every event of wave 1's region comes before wave 2's first.
    let first_w2 = ev
        .iter()
        .position(|e| e["region"] == names[2].as_str() || e["region"] == names[4].as_str())
        .unwrap();
    let last_w1 = ev
        .iter()
        .rposition(|e| e["region"] == names[0].as_str())
        .unwrap();
    assert!(last_w1 < first_w2, "wave 2 started before wave 1 ended");
    for e in &ev[..ev.len() - 1] {
        assert!(
            e["time"].is_string() && (e["step"].is_string() || e["event"] == "summary"),
            "{e}"
        );
    }

    // v2: wave 2 has names[2] (daemon 1, fine) and names[4] (daemon 2, never healthy).
    let out = fleet.run(&["-o", "json", "deploy", "--region", "all", "--version", &v2]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let ev = events(&out);
    let summary = ev.last().unwrap();
    assert_eq!(outcome(summary, &names[0]).as_deref(), Some("succeeded"));
    assert_eq!(outcome(summary, &names[4]).as_deref(), Some("rolled_back"));
    assert_eq!(
        outcome(summary, &names[2]).as_deref(),
        Some("rolled_back"),
        "the wave partner follows on_failure"
    );
    assert_eq!(not_started(summary).len(), 3, "{summary}");
    // What the engines run agrees with the JSON.
    assert_eq!(fleet.versions(&names[0]), vec![v2.clone(); 2]);
    assert_eq!(fleet.versions(&names[2]), vec![v1.clone(); 2]);
    assert_eq!(fleet.versions(&names[4]), vec![v1.clone(); 2]);
    for n in [&names[1], &names[3], &names[5]] {
        assert_eq!(
            fleet.versions(n),
            vec![v1.clone(); 2],
            "{n} must not have been touched"
        );
    }

    // The fast path: every region at once. Only the canary has an earlier release to go back
    // to; the others refuse (exit 2), and the worst code is the run's.
    let out = fleet.run(&["rollback", "--region", "all"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_eq!(fleet.versions(&names[0]), vec![v1.clone(); 2]);
    for n in &names[1..] {
        assert_eq!(fleet.versions(n), vec![v1.clone(); 2], "{n}");
    }
    drop(images);
}

#[test]
fn hooks_run_around_each_region_and_signed_webhooks_report_every_step() {
    let Some(env) = TestEnv::with_docker_hosts(3) else {
        return;
    };
    let receiver = support::webhook::Receiver::start(&[support::webhook::Reply::Status(200)]);
    let marks = tempfile::tempdir().unwrap();
    let dir = marks.path().display();
    let pre = format!("echo ran > {dir}/pre-$PACKFY_REGION-$PACKFY_VERSION");
    let defaults = |pre: &str| {
        RegionFile::new()
            .hook("pre_deploy", "tests", pre)
            .hook(
                "post_deploy",
                "smoke",
                &format!("test \"$PACKFY_OUTCOME\" = succeeded && touch {dir}/post-$PACKFY_REGION"),
            )
            .notification(
                Notification::generic(&receiver.url("/hook")).secret("env:PACKFY_TEST_HMAC_KEY"),
            )
    };
    let fleet = Fleet::with_defaults(&env, "halt", defaults(&pre));
    let v1 = unique_name("v1");
    let names: Vec<String> = fleet.regions.iter().map(|(n, _)| n.clone()).collect();
    // The run deploys names[0] and names[2], on the first two daemons only.
    let mut images = Vec::new();
    for host in env.docker_hosts.iter().take(2) {
        images.push(env.build_sample(host, &v1, &[]));
    }
    let subset = format!("{},{}", names[0], names[2]);
    // Fleet::run fails the test if the HMAC key is printed.
    let out = fleet.run(&["deploy", "--region", &subset, "--version", &v1]);
    assert_eq!(code(&out), 0, "{}", support::text(&out));
    for n in [&names[0], &names[2]] {
        assert!(
            marks.path().join(format!("pre-{n}-{v1}")).exists(),
            "pre_deploy did not run for {n}"
        );
        assert!(
            marks.path().join(format!("post-{n}")).exists(),
            "post_deploy did not run for {n}"
        );
    }
    assert!(
        !marks.path().join(format!("pre-{}-{v1}", names[1])).exists(),
        "a region outside the run was touched"
    );
    let requests = receiver.wait_for(4, std::time::Duration::from_secs(10));
    assert_eq!(requests.len(), 4, "start and success for two regions");
    for r in &requests {
        assert!(
            r.verify_signature(HMAC_KEY.as_bytes()),
            "bad signature on {:?}",
            r.header("x-packfy-event")
        );
        assert!(!String::from_utf8_lossy(&r.body).contains(HMAC_KEY));
    }
    let mut seen = notices(&requests);
    seen.sort();
    let mut want = vec![
        (names[0].clone(), "start".to_string()),
        (names[0].clone(), "success".to_string()),
        (names[2].clone(), "start".to_string()),
        (names[2].clone(), "success".to_string()),
    ];
    want.sort();
    assert_eq!(seen, want);

    // A failing pre-deploy hook stops before anything changes.
    fleet.write_defaults(defaults(&format!("exit 7; {pre}")));
    let v2 = unique_name("v2");
    images.push(env.build_sample(&env.docker_hosts[0], &v2, &[]));
    let out = fleet.run(&["deploy", "--region", &names[0], "--version", &v2]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pre_deploy hook `tests` failed with exit code 7"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fleet.versions(&names[0]), vec![v1.clone(); 2]);
    drop(images);
}

/// Five regions in one run: three on three Docker daemons, two on the Kubernetes control plane.
#[test]
fn docker_and_kubernetes_regions_deploy_in_one_run() {
    let Some(env) = TestEnv::with_docker_hosts(3) else {
        return;
    };
    let Some(kube) = support::KubeEnv::get() else {
        return;
    };
    let receiver = support::webhook::Receiver::start(&[support::webhook::Reply::Status(200)]);
    let dir = RegionsDir::new();
    let tag = region_name("m", 10);
    let docker: Vec<(String, String)> = env
        .docker_hosts
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, h)| (format!("{tag}d{i}"), h.clone()))
        .collect();
    for (name, host) in &docker {
        dir.write(name, &docker_region(host));
    }
    let kube_regions: Vec<(String, String)> = (0..2)
        .map(|i| (format!("{tag}k{i}"), unique_name(&format!("pm{i}"))))
        .collect();
    for (name, ns) in &kube_regions {
        dir.write(name, &kubernetes_region(&kube.context, ns));
    }
    // wave 1: a Docker canary; wave 2: Docker (fails on v2) + Kubernetes; wave 3: one of each
    let defaults = RegionFile::new()
        .waves(&[
            &[&docker[0].0],
            &[&docker[1].0, &kube_regions[0].0],
            &[&docker[2].0, &kube_regions[1].0],
        ])
        .max_parallel(2)
        .on_failure("rollback_wave")
        .notification(
            Notification::generic(&receiver.url("/hook")).secret("env:PACKFY_TEST_HMAC_KEY"),
        );
    dir.write("_defaults", &defaults);
    let (v1, v2) = (unique_name("v1"), unique_name("v2"));
    let mut images = Vec::new();
    for (_, host) in &docker {
        images.push(env.build_sample(host, &v1, &[]));
    }
    // v2 fails on d1 (wave 2), so wave 3 (d2) never gets it: no v2 image there.
    images.push(env.build_sample(&docker[0].1, &v2, &[]));
    images.push(env.build_sample(&docker[1].1, &v2, &[("NEVER_HEALTHY", "1")]));
    let run = |version: &str| {
        run(
            dir.path(),
            &[
                "-o",
                "json",
                "deploy",
                "--region",
                "all",
                "--version",
                version,
            ],
            &[("KUBECONFIG", &kube.kubeconfig)],
        )
    };
    let k8s_image = |ns: &str| {
        kube.kubectl([
            "-n",
            ns,
            "get",
            "deployment/packfy-web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image} {.status.readyReplicas}",
        ])
    };
    let cleanup = || {
        for (name, host) in &docker {
            support::remove_labelled(host, &format!("packfy.region={name}"));
        }
        for (_, ns) in &kube_regions {
            let _ = kube.kubectl_try(["delete", "namespace", ns, "--wait=false"]);
        }
    };
    struct Cleanup<F: Fn()>(F);
    impl<F: Fn()> Drop for Cleanup<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    let _cleanup = Cleanup(cleanup);

    let out = run(&v1);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for (name, _) in &docker {
        assert_eq!(versions_on(&docker, name), vec![v1.clone(); 2], "{name}");
    }
    for (_, ns) in &kube_regions {
        assert_eq!(k8s_image(ns), format!("sample:{v1} 3"));
    }

    let out = run(&v2);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let ev = events(&out);
    let summary = ev.last().unwrap();
    assert_eq!(summary["event"], "run_summary");
    assert_eq!(outcome(summary, &docker[0].0).as_deref(), Some("succeeded"));
    assert_eq!(
        outcome(summary, &docker[1].0).as_deref(),
        Some("rolled_back")
    );
    assert_eq!(
        outcome(summary, &kube_regions[0].0).as_deref(),
        Some("rolled_back"),
        "the Kubernetes wave partner follows on_failure: {summary}"
    );
    let mut want = vec![docker[2].0.as_str(), kube_regions[1].0.as_str()];
    want.sort();
    assert_eq!(not_started(summary), want, "{summary}");
    // what the targets run agrees with the JSON
    assert_eq!(versions_on(&docker, &docker[0].0), vec![v2.clone(); 2]);
    assert_eq!(versions_on(&docker, &docker[1].0), vec![v1.clone(); 2]);
    assert_eq!(versions_on(&docker, &docker[2].0), vec![v1.clone(); 2]);
    assert_eq!(k8s_image(&kube_regions[0].1), format!("sample:{v1} 3"));
    assert_eq!(k8s_image(&kube_regions[1].1), format!("sample:{v1} 3"));

    // every notice is signed; each region's start and end were reported: v1's 10 (start and
    // success × 5), then v2's 8 (d0 start, success; d1 start, failure, rollback; k0 start,
    // success, and the rollback its wave's failure brought)
    let requests = receiver.wait_for(18, std::time::Duration::from_secs(10));
    for r in &requests {
        assert!(r.verify_signature(HMAC_KEY.as_bytes()), "bad signature");
    }
    let seen = notices(&requests);
    for (region, event) in [
        (&kube_regions[0].0, "start"),
        (&kube_regions[0].0, "success"),
        (&kube_regions[1].0, "success"),
        (&docker[1].0, "failure"),
        (&docker[1].0, "rollback"),
        (&kube_regions[0].0, "rollback"),
    ] {
        assert!(
            seen.iter().any(|(r, e)| r == region && e == event),
            "no {event} notice for {region}: {seen:?}"
        );
    }
    drop(images);
}

fn versions_on(docker: &[(String, String)], region: &str) -> Vec<String> {
    let host = &docker.iter().find(|(n, _)| n == region).unwrap().1;
    support::running_versions(host, region)
}

/// `dir/ctx`: a build context of the sample app (its static binary and Dockerfile).
fn add_build_context(env: &TestEnv, dir: &RegionsDir) {
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy(&env.sample_bin, ctx.join("packfy-sample")).unwrap();
    std::fs::copy(
        support::repo_root().join("tests/sample-app/Dockerfile"),
        ctx.join("Dockerfile"),
    )
    .unwrap();
}

/// The releases `history -o json` lists for `region`, newest first.
fn history(dir: &Path, region: &str, envs: &[(&str, &Path)]) -> Vec<serde_json::Value> {
    let out = run(dir, &["-o", "json", "history", "--region", region], envs);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str::<serde_json::Value>(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_run_builds_each_image_once_and_every_region_runs_that_digest() {
    let Some(env) = TestEnv::with_docker_hosts(2) else {
        return;
    };
    let Some(kube) = support::KubeEnv::get() else {
        return;
    };
    let dir = RegionsDir::new();
    add_build_context(&env, &dir);
    let tag = region_name("b", 10);
    let repo = format!("{}/{tag}", env.registry);
    let docker: Vec<(String, String)> = env
        .docker_hosts
        .iter()
        .take(2)
        .enumerate()
        .map(|(i, h)| (format!("{tag}d{i}"), h.clone()))
        .collect();
    for (name, host) in &docker {
        let region = docker_region(host).map_service("web", |s| s.image(&repo).build("ctx"));
        dir.write(name, &region);
    }
    let (kname, ns) = (format!("{tag}k0"), unique_name("pb"));
    let kregion =
        kubernetes_region(&kube.context, &ns).map_service("web", |s| s.image(&repo).build("ctx"));
    dir.write(&kname, &kregion);
    let version = unique_name("v1");
    let image = format!("{repo}:{version}");
    struct Cleanup<'a>(
        &'a [(String, String)],
        &'a support::KubeEnv,
        &'a str,
        &'a str,
    );
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            for (name, host) in self.0 {
                support::remove_labelled(host, &format!("packfy.region={name}"));
                let _ = support::docker::docker_try(host, ["rmi", "-f", "--no-prune", self.3]);
            }
            let _ = self
                .1
                .kubectl_try(["delete", "namespace", self.2, "--wait=false"]);
        }
    }
    let _cleanup = Cleanup(&docker, &kube, &ns, &image);
    let kubeconfig = [("KUBECONFIG", kube.kubeconfig.as_path())];

    let out = run(
        dir.path(),
        &["deploy", "--region", "all", "--version", &version],
        &kubeconfig,
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    // One build and one push for three regions on two engines and a cluster.
    assert_eq!(err.matches("Building").count(), 1, "{err}");
    assert_eq!(err.matches("Pushing").count(), 1, "{err}");
    for (name, _) in &docker {
        assert_eq!(
            versions_on(&docker, name),
            vec![version.clone(); 2],
            "{name}"
        );
    }
    // The second engine pulled the very image the first built.
    let id_on = |host: &str| {
        let out =
            support::docker::docker(host, ["image", "inspect", "--format", "{{.Id}}", &image]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(id_on(&docker[0].1), id_on(&docker[1].1));
    // Every record pins the registry's digest, and the cluster runs the image by it.
    let mut digests = Vec::new();
    for (name, _) in docker.iter().chain([(kname.clone(), String::new())].iter()) {
        let releases = history(dir.path(), name, &kubeconfig);
        let digest = releases[0]["services"][0]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(digest.starts_with("sha256:"), "{name}: {}", releases[0]);
        digests.push(digest);
    }
    digests.dedup();
    assert_eq!(digests.len(), 1, "{digests:?}");
    let running = kube.kubectl([
        "-n",
        &ns,
        "get",
        "deployment/packfy-web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(running, format!("{image}@{}", digests[0]));
    let pulled = support::docker::docker(
        &docker[1].1,
        [
            "image",
            "inspect",
            "--format",
            "{{join .RepoDigests \",\"}}",
            &image,
        ],
    );
    assert!(
        String::from_utf8_lossy(&pulled.stdout).contains(&format!("{repo}@{}", digests[0])),
        "{}",
        String::from_utf8_lossy(&pulled.stdout)
    );
}

#[test]
fn an_image_several_engines_run_must_be_named_with_a_registry() {
    let Some(env) = TestEnv::with_docker_hosts(2) else {
        return;
    };
    let dir = RegionsDir::new();
    add_build_context(&env, &dir);
    let tag = region_name("n", 10);
    let docker: Vec<(String, String)> = env
        .docker_hosts
        .iter()
        .take(2)
        .enumerate()
        .map(|(i, h)| (format!("{tag}d{i}"), h.clone()))
        .collect();
    let local_name = format!("packfy-{tag}");
    for (name, host) in &docker {
        let region = docker_region(host).map_service("web", |s| s.image(&local_name).build("ctx"));
        dir.write(name, &region);
    }
    let out = run(
        dir.path(),
        &["deploy", "--region", "all", "--version", "v1"],
        &[],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains(&format!("{local_name}:v1 is built once")),
        "{err}"
    );
    assert!(err.contains("REGISTRY/NAME"), "{err}");
    assert!(!err.contains("Building"), "nothing is built: {err}");
    for (name, _) in &docker {
        assert!(versions_on(&docker, name).is_empty(), "{name}");
    }
}

/// The digests the release records of `region` on the Docker engine `host` pin for release
/// `id` (read from the record volumes' labels, every copy of it).
fn digests_recorded_on(host: &str, region: &str, id: &str) -> Vec<String> {
    let filter = format!("label=packfy.region={region}");
    let out = support::docker::docker(
        host,
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
    let mut digests = Vec::new();
    for volume in String::from_utf8_lossy(&out.stdout).lines() {
        let out = support::docker::docker(
            host,
            [
                "volume",
                "inspect",
                "--format",
                "{{index .Labels \"packfy.record\"}}",
                volume,
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let record: serde_json::Value = serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("record volume {volume} on {host}: {e}: {text}"));
        if record["id"] == id {
            digests.extend(all_digests(&record["services"]));
        }
    }
    digests
}

/// `services[].digest` of a record's services.
fn all_digests(services: &serde_json::Value) -> Vec<String> {
    services
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["digest"].as_str().unwrap_or("(none)").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The digests the release records (Secrets of type packfy.io/release.v1, gzip-compressed
/// JSON) in `namespace` pin for release `id`.
fn digests_recorded_in(kube: &support::KubeEnv, namespace: &str, id: &str) -> Vec<String> {
    use base64::Engine as _;
    use std::io::Read as _;
    let out = kube.kubectl([
        "-n",
        namespace,
        "get",
        "secrets",
        "--field-selector",
        "type=packfy.io/release.v1",
        "-o",
        "jsonpath={range .items[*]}{.data.release}{\"\\n\"}{end}",
    ]);
    let mut digests = Vec::new();
    for data in out.lines().filter(|l| !l.trim().is_empty()) {
        let gz = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .expect("a record's data is base64");
        let mut json = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut json)
            .expect("a record is gzip-compressed JSON");
        let record: serde_json::Value = serde_json::from_str(&json).unwrap();
        if record["release"]["id"] == id {
            digests.extend(all_digests(&record["release"]["services"]));
        }
    }
    digests
}

/// A fleet run over a region of three remote Docker hosts (reached over ssh, behind the lb's
/// HAProxy) in wave 1 and a Kubernetes region in wave 2: one build on the first host, one
/// push, the other hosts pull that digest and the cluster runs `image@digest`; every record
/// (on every host, and the cluster's Secret) pins it.
#[test]
fn a_fleet_of_a_three_host_region_and_a_kubernetes_region_runs_one_build_by_digest() {
    let Some(env) = TestEnv::get() else { return };
    let Some(hosts) = support::HostsEnv::get(&env) else {
        return;
    };
    let Some(kube) = support::KubeEnv::get() else {
        return;
    };
    let _hosts = hosts.sharing();
    let lane = hosts.lease_lane();
    let dir = RegionsDir::new();
    add_build_context(&env, &dir);
    let tag = region_name("x", 10);
    let repo = format!("{}/{tag}", env.registry);
    let (dname, kname, ns) = (format!("{tag}d"), format!("{tag}k"), unique_name("px"));
    let endpoints: Vec<String> = (0..3).map(|i| hosts.endpoint(i)).collect();
    let web = Service::new("web", &repo)
        .build("ctx")
        .replicas(3)
        .port(8080)
        .health(
            Health::http("/health")
                .interval("500ms")
                .timeout("400ms")
                .healthy_threshold(2)
                .unhealthy_threshold(3)
                .deadline("30s"),
        )
        .rollout(Rollout::new().bake("1s").drain_timeout("5s"))
        .stop_grace_period("2s");
    dir.write(
        &dname,
        &RegionFile::new()
            .docker_hosts(&endpoints)
            .currency("MXN")
            .service(web)
            .haproxy(
                &hosts.lb_runtime_api(),
                &format!("http://{}", lane.frontend),
                &[("web", &lane.backend)],
            ),
    );
    dir.write(
        &kname,
        &kubernetes_region(&kube.context, &ns).map_service("web", |s| s.image(&repo).build("ctx")),
    );
    dir.write(
        "_defaults",
        &RegionFile::new()
            .waves(&[&[&dname], &[&kname]])
            .on_failure("halt"),
    );
    let version = unique_name("v1");
    let image = format!("{repo}:{version}");
    struct Cleanup<'a> {
        sockets: &'a [String],
        region: &'a str,
        image: &'a str,
        kube: &'a support::KubeEnv,
        ns: &'a str,
    }
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            for s in self.sockets {
                support::remove_labelled(s, &format!("packfy.region={}", self.region));
                let _ = support::docker::docker_try(s, ["rmi", "-f", "--no-prune", self.image]);
            }
            let _ = self
                .kube
                .kubectl_try(["delete", "namespace", self.ns, "--wait=false"]);
        }
    }
    let _cleanup = Cleanup {
        sockets: &hosts.sockets[..3],
        region: &dname,
        image: &image,
        kube: &kube,
        ns: &ns,
    };
    let cli = |args: &[&str]| {
        let mut c = support::cli(dir.path(), args);
        c.env("KUBECONFIG", &kube.kubeconfig)
            .env("PACKFY_SSH_CONFIG", &hosts.ssh_config)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("DOCKER_HOST");
        support::run_cli(&mut c, &[])
    };

    let out = cli(&["deploy", "--region", "all", "--version", &version]);
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert_eq!(err.matches("Building").count(), 1, "one build: {err}");
    assert_eq!(err.matches("Pushing").count(), 1, "one push: {err}");

    // The releases of both regions, each pinning one digest.
    let history_of = |region: &str| {
        let out = cli(&["-o", "json", "history", "--region", region]);
        assert_eq!(code(&out), 0, "history {region}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array().cloned().unwrap_or_default()
    };
    let (dh, kh) = (history_of(&dname), history_of(&kname));
    assert_eq!(dh.len(), 1, "{dh:?}");
    assert_eq!(kh.len(), 1, "{kh:?}");
    for h in [&dh[0], &kh[0]] {
        assert_eq!(h["version"], version.as_str(), "{h}");
        assert_eq!(h["outcome"], "succeeded", "{h}");
    }
    let digest = dh[0]["services"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(digest.starts_with("sha256:"), "{}", dh[0]);
    assert_eq!(kh[0]["services"][0]["digest"], digest.as_str(), "{}", kh[0]);

    // Every host runs the same image (one ID), known by the registry's digest, on the
    // region's 3 replicas spread one per host.
    let inspect = |socket: &str, format: &str, what: &str| {
        let out = support::docker::docker(socket, ["inspect", "--format", format, what]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let id = inspect(&hosts.sockets[0], "{{.Id}}", &image);
    assert!(id.starts_with("sha256:"), "{id}");
    for (h, socket) in hosts.sockets[..3].iter().enumerate() {
        assert_eq!(inspect(socket, "{{.Id}}", &image), id, "image on host {h}");
        let repo_digests = inspect(socket, "{{join .RepoDigests \",\"}}", &image);
        assert!(
            repo_digests.contains(&format!("{repo}@{digest}")),
            "host {h}: {repo_digests}"
        );
        assert_eq!(
            support::running_versions(socket, &dname),
            vec![version.clone()],
            "host {h}"
        );
        let filter = format!("label=packfy.region={dname}");
        let ps = support::docker::docker(socket, ["ps", "-q", "--filter", filter.as_str()]);
        for c in String::from_utf8_lossy(&ps.stdout).lines() {
            assert_eq!(
                inspect(socket, "{{.Image}}", c),
                id,
                "container {c} on host {h}"
            );
        }
        // Every host keeps the record, pinning that digest.
        let recorded = digests_recorded_on(socket, &dname, dh[0]["id"].as_str().unwrap());
        assert!(!recorded.is_empty(), "no record on host {h}");
        assert!(
            recorded.iter().all(|d| d == &digest),
            "host {h}: {recorded:?}"
        );
    }

    // The cluster runs the image by that digest, and its record (a Secret) pins it.
    let running = kube.kubectl([
        "-n",
        &ns,
        "get",
        "deployment/packfy-web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image} {.status.readyReplicas}",
    ]);
    assert_eq!(running, format!("{image}@{digest} 3"));
    let recorded = digests_recorded_in(&kube, &ns, kh[0]["id"].as_str().unwrap());
    assert_eq!(recorded, vec![digest.clone()]);
    eprintln!(
        "one build, one push: {} on 3 hosts and Deployment/packfy-web in {ns}",
        &digest[..19]
    );
}
