//! `history --region R [--limit N]`: releases with outcome, actor, time, version, their
//! release steps and where each data backup taken before them is stored.

use crate::context::Ctx;
use crate::error::{ExitCode, Result};
use crate::release;
use crate::targets;

pub fn run(ctx: &Ctx, region: &str, limit: usize) -> Result<ExitCode> {
    super::block_on(async {
        let t = targets::open(ctx, region).await?;
        let history = t.history().await?;
        let shown: Vec<_> = history.iter().rev().take(limit).collect();
        if ctx.ui.json() {
            ctx.ui
                .out_json(&serde_json::to_value(&shown).map_err(anyhow::Error::from)?);
            return Ok(ExitCode::Success);
        }
        if shown.is_empty() {
            ctx.ui
                .out(format!("{}: no releases yet", t.region().place()));
            return Ok(ExitCode::Success);
        }
        ctx.ui.out(format!(
            "{:<6} {:<9} {:<12} {:<20} {:<8} {:<24} {}",
            "ID", "KIND", "OUTCOME", "VERSION", "TOOK", "STARTED", "ACTOR"
        ));
        for r in shown {
            ctx.ui.out(format!(
                "{:<6} {:<9} {:<12} {:<20} {:<8} {:<24} {}{}",
                r.id,
                match r.kind {
                    release::Kind::Deploy => "deploy",
                    release::Kind::Rollback => "rollback",
                },
                r.outcome.as_str(),
                r.version,
                r.duration_secs().map_or("-".into(), |d| format!("{d:.1}s")),
                r.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                r.actor,
                match (&r.target, &r.error) {
                    (Some(t), _) => format!("  (to {t})"),
                    (None, Some(e)) => format!("  ({})", e.lines().next().unwrap_or("")),
                    _ => String::new(),
                }
            ));
            // Where each data backup taken before it is kept: what a restore needs.
            for b in &r.backups {
                ctx.ui.out(match &b.error {
                    Some(e) => format!("{:<6} backup {}: none stored ({e})", "", b.id),
                    None => format!(
                        "{:<6} backup {} in {} ({})",
                        "",
                        b.id,
                        b.store,
                        crate::backup::human_bytes(b.stored_bytes)
                    ),
                });
            }
            for s in &r.release_steps {
                ctx.ui.out(format!(
                    "{:<6} release step {}: {} in {:.1}s{}{}{}",
                    "",
                    s.describe(),
                    s.outcome.as_str(),
                    s.duration_secs,
                    if s.reversible {
                        ", reversible"
                    } else {
                        ", one-way"
                    },
                    s.last_line_sha256
                        .as_ref()
                        .map(|d| format!(", last line sha256 {d}"))
                        .unwrap_or_default(),
                    s.backups
                        .first()
                        .map(|b| format!(", backup {b}"))
                        .unwrap_or_default()
                ));
            }
        }
        Ok(ExitCode::Success)
    })
}
