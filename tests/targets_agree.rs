//! The settings every target shares mean the same on Docker and on Kubernetes: one scenario,
//! run once against a Docker region and once against a Kubernetes region.
//!
//! - `keep_releases: 2` leaves two release records after four deploys;
//! - a lock held by hand shows in `plan` and `status`, and a deploy meanwhile exits 5 naming
//!   the holder;
//! - a failing release sends `start`, then `failure` and `rollback` after restoring (the
//!   failure notice says what serves again);
//! - `status -o json` has the same keys.

mod support;

use std::process::Output;
use std::time::Duration;

use support::fixture::{
    region_name, Health, Notification, RegionFile, RegionsDir, Rollout, Service,
};
use support::webhook::{Receiver, Reply};
use support::{code, stderr, text, unique_name, KubeEnv, TestEnv};

/// One region on one target, ready to be driven through the CLI.
struct Region {
    dir: RegionsDir,
    name: String,
    kubeconfig: Option<std::path::PathBuf>,
    cleanup: Box<dyn Fn()>,
}

impl Region {
    /// Writes `file` as a region of its own, with what the scenario needs of every target:
    /// `keep_releases: 2` and the notices sent to `receiver`.
    fn write(file: RegionFile, receiver: &Receiver) -> (RegionsDir, String) {
        let dir = RegionsDir::new();
        let name = region_name("agree", 14);
        let file = file
            .currency("USD")
            .keep_releases(2)
            .notification(Notification::generic(&receiver.url("/hook")));
        dir.write(&name, &file);
        (dir, name)
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut full = vec!["--env", "production"];
        full.extend_from_slice(args);
        let mut cmd = support::cli(self.dir.path(), &full);
        if let Some(k) = &self.kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        support::run_cli(&mut cmd, &[])
    }

    fn deploy(&self, version: &str) -> Output {
        self.run(&["deploy", "--region", &self.name, "--version", version])
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        (self.cleanup)()
    }
}

fn docker_region(env: &TestEnv, receiver: &Receiver) -> Region {
    let host = env.docker_host.clone();
    let web = Service::new("web", "packfy-sample")
        .replicas(2)
        .port(8080)
        .health(
            Health::http("/health")
                .start_period("1s")
                .interval("300ms")
                .timeout("250ms")
                .deadline("8s"),
        )
        .rollout(Rollout::new().bake("0s"))
        .stop_grace_period("1s");
    let (dir, name) = Region::write(
        RegionFile::docker(&host).traffic_none().service(web),
        receiver,
    );
    let label = format!("packfy.region={name}");
    Region {
        dir,
        name,
        kubeconfig: None,
        cleanup: Box::new(move || support::remove_labelled(&host, &label)),
    }
}

fn kube_region(kube: &KubeEnv, receiver: &Receiver) -> Region {
    let ns = unique_name("agree");
    let web = Service::new("web", "sample")
        .replicas(2)
        .port(8080)
        .rollout(Rollout::new().progress_deadline("60s").bake("0s"));
    let (dir, name) = Region::write(
        RegionFile::kubernetes(&kube.context, &ns).service(web),
        receiver,
    );
    let (kubectl, kubeconfig) = (kube.kubectl.clone(), kube.kubeconfig.clone());
    Region {
        dir,
        name,
        kubeconfig: Some(kube.kubeconfig.clone()),
        cleanup: Box::new(move || {
            let _ = std::process::Command::new(&kubectl)
                .env("KUBECONFIG", &kubeconfig)
                .args(["delete", "namespace", &ns, "--wait=false"])
                .output();
        }),
    }
}

/// The scenario; `bad` is a version that never becomes ready on this target.
fn scenario(r: &Region, versions: &[String; 4], bad: &str, receiver: &Receiver) {
    // keep_releases: 2 → two records after four deploys, the newest ones
    for v in versions {
        let out = r.deploy(v);
        assert_eq!(code(&out), 0, "deploy {v}: {}", stderr(&out));
    }
    let out = r.run(&["-o", "json", "history", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r4", "r3"], "{history}");

    // a lock by hand: plan and status say so, a deploy exits 5 naming the holder
    let out = r.run(&["lock", "--region", &r.name, "--reason", "db maintenance"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = r.run(&["plan", "--region", &r.name, "--version", &versions[0]]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        text(&out).contains("note: locked by tester"),
        "{}",
        text(&out)
    );
    let out = r.run(&["-o", "json", "status", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&str> = status[0]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    for k in [
        "region",
        "environment",
        "endpoint",
        "release",
        "version",
        "lock",
        "interrupted",
        "target",
        "services",
    ] {
        assert!(keys.contains(&k), "status has no {k}: {status}");
    }
    assert_eq!(status[0]["release"], "r4");
    assert!(
        status[0]["lock"]
            .as_str()
            .unwrap()
            .contains("db maintenance"),
        "{status}"
    );
    let out = r.deploy(&versions[0]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{}/production is locked by tester", r.name)),
        "{}",
        stderr(&out)
    );
    let out = r.run(&["unlock", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // a failing release: start, then failure and rollback after restoring
    let before = receiver.requests().len();
    let out = r.deploy(bad);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let got = receiver.wait_for(before + 3, Duration::from_secs(30));
    let notices: Vec<serde_json::Value> = got[before..].iter().map(|q| q.json()).collect();
    let kinds: Vec<&str> = notices
        .iter()
        .map(|n| n["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["start", "failure", "rollback"], "{notices:?}");
    let failure = notices[1]["detail"].as_str().unwrap();
    assert!(failure.ends_with("; r4 serves again"), "{failure}");
    let out = r.run(&["-o", "json", "status", "--region", &r.name]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["release"], "r4", "{status}");
}

fn versions(tag: &str) -> [String; 4] {
    [1, 2, 3, 4].map(|i| format!("{tag}v{i}"))
}

#[test]
fn docker_regions_keep_lock_and_notify_as_the_contract_says() {
    let Some(env) = TestEnv::get() else { return };
    let receiver = Receiver::start(&[Reply::Status(200)]);
    let r = docker_region(&env, &receiver);
    let vs = versions(&r.name);
    let _images: Vec<_> = vs
        .iter()
        .map(|v| env.build_sample(&env.docker_host, v, &[]))
        .collect();
    let bad = format!("{}bad", r.name);
    let _bad = env.build_sample(&env.docker_host, &bad, &[("NEVER_HEALTHY", "1")]);
    scenario(&r, &vs, &bad, &receiver);
}

#[test]
fn kubernetes_regions_keep_lock_and_notify_as_the_contract_says() {
    let Some(kube) = KubeEnv::get() else { return };
    let receiver = Receiver::start(&[Reply::Status(200)]);
    let r = kube_region(&kube, &receiver);
    let vs = versions("k");
    scenario(&r, &vs, "v5-crashloop", &receiver);
}
