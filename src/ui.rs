//! All user-facing output goes through [`Ui`]: status lines, warnings, errors and JSON.
//!
//! Colour follows the terminal (anstream strips it off a terminal and honours NO_COLOR);
//! `-q` keeps only errors and results; `--output json` keeps stdout machine-readable.

use std::io::Write;

use anstream::{eprintln, println};
use anstyle::{AnsiColor, Style};

use crate::config::Diagnostic;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Output {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

#[derive(Debug, Clone)]
pub struct Ui {
    pub output: Output,
    pub verbosity: Verbosity,
}

pub const RED: Style = AnsiColor::Red.on_default().bold();
pub const GREEN: Style = AnsiColor::Green.on_default();
pub const YELLOW: Style = AnsiColor::Yellow.on_default().bold();
pub const CYAN: Style = AnsiColor::Cyan.on_default();
pub const BOLD: Style = Style::new().bold();
pub const DIM: Style = Style::new().dimmed();

impl Ui {
    pub fn new(output: Output, verbosity: Verbosity) -> Self {
        Ui { output, verbosity }
    }

    pub fn json(&self) -> bool {
        self.output == Output::Json
    }

    /// A progress/status line on stderr (`     Deploying mexico`), hidden with -q.
    pub fn status(&self, verb: &str, message: impl std::fmt::Display) {
        if self.verbosity >= Verbosity::Normal {
            eprintln!("{GREEN}{BOLD}{verb:>12}{BOLD:#}{GREEN:#} {message}");
        }
    }

    pub fn verbose(&self, message: impl std::fmt::Display) {
        if self.verbosity >= Verbosity::Verbose {
            eprintln!("{DIM}{message}{DIM:#}");
        }
    }

    pub fn warn(&self, message: impl std::fmt::Display) {
        eprintln!("{YELLOW}warning{YELLOW:#}: {message}");
    }

    pub fn error(&self, message: impl std::fmt::Display) {
        eprintln!("{RED}error{RED:#}: {message}");
    }

    pub fn hint(&self, hint: impl std::fmt::Display) {
        eprintln!("  {CYAN}hint{CYAN:#}: {hint}");
    }

    pub fn diagnostic(&self, d: &Diagnostic) {
        self.error(d);
    }

    /// A result line on stdout (the command's answer).
    pub fn out(&self, line: impl std::fmt::Display) {
        println!("{line}");
    }

    pub fn out_json(&self, value: &serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer_pretty(&mut out, value);
        let _ = writeln!(out);
    }
}
