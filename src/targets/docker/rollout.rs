//! Executing a rolling update on a Docker engine behind HAProxy, and undoing it.
//!
//! Every side effect is written to the [`Ledger`] the moment it happens, so whatever stops the
//! rollout — a failed health check, a crash of a new container, a bad bake, Ctrl-C — the
//! restore knows exactly what to put back: old containers first (started, healthy, back in
//! rotation), then the new ones drained and removed. Old containers are stopped, never removed,
//! so putting them back is a start, not a pull or a build.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures_util::future::{join_all, BoxFuture};
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::desired::Desired;
use super::naming::{self, Scope};
use super::{ContainerSpec, Engine};
use crate::health::{self, CheckResult, Thresholds, Verdict};
use crate::plan::Step;
use crate::traffic::haproxy::{CheckTiming, Haproxy, ServerState};
use crate::ui::Ui;

/// Lines of a failing container's output shown with the failure.
const LOG_TAIL: usize = 15;
/// The shortest timeout of one check of a container on a remote host (see [`thresholds`]).
const REMOTE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Fewer responses than this during the bake are too few to judge a 5xx ratio.
const MIN_RESPONSES_FOR_RATIO: u64 = 20;

/// A container that serves (or served) a service: what the rollout needs to take it out of,
/// or put it back into, rotation.
#[derive(Debug, Clone)]
pub struct Member {
    pub service: String,
    pub id: String,
    pub name: String,
    /// HAProxy backend and server name, when the service is behind HAProxy.
    pub server: Option<(String, String)>,
    pub addr: Option<SocketAddr>,
}

/// Everything the rollout changed, in order.
#[derive(Debug, Default)]
pub struct Ledger {
    /// New containers created or (for a rollback) restarted.
    pub started: Vec<Member>,
    /// Old containers taken out of rotation (and maybe stopped).
    pub stopped: Vec<Member>,
}

pub struct Rollout<'a> {
    pub engine: &'a Engine,
    /// The host's tag in server names (empty with one host).
    pub host: String,
    pub lb: Option<&'a Haproxy>,
    pub backends: HashMap<String, String>,
    pub scope: &'a Scope,
    pub release: String,
    pub version: String,
    pub ui: &'a Ui,
    pub ledger: Arc<Mutex<Ledger>>,
}

impl Rollout<'_> {
    fn backend(&self, service: &str) -> Option<&str> {
        self.lb?;
        self.backends.get(service).map(String::as_str)
    }

    /// Rolls one service to `d`. `old` are the running containers to replace; `reuse` are
    /// stopped containers of the wanted release to start before creating any.
    ///
    /// With `max_surge` above 0, old containers leave in the background: a `Stop` step takes
    /// them out of new traffic (drain) and the next step goes on while they drain and stop,
    /// as Kubernetes does not count terminating pods toward `maxSurge`; they never count as
    /// serving. With `max_surge` 0 (no room for one more container) each leaves before the
    /// next starts. Whatever ends the rollout, every leaving container has stopped (or failed
    /// to) before this returns, so a restore never meets one still stopping. `steps_done` is
    /// told when the last step is done and only leaving containers are waited for (the next
    /// host may start then, as the next batch does here).
    pub async fn service(
        &self,
        d: &Desired,
        old: Vec<Member>,
        reuse: Vec<Member>,
        steps: &[Step],
        first_index: u32,
        steps_done: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> anyhow::Result<()> {
        let mut leaving = FuturesUnordered::new();
        let rolled = self
            .steps(d, old, reuse, steps, first_index, &mut leaving)
            .await;
        if let (Ok(()), Some(done)) = (&rolled, steps_done) {
            let _ = done.send(());
        }
        let mut left = Ok(());
        while let Some(r) = leaving.next().await {
            if let (Err(e), Ok(())) = (r, &left) {
                left = Err(e);
            }
        }
        rolled.and(left)
    }

    async fn steps<'s>(
        &'s self,
        d: &'s Desired,
        mut old: Vec<Member>,
        mut reuse: Vec<Member>,
        steps: &[Step],
        first_index: u32,
        leaving: &mut FuturesUnordered<BoxFuture<'s, anyhow::Result<()>>>,
    ) -> anyhow::Result<()> {
        let mut next_index = first_index;
        let background = d.service.rollout.max_surge > 0;
        // New replicas in rotation so far, for the progress display (the ledger records them).
        let mut in_rotation = 0u64;
        let mut checked = false;
        for step in steps {
            // Before each step, what this rollout started must still run. A start right
            // after a stop that only sent its containers off (in the background) was checked
            // before that stop; one after a stop that waited for them is checked again.
            if !checked {
                beside(self.still_alive(), leaving).await??;
            }
            checked = background && matches!(step, Step::Stop(_));
            match *step {
                Step::Start(n) => {
                    let started = self.start_batch(d, n, &mut reuse, &mut next_index);
                    in_rotation += beside(started, leaving).await??;
                    self.ui
                        .progress(&d.name, in_rotation, u64::from(d.replicas));
                }
                Step::Stop(n) => {
                    let take = (n as usize).min(old.len());
                    for m in old.drain(..take) {
                        // In the ledger before anything is done to it.
                        self.ledger.lock().expect("ledger").stopped.push(m.clone());
                        leaving.push(Box::pin(self.retire(d, m)));
                    }
                    if !background {
                        while let Some(r) = leaving.next().await {
                            r?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts `n` containers (retained ones of the release first), waits until they are
    /// healthy and puts them in rotation; returns how many entered it.
    async fn start_batch(
        &self,
        d: &Desired,
        n: u32,
        reuse: &mut Vec<Member>,
        next_index: &mut u32,
    ) -> anyhow::Result<u64> {
        let mut batch = Vec::new();
        for _ in 0..n {
            let member = match reuse.pop() {
                Some(m) => {
                    self.ui
                        .verbose(format!("restarting retained container {}", m.name));
                    self.engine.start(&m.id).await?;
                    m
                }
                None => {
                    let m = self.create(d, *next_index).await?;
                    *next_index += 1;
                    m
                }
            };
            self.ledger
                .lock()
                .expect("ledger")
                .started
                .push(member.clone());
            batch.push(member);
        }
        let names: Vec<&str> = batch.iter().map(|m| m.name.as_str()).collect();
        self.ui
            .status("Starting", format!("{} {}", d.name, names.join(", ")));
        // Each container of the batch on its own: healthy, then in rotation (HAProxy's rise
        // for one does not wait for another's).
        let results = join_all(batch.into_iter().map(|m| async move {
            let addr = self.wait_healthy(d, &m).await?;
            let m = Member { addr, ..m };
            self.enter_rotation(d, &m).await?;
            anyhow::Ok(m)
        }))
        .await;
        let ready = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        self.ui.status(
            "Healthy",
            format!(
                "{} {}",
                d.name,
                ready
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        Ok(ready.len() as u64)
    }

    /// The containers this rollout started so far.
    fn started(&self) -> Vec<Member> {
        let ledger = self.ledger.lock().expect("ledger");
        ledger.started.clone()
    }

    /// Fails fast when a container started earlier in this rollout has exited since (one
    /// listing of the running ones; only one that is not running is inspected).
    async fn still_alive(&self) -> anyhow::Result<()> {
        let started = self.started();
        if started.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = started.iter().map(|m| m.id.as_str()).collect();
        let running = self.engine.running(&ids).await?;
        for m in started.iter().filter(|m| !running.contains(&m.id)) {
            if let Some(st) = self.engine.inspect(&m.id).await? {
                if !st.running {
                    let logs = self.engine.logs_tail(&m.id, LOG_TAIL).await;
                    bail!(
                        "{} exited with code {} after it was healthy\n--- last lines of {} ---\n{}",
                        m.name,
                        st.exit_code,
                        m.name,
                        logs.trim_end()
                    );
                }
            }
        }
        Ok(())
    }

    pub(super) async fn create(&self, d: &Desired, index: u32) -> anyhow::Result<Member> {
        let name = self.scope.container(&d.name, &self.release, index);
        let mut labels = self.scope.labels("app");
        labels.insert(naming::SERVICE.into(), d.name.clone());
        labels.insert(naming::RELEASE.into(), self.release.clone());
        labels.insert(naming::VERSION.into(), self.version.clone());
        labels.insert("packfy.index".into(), index.to_string());
        // Lets `plan` and the next deploy tell whether a running container is already wanted.
        labels.insert("packfy.spec".into(), d.spec_hash.clone());
        let res = &d.service.resources.limits;
        let spec = ContainerSpec {
            name: name.clone(),
            image: d.image_id.clone(),
            env: d.env.clone(),
            labels,
            ports: d.service.ports.iter().map(|p| p.container).collect(),
            command: d.command.clone(),
            stop_grace: d.service.stop_grace_period.0,
            nano_cpus: res
                .cpu
                .as_ref()
                .and_then(|q| q.millicores())
                .map(|m| (m * 1_000_000) as i64),
            memory: res
                .memory
                .as_ref()
                .and_then(|q| q.bytes())
                .map(|b| b as i64),
        };
        // Recorded before it starts, so a failure right after still removes it.
        let id = self.engine.run(&spec).await?;
        let server = self.backend(&d.name).map(|b| {
            (
                b.to_string(),
                self.scope.server(&self.host, &d.name, &self.release, index),
            )
        });
        Ok(Member {
            service: d.name.clone(),
            id,
            name,
            server,
            addr: None,
        })
    }

    /// Waits for a container's health check; fails fast when it exits. Returns its address.
    pub(super) async fn wait_healthy(
        &self,
        d: &Desired,
        m: &Member,
    ) -> anyhow::Result<Option<SocketAddr>> {
        let th = thresholds(self.engine, d);
        let started = Instant::now();
        let verdict = health::wait_healthy(&th, || check(self.engine, d, &m.id)).await;
        match verdict {
            Verdict::Healthy => {
                let st = self
                    .engine
                    .inspect(&m.id)
                    .await?
                    .ok_or_else(|| anyhow!("{} disappeared", m.name))?;
                Ok(check_port(d).and_then(|p| st.ports.get(&p).copied()))
            }
            other => {
                let why = match other {
                    Verdict::Fatal(r) => format!(
                        "{} {r} after {:.1}s",
                        m.name,
                        started.elapsed().as_secs_f64()
                    ),
                    Verdict::Unhealthy(r) => format!("{} is unhealthy: {r}", m.name),
                    Verdict::TimedOut(r) => format!(
                        "{} did not become healthy within the {} deadline (last check: {r})",
                        m.name, d.service.health.deadline
                    ),
                    _ => format!("{} is not healthy", m.name),
                };
                let logs = self.engine.logs_tail(&m.id, LOG_TAIL).await;
                let logs = if logs.trim().is_empty() {
                    "(no output)".to_string()
                } else {
                    logs.trim_end().to_string()
                };
                bail!("{why}\n--- last {LOG_TAIL} lines of {} ---\n{logs}", m.name)
            }
        }
    }

    /// Puts a healthy container into rotation. On a remote host nothing here could check
    /// it, so HAProxy's own checks (with the service's interval and thresholds) are its
    /// health check: the server is added DOWN and takes traffic once `healthy_threshold`
    /// checks have passed; a container that never passes fails the rollout at the deadline.
    async fn enter_rotation(&self, d: &Desired, m: &Member) -> anyhow::Result<()> {
        if let (Some(lb), Some((backend, server)), Some(addr)) = (self.lb, &m.server, m.addr) {
            let h = &d.service.health;
            let path = h.http.as_ref().map(|h| h.path.as_str());
            let judged_here = self.engine.local || (h.http.is_none() && h.tcp.is_none());
            let lb = if judged_here {
                lb.clone()
            } else {
                lb.clone().with_check_timing(remote_check_timing(h))
            };
            let checked = path.is_some() || !judged_here;
            lb.add_server(backend, server, addr, checked.then_some(path.unwrap_or("")))
                .await?;
            let up = async {
                if judged_here {
                    lb.wait_up(backend, server, h.deadline.0).await
                } else {
                    // HAProxy's checks judge it; a container that exits meanwhile fails now,
                    // with its output, not at the deadline.
                    tokio::select! {
                        up = lb.wait_up(backend, server, h.deadline.0) => up,
                        why = self.exits(&m.id, h.interval.0) => {
                            let logs = self.engine.logs_tail(&m.id, LOG_TAIL).await;
                            return Err(anyhow!(
                                "{} {why} while HAProxy was checking it\n--- last lines of {} ---\n{}",
                                m.name,
                                m.name,
                                logs.trim_end()
                            ));
                        }
                    }
                }
                .map_err(anyhow::Error::from)
            };
            if checked && !up.await? {
                let last = lb
                    .server(backend, server)
                    .await
                    .ok()
                    .flatten()
                    .map(|s| format!(" (status {}, last check {})", s.status, s.check_status))
                    .unwrap_or_default();
                bail!(
                    "HAProxy never saw {server} ({addr}) as UP in {backend} within the {} deadline{last}",
                    h.deadline
                );
            }
            self.ui
                .verbose(format!("{server} ({addr}) in rotation in {backend}"));
        }
        let mut ledger = self.ledger.lock().expect("ledger");
        if let Some(entry) = ledger.started.iter_mut().find(|x| x.id == m.id) {
            entry.addr = m.addr;
        }
        Ok(())
    }

    /// Returns once the container is not running (how it ended), looking every `interval`;
    /// never while it runs.
    async fn exits(&self, id: &str, interval: Duration) -> String {
        loop {
            tokio::time::sleep(interval).await;
            if let CheckResult::Fatal(why) = container_state(self.engine, id).await {
                return why;
            }
        }
    }

    /// Drains an old container out of rotation, then stops it (it is kept for rollback).
    /// The caller has put it in the ledger.
    async fn retire(&self, d: &Desired, m: Member) -> anyhow::Result<()> {
        if let (Some(lb), Some((backend, server))) = (self.lb, &m.server) {
            if lb.server(backend, server).await?.is_some() {
                self.ui.status("Draining", server.to_string());
                lb.set_state(backend, server, ServerState::Drain).await?;
                if !lb
                    .wait_drained(backend, server, d.service.rollout.drain_timeout.0)
                    .await?
                {
                    self.ui.warn(format!(
                    "{server} still had sessions after the {} drain timeout; stopping it anyway",
                    d.service.rollout.drain_timeout
                ));
                }
                lb.del_server(backend, server).await?;
            }
        }
        self.engine
            .stop(&m.id, d.service.stop_grace_period.0)
            .await?;
        self.ui
            .status("Stopped", format!("{} (kept for rollback)", m.name));
        Ok(())
    }

    /// Watches the new release for the bake period: containers alive and healthy, and HAProxy's
    /// 5xx ratio of the new servers at most `max_5xx_ratio`.
    pub async fn bake(&self, desired: &[Desired]) -> anyhow::Result<BakeReport> {
        let bake = desired
            .iter()
            .map(|d| d.service.rollout.bake.0)
            .max()
            .unwrap_or_default();
        let started = self.started();
        let mut report = BakeReport::default();
        if bake.is_zero() {
            return Ok(report);
        }
        self.ui.status(
            "Verifying",
            format!(
                "the new release for {}",
                crate::config::model::Duration(bake)
            ),
        );
        let deadline = Instant::now() + bake;
        let mut failures: HashMap<String, u32> = HashMap::new();
        loop {
            for m in &started {
                let Some(d) = desired.iter().find(|d| d.name == m.service) else {
                    continue;
                };
                match self.check_in_rotation(d, m).await {
                    CheckResult::Pass => {
                        failures.remove(&m.id);
                    }
                    CheckResult::Fatal(r) => {
                        let logs = self.engine.logs_tail(&m.id, LOG_TAIL).await;
                        bail!(
                            "{} {r} during the bake\n--- last lines of {} ---\n{}",
                            m.name,
                            m.name,
                            logs.trim_end()
                        );
                    }
                    CheckResult::Fail(r) => {
                        let n = failures.entry(m.id.clone()).or_default();
                        *n += 1;
                        if *n >= d.service.health.unhealthy_threshold {
                            bail!(
                                "{} failed its health check {n} times during the bake: {r}",
                                m.name
                            );
                        }
                    }
                }
            }
            report = self.ratio(desired, &started).await?;
            if let Some(msg) = &report.breach {
                bail!("{msg}");
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(
                Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
        Ok(report)
    }

    /// A health check of a container in rotation: [`check`], and on a remote host, where
    /// HAProxy's checks are the HTTP/TCP check, what HAProxy last saw.
    async fn check_in_rotation(&self, d: &Desired, m: &Member) -> CheckResult {
        let here = check(self.engine, d, &m.id).await;
        let h = &d.service.health;
        let (Some(lb), Some((backend, server)), CheckResult::Pass) = (self.lb, &m.server, &here)
        else {
            return here;
        };
        if self.engine.local || (h.http.is_none() && h.tcp.is_none()) {
            return here;
        }
        match lb.server(backend, server).await {
            Ok(Some(s)) if s.is_up() => CheckResult::Pass,
            Ok(Some(s)) => CheckResult::Fail(format!(
                "HAProxy sees it {} (last check {})",
                s.status, s.check_status
            )),
            Ok(None) => CheckResult::Fail(format!("{server} is not in {backend}")),
            Err(e) => CheckResult::Fail(format!("{e}")),
        }
    }

    async fn ratio(&self, desired: &[Desired], started: &[Member]) -> anyhow::Result<BakeReport> {
        let mut report = BakeReport::default();
        let Some(lb) = self.lb else { return Ok(report) };
        let mut per_backend: HashMap<&str, Vec<&str>> = HashMap::new();
        for m in started {
            if let Some((b, s)) = &m.server {
                per_backend.entry(b.as_str()).or_default().push(s.as_str());
            }
        }
        for (backend, servers) in per_backend {
            for stat in lb.servers(backend).await? {
                if servers.contains(&stat.name.as_str()) {
                    report.responses += stat.responses;
                    report.errors += stat.hrsp_5xx;
                }
            }
        }
        let limit = desired
            .iter()
            .map(|d| d.service.rollout.max_5xx_ratio)
            .fold(1.0f64, f64::min);
        if report.responses >= MIN_RESPONSES_FOR_RATIO {
            let ratio = report.errors as f64 / report.responses as f64;
            if ratio > limit {
                report.breach = Some(format!(
                    "the new release answered {:.1}% 5xx ({} of {} responses through HAProxy), above the {:.1}% limit",
                    ratio * 100.0,
                    report.errors,
                    report.responses,
                    limit * 100.0
                ));
            }
        }
        Ok(report)
    }

    /// Puts back what the ledger says was taken out, then removes what was added.
    /// Returns the problems it could not fix (empty: the previous release serves again).
    pub async fn restore(&self, desired_by_service: &HashMap<String, Desired>) -> Vec<String> {
        let (started, stopped) = {
            let l = self.ledger.lock().expect("ledger");
            (l.started.clone(), l.stopped.clone())
        };
        let mut problems = Vec::new();
        for m in stopped.iter().rev() {
            self.ui.status("Restoring", m.name.clone());
            if let Err(e) = self.put_back(m, desired_by_service.get(&m.service)).await {
                problems.push(format!("{}: {e:#}", m.name));
            }
        }
        for m in started.iter().rev() {
            if let Err(e) = self.take_out(m, desired_by_service.get(&m.service)).await {
                problems.push(format!("{}: {e:#}", m.name));
            }
        }
        problems
    }

    async fn put_back(&self, m: &Member, d: Option<&Desired>) -> anyhow::Result<()> {
        let st = self
            .engine
            .inspect(&m.id)
            .await?
            .ok_or_else(|| anyhow!("the container is gone"))?;
        if !st.running {
            self.engine.start(&m.id).await?;
        }
        let mut addr = m.addr;
        if let Some(d) = d {
            let th = thresholds(self.engine, d);
            match health::wait_healthy(&th, || check(self.engine, d, &m.id)).await {
                Verdict::Healthy => {}
                v => bail!("did not become healthy again: {v:?}"),
            }
            let st = self
                .engine
                .inspect(&m.id)
                .await?
                .ok_or_else(|| anyhow!("the container is gone"))?;
            addr = check_port(d)
                .and_then(|p| st.ports.get(&p).copied())
                .or(addr);
        }
        if let (Some(lb), Some((backend, server)), Some(addr)) = (self.lb, &m.server, addr) {
            let path = d
                .and_then(|d| d.service.health.http.as_ref())
                .map(|h| h.path.as_str());
            if lb.server(backend, server).await?.is_some() {
                lb.set_state(backend, server, ServerState::Ready).await?;
            } else {
                lb.add_server(backend, server, addr, path).await?;
            }
            if path.is_some() {
                lb.wait_up(backend, server, Duration::from_secs(30)).await?;
            }
        }
        Ok(())
    }

    async fn take_out(&self, m: &Member, d: Option<&Desired>) -> anyhow::Result<()> {
        if let (Some(lb), Some((backend, server))) = (self.lb, &m.server) {
            // HAProxy is the truth about what is in rotation (it may have restarted meanwhile).
            if lb.server(backend, server).await?.is_some() {
                lb.set_state(backend, server, ServerState::Drain).await?;
                let drain = d.map_or(Duration::from_secs(10), |d| {
                    d.service.rollout.drain_timeout.0
                });
                lb.wait_drained(backend, server, drain).await?;
                lb.del_server(backend, server).await?;
            }
        }
        let grace = d.map_or(Duration::from_secs(10), |d| d.service.stop_grace_period.0);
        self.engine.stop(&m.id, grace).await?;
        self.engine.remove(&m.id).await?;
        Ok(())
    }
}

#[derive(Debug, Default, Clone)]
pub struct BakeReport {
    pub responses: u64,
    pub errors: u64,
    pub breach: Option<String>,
}

/// When a container counts as healthy. On a remote host every check is a round trip through
/// ssh (an inspect, an exec), and a new ssh connection alone can take longer than an app's
/// check timeout on a busy machine: the check's timeout there is at least
/// [`REMOTE_CHECK_TIMEOUT`]. (An HTTP or TCP check is HAProxy's, with its own timing.)
fn thresholds(engine: &Engine, d: &Desired) -> Thresholds {
    thresholds_where(engine.local, &d.service.health)
}

fn thresholds_where(local: bool, h: &crate::config::model::Health) -> Thresholds {
    let mut th = Thresholds::from(h);
    if !local {
        th.timeout = th.timeout.max(REMOTE_CHECK_TIMEOUT);
        if h.http.is_some() || h.tcp.is_some() {
            // Here a check only sees the container running ([`check`]); HAProxy counts the
            // `healthy_threshold` passes once the server is added. A second "running" an
            // interval later would only make every batch wait one interval more.
            th.healthy_threshold = 1;
        }
    }
    th
}

/// Runs `work` while driving the old containers `leaving` (see [`Rollout::service`]). One of
/// them failing fails it, once `work` is done: cut short, a batch could leave a container
/// created and not yet in the ledger, which no restore would remove.
async fn beside<T>(
    work: impl std::future::Future<Output = T>,
    leaving: &mut FuturesUnordered<BoxFuture<'_, anyhow::Result<()>>>,
) -> anyhow::Result<T> {
    tokio::pin!(work);
    let mut failed = None;
    loop {
        tokio::select! {
            out = &mut work => return failed.map_or(Ok(out), Err),
            Some(left) = leaving.next(), if !leaving.is_empty() => {
                if let Err(e) = left {
                    failed.get_or_insert(e);
                }
            }
        }
    }
}

/// HAProxy's check timing for a service whose health it judges: the service's interval and
/// thresholds (a container must pass `healthy_threshold` checks before it takes traffic).
fn remote_check_timing(h: &crate::config::model::Health) -> CheckTiming {
    CheckTiming {
        inter: h.interval.0,
        rise: h.healthy_threshold.max(1),
        fall: h.unhealthy_threshold.max(1),
    }
}

/// Whether the container has ended: gone, exited or restarted is fatal; an error asking is a
/// failure (asked again); running is a pass.
async fn container_state(engine: &Engine, id: &str) -> CheckResult {
    match engine.inspect(id).await {
        Ok(Some(st)) => ended(&st).unwrap_or(CheckResult::Pass),
        Ok(None) => CheckResult::Fatal("disappeared".into()),
        Err(e) => CheckResult::Fail(format!("{e:#}")),
    }
}

/// A container that exited or restarted, as a fatal check result.
fn ended(st: &super::ContainerState) -> Option<CheckResult> {
    if !st.running {
        let oom = if st.oom_killed {
            " (killed: out of memory)"
        } else {
            ""
        };
        return Some(CheckResult::Fatal(format!(
            "exited with code {}{oom}",
            st.exit_code
        )));
    }
    if st.restart_count > 0 {
        return Some(CheckResult::Fatal(format!(
            "restarted {} time(s)",
            st.restart_count
        )));
    }
    None
}

fn check_port(d: &Desired) -> Option<u16> {
    let h = &d.service.health;
    h.http
        .as_ref()
        .and_then(|x| x.port)
        .or(h.tcp.as_ref().and_then(|x| x.port))
        .or(d.container_port)
}

/// One health check of one container: its state first (an exit is fatal at once), then the
/// configured check, else the image's HEALTHCHECK, else "running".
pub async fn check(engine: &Engine, d: &Desired, id: &str) -> CheckResult {
    let st = match engine.inspect(id).await {
        Ok(Some(st)) => st,
        Ok(None) => return CheckResult::Fatal("disappeared".into()),
        Err(e) => return CheckResult::Fail(format!("{e:#}")),
    };
    if let Some(dead) = ended(&st) {
        return dead;
    }
    let h = &d.service.health;
    if !engine.local && (h.http.is_some() || h.tcp.is_some()) {
        // Nothing on this machine reaches a container on a remote host: HAProxy's checks
        // judge it as it enters rotation (`Rollout::enter_rotation`).
        return CheckResult::Pass;
    }
    let timeout = h.timeout.0;
    let addr = |port: Option<u16>| {
        port.or(d.container_port)
            .and_then(|p| st.ports.get(&p).copied())
    };
    if let Some(http) = &h.http {
        return match addr(http.port) {
            Some(a) => health::http_check(a, &http.path, http.status, timeout).await,
            None => CheckResult::Fail("no published port to check".into()),
        };
    }
    if let Some(tcp) = &h.tcp {
        return match addr(tcp.port) {
            Some(a) => health::tcp_check(a, timeout).await,
            None => CheckResult::Fail("no published port to check".into()),
        };
    }
    if let Some(cmd) = &h.command {
        return match engine.exec_check(id, cmd).await {
            Ok(()) => CheckResult::Pass,
            Err(e) => CheckResult::Fail(e),
        };
    }
    match st.health.as_deref() {
        Some("healthy") => CheckResult::Pass,
        Some("unhealthy") => CheckResult::Fail(format!(
            "the image's HEALTHCHECK says unhealthy: {}",
            st.health_log.unwrap_or_default().trim()
        )),
        Some(other) => CheckResult::Fail(format!("the image's HEALTHCHECK says {other}")),
        None if h.image => {
            CheckResult::Fail("health.image is set but the image has no HEALTHCHECK".into())
        }
        None => CheckResult::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{Health, HttpCheck};

    #[test]
    fn on_a_remote_host_haproxy_counts_the_passes_of_an_http_check() {
        let http = Health {
            http: Some(HttpCheck {
                path: "/health".into(),
                ..Default::default()
            }),
            healthy_threshold: 3,
            ..Default::default()
        };
        let command = Health {
            command: Some(vec!["true".into()]),
            healthy_threshold: 3,
            ..Default::default()
        };
        assert_eq!(thresholds_where(true, &http).healthy_threshold, 3);
        assert_eq!(thresholds_where(false, &http).healthy_threshold, 1);
        assert!(thresholds_where(false, &http).timeout >= REMOTE_CHECK_TIMEOUT);
        // A check made here through the engine (an exec) still needs its passes.
        assert_eq!(thresholds_where(false, &command).healthy_threshold, 3);
    }
}
