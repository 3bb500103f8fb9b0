//! `promote`, `abort`, `pause`, `resume --region R`: steer a canary (see `flow::steer`).

use crate::context::Ctx;
use crate::error::{ExitCode, Result};
use crate::flow;
use crate::targets::Steer;

pub fn run(ctx: &Ctx, region: &str, how: Steer) -> Result<ExitCode> {
    let ctx = &super::streaming(ctx);
    super::block_on(flow::steer(ctx, region, how))
}
