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
pub mod progressive;
pub mod validate;
pub mod yaml;

use std::collections::{BTreeSet, HashMap};
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
    /// File names (`_defaults.yaml`, `cuba.yaml`) left out because of those problems.
    pub unreadable: Vec<String>,
}

/// A configuration typed despite problems, and the key paths of its stand-in values.
type Recovered = (RegionConfig, Vec<String>);

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
            unreadable: Vec::new(),
        };
        // Names first (cheap, in order), then reading and parsing on every core, then the
        // results in file order.
        let mut to_read = Vec::new();
        let mut stems = HashMap::new();
        for path in files {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_string();
            let shown: Arc<str> = Arc::from(path.display().to_string());
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let is_defaults = file_name == DEFAULTS_FILE;
            if !is_defaults && !validate::is_dns_label(&stem) {
                if !stem.starts_with('_') {
                    out.problems.push(
                        Diagnostic::at(&Loc::new(&shown, 1, 1), format!("'{stem}' is not a valid region name"))
                            .hint("name region files in lower case with letters, digits and '-', e.g. costa-rica.yaml"),
                    );
                }
                continue;
            }
            if let Some(first) = stems.get(&stem) {
                out.problems.push(
                    Diagnostic::at(
                        &Loc::new(&shown, 1, 1),
                        format!("region '{stem}' is already defined in {first}"),
                    )
                    .hint("keep one file per region"),
                );
                out.unreadable.push(file_name);
                continue;
            }
            stems.insert(stem.clone(), shown.clone());
            to_read.push((path, stem, shown, file_name, is_defaults));
        }
        let read = par_map(&to_read, |(path, _, shown, ..)| read_source(path, shown));
        for ((_, stem, _, file_name, is_defaults), result) in to_read.into_iter().zip(read) {
            match result {
                Ok(src) => {
                    let mut problems = check_structure(&src, is_defaults);
                    // A wrong `environments:` entry is never layered, so the rest of the file
                    // is still worth checking; a file that is not a mapping is not.
                    if src.root.as_map().is_some() {
                        if is_defaults {
                            out.defaults = Some(src);
                        } else {
                            out.regions.push((stem, src));
                        }
                    } else {
                        out.unreadable.push(file_name);
                    }
                    out.problems.append(&mut problems);
                }
                Err(d) => {
                    out.unreadable.push(file_name);
                    out.problems.push(d);
                }
            }
        }
        out.problems.sort_by(|a, b| a.loc.cmp(&b.loc));
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
        d.hint = Some(diag::suggest(region, self.names(), || {
            format!("regions are: {}", self.names().join(", "))
        }));
        Err(d)
    }

    /// The layered tree and typed configuration of `region` in `env`.
    pub fn effective(&self, region: &str, env: Environment) -> Option<Effective> {
        self.effective_partial(region, env).map(|(eff, _)| eff)
    }

    /// [`Regions::effective`], plus, when it has problems, the configuration recovered
    /// despite them and the paths of its stand-in values (for rules across regions).
    fn effective_partial(
        &self,
        region: &str,
        env: Environment,
    ) -> Option<(Effective, Option<Recovered>)> {
        let src = self.source(region)?;
        let defaults = self.defaults.as_ref().map(|d| &d.root);
        let mut tree = match defaults {
            Some(d) => merge::without(d, &DEFAULTS_NOT_INHERITED),
            None => merge::empty_like(&src.root),
        };
        tree = merge::merge_except(tree, &src.root, &["environments"]);
        for layer in [defaults, Some(&src.root)].into_iter().flatten() {
            if let Some(overlay) = layer.lookup(&format!("environments.{env}")) {
                if overlay.as_map().is_some() {
                    tree = merge::merge(tree, overlay);
                }
            }
        }
        tree.loc = src.root.loc.clone();
        let typed = de::from_node_partial::<RegionConfig>(&tree, "");
        let mut problems = typed.problems;
        if let Some(c) = &typed.value {
            problems.extend(validate::region_partial(region, c, &tree, &typed.poisoned));
        }
        let (config, recovered) = match typed.value {
            Some(c) if problems.is_empty() => (Ok(c), None),
            Some(c) => (Err(problems), Some((c, typed.poisoned))),
            None => (Err(problems), None),
        };
        let eff = Effective {
            region: region.to_string(),
            env,
            tree,
            config,
        };
        Some((eff, recovered))
    }

    /// The fleet settings of `_defaults.yaml` (waves, max_parallel, on_failure).
    pub fn global(&self) -> Result<global::Global, Vec<Diagnostic>> {
        global::from_defaults(self.defaults.as_ref().map(|d| &d.root), &self.names())
    }

    /// Every problem of the given regions in the given environments, each once, in file order.
    /// A problem seen in only some environments names them.
    pub fn validate(&self, regions: &[String], envs: &[Environment]) -> Vec<Diagnostic> {
        let mut out: Vec<Diagnostic> = self.problems.clone();
        if let Err(mut ds) = self.global() {
            out.append(&mut ds);
        }
        // Every region inherits the defaults: without them, each region would be reported for
        // every value the defaults set. Their own problems are enough.
        if self.unreadable.iter().any(|f| f == DEFAULTS_FILE) {
            return out;
        }
        let mut seen: Vec<(Diagnostic, BTreeSet<Environment>)> = Vec::new();
        let mut index: HashMap<Diagnostic, usize> = HashMap::new();
        let mut add = |d: Diagnostic, env: Environment| match index.get(&d) {
            Some(&i) => {
                seen[i].1.insert(env);
            }
            None => {
                index.insert(d.clone(), seen.len());
                seen.push((d, BTreeSet::from([env])));
            }
        };
        // Each file on its own, so a mistake is found even where every environment overrides
        // it (the effective configurations below never see it then). The same problem found
        // again in an effective configuration is the same diagnostic, reported once.
        let files: Vec<&Source> = self
            .defaults
            .iter()
            .chain(regions.iter().filter_map(|n| self.source(n)))
            .collect();
        for d in par_map(&files, |src| check_types(src))
            .into_iter()
            .flatten()
        {
            envs.iter().for_each(|e| add(d.clone(), *e));
        }
        // Every region in every environment, on every core; then in order, environment by
        // environment, so the rules across regions see one environment at a time.
        let pairs: Vec<(Environment, &String)> = envs
            .iter()
            .flat_map(|e| regions.iter().map(move |r| (*e, r)))
            .collect();
        let checked = par_map(&pairs, |(env, name)| self.check_region(name, *env));
        // Rules across regions only make sense over all of them, each read and typed.
        let complete = regions.len() == self.regions.len() && self.unreadable.is_empty();
        for (env, in_env) in envs.iter().zip(checked.chunks(regions.len().max(1))) {
            let mut typed = Vec::new();
            let mut all_typed = complete;
            for (name, outcome) in regions.iter().zip(in_env) {
                let Some((problems, recovered)) = outcome else {
                    continue;
                };
                problems.iter().for_each(|d| add(d.clone(), *env));
                match recovered {
                    Some((c, slim, poisoned)) => typed.push((name.as_str(), c, slim, poisoned)),
                    None => all_typed = false,
                }
            }
            if all_typed {
                let refs: Vec<_> = typed
                    .iter()
                    .map(|(n, c, t, p)| (*n, *c, *t, p.as_slice()))
                    .collect();
                validate::across_partial(&refs)
                    .into_iter()
                    .for_each(|d| add(d, *env));
            }
        }
        for (mut d, in_envs) in seen {
            if in_envs.len() < envs.len() {
                let names: Vec<&str> = in_envs.iter().map(|e| e.as_str()).collect();
                d.message.push_str(&format!(" (in {})", names.join(", ")));
            }
            out.push(d);
        }
        // File order: typing finds problems in field order, rules in rule order.
        out.sort_by(|a, b| a.loc.cmp(&b.loc));
        out
    }
}

/// What checking one region in one environment leaves for [`Regions::validate`]: its problems
/// and, unless it could not be typed at all, its configuration (real or recovered), the keys
/// the rules across regions point at, and the paths of stand-in values.
type Checked = (Vec<Diagnostic>, Option<(RegionConfig, Node, Vec<String>)>);

impl Regions {
    /// One region in one environment for [`Regions::validate`]; `None` for an unknown region.
    fn check_region(&self, region: &str, env: Environment) -> Option<Checked> {
        let (eff, recovered) = self.effective_partial(region, env)?;
        // the rules across regions only point at these keys: keep those, not the tree
        let slim = merge::only(&eff.tree, &["primary", "capacity_share"]);
        Some(match (eff.config, recovered) {
            (Ok(c), _) => (Vec::new(), Some((c, slim, Vec::new()))),
            (Err(ds), Some((c, poisoned))) => (ds, Some((c, slim, poisoned))),
            (Err(ds), None) => (ds, None),
        })
    }
}

/// `f` over `items` on every core (scoped threads, no pool to keep), results in order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    // below this, starting threads costs more than it saves
    if threads < 2 || items.len() < 32 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
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

/// Keys of `_defaults.yaml` that regions do not inherit: the overlays, layered separately, and
/// the fleet settings (`global.rs`).
const DEFAULTS_NOT_INHERITED: [&str; 4] = [
    "environments",
    global::KEYS[0],
    global::KEYS[1],
    global::KEYS[2],
];

/// The type problems of one file: its settings, and each `environments.<env>` overlay, each
/// typed as if it were a whole configuration (every field has a default).
fn check_types(src: &Source) -> Vec<Diagnostic> {
    // The defaults file also holds the fleet settings (checked by `global`).
    let skip: &[&str] = if src.path.ends_with(DEFAULTS_FILE) {
        &DEFAULTS_NOT_INHERITED
    } else {
        &["environments"]
    };
    let mut problems = de::from_layer_partial::<RegionConfig>(&src.root, skip).problems;
    if let Some(envs) = src.root.get("environments").and_then(Node::as_map) {
        for overlay in envs.entries.values().filter(|e| e.value.as_map().is_some()) {
            problems.extend(de::from_layer_partial::<RegionConfig>(&overlay.value, &[]).problems);
        }
    }
    problems
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
                    if !Environment::NAMES.contains(&name.as_str()) {
                        let mut d =
                            Diagnostic::at(&e.key_loc, format!("unknown environment '{name}'"));
                        d.hint = Some(diag::suggest(name, Environment::NAMES, || {
                            "environments are development, staging and production".into()
                        }));
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

/// Runs every (name, text, expected problems) case through `problems` and reports every
/// mismatch at once: the harness of the message tests of `de.rs` and `validate.rs`.
#[cfg(test)]
fn check_cases<T: AsRef<str>>(
    cases: &[(&str, T, &[&str])],
    problems: impl Fn(&str) -> Vec<String>,
) {
    let mut failures = Vec::new();
    for (name, text, expected) in cases {
        let got = problems(text.as_ref());
        if got != *expected {
            failures.push(format!("{name}:\n  expected {expected:#?}\n  got {got:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[cfg(test)]
mod tests;
