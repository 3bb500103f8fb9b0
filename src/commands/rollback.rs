//! `rollback --region R|a,b|all [--to ID]`

use std::time::Duration;

use crate::context::Ctx;
use crate::error::{Error, ExitCode, Result};
use crate::flow;

pub struct RollbackOptions<'a> {
    pub region: &'a str,
    pub to: Option<&'a str>,
    pub lock_wait: Option<Duration>,
    /// Also back past a one-way release step.
    pub force: bool,
}

pub fn run(ctx: &Ctx, o: RollbackOptions<'_>) -> Result<ExitCode> {
    let ctx = &super::streaming(ctx);
    if super::several(o.region) {
        if o.to.is_some() || o.force {
            return Err(Error::usage(
                "--to and --force are about one region's releases; roll back several regions without them",
            ));
        }
        let selected = flow::fleet::select(ctx, o.region)?;
        return super::block_on(flow::fleet::rollback(ctx, selected));
    }
    super::block_on(flow::rollback(ctx, o.region, o.to, o.lock_wait, o.force))
}
