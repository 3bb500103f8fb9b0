//! `plan --region R [--version V]`: what deploy would do, changing nothing (exit 1: changes).

use serde_json::json;

use crate::context::Ctx;
use crate::error::{Error, ExitCode, Result};
use crate::flow;
use crate::targets::{self, DeployOptions, Purpose};

pub fn run(ctx: &Ctx, region: &str, version: Option<String>) -> Result<ExitCode> {
    let opts = DeployOptions {
        version,
        ..Default::default()
    };
    super::block_on(async {
        let mut t = targets::open(ctx, region).await?;
        let version = flow::version_of(&opts, &t.region().cfg)
            .ok_or_else(|| Error::usage_hint("no version to plan", "pass --version V"))?;
        t.resolve(&version, &opts, Purpose::Plan).await?;
        let history = t.history().await?;
        let changes = t.prepare(&history, &opts).await?;
        // The same warnings on every target: the lock, and a release a killed run left.
        let mut notes = changes.notes.clone();
        let lock = t.current_lock().await?;
        if let Some(l) = &lock {
            notes.push(format!("locked by {}", l.describe()));
        }
        notes.extend(flow::interrupted_note(&history, lock.as_ref()));
        let r = t.region();
        let steps: Vec<(&String, &crate::config::model::ReleaseStep)> = r
            .cfg
            .services
            .iter()
            .filter_map(|(name, s)| s.release.as_ref().map(|step| (name, step)))
            .filter(|_| changes.any)
            .collect();
        if ctx.ui.json() {
            let mut v = json!({
                "region": r.name, "environment": r.env(), "changes": changes.any,
                "notes": notes, "drift": changes.drift,
            });
            for (k, x) in changes.json {
                v[k] = x;
            }
            v["release_steps"] = steps
                .iter()
                .map(|(name, step)| {
                    json!({"service": name, "command": step.command.to_string(),
                        "reversible": step.reversible, "one_way": !step.reversible,
                        "timeout": step.timeout.to_string()})
                })
                .collect();
            ctx.ui.out_json(&v);
        } else {
            for l in &changes.lines {
                ctx.ui.out(l);
            }
            for (name, step) in &steps {
                ctx.ui.out(release_step_line(name, step));
            }
            if !changes.drift.is_empty() {
                ctx.ui.out(format!(
                    "drift: {} from what its releases set (a deploy leaves them; `deploy --reset-drift` takes them back):",
                    crate::drift::count(changes.drift.len())
                ));
                for d in &changes.drift {
                    ctx.ui.out(format!("  {}", d.describe()));
                }
            }
            for n in &notes {
                ctx.ui.out(format!("note: {n}"));
            }
        }
        Ok(if changes.any {
            ExitCode::Changes
        } else {
            ExitCode::Success
        })
    })
}

/// `web: release step `migrate` runs once in the new image before traffic moves (one-way: …)`
fn release_step_line(service: &str, step: &crate::config::model::ReleaseStep) -> String {
    format!(
        "{service}: release step `{}` runs once in the new image before traffic moves, timeout {} ({})",
        step.command,
        step.timeout,
        if step.reversible {
            "reversible: a later failure rolls back as usual"
        } else {
            "one-way: a later failure stops for a person instead of rolling back"
        }
    )
}
