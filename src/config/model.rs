//! The typed region configuration: what a region file may say, with its defaults.
//!
//! These types are the single source of the JSON Schema (`packfy-deploy schema`) and of the
//! unknown-key check, so documentation, editor completion and validation cannot drift apart.
//! Every field has a default; what is required is checked in `validate.rs`, where the message
//! can point at the right place.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration as StdDuration;

use indexmap::IndexMap;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize};

/// The effective configuration of one region in one environment.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RegionConfig {
    /// Application name; prefixes container names, labels and Kubernetes objects.
    pub app: String,
    /// The country this region serves (display only).
    pub country: Option<String>,
    /// ISO 4217 currency code, e.g. MXN.
    pub currency: Option<String>,
    /// Locale, e.g. es-MX.
    pub locale: Option<String>,
    /// IANA time zone, e.g. America/Mexico_City.
    pub timezone: Option<String>,
    /// The release version deployed when none is given on the command line.
    pub version: Option<String>,
    /// The one primary region (it holds the master database).
    pub primary: bool,
    /// Share of global traffic in percent; when any region sets it, all shares sum to 100.
    pub capacity_share: Option<f64>,
    /// Where this region runs: a Docker endpoint or a Kubernetes context and namespace.
    #[schemars(with = "TargetSpec")]
    pub target: Target,
    /// How traffic reaches the containers (Docker targets).
    pub traffic: Traffic,
    /// Per-country settings (taxes, limits, customs forms, postal and phone formats), opaque.
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub settings: IndexMap<String, serde_json::Value>,
    /// The services of the region, by name.
    pub services: IndexMap<String, Service>,
    /// Releases (and their stopped containers) kept per region and environment for rollback.
    pub keep_releases: u32,
    /// How long a deploy lock holds before another run may take it over.
    pub lock_ttl: Duration,
    /// Local commands run on the deploying machine around deploys and rollbacks.
    pub hooks: Hooks,
    /// Webhooks told when a deploy starts, succeeds, fails or is rolled back.
    pub notifications: Vec<Webhook>,
    /// Data backup jobs run before every deploy changes anything (see `config/backups.rs`).
    pub backups: Vec<super::backups::BackupJob>,
}

impl Default for RegionConfig {
    fn default() -> Self {
        RegionConfig {
            app: "packfy".into(),
            country: None,
            currency: None,
            locale: None,
            timezone: None,
            version: None,
            primary: false,
            capacity_share: None,
            target: Target::default(),
            traffic: Traffic::None,
            settings: IndexMap::new(),
            services: IndexMap::new(),
            keep_releases: 5,
            lock_ttl: Duration::from_secs(15 * 60),
            hooks: Hooks::default(),
            notifications: Vec::new(),
            backups: Vec::new(),
        }
    }
}

/// Where a region deploys: Docker hosts or a Kubernetes cluster. Written as the one-key
/// mapping `{docker: {...}}` or `{kubernetes: {...}}` ([`TargetSpec`]); validation reports a
/// region with neither or both, where they were written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(from = "TargetSpec", into = "TargetSpec")]
pub enum Target {
    Docker(DockerTarget),
    Kubernetes(KubernetesTarget),
}

impl Default for Target {
    fn default() -> Self {
        Target::Docker(DockerTarget::default())
    }
}

impl Target {
    pub fn kubernetes(&self) -> Option<&KubernetesTarget> {
        match self {
            Target::Kubernetes(k) => Some(k),
            Target::Docker(_) => None,
        }
    }
}

// `target:` as written (validation says that exactly one is set; the schema names it
// `Target`, as region files do).
/// Exactly one of `docker` or `kubernetes`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(rename = "Target")]
pub struct TargetSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerTarget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesTarget>,
}

impl From<TargetSpec> for Target {
    /// Neither or both are validation errors, reported from the tree; typing picks one.
    fn from(t: TargetSpec) -> Target {
        match (t.docker, t.kubernetes) {
            (None, Some(k)) => Target::Kubernetes(k),
            (d, _) => Target::Docker(d.unwrap_or_default()),
        }
    }
}

impl From<Target> for TargetSpec {
    fn from(t: Target) -> TargetSpec {
        match t {
            Target::Docker(d) => TargetSpec {
                docker: Some(d),
                kubernetes: None,
            },
            Target::Kubernetes(k) => TargetSpec {
                docker: None,
                kubernetes: Some(k),
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DockerTarget {
    /// `unix:///var/run/docker.sock`, `tcp://host:2376` or `ssh://user@host[:port]`: the
    /// shorthand for `hosts` with one entry.
    pub host: String,
    /// The region's Docker hosts, in the same forms as `host`. Set either this or `host`.
    pub hosts: Vec<String>,
    /// Client certificates for `tcp://` with TLS.
    pub tls: Option<DockerTls>,
    /// The private key `ssh://` hosts are logged in with (ssh's `-i`); without it, ssh's own
    /// choice: the agent (`SSH_AUTH_SOCK`), `~/.ssh/config`, `~/.ssh/id_*`.
    pub identity_file: Option<String>,
    /// What ssh does with a host key it does not know: `strict` (refuse) or `accept-new`
    /// (trust it the first time and remember it). A changed key is always refused.
    pub known_hosts: KnownHosts,
}

impl Default for DockerTarget {
    fn default() -> Self {
        DockerTarget {
            host: "unix:///var/run/docker.sock".into(),
            hosts: Vec::new(),
            tls: None,
            identity_file: None,
            known_hosts: KnownHosts::Strict,
        }
    }
}

impl DockerTarget {
    /// The endpoints of the region's hosts: `hosts`, or `host` alone.
    pub fn endpoints(&self) -> Vec<&str> {
        if self.hosts.is_empty() {
            vec![self.host.as_str()]
        } else {
            self.hosts.iter().map(String::as_str).collect()
        }
    }
}

/// ssh's `StrictHostKeyChecking` for a region's `ssh://` hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KnownHosts {
    /// An unknown host key is refused: add it to known_hosts first (`ssh-keyscan`, or a
    /// first login by hand).
    #[default]
    Strict,
    /// An unknown host key is trusted and written to known_hosts; a changed one is refused.
    AcceptNew,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DockerTls {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesTarget {
    /// kubeconfig context; the current context when unset.
    pub context: Option<String>,
    pub namespace: String,
    /// Checked over HTTP(S) after a rollout, for the services' `rollout.bake` period: every
    /// answer must be 2xx, or the release is rolled back. Unset: Kubernetes' own readiness only.
    pub health_url: Option<String>,
}

/// `none`, or `{haproxy: {...}}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Traffic {
    /// No load balancer: deploys cannot promise zero downtime.
    #[default]
    None,
    /// HAProxy driven through its Runtime API.
    Haproxy(Haproxy),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Haproxy {
    /// The Runtime API: a unix socket path, `host:port`, or `ssh://USER@HOST/path/to/socket`
    /// on a load-balancer host. A list names several load balancers: every one gets the same
    /// changes.
    pub runtime_api: RuntimeApis,
    /// Where HAProxy serves the region (used by the bake check and printed after a deploy).
    pub frontend: Option<String>,
    /// HAProxy backend per service name; services not listed get no traffic.
    pub backends: IndexMap<String, String>,
}

/// `traffic.haproxy.runtime_api`: one address, or a list of the region's load balancers.
/// Written back as it was given (one address as a string).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeApis(pub Vec<String>);

impl RuntimeApis {
    /// The addresses as written (none when unset).
    pub fn addresses(&self) -> &[String] {
        &self.0
    }

    /// Unset: no address, or the one address empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(String::is_empty)
    }
}

impl From<&str> for RuntimeApis {
    fn from(s: &str) -> Self {
        RuntimeApis(vec![s.to_string()])
    }
}

impl Serialize for RuntimeApis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            [] => s.serialize_str(""),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for RuntimeApis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RuntimeApis;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address, or a list of addresses (one per load balancer)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RuntimeApis, E> {
                Ok(RuntimeApis::from(v))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RuntimeApis, A::Error> {
                let mut all = Vec::new();
                while let Some(a) = seq.next_element::<String>()? {
                    all.push(a);
                }
                Ok(RuntimeApis(all))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum RuntimeApisSchema {
    /// One load balancer's Runtime API.
    One(String),
    /// Several load balancers: every one gets the same changes.
    Several(Vec<String>),
}

impl JsonSchema for RuntimeApis {
    fn schema_name() -> Cow<'static, str> {
        "RuntimeApis".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        RuntimeApisSchema::json_schema(generator)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Service {
    /// Image repository without a tag; the release version is the tag.
    pub image: Option<String>,
    /// How to build the image.
    pub build: Option<Build>,
    pub replicas: u32,
    pub ports: Vec<Port>,
    /// Overrides the image's command.
    pub command: Option<Vec<String>>,
    /// Environment variables: plain values, or `{secret: "env:NAME"}` / `{secret: "file:PATH"}`.
    pub env: IndexMap<String, EnvValue>,
    pub resources: Resources,
    pub health: Health,
    pub rollout: Rollout,
    /// Kubernetes HorizontalPodAutoscaler.
    pub autoscale: Option<Autoscale>,
    /// Time between SIGTERM and SIGKILL when a container stops.
    pub stop_grace_period: Duration,
    /// A one-off command (migrations) run once per region and environment in the new image,
    /// after the data backups and before any new container takes traffic.
    pub release: Option<ReleaseStep>,
}

impl Default for Service {
    fn default() -> Self {
        Service {
            image: None,
            build: None,
            replicas: 1,
            ports: Vec::new(),
            command: None,
            env: IndexMap::new(),
            resources: Resources::default(),
            health: Health::default(),
            rollout: Rollout::default(),
            autoscale: None,
            stop_grace_period: Duration::from_secs(30),
            release: None,
        }
    }
}

/// A service's release step: run once per region and environment, in the new image, with
/// the service's environment and secrets, before traffic moves (see `flow`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReleaseStep {
    /// `["migrate", "up"]` replaces the image's CMD (its ENTRYPOINT, if any, stays), as a
    /// service's `command` does; a string runs with `sh -c` (the image must have a shell).
    pub command: HookCommand,
    /// The step is stopped (and fails) when it runs longer.
    pub timeout: Duration,
    /// Whether the old release can still run on what the step left behind. A migration is
    /// one-way unless declared reversible: after a one-way step has run, a failed deploy stops
    /// (exit 4) instead of rolling back to a version that may not read the new schema.
    pub reversible: bool,
}

impl Default for ReleaseStep {
    fn default() -> Self {
        ReleaseStep {
            command: HookCommand::Argv(Vec::new()),
            timeout: Duration::from_secs(10 * 60),
            reversible: false,
        }
    }
}

impl ReleaseStep {
    /// The argv a container runs: the list as written, or `sh -c LINE`.
    pub fn argv(&self) -> Vec<String> {
        match &self.command {
            HookCommand::Argv(argv) => argv.clone(),
            HookCommand::Shell(line) => vec!["sh".into(), "-c".into(), line.clone()],
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Build {
    /// Build context directory, relative to the repository root.
    pub context: String,
    pub dockerfile: Option<String>,
    pub args: IndexMap<String, String>,
    /// Target stage of a multi-stage Dockerfile.
    pub target: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Port {
    /// The port the process listens on inside the container.
    pub container: u16,
    /// A fixed host port; unset lets each container get its own (what rolling deploys need).
    pub host: Option<u16>,
    pub protocol: Protocol,
}

impl Default for Port {
    fn default() -> Self {
        Port {
            container: 0,
            host: None,
            protocol: Protocol::Tcp,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    pub requests: ResourceSet,
    pub limits: ResourceSet,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceSet {
    /// CPU, e.g. `500m` or `1`.
    pub cpu: Option<Quantity>,
    /// Memory, e.g. `512Mi` or `1Gi`.
    pub memory: Option<Quantity>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// HTTP check: GET `path` must answer `status`.
    pub http: Option<HttpCheck>,
    /// TCP check: the port accepts a connection.
    pub tcp: Option<TcpCheck>,
    /// A command run inside the container; exit 0 is healthy.
    pub command: Option<Vec<String>>,
    /// Use the image's own HEALTHCHECK.
    pub image: bool,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failures during this time after start do not count.
    pub start_period: Duration,
    /// Consecutive successes to become healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures to become unhealthy.
    pub unhealthy_threshold: u32,
    /// The longest a new container may take to become healthy.
    pub deadline: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            http: None,
            tcp: None,
            command: None,
            image: false,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            start_period: Duration::from_secs(0),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            deadline: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpCheck {
    pub path: String,
    /// The container port; the first declared port when unset.
    pub port: Option<u16>,
    pub status: u16,
}

impl Default for HttpCheck {
    fn default() -> Self {
        HttpCheck {
            path: "/health".into(),
            port: None,
            status: 200,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TcpCheck {
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Rollout {
    /// New containers started per batch above the desired count.
    pub max_surge: u32,
    /// Containers that may be missing from the desired count during the rollout.
    pub max_unavailable: u32,
    /// Docker, a region of several hosts: how many hosts change at once (each rolls its own
    /// share of the replicas in batches of `max_surge`).
    pub hosts_at_once: u32,
    /// How long a drained container may finish its requests before it is stopped.
    pub drain_timeout: Duration,
    /// How long the new release is watched after the switch before it is declared good.
    pub bake: Duration,
    /// The 5xx ratio (0..1) of the new servers during the bake that fails the deploy.
    pub max_5xx_ratio: f64,
    /// Kubernetes `progressDeadlineSeconds`.
    pub progress_deadline: Duration,
    /// `rolling` (the default), `canary` or `blue_green`.
    pub strategy: super::progressive::Strategy,
    /// A canary's steps, in order: `{weight: N}`, `{pause: 2m}`, `{pause: {}}` (until
    /// `promote`), `{analysis: {...}}`.
    pub steps: Vec<super::progressive::Step>,
    /// What a canary's new release must show, at its `analysis` steps and in the background
    /// of its timed pauses.
    pub analysis: super::progressive::Analysis,
    /// `blue_green`: where the new set answers before `promote` (Docker: an HAProxy backend
    /// of its own, behind its own frontend, both in haproxy.cfg).
    pub preview: super::progressive::Preview,
    /// `blue_green`: how long the old set stays (running, weight 0) after the switch, so a
    /// `rollback` in that time is one Runtime API line.
    pub scale_down_delay: Duration,
    /// `blue_green`: switch as soon as the new set is healthy and its `analysis` (if any)
    /// passed, without waiting for `promote` (default false).
    pub auto_promote: bool,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            max_surge: 1,
            max_unavailable: 0,
            hosts_at_once: 1,
            drain_timeout: Duration::from_secs(30),
            bake: Duration::from_secs(10),
            max_5xx_ratio: 0.05,
            progress_deadline: Duration::from_secs(600),
            strategy: super::progressive::Strategy::Rolling,
            steps: Vec::new(),
            analysis: super::progressive::Analysis::default(),
            preview: super::progressive::Preview::default(),
            scale_down_delay: Duration::from_secs(30),
            auto_promote: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    /// Target average CPU utilisation in percent.
    pub cpu: Option<u32>,
    /// Target average memory utilisation in percent.
    pub memory: Option<u32>,
}

impl Default for Autoscale {
    fn default() -> Self {
        Autoscale {
            min: 3,
            max: 50,
            cpu: Some(70),
            memory: Some(80),
        }
    }
}

/// An environment variable: a plain value or a reference to a secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EnvValue {
    Plain(String),
    Secret { secret: SecretRef },
}

impl<'de> Deserialize<'de> for EnvValue {
    /// Asks for a newtype named [`super::de::ENV_VALUE`] so the region-file deserializer can
    /// check the shape and carry on after a mistake; other deserializers just unwrap it.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = EnvValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a number, a boolean or {secret: \"env:NAME\"}")
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<EnvValue, D::Error> {
                d.deserialize_any(V)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvValue, E> {
                Ok(EnvValue::Plain(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EnvValue, E> {
                Ok(EnvValue::Plain(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EnvValue, E> {
                Ok(EnvValue::Plain(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<EnvValue, E> {
                Ok(EnvValue::Plain(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<EnvValue, E> {
                Ok(EnvValue::Plain(v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<EnvValue, A::Error> {
                let mut secret = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "secret" {
                        return Err(de::Error::custom(format!(
                            "unknown key '{key}' in an environment value; only `secret:` is allowed"
                        )));
                    }
                    secret = Some(map.next_value::<SecretRef>()?);
                }
                secret
                    .map(|secret| EnvValue::Secret { secret })
                    .ok_or_else(|| {
                        de::Error::custom("an empty mapping; write {secret: \"env:NAME\"}")
                    })
            }
        }
        d.deserialize_newtype_struct(super::de::ENV_VALUE, V)
    }
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum EnvValueSchema {
    Plain(String),
    Number(f64),
    Bool(bool),
    Secret {
        /// `env:NAME` (read from the deploying machine's environment) or `file:PATH`.
        secret: SecretRef,
    },
}

impl JsonSchema for EnvValue {
    fn schema_name() -> Cow<'static, str> {
        "EnvValue".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        EnvValueSchema::json_schema(generator)
    }
}

impl fmt::Display for EnvValue {
    /// Secrets print as `<secret:env:NAME>`, never as their value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvValue::Plain(s) => f.write_str(s),
            EnvValue::Secret { secret } => write!(f, "<secret:{}>", secret.0),
        }
    }
}

macro_rules! checked_scalar {
    ($ty:ident, $name:literal, $schema:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($name)
                    }
                    fn visit_newtype_struct<D: Deserializer<'de>>(
                        self,
                        d: D,
                    ) -> Result<$ty, D::Error> {
                        let s = String::deserialize(d)?;
                        s.parse()
                            .map_err(|(m, _): (String, String)| de::Error::custom(m))
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$ty, E> {
                        s.parse().map_err(|(m, _): (String, String)| E::custom(m))
                    }
                }
                d.deserialize_newtype_struct($name, V)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                $schema
            }
        }
    };
}

/// A length of time written with a unit: `500ms`, `10s`, `2m`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Duration(StdDuration::from_secs(s))
    }
}

impl std::str::FromStr for Duration {
    type Err = (String, String);
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(Duration)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            f.write_str("0s")
        } else if ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

checked_scalar!(
    Duration,
    "packfy::Duration",
    json_schema!({"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$", "examples": ["10s", "500ms", "2m"]})
);

/// Parses `1h30m`, `10s`, `250ms`.
pub fn parse_duration(s: &str) -> Result<StdDuration, (String, String)> {
    let bad = || {
        (
            format!("'{s}' is not a duration"),
            "write a number with a unit: ms, s, m or h (e.g. '10s', '1m30s')".to_string(),
        )
    };
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = StdDuration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit_len] {
            "ms" => StdDuration::from_millis(n),
            "s" => StdDuration::from_secs(n),
            "m" => StdDuration::from_secs(n * 60),
            "h" => StdDuration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
        total += part;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A Kubernetes-style quantity: `500m`, `2`, `512Mi`, `1Gi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity(pub String);

impl std::str::FromStr for Quantity {
    type Err = (String, String);
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_quantity(s).map(|()| Quantity(s.to_string()))
    }
}

impl Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

checked_scalar!(
    Quantity,
    "packfy::Quantity",
    json_schema!({"type": ["string", "number"], "pattern": "^[0-9]+(\\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"})
);

pub fn check_quantity(s: &str) -> Result<(), (String, String)> {
    let num_len = s
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (num, suffix) = s.split_at(num_len);
    let ok = !num.is_empty()
        && num.parse::<f64>().is_ok()
        && matches!(
            suffix,
            "" | "m" | "k" | "M" | "G" | "T" | "Ki" | "Mi" | "Gi" | "Ti"
        );
    if ok {
        Ok(())
    } else {
        Err((
            format!("'{s}' is not a resource quantity"),
            "use Kubernetes notation: '500m' or '1' for CPU, '512Mi' or '1Gi' for memory".into(),
        ))
    }
}

impl Quantity {
    /// CPU in millicores (`500m` → 500, `2` → 2000).
    pub fn millicores(&self) -> Option<u64> {
        match self.0.strip_suffix('m') {
            Some(n) => n.parse::<f64>().ok().map(|x| x as u64),
            None => self.0.parse::<f64>().ok().map(|x| (x * 1000.0) as u64),
        }
    }

    /// Memory in bytes (`512Mi`, `1Gi`, `1G`).
    pub fn bytes(&self) -> Option<u64> {
        let s = &self.0;
        let units: [(&str, f64); 8] = [
            ("Ki", 1024.0),
            ("Mi", 1024.0 * 1024.0),
            ("Gi", 1024.0 * 1024.0 * 1024.0),
            ("Ti", 1024.0f64.powi(4)),
            ("k", 1e3),
            ("M", 1e6),
            ("G", 1e9),
            ("T", 1e12),
        ];
        for (suffix, mult) in units {
            if let Some(n) = s.strip_suffix(suffix) {
                return n.parse::<f64>().ok().map(|x| (x * mult) as u64);
            }
        }
        s.parse::<f64>().ok().map(|x| x as u64)
    }
}

/// Local commands run around deploys and rollbacks, in order; see `hooks.rs`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Hooks {
    /// Before anything changes (e.g. the test suites); a failure aborts the deploy.
    pub pre_deploy: Vec<Hook>,
    /// After the deploy (e.g. smoke tests); `PACKFY_OUTCOME` says how it ended.
    pub post_deploy: Vec<Hook>,
    /// Before a rollback changes anything; a failure aborts the rollback.
    pub pre_rollback: Vec<Hook>,
    /// After a rollback; `PACKFY_OUTCOME` says how it ended.
    pub post_rollback: Vec<Hook>,
}

/// One local command.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Hook {
    /// Shown in output and errors, and passed as `PACKFY_HOOK_NAME`; the program's name when unset.
    pub name: Option<String>,
    /// `["cargo", "test"]` runs the program directly; a string runs with `sh -c`.
    pub command: HookCommand,
    /// The hook's process group is killed when it runs longer.
    pub timeout: Duration,
    /// Working directory, relative to the repository root; the root when unset.
    pub dir: Option<String>,
}

impl Default for Hook {
    fn default() -> Self {
        Hook {
            name: None,
            command: HookCommand::Argv(Vec::new()),
            timeout: Duration::from_secs(5 * 60),
            dir: None,
        }
    }
}

/// A program and its arguments, or one line for `sh -c`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum HookCommand {
    Argv(Vec<String>),
    Shell(String),
}

impl<'de> Deserialize<'de> for HookCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = HookCommand;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list [program, arg, ...] or a string run with `sh -c`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HookCommand, E> {
                Ok(HookCommand::Shell(v.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<HookCommand, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    argv.push(arg);
                }
                Ok(HookCommand::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum HookCommandSchema {
    /// The program and its arguments, run without a shell.
    Argv(Vec<String>),
    /// A command line run with `sh -c`.
    Shell(String),
}

impl JsonSchema for HookCommand {
    fn schema_name() -> Cow<'static, str> {
        "HookCommand".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        HookCommandSchema::json_schema(generator)
    }
}

impl fmt::Display for HookCommand {
    /// `cargo test --workspace`, or the shell line as written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookCommand::Argv(argv) => f.write_str(&argv.join(" ")),
            HookCommand::Shell(line) => f.write_str(line),
        }
    }
}

/// A webhook told about deploys; see `notify.rs`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Webhook {
    /// Where to POST: `https://…`, or `{secret: "env:NAME"}` when the URL is itself a
    /// credential (Slack's incoming-webhook URLs are).
    pub url: EnvValue,
    /// The payload: `slack` (incoming-webhook message) or `generic` (the event as JSON).
    pub kind: WebhookKind,
    /// HMAC-SHA256 key signing generic payloads (`X-Packfy-Signature`): `{secret: "env:NAME"}`.
    pub secret: Option<SecretValue>,
    /// The events sent; all of them when unset.
    pub events: Vec<NotifyKind>,
    /// The limit of one attempt (connect and answer); a delivery makes at most 3 attempts.
    pub timeout: Duration,
}

impl Default for Webhook {
    fn default() -> Self {
        Webhook {
            url: EnvValue::Plain(String::new()),
            kind: WebhookKind::Generic,
            secret: None,
            events: NotifyKind::ALL.to_vec(),
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebhookKind {
    /// A Slack-compatible incoming-webhook message (`text` and `blocks`).
    Slack,
    /// The event as JSON, signed when a `secret` is set.
    #[default]
    Generic,
}

impl WebhookKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            WebhookKind::Slack => "slack",
            WebhookKind::Generic => "generic",
        }
    }
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum NotifyKind {
    /// A deploy started.
    Start,
    /// A deploy finished and the new release is serving.
    Success,
    /// A deploy failed (whether or not the previous release could be put back).
    Failure,
    /// A release was rolled back, automatically after a failure or by `rollback`.
    Rollback,
}

impl NotifyKind {
    pub const ALL: [NotifyKind; 4] = [
        NotifyKind::Start,
        NotifyKind::Success,
        NotifyKind::Failure,
        NotifyKind::Rollback,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            NotifyKind::Start => "start",
            NotifyKind::Success => "success",
            NotifyKind::Failure => "failure",
            NotifyKind::Rollback => "rollback",
        }
    }
}

impl fmt::Display for NotifyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that must come from a secret: `{secret: "env:NAME"}` or `{secret: "file:PATH"}`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    /// `env:NAME` (read from the deploying machine's environment) or `file:PATH`.
    pub secret: SecretRef,
}

/// Where a secret comes from: `env:NAME` or `file:PATH`. The value is read only by a deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef(pub String);

impl std::str::FromStr for SecretRef {
    type Err = (String, String);
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_secret_ref(s).map(|()| SecretRef(s.to_string()))
    }
}

impl Serialize for SecretRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

checked_scalar!(
    SecretRef,
    "packfy::SecretRef",
    json_schema!({"type": "string", "pattern": "^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$"})
);

pub fn check_secret_ref(s: &str) -> Result<(), (String, String)> {
    let ok = match s.split_once(':') {
        Some(("env", name)) => is_env_name(name),
        Some(("file", path)) => !path.is_empty(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err((
            format!("'{s}' is not a secret reference"),
            "write 'env:NAME' to read the deploying machine's environment, or 'file:PATH'".into(),
        ))
    }
}

pub fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The region file as written: the settings plus per-environment overlays (for the schema).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RegionFile {
    #[serde(flatten)]
    pub base: RegionConfig,
    /// Overlays applied on top of the region for one environment.
    #[serde(default)]
    pub environments: IndexMap<Environment, RegionConfig>,
}

/// The JSON Schema of a region file, generated from [`RegionFile`], for editors.
///
/// Any setting may be `null`: in a region file that removes the value a lower layer set
/// (`frontend: null`), so the schema must not call it a mistake.
pub fn region_file_schema() -> serde_json::Value {
    let mut schema =
        serde_json::to_value(schemars::schema_for!(RegionFile)).expect("a schema is plain JSON");
    add_fleet_settings(&mut schema);
    allow_null_settings(&mut schema);
    schema
}

/// One schema serves every region file, `_defaults.yaml` included, which may also hold the
/// fleet settings (`waves`, `max_parallel`, `on_failure`): their properties join the schema,
/// each description saying where they belong (validation refuses them elsewhere).
fn add_fleet_settings(schema: &mut serde_json::Value) {
    let fleet = serde_json::to_value(schemars::schema_for!(super::global::Global))
        .expect("a schema is plain JSON");
    for key in ["properties", "$defs"] {
        let Some(from) = fleet.get(key).and_then(|v| v.as_object()) else {
            continue;
        };
        let into = schema
            .as_object_mut()
            .expect("a schema is an object")
            .entry(key)
            .or_insert_with(|| serde_json::json!({}));
        for (name, value) in from {
            let mut value = value.clone();
            if key == "properties" {
                if let Some(obj) = value.as_object_mut() {
                    let said = obj
                        .get("description")
                        .and_then(|d| d.as_str())
                        .unwrap_or_default();
                    let description = format!("Only in _defaults.yaml. {said}");
                    obj.insert("description".into(), description.trim_end().into());
                    obj.remove("default");
                }
            }
            into[name.as_str()] = value;
        }
    }
}

/// Lets every property and map value of `schema` (and its subschemas) also be `null`.
fn allow_null_settings(schema: &mut serde_json::Value) {
    use serde_json::{json, Value};
    fn nullable(s: &mut Value) {
        let Some(obj) = s.as_object_mut() else {
            return;
        };
        let null = json!({"type": "null"});
        let alternatives = ["anyOf", "oneOf"]
            .into_iter()
            .find(|k| obj.contains_key(*k));
        if let Some(r) = obj.remove("$ref") {
            obj.insert("anyOf".into(), json!([{"$ref": r}, {"type": "null"}]));
        } else if let Some(Value::Array(alts)) = alternatives.and_then(|k| obj.get_mut(k)) {
            if !alts.contains(&null) {
                alts.push(null);
            }
        } else if let Some(t) = obj.get_mut("type") {
            match t {
                Value::String(one) if one != "null" => *t = json!([one.clone(), "null"]),
                Value::Array(many) if !many.contains(&json!("null")) => many.push(json!("null")),
                _ => {}
            }
            if let Some(Value::Array(values)) = obj.get_mut("enum") {
                if !values.contains(&Value::Null) {
                    values.push(Value::Null);
                }
            }
        }
    }
    match schema {
        Value::Object(obj) => {
            for (key, value) in obj.iter_mut() {
                match key.as_str() {
                    "properties" => {
                        if let Value::Object(props) = value {
                            props.values_mut().for_each(nullable);
                        }
                    }
                    "additionalProperties" => nullable(value),
                    _ => {}
                }
                allow_null_settings(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(allow_null_settings),
        _ => {}
    }
}

/// The three environments every region has.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Staging,
    Production,
}

impl Environment {
    pub const ALL: [Environment; 3] = [
        Environment::Development,
        Environment::Staging,
        Environment::Production,
    ];
    pub const NAMES: [&'static str; 3] = ["development", "staging", "production"];

    pub fn as_str(&self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "development" | "dev" => Ok(Environment::Development),
            "staging" => Ok(Environment::Staging),
            "production" | "prod" => Ok(Environment::Production),
            _ => Err(format!(
                "unknown environment '{s}' (expected development, staging or production)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("1m30s").unwrap(), StdDuration::from_secs(90));
        assert_eq!(
            parse_duration("250ms").unwrap(),
            StdDuration::from_millis(250)
        );
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5 s").is_err());
        assert_eq!(Duration::from_secs(120).to_string(), "2m");
    }

    #[test]
    fn quantities() {
        assert_eq!("500m".parse::<Quantity>().unwrap().millicores(), Some(500));
        assert_eq!("1".parse::<Quantity>().unwrap().millicores(), Some(1000));
        assert_eq!("1Gi".parse::<Quantity>().unwrap().bytes(), Some(1 << 30));
        assert!(check_quantity("lots").is_err());
    }

    #[test]
    fn secret_refs() {
        assert!(check_secret_ref("env:JWT_SECRET").is_ok());
        assert!(check_secret_ref("file:/run/secrets/x").is_ok());
        assert!(check_secret_ref("vault:x").is_err());
        assert!(check_secret_ref("env:1BAD").is_err());
    }
}
