//! `deploy --region R|a,b|all`

use crate::cli::DeployArgs;
use crate::context::Ctx;
use crate::error::{ExitCode, Result};
use crate::flow;
use crate::targets::DeployOptions;

pub fn run(ctx: &Ctx, args: &DeployArgs) -> Result<ExitCode> {
    let ctx = &super::streaming(ctx);
    let opts = DeployOptions {
        version: args.version.clone(),
        no_build: args.no_build,
        push: args.push,
        lock_wait: args.lock_wait,
        reason: args.reason.clone(),
        force_conflicts: args.force_conflicts,
        reset_drift: args.reset_drift,
        ..Default::default()
    };
    if super::several(&args.region) {
        let selected = flow::fleet::select(ctx, &args.region)?;
        return super::block_on(flow::fleet::deploy(ctx, selected, &opts));
    }
    super::block_on(flow::deploy(ctx, &args.region, &opts))
}
