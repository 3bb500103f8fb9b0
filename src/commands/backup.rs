//! `backup list | verify | restore`: the data backups in the store (see `crate::backup`).
//!
//! These read the stores named in the region files (directories, S3 buckets); none needs
//! the target, nor anything left on the machine that took the backup.
//! Restoring is explicit: it asks on a terminal, refuses off one without `--yes`, checks the
//! backup against its record first, and only then feeds the dump to the command a person
//! chose.

use std::io::{self, BufRead, IsTerminal, Write};
use std::process::{Command, Stdio};

use anyhow::anyhow;

use crate::backup::stream::read_tail_blocking;
use crate::backup::{
    human_bytes, quote_stderr, store, store_dir, store_of, BackupRecord, JobEnv, Store,
};
use crate::cli::BackupCommand;
use crate::config::backups::BackupJob;
use crate::config::{Environment, Regions};
use crate::error::{Error, ExitCode, Result};

use crate::context::Ctx;

pub fn run(ctx: &Ctx, cmd: BackupCommand) -> Result<ExitCode> {
    super::block_on(async {
        match cmd {
            BackupCommand::List { region, store } => {
                list(ctx, region.as_deref(), store.store.as_deref()).await
            }
            BackupCommand::Verify { id, store } => verify(ctx, &id, store.store.as_deref()).await,
            BackupCommand::Restore {
                id,
                store,
                yes,
                into,
            } => restore(ctx, &id, store.store.as_deref(), &into, yes).await,
        }
    })
}

/// The backup jobs of a region as configured for `env` now (none when it does not load).
fn jobs(regions: &Regions, region: &str, env: Environment) -> Vec<BackupJob> {
    regions
        .effective(region, env)
        .and_then(|e| e.config.ok())
        .map(|cfg| cfg.backups)
        .unwrap_or_default()
}

/// Where the backups of a region's `jobs` may be: every job's store, and the default one;
/// or only `only` (`--store`), with the `s3:` options of a job in the same bucket.
fn stores(ctx: &Ctx, jobs: &[BackupJob], only: Option<&str>) -> Result<Vec<Store>> {
    if let Some(only) = only {
        let bucket = |s: &str| {
            crate::config::backups::parse_s3_url(s)
                .and_then(|p| p.ok())
                .map(|(bucket, _)| bucket.to_string())
        };
        let options = jobs
            .iter()
            .find(|j| {
                bucket(only).is_some()
                    && j.store
                        .as_deref()
                        .map(crate::config::expand_env)
                        .as_deref()
                        .and_then(bucket)
                        == bucket(only)
            })
            .and_then(|j| j.s3.as_ref());
        let store = crate::backup::open_store(ctx, Some(only), options).map_err(|why| {
            Error::usage_hint(
                format!("--store: {why}"),
                "a directory, or s3://BUCKET/PREFIX as a release record names it",
            )
        })?;
        return Ok(vec![store]);
    }
    let mut v = vec![Store::Dir(store_dir(ctx, None))];
    for j in jobs {
        let s = store_of(ctx, j)?;
        if !v.iter().any(|known| known.describe() == s.describe()) {
            v.push(s);
        }
    }
    Ok(v)
}

fn shown(stores: &[Store]) -> String {
    stores
        .iter()
        .map(Store::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `backup list [--region R]`
async fn list(ctx: &Ctx, region: Option<&str>, only: Option<&str>) -> Result<ExitCode> {
    let regions = ctx.load()?;
    let names: Vec<String> = match region {
        Some(r) => {
            ctx.effective(&regions, r)?;
            vec![r.to_string()]
        }
        None => regions.names().into_iter().map(str::to_string).collect(),
    };
    let envs: Vec<Environment> = ctx.env.map_or(Environment::ALL.to_vec(), |e| vec![e]);
    let mut all: Vec<BackupRecord> = Vec::new();
    let mut searched: Vec<Store> = Vec::new();
    for name in &names {
        for env in &envs {
            for store in stores(ctx, &jobs(&regions, name, *env), only)? {
                let found = store
                    .scan(name, Some(env.as_str()))
                    .await
                    .map_err(store::StoreError::into_error)?;
                for rec in found {
                    if !all.iter().any(|r| r.path == rec.path) {
                        all.push(rec);
                    }
                }
                if !searched.iter().any(|s| s.describe() == store.describe()) {
                    searched.push(store);
                }
            }
        }
    }
    store::sort(&mut all);
    if ctx.ui.json() {
        ctx.ui
            .out_json(&serde_json::to_value(&all).map_err(anyhow::Error::from)?);
        return Ok(ExitCode::Success);
    }
    if all.is_empty() {
        ctx.ui.out(format!("no backups in {}", shown(&searched)));
        return Ok(ExitCode::Success);
    }
    let width = all.iter().map(|r| r.id.len()).max().unwrap_or(2).max(2);
    ctx.ui.out(format!(
        "{:<width$}  {:>9}  {:>9}  {:<23}  SHA256",
        "ID", "SIZE", "DUMP", "TAKEN"
    ));
    for r in &all {
        ctx.ui.out(format!(
            "{:<width$}  {:>9}  {:>9}  {:<23}  {}",
            r.id,
            human_bytes(r.stored_bytes),
            human_bytes(r.bytes),
            r.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            &r.sha256[..r.sha256.len().min(12)]
        ));
    }
    Ok(ExitCode::Success)
}

/// The backup `id` names, from the stores of its region, with the store it is in and the
/// region's jobs as configured now.
async fn find(
    ctx: &Ctx,
    regions: &Regions,
    id: &str,
    only: Option<&str>,
) -> Result<(BackupRecord, Store, Vec<BackupJob>)> {
    let Some([region, env, ..]) = store::parse_id(id) else {
        return Err(Error::usage_hint(
            format!("'{id}' is not a backup ID"),
            "IDs look like cuba/production/r4/db; `packfy-deploy backup list` shows them",
        ));
    };
    let env: Environment = env.parse().map_err(Error::usage)?;
    let jobs = jobs(regions, region, env);
    let stores = stores(ctx, &jobs, only)?;
    for store in &stores {
        if let Some(rec) = store
            .find(id)
            .await
            .map_err(store::StoreError::into_error)?
        {
            return Ok((rec, store.clone(), jobs));
        }
    }
    Err(Error::usage_hint(
        format!("no backup {id} in {}", shown(&stores)),
        format!("`packfy-deploy backup list --region {region}` lists them"),
    ))
}

/// `backup verify ID`: exit 0 when the file matches its record, 1 when it does not.
async fn verify(ctx: &Ctx, id: &str, only: Option<&str>) -> Result<ExitCode> {
    let regions = ctx.load()?;
    let (rec, store, _) = find(ctx, &regions, id, only).await?;
    let problems = store.check(&rec).await;
    if ctx.ui.json() {
        ctx.ui.out_json(&serde_json::json!({
            "id": rec.id, "ok": problems.is_empty(), "store": rec.store, "path": rec.path,
            "sha256": rec.sha256, "bytes": rec.bytes, "problems": problems,
        }));
    }
    if problems.is_empty() {
        ctx.ui.status(
            "Verified",
            format!(
                "{id}: {} ({} dump), sha256 {}",
                human_bytes(rec.stored_bytes),
                human_bytes(rec.bytes),
                rec.sha256
            ),
        );
        return Ok(ExitCode::Success);
    }
    ctx.ui.error(format!(
        "backup {id} does not match its record:\n  {}",
        problems.join("\n  ")
    ));
    ctx.ui
        .hint(format!("{} is damaged; do not restore it", rec.path));
    // 1: the check found a difference (as `diff` and `plan` use it).
    Ok(ExitCode::Changes)
}

/// `backup restore ID [--store STORE] [--yes] [--into COMMAND…]`
async fn restore(
    ctx: &Ctx,
    id: &str,
    only: Option<&str>,
    into: &[String],
    yes: bool,
) -> Result<ExitCode> {
    let regions = ctx.load()?;
    let (rec, store, jobs) = find(ctx, &regions, id, only).await?;
    let job = jobs.into_iter().find(|j| j.name == rec.job);
    let template: Vec<String> = if !into.is_empty() {
        into.to_vec()
    } else if let Some(r) = job.as_ref().and_then(|j| j.restore.clone()) {
        r
    } else {
        return Err(Error::usage_hint(
            format!("no restore command for {id}"),
            "pass --into COMMAND… (it reads the dump on stdin, e.g. --into psql --dbname URL), or set `restore:` on the job",
        ));
    };
    let mut env_vars = match &job {
        Some(j) => JobEnv::resolve(j).map_err(Error::usage)?,
        None => JobEnv::default(),
    };
    let argv = env_vars.expand_all(&template).map_err(Error::usage)?;
    let command = template.join(" ");

    if !yes {
        if !io::stdin().is_terminal() {
            return Err(Error::usage_hint(
                format!(
                    "refusing to restore {id} without --yes: nobody can confirm off a terminal"
                ),
                "restoring overwrites data; pass --yes when a script means it. Nothing was changed",
            ));
        }
        eprint!(
            "Restore {id} (taken {} before release {}, {} dump) by feeding it to `{command}`?\n\
             Whatever that command writes to is overwritten. Type 'yes' to restore: ",
            rec.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            rec.release,
            human_bytes(rec.bytes)
        );
        let _ = io::stderr().flush();
        let mut answer = String::new();
        let _ = io::stdin().lock().read_line(&mut answer);
        if answer.trim() != "yes" {
            return Err(Error::usage("not confirmed; nothing was restored"));
        }
    }

    ctx.ui.status("Verifying", id);
    let problems = store.check(&rec).await;
    if !problems.is_empty() {
        return Err(Error::usage_hint(
            format!(
                "backup {id} does not match its record, so it was not restored:\n  {}",
                problems.join("\n  ")
            ),
            "nothing was changed; pick another backup (`packfy-deploy backup list`)",
        ));
    }

    ctx.ui.status("Restoring", format!("{id} into `{command}`"));
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env_vars.vars())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::usage_hint(
                format!("cannot start `{}`: {e}", argv[0]),
                "nothing was restored",
            )
        })?;
    let stderr = child.stderr.take().expect("piped");
    let err_tail = std::thread::spawn(move || read_tail_blocking(stderr));
    let mut stdin = child.stdin.take().expect("piped");
    let fed = match store.raw(&rec).await {
        Err(e) => {
            drop(stdin);
            Err(io::Error::other(e.to_string()))
        }
        Ok(raw) => {
            let compression = rec.compression;
            // Streamed on a blocking thread: the stored bytes arrive from the store as the
            // command reads them. `stdin` is dropped at the end, ending the input.
            tokio::task::spawn_blocking(move || {
                store::open_dump(raw, compression)
                    .and_then(|mut dump| io::copy(&mut dump, &mut stdin))
            })
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
        }
    };
    let status = child
        .wait()
        .map_err(|e| anyhow!("waiting for `{}`: {e}", argv[0]))?;
    let stderr = err_tail.join().unwrap_or_default();
    match (status.success(), fed) {
        (true, Ok(bytes)) => {
            if ctx.ui.json() {
                ctx.ui.out_json(&serde_json::json!({
                    "id": rec.id, "restored": true, "bytes": bytes, "command": command,
                }));
            }
            ctx.ui.status(
                "Restored",
                format!("{id} ({} dump) into `{command}`", human_bytes(bytes)),
            );
            Ok(ExitCode::Success)
        }
        (ok, fed) => {
            let mut message = format!("restoring {id} into `{command}` failed");
            if !ok {
                message.push_str(&match status.code() {
                    Some(c) => format!(": it exited {c}"),
                    None => ": it was killed by a signal".into(),
                });
            }
            if let Err(e) = fed {
                message.push_str(&format!(" (feeding the dump: {e})"));
            }
            quote_stderr(&mut message, &env_vars.stderr(&stderr));
            Err(
                Error::failed(ExitCode::NeedsPerson, anyhow!(message)).with_hint(
                    "the destination may hold part of the dump; check it before trying again",
                ),
            )
        }
    }
}
