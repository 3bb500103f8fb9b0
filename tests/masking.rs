//! Secret masking end to end (issue 11): a secret value, and its URL-encoded and base64 forms,
//! never leaves the process in clear — neither in what packfy-deploy writes itself nor in what
//! it relays (a failing container's last log lines, hook output, webhook notices, the release
//! records stored on the target). Each test also checks that the relayed text DID arrive
//! (masked), so it cannot pass by relaying nothing.
//!
//! The app of the Docker test is the sample app with `PRINT_ENV=1` (it prints its environment at
//! start, as many apps do) and `NEVER_HEALTHY=1`, both set through the service's environment.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::fixture::{
    region_name, Health, Notification, RegionFile, RegionsDir, Rollout, Service,
};
use support::webhook::{Receiver, Reply};
use support::{code, docker, text, unique_name, KubeEnv, TestEnv};

/// The variable of the CLI's environment the regions' secret reference names.
const SECRET_VAR: &str = "PACKFY_MASK_SECRET";

/// What the regions' secret variable refers to: `env:` and [`SECRET_VAR`].
fn secret_ref() -> String {
    format!("env:{SECRET_VAR}")
}

/// A secret of this test's own: random-looking, with characters that URL-encoding changes.
fn new_secret() -> String {
    format!("p@ss:w/rd+{}=&%Zq", unique_name("mk").replace('-', ""))
}

/// Every byte outside RFC 3986's unreserved characters as `%XX` (upper-case hex).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Base64 (RFC 4648) without padding, standard or URL-safe alphabet.
fn base64(s: &str, url_safe: bool) -> String {
    let alphabet: &[u8] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
        }
    }
    out
}

/// The forms of `secret` that must appear nowhere: raw, URL-encoded, base64 in both alphabets
/// (unpadded, so padded forms are caught too), each named for the failure message.
fn forms(secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("raw", secret.to_string()),
        ("URL-encoded", url_encode(secret)),
        ("base64", base64(secret, false)),
        ("base64 (URL-safe)", base64(secret, true)),
    ]
}

/// Fails the test naming `what` when `haystack` shows a form of `secret`.
fn assert_masked(what: &str, haystack: &str, secret: &str) {
    for (form, value) in forms(secret) {
        assert!(
            !haystack.contains(&value),
            "the secret ({form}: {value}) appeared in {what}:\n{haystack}"
        );
    }
}

/// A region of its own in a temporary regions directory; its engine objects are removed on drop.
struct Region {
    name: String,
    dir: RegionsDir,
    host: String,
    secret: String,
}

impl Region {
    fn new(host: &str) -> Region {
        Region {
            name: region_name("mask", 20),
            dir: RegionsDir::new(),
            host: host.to_string(),
            secret: new_secret(),
        }
    }

    /// The region: the sample app, one replica, no traffic layer, fast health checks; a test
    /// adds the service's environment (with [`RegionFile::map_service`]), hooks, notifications.
    fn file(&self) -> RegionFile {
        let web = Service::new("web", "packfy-sample")
            .replicas(1)
            .port(8080)
            .health(
                Health::http("/health")
                    .start_period("1s")
                    .interval("500ms")
                    .timeout("500ms")
                    .healthy_threshold(1)
                    .unhealthy_threshold(2)
                    .deadline("30s"),
            )
            .rollout(Rollout::new().bake("1s"))
            .stop_grace_period("2s");
        RegionFile::docker(&self.host)
            .currency("USD")
            .keep_releases(3)
            .traffic_none()
            .service(web)
    }

    /// Writes `file` as the region's file.
    fn write(&self, file: &RegionFile) {
        self.dir.write(&self.name, file);
    }

    /// The CLI with the secret in its environment.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = support::cli(self.dir.path(), args);
        c.env(SECRET_VAR, &self.secret);
        c
    }

    /// Runs the command (checking only for panics: the secret checks are the tests' own).
    fn run(&self, args: &[&str]) -> Output {
        support::run_cli(&mut self.cmd(args), &[])
    }

    fn deploy(&self, global: &[&str], version: &str) -> Output {
        let deploy = ["deploy", "--region", &self.name, "--version", version];
        self.run(&[global, &deploy[..]].concat())
    }

    /// `docker volume inspect` of every volume of this region (release records, lock): its
    /// text, then every string in it decoded (Docker's JSON writes `&` as `\u0026`, which would
    /// hide a secret from a plain text search).
    fn volumes(&self) -> Vec<(String, String)> {
        let filter = format!("label=packfy.region={}", self.name);
        let ls = docker(&self.host, ["volume", "ls", "-q", "--filter", &filter]);
        String::from_utf8_lossy(&ls.stdout)
            .lines()
            .map(|v| {
                let out = docker(&self.host, ["volume", "inspect", v]);
                let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                strings(&json, &mut text);
                (v.to_string(), text)
            })
            .collect()
    }
}

/// Appends every string (and object key) in `v` to `out`, one a line.
fn strings(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::String(s) => {
            out.push('\n');
            out.push_str(s);
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        serde_json::Value::Object(map) => {
            for (k, val) in map {
                out.push('\n');
                out.push_str(k);
                strings(val, out);
            }
        }
        _ => {}
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        support::remove_labelled(&self.host, &format!("packfy.region={}", self.name));
    }
}

/// A release whose app prints its environment (the secret included) and never turns healthy:
/// the deploy rolls back (exit 3) and relays the container's last log lines — masked — to the
/// terminal (human, `-o json`, `-v`), the release record, `history` and the webhook.
#[test]
fn a_failing_app_that_prints_its_environment_shows_no_secret_anywhere() {
    let Some(env) = TestEnv::get() else { return };
    let receiver = Receiver::start(&[Reply::Status(200)]);
    let r = Region::new(&env.docker_host);
    let (v1, v2) = (format!("v1-{}", r.name), format!("v2-{}", r.name));
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    let _i2 = env.build_sample(&r.host, &v2, &[]);
    let marker = format!("visible-{}", r.name);
    // The region with the service's variables `vars`, then GREETING and the secret, in this
    // order, and the notices sent to the receiver.
    let file = |vars: &[(&str, &str)]| {
        r.file()
            .map_service("web", |web| {
                vars.iter()
                    .fold(web, |web, (key, value)| web.env(key, value))
                    .env("GREETING", &marker)
                    .secret_env("API_TOKEN", &secret_ref())
            })
            .notification(Notification::generic(&receiver.url("/notice")))
    };

    // v1 is healthy; it prints its environment too, but nothing relays a healthy app's logs.
    r.write(&file(&[("PRINT_ENV", "1")]));
    let out = r.deploy(&[], &v1);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_masked("the output of the v1 deploy", &text(&out), &r.secret);

    // v2 never turns healthy. The failure report quotes the last 15 lines of the app's log:
    // the app prints the service's variables, then the image's own ones (Docker puts those
    // after the container's), then a line of its own and one per health request. Setting most
    // of the image's variables in the service moves them before the secret, which is the
    // service's last variable, so the secret's line stays within those 15 lines.
    r.write(&file(&[
        ("NEVER_HEALTHY", "1"),
        ("PRINT_ENV", "1"),
        ("PORT", "8080"),
        ("HEALTHY_AFTER_SECS", "0"),
        ("ERROR_RATE", "0"),
    ]));
    for global in [&[][..], &["-o", "json"][..], &["-v"][..]] {
        let out = r.deploy(global, &v2);
        let all = text(&out);
        assert_masked(&format!("the output of deploy {global:?}"), &all, &r.secret);
        assert_eq!(code(&out), 3, "deploy {global:?}:\n{all}");
        // The log tail was relayed: a plain variable the app printed, and the masked secret.
        assert!(
            all.contains(&format!("GREETING={marker}")),
            "deploy {global:?} relayed no container log:\n{all}"
        );
        assert!(
            all.contains("API_TOKEN=***"),
            "deploy {global:?} relayed the secret's line without `***`:\n{all}"
        );
    }

    // The records: history, and every volume on the target.
    for global in [&[][..], &["-o", "json"][..]] {
        let args = [global, &["history", "--region", &r.name][..]].concat();
        let out = r.run(&args);
        assert_eq!(code(&out), 0, "{}", text(&out));
        assert_masked(&format!("history {global:?}"), &text(&out), &r.secret);
    }
    let out = r.run(&["-o", "json", "history", "--region", &r.name]);
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(history[0]["version"], v2.as_str(), "{history}");
    assert_eq!(history[0]["outcome"], "rolled_back", "{history}");
    let volumes = r.volumes();
    assert!(!volumes.is_empty(), "no release record on the target");
    let mut relayed_in_a_record = false;
    for (name, inspect) in &volumes {
        assert_masked(&format!("docker volume inspect {name}"), inspect, &r.secret);
        relayed_in_a_record |= inspect.contains(&marker);
    }
    assert!(
        relayed_in_a_record,
        "no release record kept the failure's log lines: {volumes:#?}"
    );

    // The notices: 4 deploys, each at least a start and an end.
    receiver.wait_for(8, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    let requests = receiver.requests();
    for req in &requests {
        let body = String::from_utf8_lossy(&req.body);
        assert_masked(
            &format!("the notice {:?}", req.header("x-packfy-event")),
            &body,
            &r.secret,
        );
    }
    assert!(
        requests
            .iter()
            .any(|req| String::from_utf8_lossy(&req.body).contains(&marker)),
        "no notice carried the failure's detail: {:#?}",
        requests
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect::<Vec<_>>()
    );
}

/// `file` with hooks that print the secret — as is, base64-encoded (both alphabets) and
/// URL-encoded in a connection string — before and after a deploy.
fn leaky_hooks(file: RegionFile, marker: &str) -> RegionFile {
    let print = [
        format!(r#"echo "token=${SECRET_VAR}""#),
        format!(r#"printf %s "${SECRET_VAR}" | base64"#),
        format!(r#"printf %s "${SECRET_VAR}" | base64 | tr '+/' '-_' | tr -d '='"#),
        format!(
            r#"printf 'postgres://app:%s@db/app\n' "$(printf %s "${SECRET_VAR}" | sed -e 's/%/%25/g' -e 's/@/%40/g' -e 's/:/%3A/g' -e 's|/|%2F|g' -e 's/+/%2B/g' -e 's/=/%3D/g' -e 's/&/%26/g')""#
        ),
        format!(r#"echo "hook-ran-{marker}-$PACKFY_HOOK""#),
    ]
    .join("\n");
    file.hook("pre_deploy", "leak-before", &print)
        .hook("post_deploy", "leak-after", &print)
}

/// What every hook run must show: that both hooks ran and printed their lines, masked.
fn assert_hooks_relayed(what: &str, all: &str, marker: &str) {
    for kind in ["pre_deploy", "post_deploy"] {
        assert!(
            all.contains(&format!("hook-ran-{marker}-{kind}")),
            "{what}: the {kind} hook's output is not shown:\n{all}"
        );
    }
    assert!(
        all.contains("token=***"),
        "{what}: the hook's token line is not shown masked:\n{all}"
    );
    assert!(
        all.contains("postgres://app:***@db/app"),
        "{what}: the hook's connection string is not shown masked:\n{all}"
    );
}

#[test]
fn hook_output_on_a_docker_region_is_masked() {
    let Some(env) = TestEnv::get() else { return };
    let r = Region::new(&env.docker_host);
    let (v1, v2) = (format!("v1-{}", r.name), format!("v2-{}", r.name));
    let _i1 = env.build_sample(&r.host, &v1, &[]);
    let _i2 = env.build_sample(&r.host, &v2, &[]);
    let marker = r.name.clone();
    r.write(&leaky_hooks(
        r.file()
            .map_service("web", |web| web.secret_env("API_TOKEN", &secret_ref())),
        &marker,
    ));
    for (global, version) in [(&[][..], &v1), (&["-o", "json"][..], &v2)] {
        let out = r.deploy(global, version);
        let all = text(&out);
        let what = format!("deploy {global:?} {version}");
        assert_masked(&what, &all, &r.secret);
        assert_eq!(code(&out), 0, "{what}:\n{all}");
        assert_hooks_relayed(&what, &all, &marker);
    }
    for (name, inspect) in r.volumes() {
        assert_masked(
            &format!("docker volume inspect {name}"),
            &inspect,
            &r.secret,
        );
    }
}

#[test]
fn hook_output_on_a_kubernetes_region_is_masked() {
    let Some(k) = KubeEnv::get() else { return };
    let name = region_name("km", 20);
    let namespace: String = unique_name("pkm").chars().take(50).collect();
    let dir = RegionsDir::new();
    let secret = new_secret();
    let marker = name.clone();
    let web = Service::new("web", "sample")
        .replicas(1)
        .port(8080)
        .secret_env("API_TOKEN", &secret_ref())
        .health(Health::http("/health"))
        .rollout(Rollout::new().progress_deadline("60s").bake("1s"));
    let file = RegionFile::kubernetes(&k.context, &namespace)
        .app("packfy")
        .currency("USD")
        .service(web);
    dir.write(&name, &leaky_hooks(file, &marker));
    struct Namespace<'a>(&'a KubeEnv, &'a str);
    impl Drop for Namespace<'_> {
        fn drop(&mut self) {
            let _ = self
                .0
                .kubectl_try(["delete", "namespace", self.1, "--wait=false"]);
        }
    }
    let _ns = Namespace(&k, &namespace);
    for (global, version) in [(&[][..], "v1"), (&["-o", "json"][..], "v2")] {
        let mut cmd = support::cli(dir.path(), global);
        cmd.args(["deploy", "--region", &name, "--version", version])
            .env("KUBECONFIG", &k.kubeconfig)
            .env(SECRET_VAR, &secret);
        let out = support::run_cli(&mut cmd, &[]);
        let all = text(&out);
        let what = format!("deploy {global:?} {version}");
        assert_masked(&what, &all, &secret);
        assert_eq!(code(&out), 0, "{what}:\n{all}");
        assert_hooks_relayed(&what, &all, &marker);
    }
}
