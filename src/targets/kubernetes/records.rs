//! Release records in the region's namespace, as Helm keeps its releases: one Secret per
//! release (type `packfy.io/release.v1`), its `release` key the gzip-compressed JSON of the
//! record — the release itself, what it applied and the backup of what was live before it.
//! Labels make them listable with `kubectl get secrets -l packfy.io/record=release`.
//!
//! A record never holds a secret value: Secrets the release applies are stored redacted (the
//! record is a Secret only so that RBAC treats it like one).

use std::collections::BTreeMap;
use std::io::{Read, Write};

use anyhow::{anyhow, Context};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::{Deserialize, Serialize};

use super::objects::Object;
use crate::release::Release;

pub const TYPE: &str = "packfy.io/release.v1";
const KEY: &str = "release";
const MANAGER: &str = "packfy-deploy";

/// One release as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub release: Release,
    /// The objects this release applied (Secrets redacted): a rollback to it applies them.
    pub applied: Vec<Object>,
    /// The backup: every object the release touched, as it was live just before.
    pub before: Vec<Prior>,
    /// A canary's state (`kubernetes::canary`), while it runs or waits and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<serde_json::Value>,
}

impl Record {
    /// The record of a release, its target state (`applied`, `before`) as fields of its own.
    pub fn of(r: &Release) -> Record {
        let mut release = r.clone();
        release.state.clear();
        Record {
            release,
            applied: r.state_of("applied").unwrap_or_default(),
            before: r.state_of("before").unwrap_or_default(),
            canary: r.state.get(super::canary::STATE).cloned(),
        }
    }

    /// The release, carrying `applied` and `before` as its target state.
    pub fn into_release(self) -> Release {
        let mut r = self.release;
        r.set_state("applied", &self.applied);
        r.set_state("before", &self.before);
        if let Some(c) = &self.canary {
            r.set_state(super::canary::STATE, c);
        }
        r
    }
}

/// One object before a release changed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prior {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// The live object, stripped of server-written fields (Secrets redacted); None when it
    /// did not exist, so restoring deletes it.
    pub live: Option<Object>,
}

impl Prior {
    /// `o` as it was: `live` (None when it did not exist), Secret values redacted.
    pub fn of(o: &Object, live: Option<&Object>) -> Prior {
        Prior {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            name: o.name.clone(),
            live: live.map(Object::redacted),
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// The object this is the backup of, without a manifest (enough to delete it).
    pub fn address(&self) -> Object {
        Object {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            manifest: serde_json::Value::Null,
        }
    }
}

/// The Secret's name: `packfy.release.<app>.<env>.r<N>`.
pub fn name(app: &str, env: &str, id: &str) -> String {
    format!("packfy.release.{app}.{env}.{id}")
}

fn selector(app: &str, env: &str) -> String {
    format!("packfy.io/record=release,app.kubernetes.io/name={app},packfy.io/environment={env}")
}

pub fn encode(rec: &Record) -> anyhow::Result<Vec<u8>> {
    // The record leaves the process: secret values quoted in errors are masked.
    let mut value = serde_json::to_value(rec)?;
    crate::secrets::mask_json(&mut value);
    let json = serde_json::to_vec(&value)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&json)?;
    Ok(gz.finish()?)
}

pub fn decode(bytes: &[u8]) -> anyhow::Result<Record> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut json)?;
    Ok(serde_json::from_slice(&json)?)
}

/// Writes (creates or replaces) the record of `rec.release`.
pub async fn save(api: &Api<Secret>, app: &str, rec: &Record) -> anyhow::Result<()> {
    let r = &rec.release;
    let name = name(app, &r.environment, &r.id);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([
                ("packfy.io/record".to_string(), "release".to_string()),
                ("app.kubernetes.io/name".to_string(), app.to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    MANAGER.to_string(),
                ),
                ("packfy.io/environment".to_string(), r.environment.clone()),
                ("packfy.io/release".to_string(), r.id.clone()),
                (
                    "packfy.io/outcome".to_string(),
                    r.outcome.as_str().to_string(),
                ),
            ])),
            annotations: Some(BTreeMap::from([
                ("packfy.io/version".to_string(), r.version.clone()),
                ("packfy.io/actor".to_string(), r.actor.clone()),
            ])),
            ..Default::default()
        },
        type_: Some(TYPE.into()),
        data: Some(BTreeMap::from([(
            KEY.to_string(),
            ByteString(encode(rec)?),
        )])),
        ..Default::default()
    };
    let mut value = serde_json::to_value(&secret)?;
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
    .with_context(|| format!("cannot write the release record {name}"))?;
    Ok(())
}

/// Every record of an app and environment, oldest first.
pub async fn list(api: &Api<Secret>, app: &str, env: &str) -> anyhow::Result<Vec<Record>> {
    let found = api
        .list(&ListParams::default().labels(&selector(app, env)))
        .await
        .context("cannot list the release records")?;
    let mut out = Vec::new();
    for s in found.items {
        let n = s.metadata.name.clone().unwrap_or_default();
        if s.type_.as_deref() != Some(TYPE) {
            continue;
        }
        let bytes = s
            .data
            .as_ref()
            .and_then(|d| d.get(KEY))
            .ok_or_else(|| anyhow!("release record {n} has no `{KEY}` key"))?;
        let rec = decode(&bytes.0).with_context(|| format!("release record {n} is unreadable"))?;
        out.push(rec);
    }
    out.sort_by_key(|r| r.release.number);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::{Kind, Outcome};
    use chrono::Utc;

    fn record() -> Record {
        Record {
            release: Release {
                id: "r3".into(),
                number: 3,
                region: "usa".into(),
                environment: "production".into(),
                kind: Kind::Deploy,
                version: "2.0".into(),
                outcome: Outcome::InProgress,
                previous: Some("r2".into()),
                target: None,
                actor: "ana".into(),
                command: "packfy-deploy deploy".into(),
                git_commit: None,
                started_at: Utc::now(),
                finished_at: None,
                services: Vec::new(),
                error: None,
                runner: "h:1".into(),
                state: Default::default(),
                backups: Vec::new(),
                release_steps: Vec::new(),
            },
            applied: vec![Object {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "web-env".into(),
                manifest: serde_json::json!({"data": {"A": "1".repeat(4000)}}),
            }],
            before: vec![Prior {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "web-env".into(),
                live: None,
            }],
            canary: None,
        }
    }

    #[test]
    fn records_round_trip_compressed() {
        let rec = record();
        let bytes = encode(&rec).unwrap();
        assert!(bytes.len() < 1000, "compressed: {} bytes", bytes.len());
        let back = decode(&bytes).unwrap();
        assert_eq!(back.release, rec.release);
        assert_eq!(back.applied, rec.applied);
        assert_eq!(back.before[0].key(), "ConfigMap/web-env");
        assert!(back.before[0].live.is_none());
    }

    #[test]
    fn names_are_valid_secret_names() {
        let n = name("packfy", "production", "r12");
        assert_eq!(n, "packfy.release.packfy.production.r12");
        assert!(n.len() <= 253);
        assert!(n
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'));
    }
}
