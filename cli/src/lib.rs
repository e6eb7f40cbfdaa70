//! The one `lifeboat` binary: the client commands a Velero user types (`install`, `backup`, `restore`,
//! `schedule`, `backup-location`, `snapshot-location`, `client config`, `completion`, …), the local
//! repository commands (`lifeboat repo …`), and the two processes of a cluster install,
//! `lifeboat server` and `lifeboat agent`, and `lifeboat restore-helper`, the `restic-wait` init
//! container a restore adds to restored pods.
//!
//! Exit codes, restic's: 0 on success; 1 on failure with one sentence on stderr naming what is
//! wrong; 3 when `repo backup` saved its snapshot but some files could not be read (each named
//! above); 10 when there is no repository at the location, 11 when it is locked by another
//! process, 12 when the password opens none of its keys (restic 0.17's codes).

mod backup;
mod bucket;
mod cluster;
mod completion;
mod config;
mod describe;
mod format;
mod install;
mod location;
mod progress;
mod repo;
mod restore;
mod schedule;
mod selector;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// lifeboat: file-level backup of Kubernetes volumes into restic repositories.
#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install lifeboat into a cluster (or print what would be installed with --dry-run).
    Install(install::InstallArgs),
    /// Remove what `install` created.
    Uninstall(install::UninstallArgs),
    /// Work with backups: create, get, describe, logs, download, delete.
    Backup(backup::BackupArgs),
    /// Work with restores: create, get, describe, logs, delete.
    Restore(restore::RestoreArgs),
    /// Wait for a restored pod's volumes (the `restic-wait` init container's process).
    #[command(name = "restore-helper")]
    RestoreHelper(RestoreHelperArgs),
    /// Work with schedules: backups taken on a cron schedule.
    Schedule(schedule::ScheduleArgs),
    /// Work with backup storage locations.
    #[command(name = "backup-location")]
    BackupLocation(location::BackupLocationArgs),
    /// Work with volume snapshot locations.
    #[command(name = "snapshot-location")]
    SnapshotLocation(location::SnapshotLocationArgs),
    /// The client's own settings.
    Client(config::ClientArgs),
    /// Print a shell completion script: `source <(lifeboat completion bash)`.
    Completion(completion::CompletionArgs),
    /// Run the server: the controllers and the agents' service (in the cluster's Deployment).
    Server(serve::ServerArgs),
    /// Run the node agent (in the cluster's DaemonSet).
    Agent(serve::AgentArgs),
    /// Work with a repository directly: init, backup, snapshots, restore, check, forget, prune,
    /// unlock; and `repo get`, the install's repositories.
    Repo(repo::RepoArgs),
    /// Velero's `restic` commands: `restic repo get`.
    Restic(ResticArgs),
}

#[derive(Debug, clap::Args)]
struct ResticArgs {
    #[command(subcommand)]
    command: ResticCommand,
}

#[derive(Debug, Subcommand)]
enum ResticCommand {
    /// The install's repositories.
    Repo(ResticRepoArgs),
}

#[derive(Debug, clap::Args)]
struct ResticRepoArgs {
    #[command(subcommand)]
    command: ResticRepoCommand,
}

#[derive(Debug, Subcommand)]
enum ResticRepoCommand {
    /// List the repositories with their phase and last maintenance.
    Get(ResticRepoGet),
}

#[derive(Debug, clap::Args)]
struct ResticRepoGet {
    #[command(flatten)]
    args: repo::RepositoryGetArgs,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = ResticOutput::Table)]
    output: ResticOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ResticOutput {
    Table,
    Json,
}

/// `lifeboat restore-helper`: see [`lifeboat_agent::helper`] for the contract.
#[derive(Debug, clap::Args)]
struct RestoreHelperArgs {
    /// The UID of the Restore (the name of the agent's marker files).
    restore_uid: String,
    /// Where the pod's volumes are mounted, one directory each.
    #[arg(long, default_value = "/restores")]
    restores_dir: std::path::PathBuf,
    /// How long to wait for every volume before failing.
    #[arg(long, default_value = "4h", value_parser = positive_duration)]
    timeout: std::time::Duration,
    /// How often to look at the volumes' markers.
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    poll_interval: std::time::Duration,
    /// A volume that cannot be restored, and why (repeatable; set by the server).
    #[arg(long, value_name = "VOLUME=REASON", value_parser = failed_volume)]
    failed: Vec<(String, String)>,
}

fn positive_duration(text: &str) -> Result<std::time::Duration, String> {
    lifeboat_server::parse_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{text}` is not a duration such as 4h, 1s or 100ms"))
}

fn failed_volume(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((volume, reason)) if !volume.trim().is_empty() => {
            Ok((volume.trim().to_string(), reason.trim().to_string()))
        }
        _ => Err(format!("`{text}` is not VOLUME=REASON")),
    }
}

/// Runs the restore helper; its lines are plain text for `kubectl logs`, and its exit code is
/// the init container's: 0 when every volume is restored, 1 otherwise.
async fn restore_helper(args: RestoreHelperArgs) -> ExitCode {
    use lifeboat_agent::helper::{HelperOptions, Outcome, wait};
    let options = HelperOptions {
        restore_uid: args.restore_uid,
        restores_dir: args.restores_dir,
        failed: args.failed.into_iter().collect(),
        timeout: args.timeout,
        poll_interval: args.poll_interval,
    };
    match wait(&options).await {
        Err(e) => {
            eprintln!("lifeboat: {}", lifeboat_repo::error_chain(&e));
            ExitCode::FAILURE
        }
        Ok((Outcome::Restored(volumes), not_removed)) => {
            for volume in volumes {
                println!("volume {volume} restored");
            }
            for why in not_removed {
                eprintln!("warning: {why}");
            }
            ExitCode::SUCCESS
        }
        Ok((Outcome::Failed(failed), _)) => {
            for (volume, reason) in failed {
                eprintln!("volume {volume}: {reason}");
            }
            ExitCode::FAILURE
        }
        Ok((Outcome::TimedOut(waiting), _)) => {
            eprintln!(
                "timed out after {} waiting for the restore of volume(s) {}",
                format::go_duration(options.timeout),
                waiting.join(", ")
            );
            ExitCode::FAILURE
        }
    }
}

/// Parses the arguments, runs the command, and turns errors into one line and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(
        cli.command,
        Command::Server(_) | Command::Agent(_)
    ));
    // kube, tonic and object_store all speak rustls; one crypto provider (ring) for all of them.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lifeboat: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let done = match cli.command {
            Command::Install(args) => install::install(args).await,
            Command::Uninstall(args) => install::uninstall(args).await,
            Command::Backup(args) => backup::run(args).await,
            Command::Restore(args) => restore::run(args).await,
            // Its own exit codes and lines: an init container's, read in `kubectl logs`.
            Command::RestoreHelper(args) => return Ok(restore_helper(args).await),
            Command::Schedule(args) => schedule::run(args).await,
            Command::BackupLocation(args) => location::run_backup_location(args).await,
            Command::SnapshotLocation(args) => location::run_snapshot_location(args).await,
            Command::Client(args) => config::run(args),
            Command::Completion(args) => completion::run::<Cli>(args),
            Command::Server(args) => serve::server(args).await,
            Command::Agent(args) => serve::agent(args).await,
            Command::Repo(args) => repo::run(args).await,
            Command::Restic(args) => match args.command {
                ResticCommand::Repo(repo) => match repo.command {
                    ResticRepoCommand::Get(get) => {
                        repo::repositories(&get.args, get.output == ResticOutput::Json).await
                    }
                },
            },
        };
        done.map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lifeboat: {}", sentence(&err));
            exit_code(&err)
        }
    }
}

/// A command's outcome that is not plain failure: the sentence to print and restic's exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Exit {
    pub code: u8,
    pub message: String,
}

/// The exit code of a failed command: its own ([`Exit`]), restic's for the repository errors
/// scripts test for, else 1.
fn exit_code(err: &anyhow::Error) -> ExitCode {
    use lifeboat_repo::Error as RepoError;
    for cause in err.chain() {
        if let Some(exit) = cause.downcast_ref::<Exit>() {
            return ExitCode::from(exit.code);
        }
        match cause.downcast_ref::<RepoError>() {
            Some(RepoError::NoRepository { .. }) => return ExitCode::from(10),
            Some(RepoError::Locked { .. }) => return ExitCode::from(11),
            Some(RepoError::WrongPassword { .. }) => return ExitCode::from(12),
            _ => {}
        }
    }
    ExitCode::FAILURE
}

/// The error and its causes as one line; each layer's message describes only itself.
fn sentence(err: &anyhow::Error) -> String {
    lifeboat_repo::error_chain(err.as_ref())
}

fn init_logging(daemon: bool) {
    use tracing_subscriber::EnvFilter;
    // Client commands are quiet unless asked: warnings of the format engine about single files
    // are reported in the command's result instead. The server and agent log what they do.
    // The format engine's own log lines are reports for its developers (backtraces, its
    // error banners): what it finds reaches users through our results and errors.
    let default = if daemon {
        "info,rustic_core=off"
    } else {
        "error,rustic_core=off"
    };
    let filter =
        EnvFilter::try_from_env("LIFEBOAT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
