//! Proof that the real test environment (`make env-up`, tests/env/) works: each part is
//! driven the way packfy-deploy will drive it. Without the environment these tests skip
//! (or fail, under CI=true): see tests/support.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::{
    docker, docker_try, http_get, http_request, parse_env_sh, parse_response, psql, run, stdout,
    unique_ident, unique_name, wait_http_status, wait_until, Container, HttpConnection, Image,
    TestEnv,
};

const STARTUP: Duration = Duration::from_secs(30);

/// The sample image built on the first engine answers `/health`, `/version` and `/` on a
/// published loopback port, with the region baked in by a build argument, and Docker's own
/// HEALTHCHECK (the binary's `healthcheck` subcommand) turns it healthy.
#[test]
fn sample_image_serves_on_a_published_loopback_port() {
    let Some(env) = TestEnv::get() else { return };
    let host = &env.docker_host;
    let version = unique_name("proof");
    let image = env.build_sample(
        host,
        &version,
        &[("PACKFY_REGION", "cuba"), ("PACKFY_CURRENCY", "CUP")],
    );
    let c = Container::run(
        host,
        &unique_name("proof-health"),
        ["-p", "127.0.0.1::8080", &image.reference],
    );
    let addr = c.published(8080);
    assert!(addr.starts_with("127.0.0.1:"), "published on {addr}");

    wait_http_status(&addr, "/health", 200, STARTUP);
    let (status, body) = http_get(&addr, "/health");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""status":"ok""#) && body.contains(&format!(r#""version":"{version}""#)),
        "{body}"
    );
    assert!(body.contains(r#""timestamp":""#), "{body}");
    assert_eq!(http_get(&addr, "/version"), (200, version.clone()));
    let (status, body) = http_get(&addr, "/");
    assert_eq!(status, 200);
    assert!(
        body.contains(r#""region":"cuba""#) && body.contains(r#""currency":"CUP""#),
        "{body}"
    );

    wait_until(STARTUP, "Docker to report the container healthy", || {
        stdout(&docker(
            host,
            ["inspect", "-f", "{{.State.Health.Status}}", &c.name],
        )) == "healthy"
    });
}

/// The behaviour switches, baked in by a build argument (one tag, one behaviour) or given
/// with `-e`, and the graceful stop: SIGTERM lets an in-flight `/slow` finish, exit code 0.
#[test]
fn sample_behaviour_switches_and_graceful_stop() {
    let Some(env) = TestEnv::get() else { return };
    let host = &env.docker_host;
    let plain = env.build_sample(host, &unique_name("proof-plain"), &[]);
    let never = env.build_sample(host, &unique_name("proof-never"), &[("NEVER_HEALTHY", "1")]);
    let p = ["-p", "127.0.0.1::8080"];
    // Started first, and unhealthy for long enough that its first answer is a 503 however
    // slowly a loaded machine starts it; it turns healthy while the other checks run.
    let late_after = Duration::from_secs(30);
    let late = Container::run(
        host,
        &unique_name("proof-late"),
        [
            p[0],
            p[1],
            "-e",
            &format!("HEALTHY_AFTER_SECS={}", late_after.as_secs()),
            &plain.reference,
        ],
    );
    let never_c = Container::run(
        host,
        &unique_name("proof-never"),
        [p[0], p[1], &never.reference],
    );
    let flaky = Container::run(
        host,
        &unique_name("proof-flaky"),
        [p[0], p[1], "-e", "ERROR_RATE=0.5", &plain.reference],
    );
    let dying = Container::run(
        host,
        &unique_name("proof-exit"),
        [p[0], p[1], "-e", "EXIT_AFTER_SECS=1", &plain.reference],
    );
    let slow = Container::run(
        host,
        &unique_name("proof-slow"),
        [p[0], p[1], &plain.reference],
    );

    // HEALTHY_AFTER_SECS: 503 first (the first answer, whenever it comes), 200 later.
    let late_addr = late.published(8080);
    let mut first = None;
    wait_until(STARTUP, "the late container to answer", || {
        first = http_request(&late_addr, "/health").ok();
        first.is_some()
    });
    let first = first.unwrap();
    assert_eq!(first.status, 503, "{}", first.body);
    assert!(
        first.body.contains(r#""status":"starting""#),
        "{}",
        first.body
    );

    // NEVER_HEALTHY baked into the image.
    let never_addr = never_c.published(8080);
    wait_until(STARTUP, "the never-healthy container to answer", || {
        http_request(&never_addr, "/health").is_ok()
    });
    assert_eq!(http_get(&never_addr, "/health").0, 503);
    assert_eq!(http_get(&never_addr, "/version").0, 200);

    // ERROR_RATE=0.5: every second request to `/` fails, deterministically.
    let flaky_addr = flaky.published(8080);
    wait_http_status(&flaky_addr, "/health", 200, STARTUP);
    let statuses: Vec<u16> = (0..6).map(|_| http_get(&flaky_addr, "/").0).collect();
    assert_eq!(statuses, [200, 500, 200, 500, 200, 500]);

    // EXIT_AFTER_SECS=1: the process exits with code 1.
    let code = stdout(&docker(host, ["wait", &dying.name]));
    assert_eq!(code, "1", "logs:\n{}", dying.logs());

    // SIGTERM during /slow: the request completes, the process exits 0. The request goes
    // on a connection that already served one, so it surely reached the app (through
    // docker-proxy) before the signal.
    let slow_addr = slow.published(8080);
    wait_http_status(&slow_addr, "/health", 200, STARTUP);
    let mut conn = HttpConnection::open(&slow_addr).unwrap();
    assert_eq!(conn.get("/version").unwrap().status, 200);
    conn.send("/slow?ms=1500").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    docker(host, ["stop", "-t", "10", &slow.name]);
    let resp = conn
        .read()
        .unwrap_or_else(|e| panic!("in-flight /slow: {e}; logs:\n{}", slow.logs()));
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(
        resp.header("connection"),
        Some("close"),
        "a draining server closes kept-alive connections"
    );
    let code = stdout(&docker(
        host,
        ["inspect", "-f", "{{.State.ExitCode}}", &slow.name],
    ));
    assert_eq!(code, "0", "logs:\n{}", slow.logs());

    // …and the late container has turned healthy meanwhile.
    wait_http_status(&late_addr, "/health", 200, late_after + STARTUP);
}

/// Build on one engine, push to the registry, pull on another engine and run it there: the
/// digest is the same on both.
#[test]
fn registry_carries_an_image_to_another_daemon() {
    let Some(env) = TestEnv::with_docker_hosts(2) else {
        return;
    };
    let (a, b) = (&env.docker_hosts[0], &env.docker_hosts[1]);
    let version = unique_name("proof-reg");
    let local = env.build_sample(a, &version, &[]);
    let remote = format!("{}/packfy-sample:{version}", env.registry);
    let _tagged = Image::guard(a, &remote);
    docker(a, ["tag", &local.reference, &remote]);
    docker(a, ["push", &remote]);

    let _pulled = Image::guard(b, &remote);
    assert!(
        !docker_try(b, ["image", "inspect", &remote])
            .status
            .success(),
        "{remote} was on {b} before the pull"
    );
    docker(b, ["pull", &remote]);
    let digest = |host: &str| {
        stdout(&docker(
            host,
            [
                "image",
                "inspect",
                "-f",
                "{{index .RepoDigests 0}}",
                &remote,
            ],
        ))
    };
    assert_eq!(digest(a), digest(b));

    let c = Container::run(
        b,
        &unique_name("proof-pulled"),
        ["-p", "127.0.0.1::8080", &remote],
    );
    let addr = c.published(8080);
    wait_http_status(&addr, "/health", 200, STARTUP);
    assert_eq!(http_get(&addr, "/version"), (200, version));
}

/// On every engine, containers reach each other over its bridge (the sample binary's
/// `healthcheck HOST:PORT` is the client: a FROM scratch image has no shell).
#[test]
fn containers_reach_each_other_on_every_daemon() {
    let Some(env) = TestEnv::get() else { return };
    for host in &env.docker_hosts {
        let image = env.build_sample(host, &unique_name("proof-c2c"), &[]);
        let server = Container::run(host, &unique_name("proof-c2c"), [&image.reference]);
        let ip = stdout(&docker(
            host,
            [
                "inspect",
                "-f",
                "{{.NetworkSettings.IPAddress}}",
                &server.name,
            ],
        ));
        let target = format!("{ip}:8080");
        wait_until(
            STARTUP,
            &format!("{target} to answer another container on {host}"),
            || {
                docker_try(
                    host,
                    ["run", "--rm", &image.reference, "healthcheck", &target],
                )
                .status
                .success()
            },
        );
    }
}

/// HAProxy serves the app through a server added over the Runtime API; draining that server
/// lets an in-flight `/slow` request finish with 200 while new requests go to the other
/// server; the drained server then leaves the backend. No request fails on the way.
#[test]
fn haproxy_drain_finishes_inflight_and_moves_new_requests() {
    let Some(env) = TestEnv::get() else { return };
    let host = &env.docker_host;
    let image = env.build_sample(host, &unique_name("proof-lb"), &[]);
    let run = |instance: &str| {
        let env_arg = format!("INSTANCE_NAME={instance}");
        let c = Container::run(
            host,
            &unique_name("proof-lb"),
            ["-p", "127.0.0.1::8080", "-e", &env_arg, &image.reference],
        );
        wait_http_status(&c.published(8080), "/health", 200, STARTUP);
        c
    };
    let (old, new) = (run("old"), run("new"));
    let lane = env.lease_lane();
    let instance = || {
        let r = http_request(&lane.frontend, "/").expect("request through HAProxy");
        assert_eq!(r.status, 200, "{}", r.body);
        r.header("x-packfy-instance")
            .unwrap_or_default()
            .to_string()
    };

    lane.add_server("old", &old.published(8080));
    lane.wait_status("old", "UP", STARTUP);
    assert_eq!(instance(), "old");

    // A slow request in flight on `old`…
    let inflight = {
        let frontend = lane.frontend.clone();
        std::thread::spawn(move || http_request(&frontend, "/slow?ms=1500"))
    };
    wait_until(
        Duration::from_secs(5),
        "the slow request to reach old",
        || {
            support::haproxy_server_stat(&lane.socket, &lane.backend, "old")
                .is_some_and(|s| s["scur"] == "1")
        },
    );
    // …while `new` joins and `old` is drained.
    lane.add_server("new", &new.published(8080));
    lane.wait_status("new", "UP", STARTUP);
    lane.cmd(&format!("set server {}/old state drain", lane.backend));
    assert_eq!(lane.status("old").as_deref(), Some("DRAIN"));
    for _ in 0..10 {
        assert_eq!(instance(), "new");
    }

    let slow = inflight
        .join()
        .unwrap()
        .expect("in-flight request through HAProxy");
    assert_eq!(slow.status, 200, "{}", slow.body);
    assert_eq!(slow.header("x-packfy-instance"), Some("old"));

    // Out of rotation for good: maintenance, then deleted.
    lane.cmd(&format!("set server {}/old state maint", lane.backend));
    let answer = lane.cmd(&format!("del server {}/old", lane.backend));
    assert!(answer.contains("Server deleted"), "{answer}");
    assert_eq!(lane.servers(), ["new"]);
    assert_eq!(instance(), "new");
    let stat = support::haproxy_server_stat(&lane.socket, &lane.backend, "new").unwrap();
    assert_eq!(stat["hrsp_5xx"], "0");
}

/// pg_dump (custom format) of a table, drop it, pg_restore: the rows are back.
#[test]
fn pg_dump_and_restore_round_trip() {
    let Some(env) = TestEnv::get() else { return };
    let url = &env.pg_url;
    let table = unique_ident("proof_backup");
    psql(
        url,
        &format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, region text NOT NULL, amount numeric(10,2));
             INSERT INTO {table} VALUES (1, 'cuba', 10.50), (2, 'méxico', 20.00), (3, 'españa', NULL);"
        ),
    );
    let select =
        format!("SELECT id, region, coalesce(amount::text, 'null') FROM {table} ORDER BY id");
    let before = psql(url, &select);
    assert_eq!(before.lines().count(), 3, "{before}");

    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("backup.dump");
    run(std::process::Command::new("pg_dump")
        .args(["--format=custom", "--table", &table, "--file"])
        .arg(&dump)
        .arg(url));
    assert!(std::fs::metadata(&dump).unwrap().len() > 0);

    psql(url, &format!("DROP TABLE {table}"));
    assert!(psql(url, &format!("SELECT to_regclass('{table}') IS NULL")) == "t");
    run(std::process::Command::new("pg_restore")
        .args(["--no-owner", "--dbname", url])
        .arg(&dump));
    assert_eq!(psql(url, &select), before);
    psql(url, &format!("DROP TABLE {table}"));
}

// The support helpers themselves, no environment needed.

#[test]
fn support_parses_env_sh() {
    let vars: HashMap<String, String> = parse_env_sh(
        "# comment\nexport A=\"x y\"\nexport B=plain\\ text\nC='q'\nexport PACKFY_TEST_ENV=1\n",
    );
    assert_eq!(vars["A"], "x y");
    assert_eq!(vars["B"], "plain text");
    assert_eq!(vars["C"], "q");
    assert_eq!(vars["PACKFY_TEST_ENV"], "1");
}

#[test]
fn support_parses_http_responses() {
    let r = parse_response(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nX-A: b\r\n\r\nokjunk",
    )
    .unwrap();
    assert_eq!(
        (r.status, r.body.as_str(), r.header("X-A")),
        (503, "ok", Some("b"))
    );
    let r = parse_response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.body, "abc");
}

#[test]
fn support_unique_names_differ() {
    assert_ne!(unique_name("a"), unique_name("a"));
    assert!(!unique_ident("x").contains('-'));
}

/// What the region-file builder writes is YAML that means what its calls say, and a region
/// with every part the deploy tests use is valid configuration for the CLI.
#[test]
fn support_region_files_are_valid_config() {
    use support::fixture::{
        Backup, Health, Notification, RegionFile, RegionsDir, Rollout, Service,
    };

    let web = Service::new("web", "packfy-sample")
        .build("ctx")
        .replicas(3)
        .port(8080)
        .env("A", "1")
        .secret_env("API_TOKEN", "env:PACKFY_TEST_API_TOKEN")
        .health(
            Health::http("/health")
                .start_period("3s")
                .interval("500ms")
                .timeout("500ms")
                .healthy_threshold(2)
                .unhealthy_threshold(3)
                .deadline("60s"),
        )
        .rollout(Rollout::new().bake("3s").drain_timeout("5s"))
        .stop_grace_period("5s");
    let docker = RegionFile::docker("unix:///run/docker.sock")
        .currency("USD")
        .keep_releases(3)
        .lock_ttl("6s")
        .haproxy("/run/haproxy.sock", "127.0.0.1:18000", &[("web", "be_web")])
        .service(web)
        .hook("pre_deploy", "tests", "echo \"$PACKFY_REGION\" > x")
        .backup(
            Backup::command("db", &["pg_dump", "--dbname", "${PGURL}"])
                .secret_env("PGURL", "env:PACKFY_PG_URL")
                .keep(2)
                .required(false),
        )
        .backup(
            Backup::exec("version", "web", &["/packfy-sample", "--version"]).compression("gzip"),
        );
    let yaml = docker.render();
    let v: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    let web = &v["services"]["web"];
    assert_eq!(
        v["target"]["docker"]["host"], "unix:///run/docker.sock",
        "{yaml}"
    );
    assert_eq!(
        v["traffic"]["haproxy"]["frontend"],
        "http://127.0.0.1:18000"
    );
    assert_eq!(v["traffic"]["haproxy"]["backends"]["web"], "be_web");
    assert_eq!(web["env"]["A"], "1");
    assert_eq!(
        web["env"]["API_TOKEN"]["secret"],
        "env:PACKFY_TEST_API_TOKEN"
    );
    assert_eq!(web["health"]["http"]["path"], "/health");
    assert_eq!(web["ports"][0]["container"], 8080);
    assert_eq!(
        v["hooks"]["pre_deploy"][0]["command"],
        "echo \"$PACKFY_REGION\" > x"
    );
    assert_eq!(v["backups"][0]["command"][2], "${PGURL}");
    assert_eq!(v["backups"][1]["exec"]["service"], "web");

    let dir = RegionsDir::new();
    dir.write("alpha", &docker);
    dir.write(
        "beta",
        &RegionFile::kubernetes("ctx", "ns")
            .app("packfy")
            .currency("USD")
            .health_url(Some("http://127.0.0.1:1/health"))
            .service(
                Service::new("web", "sample")
                    .replicas(5)
                    .autoscale(5, 10, 80),
            ),
    );
    dir.write(
        "_defaults",
        &RegionFile::new()
            .waves(&[&["alpha"], &["beta"]])
            .max_parallel(2)
            .on_failure("halt")
            .notification(Notification::generic("http://127.0.0.1:1/hook").secret("env:KEY")),
    );
    let out = support::run_cli(&mut support::cli(dir.path(), &["validate"]), &[]);
    assert_eq!(support::code(&out), 0, "{}", support::text(&out));

    // A currency, a target and a service of only an image: five lines, which the validate
    // tests that append broken YAML count on.
    let header = RegionFile::docker("unix:///var/run/docker.sock")
        .currency("MXN")
        .service(Service::new("web", "example/web"))
        .render();
    assert_eq!(header.lines().count(), 5, "{header}");
}
