//! `backups:` of a region: the data backup jobs every deploy runs before it changes anything.
//!
//! A job's standard output is the dump. It runs either here, on the deploying machine
//! (`command:`), or inside a running container of one of the region's services through the
//! Docker exec API (`exec:`). Kubernetes pod exec is not in the schema until it exists.
//! The rules below need more than one value at a time, so they run with the other rules of
//! `validate.rs`; each reports a key path, a message and a hint.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model::{is_env_name, Duration, EnvValue, RegionConfig};

/// One data backup job.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BackupJob {
    /// Names the backup file (`<job>.dump.zst`); unique within the region.
    pub name: String,
    /// A command run on the deploying machine (no shell); its standard output is the dump.
    /// `${NAME}` in an argument is replaced by the job's `env:` or this machine's environment.
    pub command: Option<Vec<String>>,
    /// A command run in a running container of one of the region's services.
    pub exec: Option<ExecJob>,
    /// Environment for the command: plain values or `{secret: "env:NAME"}` / `{secret: "file:PATH"}`.
    pub env: IndexMap<String, EnvValue>,
    /// Where the backups go [default: `backups/` beside the regions directory]: a directory,
    /// an S3-compatible bucket `s3://BUCKET/PREFIX` (see `s3:`), or an absolute directory on
    /// a host reached over SSH, `ssh://[USER@]HOST[:PORT]/PATH` (usually one of the region's
    /// hosts; the system's ssh client, its keys and known_hosts, `PACKFY_SSH_CONFIG`). Dumps
    /// are laid out as `<store>/<region>/<env>/<release>/<job>.<ext>`, each beside its
    /// `<job>.json` manifest.
    pub store: Option<String>,
    /// How to reach an `s3://` store; unset keys fall back to the usual `AWS_*` variables.
    pub s3: Option<S3Options>,
    pub compression: Compression,
    /// Backups of this job kept per region and environment (the oldest are removed).
    pub keep: u32,
    /// A required job that fails stops the deploy before anything changes; a job that is not
    /// required only warns.
    pub required: bool,
    /// The longest the job may run.
    pub timeout: Duration,
    /// The command `backup restore` feeds the decompressed dump to on standard input, e.g.
    /// `[psql, --dbname, "${DATABASE_URL}"]`. Restoring is never automatic.
    pub restore: Option<Vec<String>>,
}

impl Default for BackupJob {
    fn default() -> Self {
        BackupJob {
            name: String::new(),
            command: None,
            exec: None,
            env: IndexMap::new(),
            store: None,
            s3: None,
            compression: Compression::Zstd,
            keep: 7,
            required: true,
            timeout: Duration::from_secs(30 * 60),
            restore: None,
        }
    }
}

impl BackupJob {
    /// The command and, for an `exec:` job, the service it runs in (`command:` wins when both
    /// are set, which validation refuses); `None` when neither is.
    pub fn argv(&self) -> Option<(&[String], Option<&str>)> {
        match (&self.command, &self.exec) {
            (Some(cmd), _) => Some((cmd, None)),
            (None, Some(x)) => Some((&x.command, Some(&x.service))),
            (None, None) => None,
        }
    }
}

/// `exec: {service: NAME, command: [...]}`
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ExecJob {
    /// The service whose running container runs the command.
    pub service: String,
    /// The command (no shell); `${NAME}` is replaced on the deploying machine, as for
    /// `command:`, and the job's `env:` is set in the exec.
    pub command: Vec<String>,
}

/// `s3:` of a job whose `store:` is `s3://BUCKET/PREFIX`. Each key left unset is taken from
/// the deploying machine's environment as the AWS tools read it (`AWS_ENDPOINT_URL`,
/// `AWS_REGION` or `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct S3Options {
    /// The server of an S3-compatible store, e.g. `https://minio.internal:9000` (`${NAME}`
    /// is replaced from the environment); an `http://` endpoint is allowed as written.
    /// [default: AWS S3 itself]
    pub endpoint: Option<String>,
    /// The bucket's region [default: `AWS_REGION`, else `us-east-1`].
    pub region: Option<String>,
    /// The access key ID: a plain value or `{secret: "env:NAME"}`.
    pub access_key_id: Option<EnvValue>,
    /// The secret access key: a secret reference, `{secret: "env:NAME"}` or
    /// `{secret: "file:PATH"}`, never the value itself.
    pub secret_access_key: Option<EnvValue>,
}

/// `s3://BUCKET/PREFIX` → (bucket, prefix without surrounding slashes); `None` for a store
/// that is not an S3 URL. The bucket follows S3's naming rules (3–63 of `a-z 0-9 . -`).
pub fn parse_s3_url(store: &str) -> Option<Result<(&str, &str), String>> {
    let rest = store.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/');
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    Some(if !bucket_ok {
        Err(format!("'{bucket}' is not a bucket name"))
    } else if !prefix.is_empty()
        && prefix
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        Err(format!(
            "the prefix '{prefix}' has an empty, '.' or '..' part"
        ))
    } else {
        Ok((bucket, prefix))
    })
}

/// `ssh://[USER@]HOST[:PORT]/PATH` → (`ssh://[USER@]HOST[:PORT]`, `/PATH` without a
/// trailing slash); `None` for a store that is not an SSH URL. The path is absolute and of
/// plain characters (letters, digits, `/ . _ - +`): it goes into the commands run on the host.
pub fn parse_ssh_url(store: &str) -> Option<Result<(&str, &str), String>> {
    let rest = store.strip_prefix("ssh://")?;
    let Some(slash) = rest.find('/') else {
        return Some(Err(format!("'{store}' names no directory on the host")));
    };
    let (host, path) = rest.split_at(slash);
    let endpoint = &store[..store.len() - rest.len() + slash];
    let path = path.trim_end_matches('/');
    let hostname = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let hostname = hostname.rsplit_once(':').map_or(hostname, |(h, port)| {
        if port.parse::<u16>().is_ok() {
            h
        } else {
            hostname
        }
    });
    Some(
        if hostname.is_empty()
            || hostname.starts_with('-')
            || !hostname
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            Err(format!("'{host}' is not a host name"))
        } else if path.is_empty() {
            Err(format!("'{store}' names no directory on the host"))
        } else if path
            .split('/')
            .skip(1)
            .any(|p| p.is_empty() || p == "." || p == "..")
            || !path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+'))
        {
            Err(format!(
                "the path '{path}' has an empty, '.' or '..' part, or a character other than letters, digits and / . _ - +"
            ))
        } else {
            Ok((endpoint, path))
        },
    )
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
    None,
}

impl Compression {
    /// The file extension of a dump stored this way.
    pub fn extension(&self) -> &'static str {
        match self {
            Compression::Zstd => "dump.zst",
            Compression::Gzip => "dump.gz",
            Compression::None => "dump",
        }
    }
}

/// Names ending so are secrets written in plain text (the same list as for services).
const SECRET_SUFFIXES: [&str; 7] = [
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "TOKEN",
    "API_KEY",
    "PRIVATE_KEY",
    "SECRET_KEY",
];

/// Whether a command argument names a `.env` file (`.env`, `.env.production`, `app/.env`).
fn names_dotenv(arg: &str) -> bool {
    arg.split(|c: char| c == '/' || c.is_whitespace() || c == '=')
        .any(|part| part == ".env" || part.starts_with(".env."))
}

fn is_job_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !s.starts_with(['-', '_'])
}

/// Checks the `backups:` of a region; `report(path, message, hint)` records a problem.
pub fn check(cfg: &RegionConfig, report: &mut dyn FnMut(&str, String, &str)) {
    let mut names: Vec<(&str, usize)> = Vec::new();
    for (i, job) in cfg.backups.iter().enumerate() {
        let p = format!("backups.{i}");
        if job.name.is_empty() {
            report(
                &p,
                format!("{p}: no name"),
                "give every job a name, e.g. `name: db`; it names the backup file",
            );
        } else if !is_job_name(&job.name) {
            report(
                &format!("{p}.name"),
                format!("{p}.name: '{}' is not a valid job name", job.name),
                "letters, digits, '-' and '_', at most 63 characters (it names the backup file)",
            );
        } else if let Some((_, first)) = names.iter().find(|(n, _)| *n == job.name) {
            report(
                &format!("{p}.name"),
                format!(
                    "{p}.name: '{}' is already the name of backups.{first}",
                    job.name
                ),
                "job names name the backup files; make them unique",
            );
        } else {
            names.push((&job.name, i));
        }
        let mut commands: Vec<(String, &Vec<String>)> = Vec::new();
        match (&job.command, &job.exec) {
            (None, None) => report(
                &p,
                format!("{p}: neither `command` nor `exec` is set"),
                "run a command here with `command: [pg_dump, ...]`, or in a container of the region with `exec: {service: db, command: [...]}`",
            ),
            (Some(_), Some(_)) => report(
                &format!("{p}.exec"),
                format!("{p}: both `command` and `exec` are set"),
                "a job runs either here (`command`) or in a container (`exec`); remove one",
            ),
            (Some(cmd), None) => commands.push((format!("{p}.command"), cmd)),
            (None, Some(exec)) => {
                let ep = format!("{p}.exec");
                if cfg.target.kubernetes().is_some() {
                    report(
                        &ep,
                        format!("{ep}: runs in a Docker container, and this region targets Kubernetes"),
                        "use a `command:` run on the deploying machine; exec in a pod is not supported yet",
                    );
                }
                if exec.service.is_empty() {
                    report(
                        &ep,
                        format!("{ep}.service is not set"),
                        "the service whose running container runs the command",
                    );
                } else if !cfg.services.contains_key(&exec.service) {
                    let known: Vec<&str> = cfg.services.keys().map(String::as_str).collect();
                    report(
                        &format!("{ep}.service"),
                        format!("{ep}.service: no service named '{}'", exec.service),
                        &format!("services are: {}", known.join(", ")),
                    );
                }
                commands.push((format!("{ep}.command"), &exec.command));
            }
        }
        if let Some(r) = &job.restore {
            commands.push((format!("{p}.restore"), r));
        }
        for (cp, cmd) in commands {
            if cmd.is_empty() || cmd[0].is_empty() {
                report(
                    &cp,
                    format!("{cp}: is empty"),
                    "a program and its arguments, e.g. [pg_dump, --dbname, \"${DATABASE_URL}\"]",
                );
            }
            if let Some(arg) = cmd.iter().find(|a| names_dotenv(a)) {
                report(
                    &cp,
                    format!("{cp}: '{arg}' is a .env file, which holds secrets"),
                    "back up data, never .env files: secrets live in the environment or a vault, not in archives",
                );
            }
        }
        if job.keep == 0 {
            report(
                &format!("{p}.keep"),
                format!("{p}.keep: must be at least 1"),
                "keep: 7 keeps the last seven backups of this job per region and environment",
            );
        }
        if job.timeout.0.is_zero() {
            report(
                &format!("{p}.timeout"),
                format!("{p}.timeout: must be above 0"),
                "e.g. 30m",
            );
        }
        if job.store.as_deref() == Some("") {
            report(
                &format!("{p}.store"),
                format!("{p}.store: is empty"),
                "a directory, s3://BUCKET/PREFIX, ssh://[USER@]HOST/PATH, or leave it unset for backups/ beside the regions directory",
            );
        }
        if let Some(Err(why)) = job.store.as_deref().and_then(parse_ssh_url) {
            report(
                &format!("{p}.store"),
                format!("{p}.store: {why}"),
                "write ssh://[USER@]HOST[:PORT]/ABSOLUTE/PATH: a host as ssh knows it (one of the region's hosts), then a directory there",
            );
        }
        check_s3(&p, job, report);
        for (key, value) in &job.env {
            let ep = format!("{p}.env.{key}");
            if !is_env_name(key) {
                report(
                    &ep,
                    format!("{p}.env: '{key}' is not a valid variable name"),
                    "letters, digits and '_', not starting with a digit",
                );
            }
            let upper = key.to_ascii_uppercase();
            if matches!(value, EnvValue::Plain(v) if !v.is_empty())
                && SECRET_SUFFIXES.iter().any(|s| upper.ends_with(s))
            {
                report(
                    &ep,
                    format!("{ep}: looks like a secret written in plain text"),
                    &format!("write `{key}: {{secret: \"env:{key}\"}}` and set it where the deploy runs; secrets never belong in region files"),
                );
            }
        }
    }
}

/// `store: s3://…` and its `s3:` options.
fn check_s3(p: &str, job: &BackupJob, report: &mut dyn FnMut(&str, String, &str)) {
    let s3_store = job.store.as_deref().and_then(parse_s3_url);
    if let Some(Err(why)) = &s3_store {
        report(
            &format!("{p}.store"),
            format!("{p}.store: {why}"),
            "write s3://BUCKET/PREFIX: a bucket of 3-63 lowercase letters, digits, '.' and '-', then an optional prefix",
        );
    }
    let Some(s3) = &job.s3 else { return };
    if s3_store.is_none() {
        report(
            &format!("{p}.s3"),
            format!("{p}.s3: is set, and the store is not an s3:// bucket"),
            "set `store: s3://BUCKET/PREFIX`, or remove `s3:`",
        );
    }
    if let Some(EnvValue::Plain(v)) = &s3.secret_access_key {
        if !v.is_empty() {
            report(
                &format!("{p}.s3.secret_access_key"),
                format!("{p}.s3.secret_access_key: a secret written in plain text"),
                "write `secret_access_key: {secret: \"env:NAME\"}` and set it where the deploy runs, or leave it unset to use AWS_SECRET_ACCESS_KEY",
            );
        }
    }
    // `${NAME}` is replaced when the store is opened; what is written must be a URL already.
    if let Some(e) = &s3.endpoint {
        let url_like = ["${", "http://", "https://"]
            .iter()
            .any(|p| e.starts_with(p));
        if !url_like {
            report(
                &format!("{p}.s3.endpoint"),
                format!("{p}.s3.endpoint: '{e}' is not an http:// or https:// URL"),
                "e.g. https://minio.internal:9000",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::{de, validate, yaml, RegionConfig};

    const BASE: &str = "currency: USD
target: {docker: {host: unix:///var/run/docker.sock}}
services:
  web: {image: packfy-sample}
";

    /// Every problem the rules find in BASE + `backups`, as `message at line:col — hint`.
    fn problems(backups: &str) -> Vec<String> {
        let file: Arc<str> = Arc::from("r.yaml");
        let text = format!("{BASE}backups:\n{backups}");
        let tree = yaml::parse(&file, &text).expect("yaml");
        let cfg: RegionConfig = de::from_node(&tree, "").unwrap_or_else(|ds| {
            panic!(
                "{}",
                ds.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        validate::region("r", &cfg, &tree)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_good_job_has_no_problems_and_takes_the_defaults() {
        assert_eq!(
            problems("  - {name: db, command: [pg_dump, --dbname, \"${DATABASE_URL}\"]}\n  - {name: files, exec: {service: web, command: [tar, c, /data]}, compression: gzip, keep: 3, required: false, timeout: 10s, restore: [psql]}\n"),
            Vec::<String>::new()
        );
        let tree = yaml::parse(
            &Arc::from("r.yaml"),
            &format!("{BASE}backups: [{{name: db, command: [x]}}]\n"),
        )
        .unwrap();
        let cfg: RegionConfig = de::from_node(&tree, "").unwrap();
        let job = &cfg.backups[0];
        assert_eq!(job.compression, super::Compression::Zstd);
        assert_eq!((job.keep, job.required), (7, true));
        assert_eq!(job.timeout.to_string(), "30m");
    }

    #[test]
    fn duplicate_names() {
        assert_eq!(
            problems("  - {name: db, command: [a]}\n  - {name: db, command: [b]}\n"),
            ["backups.1.name: 'db' is already the name of backups.0 at r.yaml:7:12 — job names name the backup files; make them unique"]
        );
    }

    #[test]
    fn names_are_required_and_file_safe() {
        assert_eq!(
            problems("  - {command: [a]}\n  - {name: ../x, command: [a]}\n"),
            [
                "backups.0: no name at r.yaml:6:5 — give every job a name, e.g. `name: db`; it names the backup file",
                "backups.1.name: '../x' is not a valid job name at r.yaml:7:12 — letters, digits, '-' and '_', at most 63 characters (it names the backup file)",
            ]
        );
    }

    #[test]
    fn ssh_stores_name_a_host_and_an_absolute_directory() {
        assert_eq!(
            problems("  - {name: db, command: [a], store: \"ssh://deploy@h1.packfy.test/var/backups\"}\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            problems("  - {name: db, command: [a], store: \"ssh://h1.packfy.test\"}\n  - {name: e, command: [a], store: \"ssh://h1/srv/../etc\"}\n"),
            [
                "backups.0.store: 'ssh://h1.packfy.test' names no directory on the host at r.yaml:6:37 — write ssh://[USER@]HOST[:PORT]/ABSOLUTE/PATH: a host as ssh knows it (one of the region's hosts), then a directory there",
                "backups.1.store: the path '/srv/../etc' has an empty, '.' or '..' part, or a character other than letters, digits and / . _ - + at r.yaml:7:36 — write ssh://[USER@]HOST[:PORT]/ABSOLUTE/PATH: a host as ssh knows it (one of the region's hosts), then a directory there",
            ]
        );
    }

    #[test]
    fn s3_stores_name_a_bucket_and_keep_their_secret_key_out_of_the_file() {
        assert_eq!(
            problems("  - {name: db, command: [a], store: \"s3://packfy-backups/prod/eu\", s3: {endpoint: \"${S3_URL}\", region: eu-west-1, access_key_id: AKIA1, secret_access_key: {secret: \"env:S3_SECRET\"}}}\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            problems("  - {name: db, command: [a], store: \"s3://B/x\"}\n  - {name: e, command: [a], s3: {endpoint: minio:9000, secret_access_key: hunter22}}\n"),
            [
                "backups.0.store: 'B' is not a bucket name at r.yaml:6:37 — write s3://BUCKET/PREFIX: a bucket of 3-63 lowercase letters, digits, '.' and '-', then an optional prefix",
                "backups.1.s3: is set, and the store is not an s3:// bucket at r.yaml:7:33 — set `store: s3://BUCKET/PREFIX`, or remove `s3:`",
                "backups.1.s3.secret_access_key: a secret written in plain text at r.yaml:7:75 — write `secret_access_key: {secret: \"env:NAME\"}` and set it where the deploy runs, or leave it unset to use AWS_SECRET_ACCESS_KEY",
                "backups.1.s3.endpoint: 'minio:9000' is not an http:// or https:// URL at r.yaml:7:44 — e.g. https://minio.internal:9000",
            ]
        );
        assert_eq!(
            super::parse_s3_url("s3://bkt/a/b/"),
            Some(Ok(("bkt", "a/b")))
        );
        assert_eq!(super::parse_s3_url("s3://bkt"), Some(Ok(("bkt", ""))));
        assert_eq!(
            super::parse_ssh_url("ssh://deploy@h1.packfy.test:2222/var/backups/"),
            Some(Ok(("ssh://deploy@h1.packfy.test:2222", "/var/backups")))
        );
        assert_eq!(
            super::parse_ssh_url("ssh://h1/srv/b"),
            Some(Ok(("ssh://h1", "/srv/b")))
        );
        assert_eq!(super::parse_ssh_url("/srv/b"), None);
        for bad in [
            "ssh://h1",
            "ssh://h1/",
            "ssh:///srv",
            "ssh://-oProxyCommand=x/srv",
            "ssh://h1/srv/../etc",
            "ssh://h1/srv/a b",
            "ssh://h1/srv/$(id)",
        ] {
            assert!(
                super::parse_ssh_url(bad).unwrap().is_err(),
                "{bad} was accepted"
            );
        }
        assert!(super::parse_s3_url("s3://bkt/a//b").unwrap().is_err());
        assert_eq!(super::parse_s3_url("/var/backups"), None);
    }

    #[test]
    fn exec_service_must_exist() {
        assert_eq!(
            problems("  - {name: db, exec: {service: postgres, command: [pg_dump]}}\n"),
            ["backups.0.exec.service: no service named 'postgres' at r.yaml:6:32 — services are: web"]
        );
    }

    #[test]
    fn exactly_one_of_command_and_exec() {
        assert_eq!(
            problems("  - {name: db}\n  - {name: x, command: [a], exec: {service: web, command: [b]}}\n"),
            [
                "backups.0: neither `command` nor `exec` is set at r.yaml:6:5 — run a command here with `command: [pg_dump, ...]`, or in a container of the region with `exec: {service: db, command: [...]}`",
                "backups.1: both `command` and `exec` are set at r.yaml:7:35 — a job runs either here (`command`) or in a container (`exec`); remove one",
            ]
        );
    }

    #[test]
    fn keep_at_least_one_and_a_positive_timeout() {
        assert_eq!(
            problems("  - {name: db, command: [a], keep: 0, timeout: 0s}\n"),
            [
                "backups.0.keep: must be at least 1 at r.yaml:6:36 — keep: 7 keeps the last seven backups of this job per region and environment",
                "backups.0.timeout: must be above 0 at r.yaml:6:48 — e.g. 30m",
            ]
        );
    }

    #[test]
    fn empty_commands() {
        assert_eq!(
            problems("  - {name: db, command: [], restore: [\"\"]}\n"),
            [
                "backups.0.command: is empty at r.yaml:6:25 — a program and its arguments, e.g. [pg_dump, --dbname, \"${DATABASE_URL}\"]",
                "backups.0.restore: is empty at r.yaml:6:38 — a program and its arguments, e.g. [pg_dump, --dbname, \"${DATABASE_URL}\"]",
            ]
        );
    }

    #[test]
    fn never_back_up_dotenv_files() {
        let p = problems("  - {name: cfg, command: [tar, c, app/.env.production]}\n");
        assert_eq!(
            p,
            ["backups.0.command: 'app/.env.production' is a .env file, which holds secrets at r.yaml:6:26 — back up data, never .env files: secrets live in the environment or a vault, not in archives"]
        );
        assert!(!super::names_dotenv("environment.sql"));
        assert!(!super::names_dotenv("--file=dump.env-free"));
        assert!(super::names_dotenv("--env-file=.env"));
        assert!(super::names_dotenv(".env"));
    }

    #[test]
    fn secrets_stay_references() {
        assert_eq!(
            problems("  - name: db\n    command: [pg_dump]\n    env: {PGPASSWORD: hunter2, PGHOST: db}\n"),
            ["backups.0.env.PGPASSWORD: looks like a secret written in plain text at r.yaml:8:23 — write `PGPASSWORD: {secret: \"env:PGPASSWORD\"}` and set it where the deploy runs; secrets never belong in region files"]
        );
        assert_eq!(
            problems("  - name: db\n    command: [pg_dump]\n    env: {PGPASSWORD: {secret: \"env:PGPASSWORD\"}}\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn exec_needs_a_docker_target() {
        let file: Arc<str> = Arc::from("k.yaml");
        let text = "currency: USD\ntarget: {kubernetes: {namespace: ns}}\nservices: {web: {image: x}}\nbackups: [{name: db, exec: {service: web, command: [pg_dump]}}]\n";
        let tree = yaml::parse(&file, text).unwrap();
        let cfg: RegionConfig = de::from_node(&tree, "").unwrap();
        let p: Vec<String> = validate::region("k", &cfg, &tree)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            p,
            ["backups.0.exec: runs in a Docker container, and this region targets Kubernetes at k.yaml:4:28 — use a `command:` run on the deploying machine; exec in a pod is not supported yet"]
        );
    }

    #[test]
    fn the_schema_has_no_kubernetes_exec_yet() {
        let schema = serde_json::to_string(&schemars::schema_for!(super::BackupJob)).unwrap();
        assert!(schema.contains("\"exec\""));
        assert!(!schema.contains("pod"), "{schema}");
    }
}
