//! `lifeboat repo …`: the local repository commands, in the shape restic users know.
//!
//! One file per command, as restic's `cmd_*.go`: its arguments and its `run`. Here are the
//! global flags (`--repo`, `--password-file`, `--lock-wait`, `-o`, `--memory-budget`), the
//! command enum, and opening the repository that every command but `get` and `init` shares.

mod backup;
mod check;
mod forget;
mod get;
mod prune;
mod restore;
mod snapshots;
mod unlock;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use lifeboat_repo::{Context, Location, LockOptions, MemoryBudget, Repository, RepositoryOptions};
use serde::Serialize;

use lifeboat_server::duration;

pub(crate) use get::{RepositoryGetArgs, repositories};

#[derive(Debug, Args)]
pub(crate) struct RepoArgs {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: RepoCommand,
}

#[derive(Debug, Args)]
struct Global {
    /// Repository: a path, file:///path, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix,
    /// or restic's forms (s3:http://host:port/bucket/prefix, gs:bucket:/prefix, azure:container:/prefix).
    #[arg(long, short = 'r', global = true, env = "LIFEBOAT_REPOSITORY")]
    repo: Option<String>,
    /// File holding the repository password (else LIFEBOAT_PASSWORD or RESTIC_PASSWORD).
    #[arg(long, global = true, env = "LIFEBOAT_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// Wait up to this long for a conflicting lock, e.g. 30s or 5m (default: fail at once).
    // A bare number is seconds, as this flag took before it took Go durations.
    #[arg(long, global = true, value_parser = duration::parse_or_seconds)]
    lock_wait: Option<Duration>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Memory for backup and restore, e.g. 256Mi: fewer workers, smaller packs or fewer reads
    /// in flight to stay within it (default: none; every core, 16 MiB packs).
    #[arg(long, global = true, value_parser = lifeboat_repo::parse_budget)]
    memory_budget: Option<MemoryBudget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum RepoCommand {
    /// List the install's repositories (ResticRepository objects) with their phase and last
    /// maintenance; Velero's `velero restic repo get` (also `lifeboat restic repo get`).
    Get(RepositoryGetArgs),
    /// Create a repository (restic format version 2).
    Init,
    /// Back up a directory into a new snapshot.
    Backup(backup::BackupArgs),
    /// List snapshots.
    Snapshots(snapshots::SnapshotsArgs),
    /// Restore a snapshot, or a path inside it, into a directory.
    Restore(restore::RestoreArgs),
    /// Check the repository; with --read-data, decrypt and hash every blob.
    Check(check::CheckArgs),
    /// Remove snapshots by id, or by a keep policy.
    Forget(forget::ForgetArgs),
    /// Remove unreferenced data and repack partly used packs.
    Prune,
    /// Remove stale locks (all locks with --remove-all).
    Unlock(unlock::UnlockArgs),
}

fn password(global: &Global) -> Result<String> {
    if let Some(file) = &global.password_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the password file `{}`", file.display()))?;
        let pw = text.strip_suffix('\n').unwrap_or(&text);
        return Ok(pw.strip_suffix('\r').unwrap_or(pw).to_string());
    }
    for var in ["LIFEBOAT_PASSWORD", "RESTIC_PASSWORD"] {
        if let Ok(pw) = std::env::var(var) {
            return Ok(pw);
        }
    }
    Err(lifeboat_repo::Error::NoPassword.into())
}

fn location(global: &Global) -> Result<Location> {
    let repo = global
        .repo
        .clone()
        .or_else(|| std::env::var("RESTIC_REPOSITORY").ok())
        .context("no repository given: pass --repo or set LIFEBOAT_REPOSITORY")?;
    Ok(Location::parse(&repo)?)
}

fn options(global: &Global) -> RepositoryOptions {
    RepositoryOptions {
        lock: LockOptions {
            wait: global.lock_wait.unwrap_or_default(),
            ..LockOptions::default()
        },
        memory: global.memory_budget.clone(),
        ..RepositoryOptions::default()
    }
}

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Cancels the operation on Ctrl-C, so locks are released and nothing is left half-written.
fn context(json: bool) -> Context {
    let ctx = Context {
        progress: crate::progress::for_terminal(json),
        ..Context::default()
    };
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("lifeboat: interrupted, stopping…");
            cancel.cancel();
        }
    });
    ctx
}

pub(crate) async fn run(args: RepoArgs, cluster: &crate::cluster::ClusterArgs) -> Result<()> {
    let g = &args.global;
    let json = g.output == Output::Json;
    match args.command {
        RepoCommand::Get(get) => repositories(&get, cluster, json).await,
        RepoCommand::Init => init(g, json).await,
        RepoCommand::Backup(backup) => {
            let repo = open(g).await?;
            backup::run(&repo, &context(json), json, backup).await
        }
        RepoCommand::Snapshots(snapshots) => snapshots::run(&open(g).await?, json, snapshots).await,
        RepoCommand::Restore(restore) => {
            let repo = open(g).await?;
            restore::run(&repo, &context(json), json, restore).await
        }
        RepoCommand::Check(check) => {
            let repo = open(g).await?;
            check::run(&repo, &context(json), json, check).await
        }
        RepoCommand::Forget(forget) => {
            let repo = open(g).await?;
            forget::run(&repo, &context(json), json, forget).await
        }
        RepoCommand::Prune => {
            let repo = open(g).await?;
            prune::run(&repo, &context(json), json).await
        }
        RepoCommand::Unlock(unlock) => unlock::run(&open(g).await?, json, unlock).await,
    }
}

/// The repository the global flags name, opened with its password.
async fn open(g: &Global) -> Result<Repository> {
    Ok(Repository::open(&location(g)?, &password(g)?, options(g)).await?)
}

/// `lifeboat repo init`: a new repository (restic format version 2) at the location.
async fn init(g: &Global, json: bool) -> Result<()> {
    let repo = Repository::init(&location(g)?, &password(g)?, options(g)).await?;
    if json {
        print_json(
            &serde_json::json!({"location": repo.location().to_string(), "version": repo.version()}),
        )
    } else {
        println!(
            "created repository at {} (format version {})",
            repo.location(),
            repo.version()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(args: &[&str]) -> Result<Global, clap::Error> {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            global: Global,
        }
        let mut all = vec!["x"];
        all.extend(args);
        <Cli as clap::Parser>::try_parse_from(all).map(|c| c.global)
    }

    #[test]
    fn the_lock_wait_takes_go_durations_and_bare_seconds() {
        // `=` so that `-1s` is the flag's value, not a flag.
        let wait = |text: &str| global(&[&format!("--lock-wait={text}")]).map(|g| g.lock_wait);
        assert_eq!(wait("30").unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(wait("30s").unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(wait("5m").unwrap(), Some(Duration::from_secs(300)));
        assert_eq!(wait("2h").unwrap(), Some(Duration::from_secs(7200)));
        assert_eq!(wait("1h30m").unwrap(), Some(Duration::from_secs(5400)));
        assert_eq!(wait("1.5s").unwrap(), Some(Duration::from_millis(1500)));
        for bad in ["5x", "m", "-1s", "9999999999999999999h"] {
            let err = wait(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
        assert_eq!(global(&[]).unwrap().lock_wait, None);
    }
}
