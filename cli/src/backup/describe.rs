//! `lifeboat backup describe`: Velero's description of backups, with their deletion attempts
//! and volume backups, and with `--details` the backed-up resources (read from the bucket) and
//! each volume backup. The spec's part is shared with `schedule describe` ([`describe_spec`]).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use lifeboat_server::api::{
    Backup, BackupPhase, BackupSpec, DeleteBackupRequest, DeleteBackupRequestPhase,
    PodVolumeBackup, PodVolumePhase,
};
use lifeboat_server::backup::BackupResults;
use lifeboat_server::backup::layout::BackupKeys;

use super::{BACKUP_NAME_LABEL, BACKUP_UID_LABEL, label_value, open_location, sort_backups};
use crate::args::ShowArgs;
use crate::bucket::{StoreAccessArgs, gunzip};
use crate::cluster::{ClusterArgs, none_missing};
use crate::describe::{Describer, Outcome};
use crate::format::{go_duration, human_bytes, local_time, write_stdout};
use crate::selector;

// No `///` here: clap applies a struct's doc comment to its command too, and the command's
// help is its enum variant's doc comment.
#[derive(Debug, Args)]
pub(super) struct DescribeArgs {
    #[command(flatten)]
    show: ShowArgs,
    /// Also list the backed-up resources (read from the bucket) and each volume backup.
    #[arg(long)]
    details: bool,
    #[command(flatten)]
    access: StoreAccessArgs,
}

pub(super) async fn run(cluster: &ClusterArgs, namespace: &str, args: DescribeArgs) -> Result<()> {
    let objects = args.show.objects()?;
    let client = cluster.client().await?;
    let api: Api<Backup> = Api::namespaced(client.clone(), namespace);
    let (mut backups, missing) = objects.fetch(&api).await?;
    sort_backups(&mut backups);
    for (i, backup) in backups.iter().enumerate() {
        let related = Related::fetch(&client, namespace, backup).await;
        let (resources, results) = if args.details {
            (
                Some(resource_list(&client, namespace, backup, &args.access).await),
                results(&client, namespace, backup, &args.access).await,
            )
        } else {
            (None, None)
        };
        let text = describe_backup(
            backup,
            &related,
            resources.as_ref(),
            results.as_ref(),
            args.details,
        );
        write_stdout(format!("{}{text}", if i > 0 { "\n\n" } else { "" }).as_bytes())?;
    }
    none_missing("Backup", &missing)
}

/// What else the cluster holds about a backup.
struct Related {
    delete_requests: Vec<DeleteBackupRequest>,
    pod_volume_backups: Vec<PodVolumeBackup>,
}

impl Related {
    /// The backup's DeleteBackupRequests and PodVolumeBackups; a failure to list is reported
    /// on stderr and the description goes on without them, as Velero's does.
    async fn fetch(client: &kube::Client, namespace: &str, backup: &Backup) -> Related {
        let name = label_value(&backup.name_any());
        let requests: Api<DeleteBackupRequest> = Api::namespaced(client.clone(), namespace);
        let params = ListParams::default().labels(&format!(
            "{BACKUP_NAME_LABEL}={name},{BACKUP_UID_LABEL}={}",
            backup.uid().unwrap_or_default()
        ));
        let delete_requests = match requests.list(&params).await {
            Ok(list) => list.items,
            Err(e) => {
                eprintln!(
                    "lifeboat: cannot list the DeleteBackupRequests of backup {name:?}: {}",
                    lifeboat_repo::error_chain(&e)
                );
                Vec::new()
            }
        };
        let volumes: Api<PodVolumeBackup> = Api::namespaced(client.clone(), namespace);
        let params = ListParams::default().labels(&format!("{BACKUP_NAME_LABEL}={name}"));
        let pod_volume_backups = match volumes.list(&params).await {
            Ok(list) => list.items,
            Err(e) => {
                eprintln!(
                    "lifeboat: cannot list the PodVolumeBackups of backup {name:?}: {}",
                    lifeboat_repo::error_chain(&e)
                );
                Vec::new()
            }
        };
        Related {
            delete_requests,
            pod_volume_backups,
        }
    }
}

/// The resource list of a backup (`{"v1/ConfigMap": ["ns/name", …]}`), or why there is none.
type ResourceList = Result<BTreeMap<String, Vec<String>>, ResourceListError>;

/// Why a backup's resource list cannot be shown, written in Velero's words where the list would
/// be. The cause is part of the text (not a `source`): this is printed in place of the list,
/// never wrapped into a chain.
#[derive(Debug, thiserror::Error)]
enum ResourceListError {
    /// Missing for backups before Velero 1.1, unfinished or failed ones, or removed files.
    #[error("<backup resource list not found>")]
    NotFound,
    #[error("<error getting backup resource list: {}>", crate::sentence(.0))]
    Get(anyhow::Error),
    #[error("<error reading backup resource list: {}>", crate::sentence(.0))]
    Read(anyhow::Error),
}

async fn resource_list(
    client: &kube::Client,
    namespace: &str,
    backup: &Backup,
    access: &StoreAccessArgs,
) -> ResourceList {
    let files = open_location(client, namespace, backup, access)
        .await
        .map_err(ResourceListError::Get)?;
    let key = BackupKeys::new(&backup.name_any()).resource_list();
    let gz = match files.read(&key).await {
        Ok(Some(gz)) => gz,
        Ok(None) => return Err(ResourceListError::NotFound),
        Err(e) => return Err(ResourceListError::Get(e)),
    };
    gunzip(&gz, &key)
        .and_then(|json| serde_json::from_slice(&json).context("it is not a JSON map of lists"))
        .map_err(ResourceListError::Read)
}

/// The errors and warnings of a backup from its results file, None when it has neither (the
/// bucket is not read then), or why they cannot be read.
async fn results(
    client: &kube::Client,
    namespace: &str,
    backup: &Backup,
    access: &StoreAccessArgs,
) -> Option<Result<BackupResults>> {
    let status = backup.status.clone().unwrap_or_default();
    if status.warnings.unwrap_or(0) == 0 && status.errors.unwrap_or(0) == 0 {
        return None;
    }
    let read = async {
        let files = open_location(client, namespace, backup, access).await?;
        files
            .read_results(&BackupKeys::new(&backup.name_any()).results())
            .await
    };
    Some(read.await)
}

/// Velero's `backup describe` layout.
fn describe_backup(
    backup: &Backup,
    related: &Related,
    resources: Option<&ResourceList>,
    results: Option<&Result<BackupResults>>,
    details: bool,
) -> String {
    let name = backup.name_any();
    let status = backup.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let mut d = Describer::new();
    d.metadata(&backup.metadata);
    d.blank();
    let logs_note = if matches!(phase, BackupPhase::Failed | BackupPhase::PartiallyFailed) {
        format!(" (run `lifeboat backup logs {name}` for more information)")
    } else {
        String::new()
    };
    d.line(format!("Phase:\t{phase:?}{logs_note}"));
    if let Some((first, rest)) = status.validation_errors.split_first() {
        d.blank();
        d.line(format!("Validation errors:\t{first}"));
        for e in rest {
            d.line(format!("\t{e}"));
        }
    }
    d.blank();
    d.line(format!("Errors:\t{}", status.errors.unwrap_or(0)));
    d.line(format!("Warnings:\t{}", status.warnings.unwrap_or(0)));
    // With --details, what they are, from the bucket's results file.
    d.results(
        results,
        [
            (Outcome::Errors, status.errors.unwrap_or(0)),
            (Outcome::Warnings, status.warnings.unwrap_or(0)),
        ],
    );
    d.blank();
    describe_spec(&mut d, &backup.spec);
    d.blank();

    d.line(format!(
        "Backup Format Version:\t{}",
        status.format_version.as_deref().unwrap_or_default()
    ));
    d.blank();
    // `<n/a>` only for backups that failed validation, or are not processed yet.
    let time = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().map_or("<n/a>".into(), local_time)
    };
    d.line(format!("Started:\t{}", time(&status.start_timestamp)));
    d.line(format!(
        "Completed:\t{}",
        time(&status.completion_timestamp)
    ));
    d.blank();
    d.line(format!("Expiration:\t{}", time(&status.expiration)));
    d.blank();
    if let Some(progress) = &status.progress {
        let (total, done) = (
            progress.total_items.unwrap_or(0),
            progress.items_backed_up.unwrap_or(0),
        );
        if phase == BackupPhase::InProgress {
            d.line(format!("Estimated total items to be backed up:\t{total}"));
            d.line(format!("Items backed up so far:\t{done}"));
        } else {
            d.line(format!("Total items to be backed up:\t{total}"));
            d.line(format!("Items backed up:\t{done}"));
        }
        d.blank();
    }
    if let Some(resources) = resources {
        match resources {
            Err(why) => d.line(format!("Resource List:\t{why}")),
            Ok(list) => {
                d.line("Resource List:");
                for (kind, items) in list {
                    d.line(format!("\t{kind}:"));
                    for item in items {
                        d.line(format!("\t\t- {item}"));
                    }
                }
            }
        }
        d.blank();
    }
    match status.volume_snapshots_attempted.unwrap_or(0) {
        0 => d.line("Velero-Native Snapshots: <none included>"),
        attempted => d.line(format!(
            "Velero-Native Snapshots:\t{} of {attempted} snapshots completed successfully",
            status.volume_snapshots_completed.unwrap_or(0)
        )),
    }
    if !related.delete_requests.is_empty() {
        d.blank();
        describe_delete_requests(&mut d, &related.delete_requests);
    }
    if !related.pod_volume_backups.is_empty() {
        d.blank();
        describe_pod_volume_backups(&mut d, &related.pod_volume_backups, details);
    }
    d.finish()
}

/// A backup spec (also a schedule's template), in Velero's layout.
pub(crate) fn describe_spec(d: &mut Describer, spec: &BackupSpec) {
    let joined = |items: &[String], empty: &str| {
        if items.is_empty() {
            empty.to_string()
        } else {
            items.join(", ")
        }
    };
    let tri = |b: Option<bool>, f: &str, t: &str, none: &str| match b {
        None => none.to_string(),
        Some(true) => t.to_string(),
        Some(false) => f.to_string(),
    };
    d.line("Namespaces:");
    d.line(format!(
        "\tIncluded:\t{}",
        joined(&spec.included_namespaces, "*")
    ));
    d.line(format!(
        "\tExcluded:\t{}",
        joined(&spec.excluded_namespaces, "<none>")
    ));
    d.blank();
    d.line("Resources:");
    d.line(format!(
        "\tIncluded:\t{}",
        joined(&spec.included_resources, "*")
    ));
    d.line(format!(
        "\tExcluded:\t{}",
        joined(&spec.excluded_resources, "<none>")
    ));
    d.line(format!(
        "\tCluster-scoped:\t{}",
        tri(
            spec.include_cluster_resources,
            "excluded",
            "included",
            "auto"
        )
    ));
    d.blank();
    d.line(format!(
        "Label selector:\t{}",
        selector::format(spec.label_selector.as_ref())
    ));
    if !spec.or_label_selectors.is_empty() {
        d.blank();
        let any: Vec<String> = spec
            .or_label_selectors
            .iter()
            .map(|s| selector::format(Some(s)))
            .collect();
        d.line(format!("Or label selector:\t{}", any.join(" or ")));
    }
    d.blank();
    d.line(format!(
        "Storage Location:\t{}",
        spec.storage_location.as_deref().unwrap_or_default()
    ));
    d.blank();
    d.line(format!(
        "Velero-Native Snapshot PVs:\t{}",
        tri(spec.snapshot_volumes, "false", "true", "auto")
    ));
    let fs_backup = spec
        .default_volumes_to_restic
        .or(spec.default_volumes_to_fs_backup);
    d.line(format!(
        "Default Volumes to Restic:\t{}",
        tri(fs_backup, "false", "true", "auto")
    ));
    d.blank();
    d.line(format!(
        "TTL:\t{}",
        spec.ttl
            .as_deref()
            .unwrap_or("0s (the server's default applies)")
    ));
    d.blank();
    let hooks = spec
        .hooks
        .as_ref()
        .map(|h| h.resources.as_slice())
        .unwrap_or_default();
    if hooks.is_empty() {
        d.line("Hooks:\t<none>");
    } else {
        d.line("Hooks:");
        d.line("\tResources:");
        for hook in hooks {
            d.line(format!("\t\t{}:", hook.name));
            d.line("\t\t\tNamespaces:");
            d.line(format!(
                "\t\t\t\tIncluded:\t{}",
                joined(&hook.included_namespaces, "*")
            ));
            d.line(format!(
                "\t\t\t\tExcluded:\t{}",
                joined(&hook.excluded_namespaces, "<none>")
            ));
            d.blank();
            d.line("\t\t\tResources:");
            d.line(format!(
                "\t\t\t\tIncluded:\t{}",
                joined(&hook.included_resources, "*")
            ));
            d.line(format!(
                "\t\t\t\tExcluded:\t{}",
                joined(&hook.excluded_resources, "<none>")
            ));
            d.blank();
            d.line(format!(
                "\t\t\tLabel selector:\t{}",
                selector::format(hook.label_selector.as_ref())
            ));
            for (when, list) in [("Pre", &hook.pre), ("Post", &hook.post)] {
                for exec in list.iter().filter_map(|h| h.exec.as_ref()) {
                    d.blank();
                    d.line(format!("\t\t\t{when} Exec Hook:"));
                    d.line(format!("\t\t\t\tContainer:\t{}", exec.container));
                    d.line(format!("\t\t\t\tCommand:\t{}", exec.command.join(" ")));
                    d.line(format!(
                        "\t\t\t\tOn Error:\t{}",
                        exec.on_error.as_deref().unwrap_or_default()
                    ));
                    d.line(format!(
                        "\t\t\t\tTimeout:\t{}",
                        exec.timeout.as_deref().unwrap_or("0s")
                    ));
                }
            }
        }
    }
    if !spec.ordered_resources.is_empty() {
        d.blank();
        d.line("OrderedResources:");
        for (kind, names) in &spec.ordered_resources {
            d.line(format!("\t{kind}: {names}"));
        }
    }
}

fn describe_delete_requests(d: &mut Describer, requests: &[DeleteBackupRequest]) {
    let failed = requests
        .iter()
        .filter(|r| {
            r.status.as_ref().is_some_and(|s| {
                s.phase == Some(DeleteBackupRequestPhase::Processed) && !s.errors.is_empty()
            })
        })
        .count();
    if failed > 0 {
        d.line(format!("Deletion Attempts ({failed} failed):"));
    } else {
        d.line("Deletion Attempts:");
    }
    for (i, request) in requests.iter().enumerate() {
        if i > 0 {
            d.blank();
        }
        let status = request.status.clone().unwrap_or_default();
        d.line(format!(
            "\t{}: {:?}",
            request
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or("<n/a>".into(), local_time),
            status.phase.unwrap_or_default()
        ));
        if !status.errors.is_empty() {
            d.line("\tErrors:");
            for e in &status.errors {
                d.line(format!("\t\t{e}"));
            }
        }
    }
}

/// The volume backups, by phase (Velero's order, New and unset together): counts only, or
/// with `--details` each volume with its snapshot, bytes and duration.
fn describe_pod_volume_backups(d: &mut Describer, backups: &[PodVolumeBackup], details: bool) {
    if details {
        d.line("Restic Backups:");
    } else {
        d.line("Restic Backups (specify --details for more information):");
    }
    let phase_of =
        |b: &PodVolumeBackup| match b.status.as_ref().and_then(|s| s.phase).unwrap_or_default() {
            PodVolumePhase::Completed => "Completed",
            PodVolumePhase::Failed => "Failed",
            PodVolumePhase::InProgress => "In Progress",
            PodVolumePhase::New => "New",
            PodVolumePhase::Unknown => "Unknown",
        };
    let now = jiff::Timestamp::now();
    for phase in ["Completed", "Failed", "In Progress", "New", "Unknown"] {
        let mut group: Vec<&PodVolumeBackup> =
            backups.iter().filter(|b| phase_of(b) == phase).collect();
        if group.is_empty() {
            continue;
        }
        if !details {
            d.line(format!("\t{phase}:\t{}", group.len()));
            continue;
        }
        d.line(format!("\t{phase}:"));
        let volume = |b: &PodVolumeBackup| {
            format!(
                "{}/{}/{}",
                b.spec.pod.namespace.as_deref().unwrap_or_default(),
                b.spec.pod.name.as_deref().unwrap_or_default(),
                b.spec.volume
            )
        };
        group.sort_by_key(|b| volume(b));
        for b in group {
            let status = b.status.clone().unwrap_or_default();
            let progress = status.progress.clone().unwrap_or_default();
            let (done, total) = (
                u64::try_from(progress.bytes_done.unwrap_or(0)).unwrap_or(0),
                u64::try_from(progress.total_bytes.unwrap_or(0)).unwrap_or(0),
            );
            let mut bytes = format!("{} of {}", human_bytes(done), human_bytes(total));
            if phase == "In Progress" && total > 0 {
                bytes.push_str(&format!(" ({:.2}%)", done as f64 / total as f64 * 100.0));
            }
            let took = match (&status.start_timestamp, &status.completion_timestamp) {
                (Some(start), Some(end)) => seconds(end.0.duration_since(start.0)),
                (Some(start), None) => {
                    format!("running for {}", seconds(now.duration_since(start.0)))
                }
                _ => "not started".into(),
            };
            let mut line = format!(
                "\t\t{}:\tsnapshot {}\t{bytes}\t{took}",
                volume(b),
                status.snapshot_id.as_deref().unwrap_or("<none>"),
            );
            if let Some(message) = status.message.as_deref().filter(|m| !m.is_empty()) {
                line.push_str(&format!("\t{message}"));
            }
            d.line(line);
        }
    }
}

/// A span in whole seconds, Go-style (`1m12s`).
fn seconds(span: jiff::SignedDuration) -> String {
    go_duration(Duration::from_secs(
        u64::try_from(span.as_secs()).unwrap_or(0),
    ))
}
