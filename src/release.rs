//! Release records: one immutable account of one deploy (or rollback) of one region and
//! environment, stored on the target so any machine can read history and roll back.
//!
//! A record is written twice: when the change starts (`in_progress`, so a crash leaves a trace
//! the next run recognises) and when it ends, with the outcome. Records never hold secret
//! values: environment variables that come from a secret keep only their reference.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Started and not finished; after a crash it stays so until recovered.
    InProgress,
    /// Healthy and serving.
    Succeeded,
    /// Failed and the previous release was put back.
    RolledBack,
    /// Failed and putting the previous release back failed too, or a one-way release step had
    /// already run so it was not put back: needs a person.
    Failed,
    /// Its release step failed: nothing else changed and the previous release kept serving.
    ReleaseFailed,
    /// Was serving, later replaced by a rollback to an earlier release.
    Reverted,
    /// A canary waiting for `promote` (or `resume`): part of the traffic on it, the region
    /// locked for it.
    Paused,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::InProgress => "in_progress",
            Outcome::Succeeded => "succeeded",
            Outcome::RolledBack => "rolled_back",
            Outcome::Failed => "failed",
            Outcome::ReleaseFailed => "release_failed",
            Outcome::Reverted => "reverted",
            Outcome::Paused => "paused",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Deploy,
    Rollback,
}

/// One running (or retained) container of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    pub id: String,
    /// The loopback address HAProxy reaches it at, if it publishes a port.
    pub addr: Option<String>,
}

/// What one service of a release runs: enough to start it again exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    /// The image reference as deployed (`repo:tag`).
    pub image: String,
    /// The image ID (content digest) it resolved to, which is what a rollback starts.
    pub image_id: String,
    /// `sha256:…`, the registry digest the image was pushed under: every host and cluster of
    /// the run pulled exactly that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub replicas: u32,
    /// Environment with secrets as `<secret:env:NAME>`.
    pub env: BTreeMap<String, String>,
    /// Environment variable name → secret reference, resolved again if a container is recreated.
    pub secret_refs: BTreeMap<String, String>,
    pub container_port: Option<u16>,
    pub containers: Vec<ContainerRecord>,
    /// A hash of everything that defines the containers, to tell "same release" cheaply.
    pub spec_hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// `r1`, `r2`, … per region and environment.
    pub id: String,
    pub number: u64,
    pub region: String,
    pub environment: String,
    pub kind: Kind,
    pub version: String,
    pub outcome: Outcome,
    /// The release that was serving when this one started.
    pub previous: Option<String>,
    /// For a rollback, the release it went back to.
    pub target: Option<String>,
    pub actor: String,
    pub command: String,
    pub git_commit: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub services: Vec<ServiceRecord>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Host and process that ran it (to recognise an interrupted run).
    pub runner: String,
    /// The target's own part of the record, opaque to the flow: the backup of what ran when
    /// this release started (Docker: `before`, container by container; Kubernetes: `before`,
    /// every object it touched as it was live, and `applied`, the objects it applied) —
    /// enough to put that back exactly, or to make this release serve again.
    #[serde(flatten)]
    pub state: serde_json::Map<String, serde_json::Value>,
    /// Data backups taken before this release changed anything (`backups:` jobs).
    #[serde(default)]
    pub backups: Vec<crate::backup::BackupRecord>,
    /// The services' release steps (migrations) this release ran, in order.
    #[serde(default)]
    pub release_steps: Vec<ReleaseStepRecord>,
}

/// How a release step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Succeeded,
    Failed,
    /// Stopped at its `timeout`.
    TimedOut,
}

impl StepOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            StepOutcome::Succeeded => "succeeded",
            StepOutcome::Failed => "failed",
            StepOutcome::TimedOut => "timed_out",
        }
    }
}

/// One service's release step as it ran for a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseStepRecord {
    pub service: String,
    /// The command as written (`packfy-sample migrate`).
    pub command: String,
    pub reversible: bool,
    pub outcome: StepOutcome,
    pub exit_code: Option<i64>,
    pub duration_secs: f64,
    /// sha256 of the output's last non-empty line (many migration tools print the schema
    /// version there), its first 12 hex digits; None when it printed nothing.
    pub last_line_sha256: Option<String>,
    /// The data backups taken just before it (their ids), what restoring its data takes.
    pub backups: Vec<String>,
}

impl ReleaseStepRecord {
    /// A one-way step that ran: the data may no longer suit the releases before it.
    pub fn moved_on(&self) -> bool {
        !self.reversible && self.outcome == StepOutcome::Succeeded
    }

    /// `web: packfy-sample migrate`
    pub fn describe(&self) -> String {
        format!("{}: `{}`", self.service, self.command)
    }
}

/// The first 12 hex digits of the sha256 of `output`'s last non-empty line.
pub fn last_line_digest(output: &[String]) -> Option<String> {
    use sha2::{Digest, Sha256};
    let last = output
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())?;
    Some(hex::encode(&Sha256::digest(last.as_bytes())[..6]))
}

/// The newest release after `target` (up to the end of `history`) whose one-way release step
/// ran: going back to `target` goes past it.
pub fn one_way_after<'a>(
    history: &'a [Release],
    target: &Release,
) -> Option<(&'a Release, &'a ReleaseStepRecord)> {
    history
        .iter()
        .rev()
        .filter(|r| r.number > target.number)
        .find_map(|r| {
            r.release_steps
                .iter()
                .find(|s| s.moved_on())
                .map(|s| (r, s))
        })
}

/// A deploy stopped after its one-way release step (exit 4): not put back on purpose.
pub fn halted(r: &Release) -> bool {
    r.outcome == Outcome::Failed && r.release_steps.iter().any(ReleaseStepRecord::moved_on)
}

impl Release {
    pub fn image_ids(&self) -> impl Iterator<Item = &str> {
        self.services.iter().map(|s| s.image_id.as_str())
    }

    pub fn duration_secs(&self) -> Option<f64> {
        self.finished_at
            .map(|f| (f - self.started_at).num_milliseconds() as f64 / 1000.0)
    }
}

impl Release {
    /// A new `in_progress` release of a region, numbered after `history`.
    pub fn start(
        region: &str,
        env: &str,
        history: &[Release],
        kind: Kind,
        version: &str,
        previous: Option<String>,
        target: Option<String>,
    ) -> Release {
        let number = next_number(history);
        Release {
            id: format!("r{number}"),
            number,
            region: region.to_string(),
            environment: env.to_string(),
            kind,
            version: version.into(),
            outcome: Outcome::InProgress,
            previous,
            target,
            actor: actor(),
            command: command_line(),
            git_commit: git_commit(),
            started_at: Utc::now(),
            finished_at: None,
            services: Vec::new(),
            error: None,
            runner: runner(),
            state: Default::default(),
            backups: Vec::new(),
            release_steps: Vec::new(),
        }
    }

    /// Ends the release with `outcome` now (and why, when it failed).
    pub fn end(&mut self, outcome: Outcome, error: Option<String>) {
        self.outcome = outcome;
        self.finished_at = Some(Utc::now());
        if error.is_some() {
            self.error = error;
        }
    }

    /// A part of the target's state (`None` when absent or of another shape).
    pub fn state_of<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        serde_json::from_value(self.state.get(key)?.clone()).ok()
    }

    /// Sets a part of the target's state.
    pub fn set_state<T: Serialize>(&mut self, key: &str, value: &T) {
        if let Ok(v) = serde_json::to_value(value) {
            self.state.insert(key.to_string(), v);
        }
    }
}

/// The number of the release after `history`.
pub fn next_number(history: &[Release]) -> u64 {
    history.iter().map(|r| r.number).max().unwrap_or(0) + 1
}

/// The release serving now: the newest that succeeded.
pub fn serving(history: &[Release]) -> Option<&Release> {
    history
        .iter()
        .rev()
        .find(|r| r.outcome == Outcome::Succeeded)
}

/// The release a killed run left `in_progress`, when no live run holds the lock for it.
pub fn interrupted<'a>(
    history: &'a [Release],
    lock: Option<&crate::lock::Lock>,
) -> Option<&'a Release> {
    let last = history
        .last()
        .filter(|r| r.outcome == Outcome::InProgress)?;
    if lock.is_some_and(|l| !l.is_stale(Utc::now())) && !runner_is_dead(&last.runner) {
        return None;
    }
    Some(last)
}

/// What `keep_releases` keeps, the same on every target: the newest `keep` records (whatever
/// their outcome, as Helm's `--history-max` counts revisions) and always the serving one and
/// the one it restored (a rollback serves an older release's containers). Returns the ids
/// kept and the records to delete, oldest first.
pub fn retention(history: &[Release], keep: usize) -> (Vec<String>, Vec<&Release>) {
    let keep = keep.max(1);
    let cut = history.len().saturating_sub(keep);
    let serving = serving(history);
    let mut kept: Vec<String> = Vec::new();
    let mut gone = Vec::new();
    for (i, r) in history.iter().enumerate() {
        if i >= cut || serving.is_some_and(|s| s.id == r.id) {
            kept.push(r.id.clone());
            kept.extend(r.target.clone());
        } else {
            gone.push(r);
        }
    }
    // A rollback record kept keeps what it restored, however old.
    gone.retain(|r| !kept.contains(&r.id));
    (kept, gone)
}

/// For a rolled-back deploy: the backups taken before it, which are not restored by
/// themselves.
pub fn rollback_note(rec: &Release) -> Option<String> {
    let ids: Vec<&str> = rec
        .backups
        .iter()
        .filter(|b| b.error.is_none())
        .map(|b| b.id.as_str())
        .collect();
    if ids.is_empty() {
        return None;
    }
    Some(format!(
        "data was not restored: the backup taken before {} is {}; writes made since would be lost, so restoring is a person's decision: packfy-deploy backup restore {}",
        rec.id,
        ids.join(", "),
        ids[0]
    ))
}

/// `r12` → 12.
pub fn parse_id(id: &str) -> Option<u64> {
    id.strip_prefix('r')?.parse().ok()
}

/// The release a rollback goes back to: the newest succeeded release before `current` that
/// runs something else, or `to` when given (which may also name a reverted release).
pub fn rollback_target<'a>(
    history: &'a [Release],
    current: Option<&Release>,
    to: Option<&str>,
) -> Result<&'a Release, String> {
    if let Some(to) = to {
        let r = history
            .iter()
            .find(|r| r.id == to)
            .ok_or_else(|| format!("no release '{to}' in the history"))?;
        if !matches!(r.outcome, Outcome::Succeeded | Outcome::Reverted) {
            return Err(format!(
                "release {to} never served (it {}); pick a release that succeeded",
                r.outcome.as_str()
            ));
        }
        if current.is_some_and(|c| c.id == r.id) {
            return Err(format!("release {to} is what runs now"));
        }
        return Ok(r);
    }
    let current_no = current.map_or(u64::MAX, |c| c.number);
    let running_images: Vec<&str> = current.map(|c| c.image_ids().collect()).unwrap_or_default();
    history
        .iter()
        // A reverted release was rolled back from on purpose: only `--to` goes back to it.
        .filter(|r| r.number < current_no && r.outcome == Outcome::Succeeded)
        // Going "back" to what already runs would change nothing.
        .filter(|r| {
            current.is_none()
                || r.image_ids().collect::<Vec<_>>() != running_images
                || r.services.iter().map(|s| &s.spec_hash).ne(current
                    .unwrap()
                    .services
                    .iter()
                    .map(|s| &s.spec_hash))
        })
        .max_by_key(|r| r.number)
        .ok_or_else(|| "there is no earlier healthy release to roll back to".to_string())
}

/// Who is deploying: PACKFY_ACTOR, else the CI system's user, else the git user, else $USER.
/// Read once per process: a deploy asks for it several times (lock, record, notices), and
/// each time would otherwise run `git config`.
pub fn actor() -> String {
    static ACTOR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ACTOR.get_or_init(find_actor).clone()
}

fn find_actor() -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(a) = env("PACKFY_ACTOR") {
        return a;
    }
    for (var, system) in [
        ("GITHUB_ACTOR", "github"),
        ("GITLAB_USER_LOGIN", "gitlab"),
        ("BUILDKITE_BUILD_CREATOR", "buildkite"),
        ("CIRCLE_USERNAME", "circleci"),
    ] {
        if let Some(a) = env(var) {
            return format!("{a} ({system})");
        }
    }
    if let Ok(out) = std::process::Command::new("git")
        .args(["config", "user.email"])
        .output()
    {
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !s.is_empty() {
            return s;
        }
    }
    env("USER")
        .or_else(|| env("LOGNAME"))
        .unwrap_or_else(|| "unknown".into())
}

/// The current git commit of the working tree, with `-dirty` when it has changes. Read once
/// per process (two `git` runs), though the version and the record both need it.
pub fn git_commit() -> Option<String> {
    static COMMIT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    COMMIT.get_or_init(find_git_commit).clone()
}

fn find_git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let sha = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    Some(if dirty { format!("{sha}-dirty") } else { sha })
}

pub use crate::lock::{runner, runner_is_dead};

/// The command line as typed, for the audit record.
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// Where a blue-green stands (both targets record it in the release's canary state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlueGreenPhase {
    /// The new set answers on the preview only (Docker: the preview backend; Kubernetes: the
    /// preview Service); production is all on the old set.
    Preview,
    /// All traffic on the new set; the old set stays until the window ends (a `rollback` is
    /// one switch back: HAProxy weights, or the Service's selector).
    Promoted,
    /// The window is over: the old set is gone (Docker: out of the backend and stopped, kept
    /// for a rollback by restart).
    ScaledDown,
    /// Taken back inside the window: the old set serves again, the new one is gone.
    SwitchedBack,
}

impl BlueGreenPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            BlueGreenPhase::Preview => "preview",
            BlueGreenPhase::Promoted => "promoted",
            BlueGreenPhase::ScaledDown => "scaled_down",
            BlueGreenPhase::SwitchedBack => "switched_back",
        }
    }
}

/// Seconds since the epoch (a blue-green window's end is recorded in them).
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(n: u64, outcome: Outcome, image: &str) -> Release {
        Release {
            id: format!("r{n}"),
            number: n,
            region: "local".into(),
            environment: "production".into(),
            kind: Kind::Deploy,
            version: format!("v{n}"),
            outcome,
            previous: None,
            target: None,
            actor: "t".into(),
            command: "c".into(),
            git_commit: None,
            started_at: Utc::now(),
            finished_at: None,
            services: vec![ServiceRecord {
                name: "backend".into(),
                image: image.into(),
                image_id: image.into(),
                digest: None,
                replicas: 1,
                env: BTreeMap::new(),
                secret_refs: BTreeMap::new(),
                container_port: None,
                containers: vec![],
                spec_hash: image.into(),
            }],
            error: None,
            runner: "h:1".into(),
            state: Default::default(),
            backups: vec![],
            release_steps: vec![],
        }
    }

    fn ids(rs: &[&Release]) -> Vec<String> {
        rs.iter().map(|r| r.id.clone()).collect()
    }

    #[test]
    fn keep_releases_keeps_the_newest_records_and_the_serving_one() {
        // r1 ok, r2 ok, r3 rolled back, r4 rolled back: keep 2 → r3, r4 and the serving r2.
        let h = vec![
            rel(1, Outcome::Succeeded, "a"),
            rel(2, Outcome::Succeeded, "b"),
            rel(3, Outcome::RolledBack, "c"),
            rel(4, Outcome::RolledBack, "d"),
        ];
        let (kept, gone) = retention(&h, 2);
        assert_eq!(kept, ["r2", "r3", "r4"]);
        assert_eq!(ids(&gone), ["r1"]);
        // nothing goes while there are no more records than kept
        let (kept, gone) = retention(&h[..2], 5);
        assert_eq!((kept.len(), gone.len()), (2, 0));
        // 0 means 1: the serving release always stays
        let (kept, gone) = retention(&h[..2], 0);
        assert_eq!(
            (kept, ids(&gone)),
            (vec!["r2".to_string()], vec!["r1".to_string()])
        );
    }

    #[test]
    fn a_kept_rollback_keeps_the_release_it_restored() {
        let mut back = rel(4, Outcome::Succeeded, "a");
        back.kind = Kind::Rollback;
        back.target = Some("r1".into());
        let h = vec![
            rel(1, Outcome::Reverted, "a"),
            rel(2, Outcome::Reverted, "b"),
            rel(3, Outcome::Reverted, "c"),
            back,
        ];
        let (kept, gone) = retention(&h, 1);
        assert_eq!(kept, ["r4", "r1"]);
        assert_eq!(ids(&gone), ["r2", "r3"]);
    }

    #[test]
    fn an_in_progress_release_is_interrupted_only_without_a_live_lock() {
        let mut h = vec![
            rel(1, Outcome::Succeeded, "a"),
            rel(2, Outcome::InProgress, "b"),
        ];
        h[1].runner = "another-host:1".into();
        let live = crate::lock::Lock {
            holder: "ana".into(),
            reason: "deploy".into(),
            since: Utc::now(),
            expires: Utc::now() + chrono::Duration::minutes(5),
            token: "t".into(),
            runner: "another-host:1".into(),
        };
        assert!(interrupted(&h, Some(&live)).is_none());
        assert_eq!(interrupted(&h, None).map(|r| r.id.as_str()), Some("r2"));
        assert!(interrupted(&h[..1], None).is_none());
        assert_eq!(serving(&h).map(|r| r.id.as_str()), Some("r1"));
        assert_eq!(next_number(&h), 3);
    }

    #[test]
    fn rollback_goes_to_the_newest_earlier_success() {
        let h = vec![
            rel(1, Outcome::Succeeded, "a"),
            rel(2, Outcome::Succeeded, "b"),
            rel(3, Outcome::RolledBack, "c"),
            rel(4, Outcome::Succeeded, "d"),
        ];
        assert_eq!(rollback_target(&h, Some(&h[3]), None).unwrap().id, "r2");
        assert_eq!(
            rollback_target(&h, Some(&h[3]), Some("r1")).unwrap().id,
            "r1"
        );
        assert!(rollback_target(&h, Some(&h[3]), Some("r3"))
            .unwrap_err()
            .contains("never served"));
        assert!(rollback_target(&h[..1], Some(&h[0]), None).is_err());
        assert!(rollback_target(&h, Some(&h[3]), Some("r9"))
            .unwrap_err()
            .contains("no release"));
    }

    fn step(reversible: bool, outcome: StepOutcome) -> ReleaseStepRecord {
        ReleaseStepRecord {
            service: "web".into(),
            command: "migrate".into(),
            reversible,
            outcome,
            exit_code: Some(0),
            duration_secs: 1.0,
            last_line_sha256: None,
            backups: vec!["local/production/r2/db".into()],
        }
    }

    #[test]
    fn going_back_past_a_one_way_step_is_found() {
        let mut h = vec![
            rel(1, Outcome::Succeeded, "a"),
            rel(2, Outcome::Succeeded, "b"),
            rel(3, Outcome::Succeeded, "c"),
        ];
        assert!(one_way_after(&h, &h[0]).is_none());
        h[1].release_steps.push(step(true, StepOutcome::Succeeded));
        assert!(one_way_after(&h, &h[0]).is_none(), "a reversible step");
        h[2].release_steps.push(step(false, StepOutcome::Failed));
        assert!(
            one_way_after(&h, &h[0]).is_none(),
            "a one-way step that failed"
        );
        h[1].release_steps[0].reversible = false;
        let (r, s) = one_way_after(&h, &h[0]).unwrap();
        assert_eq!(
            (r.id.as_str(), s.describe()),
            ("r2", "web: `migrate`".into())
        );
        assert!(
            one_way_after(&h, &h[1]).is_none(),
            "r2 itself already reads it"
        );
        assert!(!halted(&h[1]));
        h[1].outcome = Outcome::Failed;
        assert!(halted(&h[1]));
    }

    #[test]
    fn the_digest_is_of_the_last_line_that_says_something() {
        let out = vec!["migrating".to_string(), "schema 42".into(), "  ".into()];
        assert_eq!(
            last_line_digest(&out),
            last_line_digest(&["schema 42".into()])
        );
        assert_eq!(last_line_digest(&out).unwrap().len(), 12);
        assert_ne!(
            last_line_digest(&out),
            last_line_digest(&["schema 43".into()])
        );
        assert_eq!(last_line_digest(&[]), None);
    }

    #[test]
    fn ids_parse() {
        assert_eq!(parse_id("r12"), Some(12));
        assert_eq!(parse_id("12"), None);
    }
}
