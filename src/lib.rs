//! packfy-deploy: region-by-region deployment orchestration.
//!
//! `run` parses the command line, runs one operation and is the only place that turns an
//! error into an exit code (see `error.rs`).

pub mod backup;
pub mod cli;
pub mod config;
pub mod deploy;
pub mod docker;
pub mod error;
pub mod health;
pub mod hooks;
pub mod k8s;
pub mod notify;
pub mod ops;
pub mod plan;
pub mod release;
pub mod render;
pub mod secrets;
pub mod traffic;
pub mod ui;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};
use error::{Chain, Error, ExitCode};
use ui::{Ui, Verbosity};

/// Runs the CLI with the process arguments and returns the exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                ExitCode::Usage
            } else {
                ExitCode::Success
            };
            let _ = e.print();
            return code as i32;
        }
    };
    let verbosity = if cli.global.quiet {
        Verbosity::Quiet
    } else if cli.global.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let ui = Ui::new(cli.global.output, verbosity);
    let ctx = ops::Ctx::new(ui.clone(), cli.global.regions_dir.clone(), cli.global.env);
    let result = match cli.command {
        Command::Validate { regions } => ops::validate::run(&ctx, &regions),
        Command::Diff {
            a,
            b,
            live,
            version,
        } => match (b, live) {
            (Some(b), false) => ops::diff::run(&ctx, &a, &b),
            _ => ops::target::diff_live(&ctx, &a, version),
        },
        Command::Plan { region, version } => ops::target::plan(&ctx, &region, version),
        Command::Build {
            region,
            push,
            version,
        } => ops::target::build(&ctx, &region, push, version),
        Command::Deploy(args) => ops::target::deploy(&ctx, &args),
        Command::Rollback {
            region,
            to,
            lock_wait,
        } => ops::target::rollback(&ctx, &region, to.as_deref(), lock_wait),
        Command::Status { region } => ops::target::status(&ctx, region.as_deref()),
        Command::History { region, limit } => ops::target::history(&ctx, &region, limit),
        Command::Lock {
            region,
            reason,
            ttl,
        } => ops::target::lock(&ctx, &region, &reason, ttl),
        Command::Unlock { region, force } => ops::target::unlock(&ctx, &region, force),
        Command::Explain { region, key } => ops::explain::run(&ctx, &region, &key),
        Command::Render(args) => ops::render::run(&ctx, &args),
        Command::Backup(cmd) => ops::backup::run(&ctx, cmd),
        Command::Schema => ops::schema(&ctx),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "packfy-deploy",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::Success)
        }
    };
    match result {
        Ok(code) => code as i32,
        Err(e) => {
            report(&ui, &e);
            e.code() as i32
        }
    }
}

/// Prints an error once, in one place.
fn report(ui: &Ui, e: &Error) {
    if ui.json() {
        let problems: Vec<_> = match e {
            Error::Config(ds) => ds.iter().map(|d| d.to_json()).collect(),
            _ => vec![],
        };
        let hint = match e {
            Error::Usage { hint, .. } | Error::Failed { hint, .. } => hint.clone(),
            Error::Config(_) => None,
        };
        let v = serde_json::json!({
            "error": e.to_string(),
            "exit_code": e.code() as i32,
            "problems": problems,
            "hint": hint,
        });
        eprintln!("{v}");
        return;
    }
    match e {
        Error::Config(ds) => {
            for d in ds {
                ui.diagnostic(d);
            }
            if ds.len() > 1 {
                ui.error(format!("{} problems; nothing was changed", ds.len()));
            }
        }
        Error::Usage { message, hint } => {
            ui.error(message);
            if let Some(h) = hint {
                ui.hint(h);
            }
        }
        Error::Failed { error, hint, .. } => {
            ui.error(format!("{error}{}", Chain(error)));
            if let Some(h) = hint {
                ui.hint(h);
            }
        }
    }
}
