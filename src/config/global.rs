//! Settings of the whole fleet, written in `_defaults.yaml` beside the region defaults:
//! the order of deploy waves, how many regions of a wave run at once, and what a failure does
//! to the regions that already succeeded.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::diag::{suggest, Diagnostic};
use super::node::Node;

/// The keys of `_defaults.yaml` that are fleet settings, not region defaults.
pub const KEYS: [&str; 3] = ["waves", "max_parallel", "on_failure"];

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Global {
    /// Groups of regions deployed in parallel; waves run in order and a failure stops later
    /// waves. A canary region usually goes first: `[[cuba], [mexico, colombia], [usa, spain]]`.
    pub waves: Vec<Vec<String>>,
    /// At most this many regions of one wave deploy at the same time.
    pub max_parallel: u32,
    /// What happens to regions that already succeeded when one fails.
    pub on_failure: OnFailure,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            waves: Vec::new(),
            max_parallel: 5,
            on_failure: OnFailure::Halt,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop: later waves do not start; regions that succeeded keep the new release.
    #[default]
    Halt,
    /// Also roll back the regions of the failed wave that succeeded.
    RollbackWave,
    /// Roll back every region this run deployed.
    RollbackAll,
}

/// Reads the fleet settings from the defaults file's tree.
pub fn from_defaults(defaults: Option<&Node>, regions: &[&str]) -> Result<Global, Vec<Diagnostic>> {
    let Some(root) = defaults else {
        return Ok(Global::default());
    };
    let mut node = root.clone();
    if let super::Value::Map(m) = &mut node.value {
        m.entries.retain(|k, _| KEYS.contains(&k.as_str()));
    }
    let global: Global = super::de::from_node(&node, "")?;
    let mut problems = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (w, wave) in global.waves.iter().enumerate() {
        for (i, name) in wave.iter().enumerate() {
            let loc = root
                .lookup(&format!("waves.{w}.{i}"))
                .map_or(root.loc.clone(), |n| n.loc.clone());
            if !regions.contains(&name.as_str()) {
                let mut d = Diagnostic::at(&loc, format!("waves: no region named '{name}'"));
                d.hint = Some(suggest(name, regions.iter().copied(), || {
                    format!("regions are: {}", regions.join(", "))
                }));
                problems.push(d);
            } else if seen.contains(&name.as_str()) {
                problems.push(
                    Diagnostic::at(
                        &loc,
                        format!("waves: region '{name}' is in more than one wave"),
                    )
                    .hint("each region deploys once per run"),
                );
            }
            seen.push(name);
        }
        if wave.is_empty() {
            let loc = root
                .lookup(&format!("waves.{w}"))
                .map_or(root.loc.clone(), |n| n.loc.clone());
            problems.push(
                Diagnostic::at(&loc, format!("waves: wave {} is empty", w + 1)).hint("remove it"),
            );
        }
    }
    if global.max_parallel == 0 {
        let loc = root
            .lookup("max_parallel")
            .map_or(root.loc.clone(), |n| n.loc.clone());
        problems.push(Diagnostic::at(
            &loc,
            "max_parallel: must be at least 1".to_string(),
        ));
    }
    if problems.is_empty() {
        Ok(global)
    } else {
        Err(problems)
    }
}

/// The waves of a run over `selected` regions: the configured waves in order (each keeping
/// only selected regions), then any selected region no wave names, one at a time. Pure.
pub fn plan_waves(selected: &[String], waves: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = waves
        .iter()
        .map(|w| {
            w.iter()
                .filter(|r| selected.contains(r))
                .cloned()
                .collect::<Vec<_>>()
        })
        .filter(|w| !w.is_empty())
        .collect();
    for r in selected {
        if !waves.iter().flatten().any(|x| x == r) {
            out.push(vec![r.clone()]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;
    use std::sync::Arc;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn waves_keep_their_order_and_only_selected_regions() {
        let waves = vec![
            s(&["cuba"]),
            s(&["mexico", "colombia"]),
            s(&["usa", "spain"]),
        ];
        let all = s(&["colombia", "cuba", "mexico", "spain", "usa"]);
        assert_eq!(plan_waves(&all, &waves), waves);
        assert_eq!(
            plan_waves(&s(&["spain", "mexico"]), &waves),
            vec![s(&["mexico"]), s(&["usa", "spain"])[1..].to_vec()]
        );
        assert_eq!(plan_waves(&s(&["a", "b"]), &[]), vec![s(&["a"]), s(&["b"])]);
    }

    #[test]
    fn unknown_and_repeated_regions_in_waves_are_errors() {
        let root = parse(
            &Arc::from("d.yaml"),
            "waves: [[cuba], [mexcio, cuba]]\nmax_parallel: 2\non_failure: rollback_wave\n",
        )
        .unwrap();
        let errs = from_defaults(Some(&root), &["cuba", "mexico"]).unwrap_err();
        let text: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            text,
            [
                "waves: no region named 'mexcio' at d.yaml:1:18 — did you mean 'mexico'?",
                "waves: region 'cuba' is in more than one wave at d.yaml:1:26 — each region deploys once per run",
            ]
        );
        let root = parse(
            &Arc::from("d.yaml"),
            "waves: [[cuba]]\non_failure: rollback_all\n",
        )
        .unwrap();
        let g = from_defaults(Some(&root), &["cuba"]).unwrap();
        assert_eq!(g.on_failure, OnFailure::RollbackAll);
        assert_eq!(g.max_parallel, 5);
    }
}
