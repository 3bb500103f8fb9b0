//! The committed manifests (manifests/<region>/<env>/) are what `render` makes of the region
//! files, and they are valid Kubernetes objects: each parses into its k8s-openapi type with no
//! field lost, and says what the configuration says.

mod config_common;

use std::path::{Path, PathBuf};

use config_common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Probe, Service};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

fn manifests() -> PathBuf {
    root().join("manifests")
}

/// Parses `path` as `T` and checks nothing was dropped on the way: the typed object written
/// back is the YAML document (k8s-openapi ignores fields it does not know, so a misspelt
/// `initialDelaySecond` would otherwise pass).
fn parse<T: DeserializeOwned + Serialize>(path: &Path) -> T {
    let text = std::fs::read_to_string(path).unwrap();
    let typed: T =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let raw: Value = serde_saphyr::from_str(&text).unwrap();
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        back,
        raw,
        "{}: fields lost or changed by the typed round trip",
        path.display()
    );
    typed
}

#[test]
fn the_committed_manifests_are_fresh() {
    let r = run(&root(), &["render", "--check"]);
    r.code(0).no_panic();
    assert_eq!(r.stdout, "");
}

#[test]
fn the_repository_regions_are_valid() {
    let r = run(&root(), &["validate"]);
    r.code(0).no_panic();
    assert!(r.stdout.starts_with("ok: "), "{r}");
}

#[test]
fn every_manifest_parses_into_its_kubernetes_type() {
    let files = files_under(&manifests());
    assert!(files.len() >= 30, "{files:?}");
    for f in &files {
        let path = manifests().join(f);
        let kind = serde_saphyr::from_str::<Value>(&std::fs::read_to_string(&path).unwrap())
            .unwrap()["kind"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (suffix, want) = match f.rsplit_once('-').map(|(_, s)| s) {
            Some("deployment.yaml") => ("deployment", "Deployment"),
            Some("service.yaml") => ("service", "Service"),
            Some("configmap.yaml") => ("configmap", "ConfigMap"),
            Some("hpa.yaml") => ("hpa", "HorizontalPodAutoscaler"),
            _ => panic!("unexpected file {f}"),
        };
        assert_eq!(kind, want, "{f}");
        match suffix {
            "deployment" => drop(parse::<Deployment>(&path)),
            "service" => drop(parse::<Service>(&path)),
            "configmap" => drop(parse::<ConfigMap>(&path)),
            _ => drop(parse::<HorizontalPodAutoscaler>(&path)),
        }
    }
}

/// The effective value of `key` for a region in an environment, from `explain -o json`.
fn config(region: &str, env: &str, key: &str) -> Value {
    let r = run(
        &root(),
        &["explain", region, key, "--env", env, "-o", "json"],
    );
    r.code(0);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    v["value"].clone()
}

fn seconds(duration: &Value) -> i32 {
    let s = duration.as_str().unwrap();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap());
    let n: i32 = n.parse().unwrap();
    match unit {
        "s" => n,
        "m" => n * 60,
        _ => panic!("{s}"),
    }
}

/// (region, env, service) of every rendered Deployment.
fn deployments() -> Vec<(String, String, String, PathBuf)> {
    files_under(&manifests())
        .into_iter()
        .filter(|f| f.ends_with("-deployment.yaml"))
        .map(|f| {
            let parts: Vec<&str> = f.split('/').collect();
            let service = parts[2].trim_end_matches("-deployment.yaml").to_string();
            (
                parts[0].to_string(),
                parts[1].to_string(),
                service,
                manifests().join(&f),
            )
        })
        .collect()
}

#[test]
fn deployments_say_what_the_configuration_says() {
    let all = deployments();
    assert!(all.len() >= 12);
    for (region, env, service, path) in all {
        let d: Deployment = parse(&path);
        let svc = config(&region, &env, &format!("services.{service}"));
        let spec = d.spec.as_ref().unwrap();
        let pod = spec.template.spec.as_ref().unwrap();
        let c: &Container = &pod.containers[0];
        let at = format!("{region}/{env}/{service}");

        let image = format!(
            "{}:{}",
            svc["image"].as_str().unwrap(),
            config(&region, &env, "version").as_str().unwrap()
        );
        assert_eq!(c.image.as_deref(), Some(image.as_str()), "{at}");
        match svc.get("autoscale") {
            // the autoscaler owns the replica count
            Some(_) => assert_eq!(spec.replicas, None, "{at}"),
            None => assert_eq!(
                spec.replicas,
                Some(svc["replicas"].as_i64().unwrap() as i32),
                "{at}"
            ),
        }
        let ports: Vec<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
        let want_ports: Vec<i32> = svc["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["container"].as_i64().unwrap() as i32)
            .collect();
        assert_eq!(ports, want_ports, "{at}");

        // probes come from the health check
        let h = &svc["health"];
        let check = |p: &Probe, success: i32| {
            let http = p.http_get.as_ref().expect("an HTTP probe");
            assert_eq!(http.path.as_deref(), h["http"]["path"].as_str(), "{at}");
            assert_eq!(
                http.port,
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(want_ports[0]),
                "{at}"
            );
            assert_eq!(p.period_seconds, Some(seconds(&h["interval"])), "{at}");
            assert_eq!(p.timeout_seconds, Some(seconds(&h["timeout"])), "{at}");
            assert_eq!(
                p.initial_delay_seconds,
                Some(h.get("start_period").map_or(0, seconds)),
                "{at}"
            );
            assert_eq!(
                p.failure_threshold,
                Some(h["unhealthy_threshold"].as_i64().unwrap() as i32),
                "{at}"
            );
            assert_eq!(p.success_threshold, Some(success), "{at}");
        };
        check(
            c.readiness_probe.as_ref().unwrap(),
            h["healthy_threshold"].as_i64().unwrap() as i32,
        );
        // Kubernetes requires 1 for liveness
        check(c.liveness_probe.as_ref().unwrap(), 1);

        // resources as configured
        let res = c.resources.as_ref().unwrap();
        for (set, got) in [("requests", &res.requests), ("limits", &res.limits)] {
            for k in ["cpu", "memory"] {
                let want = svc["resources"][set][k].as_str();
                let have = got.as_ref().and_then(|m| m.get(k)).map(|q| q.0.as_str());
                assert_eq!(have, want, "{at} {set}.{k}");
            }
        }

        // secrets are references to a Secret, never values; plain values come from the ConfigMap
        let env_cfg = svc["env"].as_object().unwrap();
        let secret_names: Vec<&String> = env_cfg
            .iter()
            .filter(|(_, v)| v.as_str().is_some_and(|s| s.starts_with("<secret:")))
            .map(|(k, _)| k)
            .collect();
        let env_vars = c.env.clone().unwrap_or_default();
        assert_eq!(env_vars.len(), secret_names.len(), "{at}");
        for var in &env_vars {
            assert!(secret_names.contains(&&var.name), "{at}: {}", var.name);
            assert_eq!(var.value, None, "{at}: {} has a value", var.name);
            let key_ref = var
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .expect("secretKeyRef");
            assert_eq!(
                key_ref.name,
                format!("{}-secrets", d.metadata.name.as_deref().unwrap()),
                "{at}"
            );
            assert_eq!(key_ref.key, var.name, "{at}");
        }
        let cm: ConfigMap = parse(&path.with_file_name(format!("{service}-configmap.yaml")));
        let data = cm.data.unwrap_or_default();
        for (k, v) in env_cfg {
            if secret_names.contains(&k) {
                assert!(!data.contains_key(k), "{at}: secret {k} in the ConfigMap");
            } else {
                assert_eq!(data.get(k).map(String::as_str), v.as_str(), "{at}: {k}");
            }
        }
        assert_eq!(data.get("PACKFY_REGION"), Some(&region), "{at}");
        assert_eq!(data.get("PACKFY_ENVIRONMENT"), Some(&env), "{at}");
        let from = c.env_from.as_ref().unwrap()[0]
            .config_map_ref
            .as_ref()
            .unwrap();
        assert_eq!(Some(&from.name), cm.metadata.name.as_ref(), "{at}");

        // the Service selects these pods
        let s: Service = parse(&path.with_file_name(format!("{service}-service.yaml")));
        let selector = s.spec.as_ref().unwrap().selector.clone().unwrap();
        let labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        for (k, v) in &selector {
            assert_eq!(labels.get(k), Some(v), "{at}: selector {k}");
        }
        assert_eq!(
            spec.selector.match_labels.as_ref().unwrap(),
            &selector,
            "{at}"
        );
        assert_eq!(d.metadata.namespace, s.metadata.namespace, "{at}");
    }
}

#[test]
fn the_production_backend_autoscales_3_to_50_at_70_cpu_80_memory() {
    let mut seen = 0;
    for region in ["usa", "spain"] {
        let path = manifests().join(region).join("production/backend-hpa.yaml");
        let hpa: HorizontalPodAutoscaler = parse(&path);
        let spec = hpa.spec;
        assert_eq!(
            (spec.min_replicas, spec.max_replicas),
            (Some(3), 50),
            "{region}"
        );
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
        assert_eq!(spec.scale_target_ref.name, "packfy-backend");
        let targets: Vec<(String, Option<i32>)> = spec
            .metrics
            .unwrap()
            .into_iter()
            .map(|m| {
                let r = m.resource.unwrap();
                (r.name, r.target.average_utilization)
            })
            .collect();
        assert_eq!(
            targets,
            [
                ("cpu".to_string(), Some(70)),
                ("memory".to_string(), Some(80))
            ],
            "{region}"
        );
        seen += 1;
        // staging and development do not autoscale
        assert!(!manifests()
            .join(region)
            .join("staging/backend-hpa.yaml")
            .exists());
    }
    assert_eq!(seen, 2);
    // the Deployment it scales exists beside it
    let d: Deployment = parse(&manifests().join("usa/production/backend-deployment.yaml"));
    assert_eq!(d.metadata.name.as_deref(), Some("packfy-backend"));
    assert_eq!(
        serde_json::to_value(&d.spec.unwrap().strategy).unwrap(),
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    );
}
