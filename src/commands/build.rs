//! `build --region R [--push] [--version V]`: the images of services with `build:`.

use crate::context::Ctx;
use crate::error::{Error, ExitCode, Result};
use crate::flow;
use crate::targets::{self, DeployOptions};

pub fn run(ctx: &Ctx, region: &str, push: bool, version: Option<String>) -> Result<ExitCode> {
    let opts = DeployOptions {
        version,
        push,
        ..Default::default()
    };
    super::block_on(async {
        let t = targets::open(ctx, region).await?;
        let cfg = &t.region().cfg;
        let version = flow::version_of(&opts, cfg)
            .ok_or_else(|| Error::usage_hint("no version to tag", "pass --version V"))?;
        if !cfg.services.values().any(|svc| svc.build.is_some()) {
            return Err(Error::usage_hint(
                format!("no service of region '{region}' has a `build:` section"),
                "add `build: {context: ., dockerfile: Dockerfile}` to a service",
            ));
        }
        for b in t.build(&version, &opts).await? {
            match &b.digest {
                Some(d) => ctx.ui.out(format!(
                    "{}: {} ({}, pushed as {d})",
                    b.service, b.image, b.id
                )),
                None => ctx.ui.out(format!("{}: {} ({})", b.service, b.image, b.id)),
            }
        }
        Ok(ExitCode::Success)
    })
}
