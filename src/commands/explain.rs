//! `explain REGION KEY`: a value, the file:line that set it, and the values it overrode.

use crate::config::diag::did_you_mean;
use crate::config::{Node, Value};
use crate::error::{Error, ExitCode, Result};

use super::diff::flatten;
use crate::context::Ctx;

pub fn run(ctx: &Ctx, region: &str, key: &str) -> Result<ExitCode> {
    let regions = ctx.load()?;
    let eff = ctx.effective(&regions, region)?;
    let env = ctx.env_or_default();
    let key = key.trim_matches('.');

    if let Some(node) = eff.tree.lookup(key) {
        let leaves: Vec<_> = match &node.value {
            Value::Map(_) | Value::Seq(_) if node.secret_ref().is_none() => flatten(node),
            _ => vec![],
        };
        if ctx.ui.json() {
            ctx.ui.out_json(&serde_json::json!({
                "region": region,
                "environment": env.as_str(),
                "key": key,
                "value": node.to_json(),
                "origin": node.loc.to_string(),
                "overrides": node.overridden.iter().map(|o| serde_json::json!({"value": o.to_json(), "origin": o.loc.to_string()})).collect::<Vec<_>>(),
                "leaves": leaves.iter().map(|l| serde_json::json!({"key": join(key, &l.path), "value": l.json, "origin": l.origin})).collect::<Vec<_>>(),
            }));
            return Ok(ExitCode::Success);
        }
        ctx.ui
            .out(format!("{key} = {}    ({region}, {env})", node.display()));
        ctx.ui.out(format!("  set at {}", node.loc));
        for old in node.overridden.iter().rev() {
            ctx.ui
                .out(format!("  overrides {} from {}", old.display(), old.loc));
        }
        for leaf in &leaves {
            ctx.ui.out(format!(
                "  {} = {}    ({})",
                join(key, &leaf.path),
                leaf.value,
                leaf.origin
            ));
        }
        return Ok(ExitCode::Success);
    }

    // Removed by an explicit null?
    let (parent_path, last) = match key.rsplit_once('.') {
        Some((p, l)) => (p, l),
        None => ("", key),
    };
    let parent = eff.tree.lookup(parent_path);
    if let Some(m) = parent.and_then(Node::as_map) {
        if let Some((_, loc, old)) = m.removed.iter().rev().find(|(k, ..)| k == last) {
            let msg = format!(
                "{key} is not set in {region} ({env}): removed by null at {loc} (it was {} from {})",
                old.display(),
                old.loc
            );
            if ctx.ui.json() {
                ctx.ui.out_json(&serde_json::json!({"region": region, "environment": env.as_str(), "key": key, "value": null, "removed_at": loc.to_string(), "removed_value": old.to_json(), "removed_origin": old.loc.to_string()}));
            } else {
                ctx.ui.out(msg);
            }
            return Ok(ExitCode::Success);
        }
    }

    // A built-in default, not written in any file?
    if let Ok(cfg) = &eff.config {
        let typed = serde_json::to_value(cfg).map_err(anyhow::Error::from)?;
        let pointer = format!("/{}", key.replace('.', "/"));
        if let Some(v) = typed.pointer(&pointer) {
            let shown = if key.contains(".env.") && v.get("secret").is_some() {
                serde_json::Value::String(format!(
                    "<secret:{}>",
                    v["secret"].as_str().unwrap_or("")
                ))
            } else {
                v.clone()
            };
            if ctx.ui.json() {
                ctx.ui.out_json(&serde_json::json!({"region": region, "environment": env.as_str(), "key": key, "value": shown, "origin": "built-in default"}));
            } else {
                ctx.ui.out(format!("{key} = {shown}    ({region}, {env})"));
                ctx.ui.out("  built-in default (no region file sets it)");
            }
            return Ok(ExitCode::Success);
        }
    }

    let siblings: Vec<String> = match parent.map(|p| &p.value) {
        Some(Value::Map(m)) => m.entries.keys().cloned().collect(),
        _ => vec![],
    };
    let hint = match did_you_mean(last, siblings.iter().map(String::as_str)) {
        Some(s) => format!("did you mean '{}'?", join(parent_path, s)),
        None if !siblings.is_empty() => format!(
            "keys under {}: {}",
            if parent_path.is_empty() {
                "the top level"
            } else {
                parent_path
            },
            siblings.join(", ")
        ),
        None => "see `packfy-deploy schema` for the keys a region file may have".into(),
    };
    Err(Error::usage_hint(
        format!("{key} is not set in {region} ({env})"),
        hint,
    ))
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}.{b}"),
    }
}
