//! All user-facing output goes through [`Ui`]: status lines, warnings, errors and JSON.
//!
//! - Colour follows the terminal (anstream strips it off a terminal and honours NO_COLOR).
//! - `-q` keeps only errors and each command's outcome.
//! - `--output json` keeps stdout machine-readable: documents for read commands, and for
//!   deploys and rollbacks one JSON event per line (NDJSON) plus a summary per region.
//! - A multi-region run on a terminal shows one progress line per region (indicatif); off a
//!   terminal or under CI, plain lines with a timestamp and the region instead.

use std::io::Write;
use std::sync::Arc;

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
    /// The region this output is about, in multi-region runs.
    pub region: Option<String>,
    /// Plain status lines carry a timestamp (deploys off a terminal or under CI).
    pub timestamps: bool,
    /// Steps are events of a deploy or rollback: NDJSON on stdout with -o json.
    pub stream: bool,
    /// This region's line of a multi-region progress display.
    pub bar: Option<Arc<indicatif::ProgressBar>>,
    /// Progress per service (new replicas ready, wanted), summed on the bar.
    progress: Arc<std::sync::Mutex<std::collections::BTreeMap<String, (u64, u64)>>>,
}

pub const RED: Style = AnsiColor::Red.on_default().bold();
pub const GREEN: Style = AnsiColor::Green.on_default();
pub const YELLOW: Style = AnsiColor::Yellow.on_default().bold();
pub const CYAN: Style = AnsiColor::Cyan.on_default();
pub const BOLD: Style = Style::new().bold();
pub const DIM: Style = Style::new().dimmed();

/// Whether progress should be drawn: stderr is a terminal and this is not CI.
pub fn interactive() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
        && std::env::var("CI").map_or(true, |v| v.is_empty() || v == "false")
}

impl Ui {
    pub fn new(output: Output, verbosity: Verbosity) -> Self {
        Ui {
            output,
            verbosity,
            region: None,
            timestamps: false,
            stream: false,
            bar: None,
            progress: Default::default(),
        }
    }

    /// The same Ui, speaking for one region.
    pub fn for_region(&self, region: &str, bar: Option<indicatif::ProgressBar>) -> Ui {
        Ui {
            region: Some(region.to_string()),
            bar: bar.map(Arc::new),
            progress: Default::default(),
            ..self.clone()
        }
    }

    pub fn json(&self) -> bool {
        self.output == Output::Json
    }

    fn prefix(&self) -> String {
        let mut p = String::new();
        if self.timestamps {
            p.push_str(&chrono::Utc::now().format("%H:%M:%S%.3f ").to_string());
        }
        if let Some(r) = &self.region {
            p.push_str(&format!("[{r}] "));
        }
        p
    }

    /// A step of the work (`   Deploying mexico`): an NDJSON event with -o json, a progress
    /// line in multi-region terminal runs, else a line on stderr. Hidden with -q.
    pub fn status(&self, verb: &str, message: impl std::fmt::Display) {
        if self.json() && self.stream {
            self.event(verb, "running", &message.to_string());
            return;
        }
        if let Some(bar) = &self.bar {
            bar.set_message(masked(format!("{verb} {message}")));
            return;
        }
        if self.verbosity >= Verbosity::Normal {
            let p = self.prefix();
            err_line(&format!(
                "{p}{GREEN}{BOLD}{verb:>12}{BOLD:#}{GREEN:#} {message}"
            ));
        }
    }

    /// The outcome of a command: shown even with -q.
    pub fn outcome(&self, verb: &str, message: impl std::fmt::Display) {
        if self.json() && self.stream {
            self.event(verb, "done", &message.to_string());
            return;
        }
        if let Some(bar) = &self.bar {
            bar.finish_with_message(masked(format!("{verb} {message}")));
            return;
        }
        let p = self.prefix();
        err_line(&format!(
            "{p}{GREEN}{BOLD}{verb:>12}{BOLD:#}{GREEN:#} {message}"
        ));
    }

    /// One NDJSON event on stdout: time, region, step, status, detail.
    pub fn event(&self, step: &str, status: &str, detail: &str) {
        let v = serde_json::json!({
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "region": self.region,
            "step": step.trim().to_lowercase().replace(' ', "_"),
            "status": status,
            "detail": detail,
        });
        self.out_line(&v);
    }

    /// New replicas of `service` ready so far out of those wanted, for the progress display
    /// (the region's bar shows the sum over its services).
    pub fn progress(&self, service: &str, done: u64, total: u64) {
        let Some(bar) = &self.bar else { return };
        let mut all = self.progress.lock().expect("progress");
        all.insert(service.to_string(), (done.min(total), total));
        let (d, t) = all.values().fold((0, 0), |(d, t), (x, y)| (d + x, t + y));
        bar.set_length(t);
        bar.set_position(d);
    }

    pub fn verbose(&self, message: impl std::fmt::Display) {
        if self.verbosity >= Verbosity::Verbose && self.bar.is_none() {
            let p = self.prefix();
            err_line(&format!("{p}{DIM}{message}{DIM:#}"));
        }
    }

    pub fn warn(&self, message: impl std::fmt::Display) {
        self.above_bar(format!(
            "{}{YELLOW}warning{YELLOW:#}: {message}",
            self.prefix()
        ));
    }

    pub fn error(&self, message: impl std::fmt::Display) {
        self.above_bar(format!("{}{RED}error{RED:#}: {message}", self.prefix()));
    }

    /// A line on stderr, drawn above the progress bar when there is one.
    fn above_bar(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.suspend(|| err_line(&line)),
            None => err_line(&line),
        }
    }

    pub fn hint(&self, hint: impl std::fmt::Display) {
        err_line(&format!("  {CYAN}hint{CYAN:#}: {hint}"));
    }

    pub fn diagnostic(&self, d: &Diagnostic) {
        self.error(d);
    }

    /// A result line on stdout (the command's answer).
    pub fn out(&self, line: impl std::fmt::Display) {
        println!("{}", crate::secrets::mask(&line.to_string()));
    }

    /// A JSON document on stdout.
    pub fn out_json(&self, value: &serde_json::Value) {
        let mut value = value.clone();
        crate::secrets::mask_json(&mut value);
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer_pretty(&mut out, &value);
        let _ = writeln!(out);
    }

    /// One compact JSON line on stdout (NDJSON).
    pub fn out_line(&self, value: &serde_json::Value) {
        let mut value = value.clone();
        crate::secrets::mask_json(&mut value);
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, &value);
        let _ = writeln!(out);
        let _ = out.flush();
    }

    /// A JSON line on stderr (errors with -o json).
    pub fn err_json(&self, value: &serde_json::Value) {
        let mut value = value.clone();
        crate::secrets::mask_json(&mut value);
        err_line(&value.to_string());
    }
}

/// Every line this process writes to stderr passes here, with secret values masked.
fn err_line(line: &str) {
    eprintln!("{}", crate::secrets::mask(line));
}

fn masked(text: String) -> String {
    crate::secrets::mask(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_bar_sums_its_services() {
        let ui = Ui::new(Output::Human, Verbosity::Normal)
            .for_region("mx", Some(indicatif::ProgressBar::hidden()));
        ui.progress("backend", 2, 5);
        ui.progress("frontend", 1, 2);
        ui.progress("backend", 4, 5);
        let bar = ui.bar.as_ref().unwrap();
        assert_eq!((bar.position(), bar.length()), (5, Some(7)));
        // another region's Ui counts apart
        let other = ui.for_region("co", Some(indicatif::ProgressBar::hidden()));
        other.progress("backend", 9, 9);
        assert_eq!(ui.bar.as_ref().unwrap().position(), 5);
    }
}
