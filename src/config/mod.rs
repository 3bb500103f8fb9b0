//! Region configuration: reading, layering, typing and checking.
//!
//! 1. every `*.yaml` of the regions directory is read into a [`Node`] tree (`yaml.rs`);
//! 2. for a region and environment the trees are layered (`merge.rs`): `_defaults.yaml`, the
//!    region file, the defaults' `environments.<env>` overlay, the region's overlay;
//! 3. the layered tree is typed into a [`RegionConfig`] (`de.rs`), collecting every problem;
//! 4. rules across fields and regions run on the typed values (`validate.rs`).
//!
//! All of it is pure: values in, values out, no daemon.

pub mod backups;
pub mod de;
pub mod diag;
pub mod global;
pub mod merge;
pub mod model;
pub mod node;
pub mod validate;
pub mod yaml;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use diag::Diagnostic;
pub use model::{Environment, RegionConfig};
pub use node::{Loc, Node, Value};

/// The file of values every region inherits.
pub const DEFAULTS_FILE: &str = "_defaults.yaml";

/// One parsed file.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: Arc<str>,
    pub root: Node,
}

/// All region files of a directory, parsed but not yet layered.
#[derive(Debug, Clone)]
pub struct Regions {
    pub dir: PathBuf,
    pub defaults: Option<Source>,
    /// By region name, sorted.
    pub regions: Vec<(String, Source)>,
    /// Problems found while reading (syntax, structure); files with problems are left out.
    pub problems: Vec<Diagnostic>,
}

/// One region in one environment, layered and typed.
#[derive(Debug, Clone)]
pub struct Effective {
    pub region: String,
    pub env: Environment,
    pub tree: Node,
    pub config: Result<RegionConfig, Vec<Diagnostic>>,
}

impl Regions {
    /// Reads every region file of `dir`. Unreadable or malformed files become problems.
    pub fn load(dir: &Path) -> Result<Regions, Diagnostic> {
        let listing = std::fs::read_dir(dir).map_err(|e| {
            Diagnostic::new(
                None,
                format!("cannot read the regions directory {}: {e}", dir.display()),
            )
            .hint("run from the repository root, or pass --regions-dir DIR")
        })?;
        let mut files: Vec<PathBuf> = listing
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort();
        let mut out = Regions {
            dir: dir.to_path_buf(),
            defaults: None,
            regions: Vec::new(),
            problems: Vec::new(),
        };
        for path in files {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_string();
            let shown: Arc<str> = Arc::from(path.display().to_string());
            let is_defaults = path.file_name().and_then(|n| n.to_str()) == Some(DEFAULTS_FILE);
            if !is_defaults && !validate::is_dns_label(&stem) {
                if !stem.starts_with('_') {
                    out.problems.push(
                        Diagnostic::at(&Loc::new(&shown, 1, 1), format!("'{stem}' is not a valid region name"))
                            .hint("name region files in lower case with letters, digits and '-', e.g. costa-rica.yaml"),
                    );
                }
                continue;
            }
            match read_source(&path, &shown) {
                Ok(src) => {
                    let mut problems = check_structure(&src, is_defaults);
                    if problems.is_empty() {
                        if is_defaults {
                            out.defaults = Some(src);
                        } else {
                            out.regions.push((stem, src));
                        }
                    }
                    out.problems.append(&mut problems);
                }
                Err(d) => out.problems.push(d),
            }
        }
        Ok(out)
    }

    pub fn names(&self) -> Vec<&str> {
        self.regions.iter().map(|(n, _)| n.as_str()).collect()
    }

    pub fn source(&self, region: &str) -> Option<&Source> {
        self.regions
            .iter()
            .find(|(n, _)| n == region)
            .map(|(_, s)| s)
    }

    /// A region name that does not exist becomes a usage error with a did-you-mean.
    pub fn check_name(&self, region: &str) -> Result<(), Diagnostic> {
        if self.source(region).is_some() {
            return Ok(());
        }
        let mut d = Diagnostic::new(
            None,
            format!("no region '{region}' in {}", self.dir.display()),
        );
        d.hint = Some(match diag::did_you_mean(region, self.names()) {
            Some(s) => format!("did you mean '{s}'?"),
            None => format!("regions are: {}", self.names().join(", ")),
        });
        Err(d)
    }

    /// The layered tree and typed configuration of `region` in `env`.
    pub fn effective(&self, region: &str, env: Environment) -> Option<Effective> {
        let src = self.source(region)?;
        let empty = merge::empty_like(&src.root);
        let defaults = self.defaults.as_ref().map(|d| &d.root);
        let mut tree = match defaults {
            Some(d) => merge::without(d, &["environments", "waves", "max_parallel", "on_failure"]),
            None => empty.clone(),
        };
        tree = merge::merge(tree, &merge::without(&src.root, &["environments"]));
        for layer in [defaults, Some(&src.root)].into_iter().flatten() {
            if let Some(overlay) = layer.lookup(&format!("environments.{env}")) {
                if overlay.as_map().is_some() {
                    tree = merge::merge(tree, overlay);
                }
            }
        }
        tree.loc = src.root.loc.clone();
        let config = de::from_node::<RegionConfig>(&tree, "");
        let config = config.and_then(|c| {
            let problems = validate::region(region, &c, &tree);
            if problems.is_empty() {
                Ok(c)
            } else {
                Err(problems)
            }
        });
        Some(Effective {
            region: region.to_string(),
            env,
            tree,
            config,
        })
    }

    /// The fleet settings of `_defaults.yaml` (waves, max_parallel, on_failure).
    pub fn global(&self) -> Result<global::Global, Vec<Diagnostic>> {
        global::from_defaults(self.defaults.as_ref().map(|d| &d.root), &self.names())
    }

    /// Every problem of the given regions in the given environments, each once. A problem seen
    /// in only some environments names them.
    pub fn validate(&self, regions: &[String], envs: &[Environment]) -> Vec<Diagnostic> {
        let mut seen: Vec<(Diagnostic, BTreeSet<Environment>)> = Vec::new();
        let mut add = |d: Diagnostic, env: Environment| match seen.iter_mut().find(|(s, _)| *s == d)
        {
            Some((_, envs)) => {
                envs.insert(env);
            }
            None => seen.push((d, BTreeSet::from([env]))),
        };
        for env in envs {
            let mut typed = Vec::new();
            for name in regions {
                let Some(eff) = self.effective(name, *env) else {
                    continue;
                };
                match eff.config {
                    Ok(c) => typed.push((name.clone(), c, eff.tree)),
                    Err(ds) => ds.into_iter().for_each(|d| add(d, *env)),
                }
            }
            // Cross-region rules only make sense over all regions.
            if regions.len() == self.regions.len() {
                let refs: Vec<_> = typed.iter().map(|(n, c, t)| (n.as_str(), c, t)).collect();
                validate::across(&refs)
                    .into_iter()
                    .for_each(|d| add(d, *env));
            }
        }
        let mut out: Vec<Diagnostic> = self.problems.clone();
        if let Err(mut ds) = self.global() {
            out.append(&mut ds);
        }
        for (mut d, in_envs) in seen {
            if in_envs.len() < envs.len() {
                let names: Vec<&str> = in_envs.iter().map(|e| e.as_str()).collect();
                d.message.push_str(&format!(" (in {})", names.join(", ")));
            }
            out.push(d);
        }
        out
    }
}

/// `${VAR}` and `${VAR:-default}` in endpoint strings, so one region file serves several
/// machines (the test environment's sockets, a CI runner's).
pub fn expand_env(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &rest[start + 2..start + end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match std::env::var(name).ok().filter(|v| !v.is_empty()) {
            Some(v) => out.push_str(&v),
            None => out.push_str(default.unwrap_or("")),
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// Reads a file defensively: size first, then UTF-8 and control characters, then YAML.
fn read_source(path: &Path, shown: &Arc<str>) -> Result<Source, Diagnostic> {
    let at_start = Loc::new(shown, 1, 1);
    let meta = std::fs::metadata(path)
        .map_err(|e| Diagnostic::at(&at_start, format!("cannot read the file: {e}")))?;
    if meta.len() > yaml::MAX_FILE_BYTES {
        return Err(Diagnostic::at(
            &at_start,
            format!(
                "the file is {:.1} MB; region files are limited to {} KiB",
                meta.len() as f64 / 1e6,
                yaml::MAX_FILE_BYTES / 1024
            ),
        )
        .hint("a region file holds settings, not data; split or trim it"));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| Diagnostic::at(&at_start, format!("cannot read the file: {e}")))?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(e) => {
            let (line, col) = line_col(&bytes[..e.valid_up_to()]);
            return Err(Diagnostic::at(
                &Loc::new(shown, line, col),
                format!(
                    "the file is not UTF-8 text (byte 0x{:02x})",
                    bytes[e.valid_up_to()]
                ),
            )
            .hint("region files are UTF-8 YAML; is this a binary file?"));
        }
    };
    if let Some(pos) = text.find(|c: char| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        let (line, col) = line_col(&bytes[..pos]);
        let c = text[pos..].chars().next().unwrap_or('\0');
        return Err(Diagnostic::at(
            &Loc::new(shown, line, col),
            format!("control character U+{:04X} in the file", c as u32),
        )
        .hint("region files are plain YAML text; is this a binary file?"));
    }
    let root = yaml::parse(shown, text)?;
    Ok(Source {
        path: shown.clone(),
        root,
    })
}

fn line_col(prefix: &[u8]) -> (usize, usize) {
    let line = prefix.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = prefix
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&prefix[line_start..])
        .chars()
        .count()
        + 1;
    (line, col)
}

/// The shape every file must have before layering: a mapping, with `environments:` (if any)
/// mapping known environment names to mappings.
fn check_structure(src: &Source, is_defaults: bool) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let Some(map) = src.root.as_map() else {
        let what = if is_defaults {
            "the defaults file"
        } else {
            "a region file"
        };
        out.push(
            Diagnostic::at(
                &src.root.loc,
                format!(
                    "{what} must be a mapping of settings, found {}",
                    src.root.kind()
                ),
            )
            .hint("start with keys such as `currency: MXN` and `services:`"),
        );
        return out;
    };
    if let Some(envs) = map.entries.get("environments") {
        match envs.value.as_map() {
            Some(m) => {
                for (name, e) in &m.entries {
                    if name.parse::<Environment>().is_err()
                        || !Environment::NAMES.contains(&name.as_str())
                    {
                        let mut d =
                            Diagnostic::at(&e.key_loc, format!("unknown environment '{name}'"));
                        d.hint = Some(match diag::did_you_mean(name, Environment::NAMES) {
                            Some(s) => format!("did you mean '{s}'?"),
                            None => "environments are development, staging and production".into(),
                        });
                        out.push(d);
                    } else if !matches!(e.value.value, Value::Map(_) | Value::Null) {
                        out.push(Diagnostic::at(
                            &e.value.loc,
                            format!(
                                "environments.{name}: expected a mapping, found {}",
                                e.value.kind()
                            ),
                        ));
                    }
                }
            }
            None if envs.value.value == Value::Null => {}
            None => out.push(Diagnostic::at(
                &envs.value.loc,
                format!(
                    "environments: expected a mapping, found {}",
                    envs.value.kind()
                ),
            )),
        }
    }
    out
}
