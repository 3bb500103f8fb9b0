//! The command line: arguments only. Each command turns into an options struct for `ops`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Environment;
use crate::ui::Output;

#[derive(Debug, Parser)]
#[command(
    name = "packfy-deploy",
    version,
    about = "Deploy one service to many regions: Docker hosts and Kubernetes clusters, with health checks, backups and automatic rollback",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Directory of region files (_defaults.yaml and one file per region)
    #[arg(
        long,
        global = true,
        env = "PACKFY_REGIONS_DIR",
        default_value = "regions",
        value_name = "DIR"
    )]
    pub regions_dir: PathBuf,
    /// Environment overlay: development, staging or production
    #[arg(
        long,
        short = 'e',
        global = true,
        env = "PACKFY_ENV",
        value_name = "ENV"
    )]
    pub env: Option<Environment>,
    /// Output format
    #[arg(long, short = 'o', global = true, value_enum, default_value = "human")]
    pub output: Output,
    /// More detail
    #[arg(long, short = 'v', global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Only errors and the result
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check region files; every problem as file:line:col with a hint
    Validate {
        /// Regions to check (all when none given)
        regions: Vec<String>,
    },
    /// Compare the effective configuration of two regions
    Diff {
        /// Left region
        a: String,
        /// Right region
        b: String,
    },
    /// Show a value of a region and the file:line that set it
    Explain {
        region: String,
        /// Dotted key, e.g. services.backend.replicas
        key: String,
    },
    /// Render Kubernetes manifests from templates/
    Render(RenderArgs),
    /// Print the JSON Schema of region files (for editors)
    Schema,
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Region to render (all Kubernetes regions when omitted)
    #[arg(long, short = 'r')]
    pub region: Option<String>,
    /// Directory to write into [default: manifests/ beside the regions directory]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Template directory [default: templates/ beside the regions directory]
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// Image tag to render [default: the `version:` of the region]
    #[arg(long = "image-tag", value_name = "TAG")]
    pub image_tag: Option<String>,
    /// Write nothing; exit 1 naming the files that differ from a fresh render
    #[arg(long)]
    pub check: bool,
}
