//! A canary on a Docker region behind HAProxy: the new release's servers join the service's
//! backend beside the old ones, and HAProxy's server weights (`set server … weight`, applied
//! at once, no connection cut) give the new release each step's share of the traffic.
//!
//! On a region of several hosts the new containers spread over the hosts as a rolling deploy
//! spreads them, each [`Server`] knowing its host; the weights are computed over every old
//! and new server of the backend, whatever host it is on, so a step's share is the region's.
//!
//! Its whole state — steps, the next step, weights, servers, the last analysis — is a
//! [`Canary`] written into the release record on every host that answers at every step, so
//! another process (a later CI job on another runner) that reaches any of them can `promote`
//! or `abort` a paused canary (an ask to a running one is written to every host it reaches
//! and taken from any), and a killed run's canary is aborted by the next command like any
//! interrupted release.
//!
//! The decisions are pure functions ([`weights`], [`judge`]); [`Canary::run`] does them.
//! Analysis reads HAProxy's counters of the new servers only, as a difference since the
//! window began (counters are cumulative since a server was added), and GETs `http.path` on
//! each new container. A broken condition aborts: the old servers get their weight back and
//! the new ones are drained in one Runtime API line, then removed.

use std::collections::HashMap as Map;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{ListVolumesOptions, RemoveVolumeOptions};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use crate::config::model::Rollout;
use crate::config::progressive::{describe, Conditions, Pause, Step};
use crate::health::{self, CheckResult};
use crate::traffic::haproxy::{Haproxy, ServerStat};
use crate::ui::Ui;

use super::desired::Desired;
use super::drift::WEIGHT;
use super::naming::Scope;
use super::rollout::Member;
use super::{DockerRegion, Engine, Host, LiveContainer};
use crate::config::progressive::Strategy;
use crate::plan::{Action, ServicePlan};
use crate::release::{ContainerRecord, Release};
use crate::targets::{Steer, Target};

/// The key of the canary's state in a release record.
pub const STATE: &str = "canary";
/// HAProxy's highest server weight.
const MAX_WEIGHT: u32 = 256;
/// How often a pause or an analysis reads HAProxy's counters and looks for a `pause`/`abort`
/// asked by another process.
const TICK: Duration = Duration::from_millis(500);

/// One server of a canary: its container and its name in the backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    pub server: String,
    pub container: String,
    pub id: String,
    pub addr: Option<SocketAddr>,
    /// The tag of the host its container runs on ([`super::naming::host_tags`]; empty with
    /// one host).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
}

/// One service of a canary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Service {
    pub service: String,
    pub backend: String,
    /// The new release's servers.
    pub new: Vec<Server>,
    /// The servers that served before, until the canary completes.
    pub old: Vec<Server>,
    /// What the canary's decisions and its drains read: the service's `rollout:`.
    pub rollout: Rollout,
    pub stop_grace: Duration,
    /// A blue-green's preview backend, where the new servers answer before the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

/// What an analysis measured, and whether it passed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Answers of the new servers in the window, and how many were 5xx.
    pub responses: u64,
    pub errors: u64,
    /// The highest average response time of a new server, in ms (HAProxy's `rtime`).
    pub response_time_ms: Option<u64>,
    /// The old servers' 5xx ratio in the same window, to compare.
    pub old_ratio: Option<f64>,
    /// The first failed check of `http.path` on a new container.
    pub http_failure: Option<String>,
    /// The condition broken, with its measured value; `None`: passed (or too few answers).
    pub failed: Option<String>,
    /// The Prometheus condition's query and value, when the analysis has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<crate::prometheus::Evaluated>,
}

impl Measured {
    pub fn ratio(&self) -> Option<f64> {
        (self.responses > 0).then(|| self.errors as f64 / self.responses as f64)
    }

    /// `5xx 0.0% of 240 answers (old 0.0%), response time 3ms`
    pub fn describe(&self) -> String {
        let mut s = match self.ratio() {
            Some(r) => format!("5xx {:.1}% of {} answers", r * 100.0, self.responses),
            None => "no answers yet".to_string(),
        };
        if let Some(o) = self.old_ratio {
            s.push_str(&format!(" (old {:.1}%)", o * 100.0));
        }
        if let Some(t) = self.response_time_ms {
            s.push_str(&format!(", response time {t}ms"));
        }
        if let Some(f) = &self.http_failure {
            s.push_str(&format!(", http check: {f}"));
        }
        if let Some(p) = &self.prometheus {
            s.push_str(&format!(", {}", p.describe()));
        }
        s
    }
}

/// The state of a canary, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Canary {
    pub steps: Vec<Step>,
    /// The index of the next step to run (`steps.len()`: all ran).
    pub next: usize,
    /// The new release's share of the traffic now, in percent.
    pub weight: u32,
    /// The HAProxy weights of a new and of an old server now.
    pub weights: (u32, u32),
    pub services: Vec<Service>,
    /// The last analysis (a step's, or the background one of a pause).
    pub analysis: Option<Measured>,
    /// Why it stands still (an indefinite pause, `pause`), for `status` and the lock.
    pub paused: Option<String>,
    /// The step `pause` stopped in: `resume` runs it again, `promote` goes past it.
    #[serde(default)]
    pub resume_from: Option<usize>,
    /// Every step ran and the old servers are leaving: taking it back would put traffic on
    /// servers already gone, so a run killed here is not aborted (see `abort_canary`).
    #[serde(default)]
    pub completing: bool,
    /// A blue-green (its steps are the pre-promotion analysis, the wait for `promote` and
    /// the switch): where it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreen>,
    /// The new release's id and version (a Prometheus query's `$release`, `$version`).
    #[serde(default)]
    pub release: String,
    #[serde(default)]
    pub version: String,
}

/// Where a blue-green stands, beside the canary state it is run with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlueGreen {
    pub phase: Phase,
    /// How long the old set stays after the switch, in seconds.
    pub scale_down_delay_s: u64,
    /// When the old set goes (seconds since the epoch), once promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_until: Option<u64>,
    /// Where the preview answers, when the region says (`rollout.preview.frontend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_frontend: Option<String>,
    /// The release it belongs to.
    #[serde(default)]
    pub release: String,
}

pub use crate::release::{now_s, BlueGreenPhase as Phase};

/// How a run of steps ended.
#[derive(Debug, PartialEq)]
pub enum Ended {
    /// Every step ran: the new release takes all the traffic.
    Done,
    /// It waits for `promote` (or `resume`); the reason.
    Paused(String),
}

/// What another process asks of a running canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Pause,
    Abort,
}

/// The HAProxy weights of one new and one old server that give the new release `share`
/// percent of the traffic with `new` and `old` servers: `share/100 = new·wn / (new·wn +
/// old·wo)`, reduced, within HAProxy's 0..=256.
pub fn weights(share: u32, new: usize, old: usize) -> (u32, u32) {
    let share = share.min(100);
    if share == 100 || old == 0 {
        return (WEIGHT as u32, 0);
    }
    if share == 0 || new == 0 {
        return (0, WEIGHT as u32);
    }
    let mut wn = u64::from(share) * old as u64;
    let mut wo = u64::from(100 - share) * new as u64;
    let g = gcd(wn, wo);
    wn /= g;
    wo /= g;
    let top = wn.max(wo);
    if top > u64::from(MAX_WEIGHT) {
        let scale = top as f64 / f64::from(MAX_WEIGHT);
        wn = ((wn as f64 / scale).round() as u64).max(1);
        wo = ((wo as f64 / scale).round() as u64).max(1);
    }
    (wn as u32, wo as u32)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}

/// Counters of a set of servers at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub responses: u64,
    pub errors: u64,
}

impl Counters {
    fn of<'a>(stats: impl Iterator<Item = &'a ServerStat>) -> Counters {
        stats.fold(Counters::default(), |c, s| Counters {
            responses: c.responses + s.responses,
            errors: c.errors + s.hrsp_5xx,
        })
    }

    fn since(self, base: Counters) -> Counters {
        Counters {
            responses: self.responses.saturating_sub(base.responses),
            errors: self.errors.saturating_sub(base.errors),
        }
    }
}

/// Judges a window: the new servers' counters since it began, their highest response time,
/// the old servers' counters, the first failed HTTP check. Ratio and response time count
/// only with `min_requests` answers.
pub fn judge(
    c: &Conditions,
    new: Counters,
    rtime_ms: Option<u64>,
    old: Counters,
    http_failure: Option<String>,
) -> Measured {
    let mut m = Measured {
        responses: new.responses,
        errors: new.errors,
        response_time_ms: rtime_ms,
        old_ratio: (old.responses > 0).then(|| old.errors as f64 / old.responses as f64),
        http_failure: http_failure.clone(),
        failed: None,
        prometheus: None,
    };
    let enough = new.responses >= c.min_requests.max(1);
    if let (true, Some(r)) = (enough, m.ratio()) {
        if r > c.max_5xx_ratio {
            m.failed = Some(format!(
                "5xx ratio {:.1}% ({} of {} answers of the new release) is above max_5xx_ratio {:.1}%",
                r * 100.0,
                new.errors,
                new.responses,
                c.max_5xx_ratio * 100.0
            ));
            return m;
        }
    }
    if let (true, Some(t), Some(max)) = (enough, rtime_ms, c.max_response_time) {
        if u128::from(t) > max.0.as_millis() {
            m.failed = Some(format!(
                "response time {t}ms of the new release is above max_response_time {max}"
            ));
            return m;
        }
    }
    if let (Some(f), Some(h)) = (http_failure, &c.http) {
        m.failed = Some(format!("http check GET {} failed: {f}", h.path));
    }
    m
}

/// What a canary drives: the region's hosts (each server's container runs on one of them)
/// and its HAProxy, whose backends hold the servers of every host.
pub struct Drive<'a> {
    pub hosts: &'a [Host],
    pub lb: &'a Haproxy,
    pub ui: &'a Ui,
}

impl Drive<'_> {
    /// The engine of the host `x` runs on (a host that did not answer is an error naming it).
    fn engine(&self, x: &Server) -> anyhow::Result<&Engine> {
        let host = self
            .hosts
            .iter()
            .find(|h| h.tag == x.host)
            // Recorded with one host (no tag): that host.
            .or_else(|| self.hosts.first().filter(|_| x.host.is_empty()))
            .ok_or_else(|| {
                anyhow!(
                    "{} runs on host {}, which the region no longer lists",
                    x.container,
                    x.host
                )
            })?;
        host.reach
            .as_ref()
            .map_err(|e| anyhow!("host {} is not reachable: {e}", host.endpoint))
    }
}

impl Canary {
    /// The conditions of a step (`None`: the background analysis of a pause).
    fn conditions(&self, step: Option<&crate::config::progressive::Analysis>) -> Conditions {
        let rollout = self
            .services
            .first()
            .map(|s| s.rollout.clone())
            .unwrap_or_default();
        Conditions::of(&rollout, step)
    }

    /// `step 3/5 (pause (until promote)), 50% to the new release`
    pub fn describe(&self) -> String {
        let at = match self.next.checked_sub(1).and_then(|i| self.steps.get(i)) {
            Some(s) => format!("step {}/{} ({s})", self.next, self.steps.len()),
            None => format!("before step 1/{}", self.steps.len()),
        };
        format!("{at}, {}% to the new release", self.weight)
    }

    pub fn steps_line(&self) -> String {
        describe(&self.steps)
    }

    /// Runs the steps from `next` on. `save` records the state after every step; `asked`
    /// says whether another process asked to pause or abort. An `Err` names the broken
    /// condition with its value (the caller aborts).
    pub async fn run<S, A>(
        &mut self,
        d: &Drive<'_>,
        mut save: S,
        mut asked: A,
    ) -> anyhow::Result<Ended>
    where
        S: AsyncSave,
        A: AsyncAsk,
    {
        self.paused = None;
        self.resume_from = None;
        while let Some(step) = self.steps.get(self.next).cloned() {
            self.next += 1;
            match step {
                Step::Weight(w) => {
                    // Recorded first, with the share it moves to: a run killed in between
                    // is taken back whatever the weights were, and `status` does not say
                    // 0% while HAProxy may already send the new release its share.
                    (self.weight, self.weights) = (w, self.server_weights(w));
                    save.save(self).await?;
                    self.set_share(d, w).await?
                }
                Step::Pause(Pause(None)) => {
                    let why = if self.blue_green.is_some() {
                        "blue-green at its preview (production all on the old set) until promote"
                            .to_string()
                    } else {
                        format!(
                            "paused at step {}/{} ({}% to the new release) until promote",
                            self.next,
                            self.steps.len(),
                            self.weight
                        )
                    };
                    self.paused = Some(why.clone());
                    save.save(self).await?;
                    return Ok(Ended::Paused(why));
                }
                Step::Pause(Pause(Some(p))) => {
                    d.ui.status("Pausing", format!("{p} at {}%", self.weight));
                    let c = self.conditions(None);
                    if let Some(e) = self.watch(d, &c, p.0, &mut save, &mut asked).await? {
                        return Ok(e);
                    }
                }
                Step::Analysis(a) => {
                    let c = self.conditions(Some(&a));
                    d.ui.status(
                        "Analysing",
                        format!("the new release for {} at {}%", c.duration, self.weight),
                    );
                    if let Some(e) = self
                        .watch(d, &c, c.duration.0, &mut save, &mut asked)
                        .await?
                    {
                        return Ok(e);
                    }
                    if let Some(m) = &self.analysis {
                        d.ui.status("Passed", m.describe());
                    }
                }
            }
            save.save(self).await?;
        }
        if self.weight < 100 {
            self.set_share(d, 100).await?;
            save.save(self).await?;
        }
        Ok(Ended::Done)
    }

    /// The (new, old) server weights that give the new release `share` percent (those of
    /// the last service, as `status` shows them).
    fn server_weights(&self, share: u32) -> (u32, u32) {
        self.services
            .last()
            .map_or((0, 0), |s| weights(share, s.new.len(), s.old.len()))
    }

    /// Gives the new release `share` percent: every server's weight in one Runtime API line.
    pub async fn set_share(&mut self, d: &Drive<'_>, share: u32) -> anyhow::Result<()> {
        let mut cmds = Vec::new();
        for s in &self.services {
            let (wn, wo) = weights(share, s.new.len(), s.old.len());
            cmds.extend(s.new.iter().map(|x| weight_cmd(&s.backend, &x.server, wn)));
            cmds.extend(s.old.iter().map(|x| weight_cmd(&s.backend, &x.server, wo)));
        }
        d.lb.run_all(&cmds).await?;
        let shown = self.server_weights(share);
        self.weight = share;
        self.weights = shown;
        d.ui.status(
            "Weighted",
            format!(
                "{share}% to the new release (server weights: new {}, old {})",
                shown.0, shown.1
            ),
        );
        Ok(())
    }

    /// Watches for `how_long`: HAProxy's counters of the new servers and their HTTP check
    /// every tick; another process's `pause` or `abort`. `Some`: the canary stops here.
    async fn watch<S: AsyncSave, A: AsyncAsk>(
        &mut self,
        d: &Drive<'_>,
        c: &Conditions,
        how_long: Duration,
        save: &mut S,
        asked: &mut A,
    ) -> anyhow::Result<Option<Ended>> {
        let (base_new, base_old) = self.counters(d).await?;
        let until = Instant::now() + how_long;
        loop {
            tokio::time::sleep(TICK.min(until.saturating_duration_since(Instant::now()))).await;
            let (new, old) = self.counters(d).await?;
            let rtime = self.response_time(d).await?;
            let http = match &c.http {
                Some(h) => self.http_failure(d, h, c).await,
                None => None,
            };
            let mut m = judge(c, new.since(base_new), rtime, old.since(base_old), http);
            if let Some(pc) = &c.prometheus {
                let e = crate::prometheus::evaluate(pc, &self.release, &self.version).await;
                if m.failed.is_none() {
                    m.failed = e.failed.clone();
                }
                m.prometheus = Some(e);
            }
            let failed = m.failed.clone();
            self.analysis = Some(m);
            if let Some(why) = failed {
                save.save(self).await?;
                bail!("analysis failed: {why}");
            }
            match asked.asked().await? {
                Some(Ask::Abort) => bail!("aborted by hand"),
                Some(Ask::Pause) => {
                    let why = format!(
                        "paused by hand at step {}/{} ({}% to the new release)",
                        self.next,
                        self.steps.len(),
                        self.weight
                    );
                    // The interrupted step runs again on `resume`; `promote` goes past it.
                    self.resume_from = Some(self.next - 1);
                    self.paused = Some(why.clone());
                    save.save(self).await?;
                    return Ok(Some(Ended::Paused(why)));
                }
                None => {}
            }
            if Instant::now() >= until {
                return Ok(None);
            }
        }
    }

    /// The backend whose counters judge the new servers of `s`: a blue-green's preview
    /// before the switch (production sends them nothing yet), else the service's backend.
    fn judged<'s>(&self, s: &'s Service) -> &'s str {
        match &s.preview {
            Some(p) if self.weight == 0 => p,
            _ => &s.backend,
        }
    }

    async fn counters(&self, d: &Drive<'_>) -> anyhow::Result<(Counters, Counters)> {
        let (mut new, mut old) = (Counters::default(), Counters::default());
        for s in &self.services {
            let stats = d.lb.servers(self.judged(s)).await?;
            let of = |set: &[Server]| {
                Counters::of(
                    stats
                        .iter()
                        .filter(|st| set.iter().any(|x| x.server == st.name)),
                )
            };
            let (n, o) = (of(&s.new), of(&s.old));
            new = Counters {
                responses: new.responses + n.responses,
                errors: new.errors + n.errors,
            };
            old = Counters {
                responses: old.responses + o.responses,
                errors: old.errors + o.errors,
            };
        }
        Ok((new, old))
    }

    async fn response_time(&self, d: &Drive<'_>) -> anyhow::Result<Option<u64>> {
        let mut worst = None;
        for s in &self.services {
            for st in d.lb.servers(self.judged(s)).await? {
                if s.new.iter().any(|x| x.server == st.name) && st.responses > 0 {
                    worst = worst.max(Some(st.rtime_ms));
                }
            }
        }
        Ok(worst)
    }

    /// The first new container whose `GET http.path` does not answer `http.status` (at
    /// `http.port`'s published address, else the one HAProxy uses).
    async fn http_failure(
        &self,
        d: &Drive<'_>,
        h: &crate::config::model::HttpCheck,
        c: &Conditions,
    ) -> Option<String> {
        let timeout = c.duration.0.min(Duration::from_secs(2));
        for x in self.services.iter().flat_map(|s| &s.new) {
            let addr = match h.port {
                Some(p) => match d.engine(x) {
                    Ok(e) => match e.inspect(&x.id).await {
                        Ok(Some(st)) => st.ports.get(&p).copied(),
                        _ => None,
                    },
                    Err(_) => None,
                },
                None => x.addr,
            };
            let Some(addr) = addr else {
                return Some(format!("{} publishes no port to check", x.container));
            };
            if let CheckResult::Fail(r) | CheckResult::Fatal(r) =
                health::http_check(addr, &h.path, h.status, timeout).await
            {
                return Some(format!("{} answered {r}", x.container));
            }
        }
        None
    }

    /// The end of a canary that completed: the old servers drained out of the backend and
    /// stopped (kept for rollback), the new ones at the normal weight.
    pub async fn complete(&mut self, d: &Drive<'_>) -> anyhow::Result<()> {
        self.retire_old(d).await?;
        for s in &self.services {
            let cmds: Vec<String> = s
                .new
                .iter()
                .map(|x| weight_cmd(&s.backend, &x.server, WEIGHT as u32))
                .collect();
            d.lb.run_all(&cmds).await?;
        }
        self.weights = (WEIGHT as u32, 0);
        Ok(())
    }

    /// The old servers drained out of the backend and stopped (kept for a rollback by
    /// restart).
    async fn retire_old(&self, d: &Drive<'_>) -> anyhow::Result<()> {
        for s in &self.services {
            for x in &s.old {
                d.ui.status("Draining", x.server.clone());
                // Already out when an earlier end of this window was interrupted.
                d.lb.set_state(
                    &s.backend,
                    &x.server,
                    crate::traffic::haproxy::ServerState::Drain,
                )
                .await
                .or_else(ignore_missing)?;
                if !d
                    .lb
                    .wait_drained(&s.backend, &x.server, s.rollout.drain_timeout.0)
                    .await?
                {
                    d.ui.warn(format!(
                        "{} still had sessions after the {} drain timeout; stopping it anyway",
                        x.server, s.rollout.drain_timeout
                    ));
                }
                d.lb.del_server(&s.backend, &x.server).await?;
                d.engine(x)?.stop(&x.id, s.stop_grace).await?;
                d.ui.status("Stopped", format!("{} (kept for rollback)", x.container));
            }
        }
        Ok(())
    }

    /// A blue-green that switched: the new servers leave the preview backend, the old ones
    /// stay at weight 0 (running, checked) until `keep_until`.
    pub async fn promoted(&mut self, d: &Drive<'_>) -> anyhow::Result<()> {
        self.leave_preview(d).await?;
        if let Some(bg) = &mut self.blue_green {
            bg.phase = Phase::Promoted;
            bg.keep_until = Some(now_s() + bg.scale_down_delay_s);
            d.ui.status(
                "Promoted",
                format!(
                    "all traffic on the new set; the old set stays at weight 0 for {}s (`rollback` switches back at once)",
                    bg.scale_down_delay_s
                ),
            );
        }
        Ok(())
    }

    async fn leave_preview(&self, d: &Drive<'_>) -> anyhow::Result<()> {
        for s in &self.services {
            let Some(p) = &s.preview else { continue };
            for x in &s.new {
                d.lb.set_state(p, &x.server, crate::traffic::haproxy::ServerState::Drain)
                    .await
                    .or_else(ignore_missing)?;
                d.lb.wait_drained(p, &x.server, s.rollout.drain_timeout.0)
                    .await?;
                d.lb.del_server(p, &x.server).await?;
            }
        }
        Ok(())
    }

    /// The end of a blue-green's window: the old set drained out and stopped.
    pub async fn scale_down(&mut self, d: &Drive<'_>) -> anyhow::Result<()> {
        self.retire_old(d).await?;
        if let Some(bg) = &mut self.blue_green {
            bg.phase = Phase::ScaledDown;
        }
        Ok(())
    }

    /// A rollback inside a blue-green's window: the old servers take all the traffic and the
    /// new ones none, in one Runtime API line; then the new ones are drained out and
    /// stopped (kept). Returns how long the switch itself took.
    pub async fn switch_back(&mut self, d: &Drive<'_>) -> anyhow::Result<Duration> {
        let mut cmds = Vec::new();
        for s in &self.services {
            cmds.extend(
                s.old
                    .iter()
                    .map(|x| weight_cmd(&s.backend, &x.server, WEIGHT as u32)),
            );
            cmds.extend(s.new.iter().map(|x| weight_cmd(&s.backend, &x.server, 0)));
        }
        let t0 = Instant::now();
        d.lb.run_all(&cmds).await?;
        let took = t0.elapsed();
        self.weight = 0;
        self.weights = (0, WEIGHT as u32);
        if let Some(bg) = &mut self.blue_green {
            bg.phase = Phase::SwitchedBack;
        }
        d.ui.status(
            "Switched",
            format!(
                "all traffic back on the old set in one Runtime API line ({:.1} ms)",
                took.as_secs_f64() * 1000.0
            ),
        );
        for s in &self.services {
            for x in &s.new {
                d.lb.set_state(
                    &s.backend,
                    &x.server,
                    crate::traffic::haproxy::ServerState::Drain,
                )
                .await
                .or_else(ignore_missing)?;
                d.lb.wait_drained(&s.backend, &x.server, s.rollout.drain_timeout.0)
                    .await?;
                d.lb.del_server(&s.backend, &x.server).await?;
                d.engine(x)?.stop(&x.id, s.stop_grace).await?;
                d.ui.status("Stopped", format!("{} (kept)", x.container));
            }
        }
        Ok(took)
    }

    /// Aborts: the old servers take all the traffic again and the new ones take no more, in
    /// one Runtime API line; then the new ones are drained, removed from the backend, stopped
    /// and removed. Returns what could not be done.
    pub async fn abort(&mut self, d: &Drive<'_>) -> Vec<String> {
        let mut problems = Vec::new();
        let mut cmds = Vec::new();
        for s in &self.services {
            cmds.extend(
                s.old
                    .iter()
                    .map(|x| weight_cmd(&s.backend, &x.server, WEIGHT as u32)),
            );
            cmds.extend(
                s.new
                    .iter()
                    .map(|x| format!("set server {}/{} state drain", s.backend, x.server)),
            );
            if let Some(p) = &s.preview {
                cmds.extend(
                    s.new
                        .iter()
                        .map(|x| format!("set server {p}/{} state drain", x.server)),
                );
            }
        }
        // A server someone deleted meanwhile has nothing to take back: each line on its own.
        if d.lb.run_all(&cmds).await.is_err() {
            for c in &cmds {
                if let Err(e) = d.lb.run_all(std::slice::from_ref(c)).await {
                    if !e.to_string().contains("No such server") {
                        problems.push(format!("{e}"));
                    }
                }
            }
        }
        self.weight = 0;
        self.weights = (0, WEIGHT as u32);
        self.paused = None;
        d.ui.status(
            "Aborted",
            "all traffic back on the previous release; removing the new servers",
        );
        for s in &self.services {
            for x in &s.new {
                let r: anyhow::Result<()> = async {
                    d.lb.wait_drained(&s.backend, &x.server, s.rollout.drain_timeout.0)
                        .await?;
                    d.lb.del_server(&s.backend, &x.server).await?;
                    if let Some(p) = &s.preview {
                        d.lb.del_server(p, &x.server).await?;
                    }
                    let engine = d.engine(x)?;
                    engine.stop(&x.id, s.stop_grace).await?;
                    engine.remove(&x.id).await?;
                    Ok(())
                }
                .await;
                if let Err(e) = r {
                    problems.push(format!("{}: {e:#}", x.container));
                }
            }
        }
        problems
    }
}

/// A server someone deleted meanwhile has nothing left to do.
fn ignore_missing(
    e: crate::traffic::haproxy::HaproxyError,
) -> Result<(), crate::traffic::haproxy::HaproxyError> {
    if e.to_string().contains("No such server") {
        Ok(())
    } else {
        Err(e)
    }
}

fn weight_cmd(backend: &str, server: &str, weight: u32) -> String {
    format!("set server {backend}/{server} weight {weight}")
}

/// Records the canary's state (on the engine, in its release record).
#[async_trait::async_trait]
pub trait AsyncSave: Send {
    async fn save(&mut self, c: &Canary) -> anyhow::Result<()>;
}

#[async_trait::async_trait]
impl<T: AsyncSave + ?Sized> AsyncSave for &mut T {
    async fn save(&mut self, c: &Canary) -> anyhow::Result<()> {
        (**self).save(c).await
    }
}

/// Whether another process asked the running canary to pause or abort.
#[async_trait::async_trait]
pub trait AsyncAsk: Send {
    async fn asked(&mut self) -> anyhow::Result<Option<Ask>>;
}

/// Parses a recorded canary.
pub fn of_record(rec: &crate::release::Release) -> Option<Canary> {
    rec.state_of(STATE)
}

/// The canary or blue-green of `rec` while it is under way: paused, running, or a
/// blue-green whose old set still waits out its window.
pub fn under_way(rec: &Release) -> Option<Canary> {
    let c = of_record(rec)?;
    let promoted = c
        .blue_green
        .as_ref()
        .is_some_and(|b| b.phase == Phase::Promoted);
    match rec.outcome {
        crate::release::Outcome::Paused | crate::release::Outcome::InProgress => Some(c),
        crate::release::Outcome::Succeeded if promoted => Some(c),
        _ => None,
    }
}

/// The serving release of `history` when it is a promoted blue-green whose old set still
/// runs at weight 0.
pub fn promoted_of(history: &[Release]) -> Option<(Release, Canary)> {
    let serving = crate::release::serving(history)?;
    let c = of_record(serving)?;
    (c.blue_green.as_ref()?.phase == Phase::Promoted).then(|| (serving.clone(), c))
}

/// The error for a region whose last release is no paused canary.
pub fn not_paused(place: &str) -> anyhow::Error {
    anyhow!("{place} has no paused canary")
}

// ---- the Docker region's side: start, drive, store, abort, show -------------------------

/// The label of an ask volume that says what was asked.
const ASK_LABEL: &str = "packfy.canary.ask";

impl Ask {
    fn as_str(self) -> &'static str {
        match self {
            Ask::Pause => "pause",
            Ask::Abort => "abort",
        }
    }
}

impl Engine {
    /// Asks the canary of `scope` running in another process to pause or abort: a labelled
    /// volume it looks for at every tick (any machine that reaches the engine can ask).
    pub async fn ask_canary(&self, scope: &Scope, ask: Ask) -> anyhow::Result<()> {
        let mut labels = scope.labels("canary-ask");
        labels.insert(ASK_LABEL.into(), ask.as_str().into());
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(format!(
                    "packfy-canary-{}-{}-{}-{}",
                    scope.app,
                    scope.region,
                    scope.env,
                    ask.as_str()
                )),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("cannot ask the canary on {}: {e}", self.endpoint))?;
        Ok(())
    }

    /// What was asked of the canary of `scope`, if anything (taken: asked once). An abort
    /// wins over a pause.
    pub async fn take_ask(&self, scope: &Scope) -> anyhow::Result<Option<Ask>> {
        let filters: Map<String, Vec<String>> = Map::from([(
            "label".to_string(),
            scope
                .filter("canary-ask")
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        )]);
        let list = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| anyhow!("cannot list volumes on {}: {e}", self.endpoint))?;
        let mut asked = None;
        for v in list.volumes.unwrap_or_default() {
            let ask = match v.labels.get(ASK_LABEL).map(String::as_str) {
                Some("abort") => Ask::Abort,
                _ => Ask::Pause,
            };
            let _ = self
                .docker
                .remove_volume(&v.name, Some(RemoveVolumeOptions { force: true }))
                .await;
            if asked != Some(Ask::Abort) {
                asked = Some(ask);
            }
        }
        Ok(asked)
    }
}

/// Saves the canary into its release record on every host that answers (as every record is
/// kept), so a process that reaches any one of them steers it.
struct Recorder<'a> {
    region: &'a DockerRegion,
    rec: Release,
}

#[async_trait::async_trait]
impl AsyncSave for Recorder<'_> {
    async fn save(&mut self, c: &Canary) -> anyhow::Result<()> {
        *self.region.canary.lock().expect("canary") = Some(c.clone());
        self.rec.set_state(STATE, c);
        self.region.save_on_hosts(&self.rec).await
    }
}

/// Reads what other processes ask of the canary, on every host that answers.
struct Asks<'a> {
    region: &'a DockerRegion,
}

#[async_trait::async_trait]
impl AsyncAsk for Asks<'_> {
    async fn asked(&mut self) -> anyhow::Result<Option<Ask>> {
        self.region.take_ask_anywhere().await
    }
}

/// The answers of the hosts that answered, or the first error when none did (an ask, or a
/// look for one, needs one host the other process reaches too).
fn any_host<T>(answers: Vec<anyhow::Result<T>>) -> anyhow::Result<Vec<T>> {
    let mut ok = Vec::new();
    let mut first_err = None;
    for a in answers {
        match a {
            Ok(v) => ok.push(v),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match (ok.is_empty(), first_err) {
        (true, Some(e)) => Err(e),
        _ => Ok(ok),
    }
}

/// Of the asks found on the hosts, the one that counts: an abort wins over a pause.
fn strongest(found: impl IntoIterator<Item = Option<Ask>>) -> Option<Ask> {
    found
        .into_iter()
        .flatten()
        .max_by_key(|a| matches!(a, Ask::Abort))
}

/// Whether a service's changes go out as a canary: its strategy says so, HAProxy is in front
/// and old containers serve (a first release has nothing to compare with: it rolls).
pub fn is_canary(d: &Desired, p: &ServicePlan, live: &[LiveContainer], behind_lb: bool) -> bool {
    matches!(
        d.service.rollout.strategy,
        Strategy::Canary | Strategy::BlueGreen
    ) && behind_lb
        && p.action == Action::Replace
        && live.iter().any(|c| c.running && c.service == d.name)
}

/// Drift without what a canary under way (paused or running) set: its new containers and
/// servers, and the weights of its old and new servers, are the release's, not hand edits.
pub fn not_drift<T>(
    history: &[Release],
    found: Vec<(crate::drift::Drift, T)>,
) -> Vec<(crate::drift::Drift, T)> {
    let Some(c) = history.last().and_then(under_way) else {
        return found;
    };
    let names: Vec<&str> = c
        .services
        .iter()
        .flat_map(|s| s.new.iter().chain(&s.old))
        .flat_map(|x| [x.server.as_str(), x.container.as_str()])
        .collect();
    found
        .into_iter()
        .filter(|(d, _)| !names.iter().any(|n| d.path.contains(n)))
        .collect()
}

/// What `plan` says of the services that go out as a canary (and of those whose strategy
/// says canary but that roll: a first release).
pub fn plan_notes(
    desired: &[Desired],
    plans: &[ServicePlan],
    live: &[LiveContainer],
    behind_lb: bool,
    backends: &std::collections::HashMap<String, String>,
) -> Vec<String> {
    desired
        .iter()
        .zip(plans)
        .filter(|(d, p)| {
            matches!(
                d.service.rollout.strategy,
                Strategy::Canary | Strategy::BlueGreen
            ) && p.action != Action::Unchanged
        })
        .map(|(d, p)| {
            let r = &d.service.rollout;
            if r.strategy == Strategy::BlueGreen {
                return if is_canary(d, p, live, behind_lb) {
                    blue_green_note(&d.name, r, backends.get(&d.name))
                } else {
                    format!(
                        "{}: strategy blue_green, but nothing serves yet to switch from: this release rolls out",
                        d.name
                    )
                };
            }
            if is_canary(d, p, live, behind_lb) {
                format!(
                    "{}: strategy canary, HAProxy weights: {}",
                    d.name,
                    describe(&d.service.rollout.steps)
                )
            } else {
                format!(
                    "{}: strategy canary, but nothing serves yet to compare with: this release rolls out",
                    d.name
                )
            }
        })
        .collect()
}

/// What a blue-green of service `name` will do, for `plan`.
pub fn blue_green_note(name: &str, r: &Rollout, backend: Option<&String>) -> String {
    let preview = backend.map_or_else(|| "?".to_string(), |b| r.preview.backend_for(b));
    let at = r
        .preview
        .frontend
        .as_ref()
        .map(|f| format!(" at {f}"))
        .unwrap_or_default();
    let analysis = if r.analysis != crate::config::progressive::Analysis::default() {
        let c = Conditions::of(r, None);
        format!(
            ", judged there for {} (HAProxy's counters of the preview)",
            c.duration
        )
    } else {
        String::new()
    };
    let switch = if r.auto_promote {
        "then switches all traffic at once"
    } else {
        "then waits for `promote` to switch all traffic at once"
    };
    format!(
        "{name}: strategy blue_green: the full new set starts beside the old one on preview backend {preview}{at} (no production traffic){analysis}, {switch}; the old set stays at weight 0 for {} (instant `rollback`), then goes",
        r.scale_down_delay
    )
}

impl DockerRegion {
    /// Before anything changes: the preview backend of every service that goes out as a
    /// blue-green is in HAProxy on every load balancer (it makes no backend at run time:
    /// haproxy.cfg must have it). The services' own backends are checked when their servers
    /// are first read ([`DockerRegion::lb_servers`]).
    pub(super) async fn check_previews(
        &self,
        plans: &[ServicePlan],
        live: &[LiveContainer],
    ) -> crate::error::Result<()> {
        let Some(lb) = &self.lb else { return Ok(()) };
        let backends = self.backends();
        for (desired, p) in self.desired().iter().zip(plans) {
            let r = &desired.service.rollout;
            if r.strategy != Strategy::BlueGreen || !is_canary(desired, p, live, true) {
                continue;
            }
            let Some(b) = backends.get(&desired.name) else {
                continue;
            };
            let preview = r.preview.backend_for(b);
            let lacking = lb
                .lacking_backend(&preview)
                .await
                .map_err(anyhow::Error::from)?;
            if !lacking.is_empty() {
                return Err(self.backend_missing(
                    &lacking,
                    &format!("blue-green preview backend `{preview}` of {}", desired.name),
                    "add `backend NAME` with a `frontend` of its own to haproxy.cfg, or set `rollout.preview.backend`; nothing was changed",
                ));
            }
        }
        Ok(())
    }

    /// Exit 2: `what` (a backend) is not in the HAProxy of the load balancers `lacking`.
    pub(super) fn backend_missing(
        &self,
        lacking: &[String],
        what: &str,
        hint: &str,
    ) -> crate::error::Error {
        let at = if self.lb.as_ref().is_some_and(|lb| lb.several()) {
            format!(" at {}", lacking.join(", "))
        } else {
            String::new()
        };
        crate::error::Error::usage_hint(
            format!(
                "{}: the {what} is not in HAProxy{at} (asked over its Runtime API)",
                self.region.name
            ),
            hint,
        )
    }

    fn drive(&self) -> Option<Drive<'_>> {
        Some(Drive {
            hosts: &self.hosts,
            lb: self.lb.as_ref()?,
            ui: &self.region.ui,
        })
    }

    /// Asks the canary running in another process, on every host that answers: it looks on
    /// every host it reaches, so the ask finds it through any host the two share.
    async fn ask_everywhere(&self, ask: Ask) -> anyhow::Result<()> {
        let asked = join_all(self.up().map(|(_, e)| e.ask_canary(&self.scope, ask))).await;
        any_host(asked).map(|_| ())
    }

    /// What was asked of this region's canary on any host that answers (taken from each).
    async fn take_ask_anywhere(&self) -> anyhow::Result<Option<Ask>> {
        let found = join_all(self.up().map(|(_, e)| e.take_ask(&self.scope))).await;
        Ok(strongest(any_host(found)?))
    }

    /// Starts the new release of `services` beside the old one, out of traffic (weight 0),
    /// then runs the canary's steps.
    pub(super) async fn start_canary(
        &self,
        rec: &Release,
        services: &[&Desired],
    ) -> anyhow::Result<()> {
        let d = self
            .drive()
            .ok_or_else(|| anyhow!("a canary needs HAProxy"))?;
        let lead = &services[0].service.rollout;
        let bg = lead.strategy == Strategy::BlueGreen;
        let backends = self.backends();
        let mut c = Canary {
            steps: if bg {
                crate::config::progressive::blue_green_steps(lead)
            } else {
                lead.steps.clone()
            },
            next: 0,
            weight: 0,
            weights: (0, WEIGHT as u32),
            services: Vec::new(),
            analysis: None,
            paused: None,
            resume_from: None,
            completing: false,
            blue_green: bg.then(|| BlueGreen {
                phase: Phase::Preview,
                scale_down_delay_s: lead.scale_down_delay.0.as_secs(),
                keep_until: None,
                preview_frontend: lead.preview.frontend.clone(),
                release: rec.id.clone(),
            }),
            release: rec.id.clone(),
            version: rec.version.clone(),
        };
        // An ask left over from an earlier canary is not for this one.
        self.take_ask_anywhere().await?;
        // Recorded as it grows: a run killed while starting is taken back too.
        let mut save = Recorder {
            region: self,
            rec: rec.clone(),
        };
        let live = &self.prepared.live;
        // The new containers spread over the hosts as a rolling deploy spreads them.
        let hosts: Vec<usize> = (0..self.hosts.len()).collect();
        let ros = hosts
            .iter()
            .map(|&h| self.rollout_on(h, &rec.id, &rec.version))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for desired in services {
            let backend = backends
                .get(&desired.name)
                .cloned()
                .ok_or_else(|| anyhow!("{} has no HAProxy backend", desired.name))?;
            let old = live
                .iter()
                .filter(|x| x.running && x.service == desired.name)
                .map(|x| Server {
                    server: self
                        .scope
                        .server(&x.host_tag, &x.service, &x.release, x.index),
                    container: x.name.clone(),
                    id: x.id.clone(),
                    addr: None,
                    host: x.host_tag.clone(),
                })
                .collect();
            c.services.push(Service {
                service: desired.name.clone(),
                backend: backend.clone(),
                new: Vec::new(),
                old,
                rollout: desired.service.rollout.clone(),
                stop_grace: desired.service.stop_grace_period.0,
                preview: bg.then(|| desired.service.rollout.preview.backend_for(&backend)),
            });
            let k = c.services.len() - 1;
            let share = crate::plan::spread(desired.replicas, self.hosts.len());
            // (host, container) of every new one, in the order of `c.services[k].new`.
            let mut members = Vec::new();
            for &h in &hosts {
                let on_host: Vec<LiveContainer> =
                    live.iter().filter(|x| x.host == h).cloned().collect();
                let first = super::next_index(&on_host, &desired.name);
                for i in 0..share[h] {
                    let m = ros[h]
                        .create(desired, first + i)
                        .await
                        .map_err(|e| self.on_host(h, e))?;
                    c.services[k].new.push(Server {
                        host: self.hosts[h].tag.clone(),
                        ..server_of(&m)
                    });
                    save.save(&c).await?;
                    members.push((h, m));
                }
            }
            let names: Vec<&str> = members.iter().map(|(_, m)| m.name.as_str()).collect();
            self.region.ui.status(
                "Starting",
                format!(
                    "{} {} (canary, no traffic yet)",
                    desired.name,
                    names.join(", ")
                ),
            );
            let ros = &ros;
            let ready = join_all(members.iter().map(|(h, m)| async move {
                ros[*h]
                    .wait_healthy(desired, m)
                    .await
                    .map_err(|e| self.on_host(*h, e))
            }))
            .await;
            let path = desired
                .service
                .health
                .http
                .as_ref()
                .map(|h| h.path.as_str());
            for (j, ((_, m), addr)) in members.iter().zip(ready).enumerate() {
                let addr = addr?.ok_or_else(|| anyhow!("{} publishes no port", m.name))?;
                let server = c.services[k].new[j].server.clone();
                let server = &server;
                d.lb.add_server(&backend, server, addr, path).await?;
                // Before its first check passes: the server takes no traffic until a step
                // gives it some.
                d.lb.set_weight(&backend, server, 0).await?;
                c.services[k].new[j].addr = Some(addr);
                save.save(&c).await?;
                if path.is_some()
                    && !d
                        .lb
                        .wait_up(&backend, server, desired.service.health.deadline.0)
                        .await?
                {
                    bail!("HAProxy never saw {server} ({addr}) as UP in {backend}");
                }
                // A blue-green's new set answers on its preview at full weight.
                if let Some(p) = c.services[k].preview.clone() {
                    d.lb.add_server(&p, server, addr, path).await?;
                    if path.is_some()
                        && !d
                            .lb
                            .wait_up(&p, server, desired.service.health.deadline.0)
                            .await?
                    {
                        bail!("HAProxy never saw {server} ({addr}) as UP in {p}");
                    }
                }
            }
            self.region.ui.status(
                "Healthy",
                format!("{} {} (canary, weight 0)", desired.name, names.join(", ")),
            );
        }
        self.region
            .ui
            .status("Canary", format!("{}: {}", rec.id, c.steps_line()));
        self.drive_canary(rec, c).await
    }

    /// Runs a canary's remaining steps; when all ran, the old servers leave. The state is in
    /// `self.canary` whatever happens (for `applied`, `paused` and `restore`).
    pub(super) async fn drive_canary(&self, rec: &Release, mut c: Canary) -> anyhow::Result<()> {
        let d = self
            .drive()
            .ok_or_else(|| anyhow!("a canary needs HAProxy"))?;
        *self.canary.lock().expect("canary") = Some(c.clone());
        let mut save = Recorder {
            region: self,
            rec: rec.clone(),
        };
        let asks = Asks { region: self };
        let ended = c.run(&d, &mut save, asks).await;
        *self.canary.lock().expect("canary") = Some(c.clone());
        match ended? {
            Ended::Paused(why) => {
                self.region.ui.status("Paused", why);
            }
            Ended::Done if c.blue_green.is_some() => {
                // Not `completing`: until the window ends, a failure (the bake) or a
                // rollback takes it back by weights alone.
                c.promoted(&d).await?;
                save.save(&c).await?;
                *self.canary.lock().expect("canary") = Some(c);
            }
            Ended::Done => {
                c.completing = true;
                save.save(&c).await?;
                c.complete(&d).await?;
                *self.canary.lock().expect("canary") = Some(c);
            }
        }
        Ok(())
    }

    /// Restores a canary's release: the one this process drives, else the recorded one.
    /// `None`: `rec` is no canary.
    pub(super) async fn abort_canary(&self, rec: &Release) -> Option<Vec<String>> {
        let held = self.canary.lock().expect("canary").clone();
        let mut c = held.or_else(|| of_record(rec))?;
        if c.completing {
            // Every step ran and old servers may be gone already: what is left of them gets
            // its weight back, and the restore goes on as after a rolling deploy (retained
            // old containers restarted, the new ones drained out).
            if let Some(d) = self.drive() {
                for s in &c.services {
                    for x in &s.old {
                        let _ = d.lb.set_weight(&s.backend, &x.server, WEIGHT as u32).await;
                    }
                }
            }
            return None;
        }
        let Some(d) = self.drive() else {
            return Some(vec!["a canary needs HAProxy to be taken back".into()]);
        };
        let problems = c.abort(&d).await;
        *self.canary.lock().expect("canary") = Some(c);
        Some(problems)
    }

    /// Writes the canary into `rec`: its state, and its new containers as the services'.
    pub(super) fn canary_applied(&self, rec: &mut Release) {
        let Some(c) = self.canary.lock().expect("canary").clone() else {
            return;
        };
        for s in &c.services {
            if let Some(sr) = rec.services.iter_mut().find(|sr| sr.name == s.service) {
                sr.containers = s
                    .new
                    .iter()
                    .map(|x| ContainerRecord {
                        name: x.container.clone(),
                        id: x.id.clone(),
                        addr: x.addr.map(|a| a.to_string()),
                    })
                    .collect();
            }
        }
        rec.set_state(STATE, &c);
    }

    /// Why the canary waits, if it does.
    pub(super) fn canary_paused(&self) -> Option<String> {
        self.canary.lock().expect("canary").as_ref()?.paused.clone()
    }

    /// `status`: the canary of the last release, when it is paused or running.
    pub(super) async fn canary_status(
        &self,
        lines: &mut Vec<String>,
        json: &mut serde_json::Map<String, serde_json::Value>,
    ) -> crate::error::Result<()> {
        let history = self.history().await?;
        let Some(last) = history.last() else {
            return Ok(());
        };
        let Some(c) = under_way(last) else {
            return Ok(());
        };
        if let Some(bg) = &c.blue_green {
            return self.blue_green_status(last, &c, bg, lines, json);
        }
        lines.push(format!(
            "  canary {} ({}, {}): {}",
            last.id,
            last.version,
            last.outcome.as_str(),
            c.describe()
        ));
        lines.push(format!("    steps: {}", c.steps_line()));
        lines.push(format!(
            "    server weights: new {}, old {}",
            c.weights.0, c.weights.1
        ));
        if let Some(m) = &c.analysis {
            lines.push(format!("    last analysis: {}", m.describe()));
        }
        if let Some(p) = &c.paused {
            lines.push(format!(
                "    {p}: `packfy-deploy promote --region {}` goes on, `abort` takes it back",
                self.region.name
            ));
        }
        let mut v = serde_json::to_value(&c).map_err(anyhow::Error::from)?;
        v["release"] = last.id.clone().into();
        v["version"] = last.version.clone().into();
        v["outcome"] = last.outcome.as_str().into();
        json.insert("canary".into(), v);
        Ok(())
    }

    /// `status` of a blue-green under way: its phase, where the preview and the sets answer.
    fn blue_green_status(
        &self,
        last: &Release,
        c: &Canary,
        bg: &BlueGreen,
        lines: &mut Vec<String>,
        json: &mut serde_json::Map<String, serde_json::Value>,
    ) -> crate::error::Result<()> {
        let phase = match (bg.phase, bg.keep_until) {
            (Phase::Preview, _) if c.paused.is_some() => {
                "preview: the new set answers on the preview only, waiting for promote".to_string()
            }
            (Phase::Preview, _) => "preview: the new set answers on the preview only".to_string(),
            (Phase::Promoted, Some(t)) if t > now_s() => format!(
                "promoted, scaling down: the old set stays at weight 0 for {}s more (`rollback` switches back at once)",
                t - now_s()
            ),
            (Phase::Promoted, _) => "promoted, scaling down: its window is over; the old set goes with the next deploy or rollback".to_string(),
            (p, _) => p.as_str().to_string(),
        };
        lines.push(format!(
            "  blue-green {} ({}, {}): {phase}",
            last.id,
            last.version,
            last.outcome.as_str()
        ));
        for s in &c.services {
            let addrs = |set: &[Server]| {
                set.iter()
                    .map(|x| match x.addr {
                        Some(a) => format!("{} {a}", x.server),
                        None => x.server.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if let (Phase::Preview, Some(p)) = (bg.phase, &s.preview) {
                let at = bg
                    .preview_frontend
                    .as_ref()
                    .map(|f| format!(" at {f}"))
                    .unwrap_or_default();
                lines.push(format!("    {} preview: backend {p}{at}", s.service));
            }
            lines.push(format!(
                "    {} production backend {}: new {} [{}], old {} [{}]",
                s.service,
                s.backend,
                c.weights.0,
                addrs(&s.new),
                c.weights.1,
                addrs(&s.old)
            ));
        }
        if let Some(m) = &c.analysis {
            lines.push(format!("    last analysis: {}", m.describe()));
        }
        if c.paused.is_some() {
            lines.push(format!(
                "    `packfy-deploy promote --region {}` switches all traffic to it, `abort` removes it",
                self.region.name
            ));
        }
        let mut v = serde_json::to_value(c).map_err(anyhow::Error::from)?;
        v["release"] = last.id.clone().into();
        v["version"] = last.version.clone().into();
        v["outcome"] = last.outcome.as_str().into();
        v["phase"] = bg.phase.as_str().into();
        json.insert("blue_green".into(), v);
        Ok(())
    }

    /// Ends the window of the promoted blue-green `id` (any, when `None`) serving in
    /// `history`: its old set drained out and stopped, its record saying so. False: none.
    pub(super) async fn end_bg_window(
        &self,
        history: &[Release],
        id: Option<&str>,
    ) -> anyhow::Result<bool> {
        let Some((mut rec, mut c)) = promoted_of(history) else {
            return Ok(false);
        };
        if id.is_some_and(|i| i != rec.id) {
            return Ok(false);
        }
        let d = self
            .drive()
            .ok_or_else(|| anyhow!("a blue-green needs HAProxy"))?;
        self.region.ui.status(
            "Scaling down",
            format!(
                "the old set {} kept beside {}",
                rec.previous.as_deref().unwrap_or("?"),
                rec.id
            ),
        );
        c.scale_down(&d).await?;
        rec.set_state(STATE, &c);
        self.save_on_hosts(&rec).await?;
        Ok(true)
    }

    /// A rollback inside a blue-green's window: one Runtime API line back to the old set
    /// (`from`: the promoted release, its record updated).
    pub(super) async fn switch_back(&self, mut from: Release, mut c: Canary) -> anyhow::Result<()> {
        let d = self
            .drive()
            .ok_or_else(|| anyhow!("a blue-green needs HAProxy"))?;
        let r = c.switch_back(&d).await;
        from.set_state(STATE, &c);
        self.save_on_hosts(&from).await?;
        r.map(|_| ())
    }

    /// After a promotion this process made: the release and when its window ends.
    pub(super) fn bg_window(&self) -> Option<(String, u64)> {
        let c = self.canary.lock().expect("canary").clone()?;
        let bg = c.blue_green?;
        (bg.phase == Phase::Promoted).then_some((bg.release, bg.keep_until?))
    }

    /// Steers the canary recorded in `rec` (in this process: its state comes from the record).
    pub(super) async fn steer_canary(&self, rec: &Release, how: Steer) -> anyhow::Result<()> {
        let mut c = of_record(rec).ok_or_else(|| not_paused(&self.region.place()))?;
        c.next = how.goes_on_at(c.next, c.resume_from, c.steps.len());
        self.region.ui.status(
            "Continuing",
            format!("{} from {}: {}", rec.id, c.describe(), c.steps_line()),
        );
        self.drive_canary(rec, c).await
    }

    /// A promote or resume that runs the canary to its end (no `{pause: {}}` left before it)
    /// retires the old set on every host: with a host that does not answer it would stop half
    /// way, so it is refused before anything changes. Steps that only move weights need
    /// HAProxy alone and go on (a runner that cannot reach one host can still take a step).
    pub(super) fn canary_steerable(&self, rec: &Release, how: Steer) -> crate::error::Result<()> {
        let down = self.down_hosts();
        let Some(c) = of_record(rec) else {
            return Ok(());
        };
        if down.is_empty() || !matches!(how, Steer::Promote { .. } | Steer::Resume) {
            return Ok(());
        }
        let from = how.goes_on_at(c.next, c.resume_from, c.steps.len());
        let completes = !c
            .steps
            .iter()
            .skip(from)
            .any(|s| matches!(s, Step::Pause(Pause(None))));
        if !completes {
            return Ok(());
        }
        Err(crate::error::Error::failed(
            crate::error::ExitCode::Unreachable,
            anyhow!(
                "{} {}: this would finish {} on every host, and {} does not answer",
                how.verb(),
                self.region.place(),
                rec.id,
                down.join(", ")
            ),
        )
        .with_hint("run it where every host answers, or promote step by step; nothing was changed"))
    }

    /// Asks a canary running in another process.
    pub(super) async fn ask_running(&self, ask: Ask) -> anyhow::Result<()> {
        self.ask_everywhere(ask).await
    }
}

fn server_of(m: &Member) -> Server {
    Server {
        server: m
            .server
            .as_ref()
            .map(|(_, s)| s.clone())
            .unwrap_or_default(),
        container: m.name.clone(),
        id: m.id.clone(),
        addr: m.addr,
        host: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{Duration as D, HttpCheck};

    #[test]
    fn weights_give_the_share_whatever_the_server_counts() {
        assert_eq!(weights(10, 3, 3), (1, 9));
        assert_eq!(weights(50, 3, 3), (1, 1));
        assert_eq!(weights(100, 3, 3), (1, 0));
        assert_eq!(weights(0, 3, 3), (0, 1));
        assert_eq!(weights(10, 1, 3), (1, 3));
        assert_eq!(weights(25, 2, 4), (2, 3));
        for (share, new, old) in [(1, 3, 3), (33, 3, 3), (7, 5, 2), (95, 1, 9), (5, 9, 1)] {
            let (wn, wo) = weights(share, new, old);
            assert!(wn <= MAX_WEIGHT && wo <= MAX_WEIGHT, "{share} {new} {old}");
            let got = 100.0 * (new as f64 * wn as f64)
                / (new as f64 * wn as f64 + old as f64 * wo as f64);
            assert!(
                (got - share as f64).abs() < 1.0,
                "{share}% with {new} new and {old} old: weights {wn}/{wo} give {got:.2}%"
            );
        }
        // Past what 0..=256 can say, the nearest share it can (one new server against nine
        // old ones tops out at 256/(256+9) = 96.6%).
        assert_eq!(weights(99, 1, 9), (256, 1));
        assert_eq!(weights(1, 9, 1), (1, 256));
    }

    fn conditions() -> Conditions {
        Conditions {
            duration: D::from_secs(10),
            max_5xx_ratio: 0.05,
            max_response_time: Some(D(Duration::from_millis(300))),
            http: Some(HttpCheck::default()),
            min_requests: 20,
            prometheus: None,
        }
    }

    fn n(responses: u64, errors: u64) -> Counters {
        Counters { responses, errors }
    }

    #[test]
    fn judge_names_the_broken_condition_and_its_value() {
        let c = conditions();
        let ok = judge(&c, n(100, 2), Some(12), n(300, 0), None);
        assert_eq!(ok.failed, None);
        assert_eq!(
            ok.describe(),
            "5xx 2.0% of 100 answers (old 0.0%), response time 12ms"
        );
        let bad = judge(&c, n(100, 30), Some(12), n(300, 0), None);
        assert_eq!(
            bad.failed.as_deref(),
            Some("5xx ratio 30.0% (30 of 100 answers of the new release) is above max_5xx_ratio 5.0%")
        );
        let slow = judge(&c, n(100, 0), Some(450), n(0, 0), None);
        assert_eq!(
            slow.failed.as_deref(),
            Some("response time 450ms of the new release is above max_response_time 300ms")
        );
        let http = judge(
            &c,
            n(0, 0),
            None,
            n(0, 0),
            Some("web-1 answered status 503".into()),
        );
        assert_eq!(
            http.failed.as_deref(),
            Some("http check GET /health failed: web-1 answered status 503")
        );
    }

    #[test]
    fn too_few_answers_are_not_judged() {
        let c = conditions();
        assert_eq!(judge(&c, n(10, 10), Some(900), n(0, 0), None).failed, None);
        assert!(judge(&c, n(20, 10), None, n(0, 0), None).failed.is_some());
    }

    #[test]
    fn an_ask_found_on_any_host_counts_and_an_abort_wins() {
        assert_eq!(strongest([None, Some(Ask::Pause), None]), Some(Ask::Pause));
        assert_eq!(
            strongest([Some(Ask::Pause), Some(Ask::Abort), Some(Ask::Pause)]),
            Some(Ask::Abort)
        );
        assert_eq!(strongest([None, None]), None);
        // One host down: what the others answered.
        let found = any_host(vec![
            Err(anyhow!("h1 down")),
            Ok(Some(Ask::Abort)),
            Ok(None),
        ]);
        assert_eq!(strongest(found.unwrap()), Some(Ask::Abort));
        // None answered: the first error.
        let none: anyhow::Result<Vec<Option<Ask>>> =
            any_host(vec![Err(anyhow!("h1 down")), Err(anyhow!("h2 down"))]);
        assert_eq!(none.unwrap_err().to_string(), "h1 down");
    }

    #[test]
    fn a_server_recorded_without_a_host_is_on_the_only_host() {
        // Records of a canary on one host (before servers knew their host) read as before.
        let x: Server = serde_json::from_value(serde_json::json!({
            "server": "mx-production-web-r2-1", "container": "c", "id": "i", "addr": null
        }))
        .unwrap();
        assert_eq!(x.host, "");
        let json = serde_json::to_value(&x).unwrap();
        assert!(json.get("host").is_none(), "{json}");
    }

    #[test]
    fn counters_are_a_window() {
        assert_eq!(n(150, 12).since(n(100, 2)), n(50, 10));
        assert_eq!(n(5, 0).since(n(100, 2)), n(0, 0));
    }
}
