//! The Runtime API client against the real HAProxy of the test environment (`make env-up`),
//! with sample-app processes on loopback as its servers.
//!
//! Each test that adds servers takes a backend of its own: a test lane leased with
//! `support::TestEnv::lease_lane`, so no other test's servers answer its requests. Server
//! names are unique per run; the lane's servers are removed when the lease is dropped, also
//! when a test fails.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use packfy_deploy::traffic::haproxy::{Haproxy, HaproxyError, ServerState};
use support::TestEnv;

mod support;

/// Enough for a checked server to pass `rise` checks (about 1 s) on a busy machine.
const UP_WITHIN: Duration = Duration::from_secs(15);

/// The client of the test environment's HAProxy (see `support::TestEnv`: under `CI=true` a
/// missing part fails).
fn haproxy(env: &TestEnv) -> Haproxy {
    Haproxy::new(&env.haproxy_socket.display().to_string())
}

/// A server name no other test or run uses.
fn unique(tag: &str) -> String {
    support::unique_name(&format!("rt-{tag}"))
}

// ---------------------------------------------------------------------------------------
// Sample-app processes and HTTP

/// A sample-app process on a free loopback port, killed when dropped.
struct App {
    child: Child,
    addr: SocketAddr,
    version: String,
}

impl App {
    fn start(env: &TestEnv, version: &str, vars: &[(&str, &str)]) -> App {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = Command::new(&env.sample_bin);
        cmd.env("PORT", port.to_string())
            .env("APP_VERSION", version)
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("start the sample app");
        let mut app = App {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            version: version.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&app.addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = app.child.try_wait() {
                panic!("sample app {version} exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "sample app {version} never listened"
            );
            thread::sleep(Duration::from_millis(20));
        }
        app
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` with `Connection: close`: the status and the body.
fn http_get(addr: &str, path: &str) -> io::Result<(u16, String)> {
    support::http_request(addr, path).map(|r| (r.status, r.body))
}

/// `/version` through the frontend `n` times: the versions that answered. Panics on any
/// failed request.
fn versions(frontend: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match http_get(frontend, "/version") {
            Ok((200, body)) => body.trim().to_string(),
            other => panic!("request {i} through {frontend} failed: {other:?}"),
        })
        .collect()
}

/// Requests `/version` in a loop until stopped; the failures it saw.
fn load(frontend: String, stop: Arc<AtomicBool>) -> thread::JoinHandle<(usize, Vec<String>)> {
    thread::spawn(move || {
        let (mut sent, mut failures) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            sent += 1;
            match http_get(&frontend, "/version") {
                Ok((200, _)) => {}
                other => failures.push(format!("{other:?}")),
            }
            // Steady load without starving the machine's two cores.
            thread::sleep(Duration::from_millis(5));
        }
        (sent, failures)
    })
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn traffic_reaches_both_drain_keeps_in_flight_requests_delete_loses_none() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let h = haproxy(&env);
    let be = lane.backend.as_str();
    let (na, nb) = (unique("a"), unique("b"));
    let a = App::start(&env, &na, &[]);
    let b = App::start(&env, &nb, &[]);

    h.add_server(be, &na, a.addr, Some("/health"))
        .await
        .unwrap();
    h.add_server(be, &nb, b.addr, Some("/health"))
        .await
        .unwrap();
    assert!(h.wait_up(be, &na, UP_WITHIN).await.unwrap(), "{na} not UP");
    assert!(h.wait_up(be, &nb, UP_WITHIN).await.unwrap(), "{nb} not UP");

    let seen = versions(&lane.frontend, 20);
    assert!(seen.contains(&a.version), "{seen:?}");
    assert!(seen.contains(&b.version), "{seen:?}");

    // Slow requests, round-robin over a and b, until one is in flight on a.
    let mut slow = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let frontend = lane.frontend.clone();
        slow.push(thread::spawn(move || http_get(&frontend, "/slow?ms=1500")));
        thread::sleep(Duration::from_millis(50));
        let on_a = h.server(be, &na).await.unwrap().unwrap().scur;
        if on_a >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no slow request reached {na}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(lane.frontend.clone(), stop.clone());
    h.set_state(be, &na, ServerState::Drain).await.unwrap();
    let stat = h.server(be, &na).await.unwrap().unwrap();
    assert_eq!(stat.status, "DRAIN");
    assert!(stat.scur >= 1, "the slow request should still be on {na}");
    // Drained: new requests go to b only.
    assert!(versions(&lane.frontend, 10).iter().all(|v| *v == b.version));

    let started = Instant::now();
    assert!(h
        .wait_drained(be, &na, Duration::from_secs(10))
        .await
        .unwrap());
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "wait_drained returned at once ({:?}) with a 1.5 s request in flight",
        started.elapsed()
    );
    let answers: Vec<_> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    for answer in &answers {
        let (status, body) = answer.as_ref().expect("slow request");
        assert_eq!(*status, 200, "{body}");
    }
    assert!(
        answers
            .iter()
            .any(|r| r.as_ref().unwrap().1.contains(&a.version)),
        "no slow request was answered by {na}: {answers:?}"
    );

    h.del_server(be, &na).await.unwrap();
    assert!(h.server(be, &na).await.unwrap().is_none());
    for v in versions(&lane.frontend, 20) {
        assert_ne!(v, a.version, "a deleted server answered");
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, failures) = loader.join().unwrap();
    assert!(sent > 0);
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during drain and delete: {failures:?}",
        failures.len()
    );

    // Deleting what is gone is fine; so is draining the last server's nothing.
    h.del_server(be, &na).await.unwrap();
    assert!(h.wait_drained(be, &na, Duration::ZERO).await.unwrap());
    h.del_server(be, &nb).await.unwrap();
}

#[tokio::test]
async fn a_checked_server_takes_traffic_only_once_its_checks_pass() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let h = haproxy(&env);
    let be = lane.backend.as_str();
    let (good, bad) = (unique("good"), unique("bad"));
    let good_app = App::start(&env, &good, &[]);
    let bad_app = App::start(&env, &bad, &[("NEVER_HEALTHY", "1")]);

    let added = Instant::now();
    h.add_server(be, &good, good_app.addr, Some("/health"))
        .await
        .unwrap();
    // Not before a check has passed: HAProxy would otherwise call it UP at once.
    let first = h.server(be, &good).await.unwrap().unwrap();
    assert!(first.status.starts_with("DOWN"), "{first:?}");
    assert!(h.wait_up(be, &good, UP_WITHIN).await.unwrap());
    eprintln!(
        "{good}: UP {:?} after add_server ({:?})",
        added.elapsed(),
        h.check_timing()
    );

    h.add_server(be, &bad, bad_app.addr, Some("/health"))
        .await
        .unwrap();
    // Right after being enabled is when HAProxy 2.6 would send it traffic unchecked.
    for v in versions(&lane.frontend, 20) {
        assert_ne!(v, bad_app.version, "an unhealthy server got traffic");
    }
    assert!(!h.wait_up(be, &bad, Duration::from_secs(2)).await.unwrap());
    let stat = h.server(be, &bad).await.unwrap().unwrap();
    assert_eq!(stat.status, "DOWN");
    assert_eq!(stat.check_status, "L7STS");

    // Adding again at the same address is a no-op; at another, an error.
    h.add_server(be, &good, good_app.addr, Some("/health"))
        .await
        .unwrap();
    assert!(h.server(be, &good).await.unwrap().unwrap().is_up());
    match h.add_server(be, &good, bad_app.addr, Some("/health")).await {
        Err(HaproxyError::Command { reply, .. }) => {
            assert!(reply.contains("already exists at"), "{reply}")
        }
        other => panic!("{other:?}"),
    }
    // Back from maintenance, a server earns its checks again.
    h.set_state(be, &good, ServerState::Maint).await.unwrap();
    h.add_server(be, &good, good_app.addr, Some("/health"))
        .await
        .unwrap();
    assert!(h.wait_up(be, &good, UP_WITHIN).await.unwrap());
    // From drain it is simply put back.
    h.set_state(be, &good, ServerState::Drain).await.unwrap();
    h.add_server(be, &good, good_app.addr, Some("/health"))
        .await
        .unwrap();
    assert_eq!(h.server(be, &good).await.unwrap().unwrap().status, "UP");

    h.del_server(be, &bad).await.unwrap();
    h.del_server(be, &good).await.unwrap();
}

#[tokio::test]
async fn servers_counts_5xx_answers() {
    let Some(env) = TestEnv::get() else { return };
    let lane = env.lease_lane();
    let h = haproxy(&env);
    let be = lane.backend.as_str();
    let name = unique("err");
    let app = App::start(&env, &name, &[("ERROR_RATE", "0.2")]);
    // Unchecked: in service at once ("no check").
    h.add_server(be, &name, app.addr, None).await.unwrap();
    assert!(h.wait_up(be, &name, Duration::ZERO).await.unwrap());

    let mut errors = 0;
    for _ in 0..20 {
        let (status, _) = http_get(&lane.frontend, "/").unwrap();
        errors += u64::from(status == 500);
    }
    let stat = h
        .servers(be)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap();
    assert_eq!(stat.status, "no check");
    assert_eq!(stat.addr, app.addr.to_string());
    assert_eq!(errors, 4, "every 5th `/` answers 500");
    assert_eq!(
        (stat.hrsp_5xx, stat.hrsp_2xx, stat.responses, stat.stot),
        (4, 16, 20, 20),
        "{stat:?}"
    );
    h.del_server(be, &name).await.unwrap();
}

#[tokio::test]
async fn refusals_are_command_errors_carrying_the_reply() {
    let Some(env) = TestEnv::get() else { return };
    let h = haproxy(&env);
    let be = env.haproxy_backend.as_str();
    let missing = unique("missing");
    h.ping().await.unwrap();

    let reply_of = |r: Result<_, HaproxyError>| match r {
        Err(HaproxyError::Command { reply, .. }) => reply,
        other => panic!("expected a Command error, got {other:?}"),
    };
    assert!(reply_of(h.command("frobnicate").await.map(drop)).starts_with("Unknown command"));
    assert_eq!(
        reply_of(h.set_state(be, &missing, ServerState::Drain).await),
        "No such server."
    );
    assert_eq!(
        reply_of(h.servers("no_such_backend_pf").await.map(drop)),
        "No such proxy."
    );
    assert_eq!(
        reply_of(
            h.add_server(
                "no_such_backend_pf",
                &missing,
                "127.0.0.1:9".parse().unwrap(),
                None
            )
            .await
        ),
        "No such backend."
    );
    assert!(
        reply_of(h.wait_up(be, &missing, Duration::ZERO).await.map(drop)).contains("no server")
    );
    // What is not there is already deleted and drained.
    h.del_server(be, &missing).await.unwrap();
    assert!(h.wait_drained(be, &missing, Duration::ZERO).await.unwrap());
    // A name HAProxy would refuse is refused before sending.
    assert!(matches!(
        h.set_state(be, "two words", ServerState::Ready).await,
        Err(HaproxyError::InvalidName { .. })
    ));
    // A lowered level answers "Permission denied" to admin commands.
    let err = h
        .command(&format!("user; set server {be}/{missing} state ready"))
        .await
        .unwrap_err();
    assert!(reply_of(Err(err)).contains("Permission denied"));
}

#[tokio::test]
async fn an_absent_runtime_api_is_unreachable() {
    // Needs no test environment: nothing listens at either address.
    let dir = std::env::temp_dir().join(unique("sock"));
    fs::create_dir_all(&dir).unwrap();
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    for addr in [
        stale.to_str().unwrap().to_string(),
        format!("unix:{}", dir.join("none.sock").display()),
    ] {
        let h = Haproxy::new(&addr);
        match h.servers("packfy_local").await {
            Err(HaproxyError::Unreachable { addr: a, .. }) => assert_eq!(a, addr),
            other => panic!("{addr}: {other:?}"),
        }
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Haproxy::new(&format!("127.0.0.1:{port}"))
        .ping()
        .await
        .unwrap_err();
    assert!(matches!(err, HaproxyError::Unreachable { .. }), "{err:?}");
    let _ = fs::remove_dir_all(&dir);
}
