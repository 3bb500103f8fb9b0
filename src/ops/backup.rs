//! `backup list | verify | restore`: the data backups in the store (see `crate::backup`).
//!
//! These read the store directories named in the region files; none needs the target.
//! Restoring is explicit: it asks on a terminal, refuses off one without `--yes`, checks the
//! backup against its record first, and only then feeds the dump to the command a person
//! chose.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::anyhow;

use crate::backup::stream::{Hashing, Tail};
use crate::backup::{human_bytes, store, store_root, BackupRecord, JobEnv};
use crate::cli::BackupCommand;
use crate::config::backups::BackupJob;
use crate::config::{Environment, Regions};
use crate::error::{Error, ExitCode, Result};

use super::Ctx;

pub fn run(ctx: &Ctx, cmd: BackupCommand) -> Result<ExitCode> {
    match cmd {
        BackupCommand::List { region } => list(ctx, region.as_deref()),
        BackupCommand::Verify { id } => verify(ctx, &id),
        BackupCommand::Restore { id, yes, into } => restore(ctx, &id, &into, yes),
    }
}

/// The job of a region as configured for `env` now, if it still exists.
fn job_config(regions: &Regions, region: &str, env: Environment, job: &str) -> Option<BackupJob> {
    let cfg = regions.effective(region, env)?.config.ok()?;
    cfg.backups.into_iter().find(|j| j.name == job)
}

/// Where a region's backups for `env` may be: every job's store, and the default one.
fn roots(ctx: &Ctx, regions: &Regions, region: &str, env: Environment) -> Vec<PathBuf> {
    let default = ctx.sibling(store::DEFAULT_STORE);
    let mut v = vec![std::path::absolute(&default).unwrap_or(default)];
    if let Some(Ok(cfg)) = regions.effective(region, env).map(|e| e.config) {
        for j in &cfg.backups {
            let r = store_root(ctx, j);
            if !v.contains(&r) {
                v.push(r);
            }
        }
    }
    v
}

fn shown(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `backup list [--region R]`
fn list(ctx: &Ctx, region: Option<&str>) -> Result<ExitCode> {
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
    let mut searched: Vec<PathBuf> = Vec::new();
    for name in &names {
        for env in &envs {
            for root in roots(ctx, &regions, name, *env) {
                for rec in store::scan(&root, name, Some(env.as_str())) {
                    if !all.iter().any(|r| r.path == rec.path) {
                        all.push(rec);
                    }
                }
                if !searched.contains(&root) {
                    searched.push(root);
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

/// The backup `id` names, from the store directories of its region.
fn find(ctx: &Ctx, regions: &Regions, id: &str) -> Result<BackupRecord> {
    let Some([region, env, ..]) = store::parse_id(id) else {
        return Err(Error::usage_hint(
            format!("'{id}' is not a backup ID"),
            "IDs look like cuba/production/r4/db; `packfy-deploy backup list` shows them",
        ));
    };
    let env: Environment = env.parse().map_err(Error::usage)?;
    let roots = roots(ctx, regions, region, env);
    for root in &roots {
        let manifest = store::manifest_path(root, id);
        if manifest.exists() {
            return store::read_manifest(&manifest)
                .map_err(|e| Error::usage(format!("cannot read {}: {e}", manifest.display())));
        }
    }
    Err(Error::usage_hint(
        format!("no backup {id} in {}", shown(&roots)),
        format!("`packfy-deploy backup list --region {region}` lists them"),
    ))
}

/// `backup verify ID`: exit 0 when the file matches its record, 1 when it does not.
fn verify(ctx: &Ctx, id: &str) -> Result<ExitCode> {
    let regions = ctx.load()?;
    let rec = find(ctx, &regions, id)?;
    let problems = match store::verify(&rec) {
        Ok(v) => v.problems(&rec),
        Err(e) => vec![format!("cannot read {}: {e}", rec.path)],
    };
    if ctx.ui.json() {
        ctx.ui.out_json(&serde_json::json!({
            "id": rec.id, "ok": problems.is_empty(), "path": rec.path,
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

/// `backup restore ID [--yes] [--into COMMAND…]`
fn restore(ctx: &Ctx, id: &str, into: &[String], yes: bool) -> Result<ExitCode> {
    let regions = ctx.load()?;
    let rec = find(ctx, &regions, id)?;
    let env: Environment = rec.environment.parse().map_err(Error::usage)?;
    let job = job_config(&regions, &rec.region, env, &rec.job);
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
        None => JobEnv::empty(),
    };
    let argv: Vec<String> = template
        .iter()
        .map(|a| env_vars.expand(a))
        .collect::<Result<_, _>>()
        .map_err(Error::usage)?;
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
    let problems = match store::verify(&rec) {
        Ok(v) => v.problems(&rec),
        Err(e) => vec![format!("cannot read {}: {e}", rec.path)],
    };
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
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::usage_hint(
                format!("cannot start `{}`: {e}", argv[0]),
                "nothing was restored",
            )
        })?;
    let tail_of = |r: Option<Box<dyn io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut tail = Tail::default();
            if let Some(mut r) = r {
                let mut buf = [0u8; 8192];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    tail.push(&buf[..n]);
                }
            }
            tail
        })
    };
    let out_tail = tail_of(child.stdout.take().map(|s| Box::new(s) as _));
    let err_tail = tail_of(child.stderr.take().map(|s| Box::new(s) as _));
    let fed = {
        let stdin = child.stdin.take().expect("piped");
        let mut sink = Hashing::new(stdin);
        let copied = store::open_dump(&rec).and_then(|mut dump| io::copy(&mut dump, &mut sink));
        let (stdin, _, bytes) = sink.finish();
        drop(stdin); // end of input: the command finishes
        copied.map(|_| bytes)
    };
    let status = child
        .wait()
        .map_err(|e| anyhow!("waiting for `{}`: {e}", argv[0]))?;
    let _ = out_tail.join();
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
            let lines = stderr.lines(15);
            if !lines.is_empty() {
                message.push_str("\n  stderr (last lines):");
                for l in lines {
                    message.push_str(&format!("\n    {}", env_vars.redact(&l)));
                }
            }
            Err(
                Error::failed(ExitCode::NeedsPerson, anyhow!(message)).with_hint(
                    "the destination may hold part of the dump; check it before trying again",
                ),
            )
        }
    }
}
