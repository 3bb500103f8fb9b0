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
        let r = Region {
            name: region_name("kb", 20),
            namespace: unique_name("pkb").chars().take(50).collect::<String>(),
            dir: RegionsDir::new(),
            k: k.clone(),
            kubeconfig: k.kubeconfig.clone(),
        };
        r.write(delay, auto_promote, None);
        r
    }

    /// (Re)writes the region file: `delay`, `auto_promote`, and `analysis` (a YAML flow
    /// mapping, the pre-promotion analysis) when given.
    fn write(&self, delay: &str, auto_promote: bool, analysis: Option<&str>) {
        let mut rollout = Rollout::new()
            .max_surge(2)
            .max_unavailable(0)
            .progress_deadline("20s")
            .blue_green()
            .set("scale_down_delay", delay);
        if auto_promote {
            rollout = rollout.set("auto_promote", "true");
        }
        if let Some(a) = analysis {
            rollout = rollout.analysis(a);
        }
        let web = Service::new("web", "sample")
            .replicas(3)
            .port(8080)
            .health(fixture::Health::http("/health"))
            .rollout(rollout);
        let file = RegionFile::kubernetes(&self.k.context, &self.namespace)
            .app("packfy")
            .currency("USD")
            .service(web);
        self.dir.write(&self.name, &file);
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

    /// The blue-green phase `status` shows (`preview`, `promoted`, …), or null.
    fn phase(&self) -> serde_json::Value {
        self.status_json()[0]["blue_green"]["phase"].clone()
    }

    /// Who holds the region's lock (the Leases of the namespace): empty when nobody does.
    fn lock_holders(&self) -> String {
        self.k
            .kubectl([
                "-n",
                self.namespace.as_str(),
                "get",
                "leases",
                "-o",
                "jsonpath={range .items[*]}{.spec.holderIdentity}{end}",
            ])
            .trim()
            .to_string()
    }
}

/// Waits until `p` (the promoting process) has switched production to the preview and let
/// the lock go — it is then waiting out `scale_down_delay` — and SIGKILLs it there.
fn kill_inside_the_window(r: &Region, p: support::Spawned) {
    support::wait_until(
        Duration::from_secs(90),
        "the promotion, the lock let go",
        || r.phase() == "promoted" && r.lock_holders().is_empty(),
    );
    p.signal("KILL");
    let out = p.wait();
    assert_eq!(support::signal_of(&out), Some(9), "{}", text(&out));
    assert!(text(&out).contains("Keeping"), "{}", text(&out));
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

#[test]
fn a_promoting_process_killed_inside_the_window_leaves_it_to_the_next_rollback() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "10m", false);
    assert_eq!(code(&r.deploy("v1")), 0);
    let out = r.deploy("v2");
    assert_eq!(code(&out), 0, "{}", text(&out));
    let promote = support::spawn_cli(&mut r.cmd(&["promote", "--region", &r.name]), &[]);
    kill_inside_the_window(&r, promote);
    // Nothing ended the window: production selects the new pods, the old set still runs.
    assert_eq!(r.selected_images("packfy-web"), ["sample:v2"]);
    assert_eq!(r.stable(), Some((3, 3, "sample:v1".into())));
    assert_eq!(r.preview(), Some((3, 3, "sample:v2".into())));
    let sets = r.replicasets();

    // The rollback of another process (no stuck lock: it takes it) is the selector switch.
    let out = r.run(&["rollback", "--region", &r.name]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("Switching back"), "{}", text(&out));
    assert_eq!(r.selected_images("packfy-web"), ["sample:v1"]);
    assert_eq!(r.stable(), Some((3, 3, "sample:v1".into())));
    assert_eq!(r.preview(), None);
    assert!(!r.service_exists("packfy-web-preview"));
    assert!(r.replicasets() <= sets, "a switch back makes no ReplicaSet");
    let sel = r.jsonpath("service/packfy-web", "{.spec.selector}");
    assert!(
        !sel.contains("pod-template-hash") && !sel.contains("track"),
        "{sel}"
    );
    assert_eq!(r.lock_holders(), "", "the lock is free after the rollback");
    let h = r.history();
    assert_eq!(h[0]["version"], "v1", "{}", h[0]);
    assert_eq!(h[0]["outcome"], "succeeded", "{}", h[0]);
    assert!(r.status_json()[0]["blue_green"].is_null(), "no window left");
}

#[test]
fn a_deploying_process_killed_inside_the_window_leaves_it_to_the_next_deploy() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "10m", true);
    assert_eq!(code(&r.deploy("v1")), 0);
    // auto_promote: the deploy promotes, then waits out the window itself.
    let deploy = support::spawn_cli(
        &mut r.cmd(&["deploy", "--region", &r.name, "--version", "v2"]),
        &[],
    );
    kill_inside_the_window(&r, deploy);
    assert_eq!(r.selected_images("packfy-web"), ["sample:v2"]);
    assert_eq!(r.stable(), Some((3, 3, "sample:v1".into())));

    // The next deploy (its preview waits for promote) ends that window first: the stable
    // Deployment takes v2, the old preview goes; then v3's preview starts beside v2.
    r.write("10m", false, None);
    let out = r.deploy("v3");
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    let (scaled, previewed) = (t.find("Scaling down"), t.find("Preview"));
    assert!(
        scaled.is_some() && previewed.is_some() && scaled < previewed,
        "the window ends before the next preview: {t}"
    );
    assert_eq!(r.stable(), Some((3, 3, "sample:v2".into())));
    assert_eq!(r.preview(), Some((3, 3, "sample:v3".into())));
    assert_eq!(r.selected_images("packfy-web"), ["sample:v2"]);
    assert_eq!(r.selected_images("packfy-web-preview"), ["sample:v3"]);
    let h = r.history();
    let v2 = h
        .iter()
        .find(|x| x["version"] == "v2")
        .expect("v2's record");
    assert_eq!(v2["outcome"], "succeeded", "{v2}");
    assert!(v2.to_string().contains("scaled_down"), "{v2}");
    // The v3 preview holds the lock for its promote, as any preview does.
    assert_eq!(r.phase(), "preview");
    let out = r.steer("abort");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.lock_holders(), "");
    assert_eq!(r.selected_images("packfy-web"), ["sample:v2"]);
}

/// A pre-promotion analysis asking the real Prometheus of the test environment a query whose
/// value is known: the scrape targets up (HAProxy's exporter: 1).
fn up_analysis(prom: &str, max: f64) -> String {
    format!(
        "{{duration: 3s, prometheus: {{url: '{prom}', query: 'sum(up{{job=\"haproxy\"}})', max: {max}}}}}"
    )
}

#[test]
fn a_failed_prometheus_pre_promotion_analysis_aborts_with_exit_3_and_production_untouched() {
    let Some(k) = KubeEnv::get() else { return };
    let Some(prom) = support::prometheus_url() else {
        return;
    };
    let r = Region::new(&k, "30s", true);
    assert_eq!(code(&r.deploy("v1")), 0);
    r.write("30s", true, Some(&up_analysis(&prom, 0.5)));
    let out = r.deploy("v2");
    let t = text(&out);
    assert_eq!(code(&out), 3, "{t}");
    assert!(t.contains("analysis failed"), "{t}");
    assert_eq!(r.preview(), None);
    assert!(!r.service_exists("packfy-web-preview"));
    assert_eq!(r.stable(), Some((3, 3, "sample:v1".into())));
    assert_eq!(r.selected_images("packfy-web"), ["sample:v1"]);
    let sel = r.jsonpath("service/packfy-web", "{.spec.selector}");
    assert!(!sel.contains("pod-template-hash"), "{sel}");
    let last = r.history().first().cloned().unwrap();
    assert_eq!(last["outcome"], "rolled_back", "{last}");
    let rec = last.to_string();
    assert!(
        rec.contains("sum(up{job=\\\"haproxy\\\"})") && rec.contains("= 1 is above max 0.5"),
        "the record names the condition and its value: {last}"
    );
    assert_eq!(r.lock_holders(), "");
}

#[test]
fn a_passing_prometheus_pre_promotion_analysis_promotes() {
    let Some(k) = KubeEnv::get() else { return };
    let Some(prom) = support::prometheus_url() else {
        return;
    };
    let r = Region::new(&k, "2s", true);
    assert_eq!(code(&r.deploy("v1")), 0);
    r.write("2s", true, Some(&up_analysis(&prom, 5.0)));
    let out = r.deploy("v2");
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    let (passed, switched) = (t.find("Passed"), t.find("Switched"));
    assert!(
        passed.is_some() && passed < switched,
        "analysed, then switched: {t}"
    );
    assert!(t.contains("= 1"), "the measured value is shown: {t}");
    assert_eq!(r.stable(), Some((3, 3, "sample:v2".into())));
    assert_eq!(r.preview(), None);
    assert_eq!(r.selected_images("packfy-web"), ["sample:v2"]);
    let last = r.history().first().cloned().unwrap();
    assert_eq!(last["outcome"], "succeeded", "{last}");
}

#[test]
fn a_promoting_process_killed_as_soon_as_it_switched_is_taken_back_by_the_next_rollback() {
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "10m", false);
    assert_eq!(code(&r.deploy("v1")), 0);
    assert_eq!(code(&r.deploy("v2")), 0);
    let promote = support::spawn_cli(&mut r.cmd(&["promote", "--region", &r.name]), &[]);
    // Killed the moment production selects the preview pods: wherever it is then (recording
    // the release, letting the lock go, or already waiting out the window).
    support::wait_until(Duration::from_secs(60), "the switch", || {
        r.jsonpath("service/packfy-web", "{.spec.selector}")
            .contains("preview")
    });
    promote.signal("KILL");
    let out = promote.wait();
    assert_eq!(support::signal_of(&out), Some(9), "{}", text(&out));

    // The next rollback takes it back either way: an interrupted release restored, or a
    // promoted one switched back. A lock the killed process held stops nobody.
    let held = r.lock_holders();
    let out = r.run(&["rollback", "--region", &r.name]);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert_eq!(r.selected_images("packfy-web"), ["sample:v1"]);
    assert_eq!(r.stable(), Some((3, 3, "sample:v1".into())));
    assert_eq!(r.preview(), None);
    assert!(!r.service_exists("packfy-web-preview"));
    let sel = r.jsonpath("service/packfy-web", "{.spec.selector}");
    assert!(
        !sel.contains("pod-template-hash") && !sel.contains("track"),
        "{sel}"
    );
    assert_eq!(r.lock_holders(), "");
    eprintln!(
        "promote killed right after the switch (lock held by {:?}): the rollback {}",
        held,
        if t.contains("Switching back") {
            "switched back (the release was recorded promoted)"
        } else {
            "restored an interrupted release"
        }
    );
    // And the region deploys again.
    let out = r.deploy("v3");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(r.preview(), Some((3, 3, "sample:v3".into())));
}

/// Watches the ready addresses behind a Service (its Endpoints, which the controller fills
/// from the ready pods its selector selects) while it lives: `kubectl get --watch` prints the
/// count at every change, so a moment with none is seen however short.
struct Endpoints {
    child: std::process::Child,
    seen: std::thread::JoinHandle<Vec<usize>>,
}

impl Endpoints {
    fn watch(r: &Region, service: &str) -> Endpoints {
        use std::io::BufRead;
        let mut child = Command::new(&r.k.kubectl)
            .arg("--kubeconfig")
            .arg(&r.k.kubeconfig)
            .args([
                "-n",
                &r.namespace,
                "get",
                &format!("endpoints/{service}"),
                "--watch",
            ])
            .args(["-o", "jsonpath={.subsets[*].addresses[*].ip}{\"\\n\"}"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("kubectl runs");
        let stdout = child.stdout.take().unwrap();
        let seen = std::thread::spawn(move || {
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .map(|l| l.split_whitespace().count())
                .collect()
        });
        Endpoints { child, seen }
    }

    /// Stops; the number of ready addresses at the start and after each change.
    fn finish(mut self) -> Vec<usize> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.seen.join().unwrap()
    }
}

#[test]
fn a_window_end_killed_after_the_stable_set_took_the_new_release_is_finished_by_the_next_rollback()
{
    let Some(k) = KubeEnv::get() else { return };
    let r = Region::new(&k, "10m", false);
    assert_eq!(code(&r.deploy("v1")), 0);
    assert_eq!(code(&r.deploy("v2")), 0);
    let promote = support::spawn_cli(&mut r.cmd(&["promote", "--region", &r.name]), &[]);
    kill_inside_the_window(&r, promote);
    // What the end of the window leaves when it is killed after its first step (the stable
    // Deployment takes the new template): the old pods gone, the record still `promoted`.
    let ns = r.namespace.as_str();
    k.kubectl([
        "-n",
        ns,
        "set",
        "image",
        "deployment/packfy-web",
        "*=sample:v2",
    ]);
    k.kubectl([
        "-n",
        ns,
        "rollout",
        "status",
        "deployment/packfy-web",
        "--timeout=60s",
    ]);
    assert_eq!(r.phase(), "promoted");

    // A switch back would pin production to pods that no longer exist. The rollback finishes
    // the window's end first, then rolls the stable Deployment back: production always has
    // ready pods behind it.
    let endpoints = Endpoints::watch(&r, "packfy-web");
    std::thread::sleep(Duration::from_secs(1)); // the watch's first line: what is there now
    let out = r.run(&["rollback", "--region", &r.name]);
    std::thread::sleep(Duration::from_millis(500));
    let seen = endpoints.finish();
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(seen.len() >= 2, "the endpoints never changed: {seen:?}");
    assert!(
        seen.iter().all(|&n| n > 0),
        "Service/packfy-web had no ready pod behind it during the rollback: {seen:?}"
    );
    assert!(
        t.contains("Not switching") && !t.contains("Switching back"),
        "{t}"
    );
    assert!(t.contains("Scaling down"), "{t}");
    assert_eq!(r.stable(), Some((3, 3, "sample:v1".into())));
    assert_eq!(r.selected_images("packfy-web"), ["sample:v1"]);
    assert_eq!(r.preview(), None);
    assert!(!r.service_exists("packfy-web-preview"));
    eprintln!(
        "rollback after an interrupted window end: {} changes of the endpoints, never empty (min {})",
        seen.len(),
        seen.iter().min().unwrap()
    );
}
