//! Kubernetes manifests from the templates in `templates/`, for one region and environment.
//!
//! Pure: a typed configuration and the template sources in, file names and YAML text out. The
//! templates see a prepared context (below), not the raw configuration, so they stay simple:
//! numbers are already in the units Kubernetes wants and secrets are only references.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::Environment as Jinja;
use serde::Serialize;
use serde_json::json;

use crate::config::model::{EnvValue, Protocol, RegionConfig, Service};
use crate::config::Environment;

/// The templates rendered for every service, in order, and the suffix of their output file.
pub const TEMPLATES: [(&str, &str); 4] = [
    ("configmap.yaml.j2", "configmap"),
    ("deployment.yaml.j2", "deployment"),
    ("service.yaml.j2", "service"),
    ("hpa.yaml.j2", "hpa"),
];

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read template {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("template {name}: {source}")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },
}

/// Loads the templates of `dir`.
pub fn load_templates(dir: &Path) -> Result<BTreeMap<String, String>, RenderError> {
    let mut out = BTreeMap::new();
    for (name, _) in TEMPLATES {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|source| RenderError::Read {
            path: path.display().to_string(),
            source,
        })?;
        out.insert(name.to_string(), text);
    }
    Ok(out)
}

/// The templates this binary was built with: what `deploy` renders when no `templates/`
/// directory sits beside the regions directory.
pub fn embedded_templates() -> BTreeMap<String, String> {
    [
        (
            "configmap.yaml.j2",
            include_str!("../templates/configmap.yaml.j2"),
        ),
        (
            "deployment.yaml.j2",
            include_str!("../templates/deployment.yaml.j2"),
        ),
        (
            "service.yaml.j2",
            include_str!("../templates/service.yaml.j2"),
        ),
        ("hpa.yaml.j2", include_str!("../templates/hpa.yaml.j2")),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t.to_string()))
    .collect()
}

/// The templates of `dir` when it exists, else the embedded ones.
pub fn templates_or_embedded(dir: &Path) -> Result<BTreeMap<String, String>, RenderError> {
    if dir.is_dir() {
        load_templates(dir)
    } else {
        Ok(embedded_templates())
    }
}

/// A name for an object of `service` in `region` (`packfy-backend`; the namespace is the region's).
pub fn object_name(cfg: &RegionConfig, service: &str) -> String {
    format!("{}-{service}", cfg.app)
}

/// Renders every manifest of a region: (file name, YAML). Templates that render to nothing
/// (an HPA for a service without autoscaling) produce no file.
pub fn render(
    templates: &BTreeMap<String, String>,
    region: &str,
    env: Environment,
    cfg: &RegionConfig,
    image_tag: &str,
) -> Result<Vec<(String, String)>, RenderError> {
    let mut jinja = Jinja::new();
    jinja.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("default delimiters"),
    );
    // Values are quoted explicitly with `tojson` where YAML needs it; no implicit escaping.
    jinja.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    jinja.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    for (name, text) in templates {
        jinja
            .add_template_owned(name.clone(), text.clone())
            .map_err(|source| RenderError::Template {
                name: name.clone(),
                source,
            })?;
    }
    let mut out = Vec::new();
    for (sname, svc) in &cfg.services {
        let mut ctx = context(region, env, cfg, sname, svc, image_tag);
        for (tname, suffix) in TEMPLATES {
            let tmpl = jinja
                .get_template(tname)
                .map_err(|source| RenderError::Template {
                    name: tname.into(),
                    source,
                })?;
            let text = tmpl
                .render(minijinja::value::Serde(&ctx))
                .map_err(|source| RenderError::Template {
                    name: tname.into(),
                    source,
                })?;
            let text = text.trim();
            if suffix == "configmap" {
                // On the pod template: a ConfigMap change changes it, so the pods roll.
                ctx["config_hash"] = json!(format!("{:016x}", fnv1a(text.as_bytes())));
            }
            if !text.is_empty() {
                out.push((format!("{sname}-{suffix}.yaml"), format!("{text}\n")));
            }
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct Probe {
    kind: &'static str,
    path: String,
    port: u16,
    command: Vec<String>,
    period_seconds: u64,
    timeout_seconds: u64,
    initial_delay_seconds: u64,
    success_threshold: u32,
    failure_threshold: u32,
}

fn context(
    region: &str,
    env: Environment,
    cfg: &RegionConfig,
    sname: &str,
    svc: &Service,
    image_tag: &str,
) -> serde_json::Value {
    let name = object_name(cfg, sname);
    let namespace = cfg
        .target
        .kubernetes()
        .map(|k| k.namespace.clone())
        .unwrap_or_default();
    let plain: BTreeMap<&str, String> = svc
        .env
        .iter()
        .filter_map(|(k, v)| match v {
            EnvValue::Plain(s) => Some((k.as_str(), s.clone())),
            EnvValue::Secret { .. } => None,
        })
        .collect();
    let secrets: Vec<serde_json::Value> = svc
        .env
        .iter()
        .filter(|(_, v)| matches!(v, EnvValue::Secret { .. }))
        .map(|(k, _)| json!({"name": k, "key": k}))
        .collect();
    let first_port = svc.ports.first().map(|p| p.container).unwrap_or(0);
    let h = &svc.health;
    let probe = if h.http.is_some() || h.tcp.is_some() || h.command.is_some() {
        Some(Probe {
            kind: if h.http.is_some() {
                "http"
            } else if h.tcp.is_some() {
                "tcp"
            } else {
                "exec"
            },
            path: h.http.as_ref().map(|x| x.path.clone()).unwrap_or_default(),
            port: h
                .http
                .as_ref()
                .and_then(|x| x.port)
                .or(h.tcp.as_ref().and_then(|x| x.port))
                .unwrap_or(first_port),
            command: h.command.clone().unwrap_or_default(),
            period_seconds: h.interval.0.as_secs().max(1),
            timeout_seconds: h.timeout.0.as_secs().max(1),
            initial_delay_seconds: h.start_period.0.as_secs(),
            success_threshold: h.healthy_threshold,
            failure_threshold: h.unhealthy_threshold,
        })
    } else {
        None
    };
    let ports: Vec<_> = svc
        .ports
        .iter()
        .map(|p| {
            json!({
                "name": format!("p{}", p.container),
                "container": p.container,
                "protocol": match p.protocol { Protocol::Tcp => "TCP", Protocol::Udp => "UDP" },
            })
        })
        .collect();
    let res = &svc.resources;
    json!({
        "app": cfg.app,
        "name": name,
        "namespace": namespace,
        "region": region,
        "environment": env.as_str(),
        "service": sname,
        "version": image_tag,
        "image": format!("{}:{image_tag}", svc.image.clone().unwrap_or_default()),
        "replicas": svc.replicas,
        "ports": ports,
        "command": svc.command,
        "env": plain,
        "secrets": secrets,
        "secret_name": format!("{name}-secrets"),
        // set from the rendered ConfigMap (see `render`)
        "config_hash": "",
        "currency": cfg.currency,
        "locale": cfg.locale,
        "requests": {"cpu": res.requests.cpu.as_ref().map(|q| q.0.clone()), "memory": res.requests.memory.as_ref().map(|q| q.0.clone())},
        "limits": {"cpu": res.limits.cpu.as_ref().map(|q| q.0.clone()), "memory": res.limits.memory.as_ref().map(|q| q.0.clone())},
        "probe": probe,
        "max_surge": svc.rollout.max_surge,
        "max_unavailable": svc.rollout.max_unavailable,
        "progress_deadline_seconds": svc.rollout.progress_deadline.0.as_secs(),
        "termination_grace_seconds": svc.stop_grace_period.0.as_secs(),
        "autoscale": svc.autoscale,
    })
}

/// 64-bit FNV-1a. Committed manifests carry it, so it must not change between Rust releases
/// (std's `DefaultHasher` may) or `render --check` would fail after a toolchain update.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::de::from_node;
    use crate::config::yaml::parse;
    use std::sync::Arc;

    #[test]
    fn fnv1a_is_the_published_function() {
        // test vectors of FNV-1a 64 (draft-eastlake-fnv)
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    fn templates() -> BTreeMap<String, String> {
        load_templates(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")).unwrap()
    }

    fn config(text: &str) -> RegionConfig {
        from_node(&parse(&Arc::from("r.yaml"), text).unwrap(), "").unwrap()
    }

    const REGION: &str = "currency: MXN\nlocale: es-MX\ntarget: {kubernetes: {namespace: mx}}\nservices:\n  web:\n    image: r/web\n    ports: [{container: 80}]\n    env: {A: '1'}\n";

    fn file<'a>(files: &'a [(String, String)], name: &str) -> &'a str {
        &files.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn the_config_hash_follows_the_configmap() {
        let t = templates();
        let render_with = |text: &str| {
            let files = render(&t, "mx", Environment::Production, &config(text), "1.0").unwrap();
            let deployment = file(&files, "web-deployment.yaml").to_string();
            let line = deployment
                .lines()
                .find(|l| l.contains("packfy.io/config-hash"))
                .unwrap()
                .to_string();
            line
        };
        let base = render_with(REGION);
        assert_eq!(base, render_with(REGION), "stable");
        assert_ne!(
            base,
            render_with(&REGION.replace("A: '1'", "A: '2'")),
            "env"
        );
        // not in the service's env, but in the ConfigMap: must roll the pods too
        assert_ne!(base, render_with(&REGION.replace("MXN", "USD")), "currency");
        // the image is not configuration
        let files = render(&t, "mx", Environment::Production, &config(REGION), "2.0").unwrap();
        assert!(file(&files, "web-deployment.yaml").contains(&base));
    }

    #[test]
    fn a_service_may_set_the_region_variables_itself() {
        let text = REGION.replace(
            "env: {A: '1'}",
            "env: {PACKFY_REGION: mexico-1, PACKFY_CURRENCY: MXN}",
        );
        let files = render(
            &templates(),
            "mx",
            Environment::Staging,
            &config(&text),
            "1.0",
        )
        .unwrap();
        let cm = file(&files, "web-configmap.yaml");
        assert_eq!(cm.matches("PACKFY_REGION:").count(), 1, "{cm}");
        assert!(cm.contains("PACKFY_REGION: \"mexico-1\""), "{cm}");
        assert_eq!(cm.matches("PACKFY_CURRENCY:").count(), 1, "{cm}");
        assert!(cm.contains("PACKFY_ENVIRONMENT: \"staging\""), "{cm}");
        assert!(cm.contains("PACKFY_LOCALE: \"es-MX\""), "{cm}");
    }

    #[test]
    fn the_embedded_templates_are_the_repository_s() {
        assert_eq!(embedded_templates(), templates());
        assert_eq!(embedded_templates().len(), TEMPLATES.len());
    }

    #[test]
    fn no_hpa_without_autoscale_and_no_service_without_ports() {
        let text = REGION.replace("    ports: [{container: 80}]\n", "");
        let files = render(
            &templates(),
            "mx",
            Environment::Production,
            &config(&text),
            "1.0",
        )
        .unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["web-configmap.yaml", "web-deployment.yaml"]);
    }
}
