//! The command line: arguments only. Each command turns into an options struct for `ops`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Environment;
use crate::ui::Output;

#[derive(Debug, Parser)]
#[command(
    name = "packfy-deploy",
    version,
    about = "Deploy one service to many regions: Docker hosts and Kubernetes clusters, with health checks, backups and automatic rollback"
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
    /// Compare two regions' effective configuration, or a region's desired state with what runs
    Diff {
        /// Left region (or, with --live, the region, several as a,b, or all)
        #[arg(required_unless_present = "region")]
        a: Option<String>,
        /// Right region
        #[arg(required_unless_present = "live")]
        b: Option<String>,
        /// Drift: compare what runs now on the region's target with its configuration at the
        /// version it serves (exit 1 when they differ)
        #[arg(long, conflicts_with = "b")]
        live: bool,
        /// The regions to compare with --live, as for deploy: R, a,b or all
        #[arg(long, short = 'r', requires = "live", conflicts_with = "a")]
        region: Option<String>,
        /// Version to compare with --live [default: the version the region serves, else the
        /// config's `version:`]
        #[arg(long, requires = "live")]
        version: Option<String>,
    },
    /// Show a value of a region and the file:line that set it
    Explain {
        region: String,
        /// Dotted key, e.g. services.backend.replicas
        key: String,
    },
    /// Render Kubernetes manifests from templates/
    Render(RenderArgs),
    /// Show what deploy would do, changing nothing (exit 1 when there are changes)
    Plan {
        #[arg(long, short = 'r')]
        region: String,
        /// Version to plan [default: git commit for built services, else `version:`]
        #[arg(long)]
        version: Option<String>,
    },
    /// Build (and push) the images of a region's services
    Build {
        #[arg(long, short = 'r')]
        region: String,
        /// Push to the registry the image names point at
        #[arg(long)]
        push: bool,
        /// Tag [default: the git commit, with -dirty-<hash> for an uncommitted tree]
        #[arg(long)]
        version: Option<String>,
    },
    /// Lock → back up → build → roll out → verify → record (rolls back by itself on failure)
    Deploy(DeployArgs),
    /// Go back to the previous healthy release (or the one given with --to)
    Rollback {
        /// Region, several (a,b) or all (all at once, not in waves)
        #[arg(long, short = 'r')]
        region: String,
        /// Release to go back to, e.g. r3
        #[arg(long)]
        to: Option<String>,
        /// Wait this long for a held lock, e.g. 5m
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        lock_wait: Option<std::time::Duration>,
        /// Go back past a one-way release step (a migration the older release may not read)
        #[arg(long)]
        force: bool,
    },
    /// Move a paused canary on past its pause (--full: past every remaining step)
    Promote {
        #[arg(long, short = 'r')]
        region: String,
        /// Skip the remaining steps: all traffic to the new release now
        #[arg(long)]
        full: bool,
    },
    /// Take a canary back: all traffic to the old release at once, the new one removed
    Abort {
        #[arg(long, short = 'r')]
        region: String,
    },
    /// Stop a running canary at its next check; it waits for `resume` or `promote`
    Pause {
        #[arg(long, short = 'r')]
        region: String,
    },
    /// Go on with a canary stopped by `pause`, from the step it stopped at
    Resume {
        #[arg(long, short = 'r')]
        region: String,
    },
    /// What runs where: current release, containers, health, lock
    Status {
        #[arg(long, short = 'r')]
        region: Option<String>,
    },
    /// Releases of a region with outcome, actor, time and version
    History {
        #[arg(long, short = 'r')]
        region: String,
        /// Show at most this many, newest first
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Hold a region's lock by hand
    Lock {
        #[arg(long, short = 'r')]
        region: String,
        /// Why (shown to whoever is refused)
        #[arg(long, default_value = "held by hand")]
        reason: String,
        /// How long it holds [default: the region's lock_ttl]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Free a region's lock (--force frees someone else's)
    Unlock {
        #[arg(long, short = 'r')]
        region: String,
        #[arg(long)]
        force: bool,
    },
    /// Data backups taken before deploys: list, verify, restore
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Print the JSON Schema of region files (for editors)
    Schema,
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Backups in the store, oldest first (all environments unless --env is given)
    List {
        #[arg(long, short = 'r')]
        region: Option<String>,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Recompute a backup's checksums; exit 1 when it does not match its record
    Verify {
        /// region/env/release/job, as `backup list` shows it
        id: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Feed a backup to a command on its standard input (never automatic; asks first)
    Restore {
        /// region/env/release/job, as `backup list` shows it
        id: String,
        #[command(flatten)]
        store: StoreArg,
        /// Do not ask (required off a terminal)
        #[arg(long, short = 'y')]
        yes: bool,
        /// The command that reads the dump on stdin, e.g. `--into psql --dbname URL` (takes
        /// the rest of the line) [default: the job's `restore:`]
        #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "COMMAND")]
        into: Vec<String>,
    },
}

/// `--store`: one store instead of those the region's jobs name.
#[derive(Debug, Args)]
pub struct StoreArg {
    /// Only this store, as a release record names it: a directory or s3://BUCKET/PREFIX
    /// (credentials: a job's `s3:` for the same bucket, else the AWS_* variables)
    /// [default: the stores the region's jobs name, and backups/]
    #[arg(long = "store", value_name = "STORE")]
    pub store: Option<String>,
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

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Region to deploy, several (a,b) or all, in the waves of _defaults.yaml
    #[arg(long, short = 'r')]
    pub region: String,
    /// Version (image tag) to deploy [default: git commit for built services, else `version:`]
    #[arg(long)]
    pub version: Option<String>,
    /// Use images already on the engine or in the registry; build nothing
    #[arg(long)]
    pub no_build: bool,
    /// Push built images to their registry before deploying
    #[arg(long)]
    pub push: bool,
    /// Wait this long for a held lock, e.g. 5m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lock_wait: Option<std::time::Duration>,
    /// Why (recorded on the lock)
    #[arg(long)]
    pub reason: Option<String>,
    /// Kubernetes: take over fields another field manager owns instead of stopping
    #[arg(long)]
    pub force_conflicts: bool,
    /// Take drift back: remove what the configuration does not set (fields other field
    /// managers added, containers no release accounts for) and restore what was changed by
    /// hand (values, replicas, stopped containers, HAProxy states and weights)
    #[arg(long)]
    pub reset_drift: bool,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::config::model::parse_duration(s).map_err(|(m, h)| format!("{m}; {h}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
