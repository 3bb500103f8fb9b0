//! Progressive delivery settings of a service's `rollout:`: the strategy, a canary's steps
//! and the analysis that judges the new release while it takes part of the traffic.
//!
//! ```yaml
//! rollout:
//!   strategy: canary
//!   analysis: {max_5xx_ratio: 0.02, max_response_time: 300ms, http: {path: /ready}}
//!   steps: [{weight: 10}, {analysis: {duration: 30s}}, {weight: 50}, {pause: {}}, {weight: 100}]
//! ```
//!
//! An analysis may also ask Prometheus (`prometheus: {url, query, max | min}`): the query's
//! one value is compared with `max` (the value must not be above it) and/or `min` (not
//! below it). `$release` and `$version` in the query stand for the new release's id and
//! version, so a query can pick the new servers (HAProxy names them `…-<release>-<n>`).
//!
//! On Kubernetes regions (no traffic router: the weight is the share of replicas) the
//! analysis is Prometheus only: HAProxy's counters are not there, and an `http` check of each
//! new pod would be made from the CLI's machine, which in general reaches no pod — so it is
//! refused there, with a hint to use a Prometheus query over the service's own metrics.
//!
//! Pure: types, their defaults, the effective conditions of a step and the rules
//! `validate` runs.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize};

use super::model::{Duration, HttpCheck, Rollout, Service};

/// Responses below which a ratio is not judged (too few to mean anything).
pub const DEFAULT_MIN_REQUESTS: u64 = 20;
/// How long an `analysis` step watches the new release when it does not say.
pub const DEFAULT_ANALYSIS: Duration = Duration::from_secs(10);

/// How a release takes traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Batches of `max_surge` new containers replace old ones (the default).
    #[default]
    Rolling,
    /// New containers beside the old ones take a weighted share of the traffic, step by
    /// step (`steps`), judged by `analysis`. On Docker regions behind HAProxy the weight is
    /// real traffic (server weights); on Kubernetes it is the share of replicas of a
    /// `<name>-canary` Deployment beside the stable one, both behind the Service.
    Canary,
    /// The full new set starts beside the old one on a `preview` backend, is judged there by
    /// `analysis` (if set), then takes all the traffic at once (`promote`, or
    /// `auto_promote`); the old set stays for `scale_down_delay`. Docker regions behind HAProxy
    /// (a preview backend) and Kubernetes regions (a preview Service, the switch by selector).
    BlueGreen,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::Canary => "canary",
            Strategy::BlueGreen => "blue_green",
        }
    }
}

/// One step of a canary.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Share of the service's traffic, in percent, that goes to the new release.
    Weight(u32),
    /// Wait this long (`2m`, checked by the analysis in the background), or with `{}` until
    /// `promote` (the deploy ends and keeps the region's lock).
    Pause(Pause),
    /// Watch the new release for `duration`; any condition it breaks aborts the canary.
    Analysis(Analysis),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Weight(w) => write!(f, "weight {w}%"),
            Step::Pause(Pause(Some(d))) => write!(f, "pause {d}"),
            Step::Pause(Pause(None)) => f.write_str("pause (until promote)"),
            Step::Analysis(a) => write!(f, "analysis {}", a.duration.unwrap_or(DEFAULT_ANALYSIS)),
        }
    }
}

/// A pause: a duration, or none (`{}`) for one that lasts until `promote`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pause(pub Option<Duration>);

impl<'de> Deserialize<'de> for Pause {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Pause;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 2m, or {} to wait for `promote`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Pause, E> {
                s.parse::<Duration>()
                    .map(|d| Pause(Some(d)))
                    .map_err(|(m, h)| E::custom(format!("{m} ({h})")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Pause, E> {
                Ok(Pause(None))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Pause, A::Error> {
                if let Some(key) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "unknown key '{key}' in a pause; write `pause: 2m`, or `pause: {{}}` to wait for `promote`"
                    )));
                }
                Ok(Pause(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Pause {
    fn schema_name() -> Cow<'static, str> {
        "Pause".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration (`2m`), or `{}` to wait for `promote`.",
            "oneOf": [
                {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
                {"type": "object", "additionalProperties": false}
            ]
        })
    }
}

/// What the new release must show while it takes traffic: over the new servers only, from
/// HAProxy's own counters, and an endpoint of each new container. Unset fields of a step's
/// `analysis` are those of the service's `rollout.analysis`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Analysis {
    /// How long an `analysis` step watches (default 10s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// The highest share (0..1) of 5xx answers of the new servers (default: the rollout's
    /// `max_5xx_ratio`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_5xx_ratio: Option<f64>,
    /// The highest average response time of a new server (HAProxy's `rtime`, over its last
    /// 1024 answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_response_time: Option<Duration>,
    /// GET `path` on every new container must answer `status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// Fewer answers than this (default 20) are too few to judge the ratio and response time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    /// A Prometheus query whose one value must stay within `max`/`min`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PromCheck>,
}

/// `prometheus: {url, query, max | min}`: the instant query `query` (its one value) asked of
/// the Prometheus at `url` (`${VAR}` expanded) must not be above `max` nor below `min`. An
/// empty result (no series yet) is not judged; several series, an error or no answer fail.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromCheck {
    /// The Prometheus server, e.g. `http://prometheus:9090` or `${PROMETHEUS_URL}`.
    pub url: String,
    /// A PromQL instant query giving one value; `$release` and `$version` are the new
    /// release's id and version.
    pub query: String,
    /// The highest value that passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The lowest value that passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
}

impl PromCheck {
    /// Whether `value` passes; `Err`: the condition broken, with the value.
    pub fn judge(&self, query: &str, value: f64) -> Result<(), String> {
        if value.is_nan() {
            return Ok(());
        }
        if let Some(max) = self.max.filter(|m| value > *m) {
            return Err(format!(
                "prometheus query `{query}` = {value} is above max {max}"
            ));
        }
        if let Some(min) = self.min.filter(|m| value < *m) {
            return Err(format!(
                "prometheus query `{query}` = {value} is below min {min}"
            ));
        }
        Ok(())
    }

    /// The query with `$release` and `$version` filled in.
    pub fn query_for(&self, release: &str, version: &str) -> String {
        self.query
            .replace("$release", release)
            .replace("$version", version)
    }
}

/// Where a blue-green's new set answers before it is promoted.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Preview {
    /// Docker: the HAProxy backend of the preview (default: the service's backend with
    /// `_preview` after it). It must be in haproxy.cfg, behind a frontend of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Where that frontend answers (`http://host:port`), for `plan` and `status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frontend: Option<String>,
}

impl Preview {
    /// The preview backend of a service whose production backend is `backend`.
    pub fn backend_for(&self, backend: &str) -> String {
        self.backend
            .clone()
            .unwrap_or_else(|| format!("{backend}_preview"))
    }
}

/// A blue-green's steps as a canary runs them: the pre-promotion analysis (when the rollout
/// sets one), the wait for `promote` (unless `auto_promote`), then all the traffic at once.
pub fn blue_green_steps(r: &Rollout) -> Vec<Step> {
    let mut steps = Vec::new();
    if r.analysis != Analysis::default() {
        // Its conditions are the rollout's; the duration is shown with the step.
        steps.push(Step::Analysis(Analysis {
            duration: r.analysis.duration,
            ..Analysis::default()
        }));
    }
    if !r.auto_promote {
        steps.push(Step::Pause(Pause(None)));
    }
    steps.push(Step::Weight(100));
    steps
}

/// The conditions an analysis checks, every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conditions {
    pub duration: Duration,
    pub max_5xx_ratio: f64,
    pub max_response_time: Option<Duration>,
    pub http: Option<HttpCheck>,
    pub min_requests: u64,
    #[serde(default)]
    pub prometheus: Option<PromCheck>,
}

impl Conditions {
    /// A step's conditions (`step`: its own `analysis`, if it is one) over the service's
    /// `rollout.analysis` over the defaults.
    pub fn of(rollout: &Rollout, step: Option<&Analysis>) -> Conditions {
        let base = &rollout.analysis;
        let pick = |f: fn(&Analysis) -> Option<&_>| step.and_then(f).or(f(base));
        Conditions {
            duration: step
                .and_then(|s| s.duration)
                .or(base.duration)
                .unwrap_or(DEFAULT_ANALYSIS),
            max_5xx_ratio: step
                .and_then(|s| s.max_5xx_ratio)
                .or(base.max_5xx_ratio)
                .unwrap_or(rollout.max_5xx_ratio),
            max_response_time: step
                .and_then(|s| s.max_response_time)
                .or(base.max_response_time),
            http: pick(|a| a.http.as_ref()).cloned(),
            min_requests: step
                .and_then(|s| s.min_requests)
                .or(base.min_requests)
                .unwrap_or(DEFAULT_MIN_REQUESTS),
            prometheus: step
                .and_then(|s| s.prometheus.as_ref())
                .or(base.prometheus.as_ref())
                .cloned(),
        }
    }
}

/// `weight 10% → analysis 10s → weight 100%`, for `plan` and `status`.
pub fn describe(steps: &[Step]) -> String {
    steps
        .iter()
        .map(Step::to_string)
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Where a service's canary would run, for [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A Docker region with HAProxy; whether the service has a backend there.
    Haproxy { backend: bool },
    /// A Kubernetes region: the weight is the share of replicas.
    Kubernetes,
    /// A Docker region without a traffic layer.
    NoTraffic,
}

/// The rules of a service's strategy (`p`: `services.web`) where it runs (`place`).
/// `report(path, message, hint)`.
pub fn check(p: &str, s: &Service, place: Place, report: &mut dyn FnMut(&str, String, &str)) {
    let r = &s.rollout;
    let rp = format!("{p}.rollout");
    if r.strategy == Strategy::BlueGreen {
        return blue_green(&rp, s, place, report);
    }
    if r.strategy == Strategy::Rolling {
        if !r.steps.is_empty() {
            report(
                &format!("{rp}.steps"),
                format!("{rp}.steps: steps are for `strategy: canary`"),
                "set `strategy: canary`, or remove the steps",
            );
        }
        return;
    }
    match place {
        Place::Haproxy { backend: true } | Place::Kubernetes => {}
        Place::Haproxy { backend: false } => report(
            &format!("{rp}.strategy"),
            format!("{rp}.strategy: a canary needs the service behind HAProxy"),
            "add the service under `traffic.haproxy.backends`",
        ),
        Place::NoTraffic => report(
            &format!("{rp}.strategy"),
            format!(
                "{rp}.strategy: a canary on a Docker region needs `traffic: haproxy` (its weights are HAProxy's)"
            ),
            "use `strategy: rolling` on this region (an environment overlay can set it)",
        ),
    }
    if place == Place::Kubernetes {
        kubernetes_analysis(&rp, r, report);
        if s.autoscale.is_some() {
            report(
                &format!("{rp}.strategy"),
                format!("{rp}.strategy: a canary by replica share needs fixed `replicas`, and an autoscaler moves them"),
                "remove `autoscale` from this service, or use `strategy: rolling` on this region",
            );
        }
    }
    if r.steps.is_empty() {
        report(
            &rp,
            format!("{rp}: a canary needs `steps`"),
            "e.g. `steps: [{weight: 10}, {analysis: {duration: 30s}}, {weight: 100}]`",
        );
    }
    let mut last = 0;
    let mut early = false;
    for (i, step) in r.steps.iter().enumerate() {
        let sp = format!("{rp}.steps.{i}");
        match step {
            Step::Weight(w) if *w == 0 || *w > 100 => report(
                &format!("{sp}.weight"),
                format!("{sp}.weight: {w} is not a share of traffic"),
                "use 1..100 (percent of the service's traffic for the new release)",
            ),
            Step::Weight(w) if *w < last => report(
                &format!("{sp}.weight"),
                format!("{sp}.weight: {w}% is below the {last}% of an earlier step"),
                "a canary only moves traffic forward; `abort` takes it all back",
            ),
            Step::Weight(w) => last = *w,
            Step::Pause(Pause(Some(d))) if d.0.is_zero() => report(
                &format!("{sp}.pause"),
                format!("{sp}.pause: a pause of 0s"),
                "remove it, or write `pause: {}` to wait for `promote`",
            ),
            Step::Analysis(a) => analysis(&format!("{sp}.analysis"), a, report),
            Step::Pause(_) => {}
        }
        if last == 0 && !early && !matches!(step, Step::Weight(_)) {
            early = true;
            report(
                &sp,
                format!("{sp}: comes before any `weight`: the new release takes no traffic yet"),
                "start the steps with `{weight: N}`",
            );
        }
    }
    analysis(&format!("{rp}.analysis"), &r.analysis, report);
}

/// The rules of `strategy: blue_green` (`rp`: `services.web.rollout`).
fn blue_green(rp: &str, s: &Service, place: Place, report: &mut dyn FnMut(&str, String, &str)) {
    let r = &s.rollout;
    match place {
        Place::Haproxy { backend: true } => {}
        Place::Haproxy { backend: false } => report(
            &format!("{rp}.strategy"),
            format!("{rp}.strategy: blue_green needs the service behind HAProxy"),
            "add the service under `traffic.haproxy.backends`, and a preview backend with its own frontend to haproxy.cfg",
        ),
        Place::NoTraffic => report(
            &format!("{rp}.strategy"),
            format!(
                "{rp}.strategy: blue_green on a Docker region needs `traffic: haproxy` (its switch is HAProxy's)"
            ),
            "use `strategy: rolling` on this region (an environment overlay can set it)",
        ),
        Place::Kubernetes => {
            // The switch is the Service's selector: a service without ports has no Service.
            if s.ports.is_empty() {
                report(
                    &format!("{rp}.strategy"),
                    format!("{rp}.strategy: blue_green on Kubernetes switches the service's Service, and a service without `ports` has none"),
                    "give the service its `ports`, or use `strategy: rolling`",
                );
            }
            if s.autoscale.is_some() {
                report(
                    &format!("{rp}.strategy"),
                    format!("{rp}.strategy: a blue-green on Kubernetes starts the new set at the service's fixed `replicas`, and an autoscaler moves them"),
                    "remove `autoscale` from this service, or use `strategy: rolling` on this region",
                );
            }
            if r.preview.backend.is_some() || r.preview.frontend.is_some() {
                report(
                    &format!("{rp}.preview"),
                    format!("{rp}.preview: HAProxy's preview backend and frontend are for Docker regions"),
                    "remove `preview`: on Kubernetes the preview is the Service `<name>-preview`, made by packfy-deploy",
                );
            }
            kubernetes_analysis(rp, r, report);
        }
    }
    if !r.steps.is_empty() {
        report(
            &format!("{rp}.steps"),
            format!("{rp}.steps: steps are for `strategy: canary`; a blue-green switches at once"),
            "remove the steps; `analysis` judges the preview before the switch, `auto_promote` says whether to wait for `promote`",
        );
    }
    if r.preview
        .backend
        .as_deref()
        .is_some_and(|b| b.trim().is_empty())
    {
        report(
            &format!("{rp}.preview.backend"),
            format!("{rp}.preview.backend is empty"),
            "name the HAProxy backend of the preview, or leave it out for `<backend>_preview`",
        );
    }
    analysis(&format!("{rp}.analysis"), &r.analysis, report);
}

/// On Kubernetes an analysis is Prometheus only (see the module doc).
fn kubernetes_analysis(rp: &str, r: &Rollout, report: &mut dyn FnMut(&str, String, &str)) {
    let mut all = vec![(format!("{rp}.analysis"), &r.analysis)];
    for (i, step) in r.steps.iter().enumerate() {
        if let Step::Analysis(a) = step {
            all.push((format!("{rp}.steps.{i}.analysis"), a));
        }
    }
    for (ap, a) in all {
        if a.http.is_some() {
            report(
                &format!("{ap}.http"),
                format!("{ap}.http: an HTTP check of each new pod would be made from this machine, which reaches no pod of a cluster"),
                "on Kubernetes judge the canary with `prometheus: {url, query, max}` over the service's metrics (the pods' readiness is checked at every step)",
            );
        }
        if a.max_response_time.is_some() {
            report(
                &format!("{ap}.max_response_time"),
                format!(
                    "{ap}.max_response_time: HAProxy's response times are not there on Kubernetes"
                ),
                "use `prometheus: {url, query, max}` with a latency query",
            );
        }
    }
}

fn analysis(ap: &str, a: &Analysis, report: &mut dyn FnMut(&str, String, &str)) {
    if let Some(pc) = &a.prometheus {
        let pp = format!("{ap}.prometheus");
        if pc.query.trim().is_empty() {
            report(
                &format!("{pp}.query"),
                format!("{pp}.query is empty"),
                "a PromQL query giving one value, e.g. `sum(rate(http_requests_total{code=~\"5..\"}[1m]))`",
            );
        }
        if pc.max.is_none() && pc.min.is_none() {
            report(
                &pp,
                format!("{pp}: no threshold: set `max` (the value must not be above it) or `min` (not below it)"),
                "e.g. `prometheus: {url: http://prometheus:9090, query: '…', max: 0.05}`",
            );
        }
        if let (Some(lo), Some(hi)) = (pc.min, pc.max) {
            if lo > hi {
                report(
                    &format!("{pp}.min"),
                    format!("{pp}.min: {lo} is above max {hi}: nothing passes"),
                    "set min at or below max",
                );
            }
        }
        if !(pc.url.starts_with("http://")
            || pc.url.starts_with("https://")
            || pc.url.starts_with("${"))
        {
            report(
                &format!("{pp}.url"),
                format!("{pp}.url: '{}' is not an http(s) address", pc.url),
                "e.g. `url: http://prometheus:9090` or `url: ${PROMETHEUS_URL}`",
            );
        }
    }
    if let Some(x) = a.max_5xx_ratio.filter(|x| !(0.0..=1.0).contains(x)) {
        report(
            &format!("{ap}.max_5xx_ratio"),
            format!("{ap}.max_5xx_ratio: {x} is not a ratio"),
            "use a number from 0 to 1, e.g. 0.05 for 5%",
        );
    }
    if a.duration.is_some_and(|d| d.0.is_zero()) {
        report(
            &format!("{ap}.duration"),
            format!("{ap}.duration: an analysis of 0s sees nothing"),
            "e.g. `duration: 30s`",
        );
    }
    if a.max_response_time.is_some_and(|d| d.0.is_zero()) {
        report(
            &format!("{ap}.max_response_time"),
            format!("{ap}.max_response_time: no answer takes 0ms"),
            "e.g. `max_response_time: 300ms`",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_inherits_the_services_analysis_then_the_defaults() {
        let mut r = Rollout {
            max_5xx_ratio: 0.1,
            ..Rollout::default()
        };
        let c = Conditions::of(&r, None);
        assert_eq!(c.max_5xx_ratio, 0.1);
        assert_eq!(c.duration, DEFAULT_ANALYSIS);
        assert_eq!(c.min_requests, DEFAULT_MIN_REQUESTS);
        assert_eq!(c.max_response_time, None);
        r.analysis.max_5xx_ratio = Some(0.02);
        r.analysis.max_response_time = Some(Duration::from_secs(1));
        let step = Analysis {
            duration: Some(Duration::from_secs(30)),
            max_5xx_ratio: Some(0.01),
            ..Analysis::default()
        };
        let c = Conditions::of(&r, Some(&step));
        assert_eq!(c.max_5xx_ratio, 0.01);
        assert_eq!(c.duration, Duration::from_secs(30));
        assert_eq!(c.max_response_time, Some(Duration::from_secs(1)));
        assert_eq!(Conditions::of(&r, None).max_5xx_ratio, 0.02);
    }

    #[test]
    fn a_blue_green_runs_as_analysis_then_wait_then_all_at_once() {
        let mut r = Rollout {
            strategy: Strategy::BlueGreen,
            ..Rollout::default()
        };
        assert_eq!(
            describe(&blue_green_steps(&r)),
            "pause (until promote) → weight 100%"
        );
        r.analysis.max_5xx_ratio = Some(0.01);
        assert_eq!(
            describe(&blue_green_steps(&r)),
            "analysis 10s → pause (until promote) → weight 100%"
        );
        r.auto_promote = true;
        assert_eq!(
            describe(&blue_green_steps(&r)),
            "analysis 10s → weight 100%"
        );
        assert_eq!(r.preview.backend_for("be_web"), "be_web_preview");
        r.preview.backend = Some("other".into());
        assert_eq!(r.preview.backend_for("be_web"), "other");
    }

    #[test]
    fn steps_read_as_a_line() {
        let steps = vec![
            Step::Weight(10),
            Step::Pause(Pause(Some(Duration::from_secs(120)))),
            Step::Analysis(Analysis::default()),
            Step::Pause(Pause(None)),
            Step::Weight(100),
        ];
        assert_eq!(
            describe(&steps),
            "weight 10% → pause 2m → analysis 10s → pause (until promote) → weight 100%"
        );
    }
}
