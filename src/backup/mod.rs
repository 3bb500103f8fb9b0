//! Data backups taken before every deploy (the `backups:` jobs of a region).
//!
//! A deploy calls [`before_deploy`] after it holds the lock and before it changes anything:
//!
//! 1. each job runs: a local command, or a command in a running container of the region
//!    through the Docker exec API ([`ExecIn`]); its standard output is the dump;
//! 2. the dump streams to `<store>/<region>/<env>/<release>/<job>.<ext>` through a hashing,
//!    counting writer into the compressor (`stream.rs`): never held in memory; the store is
//!    a directory, an S3-compatible bucket (`s3.rs`, a multipart upload) or a directory on a
//!    host over SSH (`ssh.rs`, through ssh's stdin), reached before any job runs;
//! 3. a manifest beside it records the sha256 and size of the dump and of the file;
//! 4. a required job that fails stops the deploy (its files and the others of this attempt are
//!    removed; nothing on the target was touched); a job that is not required only warns;
//! 5. when every job has run, each job's older backups beyond `keep` are removed, in this
//!    region and environment only.
//!
//! Restoring is never automatic (writes made after the backup would be lost): a rolled-back
//! deploy names its backups, and `backup restore` feeds one to a command a person chooses.
//! Secrets: job commands see `${NAME}` variables and secret references resolved, but output
//! shows the command as written, and stderr shown on failure has secret values masked.

pub mod s3;
pub mod ssh;
pub mod store;
pub mod stream;

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::config::backups::{BackupJob, Compression};
use crate::config::model::EnvValue;
use crate::context::Ctx;
use crate::error::{Error, Result};
use crate::secrets::resolve as resolve_secret;
use crate::ui::Ui;
pub use store::Store;
use stream::{Hashing, Tail};

/// Lines of a failed job's stderr shown.
const STDERR_LINES: usize = 15;

/// One backup taken before a release: what `backup list` shows and the release record keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// `region/env/release/job`: what `backup verify` and `backup restore` take.
    pub id: String,
    pub job: String,
    pub region: String,
    pub environment: String,
    /// The release it was taken before (that release had not changed anything yet).
    pub release: String,
    /// The store it is in: a directory or `s3://bucket/prefix`. With `id`, all another
    /// machine needs to find it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub store: String,
    /// The dump file or object URL (empty when the job failed or was skipped).
    pub path: String,
    pub compression: Compression,
    /// How it was taken, as written in the region file (`${NAME}` unexpanded).
    pub source: String,
    pub required: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// sha256 and size of the dump as the job wrote it.
    pub sha256: String,
    pub bytes: u64,
    /// sha256 and size of the stored (compressed) file.
    pub stored_sha256: String,
    pub stored_bytes: u64,
    /// Why nothing was stored, for a job that is not required and failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs `cmd` in a running container of a service; the seam between the backup runner and
/// a target (Docker today; a Kubernetes pod exec would be another implementation).
#[async_trait::async_trait]
pub trait ExecIn: Send + Sync {
    /// Streams the command's stdout into `out` and its stderr into `err`; returns its exit
    /// code, or `None` when no container of `service` runs.
    async fn exec(
        &self,
        service: &str,
        cmd: &[String],
        env: &[String],
        out: &mut (dyn AsyncWrite + Unpin + Send),
        err: &mut Tail,
    ) -> anyhow::Result<Option<i64>>;
}

/// Where a job's backups go: its `store:` (an `s3://` bucket, or a directory relative to the
/// regions directory's parent), or `backups/` beside the regions directory. Opening an S3
/// store reads its credentials (registered with the masker); the error names the job and
/// the reference, never a value.
pub fn store_of(ctx: &Ctx, job: &BackupJob) -> Result<Store> {
    open_store(ctx, job.store.as_deref(), job.s3.as_ref()).map_err(|why| {
        Error::usage_hint(
            format!("backups.{}: {why}", job.name),
            "nothing was changed; `packfy-deploy validate` checks the job",
        )
    })
}

/// A store as written (`None`: the default directory), with the `s3:` options of an
/// `s3://` one; the error says why it cannot be opened.
pub fn open_store(
    ctx: &Ctx,
    store: Option<&str>,
    s3_options: Option<&crate::config::backups::S3Options>,
) -> Result<Store, String> {
    let written = store.map(crate::config::expand_env);
    if let Some(parsed) = written
        .as_deref()
        .and_then(crate::config::backups::parse_ssh_url)
    {
        return parsed
            .and_then(|(endpoint, root)| ssh::Remote::open(endpoint, root))
            .map(|r| Store::Ssh(std::sync::Arc::new(r)))
            .map_err(|why| {
                format!(
                    "cannot open the store {}: {why}",
                    written.clone().unwrap_or_default()
                )
            });
    }
    match written
        .as_deref()
        .and_then(crate::config::backups::parse_s3_url)
    {
        None => Ok(Store::Dir(store_dir(ctx, store))),
        Some(parsed) => parsed
            .and_then(|(bucket, prefix)| s3::Bucket::open(bucket, prefix, s3_options))
            .map(Store::S3)
            .map_err(|why| {
                format!(
                    "cannot open the store {}: {why}",
                    written.unwrap_or_default()
                )
            }),
    }
}

/// A `store:` as written (`None`: the default store), absolute.
pub fn store_dir(ctx: &Ctx, store: Option<&str>) -> PathBuf {
    let root = match store.map(crate::config::expand_env) {
        Some(s) if Path::new(&s).is_absolute() => PathBuf::from(s),
        Some(s) => ctx.sibling(&s),
        None => ctx.sibling(store::DEFAULT_STORE),
    };
    std::path::absolute(&root).unwrap_or(root)
}

/// The backups of the deploy of `release` of `region`/`env`, run after the lock (and the
/// pre-deploy hooks) and before anything changes. `first_release`: no release serves yet.
pub async fn before_deploy(
    ctx: &Ctx,
    jobs: &[BackupJob],
    (region, env): (&str, &str),
    target: &dyn ExecIn,
    release: &str,
    first_release: bool,
) -> Result<Vec<BackupRecord>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let run = Run {
        region,
        env,
        release,
        first_release,
        jobs: jobs
            .iter()
            .map(|j| Ok((j.clone(), store_of(ctx, j)?)))
            .collect::<Result<_>>()?,
    };
    // A store out of reach stops the deploy before any job runs (exit 6, naming it).
    for (_, store) in &run.jobs {
        store
            .connect()
            .await
            .map_err(store::StoreError::into_error)?;
    }
    run.run(&ctx.ui, target).await
}

/// One deploy's backup jobs, each with its store.
pub struct Run<'a> {
    pub region: &'a str,
    pub env: &'a str,
    pub release: &'a str,
    /// No release serves yet: an `exec` job with no running container has nothing to back up.
    pub first_release: bool,
    pub jobs: Vec<(BackupJob, Store)>,
}

/// Why a job stored nothing.
struct Failure {
    what: String,
    stderr: Vec<String>,
    skipped: bool,
}

impl Run<'_> {
    pub async fn run(&self, ui: &Ui, target: &dyn ExecIn) -> Result<Vec<BackupRecord>> {
        // One record per job, in the order of `self.jobs`.
        let mut out: Vec<BackupRecord> = Vec::new();
        for (job, store) in &self.jobs {
            let source = describe(job);
            ui.status("Backing up", format!("{} ({source})", job.name));
            let started = Instant::now();
            let id = format!("{}/{}/{}/{}", self.region, self.env, self.release, job.name);
            match self.job(job, store, &id, &source, target).await {
                Ok(rec) => {
                    ui.status(
                        "Backed up",
                        format!(
                            "{id}: {} ({} dump), sha256 {} in {:.1}s",
                            human_bytes(rec.stored_bytes),
                            human_bytes(rec.bytes),
                            &rec.sha256[..12],
                            started.elapsed().as_secs_f64()
                        ),
                    );
                    out.push(rec);
                }
                Err(f) if job.required && !f.skipped => {
                    // The deploy does not happen: this attempt's backups would name a release
                    // that never was (and the next attempt reuses its number).
                    for ((_, store), r) in self.jobs.iter().zip(&out) {
                        if r.error.is_none() {
                            let _ = store.remove(r).await;
                        }
                    }
                    let mut message = format!(
                        "backup job '{}' failed, so the deploy of {}/{} did not start: {}",
                        job.name, self.region, self.env, f.what
                    );
                    quote_stderr(&mut message, &f.stderr);
                    return Err(Error::usage_hint(
                        message,
                        "nothing was changed; fix the job (run it by hand to see it fail), or set `required: false` on it to deploy without this backup",
                    ));
                }
                Err(f) => {
                    let mut line = format!(
                        "backup job '{}' {}: {}",
                        job.name,
                        if f.skipped {
                            "skipped"
                        } else {
                            "failed (not required; the deploy goes on)"
                        },
                        f.what
                    );
                    for l in &f.stderr {
                        line.push_str(&format!("\n    {l}"));
                    }
                    ui.warn(line);
                    out.push(BackupRecord {
                        error: Some(f.what),
                        ..self.record(job, id, source, Utc::now())
                    });
                }
            }
        }
        // Retention once every job has run: a failed deploy attempt never costs an old backup.
        for ((job, store), r) in self.jobs.iter().zip(&out) {
            if r.error.is_some() {
                continue;
            }
            match store
                .prune(self.region, self.env, &job.name, job.keep as usize)
                .await
            {
                Ok(removed) if !removed.is_empty() => ui.verbose(format!(
                    "removed {} older backup(s) of {} (keep: {}): {}",
                    removed.len(),
                    job.name,
                    job.keep,
                    removed
                        .iter()
                        .map(|r| r.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Ok(_) => {}
                Err(e) => ui.warn(format!(
                    "could not remove older backups of {} in {}: {e}",
                    job.name,
                    store.describe()
                )),
            }
        }
        Ok(out)
    }

    /// The record of `job` taken at `at`, with nothing stored yet.
    fn record(
        &self,
        job: &BackupJob,
        id: String,
        source: String,
        at: DateTime<Utc>,
    ) -> BackupRecord {
        BackupRecord {
            id,
            job: job.name.clone(),
            region: self.region.into(),
            environment: self.env.into(),
            release: self.release.into(),
            store: String::new(),
            path: String::new(),
            compression: job.compression,
            source,
            required: job.required,
            started_at: at,
            finished_at: at,
            sha256: String::new(),
            bytes: 0,
            stored_sha256: String::new(),
            stored_bytes: 0,
            error: None,
        }
    }

    async fn job(
        &self,
        job: &BackupJob,
        store: &Store,
        id: &str,
        source: &str,
        target: &dyn ExecIn,
    ) -> Result<BackupRecord, Failure> {
        let fail = |what: String| Failure {
            what,
            stderr: Vec::new(),
            skipped: false,
        };
        let mut env = JobEnv::resolve(job).map_err(fail)?;
        let Some((argv, exec_service)) = job.argv() else {
            return Err(fail("the job has no command".into()));
        };
        let argv = env.expand_all(argv).map_err(fail)?;

        let (to_store, writer, pending) = store
            .begin(id, &job.name, job.compression)
            .map_err(|e| fail(e.to_string()))?;
        let mut sink = Hashing::new(to_store);
        let started_at = Utc::now();

        let mut tail = Tail::default();
        let mut no_container = false;
        let work = async {
            let Some(service) = exec_service else {
                return run_local(&argv, &env, &mut sink, &mut tail).await;
            };
            match target
                .exec(service, &argv, &env.pairs(), &mut sink, &mut tail)
                .await
            {
                Ok(Some(0)) => Ok(()),
                Ok(Some(code)) => Err(format!("`{source}` exited {code}")),
                Ok(None) => {
                    no_container = true;
                    Err(format!("no container of service '{service}' is running"))
                }
                Err(e) => Err(format!("{e:#}")),
            }
        };
        let outcome = match tokio::time::timeout(job.timeout.0, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {}", job.timeout)),
        };
        let _ = sink.shutdown().await;
        let (_, sha256, bytes) = sink.finish();
        let stored = writer
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        let stored = match outcome
            .and_then(|()| stored.map_err(|e| format!("cannot write {}: {e}", pending.path)))
        {
            Ok(s) => s,
            Err(what) => {
                store.discard(pending).await;
                let skipped = no_container && self.first_release && bytes == 0;
                return Err(Failure {
                    what: if skipped {
                        format!("{what}, and no release serves yet: nothing to back up")
                    } else {
                        what
                    },
                    stderr: env.stderr(&tail),
                    skipped,
                });
            }
        };
        let rec = BackupRecord {
            store: store.describe(),
            path: pending.path.clone(),
            finished_at: Utc::now(),
            sha256,
            bytes,
            stored_sha256: stored.sha256,
            stored_bytes: stored.bytes,
            ..self.record(job, id.to_string(), source.to_string(), started_at)
        };
        store
            .commit(pending, &rec)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(rec)
    }
}

/// Runs a local command (no shell), its stdout streamed into `sink`.
async fn run_local<W: AsyncWrite + Unpin>(
    argv: &[String],
    env: &JobEnv,
    sink: &mut W,
    tail: &mut Tail,
) -> Result<(), String> {
    use std::process::Stdio;
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env.vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", argv[0]))?;
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = tokio::spawn(stream::read_tail(child.stderr.take().expect("piped")));
    let copied = tokio::io::copy(&mut stdout, sink).await;
    if copied.is_err() {
        let _ = child.start_kill();
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for `{}`: {e}", argv[0]))?;
    *tail = stderr.await.unwrap_or_default();
    copied.map_err(|e| format!("cannot store the output of `{}`: {e}", argv[0]))?;
    if !status.success() {
        return Err(match status.code() {
            Some(c) => format!("`{}` exited {c}", argv[0]),
            None => format!("`{}` was killed by a signal", argv[0]),
        });
    }
    Ok(())
}

/// A job's environment with secrets resolved, and what to mask in anything shown.
/// `JobEnv::default()` has no variables (a restore whose job is no longer configured).
#[derive(Default)]
pub struct JobEnv {
    vars: Vec<(String, String)>,
    /// Secret value → how it is shown instead.
    masks: Vec<(String, String)>,
}

impl JobEnv {
    /// Resolves the job's `env:`; a missing secret names its reference, never a value.
    pub fn resolve(job: &BackupJob) -> Result<JobEnv, String> {
        let mut e = JobEnv::default();
        for (k, v) in &job.env {
            match v {
                EnvValue::Plain(s) => e.vars.push((k.clone(), s.clone())),
                EnvValue::Secret { secret } => {
                    let value = resolve_secret(&secret.0).map_err(|why| {
                        format!(
                            "secret {} for backups.{}.env.{k} is not available: {why}",
                            secret.0, job.name
                        )
                    })?;
                    e.masks.push((value.clone(), v.to_string()));
                    e.vars.push((k.clone(), value));
                }
            }
        }
        Ok(e)
    }

    /// The variables with secrets resolved, for a command's environment (never printed).
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `KEY=value` pairs (for a container exec).
    pub fn pairs(&self) -> Vec<String> {
        self.vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// [`JobEnv::expand`] on each argument of a command.
    pub fn expand_all(&mut self, args: &[String]) -> Result<Vec<String>, String> {
        args.iter().map(|a| self.expand(a)).collect()
    }

    /// Replaces `${NAME}` (and `${NAME:-default}`) with the job's variable or this machine's
    /// environment variable. A variable that is set nowhere is an error, never an empty
    /// string (`pg_dump --dbname ""` would dump some other database). Values taken from this
    /// machine's environment are masked in output like secrets.
    pub fn expand(&mut self, arg: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = arg;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let Some(end) = rest[start..].find('}') else {
                out.push_str(&rest[start..]);
                return Ok(out);
            };
            let inner = &rest[start + 2..start + end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let value = match self.vars.iter().find(|(k, _)| k == name) {
                Some((_, v)) => v.clone(),
                None => match std::env::var(name).ok().filter(|v| !v.is_empty()) {
                    Some(v) => {
                        self.masks.push((v.clone(), format!("${{{name}}}")));
                        v
                    }
                    None => default.map(str::to_string).ok_or_else(|| {
                        format!("${{{name}}} is not set (in the job's env: or this machine's environment)")
                    })?,
                },
            };
            out.push_str(&value);
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `text` with every secret value replaced by its reference.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        // Longest first, so a secret containing another is masked whole.
        let mut masks: Vec<&(String, String)> =
            self.masks.iter().filter(|(v, _)| v.len() >= 4).collect();
        masks.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        for (value, shown) in masks {
            out = out.replace(value.as_str(), shown);
        }
        out
    }

    /// The last lines of a failed command's stderr, secrets masked.
    pub fn stderr(&self, tail: &Tail) -> Vec<String> {
        tail.lines(STDERR_LINES)
            .iter()
            .map(|l| self.redact(l))
            .collect()
    }
}

/// Appends `lines` (the end of a failed command's stderr) to an error message.
pub(crate) fn quote_stderr(message: &mut String, lines: &[String]) {
    if !lines.is_empty() {
        message.push_str("\n  stderr (last lines):");
        for l in lines {
            message.push_str(&format!("\n    {l}"));
        }
    }
}

/// The job as written: `pg_dump --dbname ${DATABASE_URL}` or `exec db: pg_dump …`.
pub fn describe(job: &BackupJob) -> String {
    match job.argv() {
        Some((cmd, None)) => cmd.join(" "),
        Some((cmd, Some(service))) => format!("exec in {service}: {}", cmd.join(" ")),
        None => String::new(),
    }
}

/// `1.5 MB`, `312 kB`, `17 B`.
pub fn human_bytes(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.2} GB", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.1} MB", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.0} kB", f / 1e3)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::backups::ExecJob;
    use crate::config::model::SecretRef;
    use crate::release::Release;
    use crate::ui::{Output, Verbosity};
    use sha2::Digest;

    /// A target on which no container runs, or one whose exec prints `out` and exits `code`.
    struct FakeExec(Option<(&'static str, i64)>);

    #[async_trait::async_trait]
    impl ExecIn for FakeExec {
        async fn exec(
            &self,
            _: &str,
            _: &[String],
            _: &[String],
            out: &mut (dyn AsyncWrite + Unpin + Send),
            err: &mut Tail,
        ) -> anyhow::Result<Option<i64>> {
            let Some((text, code)) = self.0 else {
                return Ok(None);
            };
            out.write_all(text.as_bytes()).await?;
            err.push(b"exec stderr\n");
            Ok(Some(code))
        }
    }

    fn ui() -> Ui {
        Ui::new(Output::Human, Verbosity::Quiet)
    }

    fn sh(name: &str, script: &str) -> BackupJob {
        BackupJob {
            name: name.into(),
            command: Some(vec!["sh".into(), "-c".into(), script.into()]),
            ..Default::default()
        }
    }

    fn run<'a>(root: &Path, release: &'a str, jobs: Vec<BackupJob>) -> Run<'a> {
        Run {
            region: "cuba",
            env: "production",
            release,
            first_release: false,
            jobs: jobs
                .into_iter()
                .map(|j| (j, Store::Dir(root.to_path_buf())))
                .collect(),
        }
    }

    /// The error of a run that fails, as text.
    async fn failure(run: Run<'_>, target: &FakeExec) -> String {
        run.run(&ui(), target).await.unwrap_err().to_string()
    }

    fn files(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path().strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_streams_its_output_to_the_store_with_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let recs = run(
            dir.path(),
            "r1",
            vec![sh("db", "echo hello; echo noise >&2")],
        )
        .run(&ui(), &FakeExec(None))
        .await
        .unwrap();
        let r = &recs[0];
        assert_eq!(r.id, "cuba/production/r1/db");
        assert_eq!(r.sha256, hex::encode(sha2::Sha256::digest(b"hello\n")));
        assert_eq!(r.bytes, 6);
        assert_eq!(r.source, "sh -c echo hello; echo noise >&2");
        assert_eq!(
            files(dir.path()),
            [
                ".gitignore",
                "cuba/production/r1/db.dump.zst",
                "cuba/production/r1/db.json"
            ]
        );
        let store = Store::Dir(dir.path().to_path_buf());
        let listed = store.scan("cuba", None).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].path, r.path);
        assert_eq!(listed[0].store, dir.path().display().to_string());
        assert!(store.check(&listed[0]).await.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_required_job_stops_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let e = run(
            dir.path(),
            "r2",
            vec![
                sh("first", "echo data"),
                sh(
                    "db",
                    "echo partial; echo 'FATAL: role x does not exist' >&2; exit 3",
                ),
            ],
        )
        .run(&ui(), &FakeExec(None))
        .await
        .unwrap_err();
        assert_eq!(e.code(), crate::error::ExitCode::Usage);
        let Error::Usage { message, hint } = e else {
            panic!()
        };
        assert_eq!(
            message,
            "backup job 'db' failed, so the deploy of cuba/production did not start: `sh` exited 3\n  stderr (last lines):\n    FATAL: role x does not exist"
        );
        assert!(hint.unwrap().starts_with("nothing was changed"));
        assert_eq!(files(dir.path()), [".gitignore"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_best_effort_job_only_warns() {
        let dir = tempfile::tempdir().unwrap();
        let mut job = sh("cache", "exit 1");
        job.required = false;
        let recs = run(dir.path(), "r1", vec![job, sh("db", "echo ok")])
            .run(&ui(), &FakeExec(None))
            .await
            .unwrap();
        assert_eq!(recs[0].error.as_deref(), Some("`sh` exited 1"));
        assert!(recs[0].path.is_empty());
        assert!(recs[1].error.is_none());
        assert_eq!(
            crate::release::rollback_note(&crate::release::Release {
                backups: recs,
                ..release("r1")
            })
            .unwrap(),
            "data was not restored: the backup taken before r1 is cuba/production/r1/db; writes made since would be lost, so restoring is a person's decision: packfy-deploy backup restore cuba/production/r1/db"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn secret_values_never_show() {
        std::env::set_var("PACKFY_TEST_BACKUP_SECRET", "hunter2-very-secret");
        std::env::set_var("PACKFY_TEST_BACKUP_URL", "postgres://u:pw-in-url@h/db");
        let dir = tempfile::tempdir().unwrap();
        let mut job = sh("db", "echo \"auth failed for $TOKEN at $1\" >&2; exit 2");
        job.command
            .as_mut()
            .unwrap()
            .extend(["x".into(), "${PACKFY_TEST_BACKUP_URL}".into()]);
        job.env.insert(
            "TOKEN".into(),
            EnvValue::Secret {
                secret: SecretRef("env:PACKFY_TEST_BACKUP_SECRET".into()),
            },
        );
        let e = failure(run(dir.path(), "r1", vec![job]), &FakeExec(None)).await;
        assert!(
            e.ends_with("auth failed for <secret:env:PACKFY_TEST_BACKUP_SECRET> at ${PACKFY_TEST_BACKUP_URL}"),
            "{e}"
        );
        assert!(!e.contains("hunter2") && !e.contains("pw-in-url"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unset_variables_and_timeouts_fail_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let mut unset = sh("a", "true");
        unset
            .command
            .as_mut()
            .unwrap()
            .push("${PACKFY_TEST_SURELY_UNSET}".into());
        let e = failure(run(dir.path(), "r1", vec![unset]), &FakeExec(None)).await;
        assert!(
            e.ends_with("${PACKFY_TEST_SURELY_UNSET} is not set (in the job's env: or this machine's environment)"),
            "{e}"
        );
        let mut slow = sh("b", "echo start; sleep 5");
        slow.timeout = crate::config::model::Duration(std::time::Duration::from_millis(300));
        let started = Instant::now();
        let e = failure(run(dir.path(), "r1", vec![slow]), &FakeExec(None)).await;
        assert!(e.ends_with("timed out after 300ms"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
        assert_eq!(files(dir.path()), [".gitignore"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_keeps_the_newest_of_its_own_region_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let mut job = sh("db", "echo x");
        job.keep = 2;
        // Another environment and another region in the same store.
        for (region, env) in [("cuba", "staging"), ("mexico", "production")] {
            Run {
                region,
                env,
                release: "r1",
                first_release: false,
                jobs: vec![(job.clone(), Store::Dir(dir.path().to_path_buf()))],
            }
            .run(&ui(), &FakeExec(None))
            .await
            .unwrap();
        }
        for r in ["r1", "r2", "r3", "r4"] {
            run(dir.path(), r, vec![job.clone()])
                .run(&ui(), &FakeExec(None))
                .await
                .unwrap();
        }
        let store = Store::Dir(dir.path().to_path_buf());
        let ids: Vec<String> = store
            .scan("cuba", None)
            .await
            .unwrap()
            .into_iter()
            .chain(store.scan("mexico", None).await.unwrap())
            .map(|r| r.id)
            .collect();
        assert_eq!(
            ids,
            [
                "cuba/staging/r1/db",
                "cuba/production/r3/db",
                "cuba/production/r4/db",
                "mexico/production/r1/db"
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exec_jobs_store_the_containers_output() {
        let dir = tempfile::tempdir().unwrap();
        let job = BackupJob {
            name: "files".into(),
            exec: Some(ExecJob {
                service: "web".into(),
                command: vec!["tar".into(), "c".into()],
            }),
            compression: Compression::Gzip,
            ..Default::default()
        };
        let recs = run(dir.path(), "r1", vec![job.clone()])
            .run(&ui(), &FakeExec(Some(("archive", 0))))
            .await
            .unwrap();
        assert_eq!(recs[0].bytes, 7);
        assert!(recs[0].path.ends_with("cuba/production/r1/files.dump.gz"));
        assert_eq!(recs[0].source, "exec in web: tar c");
        // Nothing runs yet on a first release: nothing to back up, the deploy goes on.
        let mut first = run(dir.path(), "r2", vec![job.clone()]);
        first.first_release = true;
        let recs = first.run(&ui(), &FakeExec(None)).await.unwrap();
        assert!(recs[0]
            .error
            .as_deref()
            .unwrap()
            .contains("no release serves yet"));
        // Once a release serves, a missing container fails a required job.
        let e = failure(run(dir.path(), "r3", vec![job.clone()]), &FakeExec(None)).await;
        assert!(
            e.ends_with("no container of service 'web' is running"),
            "{e}"
        );
        let e = failure(run(dir.path(), "r3", vec![job]), &FakeExec(Some(("", 7)))).await;
        assert!(
            e.ends_with("`exec in web: tar c` exited 7\n  stderr (last lines):\n    exec stderr"),
            "{e}"
        );
    }

    fn release(id: &str) -> Release {
        Release {
            id: id.into(),
            number: 1,
            region: "cuba".into(),
            environment: "production".into(),
            kind: crate::release::Kind::Deploy,
            version: "v1".into(),
            outcome: crate::release::Outcome::RolledBack,
            previous: None,
            target: None,
            actor: "t".into(),
            command: "c".into(),
            git_commit: None,
            started_at: Utc::now(),
            finished_at: None,
            services: vec![],
            error: None,
            runner: "h:1".into(),
            state: Default::default(),
            backups: vec![],
            release_steps: vec![],
        }
    }
}
