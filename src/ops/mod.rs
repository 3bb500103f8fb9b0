//! Operations: one file per command. Each takes the [`Ctx`] and its options and returns the
//! exit code of a success; failures are `Error`s that `lib.rs` reports.

pub mod backup;
pub mod diff;
pub mod explain;
pub mod render;
pub mod target;
pub mod validate;

use std::path::PathBuf;

use crate::config::{Effective, Environment, RegionConfig, Regions};
use crate::error::{Error, ExitCode, Result};
use crate::ui::Ui;

#[derive(Clone)]
pub struct Ctx {
    pub ui: Ui,
    pub regions_dir: PathBuf,
    pub env: Option<Environment>,
}

impl Ctx {
    /// The environment for commands that need one: `--env`, else production.
    pub fn env_or_default(&self) -> Environment {
        self.env.unwrap_or(Environment::Production)
    }

    /// Reads the region files; unreadable files are configuration errors.
    pub fn load(&self) -> Result<Regions> {
        let regions = Regions::load(&self.regions_dir)?;
        if !regions.problems.is_empty() {
            return Err(Error::Config(regions.problems));
        }
        Ok(regions)
    }

    /// The effective tree of a region (typing problems are not fatal: `diff` shows trees).
    pub fn effective(&self, regions: &Regions, region: &str) -> Result<Effective> {
        regions.check_name(region).map_err(|d| Error::Usage {
            message: d.message,
            hint: d.hint,
        })?;
        Ok(regions
            .effective(region, self.env_or_default())
            .expect("checked region name"))
    }

    /// A region's typed, valid configuration.
    pub fn config(&self, regions: &Regions, region: &str) -> Result<(Effective, RegionConfig)> {
        let eff = self.effective(regions, region)?;
        match eff.config.clone() {
            Ok(cfg) => Ok((eff, cfg)),
            Err(ds) => Err(Error::Config(ds)),
        }
    }

    /// The directory beside the regions directory (`manifests`, `templates`).
    pub fn sibling(&self, name: &str) -> PathBuf {
        let parent = self
            .regions_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        if parent == std::path::Path::new(".") {
            PathBuf::from(name)
        } else {
            parent.join(name)
        }
    }
}

/// `schema`: the JSON Schema of region files, generated from the config types.
pub fn schema(ctx: &Ctx) -> Result<ExitCode> {
    ctx.ui.out_json(&crate::config::model::region_file_schema());
    Ok(ExitCode::Success)
}
