//! Notifications: webhooks told when a deploy starts, succeeds, fails or is rolled back
//! (`notifications:` in the region config).
//!
//! A notification never fails a deploy and never holds it for long. For each webhook that
//! wants the event, concurrently:
//!
//! 1. the URL and the HMAC key are read from their secrets (a missing secret skips the webhook
//!    with a warning that names the reference, never a value);
//! 2. the body is built once: a Slack incoming-webhook message (`text` + `blocks`), or for
//!    `generic` the [`Notice`] as JSON with an `event` field, signed with HMAC-SHA256 over the
//!    exact body bytes (`X-Packfy-Signature: sha256=<hex>`);
//! 3. it is POSTed at most [`ATTEMPTS`] times, each attempt limited by the webhook's `timeout`.
//!    As in cargo's `retry.rs`, errors are sorted first: spurious ones (no connection, timeout,
//!    5xx, 408, 429) are retried after [`backoff`]; permanent ones (other 4xx, redirects, a bad
//!    URL) are not. Every attempt carries the same body, signature and `X-Packfy-Delivery` id,
//!    so a receiver can drop duplicates;
//! 4. the whole delivery is cut at [`DELIVERY_DEADLINE`]; a delivery that failed is one warning
//!    through the Ui, with the URL shortened to scheme and host (webhook URLs are often
//!    credentials) and nothing of the key.
//!
//! So [`send`] returns within [`DELIVERY_DEADLINE`] whatever the receivers do.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use tokio::time::Instant;

use crate::config::model::EnvValue;
pub use crate::config::model::{NotifyKind, Webhook, WebhookKind};
use crate::secrets::resolve as resolve_secret;
use crate::ui::Ui;

/// Attempts per delivery (the planning documents: "exponential backoff, 3 attempts").
pub const ATTEMPTS: u32 = 3;
/// The wait before the second attempt; it doubles before each later one.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Each wait is lengthened by a random part of up to this fraction of it, so regions that fail
/// together do not retry in step.
pub const JITTER: f64 = 0.5;
/// The longest `Retry-After` (from a 429 or 503) that is honoured; longer ones are cut to it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
/// The most one delivery may take, all attempts and waits included.
pub const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);
/// Characters of a refusing receiver's answer quoted in the warning.
const ANSWER_QUOTED: usize = 120;

/// The header that carries `sha256=<hex of HMAC-SHA256(key, body)>`.
pub const SIGNATURE_HEADER: &str = "X-Packfy-Signature";
/// The header that carries the event (`start`, `success`, `failure`, `rollback`).
pub const EVENT_HEADER: &str = "X-Packfy-Event";
/// The header that carries the event's time in Unix seconds (the signed body has it too).
pub const TIMESTAMP_HEADER: &str = "X-Packfy-Timestamp";
/// The header that carries one id per delivery, the same on every attempt.
pub const DELIVERY_HEADER: &str = "X-Packfy-Delivery";

/// One event of one region's deploy or rollback. As JSON it is the generic payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    #[serde(rename = "event")]
    pub kind: NotifyKind,
    pub region: String,
    pub environment: String,
    pub version: String,
    pub release: Option<String>,
    pub previous: Option<String>,
    pub actor: String,
    /// Why it failed or was rolled back, in a sentence.
    pub detail: Option<String>,
    pub time: DateTime<Utc>,
}

impl Notice {
    /// The notice as it leaves the process: every secret value masked (a failure's detail
    /// quotes container logs and hook output).
    pub fn masked(&self) -> Notice {
        let m = |s: &str| crate::secrets::mask(s).into_owned();
        Notice {
            version: m(&self.version),
            actor: m(&self.actor),
            detail: self.detail.as_deref().map(m),
            ..self.clone()
        }
    }
}

/// Why one delivery did not happen. Never holds a secret's value or a full URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// The URL's or the key's secret could not be read.
    #[error("secret {reference} is not available: {why}")]
    Secret { reference: String, why: String },
    /// The URL is not an http:// or https:// URL (only its origin is shown).
    #[error("the URL is not valid: {0}")]
    Url(String),
    /// The HTTP client could not be set up, or cannot check https:// certificates (no roots).
    #[error("no HTTP client: {0}")]
    Client(String),
    /// The receiver refused it in a way retrying does not change (4xx other than 408 and 429).
    #[error("refused: {why} (not retried)")]
    Permanent { attempts: u32, why: String },
    /// Every attempt met a spurious error, or no time was left for another.
    #[error("{attempts} attempt{} failed; the last: {last}", if *.attempts == 1 { "" } else { "s" })]
    GaveUp { attempts: u32, last: String },
    /// [`DELIVERY_DEADLINE`] passed.
    #[error("gave up after {}s", DELIVERY_DEADLINE.as_secs())]
    Deadline,
}

/// What became of one webhook's delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The webhook as it may be shown: scheme and host, or the secret's reference.
    pub to: String,
    /// The attempts it took, or why it failed.
    pub result: Result<u32, NotifyError>,
}

/// How an attempt ended, for the retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth another attempt: no connection, a timeout, 5xx, 408, 429.
    Spurious,
    /// Retrying will not help: other 4xx, redirects (a webhook URL should be the final one).
    Permanent,
}

/// The verdict on an HTTP status.
pub fn classify_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Spurious,
        _ => Verdict::Permanent,
    }
}

/// The verdict on an error before any status: a request that could not be built is
/// permanent; connecting, timing out and reading are spurious.
pub fn classify_error(e: &reqwest::Error) -> Verdict {
    if e.is_builder() || e.is_redirect() {
        Verdict::Permanent
    } else {
        Verdict::Spurious
    }
}

/// The wait after failed attempt `attempt` (1-based), with `random` in [0, 1) for the jitter.
pub fn backoff(attempt: u32, random: f64) -> Duration {
    let base = INITIAL_BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1));
    base.mul_f64(1.0 + JITTER * random.clamp(0.0, 1.0))
}

/// Hex HMAC-SHA256 of `body` under `key`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The value of [`SIGNATURE_HEADER`]: `sha256=<hex>`.
pub fn signature_header(key: &[u8], body: &[u8]) -> String {
    format!("sha256={}", sign(key, body))
}

/// The generic payload: the notice as compact JSON, `event` first.
pub fn generic_payload(notice: &Notice) -> Vec<u8> {
    serde_json::to_vec(notice).expect("a notice serializes")
}

/// A message for a Slack incoming webhook: `text` (used by notifications and clients without
/// blocks) and `blocks` (a headline, the facts as fields, the detail, the time).
pub fn slack_payload(n: &Notice) -> serde_json::Value {
    let (emoji, plain, marked) = headline(n);
    let field = |label: &str, value: Option<&str>| {
        json!({
            "type": "mrkdwn",
            "text": format!("*{label}*\n{}", slack_escape(&cut(value.unwrap_or("—"), 200))),
        })
    };
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("{emoji} {marked}")}}),
        json!({"type": "section", "fields": [
            field("Region", Some(&n.region)),
            field("Environment", Some(&n.environment)),
            field("Version", Some(&n.version)),
            field("Release", n.release.as_deref()),
            field("Previous release", n.previous.as_deref()),
            field("By", Some(&n.actor)),
        ]}),
    ];
    if let Some(detail) = n.detail.as_deref().filter(|d| !d.trim().is_empty()) {
        blocks.push(json!({"type": "section", "text": {
            "type": "mrkdwn",
            "text": slack_escape(&cut(detail, 2000)),
        }}));
    }
    blocks.push(json!({"type": "context", "elements": [{
        "type": "mrkdwn",
        "text": format!("packfy-deploy · {}", n.time.format("%Y-%m-%d %H:%M:%S UTC")),
    }]}));
    json!({"text": plain, "blocks": blocks})
}

/// (emoji, plain text, mrkdwn) of the first line of a Slack message.
fn headline(n: &Notice) -> (&'static str, String, String) {
    let (v, r, e) = (
        slack_escape(&cut(&n.version, 100)),
        slack_escape(&cut(&n.region, 100)),
        slack_escape(&cut(&n.environment, 100)),
    );
    match n.kind {
        NotifyKind::Start => (
            ":rocket:",
            format!("Deploying {v} to {r} ({e})"),
            format!("Deploying *{v}* to *{r}* ({e})"),
        ),
        NotifyKind::Success => (
            ":white_check_mark:",
            format!("Deployed {v} to {r} ({e})"),
            format!("Deployed *{v}* to *{r}* ({e})"),
        ),
        NotifyKind::Failure => (
            ":x:",
            format!("Deploy of {v} to {r} ({e}) failed"),
            format!("Deploy of *{v}* to *{r}* ({e}) failed"),
        ),
        NotifyKind::Rollback => (
            ":leftwards_arrow_with_hook:",
            format!("Rolled back {r} ({e}) from {v}"),
            format!("Rolled back *{r}* ({e}) from *{v}*"),
        ),
    }
}

/// Slack's three control characters in message text.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, with `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// A webhook as it may be printed: `https://host[:port]/…` for a written URL (the path and
/// query of webhook URLs often are the credential), the reference for a secret one.
pub fn shown(hook: &Webhook) -> String {
    match &hook.url {
        EnvValue::Secret { .. } => hook.url.to_string(),
        EnvValue::Plain(url) => origin(url),
    }
}

fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) if u.host_str().is_some() => {
            let mut s = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
            if let Some(port) = u.port() {
                s.push_str(&format!(":{port}"));
            }
            if u.path() != "/" || u.query().is_some() {
                s.push_str("/…");
            }
            s
        }
        _ => "<not a URL>".into(),
    }
}

/// Sends `notice` to every webhook that wants it and warns about each that could not be
/// reached. Never fails; returns within [`DELIVERY_DEADLINE`].
pub async fn send(hooks: &[Webhook], notice: &Notice, ui: &Ui) {
    for d in deliver_all(hooks, notice).await {
        match d.result {
            Ok(attempts) => ui.verbose(format!(
                "notified {} of {} ({attempts} attempt{})",
                d.to,
                notice.kind,
                if attempts == 1 { "" } else { "s" }
            )),
            Err(e) => ui.warn(format!(
                "{} notification to {} not delivered: {e}",
                notice.kind, d.to
            )),
        }
    }
}

/// [`send`] in the background, for a caller that goes on at once (await the handle before the
/// process exits, or the notification may be lost).
pub fn spawn(hooks: Vec<Webhook>, notice: Notice, ui: Ui) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { send(&hooks, &notice, &ui).await })
}

/// Delivers `notice` to every webhook that wants it, concurrently, and says how each went.
pub async fn deliver_all(hooks: &[Webhook], notice: &Notice) -> Vec<Delivery> {
    let notice = &notice.masked();
    let wanted: Vec<&Webhook> = hooks
        .iter()
        .filter(|h| h.events.contains(&notice.kind))
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let client = client();
    let deliveries = wanted.into_iter().map(|hook| {
        let client = client.clone();
        async move {
            let result = match client {
                Err(e) => Err(NotifyError::Client(e)),
                Ok((c, tls_problem)) => tokio::time::timeout(
                    DELIVERY_DEADLINE,
                    deliver(&c, tls_problem.as_deref(), hook, notice),
                )
                .await
                .unwrap_or(Err(NotifyError::Deadline)),
            };
            Delivery {
                to: shown(hook),
                result,
            }
        }
    });
    futures_util::future::join_all(deliveries).await
}

/// An HTTP client on rustls with the ring provider and the platform's roots; redirects are not
/// followed (a signed POST must not turn into something else on the way). Without system CA
/// roots the client still speaks plain HTTP, and the reason is kept for https:// webhooks.
pub(crate) fn client() -> Result<(reqwest::Client, Option<String>), String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let (tls, tls_problem) = match builder.clone().with_platform_verifier() {
        Ok(b) => (b.with_no_client_auth(), None),
        Err(e) => (
            builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            Some(format!("cannot verify https:// receivers: {e}")),
        ),
    };
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("packfy-deploy/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| error_text(&e))?;
    Ok((client, tls_problem))
}

/// One webhook: at most [`ATTEMPTS`] attempts; Ok with the number it took.
async fn deliver(
    client: &reqwest::Client,
    tls_problem: Option<&str>,
    hook: &Webhook,
    notice: &Notice,
) -> Result<u32, NotifyError> {
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    let url_text = match &hook.url {
        EnvValue::Plain(u) => u.clone(),
        EnvValue::Secret { secret } => read_secret(&secret.0)?,
    };
    let url = match reqwest::Url::parse(url_text.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
        Ok(u) => {
            return Err(NotifyError::Url(format!(
                "scheme {} is not http or https",
                u.scheme()
            )))
        }
        Err(e) => return Err(NotifyError::Url(e.to_string())),
    };
    if let (Some(problem), "https") = (tls_problem, url.scheme()) {
        return Err(NotifyError::Client(problem.to_string()));
    }
    let key = match (&hook.secret, hook.kind) {
        (Some(s), WebhookKind::Generic) => Some(read_secret(&s.secret.0)?),
        _ => None,
    };
    let body = match hook.kind {
        WebhookKind::Slack => serde_json::to_vec(&slack_payload(notice)).expect("JSON"),
        WebhookKind::Generic => generic_payload(notice),
    };
    let signature = key.as_ref().map(|k| signature_header(k.as_bytes(), &body));
    let delivery_id = format!("{:016x}{:016x}", random_u64(), random_u64());
    // What must never appear in a message: the URL past its origin, and the key.
    let mut hidden = vec![url_text.clone(), url.path().to_string()];
    hidden.extend(url.query().map(str::to_string));
    hidden.extend(key.clone());
    let scrub = |s: String| scrub(s, &hidden);

    let mut last = String::new();
    let mut attempt = 0;
    while attempt < ATTEMPTS {
        attempt += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let mut req = client
            .post(url.clone())
            .timeout(hook.timeout.0.min(left))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, notice.kind.as_str())
            .header(DELIVERY_HEADER, &delivery_id)
            .header(TIMESTAMP_HEADER, notice.time.timestamp().to_string())
            .body(body.clone());
        if let Some(sig) = &signature {
            req = req.header(SIGNATURE_HEADER, sig);
        }
        let (verdict, why, retry_after) = match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let verdict = classify_status(status.as_u16());
                if verdict == Verdict::Delivered {
                    return Ok(attempt);
                }
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let answer = resp.text().await.unwrap_or_default();
                (verdict, answer_text(status, &answer), retry_after)
            }
            Err(e) if e.is_timeout() => (
                Verdict::Spurious,
                format!(
                    "no answer within {}",
                    crate::config::model::Duration(hook.timeout.0.min(left))
                ),
                None,
            ),
            Err(e) => (classify_error(&e), error_text(&e), None),
        };
        last = scrub(why);
        if verdict == Verdict::Permanent {
            return Err(NotifyError::Permanent {
                attempts: attempt,
                why: last,
            });
        }
        if attempt == ATTEMPTS {
            break;
        }
        let wait = backoff(attempt, random_unit())
            .max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
        if Instant::now() + wait >= deadline {
            break;
        }
        tokio::time::sleep(wait).await;
    }
    Err(NotifyError::GaveUp {
        attempts: attempt,
        last,
    })
}

/// The value of a secret reference; the error names the reference, never a value.
fn read_secret(reference: &str) -> Result<String, NotifyError> {
    resolve_secret(reference).map_err(|why| NotifyError::Secret {
        reference: reference.to_string(),
        why,
    })
}

/// `HTTP 503 Service Unavailable: <first line of the answer>`.
fn answer_text(status: reqwest::StatusCode, answer: &str) -> String {
    let first = answer.lines().map(str::trim).find(|l| !l.is_empty());
    match first {
        Some(line) => format!("HTTP {status}: {}", cut(line, ANSWER_QUOTED)),
        None => format!("HTTP {status}"),
    }
}

/// An HTTP error with its causes, without the URL reqwest would print.
pub(crate) fn error_text(e: &reqwest::Error) -> String {
    let mut top = e.to_string();
    if let Some(url) = e.url() {
        top = top.replace(&format!(" for url ({url})"), "");
    }
    let mut parts = vec![top];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// `text` with every occurrence of the hidden strings replaced.
fn scrub(mut text: String, hidden: &[String]) -> String {
    for h in hidden {
        // A path of "/" or a tiny key would blank out ordinary text; they hide nothing.
        if h.len() >= 4 && text.contains(h.as_str()) {
            text = text.replace(h.as_str(), "<hidden>");
        }
    }
    text
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// A random number in [0, 1).
fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{SecretRef, SecretValue};
    use chrono::TimeZone;

    fn notice(kind: NotifyKind) -> Notice {
        Notice {
            kind,
            region: "mexico".into(),
            environment: "production".into(),
            version: "1.4.2".into(),
            release: Some("20261123-100000-ab12".into()),
            previous: None,
            actor: "ana".into(),
            detail: None,
            time: Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap(),
        }
    }

    /// RFC 4231, test case 2: a key shorter than the block, data with spaces.
    #[test]
    fn hmac_sha256_known_answer() {
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            signature_header(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn generic_payload_is_the_notice_with_its_event() {
        let mut n = notice(NotifyKind::Failure);
        n.detail = Some("backend: health check failed".into());
        assert_eq!(
            String::from_utf8(generic_payload(&n)).unwrap(),
            r#"{"event":"failure","region":"mexico","environment":"production","version":"1.4.2","release":"20261123-100000-ab12","previous":null,"actor":"ana","detail":"backend: health check failed","time":"2026-11-23T10:00:00Z"}"#
        );
        let back: Notice = serde_json::from_slice(&generic_payload(&n)).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    fn slack_payload_has_text_and_valid_blocks() {
        let mut n = notice(NotifyKind::Success);
        n.actor = "<ana & co>".into();
        n.detail = Some("x".repeat(5000));
        let p = slack_payload(&n);
        assert_eq!(p["text"], "Deployed 1.4.2 to mexico (production)");
        let blocks = p["blocks"].as_array().unwrap();
        assert_eq!(
            blocks[0]["text"]["text"],
            ":white_check_mark: Deployed *1.4.2* to *mexico* (production)"
        );
        let fields = blocks[1]["fields"].as_array().unwrap();
        assert_eq!(fields.len(), 6);
        assert_eq!(fields[4]["text"], "*Previous release*\n—");
        assert_eq!(fields[5]["text"], "*By*\n&lt;ana &amp; co&gt;");
        // Slack's limits: section text 3000 characters, a field 2000.
        let detail = blocks[2]["text"]["text"].as_str().unwrap();
        assert_eq!(detail.chars().count(), 2000);
        assert!(detail.ends_with('…'));
        assert_eq!(
            blocks[3]["elements"][0]["text"],
            "packfy-deploy · 2026-11-23 10:00:00 UTC"
        );
        for b in blocks {
            assert!(matches!(b["type"].as_str(), Some("section" | "context")));
        }
        assert_eq!(
            slack_payload(&notice(NotifyKind::Rollback))["text"],
            "Rolled back mexico (production) from 1.4.2"
        );
    }

    #[test]
    fn statuses_are_sorted_for_retrying() {
        for s in [200, 201, 202, 204] {
            assert_eq!(classify_status(s), Verdict::Delivered, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify_status(s), Verdict::Spurious, "{s}");
        }
        for s in [301, 302, 400, 401, 403, 404, 410, 413, 422] {
            assert_eq!(classify_status(s), Verdict::Permanent, "{s}");
        }
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        assert_eq!(backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(2, 0.0), Duration::from_millis(1000));
        assert_eq!(backoff(1, 1.0), Duration::from_millis(750));
        assert!(backoff(2, 0.999) < Duration::from_millis(1500));
        // Three attempts at the default 5s and both waits fit well inside the deadline.
        let worst = Duration::from_secs(5) * ATTEMPTS + backoff(1, 1.0) + backoff(2, 1.0);
        assert!(worst < DELIVERY_DEADLINE);
        let r = random_unit();
        assert!((0.0..1.0).contains(&r));
    }

    #[test]
    fn urls_are_shown_without_their_credentials() {
        let mut w = Webhook {
            url: EnvValue::Plain("https://hooks.slack.com/services/T0/B0/XYZ".into()),
            ..Webhook::default()
        };
        assert_eq!(shown(&w), "https://hooks.slack.com/…");
        w.url = EnvValue::Plain("http://user:pw@127.0.0.1:8080/?token=abc".into());
        assert_eq!(shown(&w), "http://127.0.0.1:8080/…");
        w.url = EnvValue::Plain("https://example.com/".into());
        assert_eq!(shown(&w), "https://example.com");
        w.url = EnvValue::Secret {
            secret: SecretRef("env:SLACK_URL".into()),
        };
        assert_eq!(shown(&w), "<secret:env:SLACK_URL>");
    }

    #[test]
    fn messages_are_scrubbed() {
        let hidden = vec![
            "https://h/services/T0/B0/XYZ".to_string(),
            "/services/T0/B0/XYZ".to_string(),
            "/".to_string(),
            "k3y-value".to_string(),
        ];
        assert_eq!(
            scrub(
                "error for url (https://h/services/T0/B0/XYZ): key k3y-value at /services/T0/B0/XYZ".into(),
                &hidden
            ),
            "error for url (<hidden>): key <hidden> at <hidden>"
        );
    }

    #[tokio::test]
    async fn a_missing_secret_skips_the_webhook_and_names_only_the_reference() {
        let w = Webhook {
            url: EnvValue::Plain("http://127.0.0.1:9/".into()),
            secret: Some(SecretValue {
                secret: SecretRef("env:PACKFY_TEST_NEVER_SET_7781".into()),
            }),
            ..Webhook::default()
        };
        let d = deliver_all(&[w], &notice(NotifyKind::Start)).await;
        assert_eq!(
            d[0].result,
            Err(NotifyError::Secret {
                reference: "env:PACKFY_TEST_NEVER_SET_7781".into(),
                why: "environment variable PACKFY_TEST_NEVER_SET_7781 is not set".into(),
            })
        );
    }

    #[tokio::test]
    async fn webhooks_get_only_their_events() {
        let w = Webhook {
            url: EnvValue::Plain("http://127.0.0.1:9/".into()),
            events: vec![NotifyKind::Failure],
            ..Webhook::default()
        };
        assert!(deliver_all(&[w], &notice(NotifyKind::Success))
            .await
            .is_empty());
    }
}
