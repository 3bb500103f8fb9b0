//! The release phase: each service's release step (migrations), once per region and
//! environment, in the new image, after the data backups and before anything that runs
//! changes; and what its outcome means for the rest of the deploy and for rollbacks.
//!
//! - a step that fails (or hangs past its timeout) ends the deploy there: nothing else
//!   changed, the old release keeps serving, the record says `release_failed` and names the
//!   backup taken just before, exit 3;
//! - after a one-way step (`reversible: false`, the default) has run, the old version may not
//!   read the data any more: a later failure of the same deploy is not rolled back but stops
//!   with exit 4, naming the backup and the two ways out;
//! - a rollback to a release older than a one-way step refuses without `--force`.

use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::steps::{finish, say_failed, Notify, Summary};
use crate::error::{Error, ExitCode, Result};
use crate::notify::NotifyKind;
use crate::release::{self, Outcome, Release, ReleaseStepRecord, StepOutcome};
use crate::targets::{StepRun, Target};

/// A release step that did not succeed: its record, and what to show of it.
pub(super) struct StepFailure {
    step: ReleaseStepRecord,
    why: String,
    /// Its last lines of output and the target's notes, masked.
    lines: Vec<String>,
}

/// Step: every service's release step, in the order the services are written; each is
/// recorded (and the record saved) as it ends. The first failure stops the phase.
pub(super) async fn run(
    t: &dyn Target,
    rec: &mut Release,
) -> Result<std::result::Result<(), StepFailure>> {
    let r = t.region();
    let backups: Vec<String> = rec
        .backups
        .iter()
        .filter(|b| b.error.is_none())
        .map(|b| b.id.clone())
        .collect();
    for (service, svc) in &r.cfg.services {
        let Some(step) = &svc.release else { continue };
        r.ui.status(
            "Releasing",
            format!(
                "{service}: `{}` in the new image ({}, timeout {})",
                step.command,
                if step.reversible {
                    "reversible"
                } else {
                    "one-way"
                },
                step.timeout
            ),
        );
        let started = Instant::now();
        let ran = t.release_step(service, step, &rec.id).await;
        let (outcome, why, run) = judge(ran, step.timeout.0);
        let record = ReleaseStepRecord {
            service: service.clone(),
            command: step.command.to_string(),
            reversible: step.reversible,
            outcome,
            exit_code: run.exit_code,
            duration_secs: started.elapsed().as_secs_f64(),
            last_line_sha256: release::last_line_digest(&run.tail),
            backups: backups.clone(),
        };
        rec.release_steps.push(record.clone());
        t.save(rec).await?;
        if outcome != StepOutcome::Succeeded {
            let lines = run
                .tail
                .iter()
                .chain(&run.notes)
                .map(|l| crate::secrets::mask(l).into_owned())
                .collect();
            return Ok(Err(StepFailure {
                step: record,
                why,
                lines,
            }));
        }
        r.ui.status(
            "Released",
            format!(
                "{service} in {:.1}s{}",
                record.duration_secs,
                record
                    .last_line_sha256
                    .as_ref()
                    .map(|d| format!(" (last line sha256 {d})"))
                    .unwrap_or_default()
            ),
        );
    }
    Ok(Ok(()))
}

/// What a step's run means: its outcome and, when it failed, why in a few words.
fn judge(ran: anyhow::Result<StepRun>, timeout: Duration) -> (StepOutcome, String, StepRun) {
    match ran {
        Err(e) => (
            StepOutcome::Failed,
            format!("could not run: {e:#}"),
            StepRun::default(),
        ),
        Ok(run) if run.timed_out => (
            StepOutcome::TimedOut,
            format!("was stopped at its timeout ({}s)", timeout.as_secs()),
            run,
        ),
        Ok(run) => match run.exit_code {
            Some(0) => (StepOutcome::Succeeded, String::new(), run),
            Some(code) => (StepOutcome::Failed, format!("exited {code}"), run),
            None => (
                StepOutcome::Failed,
                "ended without an exit code".into(),
                run,
            ),
        },
    }
}

/// `the backup taken just before it is X` / `no data backup was taken before it`.
fn backup_phrase(ids: &[String]) -> String {
    match ids {
        [] => "no data backup was taken before it (the region has no `backups:` jobs)".into(),
        [one] => format!("the backup taken just before it is {one}"),
        many => format!("the backups taken just before it are {}", many.join(", ")),
    }
}

/// Step (the release step failed): nothing else changed, so nothing is put back; the record
/// says `release_failed`, exit 3.
pub(super) async fn failed(
    t: &dyn Target,
    mut rec: Release,
    failure: StepFailure,
    notify: &Notify<'_>,
    started: Instant,
) -> Result<ExitCode> {
    let r = t.region();
    let s = &failure.step;
    let error = format!(
        "release step {} {}; {}",
        s.describe(),
        failure.why,
        backup_phrase(&s.backups)
    );
    r.ui.status(
        "Failed",
        format!(
            "{} of {}: release step {} {}",
            rec.id,
            r.place(),
            s.describe(),
            failure.why
        ),
    );
    if !failure.lines.is_empty() {
        r.ui.status("", "its last lines:");
        for l in &failure.lines {
            r.ui.status("", format!("  | {l}"));
        }
    }
    let last = failure
        .lines
        .iter()
        .rev()
        .take(5)
        .rev()
        .cloned()
        .collect::<Vec<_>>();
    let recorded = if last.is_empty() {
        error.clone()
    } else {
        format!("{error}\nlast lines:\n{}", last.join("\n"))
    };
    rec.end(
        Outcome::ReleaseFailed,
        Some(crate::secrets::mask(&recorded).into_owned()),
    );
    t.save(&rec).await?;
    let back = rec
        .previous
        .clone()
        .unwrap_or_else(|| "nothing (first release)".into());
    notify
        .send(
            NotifyKind::Failure,
            &rec.version,
            Some(rec.id.clone()),
            rec.previous.clone(),
            Some(format!("{error}; {back} still serves")),
        )
        .await;
    finish(
        t,
        Summary {
            error: Some(error.clone()),
            ..Summary::of(t, "release_failed", &rec, started)
        },
        ExitCode::RolledBack,
    )?;
    let hint = match s.backups.first() {
        Some(id) => format!("nothing else changed and {back} still serves; if the step wrote part of its changes, `packfy-deploy backup restore {id}` brings the data back to before it"),
        None => format!("nothing else changed and {back} still serves"),
    };
    Err(Error::failed(ExitCode::RolledBack, anyhow!("{} failed: {error}", rec.id)).with_hint(hint))
}

/// Step (a later failure after a one-way release step): the old version may not read the
/// data any more, so nothing is put back; the record says `failed`, exit 4 with the two ways
/// out.
pub(super) async fn halted(
    t: &dyn Target,
    mut rec: Release,
    e: anyhow::Error,
    notify: &Notify<'_>,
    started: Instant,
) -> Result<ExitCode> {
    let r = t.region();
    let error = format!("{e:#}");
    let step = rec
        .release_steps
        .iter()
        .find(|s| s.moved_on())
        .cloned()
        .expect("halted only after a one-way release step");
    let back = rec
        .previous
        .clone()
        .unwrap_or_else(|| "the state before it".into());
    say_failed(r, &rec, &error);
    r.ui.warn(format!(
        "not rolling back to {back}: the one-way release step {} ran, so the schema moved on; the old version may not read it",
        step.describe()
    ));
    let message = format!(
        "{} failed after its one-way release step {} ran: {error}; not rolled back: the schema moved on; the old version may not read it. {}",
        rec.id,
        step.describe(),
        backup_phrase(&step.backups)
    );
    rec.end(Outcome::Failed, Some(message.clone()));
    t.save(&rec).await?;
    notify
        .send(
            NotifyKind::Failure,
            &rec.version,
            Some(rec.id.clone()),
            rec.previous.clone(),
            Some(format!(
                "{error}; not rolled back past the one-way release step {}",
                step.describe()
            )),
        )
        .await;
    finish(
        t,
        Summary {
            error: Some(message.clone()),
            ..Summary::of(t, "failed", &rec, started)
        },
        ExitCode::NeedsPerson,
    )?;
    let rollback = format!("packfy-deploy rollback --region {} --force", r.name);
    Err(Error::failed(ExitCode::NeedsPerson, anyhow!(message))
        .with_hint(ways_out(&rollback, &back, &step)))
}

/// The two ways back past a one-way step, for a person to choose.
fn ways_out(rollback: &str, back: &str, step: &ReleaseStepRecord) -> String {
    match step.backups.first() {
        Some(id) => format!(
            "either run {back} on the migrated data: `{rollback}`; or restore the backup, then roll back: `packfy-deploy backup restore {id}` and `{rollback}`; or deploy a fixed version"
        ),
        None => format!(
            "either run {back} on the migrated data: `{rollback}`; or deploy a fixed version (no data backup was taken before the step)"
        ),
    }
}

/// A rollback to `target` that goes past a one-way release step: exit 2 naming the step and
/// its backup, unless `force` (then a warning).
pub(super) fn guard_one_way(
    t: &dyn Target,
    history: &[Release],
    target: &Release,
    force: bool,
) -> Result<()> {
    let Some((rec, step)) = release::one_way_after(history, target) else {
        return Ok(());
    };
    let r = t.region();
    let what = format!(
        "release {} ran the one-way release step {}: the schema moved on, and {} ({}) may not read it; {}",
        rec.id,
        step.describe(),
        target.id,
        target.version,
        backup_phrase(&step.backups)
    );
    if force {
        r.ui.warn(format!("--force: rolling back anyway; {what}"));
        return Ok(());
    }
    Err(Error::usage_hint(
        format!("will not roll back {} to {}: {what}", r.place(), target.id),
        ways_out(
            &format!(
                "packfy-deploy rollback --region {} --to {} --force",
                r.name, target.id
            ),
            &target.id,
            step,
        ),
    ))
}

/// `rollback --force` after a deploy stopped past its one-way release step: what ran before
/// it serves again (on the migrated data), and it is recorded rolled back.
pub(super) async fn undo_halted(
    t: &dyn Target,
    last: &Release,
    history: &[Release],
    force: bool,
) -> Result<()> {
    let r = t.region();
    let back = last.previous.as_deref().unwrap_or("the state before it");
    if let Some(step) = last.release_steps.iter().find(|s| s.moved_on()) {
        let what = format!(
            "release {} stopped after its one-way release step {}: the schema moved on, and {back} may not read it; {}",
            last.id,
            step.describe(),
            backup_phrase(&step.backups)
        );
        if !force {
            let rollback = format!("packfy-deploy rollback --region {} --force", r.name);
            return Err(Error::usage_hint(
                format!("will not roll back {} to {back}: {what}", r.place()),
                ways_out(&rollback, back, step),
            ));
        }
        r.ui.warn(format!("--force: rolling back anyway; {what}"));
    }
    r.ui.status(
        "Rolling back",
        format!("{} from {} to {back}", r.place(), last.id),
    );
    let started = Instant::now();
    t.restore(last, history).await.map_err(|problems| {
        Error::failed(
            ExitCode::NeedsPerson,
            anyhow!("could not put back {back}:\n  {}", problems.join("\n  ")),
        )
    })?;
    let mut rec = last.clone();
    rec.end(
        Outcome::RolledBack,
        Some(format!(
            "{}\nrolled back by `rollback --force`",
            last.error.clone().unwrap_or_default()
        )),
    );
    t.save(&rec).await?;
    r.ui.status(
        "Restored",
        format!(
            "{} to {back} in {:.1}s",
            r.place(),
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}
