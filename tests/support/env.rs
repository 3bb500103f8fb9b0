//! The test environment: [`TestEnv`] (Docker engines, registry, HAProxy, PostgreSQL, the
//! sample app) and [`KubeEnv`] (the Kubernetes control plane), read from
//! `target/test-env/env.sh`, and [`is_ci`], which turns a missing part into a failure.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (the main crate's manifest directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The running test environment, as `target/test-env/env.sh` describes it.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// `DOCKER_HOST`: the first engine, e.g. `unix:///…/docker-pf1.sock`.
    pub docker_host: String,
    /// `PACKFY_DOCKER_HOSTS`: every engine (region host), the first one included.
    pub docker_hosts: Vec<String>,
    /// `PACKFY_REGISTRY`: `127.0.0.1:PORT` of the image registry (plain HTTP).
    pub registry: String,
    /// `PACKFY_REGISTRY_AUTH` (`127.0.0.1:PORT`), `PACKFY_REGISTRY_AUTH_USER` and
    /// `PACKFY_REGISTRY_AUTH_PASSWORD`: a registry that refuses anonymous pushes and pulls.
    pub registry_auth: String,
    pub registry_auth_user: String,
    pub registry_auth_password: String,
    /// `PACKFY_HAPROXY_SOCKET`: HAProxy's Runtime API socket (level admin).
    pub haproxy_socket: PathBuf,
    /// `PACKFY_HAPROXY_FRONTEND` / `PACKFY_HAPROXY_BACKEND`: the first region's pair.
    pub haproxy_frontend: String,
    pub haproxy_backend: String,
    /// `PACKFY_HAPROXY_FRONTENDS` / `PACKFY_HAPROXY_BACKENDS`: one pair per Docker host,
    /// in the order of `docker_hosts`.
    pub haproxy_frontends: Vec<String>,
    pub haproxy_backends: Vec<String>,
    /// `PACKFY_HAPROXY_TEST_BACKENDS` / `PACKFY_HAPROXY_TEST_FRONTENDS`: the test lanes,
    /// leased with [`TestEnv::lease_lane`].
    pub lane_backends: Vec<String>,
    pub lane_frontends: Vec<String>,
    /// `PACKFY_HAPROXY_TEST_PREVIEW_FRONTENDS`: the frontends of the lanes' blue-green
    /// preview backends (`packfy_tN_preview`), in the order of `lane_backends`.
    pub lane_preview_frontends: Vec<String>,
    /// `PACKFY_PG_URL`: `postgresql://packfy:PASSWORD@127.0.0.1:PORT/packfy` (see
    /// [`TestEnv::pg_password`]).
    pub pg_url: String,
    /// `PACKFY_SAMPLE_BIN`: the sample app's static binary.
    pub sample_bin: PathBuf,
    /// `PACKFY_ENV_DIR`: target/test-env (logs/, run/, locks/ …).
    pub env_dir: PathBuf,
}

const REQUIRED: &[&str] = &[
    "DOCKER_HOST",
    "PACKFY_DOCKER_HOSTS",
    "PACKFY_REGISTRY",
    "PACKFY_REGISTRY_AUTH",
    "PACKFY_REGISTRY_AUTH_USER",
    "PACKFY_REGISTRY_AUTH_PASSWORD",
    "PACKFY_HAPROXY_SOCKET",
    "PACKFY_HAPROXY_FRONTEND",
    "PACKFY_HAPROXY_BACKEND",
    "PACKFY_HAPROXY_FRONTENDS",
    "PACKFY_HAPROXY_BACKENDS",
    "PACKFY_HAPROXY_TEST_FRONTENDS",
    "PACKFY_HAPROXY_TEST_BACKENDS",
    "PACKFY_PG_URL",
    "PACKFY_SAMPLE_BIN",
];

/// The test environment's variables: the process's when `PACKFY_TEST_ENV` is set (`make test`
/// sources env.sh), else `target/test-env/env.sh`'s.
pub(crate) fn env_vars() -> Result<HashMap<String, String>, String> {
    if std::env::var_os("PACKFY_TEST_ENV").is_some() {
        return Ok(std::env::vars().collect());
    }
    let file = repo_root().join("target/test-env/env.sh");
    let text = fs::read_to_string(&file).map_err(|e| {
        format!(
            "PACKFY_TEST_ENV is not set and {} cannot be read ({e})",
            file.display()
        )
    })?;
    Ok(parse_env_sh(&text))
}

/// The variable `key`, or why it is missing: `script` writes it.
fn set_by(vars: &HashMap<String, String>, key: &str, script: &str) -> Result<String, String> {
    vars.get(key)
        .filter(|v| !v.is_empty())
        .cloned()
        .ok_or_else(|| format!("{key} is not set ({script} writes it)"))
}

/// The test Kubernetes cluster (tests/k8s/up.sh, part of `make env-up`): its kubeconfig, the
/// context in it, and the kubectl built with it.
#[derive(Debug, Clone)]
pub struct KubeEnv {
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub context: String,
}

impl KubeEnv {
    /// The cluster, or `None` (after a note) when it is not up; under CI ([`is_ci`]) a missing
    /// cluster panics naming what is missing.
    pub fn get() -> Option<KubeEnv> {
        let found = env_vars().and_then(|vars| {
            let get = |k: &str| set_by(&vars, k, "tests/k8s/up.sh");
            let env = KubeEnv {
                kubeconfig: PathBuf::from(get("PACKFY_KUBECONFIG")?),
                kubectl: PathBuf::from(get("PACKFY_KUBECTL")?),
                context: String::new(),
            };
            if !env.kubeconfig.exists() || !env.kubectl.exists() {
                return Err(format!(
                    "{} or {} does not exist",
                    env.kubeconfig.display(),
                    env.kubectl.display()
                ));
            }
            let out = Command::new(&env.kubectl)
                .args(["--kubeconfig"])
                .arg(&env.kubeconfig)
                .args(["config", "current-context"])
                .output()
                .map_err(|e| format!("cannot run kubectl: {e}"))?;
            let context = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if context.is_empty() {
                return Err("the test kubeconfig has no current context".into());
            }
            Ok(KubeEnv { context, ..env })
        });
        match found {
            Ok(k) => Some(k),
            Err(why) if is_ci() => panic!("test cluster not available under CI: {why}"),
            Err(why) => {
                eprintln!("skipping: test cluster not up (run `make env-up`): {why}");
                None
            }
        }
    }

    /// `kubectl ARGS` against the test cluster (whatever it exits with).
    pub fn kubectl_try<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Output {
        Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=20s")
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// `kubectl ARGS`; panics with its stderr unless it exits 0; stdout.
    pub fn kubectl<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> String {
        let out = self.kubectl_try(args);
        assert!(
            out.status.success(),
            "kubectl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

/// The S3-compatible object store of the test environment (tests/env/s3.sh): a real server
/// on loopback with one bucket and one key.
#[derive(Debug, Clone)]
pub struct S3Env {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    /// What output must never show.
    pub secret_access_key: String,
    /// The server's root directory: a bucket is a directory, an object a file (to check what
    /// landed in the bucket, and to damage one).
    pub root: PathBuf,
}

impl S3Env {
    /// The object store, or `None` (after a note) when it is not up; under CI ([`is_ci`]) a
    /// missing store panics naming what is missing.
    pub fn get() -> Option<S3Env> {
        let found = env_vars().and_then(|vars| {
            let get = |k: &str| set_by(&vars, k, "tests/env/s3.sh");
            Ok(S3Env {
                endpoint: get("PACKFY_S3_ENDPOINT")?,
                bucket: get("PACKFY_S3_BUCKET")?,
                access_key_id: get("PACKFY_S3_ACCESS_KEY_ID")?,
                secret_access_key: get("PACKFY_S3_SECRET_ACCESS_KEY")?,
                root: vars
                    .get("PACKFY_ENV_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| repo_root().join("target/test-env"))
                    .join("s3"),
            })
        });
        match found {
            Ok(s) => Some(s),
            Err(why) if is_ci() => panic!("S3 store not available under CI: {why}"),
            Err(why) => {
                eprintln!("skipping: S3 store not up (run `make env-up`): {why}");
                None
            }
        }
    }

    /// The file the server keeps the object `key` of its bucket in.
    pub fn object_file(&self, key: &str) -> PathBuf {
        self.root.join(&self.bucket).join(key)
    }
}

/// Whether this run is under CI, where a missing part of the environment is a failure and
/// never a silent skip: `CI` set to anything but empty, `false` or `0` (CI systems set
/// `true`, some `1`; .ci/run exports `CI=true`).
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        let v = v.trim();
        !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
    })
}

impl TestEnv {
    /// The environment, or `None` (after a note on stderr) when it is not up. Under
    /// CI ([`is_ci`]) a missing environment panics instead, naming what is missing.
    ///
    /// Read from the process environment when `PACKFY_TEST_ENV` is set (`make test` sources
    /// env.sh), else from `target/test-env/env.sh` when it exists (after `make env-up`).
    pub fn get() -> Option<TestEnv> {
        match Self::load() {
            Ok(env) => Some(env),
            Err(why) if is_ci() => panic!("test environment not available under CI: {why}"),
            Err(why) => {
                eprintln!("skipping: test environment not up (run `make env-up`): {why}");
                None
            }
        }
    }

    /// Like [`TestEnv::get`], but also requires at least `n` Docker hosts.
    pub fn with_docker_hosts(n: usize) -> Option<TestEnv> {
        let env = Self::get()?;
        if env.docker_hosts.len() >= n {
            return Some(env);
        }
        let why = format!(
            "this test needs {n} Docker hosts, PACKFY_DOCKER_HOSTS has {} (PACKFY_DOCKERD_COUNT)",
            env.docker_hosts.len()
        );
        if is_ci() {
            panic!("{why}");
        }
        eprintln!("skipping: {why}");
        None
    }

    fn load() -> Result<TestEnv, String> {
        let vars = env_vars()?;
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|k| vars.get(*k).is_none_or(|v| v.is_empty()))
            .collect();
        if !missing.is_empty() {
            return Err(format!("missing {}", missing.join(", ")));
        }
        let var = |k: &str| vars[k].clone();
        let list = |k: &str| {
            vars[k]
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let env = TestEnv {
            docker_host: var("DOCKER_HOST"),
            docker_hosts: list("PACKFY_DOCKER_HOSTS"),
            registry: var("PACKFY_REGISTRY"),
            registry_auth: var("PACKFY_REGISTRY_AUTH"),
            registry_auth_user: var("PACKFY_REGISTRY_AUTH_USER"),
            registry_auth_password: var("PACKFY_REGISTRY_AUTH_PASSWORD"),
            haproxy_socket: PathBuf::from(var("PACKFY_HAPROXY_SOCKET")),
            haproxy_frontend: var("PACKFY_HAPROXY_FRONTEND"),
            haproxy_backend: var("PACKFY_HAPROXY_BACKEND"),
            haproxy_frontends: list("PACKFY_HAPROXY_FRONTENDS"),
            haproxy_backends: list("PACKFY_HAPROXY_BACKENDS"),
            lane_backends: list("PACKFY_HAPROXY_TEST_BACKENDS"),
            lane_frontends: list("PACKFY_HAPROXY_TEST_FRONTENDS"),
            lane_preview_frontends: vars
                .get("PACKFY_HAPROXY_TEST_PREVIEW_FRONTENDS")
                .map(|v| v.split_whitespace().map(String::from).collect())
                .unwrap_or_default(),
            pg_url: var("PACKFY_PG_URL"),
            sample_bin: PathBuf::from(var("PACKFY_SAMPLE_BIN")),
            env_dir: vars
                .get("PACKFY_ENV_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("target/test-env")),
        };
        // A stale env.sh (the machine was restarted, say) names sockets that are gone.
        for sock in env
            .docker_hosts
            .iter()
            .filter_map(|h| h.strip_prefix("unix://"))
        {
            if !Path::new(sock).exists() {
                return Err(format!("Docker socket {sock} does not exist"));
            }
        }
        if !env.haproxy_socket.exists() {
            return Err(format!(
                "HAProxy socket {} does not exist",
                env.haproxy_socket.display()
            ));
        }
        Ok(env)
    }
}

/// Parses the `export KEY="value"` lines of env.sh (also `KEY=value` and single quotes).
pub fn parse_env_sh(text: &str) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    for line in text.lines().map(str::trim) {
        let line = line.strip_prefix("export ").unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let value = if let Some(v) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            v.replace("\\\"", "\"").replace("\\\\", "\\")
        } else if let Some(v) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            v.to_string()
        } else {
            // Unquoted, as printf %q writes it: backslash escapes.
            let mut out = String::new();
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    out.extend(chars.next());
                } else {
                    out.push(c);
                }
            }
            out
        };
        vars.insert(key.to_string(), value);
    }
    vars
}

/// The test Prometheus (tests/env/prometheus.sh), scraping the test HAProxy's exporter every
/// second: `http://127.0.0.1:PORT`. `None` (after a note) when it is not up; under CI
/// ([`is_ci`]) a missing Prometheus panics naming what is missing.
pub fn prometheus_url() -> Option<String> {
    match env_vars()
        .and_then(|vars| set_by(&vars, "PACKFY_PROMETHEUS_URL", "tests/env/prometheus.sh"))
    {
        Ok(url) => Some(url),
        Err(why) if is_ci() => panic!("Prometheus not available under CI: {why}"),
        Err(why) => {
            eprintln!("skipping: Prometheus not up (run `make env-up`): {why}");
            None
        }
    }
}
