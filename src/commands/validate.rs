//! `validate [REGION…]`: every problem in the region files, in every environment asked for.

use crate::config::{Environment, Regions, DEFAULTS_FILE};
use crate::error::{Error, ExitCode, Result};

use crate::context::Ctx;

pub fn run(ctx: &Ctx, only: &[String]) -> Result<ExitCode> {
    let regions = Regions::load(&ctx.regions_dir)?;
    // Files whose problems count: all of them, or the defaults and the regions asked for.
    let mut files: Vec<String> = vec![ctx.regions_dir.join(DEFAULTS_FILE).display().to_string()];
    for name in only {
        let yaml = ctx.regions_dir.join(format!("{name}.yaml"));
        let yml = ctx.regions_dir.join(format!("{name}.yml"));
        if !yaml.exists() && !yml.exists() {
            regions.check_name(name).map_err(|d| Error::Usage {
                message: d.message,
                hint: d.hint,
            })?;
        }
        files.push(yaml.display().to_string());
        files.push(yml.display().to_string());
    }
    let names: Vec<String> = if only.is_empty() {
        regions.names().iter().map(|s| s.to_string()).collect()
    } else {
        only.iter()
            .filter(|n| regions.source(n).is_some())
            .cloned()
            .collect()
    };
    let envs: Vec<Environment> = match ctx.env {
        Some(e) => vec![e],
        None => Environment::ALL.to_vec(),
    };
    let mut problems = regions.validate(&names, &envs);
    if !only.is_empty() {
        problems.retain(|p| {
            p.loc
                .as_ref()
                .is_none_or(|l| files.iter().any(|f| *f == *l.file))
        });
    }
    if !problems.is_empty() {
        return Err(Error::Config(problems));
    }
    let env_text: Vec<&str> = envs.iter().map(|e| e.as_str()).collect();
    if ctx.ui.json() {
        ctx.ui.out_json(&serde_json::json!({
            "valid": true,
            "regions": names,
            "environments": env_text,
        }));
    } else {
        ctx.ui.out(format!(
            "ok: {} region(s) valid in {}: {}",
            names.len(),
            env_text.join(", "),
            names.join(", ")
        ));
    }
    Ok(ExitCode::Success)
}
