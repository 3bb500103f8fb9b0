//! `render`: Kubernetes manifests into `manifests/<region>/<env>/`, or `--check` them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::cli::RenderArgs;
use crate::config::Environment;
use crate::error::{Error, ExitCode, Result};
use crate::render::{load_templates, render};

use crate::context::Ctx;

pub fn run(ctx: &Ctx, args: &RenderArgs) -> Result<ExitCode> {
    let regions = ctx.load()?;
    let templates_dir = args
        .templates
        .clone()
        .unwrap_or_else(|| ctx.sibling("templates"));
    let out_dir = args.out.clone().unwrap_or_else(|| ctx.sibling("manifests"));
    let templates = load_templates(&templates_dir).map_err(|e| {
        Error::usage_hint(
            e.to_string(),
            "pass --templates DIR, or run from the repository root",
        )
    })?;

    let envs: Vec<Environment> = match ctx.env {
        Some(e) => vec![e],
        None => Environment::ALL.to_vec(),
    };
    let names: Vec<String> = match &args.region {
        Some(r) => vec![r.clone()],
        None => regions.names().iter().map(|s| s.to_string()).collect(),
    };
    // (what is wrong, file): "stale" differs, "missing" is not there, "extra" is not rendered
    let mut stale: Vec<(&str, PathBuf)> = Vec::new();
    let mut written = 0usize;
    let mut expected: HashSet<PathBuf> = HashSet::new();
    for name in &names {
        for env in &envs {
            let c = ctx.with(ctx.ui.clone(), Some(*env));
            let (_, cfg) = c.config(&regions, name)?;
            if cfg.target.kubernetes().is_none() {
                if args.region.is_some() {
                    return Err(Error::usage_hint(
                        format!("region '{name}' targets Docker; render is for Kubernetes regions"),
                        "Docker regions deploy containers directly; `plan --region` shows what would run",
                    ));
                }
                continue;
            }
            let tag = args
                .image_tag
                .clone()
                .or(cfg.version.clone())
                .ok_or_else(|| {
                    Error::usage_hint(
                        format!("no image tag for region '{name}'"),
                        "pass --image-tag TAG or set `version:` in the region files",
                    )
                })?;
            let files = render(&templates, name, *env, &cfg, &tag)
                .map_err(|e| Error::usage_hint(e.to_string(), "fix the template"))?;
            let dir = out_dir.join(name).join(env.as_str());
            for (file, text) in files {
                let path = dir.join(&file);
                expected.insert(path.clone());
                let current = std::fs::read_to_string(&path).ok();
                if args.check {
                    if current.is_none() {
                        stale.push(("missing", path));
                    } else if current.as_deref() != Some(text.as_str()) {
                        stale.push(("stale", path));
                    }
                } else if current.as_deref() != Some(text.as_str()) {
                    std::fs::create_dir_all(&dir).map_err(|e| write_error(&dir, e))?;
                    std::fs::write(&path, text).map_err(|e| write_error(&path, e))?;
                    written += 1;
                }
            }
            // Files left from a service that no longer exists are stale too.
            for p in yaml_files(&dir) {
                if !expected.contains(&p) {
                    if args.check {
                        stale.push(("extra", p));
                    } else {
                        std::fs::remove_file(&p).map_err(|e| write_error(&p, e))?;
                        written += 1;
                    }
                }
            }
        }
    }
    // Manifests of a region that is gone, or no longer on Kubernetes, are stale too.
    if args.region.is_none() {
        for dir in orphan_dirs(&out_dir, &envs) {
            for p in yaml_files(&dir) {
                if expected.contains(&p) || stale.iter().any(|(_, s)| *s == p) {
                    continue;
                }
                if args.check {
                    stale.push(("extra", p));
                } else {
                    std::fs::remove_file(&p).map_err(|e| write_error(&p, e))?;
                    written += 1;
                    // only empty directories go; failing to remove one changes nothing
                    let _ = std::fs::remove_dir(&dir);
                    if let Some(region_dir) = dir.parent() {
                        let _ = std::fs::remove_dir(region_dir);
                    }
                }
            }
        }
    }
    if args.check {
        if stale.is_empty() {
            ctx.ui.status(
                "Fresh",
                format!("{} manifest(s) match a fresh render", expected.len()),
            );
            return Ok(ExitCode::Success);
        }
        for (what, p) in &stale {
            ctx.ui.out(format!("{what}: {}", p.display()));
        }
        ctx.ui.error(format!(
            "{} manifest(s) differ from a fresh render; run `packfy-deploy render` and commit the result",
            stale.len()
        ));
        return Ok(ExitCode::Changes);
    }
    ctx.ui.status(
        "Rendered",
        format!(
            "{} manifest(s) into {} ({} changed)",
            expected.len(),
            out_dir.display(),
            written
        ),
    );
    Ok(ExitCode::Success)
}

fn write_error(path: &Path, e: std::io::Error) -> Error {
    Error::failed(
        ExitCode::NeedsPerson,
        anyhow::anyhow!("cannot write {}: {e}", path.display()),
    )
}

/// `out/<any region>/<env>` for the environments rendered.
fn orphan_dirs(out: &Path, envs: &[Environment]) -> Vec<PathBuf> {
    let Ok(listing) = std::fs::read_dir(out) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = listing
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .flat_map(|r| envs.iter().map(move |e| r.join(e.as_str())))
        .filter(|d| d.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = listing
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}
