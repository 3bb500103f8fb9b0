//! Blue-green on a Kubernetes region: the new set is a `<name>-preview` Deployment at full
//! replicas behind a preview Service; the production Service's selector is pinned to the old
//! ReplicaSet's pod-template-hash until promotion switches it to the preview pods. Against the
//! real control plane of the test environment (kube-apiserver, controllers, kwok's nodes):
//! which pods each Service selects is read back with kubectl.

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
    /// `regions/<name>.yaml`: the sample app, 3 replicas, a blue-green with
    /// `scale_down_delay` (and `auto_promote`), in a namespace of its own.
    fn new(k: &KubeEnv, delay: &str, auto_promote: bool) -> Region {
        let namespace = unique_name("pkb").chars().take(50).collect::<String>();
        let mut rollout = Rollout::new()
            .max_surge(2)
            .max_unavailable(0)
            .progress_deadline("20s")
            .blue_green()
            .set("scale_down_delay", delay);
        if auto_promote {
            rollout = rollout.set("auto_promote", "true");
        }
        let web = Service::new("web", "sample")
            .replicas(3)
            .port(8080)
            .health(fixture::Health::http("/health"))
            .rollout(rollout);
        let file = RegionFile::kubernetes(&k.context, &namespace)
            .app("packfy")
            .currency("USD")
            .service(web);
        let r = Region {
            name: region_name("kb", 20),
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

    fn preview(&self) -> Option<(u32, u32, String)> {
        self.deployment("packfy-web-preview")
    }

    /// The images of the pods a Service's selector selects now (sorted, deduplicated).
    fn selected_images(&self, service: &str) -> Vec<String> {
        let sel = self.jsonpath(&format!("service/{service}"), "{.spec.selector}");
        let sel: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
        let labels: Vec<String> = sel
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect();
        let out = self.k.kubectl([
            "-n",
            self.namespace.as_str(),
            "get",
            "pods",
            "-l",
            &labels.join(","),
            "-o",
            "jsonpath={range .items[*]}{.spec.containers[0].image} {end}",
        ]);
        let mut v: Vec<String> = out.split_whitespace().map(String::from).collect();
        assert!(!v.is_empty(), "Service/{service} selects no pod ({sel:?})");
        v.sort();
        v.dedup();
        v
    }

    fn replicasets(&self) -> usize {
        self.k
            .kubectl([
                "-n",
                self.namespace.as_str(),
                "get",
                "rs",
                "-l",
                "app.kubernetes.io/component=web",
                "--no-headers",
            ])
            .lines()
            .count()
    }

    fn service_exists(&self, name: &str) -> bool {
        let out = self.k.kubectl_try([
            "-n",
            self.namespace.as_str(),
            "get",
            &format!("service/{name}"),
        ]);
        out.status.success()
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
fn preview_service_then_promote_from_another_process_then_rollback_by_selector() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "30s", false);
    // The first release has nothing to switch from: it rolls out.
    let out = r.deploy("v1");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.stable(), Some((3, 3, "sample:v1".into())));

    let out = r.run(&["plan", "--region", &r.name, "--version", "v2"]);
    assert!(
        text(&out).contains("strategy blue_green")
            && text(&out).contains("Service/packfy-web-preview"),
        "{}",
        text(&out)
    );

    // The new set at full replicas beside the old; the preview Service selects only the new
    // pods, the production one only the old; the deploy waits for promote.
    let out = r.deploy("v2");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("until promote"), "{}", text(&out));
    assert_eq!(r.preview(), Some((3, 3, "sample:v2".into())));
    assert_eq!(r.stable(), Some((3, 3, "sample:v1".into())));
    assert_eq!(r.selected_images("packfy-web-preview"), ["sample:v2"]);
    assert_eq!(r.selected_images("packfy-web"), ["sample:v1"]);
    let st = r.status_json();
    let bg = &st[0]["blue_green"];
    assert_eq!(bg["phase"], "preview", "{st}");
    assert_eq!(
        bg["services"][0]["preview_service"], "packfy-web-preview",
        "{st}"
    );

    // The preview holds the lock: a second deploy is exit 5.
    let out = r.deploy("v3");
    assert_eq!(code(&out), 5, "{}", text(&out));

    // Another process promotes: the production Service selects the new pods at once; that
    // process then keeps the old set for the window.
    let promote = support::spawn_cli(&mut r.cmd(&["promote", "--region", &r.name]), &[]);
    support::wait_until(Duration::from_secs(60), "the promotion", || {
        r.status_json()[0]["blue_green"]["phase"] == "promoted"
    });
    assert_eq!(r.selected_images("packfy-web"), ["sample:v2"]);
    assert_eq!(r.stable(), Some((3, 3, "sample:v1".into())), "old set kept");
    let sets = r.replicasets();

    // Rollback inside the window: the selector back to the old pods, no new ReplicaSet.
    let out = r.run(&["rollback", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("Switching back"), "{}", text(&out));
    assert_eq!(r.selected_images("packfy-web"), ["sample:v1"]);
    assert_eq!(r.stable(), Some((3, 3, "sample:v1".into())));
    assert_eq!(r.preview(), None);
    assert!(!r.service_exists("packfy-web-preview"));
    assert!(
        r.replicasets() <= sets,
        "a rollback by selector makes no ReplicaSet"
    );
    let sel = r.jsonpath("service/packfy-web", "{.spec.selector}");
    assert!(
        !sel.contains("pod-template-hash") && !sel.contains("track"),
        "{sel}"
    );

    // The promoting process finds the rollback came first and leaves the old set.
    let out = promote.wait();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("Kept"), "{}", text(&out));
    assert_eq!(r.stable(), Some((3, 3, "sample:v1".into())));
}

#[test]
fn abort_deletes_the_preview_set_and_service() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "30s", false);
    assert_eq!(code(&r.deploy("v1")), 0);
    let out = r.deploy("v2");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.preview(), Some((3, 3, "sample:v2".into())));
    assert!(r.service_exists("packfy-web-preview"));

    let out = r.steer("abort");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.preview(), None);
    assert!(!r.service_exists("packfy-web-preview"));
    assert_eq!(r.stable(), Some((3, 3, "sample:v1".into())));
    assert_eq!(r.selected_images("packfy-web"), ["sample:v1"]);
    let sel = r.jsonpath("service/packfy-web", "{.spec.selector}");
    assert!(!sel.contains("pod-template-hash"), "{sel}");
    assert_eq!(r.history().first().unwrap()["outcome"], "rolled_back");
}

#[test]
fn auto_promote_switches_then_the_old_set_goes_after_the_window() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "2s", true);
    assert_eq!(code(&r.deploy("v1")), 0);
    let out = r.deploy("v2");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("Scaled down"), "{}", text(&out));
    // The stable Deployment took the new template; the preview set and Service are gone and
    // the production Service selects as rendered.
    assert_eq!(r.stable(), Some((3, 3, "sample:v2".into())));
    assert_eq!(r.preview(), None);
    assert!(!r.service_exists("packfy-web-preview"));
    assert_eq!(r.selected_images("packfy-web"), ["sample:v2"]);
    let sel = r.jsonpath("service/packfy-web", "{.spec.selector}");
    assert!(
        !sel.contains("pod-template-hash") && !sel.contains("track"),
        "{sel}"
    );
    let h = r.history();
    assert_eq!(h.first().unwrap()["outcome"], "succeeded", "{}", h[0]);
    // The next deploy plans against a clean region.
    let out = r.deploy("v3");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.stable(), Some((3, 3, "sample:v3".into())));
}

#[test]
fn a_preview_that_never_gets_ready_is_aborted_with_exit_3_and_nothing_switched() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "30s", true);
    assert_eq!(code(&r.deploy("v1")), 0);
    let out = r.deploy("v2-never-ready");
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert_eq!(r.preview(), None);
    assert!(!r.service_exists("packfy-web-preview"));
    assert_eq!(r.stable(), Some((3, 3, "sample:v1".into())));
    assert_eq!(r.selected_images("packfy-web"), ["sample:v1"]);
    let sel = r.jsonpath("service/packfy-web", "{.spec.selector}");
    assert!(!sel.contains("pod-template-hash"), "{sel}");
    assert_eq!(r.history().first().unwrap()["outcome"], "rolled_back");
}
