//! Deploys and rollbacks across several regions: waves in order, regions of a wave in parallel
//! (up to `max_parallel`), a failure stops later waves and `on_failure` decides what happens
//! to regions that already succeeded. `rollback --region all` is the fast path: every region at
//! once, no waves. The exit code is the worst region's.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{self, StreamExt};

use crate::config::global::{plan_waves, OnFailure};
use crate::config::model::Build;
use crate::context::Ctx;
use crate::error::{Error, ExitCode, Result};
use crate::targets::docker::registry_host;
use crate::targets::{self, Built, DeployOptions, Purpose, Target};

/// How bad an exit code is, to pick the worst of several regions.
pub fn severity(code: ExitCode) -> u8 {
    match code {
        ExitCode::Success => 0,
        ExitCode::Changes => 1,
        ExitCode::Usage => 2,
        ExitCode::Locked => 3,
        ExitCode::Unreachable => 4,
        ExitCode::RolledBack => 5,
        ExitCode::NeedsPerson => 6,
    }
}

pub fn worst(codes: impl IntoIterator<Item = ExitCode>) -> ExitCode {
    codes
        .into_iter()
        .max_by_key(|c| severity(*c))
        .unwrap_or(ExitCode::Success)
}

/// What happened to one region in a fleet run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RegionOutcome {
    pub region: String,
    pub wave: usize,
    pub exit_code: ExitCode,
    pub outcome: &'static str,
    pub error: Option<String>,
    pub duration_secs: f64,
}

/// Expands `all` / `a,b` into region names (checked), in the order given.
pub fn select(ctx: &Ctx, arg: &str) -> Result<Vec<String>> {
    let regions = ctx.load()?;
    let names: Vec<String> = if arg == "all" {
        regions.names().iter().map(|s| s.to_string()).collect()
    } else {
        arg.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    for n in &names {
        regions.check_name(n).map_err(|d| Error::Usage {
            message: d.message,
            hint: d.hint,
        })?;
    }
    Ok(names)
}

/// One progress line per region on an interactive terminal (not with -o json or -q).
fn bars(ctx: &Ctx) -> Option<indicatif::MultiProgress> {
    (crate::ui::interactive() && !ctx.ui.json() && ctx.ui.verbosity > crate::ui::Verbosity::Quiet)
        .then(indicatif::MultiProgress::new)
}

fn region_ctx(ctx: &Ctx, region: &str, bars: Option<&indicatif::MultiProgress>) -> Ctx {
    let bar = bars.map(|m| {
        let b = m.add(indicatif::ProgressBar::new(0));
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>12.bold} [{bar:20}] {pos}/{len} {wide_msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.set_prefix(region.to_string());
        b
    });
    ctx.with(ctx.ui.for_region(region, bar), ctx.env)
}

async fn one_deploy(ctx: Ctx, region: String, wave: usize, opts: DeployOptions) -> RegionOutcome {
    let t0 = Instant::now();
    let result = super::deploy(&ctx, &region, &opts).await;
    let mut o = outcome(&ctx, region, wave, result, t0);
    if o.exit_code == ExitCode::Success && paused(&ctx, &o.region).await {
        o.outcome = "paused";
    }
    o
}

/// Whether the region's last release is a canary waiting for `promote`.
async fn paused(ctx: &Ctx, region: &str) -> bool {
    let Ok(t) = crate::targets::open(ctx, region).await else {
        return false;
    };
    t.history()
        .await
        .ok()
        .and_then(|h| {
            h.last()
                .map(|r| r.outcome == crate::release::Outcome::Paused)
        })
        .unwrap_or(false)
}

async fn one_rollback(ctx: Ctx, region: String, wave: usize) -> RegionOutcome {
    let t0 = Instant::now();
    let result = super::rollback(&ctx, &region, None, None, false).await;
    outcome(&ctx, region, wave, result, t0)
}

fn outcome(
    ctx: &Ctx,
    region: String,
    wave: usize,
    result: Result<ExitCode>,
    t0: Instant,
) -> RegionOutcome {
    let (code, error) = match result {
        Ok(c) => (c, None),
        Err(e) => {
            ctx.ui.error(&e);
            (e.code(), Some(e.to_string()))
        }
    };
    RegionOutcome {
        region,
        wave,
        exit_code: code,
        outcome: match code {
            ExitCode::Success => "succeeded",
            ExitCode::RolledBack => "rolled_back",
            ExitCode::NeedsPerson => "failed",
            ExitCode::Locked => "locked",
            ExitCode::Unreachable => "unreachable",
            _ => "refused",
        },
        error,
        duration_secs: t0.elapsed().as_secs_f64(),
    }
}

/// Before the first wave: every region of the run valid (each problem with its file:line:col),
/// its secrets resolved and its target reached, so a mistake in a later wave's region stops
/// the run before anything changes (exit 2, or 6 for a target that does not answer). Returns
/// the targets reached, in the order of `selected`.
async fn preflight(
    ctx: &Ctx,
    selected: &[String],
    opts: &DeployOptions,
) -> Result<Vec<Box<dyn Target>>> {
    let regions = ctx.load()?;
    let problems = regions.validate(selected, &[ctx.env_or_default()]);
    if !problems.is_empty() {
        return Err(Error::Config(problems));
    }
    let checks = selected.iter().map(|name| async move {
        let check = async {
            let mut t = targets::open(ctx, name).await?;
            if let Some(version) = super::version_of(opts, &t.region().cfg) {
                t.resolve(&version, opts, Purpose::Plan).await?;
            }
            Ok::<Box<dyn Target>, Error>(t)
        };
        (name, check.await)
    });
    let mut reached = Vec::new();
    let mut failed: Vec<(&String, Error)> = Vec::new();
    for (name, result) in futures_util::future::join_all(checks).await {
        match result {
            Ok(t) => reached.push(t),
            Err(e) => failed.push((name, e)),
        }
    }
    if failed.is_empty() {
        return Ok(reached);
    }
    for (name, e) in &failed {
        ctx.ui.error(format!("{name}: {e}"));
        if let Error::Failed { hint: Some(h), .. } | Error::Usage { hint: Some(h), .. } = e {
            ctx.ui.hint(h);
        }
    }
    let code = worst(failed.iter().map(|(_, e)| e.code()));
    Err(Error::failed(
        code,
        anyhow::anyhow!(
            "{} of {} region(s) cannot be deployed: {}; no wave started, nothing was changed",
            failed.len(),
            selected.len(),
            failed
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// An image some regions of a run build, and who needs it.
struct Wanted<'a> {
    image: String,
    build: &'a Build,
    /// The first region that builds it (for the error when another builds it otherwise).
    first: &'a str,
    /// The first Docker region that runs it: its engine builds it.
    builder: Option<usize>,
    engines: BTreeSet<String>,
    /// A Kubernetes region runs it too.
    cluster: bool,
}

impl Wanted<'_> {
    /// More than one engine, or a cluster, runs it: it has to be in a registry.
    fn shared(&self) -> bool {
        self.cluster || self.engines.len() > 1
    }
}

/// Step (before the first wave): every image the run's regions build, built once, on the
/// engine of the first Docker region that runs it; when another engine or a Kubernetes region
/// runs it too it is pushed, and they deploy that very build by its registry digest, which the
/// records pin. A region never builds an image the run already built.
async fn build_once(targets: &[Box<dyn Target>], opts: &DeployOptions) -> Result<Vec<Built>> {
    if opts.no_build {
        return Ok(Vec::new());
    }
    let mut wanted: Vec<Wanted> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let r = t.region();
        let Some(version) = super::version_of(opts, &r.cfg) else {
            continue;
        };
        let engines = t.engines();
        for svc in r.cfg.services.values() {
            let Some(build) = &svc.build else {
                continue;
            };
            let (_, image) = targets::image_ref(svc, &version);
            let k = match wanted.iter().position(|w| w.image == image) {
                Some(k) => k,
                None => {
                    wanted.push(Wanted {
                        image: image.clone(),
                        build,
                        first: &r.name,
                        builder: None,
                        engines: BTreeSet::new(),
                        cluster: false,
                    });
                    wanted.len() - 1
                }
            };
            let w = &mut wanted[k];
            if w.build != build {
                return Err(Error::usage_hint(
                    format!(
                        "regions {} and {} build {image} differently (context, dockerfile, args or target); one tag holds one image",
                        w.first, r.name
                    ),
                    "build it the same way in every region, or give each its own image name; nothing was changed",
                ));
            }
            if engines.is_empty() {
                w.cluster = true;
            } else {
                w.builder.get_or_insert(i);
                w.engines.extend(engines.iter().cloned());
            }
        }
    }
    if let Some(w) = wanted
        .iter()
        .find(|w| w.shared() && w.builder.is_some() && registry_host(&w.image).is_none())
    {
        return Err(Error::usage_hint(
            format!(
                "{} is built once for this run and runs on {} engine(s){}: it has to go through a registry, and its name has none",
                w.image,
                w.engines.len(),
                if w.cluster { " and a Kubernetes cluster" } else { "" }
            ),
            "name the image REGISTRY/NAME (as `image: registry.example:5000/app`), or deploy the regions one by one; nothing was changed",
        ));
    }
    let mut built: Vec<Built> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let mine: Vec<&Wanted> = wanted.iter().filter(|w| w.builder == Some(i)).collect();
        if mine.is_empty() {
            continue;
        }
        let Some(version) = super::version_of(opts, &t.region().cfg) else {
            continue;
        };
        let o = DeployOptions {
            push: opts.push || mine.iter().any(|w| w.shared()),
            built: Arc::new(built.clone()),
            ..opts.clone()
        };
        built.extend(t.build(&version, &o).await?);
    }
    Ok(built)
}

/// `deploy --region a,b | all`.
pub async fn deploy(ctx: &Ctx, selected: Vec<String>, opts: &DeployOptions) -> Result<ExitCode> {
    let reached = preflight(ctx, &selected, opts).await?;
    let built = build_once(&reached, opts).await?;
    drop(reached);
    let opts = &DeployOptions {
        built: Arc::new(built),
        ..opts.clone()
    };
    let regions = ctx.load()?;
    let global = regions.global().map_err(Error::Config)?;
    let waves = plan_waves(&selected, &global.waves);
    let bars = bars(ctx);
    let mut results: Vec<RegionOutcome> = Vec::new();
    let mut failed_wave = None;
    for (w, wave) in waves.iter().enumerate() {
        ctx.ui.status(
            "Wave",
            format!("{} of {}: {}", w + 1, waves.len(), wave.join(", ")),
        );
        let runs = wave.iter().map(|r| {
            one_deploy(
                region_ctx(ctx, r, bars.as_ref()),
                r.clone(),
                w + 1,
                opts.clone(),
            )
        });
        let done: Vec<RegionOutcome> = stream::iter(runs)
            .buffer_unordered(global.max_parallel.max(1) as usize)
            .collect()
            .await;
        let failed = done.iter().any(|o| o.exit_code != ExitCode::Success);
        let paused: Vec<String> = done
            .iter()
            .filter(|o| o.outcome == "paused")
            .map(|o| o.region.clone())
            .collect();
        results.extend(done);
        if failed {
            failed_wave = Some(w + 1);
            break;
        }
        // A canary finishes (is promoted) before the next wave starts.
        let later: Vec<&str> = waves
            .iter()
            .skip(w + 1)
            .flatten()
            .map(String::as_str)
            .collect();
        if !paused.is_empty() && !later.is_empty() {
            ctx.ui.warn(format!(
                "{} wait(s) at a paused canary; later waves do not start: {} (promote, then deploy them)",
                paused.join(", "),
                later.join(", ")
            ));
            break;
        }
    }
    if let Some(w) = failed_wave {
        let later: Vec<&String> = waves.iter().skip(w).flatten().collect();
        if !later.is_empty() {
            ctx.ui.warn(format!(
                "wave {w} failed; later waves do not start: {}",
                later
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let to_undo: Vec<String> = results
            .iter()
            .filter(|o| o.exit_code == ExitCode::Success)
            .filter(|o| match global.on_failure {
                OnFailure::Halt => false,
                OnFailure::RollbackWave => o.wave == w,
                OnFailure::RollbackAll => true,
            })
            .map(|o| o.region.clone())
            .collect();
        if !to_undo.is_empty() {
            ctx.ui.status(
                "Rolling back",
                format!(
                    "{} (on_failure: {:?})",
                    to_undo.join(", "),
                    global.on_failure
                ),
            );
            let runs = to_undo
                .iter()
                .map(|r| one_rollback(region_ctx(ctx, r, bars.as_ref()), r.clone(), w));
            let undone: Vec<RegionOutcome> = stream::iter(runs)
                .buffer_unordered(to_undo.len())
                .collect()
                .await;
            for u in undone {
                if let Some(o) = results.iter_mut().find(|o| o.region == u.region) {
                    (o.outcome, o.exit_code) = if u.exit_code == ExitCode::Success {
                        ("rolled_back", ExitCode::RolledBack)
                    } else {
                        ("failed", ExitCode::NeedsPerson)
                    };
                    o.error = u
                        .error
                        .or(Some(format!("rolled back because wave {w} failed")));
                }
            }
        }
    }
    report(ctx, &results, &waves, "deploy")
}

/// `rollback --region a,b | all`: every region at once.
pub async fn rollback(ctx: &Ctx, selected: Vec<String>) -> Result<ExitCode> {
    let bars = bars(ctx);
    let runs = selected
        .iter()
        .map(|r| one_rollback(region_ctx(ctx, r, bars.as_ref()), r.clone(), 1));
    let results: Vec<RegionOutcome> = stream::iter(runs)
        .buffer_unordered(selected.len().max(1))
        .collect()
        .await;
    report(ctx, &results, &[selected], "rollback")
}

fn report(
    ctx: &Ctx,
    results: &[RegionOutcome],
    waves: &[Vec<String>],
    what: &str,
) -> Result<ExitCode> {
    let code = worst(results.iter().map(|o| o.exit_code));
    let not_started: Vec<&String> = waves
        .iter()
        .flatten()
        .filter(|r| !results.iter().any(|o| &o.region == *r))
        .collect();
    if ctx.ui.json() {
        ctx.ui.out_line(&serde_json::json!({
            "event": "run_summary",
            "command": what,
            "exit_code": code as i32,
            "regions": results,
            "not_started": not_started,
        }));
    } else {
        for o in results {
            let detail = o
                .error
                .as_deref()
                .map(|e| format!(" — {}", e.lines().next().unwrap_or("")))
                .unwrap_or_default();
            ctx.ui.outcome(
                "Result",
                format!(
                    "{:<12} {:<12} wave {} in {:.1}s{detail}",
                    o.region, o.outcome, o.wave, o.duration_secs
                ),
            );
        }
        for r in not_started {
            ctx.ui.outcome("Result", format!("{r:<12} not started"));
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_code_wins() {
        assert_eq!(
            worst([ExitCode::Success, ExitCode::RolledBack, ExitCode::Locked]),
            ExitCode::RolledBack
        );
        assert_eq!(
            worst([
                ExitCode::Success,
                ExitCode::NeedsPerson,
                ExitCode::RolledBack
            ]),
            ExitCode::NeedsPerson
        );
        assert_eq!(worst([]), ExitCode::Success);
    }
}
