//! Hooks as real processes: environment, streamed output, order, failures, timeouts and the
//! process group, and how `validate` reports a bad `hooks:` section.

mod support;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use packfy_deploy::config::model::{Hook, HookCommand};
use packfy_deploy::hooks::{self, HookEnv, HookError, HookEvent, HookKind, HookOutput, Stream};
use packfy_deploy::ui::{Output, Ui, Verbosity};
use support::fixture::{RegionFile, RegionsDir, Service};

/// Records what the hooks report, with the time each event arrived.
#[derive(Default)]
struct Recorder(Mutex<Vec<(Instant, String)>>);

impl HookOutput for Recorder {
    fn event(&self, e: HookEvent<'_>) {
        let text = match e {
            HookEvent::Started { kind, name, .. } => format!("start {kind} {name}"),
            HookEvent::Line {
                name, stream, text, ..
            } => {
                let s = if stream == Stream::Stdout {
                    "out"
                } else {
                    "err"
                };
                format!("{s} {name}: {text}")
            }
            HookEvent::Finished { kind, name, .. } => format!("done {kind} {name}"),
        };
        self.0.lock().unwrap().push((Instant::now(), text));
    }
}

impl Recorder {
    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }
    fn at(&self, line: &str) -> Instant {
        let v = self.0.lock().unwrap();
        v.iter()
            .find(|(_, l)| l == line)
            .unwrap_or_else(|| panic!("no line {line:?} in {v:?}"))
            .0
    }
}

fn env() -> HookEnv {
    HookEnv {
        region: "mexico".into(),
        environment: "production".into(),
        version: "1.4.2".into(),
        release: "20261123-100000-ab12".into(),
        previous: Some("20261120-090000-cd34".into()),
        outcome: None,
    }
}

fn sh(name: &str, line: &str) -> Hook {
    Hook {
        name: Some(name.into()),
        command: HookCommand::Shell(line.into()),
        ..Hook::default()
    }
}

async fn run(kind: HookKind, hooks: &[Hook], root: &Path) -> (Result<(), HookError>, Recorder) {
    let rec = Recorder::default();
    let r = hooks::run_with(kind, hooks, &env(), root, &rec).await;
    (r, rec)
}

/// Dead, or a zombie nobody reaped yet.
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// The pid a hook wrote to `file` in `root`.
fn read_pid(root: &Path, file: &str) -> u32 {
    std::fs::read_to_string(root.join(file))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn wait_dead(pid: u32) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test]
async fn hooks_get_the_deploy_in_their_environment() {
    let root = tempfile::tempdir().unwrap();
    let hook = Hook {
        name: None,
        command: HookCommand::Argv(vec![
            "sh".into(),
            "-c".into(),
            // Only the variables the hook runner sets: the test environment exports others.
            "env | grep -E '^PACKFY_(ENV|HOOK|HOOK_NAME|OUTCOME|PREVIOUS_RELEASE|REGION|RELEASE|VERSION)=' | sort".into(),
        ]),
        ..Hook::default()
    };
    let (r, rec) = run(HookKind::PostDeploy, &[hook], root.path()).await;
    r.unwrap();
    assert_eq!(
        rec.lines(),
        [
            "start post_deploy sh",
            "out sh: PACKFY_ENV=production",
            "out sh: PACKFY_HOOK=post_deploy",
            "out sh: PACKFY_HOOK_NAME=sh",
            "out sh: PACKFY_OUTCOME=",
            "out sh: PACKFY_PREVIOUS_RELEASE=20261120-090000-cd34",
            "out sh: PACKFY_REGION=mexico",
            "out sh: PACKFY_RELEASE=20261123-100000-ab12",
            "out sh: PACKFY_VERSION=1.4.2",
            "done post_deploy sh",
        ]
    );
}

#[tokio::test]
async fn output_is_streamed_line_by_line_as_it_comes() {
    let root = tempfile::tempdir().unwrap();
    let hook = sh(
        "tests",
        "echo one; sleep 0.2; echo oops >&2; sleep 1; printf 'two\\r\\nthree'",
    );
    let (r, rec) = run(HookKind::PreDeploy, &[hook], root.path()).await;
    r.unwrap();
    assert_eq!(
        rec.lines(),
        [
            "start pre_deploy tests",
            "out tests: one",
            "err tests: oops",
            "out tests: two",
            "out tests: three",
            "done pre_deploy tests",
        ]
    );
    // "one" was passed on while the hook still ran, not when it ended.
    let early = rec.at("done pre_deploy tests") - rec.at("out tests: one");
    assert!(early >= Duration::from_millis(800), "{early:?}");
}

#[tokio::test]
async fn hooks_run_in_order_and_the_first_failure_stops_the_rest() {
    let root = tempfile::tempdir().unwrap();
    let hooks = [
        sh("first", "echo first > ran-first"),
        sh("unit-tests", "echo 'running 3 tests'; echo 'test a ... FAILED' >&2; echo 'error: 1 test failed' >&2; exit 3"),
        sh("never", "echo never > ran-never"),
    ];
    let (r, rec) = run(HookKind::PreDeploy, &hooks, root.path()).await;
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        "pre_deploy hook `unit-tests` failed with exit code 3; the last lines of its stderr:\n    test a ... FAILED\n    error: 1 test failed"
    );
    assert_eq!(e.exit_code(), Some(3));
    assert!(root.path().join("ran-first").exists());
    assert!(!root.path().join("ran-never").exists());
    assert!(!rec.lines().iter().any(|l| l.contains("never")));
}

#[tokio::test]
async fn only_the_last_lines_of_stderr_are_quoted() {
    let root = tempfile::tempdir().unwrap();
    let hook = sh(
        "noisy",
        "for i in $(seq 1 30); do echo line$i >&2; done; exit 1",
    );
    let (r, _) = run(HookKind::PostRollback, &[hook], root.path()).await;
    let msg = r.unwrap_err().to_string();
    let quoted: Vec<&str> = msg.lines().skip(1).map(str::trim).collect();
    let expected: Vec<String> = (21..=30).map(|i| format!("line{i}")).collect();
    assert_eq!(quoted, expected);
    assert_eq!(hooks::STDERR_TAIL, 10);
}

#[tokio::test]
async fn a_timed_out_hook_has_its_process_group_killed() {
    let root = tempfile::tempdir().unwrap();
    let hook = Hook {
        timeout: "1s".parse().unwrap(),
        ..sh(
            "slow",
            "sleep 300 & echo $! > bg.pid; echo started >&2; sleep 300",
        )
    };
    let started = Instant::now();
    let (r, _) = run(HookKind::PostDeploy, &[hook], root.path()).await;
    let took = started.elapsed();
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        "post_deploy hook `slow` timed out after 1s and its process group was killed; the last lines of its stderr:\n    started"
    );
    assert!(matches!(e, HookError::TimedOut { .. }));
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(
        took < Duration::from_secs(1) + hooks::TERM_GRACE,
        "{took:?}"
    );
    let pid = read_pid(root.path(), "bg.pid");
    assert!(wait_dead(pid), "the background sleep {pid} survived");
}

#[tokio::test]
async fn a_hook_that_ignores_sigterm_is_killed() {
    let root = tempfile::tempdir().unwrap();
    let hook = Hook {
        timeout: "500ms".parse().unwrap(),
        ..sh(
            "stubborn",
            "trap '' TERM; echo $$ > sh.pid; while :; do sleep 0.1; done",
        )
    };
    let started = Instant::now();
    let (r, _) = run(HookKind::PreRollback, &[hook], root.path()).await;
    let took = started.elapsed();
    assert_eq!(
        r.unwrap_err().to_string(),
        "pre_rollback hook `stubborn` timed out after 500ms and its process group was killed (nothing on stderr)"
    );
    assert!(took >= hooks::TERM_GRACE, "{took:?}");
    assert!(
        took < hooks::TERM_GRACE + Duration::from_secs(2),
        "{took:?}"
    );
    assert!(wait_dead(read_pid(root.path(), "sh.pid")));
}

#[tokio::test]
async fn a_hook_is_done_when_its_own_process_exits() {
    let root = tempfile::tempdir().unwrap();
    // The background sleep keeps stdout open; the hook must not wait for it.
    let hook = sh(
        "daemon",
        "sleep 30 & echo $! > bg.pid; echo left it running",
    );
    let started = Instant::now();
    let (r, rec) = run(HookKind::PostDeploy, &[hook], root.path()).await;
    r.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(rec
        .lines()
        .contains(&"out daemon: left it running".to_string()));
    let pid = read_pid(root.path(), "bg.pid");
    assert!(
        !dead(pid),
        "a background process of a finished hook is left alone"
    );
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

#[tokio::test]
async fn programs_run_without_a_shell_in_their_directory() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("backend")).unwrap();
    let hook = Hook {
        name: Some("where".into()),
        command: HookCommand::Argv(vec!["pwd".into()]),
        dir: Some("backend".into()),
        ..Hook::default()
    };
    let (r, rec) = run(HookKind::PreDeploy, &[hook], root.path()).await;
    r.unwrap();
    let dir = root.path().join("backend").canonicalize().unwrap();
    assert_eq!(rec.lines()[1], format!("out where: {}", dir.display()));
}

#[tokio::test]
async fn hooks_that_cannot_start_say_why() {
    let root = tempfile::tempdir().unwrap();
    let missing = Hook {
        command: HookCommand::Argv(vec!["/nonexistent/deploy-check".into()]),
        ..Hook::default()
    };
    let (r, rec) = run(HookKind::PreDeploy, &[missing], root.path()).await;
    assert_eq!(
        r.unwrap_err().to_string(),
        "pre_deploy hook `deploy-check` could not start `/nonexistent/deploy-check`: No such file or directory (os error 2)"
    );
    assert!(rec.lines().iter().all(|l| !l.starts_with("done")));

    let bad_dir = Hook {
        dir: Some("frontend".into()),
        ..sh("build", "true")
    };
    let (r, _) = run(HookKind::PreDeploy, &[bad_dir], root.path()).await;
    assert_eq!(
        r.unwrap_err().to_string(),
        format!(
            "pre_deploy hook `build` could not start `sh`: its directory {} does not exist",
            root.path().join("frontend").display()
        )
    );
}

#[tokio::test]
async fn run_reports_through_the_ui_and_returns_a_hook_error() {
    let root = tempfile::tempdir().unwrap();
    let ui = Ui::new(Output::Human, Verbosity::Quiet);
    hooks::run(
        HookKind::PostDeploy,
        &[sh("ok", "true")],
        &env(),
        root.path(),
        &ui,
    )
    .await
    .unwrap();
    let e = hooks::run(
        HookKind::PostDeploy,
        &[sh("bad", "exit 7")],
        &env(),
        root.path(),
        &ui,
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.downcast_ref::<HookError>().and_then(HookError::exit_code),
        Some(7)
    );
}

/// `validate` on a region whose `hooks:` has every kind of mistake: each at its file:line:col.
#[test]
fn validate_reports_bad_hooks_where_they_are_written() {
    let dir = RegionsDir::new();
    let regions = dir.regions();
    // `validate` exits 2; its stderr lines, with paths relative to the regions directory.
    let validate = || {
        let out = support::run_cli(
            &mut support::cli(dir.path(), &["--env", "staging", "validate"]),
            &[],
        );
        assert_eq!(out.status.code(), Some(2));
        support::stderr(&out).replace(&format!("{}/", regions.display()), "")
    };
    dir.write(
        "_defaults",
        &RegionFile::new().extra(
            "hooks:\n  post_deploy:\n    - {name: smoke, command: ./smoke.sh, timeout: 0s}\n",
        ),
    );
    // Five lines of a valid region, then the broken hooks as written (lines 6 on).
    let mexico = RegionFile::docker("unix:///var/run/docker.sock")
        .currency("MXN")
        .service(Service::new("web", "example/web"));
    dir.write(
        "mexico",
        &mexico.clone().extra(
            r#"hooks:
  pre_deploy:
    - {name: tests, command: "cargo test", timeout: 10m}
    - {name: tests, command: [], dir: /abs}
    - {command: [make, 3], timout: 1m}
"#,
        ),
    );
    assert_eq!(
        validate().lines().collect::<Vec<_>>(),
        // Every problem at once, in file order: type errors no longer hide the rules.
        [
            "error: hooks.post_deploy.0.timeout: must be above 0 at _defaults.yaml:3:51 — the longest the command may run, e.g. 5m",
            "error: hooks.pre_deploy.1.name: 'tests' is already the name of hooks.pre_deploy.0 at mexico.yaml:9:14 — give each hook of one kind its own name; errors and output name it",
            "error: hooks.pre_deploy.1: no command at mexico.yaml:9:30 — write `command: [program, arg, ...]`, or a string run with `sh -c`",
            "error: hooks.pre_deploy.1.dir: '/abs' is not a path relative to the repository root at mexico.yaml:9:39 — e.g. `dir: backend`; leave it out to run in the repository root",
            "error: hooks.pre_deploy.2.command.1: expected a string, found an integer (3) at mexico.yaml:10:24 — quote the value to make it a string",
            "error: unknown field 'timout' in hooks.pre_deploy.2 at mexico.yaml:10:28 — did you mean 'timeout'?",
            "error: 6 problems; nothing was changed",
        ]
    );
    dir.write(
        "mexico",
        &mexico.extra(
            r#"hooks:
  pre_deploy:
    - {name: tests, command: "cargo test", timeout: 10m}
    - {name: tests, command: [], dir: /abs}
"#,
        ),
    );
    assert_eq!(
        validate().lines().collect::<Vec<_>>(),
        [
            "error: hooks.post_deploy.0.timeout: must be above 0 at _defaults.yaml:3:51 — the longest the command may run, e.g. 5m",
            "error: hooks.pre_deploy.1.name: 'tests' is already the name of hooks.pre_deploy.0 at mexico.yaml:9:14 — give each hook of one kind its own name; errors and output name it",
            "error: hooks.pre_deploy.1: no command at mexico.yaml:9:30 — write `command: [program, arg, ...]`, or a string run with `sh -c`",
            "error: hooks.pre_deploy.1.dir: '/abs' is not a path relative to the repository root at mexico.yaml:9:39 — e.g. `dir: backend`; leave it out to run in the repository root",
            "error: 4 problems; nothing was changed",
        ]
    );
}
