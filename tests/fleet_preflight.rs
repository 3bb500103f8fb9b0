//! A multi-region run checks every region before its first wave: a mistake in a later wave's
//! region file stops the run with nothing changed, and says where the mistake is, as a
//! single-region run does.

mod support;

use support::fixture::{region_name, Health, RegionFile, RegionsDir, Rollout, Service};
use support::{code, stderr, unique_name, TestEnv};

/// The sample app on the Docker engine `host`, one replica, no traffic layer.
fn region(host: &str) -> RegionFile {
    let web = Service::new("web", "packfy-sample")
        .replicas(1)
        .port(8080)
        .health(
            Health::http("/health")
                .start_period("1s")
                .interval("300ms")
                .timeout("250ms")
                .deadline("10s"),
        )
        .rollout(Rollout::new().bake("0s"));
    RegionFile::docker(host)
        .currency("USD")
        .traffic_none()
        .service(web)
}

/// Two regions in two waves, `a` first; `b` is changed by `change_b`.
fn fleet(
    host: &str,
    change_b: impl FnOnce(RegionFile) -> RegionFile,
) -> (RegionsDir, String, String) {
    let dir = RegionsDir::new();
    let tag = region_name("pf", 10);
    let (a, b) = (format!("{tag}a"), format!("{tag}b"));
    dir.write(&a, &region(host));
    dir.write(&b, &change_b(region(host)));
    dir.write("_defaults", &RegionFile::new().waves(&[&[&a], &[&b]]));
    (dir, a, b)
}

#[test]
fn a_mistake_in_a_later_wave_stops_the_run_before_the_first_wave() {
    // No engine is reached: validation comes first.
    // The typo is a line of its own under the service's settings (line 11 of the file).
    let (dir, a, b) = fleet("unix:///nonexistent/docker.sock", |b| {
        b.extra("    replcas: 2\n")
    });
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
    let (dir, a, b) = fleet(&env.docker_host, |b| {
        b.map_service("web", |web| {
            web.secret_env("TOKEN", "env:PACKFY_TEST_PREFLIGHT_UNSET")
        })
    });
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
