//! Every message of the rules in `validate.rs`, with its exact text, location and hint.

use std::sync::Arc;

use super::*;
use crate::config::{de, yaml};

/// A valid Docker region with one service; cases add lines at the end (line 8 on), either at
/// the top level or, indented by four, inside service `web`.
const BASE: &str = "\
currency: MXN
target: {docker: {host: 'unix:///var/run/docker.sock'}}
services:
  web:
    image: registry.example/web
    ports: [{container: 8000}]
    health: {http: {path: /health}}
";

/// The problems of one region file on its own, typing first, then the rules, as printed.
fn problems(text: &str) -> Vec<String> {
    let tree = yaml::parse(&Arc::from("r.yaml"), text).expect("valid YAML");
    let typed = de::from_node_partial::<RegionConfig>(&tree, "");
    let mut out: Vec<String> = typed.problems.iter().map(|d| d.to_string()).collect();
    if let Some(cfg) = typed.value {
        out.extend(
            region_partial("r", &cfg, &tree, &typed.poisoned)
                .iter()
                .map(|d| d.to_string()),
        );
    }
    out
}

fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

/// Runs every case and reports every mismatch at once.
fn check_cases(cases: &[(&str, String, &[&str])]) {
    crate::config::check_cases(cases, problems);
}

#[test]
fn the_base_is_valid() {
    assert_eq!(problems(BASE), Vec::<String>::new());
}

#[test]
fn several_load_balancers_are_valid_and_written_back_as_given() {
    use crate::config::model::{RuntimeApis, Traffic};
    let text =
        with("traffic: {haproxy: {runtime_api: [/run/a.sock, 'ssh://root@lb2/run/h.sock']}}\n");
    assert_eq!(problems(&text), Vec::<String>::new());
    let tree = yaml::parse(&Arc::from("r.yaml"), &text).expect("valid YAML");
    let cfg = de::from_node_partial::<RegionConfig>(&tree, "")
        .value
        .unwrap();
    let Traffic::Haproxy(h) = &cfg.traffic else {
        panic!("{:?}", cfg.traffic)
    };
    assert_eq!(
        h.runtime_api.addresses(),
        ["/run/a.sock", "ssh://root@lb2/run/h.sock"]
    );
    assert_eq!(
        serde_json::to_value(&h.runtime_api).unwrap(),
        serde_json::json!(["/run/a.sock", "ssh://root@lb2/run/h.sock"])
    );
    assert_eq!(
        serde_json::to_value(RuntimeApis::from("/run/h.sock")).unwrap(),
        serde_json::json!("/run/h.sock")
    );
}

#[test]
fn valid_image_references_pass() {
    for ok in [
        "web",
        "library/web",
        "registry.example/shop/api",
        "127.0.0.1:5000/packfy-sample",
        "localhost/a__b",
        "My.Registry.example/web",
        "${REGISTRY}/web",
        "registry.example/${TEAM}/web",
    ] {
        assert_eq!(image_repository_problem(ok), None, "{ok}");
    }
    for ok in ["v1", "2.2.0-rc1", "abc123-dirty-1a2b3c4d", "_x"] {
        assert!(is_tag(ok), "{ok}");
    }
    for bad in ["", ".x", "-x", "a b", "a:b"] {
        assert!(!is_tag(bad), "{bad}");
    }
}

#[test]
fn region_rules() {
    check_cases(&[
        (
            "no currency",
            BASE.replace("currency: MXN\n", "country: Nowhere\n"),
            &["region 'r' has no currency at r.yaml:1:1 — add `currency:` with its ISO 4217 code, e.g. `currency: MXN`"],
        ),
        (
            "bad currency",
            BASE.replace("MXN", "pesos"),
            &["currency: 'pesos' is not an ISO 4217 code at r.yaml:1:11 — use three capital letters, e.g. CUP, MXN, COP, USD, EUR"],
        ),
        (
            "capacity share above 100",
            with("capacity_share: 140\n"),
            &["capacity_share: 140 is not a percentage at r.yaml:8:17 — use a number from 0 to 100"],
        ),
        (
            "negative capacity share",
            with("capacity_share: -0.5\n"),
            &["capacity_share: -0.5 is not a percentage at r.yaml:8:17 — use a number from 0 to 100"],
        ),
        (
            "no target",
            BASE.replace("target: {docker: {host: 'unix:///var/run/docker.sock'}}\n", "country: Nowhere\n"),
            &["region 'r' has no target at r.yaml:1:1 — set `target: {docker: {host: ...}}` or `target: {kubernetes: {namespace: ...}}`"],
        ),
        (
            "two targets",
            BASE.replace("target: {docker: {host: 'unix:///var/run/docker.sock'}}", "target: {docker: {host: 'unix:///x'}, kubernetes: {namespace: n}}"),
            &["target: both docker and kubernetes are set at r.yaml:2:51 — a region deploys to one target; remove one of them (an overlay can remove an inherited one with `null`)"],
        ),
        (
            "not a docker endpoint",
            BASE.replace("'unix:///var/run/docker.sock'", "docker.example:2375"),
            &["target.docker.host: 'docker.example:2375' is not a Docker endpoint at r.yaml:2:25 — use unix:///var/run/docker.sock, tcp://HOST:2376 or ssh://USER@HOST"],
        ),
        (
            "host and hosts",
            BASE.replace("{host: 'unix:///var/run/docker.sock'}", "{host: 'unix:///a', hosts: ['ssh://b']}"),
            &["target.docker: both host and hosts are set at r.yaml:2:45 — `host: X` is the shorthand for `hosts: [X]`; keep one of them"],
        ),
        (
            "a host listed twice",
            BASE.replace("{host: 'unix:///var/run/docker.sock'}", "{hosts: ['ssh://a', 'ssh://a']}"),
            &["target.docker.hosts.1: 'ssh://a' is listed twice at r.yaml:2:38 — each host is one engine; list it once"],
        ),
        (
            "kubernetes without namespace",
            BASE.replace("{docker: {host: 'unix:///var/run/docker.sock'}}", "{kubernetes: {context: c}}"),
            &["target.kubernetes.namespace is not set at r.yaml:2:22 — every Kubernetes region deploys into its own namespace"],
        ),
        (
            "bad namespace",
            BASE.replace("{docker: {host: 'unix:///var/run/docker.sock'}}", "{kubernetes: {namespace: Packfy_MX}}"),
            &["target.kubernetes.namespace: 'Packfy_MX' is not a valid namespace at r.yaml:2:34 — lower-case letters, digits and '-', at most 63 characters"],
        ),
        (
            "health url without a scheme",
            BASE.replace("{docker: {host: 'unix:///var/run/docker.sock'}}", "{kubernetes: {namespace: mx, health_url: mx.packfy.example/health}}"),
            &["target.kubernetes.health_url: 'mx.packfy.example/health' is not an http(s) URL at r.yaml:2:50 — write the full URL the bake checks, e.g. https://usa.packfy.example/health"],
        ),
        (
            "bad app name",
            with("app: Packfy App\n"),
            &["app: 'Packfy App' is not a valid name at r.yaml:8:6 — lower-case letters, digits and '-', at most 63 characters"],
        ),
        (
            "no services",
            "currency: MXN\ntarget: {docker: {host: 'unix:///x'}}\n".to_string(),
            &["region 'r' has no services at r.yaml:1:1 — define at least one service under `services:`"],
        ),
        (
            "keep no releases",
            with("keep_releases: 0\n"),
            &["keep_releases: must be at least 1 at r.yaml:8:16 — rollback needs the previous release; keep at least 1"],
        ),
        (
            "haproxy without runtime api",
            with("traffic: {haproxy: {frontend: 'http://x'}}\n"),
            &["traffic.haproxy.runtime_api is not set at r.yaml:8:20 — the path of HAProxy's `stats socket ... level admin`, HOST:PORT or ssh://USER@HOST/SOCKET; a list names several load balancers"],
        ),
        (
            "haproxy with an empty list of runtime apis",
            with("traffic: {haproxy: {runtime_api: []}}\n"),
            &["traffic.haproxy.runtime_api: the list is empty at r.yaml:8:34 — the path of HAProxy's `stats socket ... level admin`, HOST:PORT or ssh://USER@HOST/SOCKET; a list names several load balancers"],
        ),
        (
            "haproxy with one load balancer listed twice",
            with("traffic: {haproxy: {runtime_api: [/run/a.sock, 'ssh://lb/run/h.sock', /run/a.sock]}}\n"),
            &["traffic.haproxy.runtime_api.2: '/run/a.sock' is listed twice at r.yaml:8:71 — each load balancer is listed once; every one gets the same changes"],
        ),
        (
            "haproxy with an empty entry",
            with("traffic: {haproxy: {runtime_api: [/run/a.sock, '']}}\n"),
            &["traffic.haproxy.runtime_api.1: an empty address at r.yaml:8:48 — each entry is one load balancer's Runtime API"],
        ),
        (
            "haproxy with a runtime api that is neither an address nor a list",
            with("traffic: {haproxy: {runtime_api: {a: b}}}\n"),
            &["traffic.haproxy.runtime_api: invalid type: map, expected an address, or a list of addresses (one per load balancer) at r.yaml:8:34"],
        ),
        (
            "haproxy backend for a missing service",
            with("traffic: {haproxy: {runtime_api: /run/h.sock, backends: {web: be_web, api: be_api}}}\n"),
            &["traffic.haproxy.backends: no service named 'api' at r.yaml:8:76 — services are: web"],
        ),
    ]);
}

#[test]
fn service_rules() {
    check_cases(&[
        (
            "bad service name",
            BASE.replace("  web:", "  Web_1:"),
            &["service name 'Web_1' is not valid at r.yaml:4:3 — lower-case letters, digits and '-', at most 63 characters"],
        ),
        (
            "no image",
            BASE.replace("    image: registry.example/web\n", ""),
            &["services.web: no image at r.yaml:5:5 — set `image:` to the image repository (the release version is the tag)"],
        ),
        (
            "image with a tag",
            BASE.replace("registry.example/web", "registry.example:5000/web:latest"),
            &["services.web.image: 'registry.example:5000/web:latest' carries a tag or digest at r.yaml:5:12 — give the repository only; every release is tagged with its own version so rollback has an immutable image"],
        ),
        (
            "image with spaces",
            BASE.replace("registry.example/web", "'bad image name with spaces'"),
            &["services.web.image: 'bad image name with spaces' is not a valid image reference: it contains a space at r.yaml:5:12 — write REGISTRY/NAME or NAME: lower-case letters, digits and . _ - in each part, no spaces, no tag (the release version is the tag)"],
        ),
        (
            "image with an upper-case repository",
            BASE.replace("registry.example/web", "Registry.example/Shop/web"),
            &["services.web.image: 'Registry.example/Shop/web' is not a valid image reference: the repository part 'Shop' has upper-case letters at r.yaml:5:12 — write REGISTRY/NAME or NAME: lower-case letters, digits and . _ - in each part, no spaces, no tag (the release version is the tag)"],
        ),
        (
            "image with an empty tag",
            BASE.replace("registry.example/web", "'registry.example/web:'"),
            &["services.web.image: 'registry.example/web:' is not a valid image reference: its tag is empty at r.yaml:5:12 — write REGISTRY/NAME or NAME: lower-case letters, digits and . _ - in each part, no spaces, no tag (the release version is the tag)"],
        ),
        (
            "image part that ends in a separator",
            BASE.replace("registry.example/web", "registry.example/web-"),
            &["services.web.image: 'registry.example/web-' is not a valid image reference: the repository part 'web-' may only hold lower-case letters, digits and . _ - between them at r.yaml:5:12 — write REGISTRY/NAME or NAME: lower-case letters, digits and . _ - in each part, no spaces, no tag (the release version is the tag)"],
        ),
        (
            "empty version",
            with("version: ''\n"),
            &["version: the image tag is empty at r.yaml:8:10 — letters, digits, '_', '.' and '-', at most 128, not starting with '.' or '-'"],
        ),
        (
            "version that is no tag",
            with("version: 'v1 final'\n"),
            &["version: 'v1 final' is not a valid image tag at r.yaml:8:10 — letters, digits, '_', '.' and '-', at most 128, not starting with '.' or '-'"],
        ),
        (
            "image with a digest",
            BASE.replace("registry.example/web", "registry.example/web@sha256:abc"),
            &["services.web.image: 'registry.example/web@sha256:abc' carries a tag or digest at r.yaml:5:12 — give the repository only; every release is tagged with its own version so rollback has an immutable image"],
        ),
        (
            "zero replicas",
            with("    replicas: 0\n"),
            &["services.web.replicas: must be at least 1, got 0 at r.yaml:8:15 — to stop a service, remove it from the region"],
        ),
        (
            "no surge and no unavailability",
            with("    rollout: {max_surge: 0, max_unavailable: 0}\n"),
            &["services.web.rollout: max_surge and max_unavailable are both 0 at r.yaml:8:26 — nothing could ever be replaced; set max_surge: 1 for a zero-downtime rollout"],
        ),
        (
            "a canary over several hosts needs HAProxy as on one host",
            with("    rollout: {strategy: canary, steps: [{weight: 10}, {weight: 100}]}\n")
                .replace("{host: 'unix:///var/run/docker.sock'}", "{hosts: ['ssh://a', 'ssh://b']}"),
            &[
                "services.web.rollout.strategy: a canary on a Docker region needs `traffic: haproxy` (its weights are HAProxy's) at r.yaml:8:25 — use `strategy: rolling` on this region (an environment overlay can set it)",
            ],
        ),
        (
            "a blue-green over several hosts needs HAProxy as on one host",
            with("    rollout: {strategy: blue_green}\n")
                .replace("{host: 'unix:///var/run/docker.sock'}", "{hosts: ['ssh://a', 'ssh://b']}"),
            &[
                "services.web.rollout.strategy: blue_green on a Docker region needs `traffic: haproxy` (its switch is HAProxy's) at r.yaml:8:25 — use `strategy: rolling` on this region (an environment overlay can set it)",
            ],
        ),
        (
            "no host at once",
            with("    rollout: {hosts_at_once: 0}\n"),
            &["services.web.rollout.hosts_at_once: must be at least 1, got 0 at r.yaml:8:30 — the number of hosts that change at once; 1 (the default) rolls one host after another"],
        ),
        (
            "all replicas unavailable",
            with("    replicas: 2\n    rollout: {max_unavailable: 2}\n"),
            &["services.web.rollout.max_unavailable: 2 would let all 2 replica(s) be down at once at r.yaml:9:32 — keep it below replicas, or use max_surge for zero downtime"],
        ),
        (
            "5xx ratio as a percentage",
            with("    rollout: {max_5xx_ratio: 5}\n"),
            &["services.web.rollout.max_5xx_ratio: 5 is not a ratio at r.yaml:8:30 — use a number from 0 to 1, e.g. 0.05 for 5%"],
        ),
    ]);
}

#[test]
fn health_rules() {
    let health = |h: &str| BASE.replace("{http: {path: /health}}", h);
    check_cases(&[
        (
            "two kinds of check",
            health("{http: {path: /health}, tcp: {port: 8000}}"),
            &["services.web.health: more than one kind of check (http, tcp, command, image) at r.yaml:7:13 — choose one"],
        ),
        (
            "healthy threshold 0",
            health("{http: {path: /health}, healthy_threshold: 0}"),
            &["services.web.health.healthy_threshold: must be at least 1 at r.yaml:7:56"],
        ),
        (
            "unhealthy threshold 0",
            health("{http: {path: /health}, unhealthy_threshold: 0}"),
            &["services.web.health.unhealthy_threshold: must be at least 1 at r.yaml:7:58"],
        ),
        (
            "interval 0",
            health("{http: {path: /health}, interval: 0s, timeout: 0s}"),
            &[
                "services.web.health.interval: must be above 0 at r.yaml:7:47 — e.g. 10s",
                "services.web.health.timeout: 0s must be above 0 and at most the interval (0s) at r.yaml:7:60 — a check that outlives its interval overlaps the next one",
            ],
        ),
        (
            "timeout above the interval",
            health("{http: {path: /health}, interval: 2s, timeout: 5s}"),
            &["services.web.health.timeout: 5s must be above 0 and at most the interval (2s) at r.yaml:7:60 — a check that outlives its interval overlaps the next one"],
        ),
        (
            "deadline shorter than a pass",
            health("{http: {path: /health}, start_period: 30s, healthy_threshold: 3, deadline: 50s}"),
            &["services.web.health.deadline: 50s is shorter than the earliest a container can pass (60s: start_period + interval × healthy_threshold) at r.yaml:7:88 — raise the deadline or lower the thresholds"],
        ),
        (
            "check on an undeclared port",
            health("{http: {path: /health, port: 9000}}"),
            &["services.web.health: checks port 9000, which the service does not declare at r.yaml:7:13 — add it under `ports:` or fix the check's port"],
        ),
        (
            "tcp check without a port",
            BASE.replace("    ports: [{container: 8000}]\n", "").replace("{http: {path: /health}}", "{tcp: {}}"),
            &["services.web.health: an http or tcp check needs a port at r.yaml:6:13 — declare the service's port under `ports:`"],
        ),
    ]);
}

#[test]
fn port_env_autoscale_and_build_rules() {
    check_cases(&[
        (
            "container port 0",
            BASE.replace("{container: 8000}", "{container: 8000}, {container: 0}"),
            &["services.web.ports.1.container: must be 1..65535 at r.yaml:6:44 — the port the process listens on"],
        ),
        (
            "two services on one host port (frontend and grafana on 3000)",
            "currency: MXN\n\
             target: {kubernetes: {namespace: mx}}\n\
             services:\n\
             \x20 frontend: {image: r/frontend, ports: [{container: 3000, host: 3000}]}\n\
             \x20 grafana: {image: grafana/grafana, ports: [{container: 3000, host: 3000}]}\n"
                .to_string(),
            &["services.grafana.ports.0.host: port 3000/tcp is already used by service 'frontend' at r.yaml:5:69 — two services of one region cannot share a host port; pick another"],
        ),
        (
            "one host port, two protocols",
            "currency: MXN\n\
             target: {kubernetes: {namespace: mx}}\n\
             services:\n\
             \x20 dns: {image: r/dns, ports: [{container: 53, host: 53}, {container: 53, host: 53, protocol: udp}]}\n"
                .to_string(),
            &[],
        ),
        (
            "fixed host port on docker with a rolling update",
            BASE.replace("{container: 8000}", "{container: 8000, host: 80}"),
            &["services.web.ports.0.host: a fixed host port fits one container, but replicas and rolling updates run several at r.yaml:6:37 — leave `host` unset: each container gets its own port and HAProxy routes to it"],
        ),
        (
            "bad variable name",
            with("    env: {1ST: x}\n"),
            &["services.web.env: '1ST' is not a valid variable name at r.yaml:8:11 — letters, digits and '_', not starting with a digit"],
        ),
        (
            "secret in plain text",
            with("    env: {STRIPE_SECRET_KEY: sk_live_123}\n"),
            &["services.web.env.STRIPE_SECRET_KEY: looks like a secret written in plain text at r.yaml:8:30 — write `STRIPE_SECRET_KEY: {secret: \"env:STRIPE_SECRET_KEY\"}` and set it where the deploy runs; secrets never belong in region files"],
        ),
        (
            "secret reference is fine",
            with("    env: {DB_PASSWORD: {secret: 'env:DB_PASSWORD'}, API_TOKEN: ''}\n"),
            &[],
        ),
        (
            "autoscale min above max",
            with("    autoscale: {min: 10, max: 5}\n"),
            &["services.web.autoscale: min 10 and max 5 must satisfy 1 <= min <= max at r.yaml:8:22"],
        ),
        (
            "autoscale min 0",
            with("    autoscale: {min: 0}\n"),
            &["services.web.autoscale: min 0 and max 50 must satisfy 1 <= min <= max at r.yaml:8:22"],
        ),
        (
            "autoscale targets",
            with("    autoscale: {cpu: 0, memory: 150}\n"),
            &[
                "services.web.autoscale.cpu: 0% is not a utilisation target at r.yaml:8:22 — use 1..100",
                "services.web.autoscale.memory: 150% is not a utilisation target at r.yaml:8:33 — use 1..100",
            ],
        ),
        (
            "build without context",
            with("    build: {dockerfile: Dockerfile}\n"),
            &["services.web.build.context is not set at r.yaml:8:12 — the directory to build, e.g. `.`"],
        ),
    ]);
}

#[test]
fn release_step_rules() {
    check_cases(&[
        (
            "a list, a timeout, one-way",
            with("    release: {command: [packfy-sample, migrate], timeout: 2m}\n"),
            &[],
        ),
        (
            "a shell line, reversible",
            with("    release: {command: 'bin/migrate up', reversible: true}\n"),
            &[],
        ),
        (
            "no command",
            with("    release: {timeout: 1m}\n"),
            &["services.web.release: no command at r.yaml:8:14 — write `command: [program, arg, ...]` (run in the new image), or a string run with `sh -c` when the image has a shell"],
        ),
        (
            "an empty command",
            with("    release: {command: []}\n"),
            &["services.web.release: no command at r.yaml:8:24 — write `command: [program, arg, ...]` (run in the new image), or a string run with `sh -c` when the image has a shell"],
        ),
        (
            "a zero timeout",
            with("    release: {command: [migrate], timeout: 0s}\n"),
            &["services.web.release.timeout: must be above 0 at r.yaml:8:44 — the longest the step may run before it is stopped, e.g. 10m"],
        ),
        (
            "reversible is a boolean",
            with("    release: {command: [migrate], reversible: maybe}\n"),
            &["services.web.release.reversible: expected true or false, found a string (\"maybe\") at r.yaml:8:47"],
        ),
        (
            "an unknown key",
            with("    release: {command: [migrate], one_way: true}\n"),
            &["unknown field 'one_way' in services.web.release at r.yaml:8:35 — expected one of: command, timeout, reversible"],
        ),
    ]);
}

/// A value that failed to type is replaced by a stand-in (0, "0s", ""); rules reading it stay
/// silent instead of reporting the stand-in as a second mistake.
#[test]
fn stand_ins_are_not_reported_again() {
    check_cases(&[
        (
            "replicas of the wrong type",
            with("    replicas: three\n"),
            &["services.web.replicas: expected an integer, found a string (\"three\") at r.yaml:8:15"],
        ),
        (
            "bad durations in a health check",
            with("    rollout: {max_surge: many}\n").replace("{http: {path: /health}}", "{http: {path: /health}, interval: often, timeout: 5}"),
            &[
                "services.web.health.interval: 'often' is not a duration at r.yaml:7:47 — write a number with a unit: ms, s, m or h (e.g. '10s', '1m30s')",
                "services.web.health.timeout: a duration needs a unit, got 5 at r.yaml:7:63 — write '5s' for seconds or '5ms' for milliseconds",
                "services.web.rollout.max_surge: expected an integer, found a string (\"many\") at r.yaml:8:26",
            ],
        ),
        (
            "a bad host port is not a collision",
            "currency: MXN\n\
             target: {kubernetes: {namespace: mx}}\n\
             services:\n\
             \x20 a: {image: r/a, ports: [{container: 1, host: x}]}\n\
             \x20 b: {image: r/b, ports: [{container: 1, host: y}]}\n"
                .to_string(),
            &[
                "services.a.ports.0.host: expected an integer, found a string (\"x\") at r.yaml:4:48",
                "services.b.ports.0.host: expected an integer, found a string (\"y\") at r.yaml:5:48",
            ],
        ),
        (
            "other rules still run",
            with("    replicas: three\n    autoscale: {min: 9, max: 2}\n"),
            &[
                "services.web.replicas: expected an integer, found a string (\"three\") at r.yaml:8:15",
                "services.web.autoscale: min 9 and max 2 must satisfy 1 <= min <= max at r.yaml:9:22",
            ],
        ),
    ]);
}

fn typed(name: &str, text: &str) -> (String, RegionConfig, Node) {
    let file: Arc<str> = Arc::from(format!("{name}.yaml"));
    let tree = yaml::parse(&file, text).unwrap();
    let cfg = de::from_node::<RegionConfig>(&tree, "").unwrap();
    (name.to_string(), cfg, tree)
}

fn across_of(regions: &[(String, RegionConfig, Node)]) -> Vec<String> {
    let refs: Vec<_> = regions.iter().map(|(n, c, t)| (n.as_str(), c, t)).collect();
    across(&refs).iter().map(|d| d.to_string()).collect()
}

#[test]
fn one_primary() {
    let r = [
        typed("us-east-1", "primary: true\n"),
        typed("eu-west-1", "primary: false\n"),
        typed("sa-east-1", "currency: BRL\nprimary: true\n"),
    ];
    assert_eq!(
        across_of(&r),
        ["more than one primary region: us-east-1, sa-east-1 at sa-east-1.yaml:2:10 — exactly one region holds the master database; set `primary: false` on the others"]
    );
    assert_eq!(across_of(&r[..2]), Vec::<String>::new());
}

#[test]
fn capacity_shares() {
    // The planning documents' cloud regions: 40/30/20/10.
    let good = [
        typed("us-east-1", "primary: true\ncapacity_share: 40\n"),
        typed("eu-west-1", "capacity_share: 30\n"),
        typed("ap-southeast-1", "capacity_share: 20\n"),
        typed("sa-east-1", "capacity_share: 10\n"),
    ];
    assert_eq!(across_of(&good), Vec::<String>::new());

    let mut bad = good.clone();
    bad[3] = typed("sa-east-1", "capacity_share: 15\n");
    assert_eq!(
        across_of(&bad),
        ["capacity shares sum to 105%, not 100% at us-east-1.yaml:2:17 — shares: us-east-1 40, eu-west-1 30, ap-southeast-1 20, sa-east-1 15"]
    );

    let mut missing = good.clone();
    missing[3] = typed("sa-east-1", "currency: BRL\n");
    assert_eq!(
        across_of(&missing),
        [
            "capacity shares sum to 90%, not 100% at us-east-1.yaml:2:17 — shares: us-east-1 40, eu-west-1 30, ap-southeast-1 20",
            "regions without a capacity_share while others have one: sa-east-1 at us-east-1.yaml:2:17 — give every region a share; `capacity_share: 0` for a region that takes no traffic",
        ]
    );
    // Nobody gives shares: nothing to check.
    let none = [typed("a", "currency: USD\n"), typed("b", "currency: EUR\n")];
    assert_eq!(across_of(&none), Vec::<String>::new());
}

#[test]
fn shares_are_not_summed_over_a_stand_in() {
    let (n, c, t) = typed("a", "capacity_share: 60\n");
    let (m, d, u) = typed("b", "capacity_share: 0\n");
    let poisoned = vec!["capacity_share".to_string()];
    let refs = [
        (n.as_str(), &c, &t, &[][..]),
        (m.as_str(), &d, &u, poisoned.as_slice()),
    ];
    assert_eq!(across_partial(&refs), Vec::<Diagnostic>::new());
    let refs = [(n.as_str(), &c, &t, &[][..]), (m.as_str(), &d, &u, &[][..])];
    assert_eq!(across_partial(&refs).len(), 1);
}

#[test]
fn key_paths_are_related_by_segments() {
    assert!(related("services.web", "services.web.replicas"));
    assert!(related("services.web.replicas", "services.web"));
    assert!(related("a.b", "a.b"));
    assert!(related("", "anything"));
    assert!(!related("services.web", "services.webapp"));
    assert!(!related("services.web.replicas", "services.web.rollout"));
}

#[test]
fn dns_labels() {
    assert!(is_dns_label("costa-rica"));
    assert!(is_dns_label("a1"));
    for bad in ["", "-a", "a-", "Cuba", "a_b", "a.b", &"x".repeat(64)] {
        assert!(!is_dns_label(bad), "{bad}");
    }
}

/// BASE behind HAProxy, with `rollout:` of service `web` as given.
fn canary(rollout: &str) -> String {
    format!(
        "{BASE}    rollout: {rollout}\ntraffic: {{haproxy: {{runtime_api: /run/h.sock, backends: {{web: be_web}}}}}}\n"
    )
}

#[test]
fn canary_rules() {
    check_cases(&[
        (
            "a valid canary",
            canary("{strategy: canary, steps: [{weight: 10}, {pause: 2m}, {analysis: {duration: 30s, max_response_time: 300ms}}, {weight: 50}, {pause: {}}, {weight: 100}]}"),
            &[],
        ),
        (
            "no steps",
            canary("{strategy: canary}"),
            &[
                "services.web.rollout: a canary needs `steps` at r.yaml:8:14 — e.g. `steps: [{weight: 10}, {analysis: {duration: 30s}}, {weight: 100}]`",
            ],
        ),
        (
            "weight above 100 and going back",
            canary("{strategy: canary, steps: [{weight: 50}, {weight: 20}, {weight: 120}]}"),
            &[
                "services.web.rollout.steps.1.weight: 20% is below the 50% of an earlier step at r.yaml:8:64 — a canary only moves traffic forward; `abort` takes it all back",
                "services.web.rollout.steps.2.weight: 120 is not a share of traffic at r.yaml:8:78 — use 1..100 (percent of the service's traffic for the new release)",
            ],
        ),
        (
            "a pause before any weight",
            canary("{strategy: canary, steps: [{pause: 1m}, {analysis: {}}, {weight: 100}]}"),
            &[
                "services.web.rollout.steps.0: comes before any `weight`: the new release takes no traffic yet at r.yaml:8:41 — start the steps with `{weight: N}`",
            ],
        ),
        (
            "a bad pause",
            canary("{strategy: canary, steps: [{weight: 10}, {pause: soon}]}"),
            &[
                "services.web.rollout.steps.1.pause: 'soon' is not a duration (write a number with a unit: ms, s, m or h (e.g. '10s', '1m30s')) at r.yaml:8:63",
            ],
        ),
        (
            "a pause with a key",
            canary("{strategy: canary, steps: [{weight: 10}, {pause: {until: promote}}]}"),
            &["services.web.rollout.steps.1.pause: unknown key 'until' in a pause; write `pause: 2m`, or `pause: {}` to wait for `promote` at r.yaml:8:63"],
        ),
        (
            "an unknown step",
            canary("{strategy: canary, steps: [{weight: 10}, {wait: 2m}]}"),
            &[
                "services.web.rollout.steps.1: unknown kind 'wait' at r.yaml:8:56 — expected one of: weight, pause, analysis",
            ],
        ),
        (
            "a ratio above 1",
            canary("{strategy: canary, steps: [{weight: 10}], analysis: {max_5xx_ratio: 5}}"),
            &[
                "services.web.rollout.analysis.max_5xx_ratio: 5 is not a ratio at r.yaml:8:82 — use a number from 0 to 1, e.g. 0.05 for 5%",
            ],
        ),
        (
            "steps without canary",
            canary("{steps: [{weight: 10}]}"),
            &[
                "services.web.rollout.steps: steps are for `strategy: canary` at r.yaml:8:22 — set `strategy: canary`, or remove the steps",
            ],
        ),
        (
            "an unknown strategy",
            canary("{strategy: bluegreen}"),
            &[
                "services.web.rollout.strategy: unknown value 'bluegreen' at r.yaml:8:25 — did you mean 'blue_green'?",
            ],
        ),
        (
            "a canary on Kubernetes judged by Prometheus",
            BASE.replace("{docker: {host: 'unix:///var/run/docker.sock'}}", "{kubernetes: {namespace: mx}}")
                + "    rollout: {strategy: canary, steps: [{weight: 10}, {analysis: {}}, {weight: 100}], analysis: {prometheus: {url: 'http://p:9090', query: up, max: 1}}}\n",
            &[],
        ),
        (
            "a canary on Kubernetes with an http check",
            BASE.replace("{docker: {host: 'unix:///var/run/docker.sock'}}", "{kubernetes: {namespace: mx}}")
                + "    rollout: {strategy: canary, steps: [{weight: 10}], analysis: {http: {path: /ready}}}\n",
            &["services.web.rollout.analysis.http: an HTTP check of each new pod would be made from this machine, which reaches no pod of a cluster at r.yaml:8:73 — on Kubernetes judge the canary with `prometheus: {url, query, max}` over the service's metrics (the pods' readiness is checked at every step)"],
        ),
        (
            "a canary on Kubernetes with an autoscaler",
            BASE.replace("{docker: {host: 'unix:///var/run/docker.sock'}}", "{kubernetes: {namespace: mx}}")
                + "    autoscale: {min: 2, max: 6, cpu: 70}\n    rollout: {strategy: canary, steps: [{weight: 10}]}\n",
            &["services.web.rollout.strategy: a canary by replica share needs fixed `replicas`, and an autoscaler moves them at r.yaml:9:25 — remove `autoscale` from this service, or use `strategy: rolling` on this region"],
        ),
        (
            "a prometheus condition without a threshold, and a bad url",
            canary("{strategy: canary, steps: [{weight: 10}], analysis: {prometheus: {url: p9090, query: up}}}"),
            &[
                "services.web.rollout.analysis.prometheus: no threshold: set `max` (the value must not be above it) or `min` (not below it) at r.yaml:8:79 — e.g. `prometheus: {url: http://prometheus:9090, query: '…', max: 0.05}`",
                "services.web.rollout.analysis.prometheus.url: 'p9090' is not an http(s) address at r.yaml:8:85 — e.g. `url: http://prometheus:9090` or `url: ${PROMETHEUS_URL}`",
            ],
        ),
        (
            "canary without HAProxy",
            with("    rollout: {strategy: canary, steps: [{weight: 10}]}\n"),
            &[
                "services.web.rollout.strategy: a canary on a Docker region needs `traffic: haproxy` (its weights are HAProxy's) at r.yaml:8:25 — use `strategy: rolling` on this region (an environment overlay can set it)",
            ],
        ),
    ]);
}

#[test]
fn blue_green_rules() {
    check_cases(&[
        (
            "a valid blue-green",
            canary("{strategy: blue_green, preview: {backend: be_web_preview, frontend: 'http://127.0.0.1:9001'}, scale_down_delay: 1m, auto_promote: true, analysis: {duration: 30s, max_5xx_ratio: 0.01}}"),
            &[],
        ),
        (
            "steps with blue-green",
            canary("{strategy: blue_green, steps: [{weight: 10}]}"),
            &["services.web.rollout.steps: steps are for `strategy: canary`; a blue-green switches at once at r.yaml:8:44 — remove the steps; `analysis` judges the preview before the switch, `auto_promote` says whether to wait for `promote`"],
        ),
        (
            "an empty preview backend and a bad ratio",
            canary("{strategy: blue_green, preview: {backend: ''}, analysis: {max_5xx_ratio: 2}}"),
            &[
                "services.web.rollout.preview.backend is empty at r.yaml:8:56 — name the HAProxy backend of the preview, or leave it out for `<backend>_preview`",
                "services.web.rollout.analysis.max_5xx_ratio: 2 is not a ratio at r.yaml:8:87 — use a number from 0 to 1, e.g. 0.05 for 5%",
            ],
        ),
        (
            "an unknown preview key",
            canary("{strategy: blue_green, preview: {port: 9001}}"),
            &["unknown field 'port' in services.web.rollout.preview at r.yaml:8:47 — expected one of: backend, frontend"],
        ),
        (
            "blue-green without HAProxy",
            with("    rollout: {strategy: blue_green}\n"),
            &["services.web.rollout.strategy: blue_green on a Docker region needs `traffic: haproxy` (its switch is HAProxy's) at r.yaml:8:25 — use `strategy: rolling` on this region (an environment overlay can set it)"],
        ),
        (
            "a blue-green on Kubernetes judged by Prometheus",
            BASE.replace("{docker: {host: 'unix:///var/run/docker.sock'}}", "{kubernetes: {namespace: mx}}")
                + "    rollout: {strategy: blue_green, scale_down_delay: 5m, analysis: {prometheus: {url: 'http://p:9090', query: up, max: 1}}}\n",
            &[],
        ),
        (
            "a blue-green on Kubernetes with an HAProxy preview, an http check and an autoscaler",
            BASE.replace("{docker: {host: 'unix:///var/run/docker.sock'}}", "{kubernetes: {namespace: mx}}")
                + "    autoscale: {min: 2, max: 6, cpu: 70}\n    rollout: {strategy: blue_green, preview: {backend: be}, analysis: {http: {path: /ready}}}\n",
            &[
                "services.web.rollout.strategy: a blue-green on Kubernetes starts the new set at the service's fixed `replicas`, and an autoscaler moves them at r.yaml:9:25 — remove `autoscale` from this service, or use `strategy: rolling` on this region",
                "services.web.rollout.preview: HAProxy's preview backend and frontend are for Docker regions at r.yaml:9:46 — remove `preview`: on Kubernetes the preview is the Service `<name>-preview`, made by packfy-deploy",
                "services.web.rollout.analysis.http: an HTTP check of each new pod would be made from this machine, which reaches no pod of a cluster at r.yaml:9:78 — on Kubernetes judge the canary with `prometheus: {url, query, max}` over the service's metrics (the pods' readiness is checked at every step)",
            ],
        ),
    ]);
}
