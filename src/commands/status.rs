//! `status [--region R]`: what runs where, the serving release, the lock and a release a
//! killed run left behind — the same header on every target, then the target's lines.

use serde_json::{json, Value};

use crate::context::Ctx;
use crate::error::{ExitCode, Result};
use crate::flow;
use crate::release;
use crate::targets;

pub fn run(ctx: &Ctx, region: Option<&str>) -> Result<ExitCode> {
    let regions = ctx.load()?;
    let names: Vec<String> = match region {
        Some(r) => vec![r.to_string()],
        // Every region with a valid configuration in this environment.
        None => regions
            .names()
            .into_iter()
            .filter(|n| {
                regions
                    .effective(n, ctx.env_or_default())
                    .is_some_and(|e| e.config.is_ok())
            })
            .map(str::to_string)
            .collect(),
    };
    super::block_on(async {
        let mut worst = ExitCode::Success;
        let mut all = Vec::new();
        for name in &names {
            match one(ctx, name).await {
                Ok(v) => all.push(v),
                Err(e) => {
                    if names.len() == 1 {
                        return Err(e);
                    }
                    ctx.ui.error(format!("{name}: {e}"));
                    all.push(json!({"region": name, "error": e.to_string()}));
                    worst = flow::fleet::worst([worst, e.code()]);
                }
            }
        }
        if ctx.ui.json() {
            ctx.ui.out_json(&Value::Array(all));
        }
        Ok(worst)
    })
}

async fn one(ctx: &Ctx, region: &str) -> Result<Value> {
    let t = targets::open(ctx, region).await?;
    let history = t.history().await?;
    let lock = t.current_lock().await?;
    let st = t.status().await?;
    let serving = release::serving(&history);
    let interrupted = flow::interrupted_note(&history, lock.as_ref());
    // Hand edits only (cheap, needs no secret); `diff --live` compares with the configuration.
    let drift = match t.drift(None, &history).await {
        Ok(d) => Some(d.len()),
        Err(e) => {
            ctx.ui
                .verbose(format!("{region}: could not look for drift: {e}"));
            None
        }
    };
    let r = t.region();
    let mut value = json!({
        "region": r.name,
        "environment": r.env(),
        "endpoint": st.endpoint,
        "release": serving.map(|r| &r.id),
        "version": serving.map(|r| &r.version),
        "lock": lock.as_ref().map(|l| l.describe()),
        "interrupted": interrupted,
        "drift": drift,
    });
    for (k, v) in st.json {
        value[k] = v;
    }
    if !ctx.ui.json() {
        ctx.ui.out(format!(
            "{} on {}: {}",
            r.place(),
            st.endpoint,
            serving.map_or("no release yet".to_string(), |r| format!(
                "{} ({}) since {}",
                r.id,
                r.version,
                r.finished_at
                    .unwrap_or(r.started_at)
                    .format("%Y-%m-%d %H:%M:%S UTC")
            ))
        ));
        if let Some(l) = &lock {
            ctx.ui.out(format!("  locked by {}", l.describe()));
        }
        if let Some(i) = &interrupted {
            ctx.ui.out(format!("  WARNING: {i}"));
        }
        if let Some(n) = drift.filter(|n| *n > 0) {
            ctx.ui.out(format!(
                "  drift: {}; `packfy-deploy diff {} --live`",
                crate::drift::count(n),
                r.name
            ));
        }
        for line in &st.lines {
            ctx.ui.out(line);
        }
    }
    Ok(value)
}
