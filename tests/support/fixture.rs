//! Region files for the deploy-side tests, written by one builder instead of by hand in each
//! test file: [`RegionFile`] (a region, or `_defaults.yaml`) with its parts [`Service`],
//! [`Health`], [`Rollout`], [`Backup`] and [`Notification`], and [`RegionsDir`], the
//! temporary directory whose `regions/` holds them.
//!
//! ```ignore
//! let dir = RegionsDir::new();
//! let file = RegionFile::docker(&env.docker_host)
//!     .currency("USD")
//!     .lane(&lane, "web")
//!     .service(Service::new("web", "packfy-sample").replicas(3).port(8080)
//!         .health(Health::http("/health").interval("500ms"))
//!         .rollout(Rollout::new().bake("3s")));
//! dir.write("mexico", &file);
//! ```
//!
//! What it writes, in this order, each part only when set: `app`, `currency`,
//! `keep_releases`, `lock_ttl`, `waves`, `max_parallel`, `on_failure`, `target` (one line),
//! `traffic`, `services` (one block per service, one line per setting), `hooks`,
//! `notifications`, `backups`, then [`RegionFile::extra`] as written. Strings are written as
//! double-quoted scalars, so no value can turn into YAML syntax. A file with a currency, a
//! target and one service of only an image is exactly five lines, which the `validate` tests
//! that append broken YAML rely on for their line numbers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{unique_name, Lane};

/// A string as a YAML double-quoted scalar (JSON's string syntax is YAML's).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// `[a, b, c]` of double-quoted strings.
fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", items.join(", "))
}

/// `{k: v, …}` of already-rendered values.
fn map(entries: &[(String, String)]) -> String {
    let entries: Vec<String> = entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", entries.join(", "))
}

/// Sets `key` to `value` in an ordered list of settings, keeping its first place.
fn set(entries: &mut Vec<(String, String)>, key: &str, value: String) {
    match entries.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => entries.push((key.to_string(), value)),
    }
}

/// `{secret: "REFERENCE"}`: a value the CLI looks up, e.g. `env:PACKFY_TEST_API_TOKEN`.
fn secret(reference: &str) -> String {
    format!("{{secret: {}}}", q(reference))
}

/// A short region name no other test uses: [`unique_name`] without dashes, at most `len`
/// characters (region names are used in container names and labels).
pub fn region_name(prefix: &str, len: usize) -> String {
    unique_name(prefix)
        .replace('-', "")
        .chars()
        .take(len)
        .collect()
}

/// A temporary directory with an empty `regions/` in it, removed when dropped: what
/// [`super::cli`] takes as the directory of a test's own regions.
pub struct RegionsDir {
    dir: tempfile::TempDir,
}

impl RegionsDir {
    pub fn new() -> RegionsDir {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir(dir.path().join("regions")).expect("create regions/");
        RegionsDir { dir }
    }

    /// The directory itself (the CLI's working directory; `regions/` is in it).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `regions/`.
    pub fn regions(&self) -> PathBuf {
        self.dir.path().join("regions")
    }

    /// Writes `regions/NAME.yaml` (`_defaults` for the defaults file); returns its path.
    pub fn write(&self, name: &str, file: &RegionFile) -> PathBuf {
        let path = self.regions().join(format!("{name}.yaml"));
        std::fs::write(&path, file.render())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

#[derive(Debug, Clone)]
enum Target {
    Docker {
        host: String,
        /// `hosts:` instead of `host:` when not empty.
        hosts: Vec<String>,
        /// `identity_file`, `known_hosts` (ssh:// hosts).
        ssh: Vec<(String, String)>,
    },
    Kubernetes {
        context: String,
        namespace: String,
        health_url: Option<String>,
    },
}

#[derive(Debug, Clone)]
enum Traffic {
    None,
    Haproxy {
        /// One address is written as a string, several as a list.
        runtime_api: Vec<String>,
        /// `127.0.0.1:PORT`
        frontend: String,
        /// (service, backend)
        backends: Vec<(String, String)>,
    },
}

/// One region file (or `_defaults.yaml`, which has no target and no services). Each method
/// sets one part and returns the file, so a test keeps a file and derives changed copies of
/// it (`file.clone().keep_releases(1)`).
#[derive(Debug, Clone, Default)]
pub struct RegionFile {
    app: Option<String>,
    currency: Option<String>,
    keep_releases: Option<u32>,
    lock_ttl: Option<String>,
    waves: Vec<Vec<String>>,
    max_parallel: Option<u32>,
    on_failure: Option<String>,
    target: Option<Target>,
    traffic: Option<Traffic>,
    services: Vec<Service>,
    /// (kind, name, shell command)
    hooks: Vec<(String, String, String)>,
    notifications: Vec<Notification>,
    backups: Vec<Backup>,
    extra: String,
}

impl RegionFile {
    /// Nothing set: the start of a `_defaults.yaml`.
    pub fn new() -> RegionFile {
        RegionFile::default()
    }

    /// A region on the Docker engine `host` (`unix://…`, `ssh://…`).
    pub fn docker(host: &str) -> RegionFile {
        RegionFile::new().docker_host(host)
    }

    /// A region in `namespace` of the kubeconfig context `context`.
    pub fn kubernetes(context: &str, namespace: &str) -> RegionFile {
        RegionFile {
            target: Some(Target::Kubernetes {
                context: context.to_string(),
                namespace: namespace.to_string(),
                health_url: None,
            }),
            ..RegionFile::default()
        }
    }

    /// The target is (now) the Docker engine `host`.
    pub fn docker_host(mut self, host: &str) -> RegionFile {
        self.target = Some(Target::Docker {
            host: host.to_string(),
            hosts: Vec::new(),
            ssh: Vec::new(),
        });
        self
    }

    /// A region on several Docker hosts (`target.docker.hosts`).
    pub fn docker_hosts(mut self, hosts: &[String]) -> RegionFile {
        self.target = Some(Target::Docker {
            host: String::new(),
            hosts: hosts.to_vec(),
            ssh: Vec::new(),
        });
        self
    }

    /// A setting of the Docker target's ssh login: `identity_file` or `known_hosts`.
    pub fn docker_ssh(mut self, key: &str, value: &str) -> RegionFile {
        match &mut self.target {
            Some(Target::Docker { ssh, .. }) => set(ssh, key, value.to_string()),
            other => panic!("{key} is a Docker target's setting, the target is {other:?}"),
        }
        self
    }

    /// The Kubernetes target's `health_url`, asked after the rollout (`None` removes it).
    pub fn health_url(mut self, url: Option<&str>) -> RegionFile {
        match &mut self.target {
            Some(Target::Kubernetes { health_url, .. }) => *health_url = url.map(String::from),
            other => panic!("health_url is a Kubernetes target's setting, the target is {other:?}"),
        }
        self
    }

    pub fn app(mut self, app: &str) -> RegionFile {
        self.app = Some(app.to_string());
        self
    }

    pub fn currency(mut self, currency: &str) -> RegionFile {
        self.currency = Some(currency.to_string());
        self
    }

    pub fn keep_releases(mut self, n: u32) -> RegionFile {
        self.keep_releases = Some(n);
        self
    }

    /// e.g. `6s`.
    pub fn lock_ttl(mut self, ttl: &str) -> RegionFile {
        self.lock_ttl = Some(ttl.to_string());
        self
    }

    /// `traffic: none`: no load balancer (and no promise of zero downtime).
    pub fn traffic_none(mut self) -> RegionFile {
        self.traffic = Some(Traffic::None);
        self
    }

    /// Traffic through the leased HAProxy `lane`, whose backend serves `service`.
    pub fn lane(self, lane: &Lane, service: &str) -> RegionFile {
        let socket = lane.socket.display().to_string();
        self.haproxy(&socket, &lane.frontend, &[(service, &lane.backend)])
    }

    /// The HAProxy Runtime APIs of several load balancers (after [`RegionFile::haproxy`]),
    /// written as a list.
    pub fn runtime_apis(mut self, apis: &[&str]) -> RegionFile {
        match &mut self.traffic {
            Some(Traffic::Haproxy { runtime_api, .. }) => {
                *runtime_api = apis.iter().map(|a| a.to_string()).collect();
            }
            _ => panic!("runtime_apis: set haproxy(…) first"),
        }
        self
    }

    /// Traffic through HAProxy: its Runtime API socket, the frontend (`127.0.0.1:PORT`) and
    /// the backend of each service.
    pub fn haproxy(
        mut self,
        runtime_api: &str,
        frontend: &str,
        backends: &[(&str, &str)],
    ) -> RegionFile {
        self.traffic = Some(Traffic::Haproxy {
            runtime_api: vec![runtime_api.to_string()],
            frontend: frontend.to_string(),
            backends: backends
                .iter()
                .map(|(s, b)| (s.to_string(), b.to_string()))
                .collect(),
        });
        self
    }

    /// Adds a service (or replaces the one of the same name).
    pub fn service(mut self, service: Service) -> RegionFile {
        match self.services.iter_mut().find(|s| s.name == service.name) {
            Some(s) => *s = service,
            None => self.services.push(service),
        }
        self
    }

    /// Changes the service `name` with `change`.
    pub fn map_service(
        mut self,
        name: &str,
        change: impl FnOnce(Service) -> Service,
    ) -> RegionFile {
        let i = self
            .services
            .iter()
            .position(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name} in the region file"));
        let s = self.services.remove(i);
        self.services.insert(i, change(s));
        self
    }

    /// A hook of `kind` (`pre_deploy`, `post_deploy`, …) running `command` with `sh -c`.
    pub fn hook(mut self, kind: &str, name: &str, command: &str) -> RegionFile {
        self.hooks
            .push((kind.to_string(), name.to_string(), command.to_string()));
        self
    }

    pub fn notification(mut self, notification: Notification) -> RegionFile {
        self.notifications.push(notification);
        self
    }

    pub fn backup(mut self, backup: Backup) -> RegionFile {
        self.backups.push(backup);
        self
    }

    /// Backup jobs instead of those set so far.
    pub fn backups(mut self, backups: &[Backup]) -> RegionFile {
        self.backups = backups.to_vec();
        self
    }

    /// `waves: [[a], [b, c], …]`: the order in which `--region all` deploys.
    pub fn waves(mut self, waves: &[&[&str]]) -> RegionFile {
        self.waves = waves
            .iter()
            .map(|w| w.iter().map(|r| r.to_string()).collect())
            .collect();
        self
    }

    pub fn max_parallel(mut self, n: u32) -> RegionFile {
        self.max_parallel = Some(n);
        self
    }

    /// `halt`, `rollback_wave`, …
    pub fn on_failure(mut self, what: &str) -> RegionFile {
        self.on_failure = Some(what.to_string());
        self
    }

    /// YAML appended as written, at the top level, after everything else.
    pub fn extra(mut self, yaml: &str) -> RegionFile {
        self.extra.push_str(yaml);
        self
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut y = String::new();
        if let Some(app) = &self.app {
            writeln!(y, "app: {}", q(app)).unwrap();
        }
        if let Some(currency) = &self.currency {
            writeln!(y, "currency: {}", q(currency)).unwrap();
        }
        if let Some(n) = self.keep_releases {
            writeln!(y, "keep_releases: {n}").unwrap();
        }
        if let Some(ttl) = &self.lock_ttl {
            writeln!(y, "lock_ttl: {ttl}").unwrap();
        }
        if !self.waves.is_empty() {
            let waves: Vec<String> = self.waves.iter().map(|w| list(w)).collect();
            writeln!(y, "waves: [{}]", waves.join(", ")).unwrap();
        }
        if let Some(n) = self.max_parallel {
            writeln!(y, "max_parallel: {n}").unwrap();
        }
        if let Some(what) = &self.on_failure {
            writeln!(y, "on_failure: {what}").unwrap();
        }
        match &self.target {
            None => {}
            Some(Target::Docker { host, hosts, ssh }) => {
                let mut d = if hosts.is_empty() {
                    vec![("host".to_string(), q(host))]
                } else {
                    vec![("hosts".to_string(), list(hosts))]
                };
                d.extend(ssh.iter().map(|(k, v)| (k.clone(), q(v))));
                writeln!(y, "target: {{docker: {}}}", map(&d)).unwrap();
            }
            Some(Target::Kubernetes {
                context,
                namespace,
                health_url,
            }) => {
                let mut k = vec![
                    ("context".to_string(), q(context)),
                    ("namespace".to_string(), q(namespace)),
                ];
                if let Some(url) = health_url {
                    k.push(("health_url".into(), q(url)));
                }
                writeln!(y, "target: {{kubernetes: {}}}", map(&k)).unwrap();
            }
        }
        match &self.traffic {
            None => {}
            Some(Traffic::None) => y.push_str("traffic: none\n"),
            Some(Traffic::Haproxy {
                runtime_api,
                frontend,
                backends,
            }) => {
                let backends: Vec<(String, String)> =
                    backends.iter().map(|(s, b)| (s.clone(), q(b))).collect();
                let h = [
                    (
                        "runtime_api".to_string(),
                        match runtime_api.as_slice() {
                            [one] => q(one),
                            many => list(many),
                        },
                    ),
                    ("frontend".to_string(), q(&format!("http://{frontend}"))),
                    ("backends".to_string(), map(&backends)),
                ];
                writeln!(y, "traffic: {{haproxy: {}}}", map(&h)).unwrap();
            }
        }
        if !self.services.is_empty() {
            y.push_str("services:\n");
            for s in &self.services {
                s.render(&mut y);
            }
        }
        if !self.hooks.is_empty() {
            y.push_str("hooks:\n");
            let mut kinds: Vec<&str> = Vec::new();
            for (kind, _, _) in &self.hooks {
                if !kinds.contains(&kind.as_str()) {
                    kinds.push(kind);
                }
            }
            for kind in kinds {
                writeln!(y, "  {kind}:").unwrap();
                for (_, name, command) in self.hooks.iter().filter(|h| h.0 == kind) {
                    writeln!(y, "    - {{name: {}, command: {}}}", q(name), q(command)).unwrap();
                }
            }
        }
        if !self.notifications.is_empty() {
            y.push_str("notifications:\n");
            for n in &self.notifications {
                writeln!(y, "  - {}", map(&n.settings)).unwrap();
            }
        }
        if !self.backups.is_empty() {
            y.push_str("backups:\n");
            for b in &self.backups {
                writeln!(y, "  - {}", map(&b.settings)).unwrap();
            }
        }
        y.push_str(&self.extra);
        y
    }
}

/// One service of a region.
#[derive(Debug, Clone)]
pub struct Service {
    name: String,
    /// Rendered settings in the order first set, after `image`.
    settings: Vec<(String, String)>,
    /// Rendered values of `env:`, in the order first set.
    env: Vec<(String, String)>,
}

impl Service {
    /// The service `name` of the image `image` (a repository, the version is the deploy's).
    pub fn new(name: &str, image: &str) -> Service {
        Service {
            name: name.to_string(),
            settings: vec![("image".into(), q(image))],
            env: Vec::new(),
        }
    }

    fn with(mut self, key: &str, value: String) -> Service {
        set(&mut self.settings, key, value);
        self
    }

    pub fn image(self, image: &str) -> Service {
        self.with("image", q(image))
    }

    /// Built from `context` (a directory relative to the regions directory's parent).
    pub fn build(self, context: &str) -> Service {
        self.with("build", format!("{{context: {}}}", q(context)))
    }

    pub fn replicas(self, n: u32) -> Service {
        self.with("replicas", n.to_string())
    }

    /// `resources: {requests: {cpu: CPU}}`.
    pub fn cpu_request(self, cpu: &str) -> Service {
        self.with("resources", format!("{{requests: {{cpu: {}}}}}", q(cpu)))
    }

    /// `autoscale: {min, max, cpu}` (a HorizontalPodAutoscaler on Kubernetes).
    pub fn autoscale(self, min: u32, max: u32, cpu: u32) -> Service {
        self.with(
            "autoscale",
            format!("{{min: {min}, max: {max}, cpu: {cpu}}}"),
        )
    }

    /// `ports: [{container: PORT}]`.
    pub fn port(self, container: u16) -> Service {
        self.with("ports", format!("[{{container: {container}}}]"))
    }

    /// A plain variable (a string; replaces an earlier value of `key`).
    pub fn env(mut self, key: &str, value: &str) -> Service {
        set(&mut self.env, key, q(value));
        self
    }

    /// A variable whose value the CLI looks up by `reference`, e.g. `env:PACKFY_TEST_TOKEN`.
    pub fn secret_env(mut self, key: &str, reference: &str) -> Service {
        set(&mut self.env, key, secret(reference));
        self
    }

    pub fn health(self, health: Health) -> Service {
        let rendered = map(&health.settings);
        self.with("health", rendered)
    }

    pub fn rollout(self, rollout: Rollout) -> Service {
        let rendered = map(&rollout.settings);
        self.with("rollout", rendered)
    }

    /// `release: {command: [ARGV…], timeout: T, reversible: B}`: the service's release step.
    pub fn release(self, argv: &[&str], timeout: &str, reversible: bool) -> Service {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        self.with(
            "release",
            format!(
                "{{command: {}, timeout: {timeout}, reversible: {reversible}}}",
                list(&argv)
            ),
        )
    }

    /// e.g. `5s`.
    pub fn stop_grace_period(self, d: &str) -> Service {
        self.with("stop_grace_period", d.to_string())
    }

    fn render(&self, y: &mut String) {
        writeln!(y, "  {}:", self.name).unwrap();
        for (k, v) in &self.settings {
            writeln!(y, "    {k}: {v}").unwrap();
        }
        if !self.env.is_empty() {
            writeln!(y, "    env: {}", map(&self.env)).unwrap();
        }
    }
}

/// A service's health check: `Health::http("/health").interval("500ms")…`.
#[derive(Debug, Clone)]
pub struct Health {
    settings: Vec<(String, String)>,
}

impl Health {
    /// `GET path` must answer 200.
    pub fn http(path: &str) -> Health {
        Health {
            settings: vec![("http".into(), format!("{{path: {}}}", q(path)))],
        }
    }

    /// The image's own HEALTHCHECK, as the engine reports it (`health: {image: true}`).
    pub fn image() -> Health {
        Health {
            settings: vec![("image".into(), "true".into())],
        }
    }

    fn with(mut self, key: &str, value: String) -> Health {
        set(&mut self.settings, key, value);
        self
    }

    pub fn start_period(self, d: &str) -> Health {
        self.with("start_period", d.into())
    }

    pub fn interval(self, d: &str) -> Health {
        self.with("interval", d.into())
    }

    pub fn timeout(self, d: &str) -> Health {
        self.with("timeout", d.into())
    }

    pub fn healthy_threshold(self, n: u32) -> Health {
        self.with("healthy_threshold", n.to_string())
    }

    pub fn unhealthy_threshold(self, n: u32) -> Health {
        self.with("unhealthy_threshold", n.to_string())
    }

    /// The longest a new release may take to turn healthy.
    pub fn deadline(self, d: &str) -> Health {
        self.with("deadline", d.into())
    }
}

/// A service's rollout settings: `Rollout::new().bake("3s")…`.
#[derive(Debug, Clone, Default)]
pub struct Rollout {
    settings: Vec<(String, String)>,
}

impl Rollout {
    pub fn new() -> Rollout {
        Rollout::default()
    }

    fn with(mut self, key: &str, value: String) -> Rollout {
        set(&mut self.settings, key, value);
        self
    }

    /// How long the new release is watched once it takes all traffic.
    pub fn bake(self, d: &str) -> Rollout {
        self.with("bake", d.into())
    }

    pub fn drain_timeout(self, d: &str) -> Rollout {
        self.with("drain_timeout", d.into())
    }

    pub fn max_surge(self, n: u32) -> Rollout {
        self.with("max_surge", n.to_string())
    }

    /// Docker, several hosts: how many change at once.
    pub fn hosts_at_once(self, n: u32) -> Rollout {
        self.with("hosts_at_once", n.to_string())
    }

    pub fn max_unavailable(self, n: u32) -> Rollout {
        self.with("max_unavailable", n.to_string())
    }

    /// Kubernetes: the Deployment's progress deadline.
    pub fn progress_deadline(self, d: &str) -> Rollout {
        self.with("progress_deadline", d.into())
    }

    /// `strategy: canary` with `steps` as written (a YAML flow list, e.g.
    /// `[{weight: 10}, {pause: {}}, {weight: 100}]`).
    pub fn canary(self, steps: &str) -> Rollout {
        self.with("strategy", "canary".into())
            .with("steps", steps.into())
    }

    /// `analysis:` as written (a YAML flow mapping, e.g. `{max_5xx_ratio: 0.05}`).
    pub fn analysis(self, analysis: &str) -> Rollout {
        self.with("analysis", analysis.into())
    }

    /// Whether `key` is set.
    pub fn has(&self, key: &str) -> bool {
        self.settings.iter().any(|(k, _)| k == key)
    }

    /// `strategy: blue_green`.
    pub fn blue_green(self) -> Rollout {
        self.with("strategy", "blue_green".into())
    }

    /// Any other key of `rollout:`, its value as written (`scale_down_delay`, `preview` …).
    pub fn set(self, key: &str, value: &str) -> Rollout {
        self.with(key, value.into())
    }
}

/// A data backup job taken before each deploy.
#[derive(Debug, Clone)]
pub struct Backup {
    settings: Vec<(String, String)>,
}

impl Backup {
    /// A program run where the CLI runs, its stdout the dump: `argv` is the command.
    pub fn command(name: &str, argv: &[&str]) -> Backup {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        Backup {
            settings: vec![("name".into(), q(name)), ("command".into(), list(&argv))],
        }
    }

    /// `argv` run in a running container of `service`, its stdout the dump.
    pub fn exec(name: &str, service: &str, argv: &[&str]) -> Backup {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        let exec = format!("{{service: {}, command: {}}}", q(service), list(&argv));
        Backup {
            settings: vec![("name".into(), q(name)), ("exec".into(), exec)],
        }
    }

    fn with(mut self, key: &str, value: String) -> Backup {
        set(&mut self.settings, key, value);
        self
    }

    /// `env: {KEY: {secret: REFERENCE}}` for the command.
    pub fn secret_env(self, key: &str, reference: &str) -> Backup {
        self.with("env", map(&[(key.to_string(), secret(reference))]))
    }

    /// How many backups of this job (per region and environment) are kept.
    pub fn keep(self, n: u32) -> Backup {
        self.with("keep", n.to_string())
    }

    /// The directory the dumps go to (default: `backups/` beside the regions directory).
    pub fn store(self, dir: &Path) -> Backup {
        self.with("store", q(&dir.display().to_string()))
    }

    /// A store written as a URL (`ssh://root@h1.packfy.test/srv/backups`).
    pub fn store_url(self, url: &str) -> Backup {
        self.with("store", q(url))
    }

    /// An S3-compatible bucket as the store: `store: URL` (`s3://bucket/prefix`) and `s3:`
    /// with the endpoint, and the credentials when given (the access key ID as written, the
    /// secret key as a secret reference); unset ones come from the `AWS_*` variables.
    pub fn s3_store(self, url: &str, endpoint: &str, credentials: Option<(&str, &str)>) -> Backup {
        let mut s3 = vec![("endpoint".to_string(), q(endpoint))];
        if let Some((key_id, secret_ref)) = credentials {
            s3.push(("access_key_id".into(), q(key_id)));
            s3.push(("secret_access_key".into(), secret(secret_ref)));
        }
        self.with("store", q(url)).with("s3", map(&s3))
    }

    /// `required: false`: a failure warns and the deploy goes on.
    pub fn required(self, required: bool) -> Backup {
        self.with("required", required.to_string())
    }

    /// `gzip`, `zstd`, …
    pub fn compression(self, how: &str) -> Backup {
        self.with("compression", how.into())
    }
}

/// A webhook told about each deploy.
#[derive(Debug, Clone)]
pub struct Notification {
    settings: Vec<(String, String)>,
}

impl Notification {
    /// `kind: generic`: the JSON notice, signed when a secret is set.
    pub fn generic(url: &str) -> Notification {
        Notification {
            settings: vec![("url".into(), q(url)), ("kind".into(), "generic".into())],
        }
    }

    /// Signed with the key the CLI looks up by `reference`, e.g. `env:PACKFY_TEST_HMAC_KEY`.
    pub fn secret(mut self, reference: &str) -> Notification {
        set(&mut self.settings, "secret", secret(reference));
        self
    }
}
