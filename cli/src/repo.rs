//! `lifeboat repo …`: the local repository commands, in the shape restic users know.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use lifeboat_repo::{
    BackupOptions, CheckOptions, Context, ForgetOptions, KeepPolicy, Location, LockOptions,
    MemoryBudget, ParentChoice, Repository, RepositoryOptions, RestoreOptions, Snapshot,
    SnapshotFilter,
};
use serde::Serialize;

use crate::cluster::ClusterArgs;
use crate::duration;
use crate::format::human_bytes;

/// `repo get` / `restic repo get`.
#[derive(Debug, Args)]
pub(crate) struct RepositoryGetArgs {
    /// Repositories to show (default: all).
    names: Vec<String>,
    /// Only repositories with these labels.
    #[arg(long, short = 'l')]
    selector: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Lists the ResticRepositories: Velero's columns, or the objects as JSON.
pub(crate) async fn repositories(args: &RepositoryGetArgs, json: bool) -> Result<()> {
    use kube::ResourceExt as _;
    use lifeboat_server::api::ResticRepository;
    let namespace = args.cluster.namespace()?;
    let client = args.cluster.client().await?;
    let api: kube::Api<ResticRepository> = kube::Api::namespaced(client, &namespace);
    let mut params = kube::api::ListParams::default();
    if let Some(selector) = &args.selector {
        params = params.labels(selector);
    }
    let mut items = api
        .list(&params)
        .await
        .with_context(|| format!("cannot list the repositories in namespace {namespace}"))?
        .items;
    if !args.names.is_empty() {
        for name in &args.names {
            if !items.iter().any(|r| &r.name_any() == name) {
                anyhow::bail!("repository {name:?} does not exist in namespace {namespace}");
            }
        }
        items.retain(|r| args.names.contains(&r.name_any()));
    }
    if json {
        return crate::format::print_objects(
            args.names.len() == 1,
            &items,
            crate::format::Format::Json,
        );
    }
    let rows = items
        .iter()
        .map(|r| {
            let status = r.status.clone().unwrap_or_default();
            vec![
                r.name_any(),
                status
                    .phase
                    .map(|p| format!("{p:?}"))
                    .unwrap_or_else(|| "New".into()),
                status
                    .last_maintenance_time
                    .as_ref()
                    .map(crate::format::local_time)
                    .unwrap_or_else(|| "<never>".into()),
            ]
        })
        .collect();
    crate::format::print_table(&["NAME", "STATUS", "LAST MAINTENANCE"], rows);
    Ok(())
}

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
    Backup {
        /// The directory (or file) to back up.
        path: PathBuf,
        /// Tag the snapshot (K=V by convention); repeatable.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Host name stored in the snapshot (default: this machine's).
        #[arg(long)]
        host: Option<String>,
        /// Path stored in the snapshot instead of PATH, e.g. a volume's logical path.
        #[arg(long)]
        as_path: Option<PathBuf>,
        /// Parent snapshot to compare with (default: the newest of the same host and path).
        #[arg(long, conflicts_with = "force")]
        parent: Option<String>,
        /// Read every file, without a parent.
        #[arg(long)]
        force: bool,
    },
    /// List snapshots.
    Snapshots {
        /// Only snapshots with this tag; repeatable (all must match).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Only snapshots of this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// Restore a snapshot, or a path inside it, into a directory.
    Restore {
        /// `latest`, a snapshot id or prefix, optionally followed by `:SUBPATH`.
        snapshot: String,
        /// The directory to restore into (created if missing).
        #[arg(long, short = 't')]
        target: PathBuf,
        /// With `latest`: only snapshots with this tag.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// With `latest`: only snapshots of this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// Check the repository; with --read-data, decrypt and hash every blob.
    Check {
        #[arg(long)]
        read_data: bool,
    },
    /// Remove snapshots by id, or by a keep policy.
    Forget {
        /// Snapshot ids or prefixes.
        ids: Vec<String>,
        #[arg(long)]
        keep_last: Option<u32>,
        #[arg(long)]
        keep_hourly: Option<u32>,
        #[arg(long)]
        keep_daily: Option<u32>,
        #[arg(long)]
        keep_weekly: Option<u32>,
        #[arg(long)]
        keep_monthly: Option<u32>,
        #[arg(long)]
        keep_yearly: Option<u32>,
        /// With a policy: only snapshots with this tag; repeatable.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// With a policy: only snapshots of this host.
        #[arg(long)]
        host: Option<String>,
        /// Prune afterwards.
        #[arg(long)]
        prune: bool,
    },
    /// Remove unreferenced data and repack partly used packs.
    Prune,
    /// Remove stale locks (all locks with --remove-all).
    Unlock {
        #[arg(long)]
        remove_all: bool,
    },
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

pub(crate) async fn run(args: RepoArgs) -> Result<()> {
    let g = &args.global;
    let json = g.output == Output::Json;
    if let RepoCommand::Get(get) = &args.command {
        return repositories(get, json).await;
    }
    let loc = location(g)?;
    let pw = password(g)?;
    if let RepoCommand::Init = args.command {
        let repo = Repository::init(&loc, &pw, options(g)).await?;
        if json {
            print_json(
                &serde_json::json!({"location": repo.location().to_string(), "version": repo.version()}),
            )?;
        } else {
            println!(
                "created repository at {} (format version {})",
                repo.location(),
                repo.version()
            );
        }
        return Ok(());
    }
    let repo = Repository::open(&loc, &pw, options(g)).await?;
    let ctx = context(json);
    match args.command {
        RepoCommand::Init | RepoCommand::Get(_) => unreachable!("handled above"),
        RepoCommand::Backup {
            path,
            tags,
            host,
            as_path,
            parent,
            force,
        } => {
            let parent = match (parent, force) {
                (Some(p), _) => ParentChoice::Snapshot(p),
                (None, true) => ParentChoice::None,
                (None, false) => ParentChoice::Auto,
            };
            let opts = BackupOptions {
                tags,
                host,
                as_path,
                parent,
            };
            let stats = repo.backup(&path, &opts, &ctx).await?;
            if json {
                print_json(&stats)?;
            } else {
                for w in &stats.warnings {
                    eprintln!("warning: {}: {}", w.path, w.message);
                }
                println!(
                    "Files: {} new, {} changed, {} unchanged\nDirs:  {} new, {} changed, {} unchanged\nAdded: {} ({} stored)\nProcessed {} in {:.1}s\nsnapshot {} saved",
                    stats.files_new,
                    stats.files_changed,
                    stats.files_unchanged,
                    stats.dirs_new,
                    stats.dirs_changed,
                    stats.dirs_unchanged,
                    human_bytes(stats.bytes_added),
                    human_bytes(stats.bytes_stored),
                    human_bytes(stats.bytes_processed),
                    stats.duration_secs,
                    stats.snapshot.id.short(),
                );
                if stats.traffic.requests > 0 {
                    println!("{}", stats.traffic);
                }
            }
            if !stats.is_complete() {
                let left_out = stats.warnings.iter().filter(|w| w.left_out).count();
                return Err(crate::Exit {
                    code: 3,
                    message: format!(
                        "snapshot {} was saved without {left_out} path(s) that could not be read (named above)",
                        stats.snapshot.id.short()
                    ),
                }
                .into());
            }
        }
        RepoCommand::Snapshots { tags, host } => {
            let list = repo.snapshots(&SnapshotFilter { tags, host }).await?;
            if json {
                print_json(&list)?;
            } else {
                print_snapshots(&list);
            }
        }
        RepoCommand::Restore {
            snapshot,
            target,
            tags,
            host,
        } => {
            let (snap, sub) = match snapshot.split_once(':') {
                Some((s, p)) => (s.to_string(), Some(p.to_string())),
                None => (snapshot, None),
            };
            let opts = RestoreOptions {
                filter: SnapshotFilter { tags, host },
                ..RestoreOptions::default()
            };
            let stats = repo
                .restore(&snap, sub.as_deref(), &target, &opts, &ctx)
                .await?;
            if json {
                print_json(&stats)?;
            } else {
                for u in &stats.unrestored {
                    eprintln!("error: {}: {}", u.path, u.reason);
                }
                let unlisted = stats.unrestored_count - stats.unrestored.len() as u64;
                if unlisted > 0 {
                    eprintln!("error: and {unlisted} more left out");
                }
                println!(
                    "restored snapshot {} into {}: {} files, {} dirs, {} in {:.1}s",
                    stats.snapshot.short(),
                    target.display(),
                    stats.files,
                    stats.dirs,
                    human_bytes(stats.bytes),
                    stats.duration_secs
                );
                if stats.traffic.requests > 0 {
                    println!("{}", stats.traffic);
                }
            }
            if !stats.is_complete() {
                return Err(crate::Exit {
                    code: 1,
                    message: format!(
                        "snapshot {} was restored partially: {} entry(ies) left out (named above); everything else is restored",
                        stats.snapshot.short(),
                        stats.unrestored_count
                    ),
                }
                .into());
            }
        }
        RepoCommand::Check { read_data } => {
            let report = repo.check(&CheckOptions { read_data }, &ctx).await?;
            if json {
                print_json(&report)?;
            } else {
                for f in &report.warnings {
                    eprintln!("warning: {}", f.message);
                }
                for f in &report.errors {
                    eprintln!("error: {}", f.message);
                }
                if report.errors.is_empty() {
                    println!("no errors were found");
                }
            }
            report.ensure_ok()?;
        }
        RepoCommand::Forget {
            ids,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            tags,
            host,
            prune,
        } => {
            let opts = ForgetOptions {
                ids,
                keep: KeepPolicy {
                    last: keep_last,
                    hourly: keep_hourly,
                    daily: keep_daily,
                    weekly: keep_weekly,
                    monthly: keep_monthly,
                    yearly: keep_yearly,
                },
                filter: SnapshotFilter { tags, host },
            };
            let stats = repo.forget(&opts, &ctx).await?;
            let pruned = if prune {
                Some(repo.prune(&ctx).await?)
            } else {
                None
            };
            if json {
                print_json(&serde_json::json!({"forget": stats, "prune": pruned}))?;
            } else {
                println!(
                    "removed {} snapshot(s), kept {}",
                    stats.removed.len(),
                    stats.kept.len()
                );
                for id in &stats.removed {
                    println!("  removed {}", id.short());
                }
                if let Some(p) = pruned {
                    print_prune(&p);
                }
            }
        }
        RepoCommand::Prune => {
            let stats = repo.prune(&ctx).await?;
            if json {
                print_json(&stats)?;
            } else {
                print_prune(&stats);
            }
        }
        RepoCommand::Unlock { remove_all } => {
            let n = repo.unlock(remove_all).await?;
            if json {
                print_json(&serde_json::json!({"removed": n}))?;
            } else {
                println!("removed {n} lock(s)");
            }
        }
    }
    Ok(())
}

fn print_prune(p: &lifeboat_repo::PruneStats) {
    println!(
        "prune: removed {} pack(s) ({}), repacked {} pack(s) ({}), kept {}",
        p.packs_removed,
        human_bytes(p.bytes_removed),
        p.packs_repacked,
        human_bytes(p.bytes_repacked),
        p.packs_kept
    );
}

fn print_snapshots(list: &[Snapshot]) {
    println!(
        "{:<8}  {:<19}  {:<16}  {:<30}  tags",
        "ID", "Time", "Host", "Paths"
    );
    for s in list {
        let time = s.time.strftime("%Y-%m-%d %H:%M:%S").to_string();
        println!(
            "{:<8}  {:<19}  {:<16}  {:<30}  {}",
            s.id.short(),
            time,
            s.hostname,
            s.paths.join(","),
            s.tags.join(",")
        );
    }
    println!("{} snapshot(s)", list.len());
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
