//! Every message the typed deserializer records, with its exact text, location and hint, and
//! proof that it keeps going after a problem.

use std::sync::Arc;

use super::*;
use crate::config::model::{EnvValue, RegionConfig};
use crate::config::yaml;

fn typed(text: &str) -> Typed<RegionConfig> {
    let tree = yaml::parse(&Arc::from("r.yaml"), text).expect("valid YAML");
    from_node_partial(&tree, "")
}

fn problems(text: &str) -> Vec<String> {
    typed(text).problems.iter().map(|d| d.to_string()).collect()
}

fn check_cases(cases: &[(&str, &str, &[&str])]) {
    crate::config::check_cases(cases, problems);
}

#[test]
fn type_mismatches() {
    check_cases(&[
        (
            "string for an integer",
            "keep_releases: five\n",
            &["keep_releases: expected an integer, found a string (\"five\") at r.yaml:1:16"],
        ),
        (
            "quoted integer",
            "keep_releases: '5'\n",
            &["keep_releases: expected an integer, found a string (\"5\") at r.yaml:1:16 — remove the quotes: a quoted number is text"],
        ),
        (
            "float for an integer",
            "keep_releases: 5.0\n",
            &["keep_releases: expected an integer, found a number (5.0) at r.yaml:1:16"],
        ),
        (
            "boolean for an integer",
            "keep_releases: true\n",
            &["keep_releases: expected an integer, found a boolean (true) at r.yaml:1:16"],
        ),
        (
            "list for an integer",
            "keep_releases: [5]\n",
            &["keep_releases: expected an integer, found a list at r.yaml:1:16"],
        ),
        (
            "integer for a string",
            "currency: 484\n",
            &["currency: expected a string, found an integer (484) at r.yaml:1:11 — quote the value to make it a string"],
        ),
        (
            "boolean for a string (the Norway problem is YAML 1.1's; 1.2 still types `true`)",
            "services: {web: {image: true}}\n",
            &["services.web.image: expected a string, found a boolean (true) at r.yaml:1:25 — quote the value to make it a string"],
        ),
        (
            "mapping for a string",
            "country: {name: Cuba}\n",
            &["country: expected a string, found a mapping at r.yaml:1:10"],
        ),
        (
            "string for a number",
            "capacity_share: '40'\n",
            &["capacity_share: expected a number, found a string (\"40\") at r.yaml:1:17 — remove the quotes: a quoted number is text"],
        ),
        (
            "quoted boolean",
            "primary: 'true'\n",
            &["primary: expected true or false, found a string (\"true\") at r.yaml:1:10 — remove the quotes: a quoted boolean is text"],
        ),
        (
            "yes for a boolean",
            "primary: yes\n",
            &["primary: expected true or false, found a string (\"yes\") at r.yaml:1:10 — write true or false; YAML 1.2 reads yes/no/on/off as text"],
        ),
        (
            "integer for a boolean",
            "primary: 1\n",
            &["primary: expected true or false, found an integer (1) at r.yaml:1:10"],
        ),
        (
            "string for a list",
            "services: {web: {command: ./run.sh}}\n",
            &["services.web.command: expected a list, found a string (\"./run.sh\") at r.yaml:1:27"],
        ),
        (
            "list for a mapping",
            "services: [web, worker]\n",
            &["services: expected a mapping, found a list at r.yaml:1:11"],
        ),
        (
            "string for a struct",
            "services: {web: nginx}\n",
            &["services.web: expected a mapping, found a string (\"nginx\") at r.yaml:1:17"],
        ),
        (
            "long strings are cut",
            "keep_releases: abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz\n",
            &["keep_releases: expected an integer, found a string (\"abcdefghijklmnopqrstuvwxyzabcdefghijklmn…\") at r.yaml:1:16"],
        ),
    ]);
}

#[test]
fn ranges() {
    check_cases(&[
        (
            "negative replicas",
            "services: {web: {replicas: -1}}\n",
            &["services.web.replicas: must not be negative, got -1 at r.yaml:1:28"],
        ),
        (
            "port above 65535",
            "services: {web: {ports: [{container: 70000}]}}\n",
            &["services.web.ports.0.container: 70000 is out of range (0..=65535) at r.yaml:1:38"],
        ),
        (
            "replicas above u32",
            "services: {web: {replicas: 5000000000}}\n",
            &["services.web.replicas: 5000000000 is out of range (0..=4294967295) at r.yaml:1:28"],
        ),
    ]);
}

#[test]
fn checked_scalars() {
    check_cases(&[
        (
            "duration without a unit",
            "lock_ttl: 900\n",
            &["lock_ttl: a duration needs a unit, got 900 at r.yaml:1:11 — write '900s' for seconds or '900ms' for milliseconds"],
        ),
        (
            "duration with an unknown unit",
            "lock_ttl: 1d\n",
            &["lock_ttl: '1d' is not a duration at r.yaml:1:11 — write a number with a unit: ms, s, m or h (e.g. '10s', '1m30s')"],
        ),
        (
            "duration with a space",
            "lock_ttl: 15 m\n",
            &["lock_ttl: '15 m' is not a duration at r.yaml:1:11 — write a number with a unit: ms, s, m or h (e.g. '10s', '1m30s')"],
        ),
        (
            "duration as a list",
            "lock_ttl: [15m]\n",
            &["lock_ttl: expected a string, found a list at r.yaml:1:11"],
        ),
        (
            "bad quantity",
            "services: {web: {resources: {limits: {memory: 2GB}}}}\n",
            &["services.web.resources.limits.memory: '2GB' is not a resource quantity at r.yaml:1:47 — use Kubernetes notation: '500m' or '1' for CPU, '512Mi' or '1Gi' for memory"],
        ),
        (
            "numeric quantities are fine",
            "services: {web: {resources: {limits: {cpu: 0.5, memory: 1073741824}}}}\n",
            &[],
        ),
        (
            "bad secret reference",
            "services: {web: {env: {JWT_SECRET: {secret: 'vault:jwt'}}}}\n",
            &["services.web.env.JWT_SECRET.secret: 'vault:jwt' is not a secret reference at r.yaml:1:45 — write 'env:NAME' to read the deploying machine's environment, or 'file:PATH'"],
        ),
        (
            "secret reference to a bad variable name",
            "services: {web: {env: {JWT_SECRET: {secret: 'env:1JWT'}}}}\n",
            &["services.web.env.JWT_SECRET.secret: 'env:1JWT' is not a secret reference at r.yaml:1:45 — write 'env:NAME' to read the deploying machine's environment, or 'file:PATH'"],
        ),
    ]);
}

#[test]
fn unknown_keys() {
    check_cases(&[
        (
            "top level, close to a field",
            "currrency: MXN\n",
            &["unknown field 'currrency' at r.yaml:1:1 — did you mean 'currency'?"],
        ),
        (
            "nested, close to a field (the issue's example)",
            "services:\n  backend:\n    replcas: 3\n",
            &["unknown field 'replcas' in services.backend at r.yaml:3:5 — did you mean 'replicas'?"],
        ),
        (
            "nothing close",
            "target: {openshift: {}}\n",
            &["unknown field 'openshift' in target at r.yaml:1:10 — expected one of: docker, kubernetes"],
        ),
        (
            "unknown traffic kind",
            "traffic: {nginx: {}}\n",
            &["traffic: unknown kind 'nginx' at r.yaml:1:11 — expected one of: none, haproxy"],
        ),
        (
            "misspelt traffic kind",
            "traffic: {haproxxy: {}}\n",
            &["traffic: unknown kind 'haproxxy' at r.yaml:1:11 — did you mean 'haproxy'?"],
        ),
        (
            "unknown value of a string enum",
            "services: {dns: {ports: [{container: 53, protocol: udpp}]}}\n",
            &["services.dns.ports.0.protocol: unknown value 'udpp' at r.yaml:1:52 — did you mean 'udp'?"],
        ),
        (
            "enum of the wrong type",
            "traffic: 3\n",
            &["traffic: expected one of: none, haproxy, found an integer (3) at r.yaml:1:10"],
        ),
    ]);
}

#[test]
fn environment_values() {
    check_cases(&[
        (
            "scalars of every kind",
            "services: {web: {env: {A: x, B: 1, C: 1.5, D: true}}}\n",
            &[],
        ),
        (
            "misspelt secret",
            "services: {web: {env: {JWT_SECRET: {secrt: 'env:JWT'}}}}\n",
            &["unknown field 'secrt' in services.web.env.JWT_SECRET at r.yaml:1:37 — did you mean 'secret'?"],
        ),
        (
            "secret beside another key",
            "services: {web: {env: {JWT_SECRET: {secret: 'env:JWT', default: x}}}}\n",
            &["unknown field 'default' in services.web.env.JWT_SECRET at r.yaml:1:56 — an environment value is a plain value or {secret: \"env:NAME\"}"],
        ),
        (
            "empty mapping",
            "services: {web: {env: {JWT_SECRET: {}}}}\n",
            &["services.web.env.JWT_SECRET: an empty mapping at r.yaml:1:36 — write a value, or {secret: \"env:NAME\"} for a secret"],
        ),
        (
            "list",
            "services: {web: {env: {HOSTS: [a, b]}}}\n",
            &["services.web.env.HOSTS: expected a string, a number, a boolean or {secret: \"env:NAME\"}, found a list at r.yaml:1:31"],
        ),
    ]);
    let t = typed("services: {web: {env: {A: 1, B: {secret: 'env:B'}}}}\n");
    let env = &t.value.unwrap().services["web"].env;
    assert_eq!(env["A"], EnvValue::Plain("1".into()));
    assert_eq!(env["B"].to_string(), "<secret:env:B>");
}

/// Several mistakes in one file: every one is reported, in one run.
#[test]
fn every_problem_is_reported_not_only_the_first() {
    let text = "\
currrency: MXN
keep_releases: -2
lock_ttl: 10
traffic: {nginx: {}}
services:
  web:
    replcas: 3
    env: {JWT_SECRET: {secrt: 'env:J'}, LIST: [1]}
    health: {interval: soon}
    ports: [{container: http}]
";
    let t = typed(text);
    let got: Vec<String> = t.problems.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        got,
        [
            "unknown field 'currrency' at r.yaml:1:1 — did you mean 'currency'?",
            "keep_releases: must not be negative, got -2 at r.yaml:2:16",
            "lock_ttl: a duration needs a unit, got 10 at r.yaml:3:11 — write '10s' for seconds or '10ms' for milliseconds",
            "traffic: unknown kind 'nginx' at r.yaml:4:11 — expected one of: none, haproxy",
            "unknown field 'replcas' in services.web at r.yaml:7:5 — did you mean 'replicas'?",
            "unknown field 'secrt' in services.web.env.JWT_SECRET at r.yaml:8:24 — did you mean 'secret'?",
            "services.web.env.LIST: expected a string, a number, a boolean or {secret: \"env:NAME\"}, found a list at r.yaml:8:47",
            "services.web.health.interval: 'soon' is not a duration at r.yaml:9:24 — write a number with a unit: ms, s, m or h (e.g. '10s', '1m30s')",
            "services.web.ports.0.container: expected an integer, found a string (\"http\") at r.yaml:10:25",
        ]
    );
    // The value is still built, with stand-ins where the problems were.
    let cfg = t.value.expect("a recovered value");
    assert_eq!(cfg.keep_releases, 0);
    assert!(cfg.services.contains_key("web"));
    let mut poisoned = t.poisoned.clone();
    poisoned.sort();
    assert_eq!(
        poisoned,
        [
            "keep_releases",
            "lock_ttl",
            "services.web.env.JWT_SECRET",
            "services.web.env.LIST",
            "services.web.health.interval",
            "services.web.ports.0.container",
            "traffic",
        ]
    );
}

#[test]
fn a_clean_file_has_no_problems_and_nothing_poisoned() {
    let t = typed("currency: MXN\nservices: {web: {replicas: 2}}\n");
    assert!(t.problems.is_empty());
    assert!(t.poisoned.is_empty());
    assert_eq!(t.value.unwrap().services["web"].replicas, 2);
    assert!(from_node::<RegionConfig>(
        &yaml::parse(&Arc::from("r.yaml"), "primary: 1\n").unwrap(),
        ""
    )
    .is_err());
}

#[test]
fn the_root_is_called_the_file() {
    let tree = yaml::parse(&Arc::from("r.yaml"), "[1, 2]\n").unwrap();
    let e = from_node::<RegionConfig>(&tree, "").unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "the file: expected a mapping, found a list at r.yaml:1:1"
    );
}

#[test]
fn a_layer_is_typed_without_its_nulls_and_skipped_keys() {
    let tree = yaml::parse(
        &Arc::from("r.yaml"),
        "services:\n  frontend: null\n  api: {env: {OLD: null}, replicas: x}\nenvironments: {production: {}}\n",
    )
    .unwrap();
    let t: Typed<RegionConfig> = from_layer_partial(&tree, &["environments"]);
    let got: Vec<String> = t.problems.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        got,
        ["services.api.replicas: expected an integer, found a string (\"x\") at r.yaml:3:37"]
    );
    let cfg = t.value.unwrap();
    assert_eq!(cfg.services.keys().collect::<Vec<_>>(), ["api"]);
    assert!(cfg.services["api"].env.is_empty());
    // without the skip, `environments` is an unknown field of a region's settings
    let t: Typed<RegionConfig> = from_node_partial(&tree, "");
    assert!(
        t.problems[0]
            .to_string()
            .starts_with("unknown field 'environments' at r.yaml:4:1"),
        "{:?}",
        t.problems
    );
}
