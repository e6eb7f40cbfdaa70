//! `lifeboat restore describe`: Velero's description of restores, with their warnings and
//! errors (read from the bucket, through the restore's backup) and their volume restores.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use lifeboat_server::api::labels::{RESTORE_NAME, value as label_value};
use lifeboat_server::api::{PodVolumePhase, PodVolumeRestore, Restore, RestorePhase};
use lifeboat_server::backup::BackupResults;
use lifeboat_server::backup::layout::RestoreKeys;

use super::{open_location, phase};
use crate::args::ShowArgs;
use crate::bucket::StoreAccessArgs;
use crate::cluster::{ClusterArgs, none_missing};
use crate::describe::{Describer, Outcome};
use crate::format::{local_time, write_stdout};
use crate::selector;

// No `///` here: clap applies a struct's doc comment to its command too, and the command's
// help is its enum variant's doc comment.
#[derive(Debug, Args)]
pub(super) struct DescribeArgs {
    #[command(flatten)]
    show: ShowArgs,
    /// Also list each volume restore by phase.
    #[arg(long)]
    details: bool,
    #[command(flatten)]
    access: StoreAccessArgs,
}

pub(super) async fn run(cluster: &ClusterArgs, namespace: &str, args: DescribeArgs) -> Result<()> {
    let objects = args.show.objects()?;
    let client = cluster.client().await?;
    let api: Api<Restore> = Api::namespaced(client.clone(), namespace);
    let (restores, missing) = objects.fetch(&api).await?;
    for (i, restore) in restores.iter().enumerate() {
        let results = results(&client, namespace, restore, &args.access).await;
        let volumes = pod_volume_restores(&client, namespace, restore).await;
        let text = describe_restore(restore, results.as_ref(), &volumes, args.details);
        write_stdout(format!("{}{text}", if i > 0 { "\n\n" } else { "" }).as_bytes())?;
    }
    none_missing("Restore", &missing)
}

/// The warnings and errors of a restore from its results file, None when it has neither (the
/// bucket is not read then, as Velero does), or why they cannot be read.
async fn results(
    client: &kube::Client,
    namespace: &str,
    restore: &Restore,
    access: &StoreAccessArgs,
) -> Option<Result<BackupResults>> {
    let status = restore.status.clone().unwrap_or_default();
    if status.warnings.unwrap_or(0) == 0 && status.errors.unwrap_or(0) == 0 {
        return None;
    }
    let read = async {
        let files = open_location(client, namespace, restore, access, false).await?;
        files
            .read_results(&RestoreKeys::new(&restore.name_any()).results())
            .await
    };
    Some(read.await)
}

/// The restore's PodVolumeRestores; a failure to list is reported on stderr and the description
/// goes on without them, as Velero's does.
async fn pod_volume_restores(
    client: &kube::Client,
    namespace: &str,
    restore: &Restore,
) -> Vec<PodVolumeRestore> {
    let name = restore.name_any();
    let api: Api<PodVolumeRestore> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&format!("{RESTORE_NAME}={}", label_value(&name)));
    match api.list(&params).await {
        Ok(list) => list.items,
        Err(e) => {
            eprintln!(
                "lifeboat: cannot list the PodVolumeRestores of restore {name:?}: {}",
                lifeboat_repo::error_chain(&e)
            );
            Vec::new()
        }
    }
}

/// Velero's `restore describe` layout (v1.5), with the fields later versions added.
fn describe_restore(
    restore: &Restore,
    results: Option<&Result<BackupResults>>,
    volumes: &[PodVolumeRestore],
    details: bool,
) -> String {
    let name = restore.name_any();
    let status = restore.status.clone().unwrap_or_default();
    let spec = &restore.spec;
    let phase = phase(restore);
    let mut d = Describer::new();
    d.metadata(&restore.metadata);
    d.blank();
    let logs_note = if matches!(phase, RestorePhase::Failed | RestorePhase::PartiallyFailed) {
        format!(" (run `lifeboat restore logs {name}` for more information)")
    } else {
        String::new()
    };
    d.line(format!("Phase:\t{phase:?}{logs_note}"));
    if let Some(reason) = status.failure_reason.as_deref().filter(|r| !r.is_empty()) {
        d.line(format!("Failure reason:\t{reason}"));
    }
    d.blank();
    // `<n/a>` only for restores that failed validation, or are not processed yet.
    let time = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().map_or("<n/a>".into(), local_time)
    };
    d.line(format!("Started:\t{}", time(&status.start_timestamp)));
    d.line(format!(
        "Completed:\t{}",
        time(&status.completion_timestamp)
    ));
    if !status.validation_errors.is_empty() {
        d.blank();
        d.list("Validation errors", &status.validation_errors);
    }
    d.results(
        results,
        [
            (Outcome::Warnings, status.warnings.unwrap_or(0)),
            (Outcome::Errors, status.errors.unwrap_or(0)),
        ],
    );
    d.blank();
    d.line(format!("Backup:\t{}", spec.backup_name));
    if let Some(schedule) = &spec.schedule_name {
        d.line(format!("Schedule:\t{schedule}"));
    }
    d.blank();
    let joined = |items: &[String], empty: &str| {
        if items.is_empty() {
            empty.to_string()
        } else {
            items.join(", ")
        }
    };
    let tri = |b: Option<bool>, f: &str, t: &str| match b {
        None => "auto".to_string(),
        Some(true) => t.to_string(),
        Some(false) => f.to_string(),
    };
    d.line("Namespaces:");
    let included = match spec.included_namespaces.as_slice() {
        [] => "all namespaces found in the backup".to_string(),
        [all] if all == "*" => "all namespaces found in the backup".to_string(),
        some => some.join(", "),
    };
    d.line(format!("\tIncluded:\t{included}"));
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
        tri(spec.include_cluster_resources, "excluded", "included")
    ));
    d.blank();
    d.map("Namespace mappings", Some(&spec.namespace_mapping));
    d.blank();
    d.line(format!(
        "Label selector:\t{}",
        selector::format(spec.label_selector.as_ref())
    ));
    d.blank();
    d.line(format!(
        "Restore PVs:\t{}",
        tri(spec.restore_pvs, "false", "true")
    ));
    d.blank();
    d.line(format!(
        "Existing Resource Policy:\t{}",
        spec.existing_resource_policy.as_deref().unwrap_or("<none>")
    ));
    d.line(format!(
        "Preserve Service NodePorts:\t{}",
        tri(spec.preserve_node_ports, "false", "true")
    ));
    if !volumes.is_empty() {
        d.blank();
        describe_pod_volume_restores(&mut d, volumes, details);
    }
    d.finish()
}

/// The volume restores by phase (Velero's order, New and unset together): counts only, or with
/// `--details` each pod's volumes.
fn describe_pod_volume_restores(d: &mut Describer, restores: &[PodVolumeRestore], details: bool) {
    if details {
        d.line("Restic Restores:");
    } else {
        d.line("Restic Restores (specify --details for more information):");
    }
    let phase_of =
        |r: &PodVolumeRestore| match r.status.as_ref().and_then(|s| s.phase).unwrap_or_default() {
            PodVolumePhase::Completed => "Completed",
            PodVolumePhase::Failed => "Failed",
            PodVolumePhase::InProgress => "In Progress",
            PodVolumePhase::New => "New",
            PodVolumePhase::Unknown => "Unknown",
        };
    for phase in ["Completed", "Failed", "In Progress", "New", "Unknown"] {
        let group: Vec<&PodVolumeRestore> =
            restores.iter().filter(|r| phase_of(r) == phase).collect();
        if group.is_empty() {
            continue;
        }
        if !details {
            d.line(format!("\t{phase}:\t{}", group.len()));
            continue;
        }
        d.line(format!("\t{phase}:"));
        let mut by_pod: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for r in group {
            let pod = format!(
                "{}/{}",
                r.spec.pod.namespace.as_deref().unwrap_or_default(),
                r.spec.pod.name.as_deref().unwrap_or_default()
            );
            by_pod.entry(pod).or_default().push(&r.spec.volume);
        }
        for (pod, mut volumes) in by_pod {
            volumes.sort_unstable();
            d.line(format!("\t\t{pod}: {}", volumes.join(", ")));
        }
    }
}
