//! The command layer: one file per command. Each turns its arguments into an options struct,
//! runs the operation (`crate::flow` for deploys and rollbacks, a target for the read-only
//! commands) and prints through the one `Ui`; it returns the exit code of a success, and
//! failures are `Error`s that `lib.rs` reports.

pub mod backup;
pub mod build;
pub mod deploy;
pub mod diff;
pub mod explain;
pub mod history;
pub mod lock;
pub mod plan;
pub mod render;
pub mod rollback;
pub mod status;
pub mod steer;
pub mod unlock;
pub mod validate;

use anyhow::anyhow;

use crate::context::Ctx;
use crate::error::{Error, ExitCode, Result};

/// `schema`: the JSON Schema of region files, generated from the config types.
pub fn schema(ctx: &Ctx) -> Result<ExitCode> {
    ctx.ui.out_json(&crate::config::model::region_file_schema());
    Ok(ExitCode::Success)
}

/// Runs an async command on a runtime made for it.
fn block_on<F: std::future::Future<Output = Result<ExitCode>>>(f: F) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            Error::failed(
                ExitCode::NeedsPerson,
                anyhow!("cannot start the async runtime: {e}"),
            )
        })?;
    rt.block_on(f)
}

/// Deploys and rollbacks stream their steps: NDJSON with -o json, timestamps off a terminal.
fn streaming(ctx: &Ctx) -> Ctx {
    let mut ui = ctx.ui.clone();
    ui.stream = true;
    ui.timestamps = !crate::ui::interactive();
    ctx.with(ui, ctx.env)
}

/// `--region a,b` or `--region all`: a fleet run.
fn several(region: &str) -> bool {
    region == "all" || region.contains(',')
}
