//! The objects a release manages: rendered manifests as API objects, what of a live object is
//! worth keeping or comparing, and the `kind/name: path: value` lines `diff --live` prints.
//!
//! Pure: no API calls here.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::api::{ApiResource, GroupVersionKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Annotations the API server or controllers write, never ours to compare or restore.
const NOISE_ANNOTATIONS: [&str; 2] = [
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// One object of a release, with what addresses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// The manifest (for a Secret: without its values, see [`Object::redacted`]).
    pub manifest: Value,
}

impl Object {
    /// `Deployment/packfy-web`
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    pub fn gvk(&self) -> GroupVersionKind {
        let (group, version) = match self.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version.as_str()),
        };
        GroupVersionKind::gvk(group, version, &self.kind)
    }

    pub fn resource(&self) -> ApiResource {
        ApiResource::from_gvk(&self.gvk())
    }

    pub fn is_secret(&self) -> bool {
        self.kind == "Secret" && self.api_version == "v1"
    }

    /// The object with a Secret's values replaced by nothing: what records, plans and output
    /// may hold. Other kinds come back unchanged.
    pub fn redacted(&self) -> Object {
        let mut o = self.clone();
        if o.is_secret() {
            redact_secret(&mut o.manifest);
        }
        o
    }

    /// This object as the API server returned it (`d`), stripped of what the server writes.
    pub fn with_server_view<T: Serialize>(&self, d: T) -> Result<Object, serde_json::Error> {
        Ok(Object {
            manifest: strip(&serde_json::to_value(d)?),
            ..self.clone()
        })
    }

    /// From an object as the API returns it.
    pub fn from_value(v: Value) -> Option<Object> {
        Some(Object {
            api_version: v.get("apiVersion")?.as_str()?.to_string(),
            kind: v.get("kind")?.as_str()?.to_string(),
            name: v.pointer("/metadata/name")?.as_str()?.to_string(),
            manifest: v,
        })
    }
}

/// Replaces a Secret's `data`/`stringData` values with `<redacted>`, keeping the keys.
pub fn redact_secret(v: &mut Value) {
    for field in ["data", "stringData"] {
        if let Some(Value::Object(m)) = v.get_mut(field) {
            for val in m.values_mut() {
                *val = Value::String("<redacted>".into());
            }
        }
    }
}

/// Parses rendered manifests (`(file, yaml)`) into objects in `namespace`. The YAML parser is
/// the region files' own: errors name the file, line and column.
pub fn parse_manifests(files: &[(String, String)], namespace: &str) -> Result<Vec<Object>, String> {
    let mut out = Vec::new();
    for (file, text) in files {
        let node = crate::config::yaml::parse(&Arc::from(file.as_str()), text)
            .map_err(|d| format!("{file}: {}", d.message))?;
        let mut v = node.to_json();
        if !v.is_object() {
            return Err(format!("{file}: a manifest must be a mapping"));
        }
        v["metadata"]["namespace"] = Value::String(namespace.into());
        let obj = Object::from_value(v).ok_or_else(|| {
            format!("{file}: a manifest needs apiVersion, kind and metadata.name")
        })?;
        out.push(obj);
    }
    Ok(out)
}

/// What of a live (or dry-run) object is ours to compare and to restore: no status, and no
/// metadata the server writes (uid, resourceVersion, generation, managedFields, timestamps,
/// controller annotations).
pub fn strip(v: &Value) -> Value {
    let mut out = v.clone();
    if let Some(m) = out.as_object_mut() {
        m.remove("status");
    }
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "labels" | "annotations"));
        if let Some(Value::Object(a)) = meta.get_mut("annotations") {
            a.retain(|k, _| !NOISE_ANNOTATIONS.contains(&k.as_str()));
            if a.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    // `creationTimestamp: null` on pod templates is serialisation noise.
    if let Some(Value::Object(m)) = out.pointer_mut("/spec/template/metadata") {
        m.remove("creationTimestamp");
    }
    out
}

/// `path: value` lines of a JSON value, sorted by path, for line diffs. Secret values are never
/// shown: pass redacted objects.
pub fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, x, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// An object as `Kind/name: path: value` lines (metadata name/namespace left out: the prefix
/// says them).
pub fn lines(obj: &Object) -> String {
    let mut flat = BTreeMap::new();
    let mut v = strip(&obj.manifest);
    if obj.is_secret() {
        redact_secret(&mut v);
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("name");
        meta.remove("namespace");
    }
    if let Some(m) = v.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    flatten("", &v, &mut flat);
    let key = obj.key();
    flat.iter()
        .map(|(k, x)| format!("{key}: {k}: {x}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "ns", "uid": "u", "resourceVersion": "7", "generation": 3,
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{"manager": "packfy-deploy"}],
                "labels": {"a": "b"},
                "annotations": {"deployment.kubernetes.io/revision": "4", "mine": "x"}
            },
            "spec": {"replicas": 2, "template": {"metadata": {"creationTimestamp": null, "labels": {"a": "b"}}}},
            "status": {"replicas": 2}
        })
    }

    #[test]
    fn strip_keeps_what_is_ours() {
        let s = strip(&deployment());
        assert_eq!(
            s,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "ns", "labels": {"a": "b"}, "annotations": {"mine": "x"}},
                "spec": {"replicas": 2, "template": {"metadata": {"labels": {"a": "b"}}}}
            })
        );
    }

    #[test]
    fn two_reads_of_one_object_strip_to_the_same() {
        let mut later = deployment();
        later["metadata"]["resourceVersion"] = json!("8");
        later["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("5");
        later["status"]["replicas"] = json!(3);
        assert_eq!(strip(&deployment()), strip(&later));
    }

    #[test]
    fn secret_values_never_reach_lines_or_records() {
        let secret = Object::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "ns"},
            "stringData": {"TOKEN": "hunter2"}, "data": {"B": "aHVudGVyMg=="}
        }))
        .unwrap();
        let shown = lines(&secret);
        assert!(
            !shown.contains("hunter2") && !shown.contains("aHVudGVy"),
            "{shown}"
        );
        assert!(
            shown.contains("Secret/s: stringData.TOKEN: \"<redacted>\""),
            "{shown}"
        );
        let rec = serde_json::to_string(&secret.redacted()).unwrap();
        assert!(
            !rec.contains("hunter2") && !rec.contains("aHVudGVy"),
            "{rec}"
        );
    }

    #[test]
    fn manifests_parse_with_their_namespace_and_errors_name_the_file() {
        let files = vec![(
            "web-configmap.yaml".to_string(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-env\ndata:\n  A: \"1\"\n"
                .to_string(),
        )];
        let objs = parse_manifests(&files, "packfy-usa").unwrap();
        assert_eq!(objs[0].key(), "ConfigMap/web-env");
        assert_eq!(objs[0].manifest["metadata"]["namespace"], "packfy-usa");
        assert_eq!(objs[0].resource().plural, "configmaps");
        let bad = vec![("x.yaml".to_string(), "kind: ConfigMap\n".to_string())];
        let err = parse_manifests(&bad, "ns").unwrap_err();
        assert!(err.starts_with("x.yaml:"), "{err}");
    }

    #[test]
    fn kinds_map_to_their_resources() {
        let hpa = Object {
            api_version: "autoscaling/v2".into(),
            kind: "HorizontalPodAutoscaler".into(),
            name: "x".into(),
            manifest: Value::Null,
        };
        let ar = hpa.resource();
        assert_eq!(
            (ar.group.as_str(), ar.version.as_str()),
            ("autoscaling", "v2")
        );
        assert_eq!(ar.plural, "horizontalpodautoscalers");
    }
}
