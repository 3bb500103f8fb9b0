//! Notifications against real HTTP receivers on loopback: signatures, retries, permanent
//! refusals, and that an unreachable or silent receiver costs a bounded time and no error.

mod support;

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use packfy_deploy::config::model::{EnvValue, SecretRef, SecretValue};
use packfy_deploy::notify::{self, Notice, NotifyError, NotifyKind, Webhook, WebhookKind};
use packfy_deploy::ui::{Output, Ui, Verbosity};
use support::fixture::{RegionFile, RegionsDir, Service};
use support::webhook::{Receiver, Reply};

const KEY: &str = "hmac-key-never-printed-5512";

fn notice(kind: NotifyKind) -> Notice {
    Notice {
        kind,
        region: "colombia".into(),
        environment: "staging".into(),
        version: "2.0.1".into(),
        release: Some("r-77".into()),
        previous: Some("r-76".into()),
        actor: "ci".into(),
        detail: None,
        time: Utc.with_ymd_and_hms(2026, 11, 23, 12, 30, 0).unwrap(),
    }
}

/// A generic webhook signed with KEY, read from a file (tests do not touch the environment).
fn signed(url: String, dir: &tempfile::TempDir) -> Webhook {
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    Webhook {
        url: EnvValue::Plain(url),
        kind: WebhookKind::Generic,
        secret: Some(SecretValue {
            secret: SecretRef(format!("file:{}", key_file.display())),
        }),
        ..Webhook::default()
    }
}

fn plain(url: String) -> Webhook {
    Webhook {
        url: EnvValue::Plain(url),
        ..Webhook::default()
    }
}

fn quiet() -> Ui {
    Ui::new(Output::Human, Verbosity::Quiet)
}

#[tokio::test]
async fn generic_payload_is_signed_over_the_exact_body() {
    let rx = Receiver::start(&[Reply::Status(204)]);
    let dir = tempfile::tempdir().unwrap();
    let mut n = notice(NotifyKind::Failure);
    n.detail = Some("backend: 2 of 3 replicas unhealthy".into());
    let d = notify::deliver_all(&[signed(rx.url("/packfy?token=abc"), &dir)], &n).await;
    assert_eq!(d[0].result, Ok(1));
    assert_eq!(d[0].to, format!("http://{}/…", rx.addr));

    let reqs = rx.wait_for(1, Duration::from_secs(5));
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/packfy?token=abc");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-packfy-event"), Some("failure"));
    assert_eq!(r.header("x-packfy-timestamp"), Some("1795437000"));
    assert_eq!(r.header("x-packfy-delivery").map(str::len), Some(32));
    assert!(r
        .header("user-agent")
        .is_some_and(|ua| ua.starts_with("packfy-deploy/")));
    assert!(r.verify_signature(KEY.as_bytes()), "signature must verify");
    assert!(!r.verify_signature(b"another key"));
    assert_eq!(
        r.header("x-packfy-signature").unwrap(),
        format!("sha256={}", notify::sign(KEY.as_bytes(), &r.body))
    );
    let body = r.json();
    assert_eq!(body["event"], "failure");
    assert_eq!(body["region"], "colombia");
    assert_eq!(body["environment"], "staging");
    assert_eq!(body["version"], "2.0.1");
    assert_eq!(body["release"], "r-77");
    assert_eq!(body["previous"], "r-76");
    assert_eq!(body["actor"], "ci");
    assert_eq!(body["detail"], "backend: 2 of 3 replicas unhealthy");
    assert_eq!(body["time"], "2026-11-23T12:30:00Z");
    assert!(!String::from_utf8_lossy(&r.body).contains(KEY));
}

#[tokio::test]
async fn slack_webhooks_get_a_message_and_no_signature() {
    let rx = Receiver::start(&[Reply::Status(200)]);
    let hook = Webhook {
        kind: WebhookKind::Slack,
        ..plain(rx.url("/services/T0/B0/XYZ"))
    };
    let d = notify::deliver_all(&[hook], &notice(NotifyKind::Start)).await;
    assert_eq!(d[0].result, Ok(1));
    let r = &rx.wait_for(1, Duration::from_secs(5))[0];
    assert_eq!(r.header("x-packfy-signature"), None);
    let body = r.json();
    assert_eq!(body["text"], "Deploying 2.0.1 to colombia (staging)");
    assert_eq!(body["blocks"][0]["type"], "section");
}

#[tokio::test]
async fn a_500_then_200_receiver_gets_the_same_delivery_twice() {
    let rx = Receiver::start(&[Reply::Status(500), Reply::Status(200)]);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let d = notify::deliver_all(&[signed(rx.url("/"), &dir)], &notice(NotifyKind::Success)).await;
    assert_eq!(d[0].result, Ok(2));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].body, reqs[1].body);
    for h in [
        "x-packfy-signature",
        "x-packfy-delivery",
        "x-packfy-timestamp",
    ] {
        assert_eq!(reqs[0].header(h), reqs[1].header(h), "{h}");
    }
    assert!(reqs[1].verify_signature(KEY.as_bytes()));
    // The retry waited the first backoff (500ms plus at most half of it in jitter).
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= notify::backoff(1, 0.0), "retried after {gap:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let rx = Receiver::start(&[
        Reply::With(429, "Retry-After: 1", "rate_limited"),
        Reply::Status(200),
    ]);
    let d = notify::deliver_all(&[plain(rx.url("/"))], &notice(NotifyKind::Start)).await;
    assert_eq!(d[0].result, Ok(2));
    let reqs = rx.requests();
    assert!(reqs[1].at - reqs[0].at >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_4xx_is_permanent_and_not_retried() {
    let rx = Receiver::start(&[Reply::With(404, "", "no_service\n"), Reply::Status(200)]);
    let d = notify::deliver_all(
        &[plain(rx.url("/services/T0/B0/XYZ"))],
        &notice(NotifyKind::Rollback),
    )
    .await;
    assert_eq!(
        d[0].result,
        Err(NotifyError::Permanent {
            attempts: 1,
            why: "HTTP 404 Not Found: no_service".into()
        })
    );
    assert_eq!(
        d[0].result.as_ref().unwrap_err().to_string(),
        "refused: HTTP 404 Not Found: no_service (not retried)"
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(rx.requests().len(), 1);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    // The redirect points at a receiver that would accept the notice.
    let target = Receiver::start(&[Reply::Status(200)]);
    let location: &'static str = format!("Location: {}", target.url("/")).leak();
    let rx = Receiver::start(&[Reply::With(302, location, "")]);
    let d = notify::deliver_all(&[plain(rx.url("/"))], &notice(NotifyKind::Start)).await;
    assert!(matches!(
        d[0].result,
        Err(NotifyError::Permanent { attempts: 1, .. })
    ));
    assert!(target.requests().is_empty(), "the redirect was followed");
}

#[tokio::test]
async fn an_unreachable_receiver_costs_three_attempts_and_no_error() {
    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let hook = signed(format!("http://127.0.0.1:{port}/secret-path"), &dir);
    let started = Instant::now();
    let d = notify::deliver_all(std::slice::from_ref(&hook), &notice(NotifyKind::Success)).await;
    let took = started.elapsed();
    match &d[0].result {
        Err(NotifyError::GaveUp { attempts: 3, last }) => {
            assert!(last.contains("Connection refused"), "{last}");
            assert!(
                !last.contains("secret-path") && !last.contains(KEY),
                "{last}"
            );
        }
        other => panic!("expected GaveUp after 3 attempts, got {other:?}"),
    }
    // Two waits: 0.5s and 1s, each plus at most half in jitter.
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");

    // `send` only warns, and is as quick.
    let started = Instant::now();
    notify::send(&[hook], &notice(NotifyKind::Success), &quiet()).await;
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn silent_receivers_are_cut_by_the_timeout_and_run_concurrently() {
    let rx = Receiver::start(&[Reply::Hang]);
    let hooks: Vec<Webhook> = (0..3)
        .map(|i| Webhook {
            timeout: "300ms".parse().unwrap(),
            ..plain(rx.url(&format!("/{i}")))
        })
        .collect();
    let started = Instant::now();
    let d = notify::deliver_all(&hooks, &notice(NotifyKind::Failure)).await;
    let took = started.elapsed();
    for delivery in &d {
        assert_eq!(
            delivery.result,
            Err(NotifyError::GaveUp {
                attempts: 3,
                last: "no answer within 300ms".into()
            })
        );
    }
    // One webhook's worth: 3 × 300ms + 0.5s + 1s (+ jitter ≤ 0.75s), not three.
    assert!(took < Duration::from_millis(4500), "{took:?}");
    assert_eq!(rx.wait_for(9, Duration::from_secs(2)).len(), 9);
}

#[tokio::test]
async fn webhooks_without_the_event_are_not_called() {
    let rx = Receiver::start(&[Reply::Status(200)]);
    let hook = Webhook {
        events: vec![NotifyKind::Failure, NotifyKind::Rollback],
        ..plain(rx.url("/"))
    };
    notify::send(
        std::slice::from_ref(&hook),
        &notice(NotifyKind::Success),
        &quiet(),
    )
    .await;
    notify::send(&[hook], &notice(NotifyKind::Rollback), &quiet()).await;
    let reqs = rx.wait_for(1, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rx.requests().len(), 1);
    assert_eq!(reqs[0].header("x-packfy-event"), Some("rollback"));
}

#[tokio::test]
async fn spawn_delivers_in_the_background() {
    let rx = Receiver::start(&[Reply::Status(200)]);
    let handle = notify::spawn(vec![plain(rx.url("/"))], notice(NotifyKind::Start), quiet());
    handle.await.unwrap();
    assert_eq!(rx.requests().len(), 1);
}

/// `validate` on webhooks with every kind of mistake, each at its file:line:col.
#[test]
fn validate_reports_bad_notifications_where_they_are_written() {
    let dir = RegionsDir::new();
    let regions = dir.regions();
    let packfy = |args: &[&str]| {
        let args = [&["--env", "production"][..], args].concat();
        support::run_cli(&mut support::cli(dir.path(), &args), &[])
    };
    // Five lines of a valid region, then the broken notifications as written (lines 6 on).
    let mexico = RegionFile::docker("unix:///var/run/docker.sock")
        .currency("MXN")
        .service(Service::new("web", "example/web"));
    dir.write(
        "mexico",
        &mexico.extra(
            r#"notifications:
  - url: https://hooks.slack.com/services/T0/B0/XYZ
    kind: slack
    secret: {secret: "env:KEY"}
  - url: "ftp://x"
    events: []
    timeout: 1m
  - {}
  - url: https://u:p@example.com/x
  - url: {secret: "env:PACKFY_WEBHOOK_URL"}
    secret: {secret: "env:PACKFY_WEBHOOK_KEY"}
    events: [failure, rollback]
"#,
        ),
    );
    let out = packfy(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = support::stderr(&out).replace(&format!("{}/", regions.display()), "");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "error: notifications.0.url: a Slack webhook URL is a credential written in plain text at mexico.yaml:7:10 — write `url: {secret: \"env:SLACK_WEBHOOK_URL\"}` and set it where the deploy runs",
            "error: notifications.0.secret: Slack webhooks are not signed at mexico.yaml:9:13 — remove `secret`, or use `kind: generic` for a receiver that checks X-Packfy-Signature",
            "error: notifications.1.url: 'ftp://x' is not an http:// or https:// URL at mexico.yaml:10:10 — e.g. https://hooks.example.com/packfy",
            "error: notifications.1.events: is empty, so nothing would be sent at mexico.yaml:11:13 — list some of start, success, failure, rollback, or leave `events` out for all",
            "error: notifications.1.timeout: 1m must be above 0 and at most 30s at mexico.yaml:12:14 — a notification never holds a deploy for long; e.g. 5s",
            "error: notifications.2: no url at mexico.yaml:13:5 — set `url:` to the receiver, or `url: {secret: \"env:NAME\"}`",
            "error: notifications.3.url: carries a user name or password at mexico.yaml:14:10 — write `url: {secret: \"env:NAME\"}` so the credential stays out of region files",
            "error: 7 problems; nothing was changed",
        ]
    );
    // The secrets' references are shown, never looked up, by `explain`.
    let out = packfy(&["explain", "mexico", "notifications.4"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("secret: <secret:env:PACKFY_WEBHOOK_KEY>"),
        "{stdout}"
    );
}

/// https:// goes through rustls with the ring provider (no process-wide provider installed):
/// a plain-HTTP receiver makes the handshake fail, which is an error worth retrying.
#[tokio::test]
async fn https_runs_on_rustls_with_ring() {
    let rx = Receiver::start(&[Reply::Status(200)]);
    let hook = Webhook {
        timeout: "1s".parse().unwrap(),
        ..plain(format!("https://{}/", rx.addr))
    };
    let d = notify::deliver_all(&[hook], &notice(NotifyKind::Start)).await;
    match &d[0].result {
        Err(NotifyError::GaveUp { attempts: 3, last }) => {
            assert!(last.starts_with("error sending request: "), "{last}")
        }
        other => panic!("expected a failed handshake, got {other:?}"),
    }
}
