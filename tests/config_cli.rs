//! The config commands driven through the built binary: exact stdout, stderr and exit codes of
//! validate, diff, explain, render, schema and completions, on the fixtures in
//! tests/fixtures/config/.

mod config_common;
mod support;

use config_common::*;
use serde_json::{json, Value};

fn basic(args: &[&str]) -> Run {
    run(&fixture("basic"), args)
}

#[test]
fn validate_ok() {
    let r = basic(&["validate"]);
    r.code(0).no_panic();
    assert_eq!(
        r.stdout,
        "ok: 3 region(s) valid in development, staging, production: alpha, beta, gamma\n"
    );
    assert_eq!(r.stderr, "");

    let r = basic(&["validate", "beta", "--env", "staging"]);
    r.code(0);
    assert_eq!(r.stdout, "ok: 1 region(s) valid in staging: beta\n");

    let r = basic(&["validate", "-o", "json"]);
    r.code(0);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        v,
        json!({"valid": true, "regions": ["alpha", "beta", "gamma"], "environments": ["development", "staging", "production"]})
    );
}

#[test]
fn validate_reports_every_problem_of_a_run() {
    let r = run(&fixture("broken"), &["validate"]);
    r.code(2).no_panic();
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr,
        "\
error: unknown field 'replcas' in services.api at regions/alpha.yaml:9:5 — did you mean 'replicas'?
error: services.api.env.STRIPE_SECRET_KEY: looks like a secret written in plain text at regions/alpha.yaml:11:26 — write `STRIPE_SECRET_KEY: {secret: \"env:STRIPE_SECRET_KEY\"}` and set it where the deploy runs; secrets never belong in region files
error: services.frontend.ports.0.host: a fixed host port fits one container, but replicas and rolling updates run several at regions/alpha.yaml:14:37 — leave `host` unset: each container gets its own port and HAProxy routes to it
error: services.grafana.replicas: must not be negative, got -1 at regions/alpha.yaml:17:15
error: services.grafana.ports.0.host: port 3000/tcp is already used by service 'frontend' at regions/alpha.yaml:18:37 — two services of one region cannot share a host port; pick another
error: services.grafana.health.interval: 'soon' is not a duration at regions/alpha.yaml:19:24 — write a number with a unit: ms, s, m or h (e.g. '10s', '1m30s')
error: unknown environment 'prod' at regions/alpha.yaml:21:3 — did you mean 'production'?
error: capacity shares sum to 90%, not 100% at regions/beta.yaml:4:17 — shares: beta 60, gamma 30
error: regions without a capacity_share while others have one: alpha at regions/beta.yaml:4:17 — give every region a share; `capacity_share: 0` for a region that takes no traffic
error: more than one primary region: beta, gamma at regions/gamma.yaml:3:10 — exactly one region holds the master database; set `primary: false` on the others
error: 10 problems; nothing was changed
"
    );
}

#[test]
fn validate_problems_as_json() {
    let r = run(&fixture("broken"), &["validate", "alpha", "-o", "json"]);
    r.code(2).no_panic();
    assert_eq!(r.stdout, "");
    let v: Value = serde_json::from_str(&r.stderr).unwrap();
    assert_eq!(v["exit_code"], 2);
    assert_eq!(v["error"], "7 problem(s) in the configuration");
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(
        problems.len(),
        7,
        "only alpha's file and the defaults: {v:#}"
    );
    assert_eq!(
        problems[0],
        json!({"file": "regions/alpha.yaml", "line": 9, "column": 5, "message": "unknown field 'replcas' in services.api", "hint": "did you mean 'replicas'?"})
    );
    assert_eq!(
        problems[3],
        json!({"file": "regions/alpha.yaml", "line": 17, "column": 15, "message": "services.grafana.replicas: must not be negative, got -1", "hint": null})
    );
}

#[test]
fn validate_usage_errors() {
    let r = basic(&["validate", "alpah"]);
    r.code(2).no_panic();
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr,
        "error: no region 'alpah' in regions\n  hint: did you mean 'alpha'?\n"
    );

    let r = basic(&["validate", "--env", "prod-eu"]);
    r.code(2).no_panic();
    assert!(
        r.stderr.contains(
            "unknown environment 'prod-eu' (expected development, staging or production)"
        ),
        "{r}"
    );

    let r = basic(&["--regions-dir", "nowhere", "validate"]);
    r.code(2).no_panic();
    assert_eq!(
        r.stderr,
        "error: cannot read the regions directory nowhere: No such file or directory (os error 2) — run from the repository root, or pass --regions-dir DIR\n"
    );
}

const DIFF_ALPHA_BETA: &str = "\
--- alpha (production)
+++ beta (production)
@@ -1,5 +1,5 @@
 app: shop
-currency: MXN
-locale: es-MX
+currency: EUR
+locale: es-ES
 services.api.autoscale.cpu: 70
 services.api.autoscale.max: 50
@@ -7,6 +7,4 @@
 services.api.autoscale.min: 3
 services.api.env.JWT_SECRET: <secret:env:SHOP_JWT_SECRET>
-services.api.env.LOG_LEVEL: info
-services.api.env.STRIPE_KEY: <secret:file:/run/secrets/stripe>
 services.api.health.healthy_threshold: 2
 services.api.health.http.path: /health
@@ -17,10 +15,15 @@
 services.api.image: registry.example/shop/api
 services.api.ports.0.container: 8000
-services.api.replicas: 6
+services.api.replicas: 5
 services.api.resources.limits.cpu: 1000m
 services.api.resources.limits.memory: 2Gi
 services.api.resources.requests.cpu: 500m
 services.api.resources.requests.memory: 1Gi
-settings.tax_rate: 0.16
-target.docker.host: ssh://deploy@alpha.example
+services.web.health.tcp: {}
+services.web.image: registry.example/shop/web
+services.web.ports.0.container: 3000
+services.web.replicas: 2
+settings.tax_rate: 0.21
+target.kubernetes.context: eu
+target.kubernetes.namespace: shop-beta
 version: 2.1.0
";

#[test]
fn diff_shows_differences_and_exits_1() {
    let r = basic(&["diff", "alpha", "beta"]);
    r.code(1).no_panic();
    assert_eq!(r.stdout, DIFF_ALPHA_BETA);
    assert_eq!(r.stderr, "");
}

#[test]
fn diff_of_equal_configurations_exits_0() {
    // gamma.yaml is a copy of alpha.yaml: the same values from other lines
    let r = basic(&["diff", "alpha", "gamma"]);
    r.code(0).no_panic();
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr,
        "        Same alpha and gamma (production) have the same effective configuration\n"
    );
    let r = basic(&["diff", "alpha", "gamma", "-q"]);
    r.code(0);
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("", ""));
}

#[test]
fn diff_follows_the_environment() {
    let r = basic(&["diff", "alpha", "beta", "--env", "development"]);
    r.code(1);
    assert!(r
        .stdout
        .starts_with("--- alpha (development)\n+++ beta (development)\n"));
    // development: both run 1 api replica, and no autoscaling
    assert!(!r.stdout.contains("services.api.replicas"), "{r}");
    assert!(!r.stdout.contains("autoscale"), "{r}");
    let r = run_in(
        &fixture("basic"),
        &["diff", "alpha", "beta"],
        &[("PACKFY_ENV", "staging")],
    );
    assert!(r.stdout.starts_with("--- alpha (staging)\n"), "{r}");
}

#[test]
fn diff_as_json() {
    let r = basic(&["diff", "alpha", "beta", "-o", "json"]);
    r.code(1).no_panic();
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let items = v.as_array().unwrap();
    let paths: Vec<&str> = items.iter().map(|i| i["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "currency",
            "locale",
            "services.api.env.LOG_LEVEL",
            "services.api.env.STRIPE_KEY",
            "services.api.replicas",
            "services.web.health.tcp",
            "services.web.image",
            "services.web.ports.0.container",
            "services.web.replicas",
            "settings.tax_rate",
            "target.docker.host",
            "target.kubernetes.context",
            "target.kubernetes.namespace",
        ]
    );
    for item in items {
        let keys: Vec<&String> = item.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["path", "left", "right", "left_origin", "right_origin"]
        );
    }
    assert_eq!(
        items[4],
        json!({"path": "services.api.replicas", "left": 6, "right": 5,
               "left_origin": "regions/alpha.yaml:15:23", "right_origin": "regions/_defaults.yaml:30:19"})
    );
    assert_eq!(
        items[2],
        json!({"path": "services.api.env.LOG_LEVEL", "left": "info", "right": null,
               "left_origin": "regions/_defaults.yaml:11:18", "right_origin": null})
    );
    assert_eq!(
        items[3]["left"], "<secret:file:/run/secrets/stripe>",
        "secrets are references, masked"
    );
    assert_eq!(items[9]["left"], 0.16);

    let r = basic(&["diff", "alpha", "gamma", "-o", "json"]);
    r.code(0);
    assert_eq!(r.stdout, "[]\n");
}

#[test]
fn diff_usage_errors() {
    let r = basic(&["diff", "alpha", "btea"]);
    r.code(2).no_panic();
    assert_eq!(
        r.stderr,
        "error: no region 'btea' in regions\n  hint: did you mean 'beta'?\n"
    );
    let r = basic(&["diff", "alpha"]);
    r.code(2).no_panic();
    assert!(
        r.stderr.contains("required arguments were not provided"),
        "{r}"
    );
}

const ESC: &str = "\x1b[";

#[test]
fn diff_colour_is_off_the_terminal_and_with_no_color() {
    let plain = basic(&["diff", "alpha", "beta"]);
    assert!(!plain.stdout.contains(ESC), "piped output has no colour");
    // forcing colour shows the test can see it…
    let forced = run_in(
        &fixture("basic"),
        &["diff", "alpha", "beta"],
        &[("CLICOLOR_FORCE", "1")],
    );
    assert!(forced.stdout.contains(ESC), "{forced}");
    assert!(forced.stdout.contains("-currency: MXN"), "{forced}");
    // …and NO_COLOR wins over it
    let no_color = run_in(
        &fixture("basic"),
        &["diff", "alpha", "beta"],
        &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")],
    );
    assert_eq!(no_color.stdout, DIFF_ALPHA_BETA);
}

/// On a real terminal (a pty from util-linux `script`), colour is on unless NO_COLOR is set.
#[test]
fn diff_colour_on_a_terminal() {
    let has_script = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        // under CI a missing part is a failure, never a silent skip
        assert!(
            !support::is_ci(),
            "util-linux `script` is needed for the terminal test"
        );
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let on_tty = |no_color: bool| {
        let mut cmd = std::process::Command::new("script");
        cmd.current_dir(fixture("basic"))
            .args(["-qec", &format!("{BIN} diff alpha beta"), "/dev/null"])
            .env("TERM", "xterm-256color")
            .env_remove("CLICOLOR_FORCE")
            .env_remove("CLICOLOR")
            .env_remove("NO_COLOR")
            .env_remove("PACKFY_ENV");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
    };
    let coloured = on_tty(false);
    assert!(coloured.contains(ESC), "{coloured:?}");
    let plain = on_tty(true);
    assert!(plain.contains("-currency: MXN"), "{plain:?}");
    assert!(!plain.contains(ESC), "{plain:?}");
}

#[test]
fn explain_a_value_and_what_it_overrode() {
    let r = basic(&["explain", "alpha", "services.api.replicas"]);
    r.code(0).no_panic();
    assert_eq!(
        r.stdout,
        "\
services.api.replicas = 6    (alpha, production)
  set at regions/alpha.yaml:15:23
  overrides 5 from regions/_defaults.yaml:30:19
  overrides 3 from regions/_defaults.yaml:7:15
"
    );
    let r = basic(&[
        "explain",
        "alpha",
        "services.api.replicas",
        "--env",
        "staging",
    ]);
    assert_eq!(
        r.stdout,
        "services.api.replicas = 3    (alpha, staging)\n  set at regions/_defaults.yaml:7:15\n"
    );
}

#[test]
fn explain_a_map_lists_its_leaves() {
    let r = basic(&["explain", "beta", "services.web.ports"]);
    r.code(0);
    assert_eq!(
        r.stdout,
        "\
services.web.ports = [{container: 3000}]    (beta, production)
  set at regions/beta.yaml:13:12
  services.web.ports.0.container = 3000    (regions/beta.yaml:13:25)
"
    );
}

#[test]
fn explain_removed_defaulted_and_unknown_keys() {
    let r = basic(&["explain", "beta", "services.api.env.LOG_LEVEL"]);
    r.code(0);
    assert_eq!(
        r.stdout,
        "services.api.env.LOG_LEVEL is not set in beta (production): removed by null at regions/beta.yaml:17:18 (it was info from regions/_defaults.yaml:11:18)\n"
    );
    let r = basic(&["explain", "beta", "services.web.rollout.max_surge"]);
    r.code(0);
    assert_eq!(
        r.stdout,
        "services.web.rollout.max_surge = 1    (beta, production)\n  built-in default (no region file sets it)\n"
    );
    let r = basic(&["explain", "beta", "services.web.replcas"]);
    r.code(2).no_panic();
    assert_eq!(
        r.stderr,
        "error: services.web.replcas is not set in beta (production)\n  hint: did you mean 'services.web.replicas'?\n"
    );
    let r = basic(&["explain", "beta", "nope"]);
    r.code(2);
    assert_eq!(
        r.stderr,
        "error: nope is not set in beta (production)\n  hint: keys under the top level: app, version, services, currency, locale, target, settings\n"
    );
}

#[test]
fn explain_as_json() {
    let r = basic(&["explain", "alpha", "services.api.replicas", "-o", "json"]);
    r.code(0);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        v,
        json!({
            "region": "alpha", "environment": "production", "key": "services.api.replicas",
            "value": 6, "origin": "regions/alpha.yaml:15:23",
            "overrides": [
                {"value": 3, "origin": "regions/_defaults.yaml:7:15"},
                {"value": 5, "origin": "regions/_defaults.yaml:30:19"},
            ],
            "leaves": [],
        })
    );
    let r = basic(&[
        "explain",
        "beta",
        "services.api.env.LOG_LEVEL",
        "-o",
        "json",
    ]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["value"], Value::Null);
    assert_eq!(v["removed_at"], "regions/beta.yaml:17:18");
    assert_eq!(v["removed_value"], "info");
    assert_eq!(v["removed_origin"], "regions/_defaults.yaml:11:18");
}

/// A scratch copy of the basic fixture with the repository's templates beside it.
fn scratch() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    copy_dir(&fixture("basic/regions"), &d.path().join("regions"));
    copy_dir(&root().join("templates"), &d.path().join("templates"));
    d
}

#[test]
fn render_writes_manifests_per_region_and_environment() {
    let d = scratch();
    let r = run(d.path(), &["render"]);
    r.code(0).no_panic();
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr,
        "    Rendered 19 manifest(s) into manifests (19 changed)\n"
    );
    // only beta is on Kubernetes; production adds the api's autoscaler
    let mut want = Vec::new();
    for env in ["development", "production", "staging"] {
        for svc in ["api", "web"] {
            for kind in ["configmap", "deployment", "hpa", "service"] {
                if kind != "hpa" || (env == "production" && svc == "api") {
                    want.push(format!("beta/{env}/{svc}-{kind}.yaml"));
                }
            }
        }
    }
    assert_eq!(files_under(&d.path().join("manifests")), want);

    // a second render changes nothing, and the check is clean
    let r = run(d.path(), &["render"]);
    assert_eq!(
        r.stderr,
        "    Rendered 19 manifest(s) into manifests (0 changed)\n"
    );
    let r = run(d.path(), &["render", "--check"]);
    r.code(0);
    assert_eq!(
        r.stderr,
        "       Fresh 19 manifest(s) match a fresh render\n"
    );
}

#[test]
fn render_one_region_one_environment_elsewhere() {
    let d = scratch();
    let out = d.path().join("elsewhere");
    let r = run(
        d.path(),
        &[
            "render",
            "--region",
            "beta",
            "--env",
            "staging",
            "--out",
            out.to_str().unwrap(),
            "--image-tag",
            "2.2.0-rc1",
        ],
    );
    r.code(0).no_panic();
    assert_eq!(
        files_under(&out),
        [
            "beta/staging/api-configmap.yaml",
            "beta/staging/api-deployment.yaml",
            "beta/staging/api-service.yaml",
            "beta/staging/web-configmap.yaml",
            "beta/staging/web-deployment.yaml",
            "beta/staging/web-service.yaml",
        ]
    );
    let deployment = std::fs::read_to_string(out.join("beta/staging/api-deployment.yaml")).unwrap();
    assert!(
        deployment.contains("image: \"registry.example/shop/api:2.2.0-rc1\""),
        "{deployment}"
    );
}

#[test]
fn render_check_names_stale_missing_and_extra_files() {
    let d = scratch();
    run(d.path(), &["render"]).code(0);
    let m = d.path().join("manifests/beta");
    std::fs::write(m.join("production/api-hpa.yaml"), "edited by hand\n").unwrap();
    std::fs::remove_file(m.join("staging/web-service.yaml")).unwrap();
    std::fs::write(m.join("development/old-deployment.yaml"), "gone service\n").unwrap();
    std::fs::create_dir_all(d.path().join("manifests/alpha/production")).unwrap();
    std::fs::write(
        d.path()
            .join("manifests/alpha/production/api-deployment.yaml"),
        "now docker\n",
    )
    .unwrap();

    let r = run(d.path(), &["render", "--check"]);
    r.code(1).no_panic();
    assert_eq!(
        r.stdout,
        "\
extra: manifests/beta/development/old-deployment.yaml
missing: manifests/beta/staging/web-service.yaml
stale: manifests/beta/production/api-hpa.yaml
extra: manifests/alpha/production/api-deployment.yaml
"
    );
    assert_eq!(
        r.stderr,
        "error: 4 manifest(s) differ from a fresh render; run `packfy-deploy render` and commit the result\n"
    );
    // rendering repairs all of it
    run(d.path(), &["render"]).code(0);
    run(d.path(), &["render", "--check"]).code(0);
    assert!(!d.path().join("manifests/alpha").exists());
}

#[test]
fn render_refuses_a_docker_region_and_a_bad_configuration() {
    let d = scratch();
    let r = run(d.path(), &["render", "--region", "alpha"]);
    r.code(2).no_panic();
    assert_eq!(
        r.stderr,
        "error: region 'alpha' targets Docker; render is for Kubernetes regions\n  hint: Docker regions deploy containers directly; `plan --region` shows what would run\n"
    );
    assert!(!d.path().join("manifests").exists(), "nothing written");

    let r = run(d.path(), &["render", "--region", "omega"]);
    r.code(2);
    let r = run(d.path(), &["render", "--templates", "nowhere"]);
    r.code(2).no_panic();
    assert!(
        r.stderr
            .starts_with("error: cannot read template nowhere/configmap.yaml.j2: "),
        "{r}"
    );

    std::fs::write(
        d.path().join("regions/beta.yaml"),
        "currency: EUR\ntarget: {kubernetes: {namespace: b}}\nservices: {web: {replicas: 0}}\n",
    )
    .unwrap();
    let r = run(d.path(), &["render", "--region", "beta"]);
    r.code(2).no_panic();
    assert!(
        r.stderr
            .contains("services.web.replicas: must be at least 1, got 0 at regions/beta.yaml:3:28"),
        "{r}"
    );
}

#[test]
fn schema_is_a_json_schema_the_region_files_satisfy() {
    let r = basic(&["schema"]);
    r.code(0).no_panic();
    let schema: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    jsonschema::meta::validate(&schema).expect("a valid JSON Schema");
    let validator = jsonschema::validator_for(&schema).unwrap();

    let mut files = Vec::new();
    for dir in [root().join("regions"), fixture("basic/regions")] {
        for e in std::fs::read_dir(dir).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    assert!(files.len() >= 10);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_saphyr::from_str(&text).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }

    // and it does reject mistakes, the way an editor would show them
    for bad in [
        "services: {web: {replcas: 3}}",
        "services: {web: {replicas: -1}}",
        "lock_ttl: 15 minutes",
        "environments: {prod: {}}",
        "traffic: nginx",
        "services: {web: {env: {KEY: {secrt: 'env:X'}}}}",
    ] {
        let doc: Value = serde_saphyr::from_str(bad).unwrap();
        assert!(!validator.is_valid(&doc), "the schema accepts {bad}");
    }
}

#[test]
fn the_committed_schema_is_fresh() {
    let r = basic(&["schema"]);
    let committed = std::fs::read_to_string(root().join("schema/region.schema.json"))
        .expect("schema/region.schema.json (regions/_defaults.yaml points editors at it)");
    assert!(
        committed == r.stdout,
        "schema/region.schema.json is stale: run `cargo run -- schema > schema/region.schema.json`"
    );
}

#[test]
fn completions() {
    let r = basic(&["completions", "bash"]);
    r.code(0).no_panic();
    assert!(r.stdout.contains("complete -F _packfy__deploy"), "{r}");
    // bash loads it and completes a subcommand from its prefix
    let script = format!(
        "source <({BIN} completions bash) && complete -p packfy-deploy >/dev/null && \
         COMP_WORDS=(packfy-deploy expl) COMP_CWORD=1 && \
         _packfy__deploy packfy-deploy expl packfy-deploy && echo \"${{COMPREPLY[@]}}\""
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "explain\n");

    let r = basic(&["completions", "tcsh"]);
    r.code(2).no_panic();
    assert!(r.stderr.contains("invalid value 'tcsh'"), "{r}");
}
