//! Drift inside the objects packfy-deploy owns, read from their `metadata.managedFields`.
//!
//! Server-side apply keeps fields another field manager set (`kubectl set env`,
//! `kubectl scale`, `kubectl annotate`, `kubectl edit`/`patch`): our dry run compares only
//! what our manifest says, so those stay invisible there. What the API server records about
//! ownership tells them apart (checked against kube-apiserver 1.36 of the test environment):
//! - an `Update` (kubectl set/scale/annotate/patch/edit) takes the fields it changed away from
//!   every other manager: a value we applied and someone changed is no longer in our set;
//! - a field someone added that we never set is in their set only;
//! - `kubectl scale` records `spec.replicas` under manager `kubectl`, subresource `scale`,
//!   without a time; the HPA does the same as `kube-controller-manager`;
//! - the deployment controller's annotations (`deployment.kubernetes.io/revision`) and the
//!   whole status belong to `kube-controller-manager` (subresource `status`).
//!
//! So: every field owned by a manager that is not ours, not a controller and not writing
//! status, which our own set does not also hold, is drift. Pure: no API calls here.

use serde_json::{Map, Value};

use super::MANAGER;
use crate::drift::{hash_of, Drift};

/// Managers whose fields are the cluster's own work, never drift.
const CONTROLLERS: [&str; 4] = [
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-apiserver",
];

/// A field another manager owns and we do not: its `fieldsV1` path (`f:spec`,
/// `k:{"name":"web"}`, …), who and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Foreign {
    pub path: Vec<String>,
    pub manager: String,
    pub time: Option<String>,
}

/// Where a `fieldsV1` path is in an object: a JSON pointer (for a patch), a readable path
/// (`spec.template.spec.containers[web].env[GREETING]`) and the value there.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub pointer: String,
    pub shown: String,
    /// The path as `objects::flatten` writes it (`spec.template.spec.containers[0].env[1]`).
    pub flat: String,
    pub value: Value,
}

/// One field of a live object that is drift, and the JSON pointer to remove it when the
/// configuration does not set it (a reset removes it; what we set, a forced apply takes back).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDrift {
    pub drift: Drift,
    pub remove: Option<String>,
    /// Where it is, as `objects::flatten` writes paths, to leave it out of [`differences`].
    pub flat: String,
}

/// The fields of `managed` (a live object's `metadata.managedFields`) owned by other managers
/// and not by us. `has_hpa`: an HPA scales this object, so `spec.replicas` is nobody's drift.
pub fn foreign(managed: &[Value], has_hpa: bool) -> Vec<Foreign> {
    let mut ours = Map::new();
    for e in managed.iter().filter(|e| e["manager"] == MANAGER) {
        if let Some(Value::Object(f)) = e.get("fieldsV1") {
            merge(&mut ours, f);
        }
    }
    let mut out = Vec::new();
    for e in managed {
        let manager = e["manager"].as_str().unwrap_or_default();
        if manager == MANAGER
            || CONTROLLERS.contains(&manager)
            || e["subresource"].as_str() == Some("status")
        {
            continue;
        }
        let Some(Value::Object(f)) = e.get("fieldsV1") else {
            continue;
        };
        let mut paths = Vec::new();
        walk(f, Some(&ours), &mut Vec::new(), &mut paths);
        for path in paths {
            if has_hpa && path == ["f:spec", "f:replicas"] {
                continue;
            }
            out.push(Foreign {
                path,
                manager: manager.to_string(),
                time: e["time"].as_str().map(str::to_string),
            });
        }
    }
    out
}

fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A node every part of which the manager owns alone: itself (`.`) or a leaf.
fn owned_whole(node: &Map<String, Value>) -> bool {
    node.is_empty() || node.contains_key(".")
}

fn walk(
    theirs: &Map<String, Value>,
    ours: Option<&Map<String, Value>>,
    path: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    for (k, child) in theirs.iter().filter(|(k, _)| k.as_str() != ".") {
        let Value::Object(child) = child else {
            continue;
        };
        path.push(k.clone());
        match ours.and_then(|o| o.get(k)).and_then(Value::as_object) {
            // We hold it too: shared ownership of a value both set (an apply), not drift.
            Some(_) if owned_whole(child) && child.len() <= 1 => {}
            Some(o) => walk(child, Some(o), path, out),
            None if owned_whole(child) => out.push(path.clone()),
            None => walk(child, None, path, out),
        }
        path.pop();
    }
}

/// Finds a `fieldsV1` path in `v`; `None` when it is not there.
pub fn locate(v: &Value, path: &[String]) -> Option<Located> {
    let (mut pointer, mut shown, mut flat) = (String::new(), String::new(), String::new());
    let mut at = v;
    for seg in path {
        if let Some(name) = seg.strip_prefix("f:") {
            at = at.get(name)?;
            pointer.push('/');
            pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
            if !shown.is_empty() {
                shown.push('.');
                flat.push('.');
            }
            shown.push_str(name);
            flat.push_str(name);
            continue;
        }
        let items = at.as_array()?;
        let (i, label) = if let Some(keys) = seg.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(keys).ok()?;
            let i = items
                .iter()
                .position(|x| keys.iter().all(|(k, want)| x.get(k) == Some(want)))?;
            let label = if keys.len() == 1 {
                keys.values().map(plain).collect::<String>()
            } else {
                keys.iter()
                    .map(|(k, x)| format!("{k}={}", plain(x)))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            (i, label)
        } else if let Some(val) = seg.strip_prefix("v:") {
            let want: Value = serde_json::from_str(val).ok()?;
            let i = items.iter().position(|x| *x == want)?;
            (i, plain(&want))
        } else if let Some(n) = seg.strip_prefix("i:") {
            let i: usize = n.parse().ok()?;
            (i, i.to_string())
        } else {
            return None;
        };
        at = items.get(i)?;
        pointer.push_str(&format!("/{i}"));
        shown.push_str(&format!("[{label}]"));
        flat.push_str(&format!("[{i}]"));
    }
    Some(Located {
        pointer,
        shown,
        flat,
        value: at.clone(),
    })
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The drift of one live object (`key`: `Deployment/packfy-web`) against what we apply
/// (`desired`, for the wanted values). `secret_env`: names of environment variables whose
/// values are secrets: shown as a hash, like a Secret's data as `<redacted>`.
pub fn drift(
    key: &str,
    live: &Value,
    desired: Option<&Value>,
    has_hpa: bool,
    secret_env: &[String],
) -> Vec<FieldDrift> {
    let managed: Vec<Value> = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_secret = live["kind"] == "Secret";
    let hide = |v: Value, shown: &str| -> Value {
        if is_secret && (shown.starts_with("data") || shown.starts_with("stringData")) {
            return redact(v);
        }
        mask_env(v, secret_env)
    };
    let mut out = Vec::new();
    for f in foreign(&managed, has_hpa) {
        let Some(at) = locate(live, &f.path) else {
            continue;
        };
        let wanted = desired.and_then(|d| locate(d, &f.path));
        let remove = wanted.is_none().then(|| at.pointer.clone());
        let path = format!("{key}: {}", at.shown);
        out.push(FieldDrift {
            flat: at.flat.clone(),
            drift: Drift::new(
                path,
                wanted.map(|w| hide(w.value, &at.shown)),
                Some(hide(at.value, &at.shown)),
            )
            .by(Some(&f.manager), f.time.as_deref()),
            remove,
        });
    }
    out
}

fn redact(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, _)| (k, Value::String("<redacted>".into())))
                .collect(),
        ),
        _ => Value::String("<redacted>".into()),
    }
}

/// An env entry (or a list, or a container) with the value of a secret variable hashed.
fn mask_env(mut v: Value, secret_env: &[String]) -> Value {
    match &mut v {
        Value::Object(m) => {
            let secret = m
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| secret_env.iter().any(|s| s == n));
            for (k, x) in m.iter_mut() {
                if secret && k == "value" {
                    *x = Value::String(hash_of(&plain(x)));
                } else {
                    *x = mask_env(x.take(), secret_env);
                }
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                *x = mask_env(x.take(), secret_env);
            }
        }
        _ => {}
    }
    v
}

/// Leaves (`spec.replicas`, with the value before and after) where two stripped views of
/// an object differ — what our apply would change — leaving out those under `covered`
/// (already reported as another manager's field). Pass Secrets redacted.
pub fn differences(
    before: &Value,
    after: &Value,
    covered: &[String],
) -> Vec<(String, Option<Value>, Option<Value>)> {
    let (mut x, mut y) = (Default::default(), Default::default());
    super::objects::flatten("", before, &mut x);
    super::objects::flatten("", after, &mut y);
    let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
    let value =
        |s: Option<&String>| s.map(|s| serde_json::from_str(s).unwrap_or(Value::String(s.clone())));
    keys.into_iter()
        .filter(|k| x.get(*k) != y.get(*k))
        .filter(|k| {
            !covered.iter().any(|c| {
                *k == c || k.starts_with(&format!("{c}.")) || k.starts_with(&format!("{c}["))
            })
        })
        .map(|k| (k.clone(), value(x.get(k)), value(y.get(k))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `metadata.managedFields` as kube-apiserver 1.36 wrote it after our apply and then
    /// `kubectl scale`, `kubectl set env`, `kubectl annotate` and `kubectl patch` (image).
    fn live() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "ns",
                "labels": {"a": "b"},
                "annotations": {"deployment.kubernetes.io/revision": "3", "team": "ops"},
                "managedFields": [
                    {"manager": "packfy-deploy", "operation": "Apply", "time": "2026-12-01T23:35:54Z",
                     "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:selector": {}, "f:template": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:env": {"k:{\"name\":\"TOKEN\"}": {".": {}, "f:name": {}, "f:valueFrom": {"f:secretKeyRef": {}}}}, "f:envFrom": {}, "f:name": {}}}}}}}},
                    {"manager": "kubectl", "operation": "Update", "subresource": "scale",
                     "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                    {"manager": "kubectl-set", "operation": "Update", "time": "2026-12-01T23:35:54Z",
                     "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:env": {"k:{\"name\":\"GREETING\"}": {".": {}, "f:name": {}, "f:value": {}}}}}}}}}},
                    {"manager": "kubectl-annotate", "operation": "Update", "time": "2026-12-01T23:35:55Z",
                     "fieldsV1": {"f:metadata": {"f:annotations": {"f:team": {}}}}},
                    {"manager": "kubectl-patch", "operation": "Update", "time": "2026-12-01T23:35:55Z",
                     "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:image": {}}}}}}}},
                    {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status", "time": "2026-12-01T23:35:57Z",
                     "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:deployment.kubernetes.io/revision": {}}}, "f:status": {"f:replicas": {}}}}
                ]
            },
            "spec": {
                "replicas": 3,
                "template": {"spec": {"containers": [{
                    "name": "web", "image": "sample:hand",
                    "env": [
                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "TOKEN"}}},
                        {"name": "GREETING", "value": "changed-by-hand"}
                    ]
                }]}}
            }
        })
    }

    fn desired() -> Value {
        json!({
            "metadata": {"labels": {"a": "b"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "sample:v1"}]}}}
        })
    }

    fn shown(list: &[FieldDrift]) -> Vec<String> {
        list.iter().map(|f| f.drift.describe()).collect()
    }

    #[test]
    fn every_hand_edit_is_drift_naming_its_manager() {
        let got = drift("Deployment/web", &live(), Some(&desired()), false, &[]);
        assert_eq!(
            shown(&got),
            [
                "Deployment/web: spec.replicas: wanted 2, live 3 (changed by kubectl)",
                "Deployment/web: spec.template.spec.containers[web].env[GREETING]: wanted (none), live {\"name\":\"GREETING\",\"value\":\"changed-by-hand\"} (changed by kubectl-set at 2026-12-01T23:35:54Z)",
                "Deployment/web: metadata.annotations.team: wanted (none), live ops (changed by kubectl-annotate at 2026-12-01T23:35:55Z)",
                "Deployment/web: spec.template.spec.containers[web].image: wanted sample:v1, live sample:hand (changed by kubectl-patch at 2026-12-01T23:35:55Z)",
            ]
        );
        // what we do not set is removed by a reset; what we set, our forced apply takes back
        let removes: Vec<Option<&str>> = got.iter().map(|f| f.remove.as_deref()).collect();
        assert_eq!(
            removes,
            [
                None,
                Some("/spec/template/spec/containers/0/env/1"),
                Some("/metadata/annotations/team"),
                None
            ]
        );
    }

    #[test]
    fn controllers_and_the_hpa_replicas_are_not_drift() {
        let mut v = live();
        let managed = v["metadata"]["managedFields"].as_array_mut().unwrap();
        managed.retain(|e| {
            e["manager"] == "packfy-deploy"
                || e["manager"] == "kube-controller-manager"
                || e["manager"] == "kubectl"
        });
        managed.push(json!({"manager": "kube-controller-manager", "operation": "Update", "subresource": "scale",
            "fieldsV1": {"f:spec": {"f:replicas": {}}}}));
        // only kubectl's replicas is left, and an HPA owns replicas
        assert_eq!(drift("Deployment/web", &v, Some(&desired()), true, &[]), []);
        assert_eq!(
            drift("Deployment/web", &v, Some(&desired()), false, &[]).len(),
            1
        );
    }

    #[test]
    fn fields_we_share_with_another_apply_are_not_drift() {
        let managed = vec![
            json!({"manager": "packfy-deploy", "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:a": {}}}}}),
            json!({"manager": "other-apply", "operation": "Apply", "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:a": {}, "f:b": {}}}}}),
        ];
        let got = foreign(&managed, false);
        assert_eq!(
            got,
            [Foreign {
                path: vec!["f:metadata".into(), "f:labels".into(), "f:b".into()],
                manager: "other-apply".into(),
                time: None
            }]
        );
    }

    #[test]
    fn secret_values_are_never_shown() {
        let mut v = live();
        v["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] = json!("hunter2");
        let got = drift(
            "Deployment/web",
            &v,
            Some(&desired()),
            false,
            &["GREETING".into()],
        );
        let text = format!("{:?}", shown(&got));
        assert!(
            !text.contains("hunter2") && text.contains("sha256:"),
            "{text}"
        );
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "managedFields": [
                {"manager": "kubectl-patch", "operation": "Update", "fieldsV1": {"f:data": {"f:TOKEN": {}}}}
            ]},
            "data": {"TOKEN": "aHVudGVyMg=="}
        });
        let got = drift("Secret/s", &secret, None, false, &[]);
        assert_eq!(
            shown(&got),
            ["Secret/s: data.TOKEN: wanted (none), live <redacted> (changed by kubectl-patch)"]
        );
    }

    #[test]
    fn located_paths_match_the_flattened_ones() {
        let v = live();
        let p: Vec<String> = [
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"web\"}",
            "f:env",
            "k:{\"name\":\"GREETING\"}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            locate(&v, &p).unwrap().flat,
            "spec.template.spec.containers[0].env[1]"
        );
        let before = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"env": [{"name": "G", "value": "x"}]}]}}}});
        let after = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"env": [{"name": "G", "value": "y"}]}]}}}});
        let paths = |d: Vec<(String, Option<Value>, Option<Value>)>| {
            d.into_iter().map(|x| x.0).collect::<Vec<_>>()
        };
        assert_eq!(
            paths(differences(&before, &after, &[])),
            [
                "spec.replicas",
                "spec.template.spec.containers[0].env[0].value"
            ]
        );
        assert_eq!(
            differences(&before, &after, &[])[0],
            ("spec.replicas".to_string(), Some(json!(3)), Some(json!(2)))
        );
        assert_eq!(
            paths(differences(
                &before,
                &after,
                &["spec.template.spec.containers[0].env[0]".into()]
            )),
            ["spec.replicas"]
        );
    }
}
