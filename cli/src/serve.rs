//! `lifeboat server` and `lifeboat agent`: the two long-running processes of an install, with
//! flags and environment as the Deployment and DaemonSet set them. Both stop cleanly on SIGTERM
//! (what Kubernetes sends) or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use lifeboat_agent::{AgentOptions, DEFAULT_TLS_DIR, TlsMaterial};
use lifeboat_server::{ServerOptions, Settings};
use tokio_util::sync::CancellationToken;

use crate::cluster::ClusterArgs;
use crate::config::split_features;
use lifeboat_server::duration;

#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// Address of /healthz, /readyz, /metrics and /agents.
    #[arg(long, default_value = "0.0.0.0:8085")]
    metrics_address: SocketAddr,
    /// Address of the agents' gRPC service.
    #[arg(long, default_value = "0.0.0.0:8443")]
    grpc_address: SocketAddr,
    /// Directory with tls.crt, tls.key and ca.crt (the Secret lifeboat-server-tls).
    #[arg(long, default_value = DEFAULT_TLS_DIR)]
    tls_dir: PathBuf,
    /// How often agents send heartbeats; one silent for three of these counts as gone.
    #[arg(long, default_value = "2s", value_parser = duration::parse)]
    agent_heartbeat: Duration,
    /// Backup storage locations validated at once.
    #[arg(long, default_value_t = 4)]
    location_concurrency: u16,
    /// How long one location's validation may take.
    #[arg(long, default_value = "30s", value_parser = duration::parse)]
    location_validation_timeout: Duration,
    /// Server-side feature flags, comma-separated.
    #[arg(long, default_value = "")]
    features: String,
    /// Back up every pod volume unless excluded (Velero's opt-out mode); backups may override.
    #[arg(long, alias = "default-volumes-to-fs-backup")]
    default_volumes_to_restic: bool,
    /// TTL of backups that do not set one.
    #[arg(long, default_value = "720h", value_parser = duration::parse)]
    default_backup_ttl: Duration,
    /// How long a backup's pod volumes may take in all.
    #[arg(long, alias = "fs-backup-timeout", default_value = "4h", value_parser = duration::parse)]
    restic_timeout: Duration,
    /// The storage location of backups that name none, when no location is marked default.
    #[arg(long, default_value = "default")]
    default_backup_storage_location: String,
    /// Volume snapshot location per provider for backups that name none: provider:name,…
    #[arg(long, default_value = "")]
    default_volume_snapshot_locations: String,
    /// How often each location's backups are synced into the cluster (0 turns sync off);
    /// a location's backupSyncPeriod overrides it.
    #[arg(long, default_value = "1m", value_parser = duration::parse)]
    backup_sync_period: Duration,
    /// How often expired backups are looked for and deleted.
    #[arg(long, default_value = "1h", value_parser = duration::parse)]
    garbage_collection_frequency: Duration,
    /// Backups run at once.
    #[arg(long, default_value_t = 2)]
    backup_concurrency: u16,
    /// How often repositories are pruned unless their ResticRepository says otherwise.
    #[arg(long, alias = "default-repo-maintain-frequency", default_value = "168h", value_parser = duration::parse)]
    default_restic_prune_frequency: Duration,
    /// Run restores only: backups, schedules and garbage collection are off.
    #[arg(long)]
    restore_only: bool,
    /// The image of restored pods' restic-wait init container (default: this version's
    /// image; `lifeboat install --image` sets it to the install's).
    #[arg(long)]
    restore_helper_image: Option<String>,
    /// Where restores unpack backup tarballs (the Deployment's scratch volume).
    #[arg(long, env = "VELERO_SCRATCH_DIR")]
    scratch_dir: Option<std::path::PathBuf>,
    /// The most a restore may unpack from a backup's tarball (uncompressed, e.g. 4Gi): the
    /// scratch space one restore can take. A restore of a larger backup fails, naming this
    /// flag.
    #[arg(long, default_value = "4Gi", value_parser = parse_size)]
    restore_max_unpacked_size: u64,
    /// The largest object a restore reads from a backup's tarball (e.g. 8Mi; the API server
    /// takes no larger). A restore of a backup holding a larger entry fails, naming this flag.
    #[arg(long, default_value = "8Mi", value_parser = parse_size)]
    restore_max_object_size: u64,
    /// The most entries a backup's tarball may have for a restore (about two per object).
    #[arg(long, default_value_t = lifeboat_server::restore::archive::DEFAULT_MAX_ENTRIES)]
    restore_max_entries: u64,
}

#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// This node's name (NODE_NAME from the downward API).
    #[arg(long, env = "NODE_NAME")]
    node: Option<String>,
    /// The server's gRPC address (default: https://lifeboat.<namespace>.svc:8443).
    #[arg(long, env = "LIFEBOAT_SERVER")]
    server: Option<String>,
    /// The name the server's certificate must carry (default: lifeboat.<namespace>.svc).
    #[arg(long)]
    server_name: Option<String>,
    /// Where the host's /var/lib/kubelet/pods is mounted.
    #[arg(long, default_value = "/host_pods")]
    host_pods: PathBuf,
    /// This agent's own pod UID (POD_UID from the downward API): the host-pods root must
    /// hold its directory, or it is not the node's kubelet pods directory.
    #[arg(long, env = "POD_UID")]
    pod_uid: Option<String>,
    /// Address of the agent's /healthz and /readyz (the DaemonSet's probes).
    #[arg(long, default_value = "0.0.0.0:8085")]
    health_address: SocketAddr,
    /// Volumes backed up or restored at once (default: the CPUs this process may use).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Directory with tls.crt, tls.key and ca.crt (the Secret lifeboat-agent-tls).
    #[arg(long, default_value = DEFAULT_TLS_DIR)]
    tls_dir: PathBuf,
    /// The pod's projected ServiceAccount token (audience `lifeboat`), which proves to the
    /// server which node this agent runs on; read afresh for every session.
    #[arg(long, env = "LIFEBOAT_TOKEN_FILE", default_value = lifeboat_agent::token::DEFAULT_TOKEN_FILE)]
    token_file: PathBuf,
    /// Server-side feature flags, comma-separated (as given to install).
    #[arg(long, default_value = "")]
    features: String,
    /// Memory for the volume jobs, all at once, e.g. 256Mi or 1Gi: each sizes its buffers
    /// to what is free (fewer workers, smaller packs, fewer reads) and waits while others
    /// hold the rest. Keep it below the container's memory limit.
    #[arg(long, env = "LIFEBOAT_MEMORY_BUDGET", default_value = "256Mi", value_parser = lifeboat_repo::parse_budget)]
    memory_budget: lifeboat_repo::MemoryBudget,
}

/// A size flag's text that is not a size above zero.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a size such as 8Mi, 4Gi or 500M")]
struct SizeError(String);

fn parse_size(text: &str) -> Result<u64, SizeError> {
    lifeboat_repo::parse_size(text)
        .filter(|&n| n > 0)
        .ok_or_else(|| SizeError(text.to_string()))
}

/// A token cancelled on SIGTERM or Ctrl-C.
fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot watch SIGTERM: {e}");
                    let _ = tokio::signal::ctrl_c().await;
                    t.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
        }
        t.cancel();
    });
    token
}

pub(crate) async fn server(args: ServerArgs, cluster: &ClusterArgs) -> Result<()> {
    // The pods set VELERO_NAMESPACE to their own namespace; resolved as every command does.
    let namespace = cluster.namespace()?;
    let tls = TlsMaterial::load(&args.tls_dir)?;
    let mut snapshot_locations = std::collections::BTreeMap::new();
    for pair in args
        .default_volume_snapshot_locations
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match pair.split_once(':') {
            Some((provider, name)) if !provider.is_empty() && !name.is_empty() => {
                snapshot_locations.insert(provider.to_owned(), name.to_owned());
            }
            _ => {
                bail!("--default-volume-snapshot-locations: `{pair}` is not provider:location-name")
            }
        }
    }
    // In a pod: the in-cluster config; elsewhere --kubeconfig, KUBECONFIG, ~/.kube/config.
    let client = cluster.client().await?;
    let opts = ServerOptions {
        namespace: namespace.clone(),
        metrics_address: args.metrics_address,
        grpc_address: args.grpc_address,
        tls,
        heartbeat: args.agent_heartbeat,
        features: split_features(&args.features),
        settings: Settings {
            location_concurrency: args.location_concurrency.max(1),
            validation_timeout: args.location_validation_timeout,
            backup_concurrency: args.backup_concurrency.max(1),
            default_backup_ttl: args.default_backup_ttl,
            default_backup_location: args.default_backup_storage_location,
            default_volumes_to_restic: args.default_volumes_to_restic,
            default_snapshot_locations: snapshot_locations,
            backup_sync_period: args.backup_sync_period,
            gc_frequency: args.garbage_collection_frequency,
            restic_timeout: args.restic_timeout,
            default_prune_frequency: args.default_restic_prune_frequency,
            restore_only: args.restore_only,
            scratch_dir: args.scratch_dir,
            restore_limits: lifeboat_server::restore::archive::ArchiveLimits {
                max_unpacked: args.restore_max_unpacked_size,
                max_object: args.restore_max_object_size,
                max_entries: args.restore_max_entries.max(1),
            },
            restore_helper_image: args
                .restore_helper_image
                .unwrap_or_else(lifeboat_server::install::default_image),
            ..Settings::default()
        },
        clock: lifeboat_server::clock::Clock::system(),
    };
    lifeboat_server::run(client, opts, shutdown_token()).await?;
    Ok(())
}

pub(crate) async fn agent(args: AgentArgs, cluster: &ClusterArgs) -> Result<()> {
    // The pods set VELERO_NAMESPACE to their own namespace; resolved as every command does.
    let namespace = cluster.namespace()?;
    let Some(node) = args.node.filter(|n| !n.trim().is_empty()) else {
        bail!(
            "the agent needs its node's name: set NODE_NAME (the DaemonSet sets it from spec.nodeName) or pass --node"
        );
    };
    let tls = TlsMaterial::load(&args.tls_dir)?;
    if !args.host_pods.is_dir() {
        bail!(
            "the host-pods root {} is not a directory; mount the host's /var/lib/kubelet/pods there or pass --host-pods",
            args.host_pods.display()
        );
    }
    let server = args
        .server
        .unwrap_or_else(|| format!("https://lifeboat.{namespace}.svc:8443"));
    let server_name = args
        .server_name
        .unwrap_or_else(|| format!("lifeboat.{namespace}.svc"));
    // One volume per CPU keeps every core busy with chunking and compression; more would
    // only add memory.
    let concurrency = args.concurrency.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let memory_budget_mib = args.memory_budget.mib();
    tracing::info!(%node, %server, concurrency, memory_budget_mib, features = ?split_features(&args.features), "lifeboat agent starting");
    let readiness = lifeboat_agent::health::Readiness::default();
    let listener = tokio::net::TcpListener::bind(args.health_address)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (--health-address)",
                args.health_address
            )
        })?;
    let shutdown = shutdown_token();
    let health = tokio::spawn(lifeboat_agent::health::serve(
        listener,
        readiness.clone(),
        shutdown.clone(),
    ));
    lifeboat_agent::run(
        AgentOptions {
            readiness,
            server,
            server_name,
            node,
            host_pods: args.host_pods,
            pod_uid: args.pod_uid.filter(|u| !u.is_empty()),
            concurrency: concurrency.max(1),
            memory: Some(args.memory_budget),
            tls,
            token_file: args.token_file,
        },
        shutdown.clone(),
    )
    .await?;
    shutdown.cancel();
    if let Ok(Err(e)) = health.await {
        tracing::warn!("the health endpoint failed: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    #[test]
    fn restore_limit_flags_default_to_the_documented_limits_and_take_sizes() {
        let defaults = Cli::parse_from(["lifeboat"]).server;
        let documented = lifeboat_server::restore::archive::ArchiveLimits::default();
        assert_eq!(defaults.restore_max_unpacked_size, documented.max_unpacked);
        assert_eq!(defaults.restore_max_object_size, documented.max_object);
        assert_eq!(defaults.restore_max_entries, documented.max_entries);
        let set = Cli::parse_from([
            "lifeboat",
            "--restore-max-object-size",
            "1Mi",
            "--restore-max-unpacked-size",
            "2G",
        ])
        .server;
        assert_eq!(set.restore_max_object_size, 1 << 20);
        assert_eq!(set.restore_max_unpacked_size, 2_000_000_000);
        let err = Cli::try_parse_from(["lifeboat", "--restore-max-object-size", "lots"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a size such as"), "{err}");
    }
}
