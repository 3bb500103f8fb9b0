//! Running the CLI under test (and other programs): [`cli`] builds the command, [`run_cli`]
//! runs it and checks that no secret and no panic shows ([`spawn_cli`] in the background);
//! [`code`], [`stderr`], [`text`] and [`stdout`] read the result; [`run`] runs any program.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// The CLI under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_packfy-deploy");

/// `packfy-deploy --regions-dir DIR/regions ARGS`, run in `dir` as actor `tester`, with no
/// `PACKFY_ENV` inherited and stdin closed (never a terminal): the command of a test that
/// keeps its regions in a directory of its own. Add what its regions need (`.env(…)`), then
/// run it with [`run_cli`].
pub fn cli(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .arg("--regions-dir")
        .arg(dir.join("regions"))
        .args(args)
        .env("PACKFY_ACTOR", "tester")
        .env_remove("PACKFY_ENV")
        .stdin(Stdio::null());
    c
}

/// Runs `cmd` (see [`cli`]), whatever it exits with; fails the test when its stdout or
/// stderr shows one of `secrets` (values that must never be printed) or a panic.
pub fn run_cli(cmd: &mut Command, secrets: &[&str]) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    check_output(&args_of(cmd), &out, secrets);
    out
}

/// Starts `cmd` (see [`cli`]) in the background, its output captured: a deploy a test
/// interrupts or races. [`Spawned::wait`] checks its output as [`run_cli`] does.
pub fn spawn_cli(cmd: &mut Command, secrets: &[&str]) -> Spawned {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    Spawned {
        child,
        args: args_of(cmd),
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
    }
}

/// A CLI process started by [`spawn_cli`].
pub struct Spawned {
    child: Child,
    args: Vec<String>,
    secrets: Vec<String>,
}

impl Spawned {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `"TERM"`, `"KILL"`) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Waits for the process to end; its output, which must show no secret and no panic.
    pub fn wait(self) -> Output {
        let out = self
            .child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {BIN}: {e}"));
        let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        check_output(&self.args, &out, &secrets);
        out
    }
}

/// The signal that ended the process, if one did.
pub fn signal_of(out: &Output) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal()
}

fn args_of(cmd: &Command) -> Vec<String> {
    cmd.get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// Fails the test when the output shows one of `secrets` or a panic.
fn check_output(args: &[String], out: &Output, secrets: &[&str]) {
    let text = text(out);
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "a secret value appeared in the output of {args:?}:\n{text}"
        );
    }
    assert!(!text.contains("panicked"), "panic in {args:?}:\n{text}");
}

/// The exit code (-1 when killed by a signal).
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Standard error, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Standard output then standard error, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`; panics with its stderr unless it exits 0.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n--- stderr\n{}--- stdout\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    out
}

/// Standard output of a command, trimmed.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
