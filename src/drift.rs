//! Drift: a difference between what the configuration says (at the version the region
//! serves) and what runs, whoever made it — a hand edit with `kubectl` or `docker`, a command
//! sent to HAProxy's Runtime API, or a region file changed since the last deploy.
//!
//! Targets gather what runs and compute their differences with pure functions
//! (`targets::kubernetes::fields`, `targets::docker::drift`); this is the one shape they
//! report in, for `diff --live`, `plan`, `status` and `deploy`. Values are never secret:
//! targets put `<secret:…>`, `<redacted>` or a short hash where a secret value would be.

use serde::Serialize;
use serde_json::Value;

/// One difference between what is wanted and what runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    /// Where: `Deployment/packfy-web: spec.template.spec.containers[web].env[GREETING]`,
    /// `web: container packfy-…-r1-1`, `haproxy packfy_t1/usa-production-web-r1-1: weight`.
    pub path: String,
    /// What the configuration (or the release) wants there; `None`: nothing at all.
    pub wanted: Option<Value>,
    /// What runs there; `None`: nothing at all.
    pub live: Option<Value>,
    /// Who changed it, where the target knows (Kubernetes: the field manager).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
    /// When, where the target knows (Kubernetes: the managedFields entry's time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<String>,
}

impl Drift {
    pub fn new(path: impl Into<String>, wanted: Option<Value>, live: Option<Value>) -> Drift {
        Drift {
            path: path.into(),
            wanted,
            live,
            changed_by: None,
            changed_at: None,
        }
    }

    pub fn by(mut self, manager: Option<&str>, time: Option<&str>) -> Drift {
        self.changed_by = manager.map(str::to_string);
        self.changed_at = time.map(str::to_string);
        self
    }

    /// `path: wanted W, live L (changed by M at T)`, one line.
    pub fn describe(&self) -> String {
        let show = |v: &Option<Value>| match v {
            None => "(none)".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        let who = match (&self.changed_by, &self.changed_at) {
            (Some(m), Some(t)) => format!(" (changed by {m} at {t})"),
            (Some(m), None) => format!(" (changed by {m})"),
            _ => String::new(),
        };
        format!(
            "{}: wanted {}, live {}{who}",
            self.path,
            show(&self.wanted),
            show(&self.live)
        )
    }
}

impl Drift {
    /// The difference as unified-diff lines, one per leaf: `-PATH: live` then `+PATH: wanted`
    /// (values as JSON), the first naming who changed it. An object or list value shows as
    /// its leaves (`-HorizontalPodAutoscaler/web: spec.maxReplicas: 10`).
    pub fn lines(&self) -> Vec<String> {
        let who = match (&self.changed_by, &self.changed_at) {
            (Some(m), Some(t)) => format!("  (changed by {m} at {t})"),
            (Some(m), None) => format!("  (changed by {m})"),
            _ => String::new(),
        };
        let mut out = Vec::new();
        for (sign, v) in [("-", &self.live), ("+", &self.wanted)] {
            let Some(v) = v else { continue };
            let mut leaves = Vec::new();
            leaves_of(v, String::new(), &mut leaves);
            for (sub, x) in leaves {
                let path = match (sub.is_empty(), self.path.contains(": ")) {
                    (true, _) => self.path.clone(),
                    (false, false) => format!("{}: {}", self.path, sub.trim_start_matches('.')),
                    (false, true) => format!("{}{sub}", self.path),
                };
                out.push(format!("{sign}{path}: {x}"));
            }
        }
        if let Some(first) = out.first_mut() {
            first.push_str(&who);
        }
        out
    }
}

/// `(.a.b[0], value)` leaves of a JSON value, keys in order.
fn leaves_of(v: &Value, prefix: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                leaves_of(x, format!("{prefix}.{k}"), out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, x) in a.iter().enumerate() {
                leaves_of(x, format!("{prefix}[{i}]"), out);
            }
        }
        other => out.push((prefix, other.to_string())),
    }
}

/// Replaces, in every value of `list`, any string holding one of `secrets` (resolved secret
/// values) with its hash: a safety net for values a hand edit copied a secret into.
pub fn mask(list: &mut [Drift], secrets: &[String]) {
    fn walk(v: &mut Value, secrets: &[String]) {
        match v {
            Value::String(s)
                if secrets
                    .iter()
                    .any(|x| !x.is_empty() && s.contains(x.as_str())) =>
            {
                *s = hash_of(s);
            }
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, secrets)),
            Value::Object(m) => m.values_mut().for_each(|x| walk(x, secrets)),
            _ => {}
        }
    }
    for d in list {
        for v in [&mut d.wanted, &mut d.live].into_iter().flatten() {
            walk(v, secrets);
        }
    }
}

/// `drift: N difference(s)` for `status`, `plan` and the deploy summary.
pub fn count(n: usize) -> String {
    format!("{n} difference{}", if n == 1 { "" } else { "s" })
}

/// A short hash of a value that must not be shown (a secret's, or any environment value
/// compared by hash): `sha256:1a2b3c4d`.
pub fn hash_of(value: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "sha256:{}",
        hex::encode(&Sha256::digest(value.as_bytes())[..4])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn describe_names_both_sides_and_who() {
        let d = Drift::new(
            "Deployment/web: spec.replicas",
            Some(json!(2)),
            Some(json!(3)),
        )
        .by(Some("kubectl"), None);
        assert_eq!(
            d.describe(),
            "Deployment/web: spec.replicas: wanted 2, live 3 (changed by kubectl)"
        );
        let gone = Drift::new("web: container x", None, Some(json!("running")));
        assert_eq!(
            gone.describe(),
            "web: container x: wanted (none), live running"
        );
        let j = serde_json::to_value(&gone).unwrap();
        assert_eq!(
            j,
            json!({"path": "web: container x", "wanted": null, "live": "running"})
        );
    }

    #[test]
    fn lines_show_leaves_like_a_unified_diff() {
        let d = Drift::new(
            "Deployment/web: spec.template.spec.containers[0].image",
            Some(json!("sample:v3")),
            Some(json!("sample:v2")),
        );
        assert_eq!(
            d.lines(),
            [
                "-Deployment/web: spec.template.spec.containers[0].image: \"sample:v2\"",
                "+Deployment/web: spec.template.spec.containers[0].image: \"sample:v3\"",
            ]
        );
        let gone = Drift::new(
            "HorizontalPodAutoscaler/web",
            None,
            Some(json!({"spec": {"maxReplicas": 10, "metrics": [{"type": "Resource"}]}})),
        )
        .by(Some("kubectl-edit"), None);
        assert_eq!(
            gone.lines(),
            [
                "-HorizontalPodAutoscaler/web: spec.maxReplicas: 10  (changed by kubectl-edit)",
                "-HorizontalPodAutoscaler/web: spec.metrics[0].type: \"Resource\"",
            ]
        );
        let entry = Drift::new(
            "Deployment/web: spec.env[G]",
            None,
            Some(json!({"name": "G", "value": "x"})),
        );
        assert_eq!(
            entry.lines(),
            [
                "-Deployment/web: spec.env[G].name: \"G\"",
                "-Deployment/web: spec.env[G].value: \"x\""
            ]
        );
    }

    #[test]
    fn values_holding_a_secret_are_hashed() {
        let mut list = [Drift::new(
            "Deployment/web: spec.env[X]",
            None,
            Some(json!({"name": "X", "value": "token=hunter2"})),
        )];
        mask(&mut list, &["hunter2".to_string(), String::new()]);
        let text = serde_json::to_string(&list[0]).unwrap();
        assert!(
            !text.contains("hunter2") && text.contains("sha256:"),
            "{text}"
        );
        assert_eq!(list[0].live.as_ref().unwrap()["name"], "X");
    }

    #[test]
    fn hashes_never_spell_the_value() {
        let h = hash_of("hunter2");
        assert!(h.starts_with("sha256:") && !h.contains("hunter2"));
        assert_eq!(h, hash_of("hunter2"));
        assert_ne!(h, hash_of("hunter3"));
        assert_eq!(count(1), "1 difference");
        assert_eq!(count(2), "2 differences");
    }
}
