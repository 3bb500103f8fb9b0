//! What every operation works in: the region files (read once per process), the chosen
//! environment and the one [`Ui`] all output goes through.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::config::{Effective, Environment, RegionConfig, Regions};
use crate::error::{Error, Result};
use crate::ui::Ui;

#[derive(Clone)]
pub struct Ctx {
    pub ui: Ui,
    pub regions_dir: PathBuf,
    pub env: Option<Environment>,
    /// The region files once read, shared by every copy of this context: a fleet run or
    /// `status` over all regions would otherwise parse every file once per region.
    pub loaded: Arc<OnceLock<Arc<Regions>>>,
}

impl Ctx {
    /// The environment for commands that need one: `--env`, else production.
    pub fn env_or_default(&self) -> Environment {
        self.env.unwrap_or(Environment::Production)
    }

    pub fn new(ui: Ui, regions_dir: PathBuf, env: Option<Environment>) -> Ctx {
        Ctx {
            ui,
            regions_dir,
            env,
            loaded: Arc::default(),
        }
    }

    /// The same context with another Ui or environment, sharing the region files read.
    pub fn with(&self, ui: Ui, env: Option<Environment>) -> Ctx {
        Ctx {
            ui,
            env,
            ..self.clone()
        }
    }

    /// Reads the region files once per process; unreadable files are configuration errors.
    pub fn load(&self) -> Result<Arc<Regions>> {
        if let Some(r) = self.loaded.get() {
            return Ok(r.clone());
        }
        let regions = Regions::load(&self.regions_dir)?;
        if !regions.problems.is_empty() {
            return Err(Error::Config(regions.problems));
        }
        Ok(self.loaded.get_or_init(|| Arc::new(regions)).clone())
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
