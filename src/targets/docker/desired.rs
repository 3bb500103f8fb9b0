//! What a release should run, from the typed configuration: images, resolved environment,
//! and a hash that tells whether a running container already is what is wanted.
//!
//! Secret references are resolved here and only here, when a deploy needs them. The resolved
//! values go into the container specs and nowhere else: records, plans and output carry the
//! reference (`<secret:env:NAME>`).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::config::model::{EnvValue, RegionConfig, Service};
use crate::release::ServiceRecord;

/// One service as the new release wants it.
#[derive(Debug, Clone)]
pub struct Desired {
    pub name: String,
    pub image: String,
    pub image_id: String,
    /// `sha256:…` when the image was pushed for this deploy (pinned in the record).
    pub digest: Option<String>,
    pub replicas: u32,
    pub container_port: Option<u16>,
    /// `KEY=value` with secrets resolved (never printed).
    pub env: Vec<String>,
    /// Secrets masked, for records and plans.
    pub env_shown: BTreeMap<String, String>,
    pub secret_refs: BTreeMap<String, String>,
    pub command: Option<Vec<String>>,
    pub spec_hash: String,
    pub service: Service,
}

use crate::secrets::resolve as resolve_secret;
pub use crate::secrets::SecretError;

/// The environment every container gets, before the service's own.
fn platform_env(
    region: &str,
    env: &str,
    version: &str,
    cfg: &RegionConfig,
) -> Vec<(String, String)> {
    let mut v = vec![
        ("PACKFY_REGION".to_string(), region.to_string()),
        ("PACKFY_ENVIRONMENT".to_string(), env.to_string()),
        ("APP_VERSION".to_string(), version.to_string()),
    ];
    if let Some(c) = &cfg.currency {
        v.push(("PACKFY_CURRENCY".into(), c.clone()));
    }
    if let Some(l) = &cfg.locale {
        v.push(("PACKFY_LOCALE".into(), l.clone()));
    }
    v
}

/// Builds the desired state of one service. `image_id` is what `image` resolved to on the engine.
#[allow(clippy::too_many_arguments)]
pub fn desired(
    region: &str,
    env: &str,
    version: &str,
    cfg: &RegionConfig,
    name: &str,
    svc: &Service,
    image: &str,
    image_id: &str,
) -> Result<Desired, SecretError> {
    let mut resolved = Vec::new();
    let mut shown = BTreeMap::new();
    let mut refs = BTreeMap::new();
    for (k, v) in platform_env(region, env, version, cfg) {
        if !svc.env.contains_key(&k) {
            resolved.push(format!("{k}={v}"));
            shown.insert(k, v);
        }
    }
    for (k, v) in &svc.env {
        match v {
            EnvValue::Plain(s) => {
                resolved.push(format!("{k}={s}"));
                shown.insert(k.clone(), s.clone());
            }
            EnvValue::Secret { secret } => {
                let value = resolve_secret(&secret.0).map_err(|why| SecretError {
                    service: name.into(),
                    var: k.clone(),
                    reference: secret.0.clone(),
                    why,
                })?;
                resolved.push(format!("{k}={value}"));
                shown.insert(k.clone(), format!("<secret:{}>", secret.0));
                refs.insert(k.clone(), secret.0.clone());
            }
        }
    }
    let container_port = svc.ports.first().map(|p| p.container);
    // The hash covers what defines a container; secret values enter only as a digest so that a
    // rotated secret rolls the containers without the value ever being stored.
    let mut h = Sha256::new();
    h.update(image_id.as_bytes());
    for e in &resolved {
        h.update(b"\0env\0");
        h.update(e.as_bytes());
    }
    h.update(
        format!(
            "{container_port:?}{:?}{:?}{:?}",
            svc.command, svc.resources.limits.cpu, svc.resources.limits.memory
        )
        .as_bytes(),
    );
    let spec_hash = hex::encode(&h.finalize()[..8]);
    Ok(Desired {
        name: name.into(),
        image: image.into(),
        image_id: image_id.into(),
        digest: None,
        replicas: svc.replicas,
        container_port,
        env: resolved,
        env_shown: shown,
        secret_refs: refs,
        command: svc.command.clone(),
        spec_hash,
        service: svc.clone(),
    })
}

impl Desired {
    pub fn record(&self) -> ServiceRecord {
        ServiceRecord {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            digest: self.digest.clone(),
            replicas: self.replicas,
            env: self.env_shown.clone(),
            secret_refs: self.secret_refs.clone(),
            container_port: self.container_port,
            containers: Vec::new(),
            spec_hash: self.spec_hash.clone(),
        }
    }

    /// The desired state of a recorded release (for rollback): secrets resolved again from
    /// their references, in case a container has to be recreated.
    pub fn from_record(rec: &ServiceRecord, svc: &Service) -> Result<Desired, SecretError> {
        let mut env = Vec::new();
        for (k, v) in &rec.env {
            match rec.secret_refs.get(k) {
                Some(r) => {
                    let value = resolve_secret(r).map_err(|why| SecretError {
                        service: rec.name.clone(),
                        var: k.clone(),
                        reference: r.clone(),
                        why,
                    })?;
                    env.push(format!("{k}={value}"));
                }
                None => env.push(format!("{k}={v}")),
            }
        }
        Ok(Desired {
            name: rec.name.clone(),
            image: rec.image.clone(),
            image_id: rec.image_id.clone(),
            digest: rec.digest.clone(),
            replicas: rec.replicas,
            container_port: rec.container_port,
            env,
            env_shown: rec.env.clone(),
            secret_refs: rec.secret_refs.clone(),
            command: svc.command.clone(),
            spec_hash: rec.spec_hash.clone(),
            service: svc.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::SecretRef;

    #[test]
    fn secrets_resolve_but_only_references_are_shown() {
        std::env::set_var("PACKFY_TEST_SECRET_X", "s3cr3t-value");
        let mut svc = Service::default();
        svc.env.insert(
            "TOKEN".into(),
            EnvValue::Secret {
                secret: SecretRef("env:PACKFY_TEST_SECRET_X".into()),
            },
        );
        svc.env
            .insert("MODE".into(), EnvValue::Plain("fast".into()));
        let cfg = RegionConfig::default();
        let d = desired(
            "cuba",
            "production",
            "v1",
            &cfg,
            "backend",
            &svc,
            "img:v1",
            "sha256:1",
        )
        .unwrap();
        assert!(d.env.contains(&"TOKEN=s3cr3t-value".to_string()));
        assert_eq!(d.env_shown["TOKEN"], "<secret:env:PACKFY_TEST_SECRET_X>");
        let rec = serde_json::to_string(&d.record()).unwrap();
        assert!(!rec.contains("s3cr3t-value"), "{rec}");
        // (A hex digest never spells the value; what matters is that a rotated secret
        // changes the hash, so its containers roll.)
        assert!(!d.spec_hash.contains("s3cr3t"));
        std::env::set_var("PACKFY_TEST_SECRET_X", "rotated-value");
        let rotated = desired(
            "cuba",
            "production",
            "v1",
            &cfg,
            "backend",
            &svc,
            "img:v1",
            "sha256:1",
        )
        .unwrap();
        assert_ne!(rotated.spec_hash, d.spec_hash);
    }

    #[test]
    fn a_missing_secret_names_the_reference() {
        let mut svc = Service::default();
        svc.env.insert(
            "TOKEN".into(),
            EnvValue::Secret {
                secret: SecretRef("env:PACKFY_TEST_UNSET_SECRET".into()),
            },
        );
        let e = desired(
            "cuba",
            "production",
            "v1",
            &RegionConfig::default(),
            "backend",
            &svc,
            "i",
            "i",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret env:PACKFY_TEST_UNSET_SECRET for backend.env.TOKEN is not available: environment variable PACKFY_TEST_UNSET_SECRET is not set"
        );
    }

    #[test]
    fn hash_changes_with_image_and_env() {
        let svc = Service::default();
        let cfg = RegionConfig::default();
        let a = desired("r", "e", "v1", &cfg, "s", &svc, "i:1", "sha256:1").unwrap();
        let b = desired("r", "e", "v1", &cfg, "s", &svc, "i:1", "sha256:2").unwrap();
        let c = desired("r", "e", "v2", &cfg, "s", &svc, "i:1", "sha256:1").unwrap();
        assert_ne!(a.spec_hash, b.spec_hash);
        assert_ne!(a.spec_hash, c.spec_hash);
        let a2 = desired("r", "e", "v1", &cfg, "s", &svc, "i:1", "sha256:1").unwrap();
        assert_eq!(a.spec_hash, a2.spec_hash);
    }
}
