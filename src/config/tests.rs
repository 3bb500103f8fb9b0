//! Reading a regions directory, layering a region in an environment, and validating a whole
//! directory: what `validate`, `diff` and `explain` are built on.

use std::path::Path;

use super::*;

const DEFAULTS: &str = "\
version: 1.0.0
services:
  web:
    image: r/web
    replicas: 3
    ports: [{container: 80}]
environments:
  production:
    services:
      web: {replicas: 5}
";

fn dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(d.path().join(name), text).unwrap();
    }
    d
}

/// Problems as printed, with the temporary directory replaced by `R`.
fn shown(d: &Path, problems: &[Diagnostic]) -> Vec<String> {
    let prefix = d.display().to_string();
    problems
        .iter()
        .map(|p| p.to_string().replace(&prefix, "R"))
        .collect()
}

fn validate_all(d: &Path) -> Vec<String> {
    let r = Regions::load(d).unwrap();
    let names: Vec<String> = r.names().iter().map(|s| s.to_string()).collect();
    shown(d, &r.validate(&names, &Environment::ALL))
}

const MX: &str = "currency: MXN\ntarget: {docker: {host: 'unix:///x'}}\n";

#[test]
fn layers_apply_in_order_and_every_value_knows_its_file() {
    let d = dir(&[
        ("_defaults.yaml", DEFAULTS),
        (
            "mx.yaml",
            "currency: MXN\ntarget: {docker: {host: 'unix:///x'}}\nservices: {web: {replicas: 4}}\nenvironments:\n  production:\n    services: {web: {replicas: 6}}\n",
        ),
        (
            "co.yaml",
            "currency: COP\ntarget: {docker: {host: 'unix:///x'}}\nservices: {web: {replicas: 4}}\n",
        ),
    ]);
    let r = Regions::load(d.path()).unwrap();
    let p = d.path().display().to_string();
    let replicas = |region: &str, env| {
        let eff = r.effective(region, env).unwrap();
        let n = eff.tree.lookup("services.web.replicas").unwrap().clone();
        let cfg = eff.config.unwrap();
        assert_eq!(
            i64::from(cfg.services["web"].replicas),
            match n.value {
                Value::Int(i) => i,
                _ => panic!(),
            }
        );
        let history: Vec<String> = n
            .overridden
            .iter()
            .map(|o| format!("{}@{}", o.display(), o.loc))
            .collect();
        (
            n.display(),
            n.loc.to_string().replace(&p, "R"),
            history.join(" ").replace(&p, "R"),
        )
    };
    // defaults → region → defaults' overlay → region's overlay
    assert_eq!(
        replicas("mx", Environment::Production),
        (
            "6".into(),
            "R/mx.yaml:6:32".into(),
            "3@R/_defaults.yaml:5:15 4@R/mx.yaml:3:28 5@R/_defaults.yaml:10:23".into()
        )
    );
    assert_eq!(
        replicas("mx", Environment::Staging),
        (
            "4".into(),
            "R/mx.yaml:3:28".into(),
            "3@R/_defaults.yaml:5:15".into()
        )
    );
    // the defaults' overlay still beats the region's base value
    assert_eq!(
        replicas("co", Environment::Production),
        (
            "5".into(),
            "R/_defaults.yaml:10:23".into(),
            "3@R/_defaults.yaml:5:15 4@R/co.yaml:3:28".into()
        )
    );
    // `environments:` itself never reaches the effective tree
    let eff = r.effective("mx", Environment::Production).unwrap();
    assert!(eff.tree.get("environments").is_none());
    assert!(r.effective("nowhere", Environment::Production).is_none());
}

#[test]
fn null_in_an_overlay_removes_for_that_environment_only() {
    let d = dir(&[
        ("_defaults.yaml", DEFAULTS),
        (
            "mx.yaml",
            &format!("{MX}services:\n  worker: {{image: r/worker}}\nenvironments:\n  development:\n    services: {{worker: null}}\n"),
        ),
    ]);
    let r = Regions::load(d.path()).unwrap();
    let dev = r.effective("mx", Environment::Development).unwrap();
    assert!(dev.tree.lookup("services.worker").is_none());
    assert!(!dev.config.unwrap().services.contains_key("worker"));
    let prod = r.effective("mx", Environment::Production).unwrap();
    assert!(prod.config.unwrap().services.contains_key("worker"));
}

#[test]
fn a_release_step_is_layered_like_every_key() {
    // The step is written once in the defaults; production declares it reversible and the
    // region gives it more time, and each value knows the file it came from.
    let d = dir(&[
        (
            "_defaults.yaml",
            "services:\n  web:\n    image: r/web\n    release: {command: [migrate, up]}\nenvironments:\n  production:\n    services: {web: {release: {reversible: true}}}\n",
        ),
        ("mx.yaml", &format!("{MX}services: {{web: {{release: {{timeout: 20m}}}}}}\n")),
    ]);
    let r = Regions::load(d.path()).unwrap();
    let dev = r.effective("mx", Environment::Development).unwrap();
    let step = dev.config.unwrap().services["web"].release.clone().unwrap();
    assert_eq!(step.argv(), ["migrate", "up"]);
    assert_eq!(step.timeout.to_string(), "20m");
    assert!(!step.reversible, "one-way unless declared reversible");
    let prod = r.effective("mx", Environment::Production).unwrap();
    assert!(
        prod.config.unwrap().services["web"]
            .release
            .as_ref()
            .unwrap()
            .reversible
    );
    let loc = &prod
        .tree
        .lookup("services.web.release.timeout")
        .unwrap()
        .loc;
    assert!(loc.to_string().contains("mx.yaml"), "{loc}");
}

#[test]
fn a_valid_directory_has_no_problems() {
    let d = dir(&[
        ("_defaults.yaml", DEFAULTS),
        ("mx.yaml", MX),
        ("notes.txt", "ignored"),
    ]);
    assert_eq!(validate_all(d.path()), Vec::<String>::new());
    assert_eq!(Regions::load(d.path()).unwrap().names(), ["mx"]);
}

#[test]
fn a_missing_directory_is_a_problem_with_a_hint() {
    let e = Regions::load(Path::new("/nonexistent/regions")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read the regions directory /nonexistent/regions: No such file or directory (os error 2) — run from the repository root, or pass --regions-dir DIR"
    );
}

#[test]
fn file_names_and_shapes() {
    let d = dir(&[
        ("_defaults.yaml", DEFAULTS),
        ("mx.yaml", MX),
        ("Costa Rica.yaml", MX),
        ("_draft.yaml", "not: checked\n"),
        ("mx.yml", MX),
        ("list.yaml", "- currency: MXN\n"),
        (
            "envs.yaml",
            &format!("{MX}environments:\n  prod: {{}}\n  qa: {{}}\n  staging: 3\n"),
        ),
        ("envlist.yaml", &format!("{MX}environments: [production]\n")),
    ]);
    assert_eq!(
        validate_all(d.path()),
        [
            "'Costa Rica' is not a valid region name at R/Costa Rica.yaml:1:1 — name region files in lower case with letters, digits and '-', e.g. costa-rica.yaml",
            "environments: expected a mapping, found a list at R/envlist.yaml:3:15",
            "unknown environment 'prod' at R/envs.yaml:4:3 — did you mean 'production'?",
            "unknown environment 'qa' at R/envs.yaml:5:3 — environments are development, staging and production",
            "environments.staging: expected a mapping, found an integer at R/envs.yaml:6:12",
            "a region file must be a mapping of settings, found a list at R/list.yaml:1:1 — start with keys such as `currency: MXN` and `services:`",
            "region 'mx' is already defined in R/mx.yaml at R/mx.yml:1:1 — keep one file per region",
        ]
    );
}

#[test]
fn unreadable_files() {
    let big = format!("a: \"{}\"\n", "x".repeat(yaml::MAX_FILE_BYTES as usize));
    let d = dir(&[
        ("_defaults.yaml", DEFAULTS),
        ("big.yaml", &big),
        ("empty.yaml", "\n\n"),
        ("ctrl.yaml", "currency: MXN\nlocale: es\u{7}MX\n"),
    ]);
    std::fs::write(d.path().join("bin.yaml"), b"currency: \xff\xfe\x00").unwrap();
    assert_eq!(
        validate_all(d.path()),
        [
            "the file is 1.0 MB; region files are limited to 1024 KiB at R/big.yaml:1:1 — a region file holds settings, not data; split or trim it",
            "the file is not UTF-8 text (byte 0xff) at R/bin.yaml:1:11 — region files are UTF-8 YAML; is this a binary file?",
            "control character U+0007 in the file at R/ctrl.yaml:2:11 — region files are plain YAML text; is this a binary file?",
            "the file is empty at R/empty.yaml:1:1 — a region file is a mapping of settings, e.g. `currency: MXN`",
        ]
    );
}

#[test]
fn a_problem_in_some_environments_names_them() {
    let d = dir(&[
        ("_defaults.yaml", DEFAULTS),
        (
            "mx.yaml",
            &format!("{MX}environments:\n  staging: {{services: {{web: {{replicas: 0}}}}}}\n  production: {{services: {{web: {{replicas: 0}}}}}}\n"),
        ),
    ]);
    assert_eq!(
        validate_all(d.path()),
        [
            "services.web.replicas: must be at least 1, got 0 (in staging) at R/mx.yaml:4:40 — to stop a service, remove it from the region",
            "services.web.replicas: must be at least 1, got 0 (in production) at R/mx.yaml:5:43 — to stop a service, remove it from the region",
        ]
    );
}

#[test]
fn a_mistake_overridden_in_every_environment_is_still_reported() {
    let d = dir(&[
        ("_defaults.yaml", DEFAULTS),
        (
            "mx.yaml",
            &format!("{MX}services: {{web: {{replicas: '4'}}}}\nenvironments:\n  development: {{services: {{web: {{replicas: 1}}}}}}\n  staging: {{services: {{web: {{replicas: 2}}}}}}\n"),
        ),
    ]);
    assert_eq!(
        validate_all(d.path()),
        ["services.web.replicas: expected an integer, found a string (\"4\") at R/mx.yaml:3:28 — remove the quotes: a quoted number is text"]
    );
}

#[test]
fn problems_come_in_file_order_and_type_errors_do_not_hide_rules() {
    let d = dir(&[
        ("_defaults.yaml", DEFAULTS),
        (
            "mx.yaml",
            "currency: MXN\n\
             target: {docker: {host: 'unix:///x'}}\n\
             keep_releases: many\n\
             services:\n\
             \x20 web: {ports: [{container: 80, host: 3000}]}\n\
             \x20 grafana: {image: grafana/grafana, replicas: 1, rollout: {max_surge: 0, max_unavailable: 1}, ports: [{container: 3000, host: 3000}]}\n\
             currrency: MXN\n",
        ),
    ]);
    assert_eq!(
        validate_all(d.path()),
        [
            "keep_releases: expected an integer, found a string (\"many\") at R/mx.yaml:3:16",
            "services.web.ports.0.host: a fixed host port fits one container, but replicas and rolling updates run several at R/mx.yaml:5:39 — leave `host` unset: each container gets its own port and HAProxy routes to it",
            "services.grafana.rollout.max_unavailable: 1 would let all 1 replica(s) be down at once at R/mx.yaml:6:91 — keep it below replicas, or use max_surge for zero downtime",
            "services.grafana.ports.0.host: port 3000/tcp is already used by service 'web' at R/mx.yaml:6:127 — two services of one region cannot share a host port; pick another",
            "unknown field 'currrency' at R/mx.yaml:7:1 — did you mean 'currency'?",
        ]
    );
}

#[test]
fn a_broken_defaults_file_is_reported_alone() {
    let d = dir(&[
        ("_defaults.yaml", "services:\n\tweb: {}\n"),
        ("mx.yaml", MX),
    ]);
    assert_eq!(
        validate_all(d.path()),
        ["invalid YAML: tabs disallowed within this context (block indentation) at R/_defaults.yaml:2:1 — replace the tab with spaces; YAML does not allow tabs for indentation"]
    );
}

#[test]
fn shares_are_summed_only_over_every_region() {
    let share = |n: u32| format!("{MX}capacity_share: {n}\n");
    let d = dir(&[
        ("_defaults.yaml", DEFAULTS),
        ("a.yaml", &share(60)),
        ("b.yaml", &share(40)),
    ]);
    assert_eq!(validate_all(d.path()), Vec::<String>::new());
    // b unreadable: a's 60% alone says nothing
    std::fs::write(d.path().join("b.yaml"), "capacity_share: [40\n").unwrap();
    assert_eq!(validate_all(d.path()).len(), 1);
    // b with a type error elsewhere: its share still counts
    std::fs::write(
        d.path().join("b.yaml"),
        format!("{}keep_releases: x\n", share(40)),
    )
    .unwrap();
    assert_eq!(
        validate_all(d.path()),
        ["keep_releases: expected an integer, found a string (\"x\") at R/b.yaml:4:16"]
    );
    // b's share itself wrong: no sum
    std::fs::write(
        d.path().join("b.yaml"),
        format!("{MX}capacity_share: forty\n"),
    )
    .unwrap();
    assert_eq!(
        validate_all(d.path()),
        ["capacity_share: expected a number, found a string (\"forty\") at R/b.yaml:3:17"]
    );
    // all readable, wrong sum: reported
    std::fs::write(d.path().join("b.yaml"), share(30)).unwrap();
    assert_eq!(
        validate_all(d.path()),
        ["capacity shares sum to 90%, not 100% at R/a.yaml:3:17 — shares: a 60, b 30"]
    );
    // only some regions asked for: no sum either
    let r = Regions::load(d.path()).unwrap();
    assert_eq!(r.validate(&["a".into()], &Environment::ALL), vec![]);
}

#[test]
fn unknown_region_names_get_a_did_you_mean() {
    let d = dir(&[
        ("_defaults.yaml", DEFAULTS),
        ("mexico.yaml", MX),
        ("cuba.yaml", MX),
    ]);
    let r = Regions::load(d.path()).unwrap();
    assert!(r.check_name("cuba").is_ok());
    let e = r.check_name("mexco").unwrap_err();
    assert_eq!(e.hint.as_deref(), Some("did you mean 'mexico'?"));
    let e = r.check_name("zz").unwrap_err();
    assert_eq!(e.hint.as_deref(), Some("regions are: cuba, mexico"));
    assert!(e.message.starts_with("no region 'zz' in "), "{e}");
}
