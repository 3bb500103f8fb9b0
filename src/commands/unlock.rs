//! `unlock --region R [--force]`: free a lock; someone else's live one only with `--force`.

use anyhow::anyhow;
use chrono::Utc;

use crate::context::Ctx;
use crate::error::{Error, ExitCode, Result};
use crate::release;
use crate::targets;

pub fn run(ctx: &Ctx, region: &str, force: bool) -> Result<ExitCode> {
    super::block_on(async {
        let t = targets::open(ctx, region).await?;
        let place = t.region().place();
        let Some(current) = t.current_lock().await? else {
            ctx.ui.status("Unlocked", format!("{place} was not locked"));
            return Ok(ExitCode::Success);
        };
        let mine = current.holder == release::actor();
        if !mine && !force && !current.is_stale(Utc::now()) {
            return Err(Error::failed(
                ExitCode::Locked,
                anyhow!("{place} is locked by {}", current.describe()),
            )
            .with_hint("pass --force to free someone else's lock"));
        }
        t.break_lock().await?;
        ctx.ui.status(
            "Unlocked",
            format!("{place} (was held by {})", current.describe()),
        );
        Ok(ExitCode::Success)
    })
}
