//! `lock --region R --reason WHY [--ttl D]`: hold a region by hand. Not tied to this process:
//! only its expiry (or `unlock`) frees it.

use std::time::Duration;

use anyhow::anyhow;

use crate::context::Ctx;
use crate::error::{Error, ExitCode, Result};
use crate::lock::Acquire;
use crate::release;
use crate::targets;

pub fn run(ctx: &Ctx, region: &str, reason: &str, ttl: Option<Duration>) -> Result<ExitCode> {
    super::block_on(async {
        let t = targets::open(ctx, region).await?;
        let r = t.region();
        let ttl = ttl.unwrap_or(r.cfg.lock_ttl.0);
        match t.try_lock(&release::actor(), reason, ttl, false).await? {
            Acquire::Acquired(l) => {
                ctx.ui.status(
                    "Locked",
                    format!(
                        "{} ({}) until {} ({})",
                        r.place(),
                        t.lock_place(),
                        l.expires.format("%H:%M:%S UTC"),
                        l.reason
                    ),
                );
                Ok(ExitCode::Success)
            }
            Acquire::Held(other) => Err(Error::failed(
                ExitCode::Locked,
                anyhow!("{} is already locked by {}", r.place(), other.describe()),
            )),
        }
    })
}
