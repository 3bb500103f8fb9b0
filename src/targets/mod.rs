//! The targets a region deploys to — Docker hosts and Kubernetes clusters — as two
//! implementations of one [`Target`] trait. The flow drives a target through
//! the trait only and never asks which kind it is: [`open`] is the one place that turns a
//! region's configuration into the target it gets.
//!
//! What a target does, in the order a deploy asks for it:
//! - lock: take, take over, read and free the region's lock where the target keeps it;
//! - records: list and write release records on the target (a fresh runner reads them);
//! - resolve: the desired state of a version (images built or found, manifests rendered,
//!   secrets resolved), changing nothing that runs;
//! - prepare: what that would change against what runs now (nothing: the deploy is done);
//! - record: write the backup of what runs now into the release record;
//! - release step: run a service's one-off command (migrations) in the new image, before
//!   anything that runs changes (Docker: a one-off container; Kubernetes: a Job);
//! - apply and verify: roll the release out and watch it (health, bake);
//! - restore: put back what a record's backup says, after a failure or for a killed run;
//! - forget: remove what `keep_releases` no longer keeps;
//! - status and drift: what runs, for `status`, and how it differs from what the
//!   configuration says, for `diff --live` (and `prepare`, for `plan` and `deploy
//!   --reset-drift`).

pub mod docker;
pub mod kubernetes;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::backup::ExecIn;
use crate::config::model::{RegionConfig, ReleaseStep, Target as TargetConfig};
use crate::config::Environment;
use crate::context::Ctx;
use crate::drift::Drift;
use crate::error::Result;
use crate::lock::{Acquire, Lock};
use crate::release::Release;
use crate::ui::Ui;

/// A region as every target sees it: its name, environment, configuration, where its files
/// are and where its output goes.
pub struct Region {
    pub name: String,
    pub env: Environment,
    pub cfg: RegionConfig,
    /// The repository root (the regions directory's parent): build contexts, templates and
    /// hooks are relative to it.
    pub root: PathBuf,
    pub ui: Ui,
}

impl Region {
    /// `mexico/production`
    pub fn place(&self) -> String {
        format!("{}/{}", self.name, self.env.as_str())
    }

    pub fn env(&self) -> &str {
        self.env.as_str()
    }
}

/// What a deploy asks of the target beyond the version.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    pub version: Option<String>,
    pub no_build: bool,
    pub push: bool,
    pub lock_wait: Option<Duration>,
    pub reason: Option<String>,
    /// Kubernetes: take over fields another field manager owns (server-side apply `force`).
    pub force_conflicts: bool,
    /// Take drift back: remove what no release accounts for, restore what was changed by hand.
    pub reset_drift: bool,
    /// Images a multi-region run built once before its first wave: a region deploys these
    /// instead of building its own (pulled by digest where its engine is not the builder's).
    pub built: std::sync::Arc<Vec<Built>>,
}

/// An image built for a deploy.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    pub service: String,
    /// `repo:tag`, as the containers name it.
    pub image: String,
    /// The image ID on the engine that built it.
    pub id: String,
    /// `sha256:…`, the registry's manifest digest once pushed: what every other engine and
    /// cluster pulls, and what the release record pins.
    pub digest: Option<String>,
    /// The engine that built it (its endpoint).
    pub engine: String,
}

impl Built {
    /// `repo:tag@sha256:…` once pushed, else `repo:tag`.
    pub fn pinned(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}@{d}", self.image),
            None => self.image.clone(),
        }
    }

    /// `repo@sha256:…`: what an engine pulls (a tag beside a digest is ignored by it anyway).
    pub fn by_digest(&self) -> Option<String> {
        let repo = repo_of(&self.image);
        self.digest.as_ref().map(|d| format!("{repo}@{d}"))
    }
}

/// `registry:5000/app` of `registry:5000/app:tag` (a port is not a tag).
pub fn repo_of(image: &str) -> &str {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    }
}

/// `(repo, repo:version)` of a service's image, environment variables expanded.
pub fn image_ref(svc: &crate::config::model::Service, version: &str) -> (String, String) {
    let repo = crate::config::expand_env(svc.image.as_deref().unwrap_or_default());
    let image = format!("{repo}:{version}");
    (repo, image)
}

/// Why the desired state is resolved: a deploy may build, pull and create what it needs; a
/// plan or a diff changes nothing at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Deploy,
    Plan,
}

/// What a deploy would change, as the target sees it.
#[derive(Debug, Default)]
pub struct Changes {
    /// One line per service or object, changing or not, for `plan`.
    pub lines: Vec<String>,
    /// The lines of what changes, for the deploy's `Plan` lines.
    pub changed: Vec<String>,
    /// Whether anything changes; nothing means the deploy is done.
    pub any: bool,
    /// What the target says beside the changes (a capability it lacks, an image not there yet).
    pub notes: Vec<String>,
    /// The target's part of `plan -o json`.
    pub json: Map<String, Value>,
    /// Hand edits found beside the changes (what runs against what the releases set); a
    /// deploy with `reset_drift` takes them back (and `any` is then true).
    pub drift: Vec<Drift>,
    /// This deploy takes `drift` back (`--reset-drift` and there is some).
    pub resetting: bool,
}

/// How a progressive rollout is steered from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steer {
    /// Past the pause it waits at (`full`: past every remaining step).
    Promote { full: bool },
    /// On after `pause`, from the step it stopped at.
    Resume,
    /// All traffic back to the old release; the new one removed.
    Abort,
    /// Stop at the next tick and wait for `resume` or `promote`.
    Pause,
}

impl Steer {
    pub fn verb(self) -> &'static str {
        match self {
            Steer::Promote { .. } => "promote",
            Steer::Resume => "resume",
            Steer::Abort => "abort",
            Steer::Pause => "pause",
        }
    }

    /// The step a paused rollout goes on from: past every step (`promote --full`), the step
    /// a `pause` stopped at (`resume`), or its next one.
    pub fn goes_on_at(self, next: usize, resume_from: Option<usize>, steps: usize) -> usize {
        match (self, resume_from) {
            (Steer::Promote { full: true }, _) => steps,
            (Steer::Resume, Some(i)) => i,
            _ => next,
        }
    }
}

/// A region's `status`, as the target sees it.
#[derive(Debug, Default)]
pub struct Status {
    /// `unix:///…` or `https://… (context c, namespace n)`.
    pub endpoint: String,
    /// Lines under the header, one per service and problem.
    pub lines: Vec<String>,
    /// The target's part of `status -o json` (`services`, …).
    pub json: Map<String, Value>,
}

/// How a release step's run ended, as the target saw it. The flow judges it.
#[derive(Debug, Default)]
pub struct StepRun {
    /// The command's exit code, when it exited.
    pub exit_code: Option<i64>,
    /// It was stopped at its timeout.
    pub timed_out: bool,
    /// Its last lines of output (stdout and stderr together), as printed: the flow masks
    /// secret values in whatever it shows or records.
    pub tail: Vec<String>,
    /// What the target adds (why it failed when the command could not say, logs it could
    /// not read).
    pub notes: Vec<String>,
}

/// The last lines of a command's output, for a failure report.
#[derive(Debug, Default)]
pub struct LastLines {
    lines: std::collections::VecDeque<String>,
    partial: String,
}

impl LastLines {
    /// Lines a release step's failure shows.
    pub const KEEP: usize = 20;

    /// Takes a chunk of output; calls `each` with every line it completes.
    pub fn push(&mut self, chunk: &[u8], mut each: impl FnMut(&str)) {
        self.partial.push_str(&String::from_utf8_lossy(chunk));
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            let line = line.trim_end_matches(['\n', '\r']).to_string();
            each(&line);
            self.keep(line);
        }
    }

    fn keep(&mut self, line: String) {
        self.lines.push_back(line);
        if self.lines.len() > Self::KEEP {
            self.lines.pop_front();
        }
    }

    /// The lines kept, the last one even without its newline.
    pub fn finish(mut self, each: impl FnOnce(&str)) -> Vec<String> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            each(&line);
            self.keep(line);
        }
        self.lines.into()
    }
}

/// The seam between the one flow and a kind of target.
#[async_trait]
pub trait Target: Send + Sync {
    fn region(&self) -> &Region;

    /// Where the lock lives, for the `Locked` line (`Lease ns/name`, `engine unix:///…`).
    fn lock_place(&self) -> String;

    /// Tries once to take the lock. `tied_to_process`: stale as soon as this process is gone
    /// (a deploy's lock, renewed while it runs) rather than only at its expiry (a lock by hand).
    async fn try_lock(
        &self,
        holder: &str,
        reason: &str,
        ttl: Duration,
        tied_to_process: bool,
    ) -> Result<Acquire>;
    /// Frees a stale lock so it can be taken.
    async fn take_over(&self, stale: &Lock) -> Result<()>;
    async fn current_lock(&self) -> Result<Option<Lock>>;
    /// Frees our lock (and stops renewing it).
    async fn unlock(&self, ours: &Lock) -> Result<()>;
    /// Frees whatever lock there is (`unlock --force`).
    async fn break_lock(&self) -> Result<()>;

    /// Every release record of the region and environment, oldest first.
    async fn history(&self) -> Result<Vec<Release>>;
    async fn save(&self, rec: &Release) -> Result<()>;
    /// Removes the records `gone` and whatever only they needed (`kept`: the ids still kept).
    async fn forget(&self, kept: &[String], gone: &[&Release]);

    /// Builds (and pushes) the images of services with a `build:` section, but those in
    /// `opts.built`.
    async fn build(&self, version: &str, opts: &DeployOptions) -> Result<Vec<Built>>;
    /// The container engines the region's services run on (endpoints); none for a cluster.
    fn engines(&self) -> Vec<String> {
        Vec::new()
    }
    /// The desired state of `version` from the configuration.
    async fn resolve(
        &mut self,
        version: &str,
        opts: &DeployOptions,
        purpose: Purpose,
    ) -> Result<()>;
    /// The desired state that makes `to` serve again instead of `from` (a rollback).
    async fn resolve_release(&mut self, to: &Release, from: &Release) -> Result<()>;
    /// What the desired state would change against what runs (and what the serving release
    /// of `history`, every record oldest first, applied).
    async fn prepare(&mut self, history: &[Release], opts: &DeployOptions) -> Result<Changes>;
    /// Writes the desired services and the backup of what runs now into `rec`; returns what
    /// was backed up, for the `Backed up` line.
    fn record(&self, rec: &mut Release) -> String;
    /// Runs `service`'s release step once for release `release`, in the new image with the
    /// service's environment and secrets, its output shown as it comes; stops it at its
    /// timeout and leaves nothing of it behind. `Err`: it could not be run at all.
    async fn release_step(
        &self,
        service: &str,
        step: &ReleaseStep,
        release: &str,
    ) -> anyhow::Result<StepRun>;
    /// Rolls the release out (and waits for it), changing what runs.
    async fn apply(&self, rec: &Release) -> anyhow::Result<()>;
    /// Watches the new release for its bake period.
    async fn verify(&self) -> anyhow::Result<()>;
    /// After verification: retires what the release no longer has.
    async fn complete(&self) -> anyhow::Result<()>;
    /// Writes what the rollout started (containers) into `rec`.
    fn applied(&self, rec: &mut Release);
    /// Puts back what ran before `rec` (its backup), whether this process rolled `rec` out or
    /// a killed one did. `Err` lists what could not be put back.
    async fn restore(
        &self,
        rec: &Release,
        history: &[Release],
    ) -> std::result::Result<(), Vec<String>>;
    /// What runs now and where to look, for a failure that needs a person.
    async fn describe_live(&self) -> (String, String);
    /// Where the region answers, for the summary.
    fn url(&self) -> Option<String>;

    async fn status(&self) -> Result<Status>;
    /// Drift: what runs against what the configuration says at `version` and what the
    /// releases of `history` (every record, oldest first, as the caller read it) set. Without
    /// a version, hand edits only: cheap, and needs no secret (for `status`). Values in the
    /// result are never secret.
    async fn drift(&self, version: Option<&str>, history: &[Release]) -> Result<Vec<Drift>>;
    /// Where `exec` backup jobs run.
    fn exec(&self) -> &dyn ExecIn;

    /// After `apply` or `steer`: why the rollout stands still waiting for `promote`, if it does.
    fn paused(&self) -> Option<String> {
        None
    }
    /// Before the lock and before anything changes: whether `how` can run the paused rollout
    /// recorded in `rec` from here (a Docker region whose hosts do not all answer cannot
    /// finish one: exit 6 naming them).
    fn steerable(&self, _rec: &Release, _how: Steer) -> Result<()> {
        Ok(())
    }
    /// Runs the remaining steps of the paused rollout recorded in `rec` (`Promote`/`Resume`).
    async fn steer(&self, _rec: &Release, how: Steer) -> anyhow::Result<()> {
        anyhow::bail!(
            "{} cannot {} a rollout: progressive delivery is built for Docker regions behind HAProxy",
            self.region().place(),
            how.verb()
        )
    }
    /// After a promotion this process made: the release and when the old set's window ends
    /// (seconds since the epoch), for the flow to end it then.
    fn window(&self) -> Option<(String, u64)> {
        None
    }
    /// Ends the window of the promoted release `id` if it still serves with its old set kept:
    /// the old set goes. False: nothing to do (a rollback or a deploy came first).
    async fn end_window(&self, _history: &[Release], _id: &str) -> anyhow::Result<bool> {
        Ok(false)
    }
    /// Asks a rollout running in another process to pause or abort at its next tick.
    async fn ask(&self, how: Steer) -> anyhow::Result<()> {
        anyhow::bail!(
            "{} cannot {} a running rollout: progressive delivery is built for Docker regions behind HAProxy",
            self.region().place(),
            how.verb()
        )
    }
}

/// The one place that turns a region's configuration into the target it gets: reads the
/// region and reaches its target (exit 6 naming it when it does not answer).
pub async fn open(ctx: &Ctx, region: &str) -> Result<Box<dyn Target>> {
    let regions = ctx.load()?;
    let (_, cfg) = ctx.config(&regions, region)?;
    let r = Region {
        name: region.to_string(),
        env: ctx.env_or_default(),
        root: ctx.sibling("."),
        ui: ctx.ui.clone(),
        cfg: cfg.clone(),
    };
    Ok(match &cfg.target {
        TargetConfig::Docker(d) => Box::new(docker::DockerRegion::open(r, d).await?),
        TargetConfig::Kubernetes(k) => {
            Box::new(kubernetes::Cluster::open(r, k, &ctx.sibling("templates")).await?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::LastLines;

    #[test]
    fn last_lines_are_whole_lines_across_chunks() {
        let mut t = LastLines::default();
        let mut seen = Vec::new();
        t.push(b"migrating\nschema ", |l| seen.push(l.to_string()));
        t.push(b"42\r\n", |l| seen.push(l.to_string()));
        for i in 0..30 {
            t.push(format!("line {i}\n").as_bytes(), |_| {});
        }
        t.push(b"no newline", |_| {});
        let kept = t.finish(|l| seen.push(l.to_string()));
        assert_eq!(seen, ["migrating", "schema 42", "no newline"]);
        assert_eq!(kept.len(), LastLines::KEEP);
        assert_eq!(kept.last().unwrap(), "no newline");
        assert_eq!(kept[0], "line 11");
    }
}
