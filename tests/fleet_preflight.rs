//! A multi-region run checks every region before its first wave: a mistake in a later wave's
//! region file stops the run with nothing changed, and says where the mistake is, as a
//! single-region run does.

mod support;

use support::{code, stderr, unique_name, TestEnv};

fn region(host: &str, extra: &str) -> String {
    format!(
        "currency: USD\ntarget: {{docker: {{host: \"{host}\"}}}}\ntraffic: none\nservices:\n  web:\n    image: packfy-sample\n    replicas: 1\n    ports: [{{container: 8080}}]\n    health: {{http: {{path: /health}}, start_period: 1s, interval: 300ms, timeout: 250ms, deadline: 10s}}\n    rollout: {{bake: 0s}}\n{extra}"
    )
}

/// Two regions in two waves, `a` first; `b` gets `b_extra` under its service.
fn fleet(host: &str, b_extra: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let rd = dir.path().join("regions");
    std::fs::create_dir(&rd).unwrap();
    let tag: String = unique_name("pf")
        .replace('-', "")
        .chars()
        .take(10)
        .collect();
    let (a, b) = (format!("{tag}a"), format!("{tag}b"));
    std::fs::write(rd.join(format!("{a}.yaml")), region(host, "")).unwrap();
    std::fs::write(rd.join(format!("{b}.yaml")), region(host, b_extra)).unwrap();
    std::fs::write(
        rd.join("_defaults.yaml"),
        format!("waves: [[{a}], [{b}]]\n"),
    )
    .unwrap();
    (dir, a, b)
}

#[test]
fn a_mistake_in_a_later_wave_stops_the_run_before_the_first_wave() {
    // No engine is reached: validation comes first.
    let (dir, a, b) = fleet("unix:///nonexistent/docker.sock", "    replcas: 2\n");
    let out = support::run_cli(
        &mut support::cli(
            dir.path(),
            &["deploy", "--region", "all", "--version", "v1"],
        ),
        &[],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("unknown field 'replcas' in services.web at"),
        "{err}"
    );
    assert!(err.contains(&format!("{b}.yaml:11:5")), "{err}");
    assert!(!err.contains("Wave"), "a wave started: {err}");
    assert!(!err.contains(&format!("[{a}]")), "{a} was touched: {err}");
}

#[test]
fn an_unresolvable_secret_in_a_later_wave_stops_the_run_with_nothing_changed() {
    let Some(env) = TestEnv::get() else { return };
    let (dir, a, b) = fleet(
        &env.docker_host,
        "    env: {TOKEN: {secret: \"env:PACKFY_TEST_PREFLIGHT_UNSET\"}}\n",
    );
    let version = unique_name("v");
    let _image = env.build_sample(&env.docker_host, &version, &[]);
    let mut cmd = support::cli(
        dir.path(),
        &["deploy", "--region", "all", "--version", &version],
    );
    cmd.env_remove("PACKFY_TEST_PREFLIGHT_UNSET");
    let out = support::run_cli(&mut cmd, &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{b}: secret env:PACKFY_TEST_PREFLIGHT_UNSET")),
        "{err}"
    );
    assert!(
        err.contains("no wave started, nothing was changed"),
        "{err}"
    );
    let running = support::container_ids(&env.docker_host, &[&format!("packfy.region={a}")], true);
    assert!(running.is_empty(), "{a} got containers: {running:?}");
}
