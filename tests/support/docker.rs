//! Docker helpers: the `docker` CLI against one engine, guards that remove containers and
//! images when dropped, the sample image builder, and what a deploy test asserts about what
//! really runs (container IDs, running versions) and cleans up after.

use std::ffi::OsStr;
use std::process::{Command, Output};

use super::{repo_root, run, stdout, TestEnv};

impl TestEnv {
    /// Builds the sample app image `packfy-sample:VERSION` on `host` with
    /// tests/env/build-sample.sh; `build_args` are baked into the image's environment, e.g.
    /// `[("NEVER_HEALTHY", "1")]` (see tests/sample-app/Dockerfile). The image is removed
    /// when the returned guard is dropped; use a [`unique_name`] as VERSION.
    pub fn build_sample(&self, host: &str, version: &str, build_args: &[(&str, &str)]) -> Image {
        let script = repo_root().join("tests/env/build-sample.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script).arg(version).env("DOCKER_HOST", host);
        for (k, v) in build_args {
            cmd.arg(format!("{k}={v}"));
        }
        let out = run(&mut cmd);
        let reference = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        assert!(
            !reference.is_empty(),
            "build-sample.sh printed no image reference"
        );
        Image {
            host: host.to_string(),
            reference,
        }
    }
}

/// `docker ARGS` against the engine `host` (a `unix://…` URL); panics with stderr on failure.
pub fn docker<S: AsRef<OsStr>>(host: &str, args: impl IntoIterator<Item = S>) -> Output {
    run(Command::new("docker").env("DOCKER_HOST", host).args(args))
}

/// `docker ARGS` against `host`, whatever its exit status.
pub fn docker_try<S: AsRef<OsStr>>(host: &str, args: impl IntoIterator<Item = S>) -> Output {
    Command::new("docker")
        .env("DOCKER_HOST", host)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker: {e}"))
}

/// A container that is removed (`docker rm -f`) when dropped, also when the test panics.
pub struct Container {
    pub host: String,
    pub name: String,
}

impl Container {
    /// `docker run -d --name NAME ARGS…` on `host`; `args` are the options and image, e.g.
    /// `["-p", "127.0.0.1::8080", "-e", "PACKFY_REGION=cuba", "packfy-sample:v1"]`.
    pub fn run<S: AsRef<OsStr>>(
        host: &str,
        name: &str,
        args: impl IntoIterator<Item = S>,
    ) -> Container {
        let container = Container {
            host: host.to_string(),
            name: name.to_string(),
        };
        let mut all: Vec<std::ffi::OsString> =
            vec!["run".into(), "-d".into(), "--name".into(), name.into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        docker(host, all);
        container
    }

    /// `127.0.0.1:PORT` where the container's `port/tcp` is published.
    pub fn published(&self, port: u16) -> String {
        let out = docker(&self.host, ["port", &self.name, &format!("{port}/tcp")]);
        let text = stdout(&out);
        let line = text
            .lines()
            .find(|l| l.starts_with("127.0.0.1:") || l.starts_with("0.0.0.0:"));
        let line = line.unwrap_or_else(|| {
            panic!(
                "{} publishes {port}/tcp nowhere on IPv4: {text:?}",
                self.name
            )
        });
        line.replace("0.0.0.0:", "127.0.0.1:")
    }

    /// The container's logs (stdout and stderr), for failure messages.
    pub fn logs(&self) -> String {
        let out = docker_try(&self.host, ["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker_try(&self.host, ["rm", "-f", "-v", &self.name]);
    }
}

/// An image reference on one engine, removed (`docker rmi -f --no-prune`) when dropped.
/// `--no-prune`: the untagged parent images a build made stay, because a concurrent build of
/// the same Dockerfile uses them as its cache (removing them under it fails that build with
/// "failed to get digest …: no such file").
pub struct Image {
    pub host: String,
    /// e.g. `packfy-sample:proof-1234-0-5f3a`.
    pub reference: String,
}

impl Image {
    /// Also remove `reference` (another tag of the image, a pulled copy…) from `host` on drop.
    pub fn guard(host: &str, reference: &str) -> Image {
        Image {
            host: host.to_string(),
            reference: reference.to_string(),
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = docker_try(&self.host, ["rmi", "-f", "--no-prune", &self.reference]);
    }
}

/// Removes every container and volume carrying `label` (`key=value`) on `host`, whatever
/// state they are in: the cleanup of tests that deploy a region of their own.
pub fn remove_labelled(host: &str, label: &str) {
    let filter = format!("label={label}");
    for (list, rm) in [
        (vec!["ps", "-aq", "--filter", &filter], vec!["rm", "-f"]),
        (
            vec!["volume", "ls", "-q", "--filter", &filter],
            vec!["volume", "rm", "-f"],
        ),
    ] {
        let Ok(out) = Command::new("docker")
            .env("DOCKER_HOST", host)
            .args(&list)
            .output()
        else {
            continue;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .env("DOCKER_HOST", host)
                .args(&rm)
                .args(&ids)
                .output();
        }
    }
}

/// Full IDs, sorted, of the containers on `host` that carry every label of `labels`
/// (`key=value`): the running ones, or with `all` those in any state.
pub fn container_ids(host: &str, labels: &[&str], all: bool) -> Vec<String> {
    let mut args = vec!["ps".to_string(), "-q".into(), "--no-trunc".into()];
    if all {
        args.push("-a".into());
    }
    for label in labels {
        args.extend(["--filter".into(), format!("label={label}")]);
    }
    let mut ids: Vec<String> = String::from_utf8_lossy(&docker(host, args).stdout)
        .lines()
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

/// The `packfy.version` labels of the running app containers of `region` on `host`, sorted:
/// what a deploy test asserts about what really runs.
pub fn running_versions(host: &str, region: &str) -> Vec<String> {
    let out = docker(
        host,
        [
            "ps",
            "--filter",
            &format!("label=packfy.region={region}"),
            "--filter",
            "label=packfy.kind=app",
            "--format",
            "{{.Label \"packfy.version\"}}",
        ],
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}
