//! Hooks: local commands run on the deploying machine around deploys and rollbacks
//! (`hooks: {pre_deploy, post_deploy, pre_rollback, post_rollback}` in the region config).
//!
//! The hooks of one kind run one after another, in the order written; the first that fails
//! stops the rest and [`run`] returns an error naming it, its exit code and the last lines of
//! its stderr. Each hook:
//!
//! 1. starts in its own process group, in `dir` (relative to the repository root), with stdin
//!    closed and the environment of the deploy plus `PACKFY_REGION`, `PACKFY_ENV`,
//!    `PACKFY_VERSION`, `PACKFY_RELEASE`, `PACKFY_PREVIOUS_RELEASE`, `PACKFY_OUTCOME`,
//!    `PACKFY_HOOK` (the kind, e.g. `pre_deploy`) and `PACKFY_HOOK_NAME`; values not known
//!    yet are empty strings, so scripts under `set -u` still run;
//! 2. has its stdout and stderr streamed line by line to the output as they come (at normal
//!    verbosity; `-q` hides them, and a failure still quotes the end of stderr);
//! 3. is given `timeout`: past it the whole process group gets SIGTERM, then SIGKILL after
//!    [`TERM_GRACE`], so a test runner's children die with it;
//! 4. is done when its own process exits: output still written by processes it left in the
//!    background is read for [`OUTPUT_DRAIN`] more, and those processes are left alone.
//!
//! Should the caller drop the future (a deploy interrupted), the process group is killed.

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use crate::config::model::{Hook, HookCommand, Hooks};
use crate::ui::Ui;

/// Time between SIGTERM and SIGKILL for a hook past its timeout.
pub const TERM_GRACE: Duration = Duration::from_secs(3);
/// How long output is still read after the hook's own process exited, for lines written just
/// before it exited (and by background processes it left, which are not waited for).
pub const OUTPUT_DRAIN: Duration = Duration::from_millis(500);
/// Lines of stderr quoted by the error of a failed hook.
pub const STDERR_TAIL: usize = 10;
/// Longest output line passed on; the rest of a longer line is cut (progress bars, blobs).
const MAX_LINE: usize = 4096;

/// When hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    PreDeploy,
    PostDeploy,
    PreRollback,
    PostRollback,
}

impl HookKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            HookKind::PreDeploy => "pre_deploy",
            HookKind::PostDeploy => "post_deploy",
            HookKind::PreRollback => "pre_rollback",
            HookKind::PostRollback => "post_rollback",
        }
    }

    /// The hooks of this kind in a region's config.
    pub fn of(self, hooks: &Hooks) -> &[Hook] {
        match self {
            HookKind::PreDeploy => &hooks.pre_deploy,
            HookKind::PostDeploy => &hooks.post_deploy,
            HookKind::PreRollback => &hooks.pre_rollback,
            HookKind::PostRollback => &hooks.post_rollback,
        }
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the hooks are told about the deploy (as `PACKFY_*` environment variables).
#[derive(Debug, Clone, Default)]
pub struct HookEnv {
    pub region: String,
    pub environment: String,
    pub version: String,
    pub release: String,
    pub previous: Option<String>,
    /// How the deploy or rollback ended (`succeeded`, `rolled_back`, …), for post hooks.
    pub outcome: Option<String>,
}

impl HookEnv {
    /// The variables a hook of `kind` named `name` gets, in a fixed order.
    pub fn vars(&self, kind: HookKind, name: &str) -> Vec<(&'static str, String)> {
        vec![
            ("PACKFY_REGION", self.region.clone()),
            ("PACKFY_ENV", self.environment.clone()),
            ("PACKFY_VERSION", self.version.clone()),
            ("PACKFY_RELEASE", self.release.clone()),
            (
                "PACKFY_PREVIOUS_RELEASE",
                self.previous.clone().unwrap_or_default(),
            ),
            ("PACKFY_OUTCOME", self.outcome.clone().unwrap_or_default()),
            ("PACKFY_HOOK", kind.as_str().to_string()),
            ("PACKFY_HOOK_NAME", name.to_string()),
        ]
    }
}

/// Why hooks stopped a deploy or rollback.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The command could not be started: no such program, not executable, no such directory.
    #[error("{kind} hook `{name}` could not start `{program}`: {why}")]
    Spawn {
        kind: HookKind,
        name: String,
        program: String,
        why: String,
    },
    /// The command ran and failed: a non-zero exit code, or killed by a signal.
    #[error(
        "{kind} hook `{name}` failed with {}{}",
        describe(status),
        Tail(stderr)
    )]
    Failed {
        kind: HookKind,
        name: String,
        status: ExitStatus,
        /// The last lines of its stderr, at most [`STDERR_TAIL`].
        stderr: Vec<String>,
    },
    /// The command ran past its timeout and its process group was killed.
    #[error(
        "{kind} hook `{name}` timed out after {timeout} and its process group was killed{}",
        Tail(stderr)
    )]
    TimedOut {
        kind: HookKind,
        name: String,
        timeout: crate::config::model::Duration,
        stderr: Vec<String>,
    },
}

impl HookError {
    /// The exit code of a hook that failed by exiting (not by a signal or a timeout).
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            HookError::Failed { status, .. } => status.code(),
            _ => None,
        }
    }
}

fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        (None, None) => status.to_string(),
    }
}

/// `; the last lines of its stderr:` and the lines, indented; or that there were none.
struct Tail<'a>(&'a [String]);

impl fmt::Display for Tail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(" (nothing on stderr)");
        }
        f.write_str("; the last lines of its stderr:")?;
        for line in self.0 {
            write!(f, "\n    {line}")?;
        }
        Ok(())
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What running hooks reports, as it happens.
#[derive(Debug, Clone, Copy)]
pub enum HookEvent<'a> {
    Started {
        kind: HookKind,
        name: &'a str,
        command: &'a HookCommand,
        region: &'a str,
    },
    Line {
        name: &'a str,
        region: &'a str,
        stream: Stream,
        text: &'a str,
    },
    Finished {
        kind: HookKind,
        name: &'a str,
        region: &'a str,
        elapsed: Duration,
    },
}

/// Where hook output goes: the [`Ui`] in the CLI, a recorder in tests. Called from the task
/// that runs the hooks, never concurrently with itself for one hook.
pub trait HookOutput: Sync {
    fn event(&self, event: HookEvent<'_>);
}

/// Hook lines are status lines with the region and hook as prefix, so the output of regions
/// deploying in parallel stays readable:
///
/// ```text
///      Running pre_deploy hook `unit-tests` for mexico: cargo test
///              mexico/unit-tests | running 12 tests
///     Finished pre_deploy hook `unit-tests` for mexico in 3.2s
/// ```
impl HookOutput for Ui {
    fn event(&self, event: HookEvent<'_>) {
        match event {
            HookEvent::Started {
                kind,
                name,
                command,
                region,
            } => self.status(
                "Running",
                format!("{kind} hook `{name}` for {region}: {command}"),
            ),
            HookEvent::Line {
                name, region, text, ..
            } => self.status("", format!("{region}/{name} | {text}")),
            HookEvent::Finished {
                kind,
                name,
                region,
                elapsed,
            } => self.status(
                "Finished",
                format!(
                    "{kind} hook `{name}` for {region} in {:.1}s",
                    elapsed.as_secs_f64()
                ),
            ),
        }
    }
}

/// Runs the hooks of `kind` in order, output to the Ui; the first failure is the error (a
/// [`HookError`] inside the `anyhow::Error`).
pub async fn run(
    kind: HookKind,
    hooks: &[Hook],
    env: &HookEnv,
    root: &Path,
    ui: &Ui,
) -> anyhow::Result<()> {
    run_with(kind, hooks, env, root, ui).await?;
    Ok(())
}

/// [`run`] with any output.
pub async fn run_with(
    kind: HookKind,
    hooks: &[Hook],
    env: &HookEnv,
    root: &Path,
    out: &dyn HookOutput,
) -> Result<(), HookError> {
    for hook in hooks {
        run_one(kind, hook, env, root, out).await?;
    }
    Ok(())
}

/// The hook's name: its `name`, else its program's file name.
pub fn display_name(hook: &Hook) -> String {
    if let Some(name) = hook.name.as_deref().filter(|n| !n.trim().is_empty()) {
        return name.to_string();
    }
    let program = match &hook.command {
        HookCommand::Argv(argv) => argv.first().map(String::as_str).unwrap_or(""),
        HookCommand::Shell(line) => line.split_whitespace().next().unwrap_or(""),
    };
    let base = program.rsplit('/').next().unwrap_or(program);
    if base.is_empty() {
        "hook".to_string()
    } else {
        base.to_string()
    }
}

/// The program and its arguments: the list as written, or `sh -c LINE`.
fn argv(command: &HookCommand) -> Vec<String> {
    match command {
        HookCommand::Argv(argv) => argv.clone(),
        HookCommand::Shell(line) => vec!["sh".into(), "-c".into(), line.clone()],
    }
}

async fn run_one(
    kind: HookKind,
    hook: &Hook,
    env: &HookEnv,
    root: &Path,
    out: &dyn HookOutput,
) -> Result<(), HookError> {
    let name = display_name(hook);
    let region = env.region.as_str();
    let argv = argv(&hook.command);
    let program = argv.first().cloned().unwrap_or_default();
    let spawn_error = |why: String| HookError::Spawn {
        kind,
        name: name.clone(),
        program: program.clone(),
        why,
    };
    if program.is_empty() {
        return Err(spawn_error("the command is empty".into()));
    }
    let dir = match &hook.dir {
        Some(d) => root.join(d),
        None => root.to_path_buf(),
    };
    if !dir.is_dir() {
        return Err(spawn_error(format!(
            "its directory {} does not exist",
            dir.display()
        )));
    }

    out.event(HookEvent::Started {
        kind,
        name: &name,
        command: &hook.command,
        region,
    });
    let started = Instant::now();
    let mut cmd = Command::new(&program);
    cmd.args(&argv[1..])
        .current_dir(&dir)
        .envs(env.vars(kind, &name))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| spawn_error(e.to_string()))?;
    // The child leads its own group: its pid is the group id.
    let group = Group(child.id().map(|pid| pid as libc::pid_t));
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");

    let tail = Mutex::new(VecDeque::with_capacity(STDERR_TAIL));
    let (name_ref, tail_ref) = (name.as_str(), &tail);
    let pumps = async {
        tokio::join!(
            pump(stdout, |text| out.event(HookEvent::Line {
                name: name_ref,
                region,
                stream: Stream::Stdout,
                text,
            })),
            pump(stderr, |text| {
                out.event(HookEvent::Line {
                    name: name_ref,
                    region,
                    stream: Stream::Stderr,
                    text,
                });
                let mut t = tail_ref.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(text.to_string());
            })
        )
    };
    tokio::pin!(pumps);

    let deadline = tokio::time::Instant::now() + hook.timeout.0;
    let mut pumps_done = false;
    let waited = tokio::time::timeout_at(deadline, async {
        loop {
            tokio::select! {
                status = child.wait() => break status,
                _ = &mut pumps, if !pumps_done => pumps_done = true,
            }
        }
    })
    .await;
    let status = match waited {
        Ok(status) => status,
        Err(_elapsed) => {
            group.signal(libc::SIGTERM);
            let _ = tokio::time::timeout(TERM_GRACE, child.wait()).await;
            // Whatever of the group is left (it may have trapped SIGTERM) goes now; Linux does
            // not hand out a group's id again while any member of the group lives.
            group.signal(libc::SIGKILL);
            let _ = child.wait().await;
            group.disarm();
            if !pumps_done {
                let _ = tokio::time::timeout(OUTPUT_DRAIN, &mut pumps).await;
            }
            return Err(HookError::TimedOut {
                kind,
                name: name.clone(),
                timeout: hook.timeout,
                stderr: take(&tail),
            });
        }
    };
    // The hook's own process is done; what it left in the background is not ours to kill.
    group.disarm();
    if !pumps_done {
        let _ = tokio::time::timeout(OUTPUT_DRAIN, &mut pumps).await;
    }
    let status = status.map_err(|e| spawn_error(format!("waiting for it failed: {e}")))?;
    if !status.success() {
        return Err(HookError::Failed {
            kind,
            name: name.clone(),
            status,
            stderr: take(&tail),
        });
    }
    out.event(HookEvent::Finished {
        kind,
        name: &name,
        region,
        elapsed: started.elapsed(),
    });
    Ok(())
}

fn take(tail: &Mutex<VecDeque<String>>) -> Vec<String> {
    let t = tail.lock().unwrap_or_else(|p| p.into_inner());
    t.iter().cloned().collect()
}

/// Reads `r` line by line until EOF, passing each line without its line ending. Bytes that
/// are not UTF-8 are replaced, and over-long lines are cut at [`MAX_LINE`].
async fn pump(r: impl AsyncRead + Unpin, mut line: impl FnMut(&str)) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                buf.truncate(MAX_LINE);
                line(&String::from_utf8_lossy(&buf));
            }
        }
    }
}

/// A hook's process group, killed with SIGKILL when dropped armed (the future was cancelled).
struct Group(Option<libc::pid_t>);

impl Group {
    fn signal(&self, sig: libc::c_int) {
        if let Some(pgid) = self.0.filter(|p| *p > 0) {
            // SAFETY: kill(2) with a negative pid signals the group; no memory is involved.
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(name: Option<&str>, command: HookCommand) -> Hook {
        Hook {
            name: name.map(str::to_string),
            command,
            ..Hook::default()
        }
    }

    #[test]
    fn names_default_to_the_program() {
        let argv = HookCommand::Argv(vec!["/usr/bin/cargo".into(), "test".into()]);
        assert_eq!(display_name(&hook(None, argv.clone())), "cargo");
        assert_eq!(display_name(&hook(Some("unit"), argv)), "unit");
        let line = HookCommand::Shell("  ./smoke.sh --fast | tee log".into());
        assert_eq!(display_name(&hook(None, line)), "smoke.sh");
    }

    #[test]
    fn a_string_runs_with_sh() {
        assert_eq!(
            argv(&HookCommand::Shell("echo a | tr a b".into())),
            ["sh", "-c", "echo a | tr a b"]
        );
        assert_eq!(argv(&HookCommand::Argv(vec!["make".into()])), ["make"]);
    }

    #[test]
    fn unknown_values_are_empty_variables() {
        let env = HookEnv {
            region: "cuba".into(),
            environment: "staging".into(),
            version: "1.2.3".into(),
            release: "r1".into(),
            previous: None,
            outcome: None,
        };
        let vars = env.vars(HookKind::PreDeploy, "unit");
        let get = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PACKFY_PREVIOUS_RELEASE"), Some(""));
        assert_eq!(get("PACKFY_OUTCOME"), Some(""));
        assert_eq!(get("PACKFY_HOOK"), Some("pre_deploy"));
        assert_eq!(get("PACKFY_HOOK_NAME"), Some("unit"));
    }

    #[test]
    fn errors_quote_the_end_of_stderr() {
        use std::os::unix::process::ExitStatusExt;
        let e = HookError::Failed {
            kind: HookKind::PostDeploy,
            name: "smoke".into(),
            status: ExitStatus::from_raw(2 << 8),
            stderr: vec!["GET /health".into(), "503".into()],
        };
        assert_eq!(
            e.to_string(),
            "post_deploy hook `smoke` failed with exit code 2; the last lines of its stderr:\n    GET /health\n    503"
        );
        assert_eq!(e.exit_code(), Some(2));
        let e = HookError::Failed {
            kind: HookKind::PreDeploy,
            name: "x".into(),
            status: ExitStatus::from_raw(9),
            stderr: vec![],
        };
        assert_eq!(
            e.to_string(),
            "pre_deploy hook `x` failed with signal 9 (nothing on stderr)"
        );
        assert_eq!(e.exit_code(), None);
    }
}
