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

mod args;
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
mod restore_helper;
mod schedule;
mod selector;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// lifeboat: file-level backup of Kubernetes volumes into restic repositories.
#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, about, propagate_version = true)]
struct Cli {
    /// How to reach the cluster: accepted before the subcommand or anywhere after it.
    #[command(flatten)]
    cluster: cluster::ClusterArgs,
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
    RestoreHelper(restore_helper::RestoreHelperArgs),
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

/// Parses the arguments, runs the command, and turns errors into one line and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(
        cli.command,
        Command::Server(_) | Command::Agent(_) | Command::RestoreHelper(_)
    );
    if !daemon {
        quiet_on_closed_pipe();
    }
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
            Command::Install(args) => install::install(args, &cli.cluster).await,
            Command::Uninstall(args) => install::uninstall(args, &cli.cluster).await,
            Command::Backup(args) => backup::run(args, &cli.cluster).await,
            Command::Restore(args) => restore::run(args, &cli.cluster).await,
            // Its own exit codes and lines: an init container's, read in `kubectl logs`.
            Command::RestoreHelper(args) => return Ok(restore_helper::run(args).await),
            Command::Schedule(args) => schedule::run(args, &cli.cluster).await,
            Command::BackupLocation(args) => {
                location::run_backup_location(args, &cli.cluster).await
            }
            Command::SnapshotLocation(args) => {
                location::run_snapshot_location(args, &cli.cluster).await
            }
            Command::Client(args) => config::run(args),
            Command::Completion(args) => completion::run::<Cli>(args),
            Command::Server(args) => serve::server(args, &cli.cluster).await,
            Command::Agent(args) => serve::agent(args, &cli.cluster).await,
            Command::Repo(args) => repo::run(args, &cli.cluster).await,
            Command::Restic(args) => match args.command {
                ResticCommand::Repo(repo) => match repo.command {
                    ResticRepoCommand::Get(get) => {
                        repo::repositories(
                            &get.args,
                            &cli.cluster,
                            get.output == ResticOutput::Json,
                        )
                        .await
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

/// A client command whose reader goes away (`lifeboat completion bash | head -1`) ends there,
/// silently, as any Unix tool does. Rust ignores SIGPIPE, so a write to the closed pipe would
/// fail instead and `println!` panic. The long-running processes (server, agent, the init
/// container) keep ignoring it: their output never decides when they stop. Sockets are not
/// concerned either way (they are written with MSG_NOSIGNAL).
#[allow(unsafe_code)]
fn quiet_on_closed_pipe() {
    // SAFETY: restores the default disposition of one signal before any other thread exists;
    // no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
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

/// The error and its causes as one line; each layer's message describes only itself. Where
/// the engine's error has a remedy on this command line, the remedy follows (the engine's
/// messages describe the repository, and are also shown to cluster users, who type no flags).
fn sentence(err: &anyhow::Error) -> String {
    if let Some(line) = cluster::unreachable(err) {
        return line;
    }
    let mut line = lifeboat_repo::error_chain(err.as_ref());
    if let Some(hint) = err.chain().find_map(|cause| hint(cause.downcast_ref()?)) {
        line.push_str("; ");
        line.push_str(&hint);
    }
    line
}

/// What to type about an engine error, if there is something.
fn hint(err: &lifeboat_repo::Error) -> Option<String> {
    use lifeboat_repo::Error as RepoError;
    Some(match err {
        RepoError::NoPassword => {
            "pass --password-file or set LIFEBOAT_PASSWORD or RESTIC_PASSWORD".into()
        }
        RepoError::NoRepository { .. } => "create one with `lifeboat repo init`".into(),
        RepoError::Locked { .. } => {
            "if that process is gone, remove its lock with `lifeboat repo unlock`".into()
        }
        RepoError::TreeUnreadable { .. } => {
            "`lifeboat repo check --read-data` lists all the damage".into()
        }
        RepoError::MemoryBudget { .. } => "raise --memory-budget".into(),
        _ => return None,
    })
}

fn init_logging(daemon: bool) {
    use tracing_subscriber::EnvFilter;
    // Client commands are quiet unless asked: warnings of the format engine about single files
    // are reported in the command's result instead. The server and agent log what they do.
    // The format engine's own log lines are reports for its developers (backtraces, its
    // error banners): what it finds reaches users through our results and errors.
    // kube's client logs a failed request itself before returning it: the command says it once,
    // in its own words.
    let default = if daemon {
        "info,rustic_core=off"
    } else {
        "error,rustic_core=off,kube_client=off"
    };
    let filter =
        EnvFilter::try_from_env("LIFEBOAT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

#[cfg(test)]
mod tests {
    /// clap checks a command line only when it is parsed: this checks every subcommand
    /// (unique argument groups and flags, valid defaults, …) without running one.
    #[test]
    fn every_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn an_engine_error_gets_the_command_line_remedy_after_its_own_words() {
        let err = anyhow::Error::new(lifeboat_repo::Error::NoRepository {
            location: "/srv/repo".into(),
        })
        .context("cannot back up /data");
        assert_eq!(
            super::sentence(&err),
            "cannot back up /data: there is no repository at /srv/repo (no config file); \
             create one with `lifeboat repo init`"
        );
        let plain = anyhow::anyhow!("nothing to add");
        assert_eq!(super::sentence(&plain), "nothing to add");
    }
}
