//! packfy-deploy: region-by-region deployment orchestration.
//!
//! `run` parses the command line, runs one operation and is the only place that turns an
//! error into an exit code (see `error.rs`).

//!
//! Layers, each using only those above it in this list:
//! config, error, ui, secrets, lock, release, plan, health, render, ssh, traffic, hooks, notify,
//! context, backup (the basics) ← targets (docker, kubernetes) ← flow (deploy, rollback,
//! fleet) ← commands (one file per command) ← cli and `run` here.

pub mod backup;
pub mod cli;
pub mod commands;
pub mod config;
pub mod context;
pub mod drift;
pub mod error;
pub mod flow;
pub mod health;
pub mod hooks;
pub mod lock;
pub mod notify;
pub mod plan;
pub mod prometheus;
pub mod release;
pub mod render;
pub mod secrets;
pub mod ssh;
pub mod targets;
pub mod traffic;
pub mod ui;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};
use error::{Chain, Error, ExitCode};
use targets::Steer;
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
    if verbosity == Verbosity::Verbose {
        // Logs at -v (RUST_LOG to choose), through the same masker as all other output.
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("packfy_deploy=debug"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(secrets::MaskingMakeWriter::new(std::io::stderr))
            .try_init();
    }
    let ui = Ui::new(cli.global.output, verbosity);
    let ctx = context::Ctx::new(ui.clone(), cli.global.regions_dir.clone(), cli.global.env);
    let result = match cli.command {
        Command::Validate { regions } => commands::validate::run(&ctx, &regions),
        Command::Diff {
            a,
            b,
            live,
            region,
            version,
        } => match (a.or(region), b, live) {
            (Some(a), Some(b), false) => commands::diff::run(&ctx, &a, &b),
            (Some(a), _, _) => commands::diff::live(&ctx, &a, version),
            (None, ..) => Err(error::Error::usage("name a region to compare")),
        },
        Command::Plan { region, version } => commands::plan::run(&ctx, &region, version),
        Command::Build {
            region,
            push,
            version,
        } => commands::build::run(&ctx, &region, push, version),
        Command::Deploy(args) => commands::deploy::run(&ctx, &args),
        Command::Rollback {
            region,
            to,
            lock_wait,
            force,
        } => commands::rollback::run(
            &ctx,
            commands::rollback::RollbackOptions {
                region: &region,
                to: to.as_deref(),
                lock_wait,
                force,
            },
        ),
        Command::Status { region } => commands::status::run(&ctx, region.as_deref()),
        Command::History { region, limit } => commands::history::run(&ctx, &region, limit),
        Command::Lock {
            region,
            reason,
            ttl,
        } => commands::lock::run(&ctx, &region, &reason, ttl),
        Command::Unlock { region, force } => commands::unlock::run(&ctx, &region, force),
        Command::Promote { region, full } => {
            commands::steer::run(&ctx, &region, Steer::Promote { full })
        }
        Command::Abort { region } => commands::steer::run(&ctx, &region, Steer::Abort),
        Command::Pause { region } => commands::steer::run(&ctx, &region, Steer::Pause),
        Command::Resume { region } => commands::steer::run(&ctx, &region, Steer::Resume),
        Command::Explain { region, key } => commands::explain::run(&ctx, &region, &key),
        Command::Render(args) => commands::render::run(&ctx, &args),
        Command::Backup(cmd) => commands::backup::run(&ctx, cmd),
        Command::Schema => commands::schema(&ctx),
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
        ui.err_json(&v);
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
