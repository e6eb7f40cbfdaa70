//! Pod volume backups within a backup: for each backed-up pod, the volumes Velero's rules
//! choose ([`select`](super::select)) become PodVolumeBackups handed to the agent on
//! the pod's node, all at once (each agent runs as many as its concurrency allows); their
//! progress and outcome are mirrored into the PodVolumeBackups' status.
//!
//! Velero 1.5 backs up one pod's volumes at a time, in the middle of the resource walk; here
//! the walk finishes first and every volume of every node runs in parallel. A volume that
//! cannot be backed up for a reason of its own (its pod is not running or is gone, its kind is
//! not supported) is a warning naming why; one that fails (its agent died, its data could not
//! be read, or its agent cannot find it although the pod runs on its node) is an error naming
//! the volume, and the backup ends PartiallyFailed: nothing asked for is silently missing. The
//! per-backup timeout (`--restic-timeout`, or the backup's `velero.io/pod-volume-timeout`
//! annotation) bounds the whole; what is still running then is cancelled and failed.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};
use lifeboat_agent::proto::VolumeBackup;
use lifeboat_repo::Location;
use serde_json::Value;

use super::PVC_UID_LABEL;
use super::job::{follow_job, record_status, repository_message};
use super::repository::{ensure_repository, parent_snapshot};
use super::select::{chosen, pod_unready, unsupported};
use crate::agents::{JobHandle, JobOutcome};
use crate::api::{
    Backup, PodVolumeBackup, PodVolumeBackupSpec, PodVolumeBackupStatus, PodVolumePhase,
    PodVolumeProgress, labels,
};
use crate::backup::BackupResults;
use crate::clock::kube_time;
use crate::controller::Context;
use crate::duration::parse_duration;
use crate::error::Result;
use crate::storage::{LocationStore, chain};

/// The annotation naming its claim.
const PVC_NAME_ANNOTATION: &str = "velero.io/pvc-name";
/// The backup annotation that overrides the server's pod volume timeout.
const TIMEOUT_ANNOTATION: &str = "velero.io/pod-volume-timeout";

/// Backs up the volumes of `pods` (namespace, name) for `backup`; warnings and errors go to
/// `results`. Returns the backup's PodVolumeBackups as they ended.
pub(crate) async fn back_up_pod_volumes(
    ctx: &Context,
    backup: &Backup,
    store: &LocationStore,
    pods: &[(String, String)],
    results: &mut BackupResults,
) -> Result<Vec<PodVolumeBackup>> {
    let default_volumes = backup
        .spec
        .default_volumes_to_restic
        .or(backup.spec.default_volumes_to_fs_backup)
        .unwrap_or(ctx.settings.default_volumes_to_restic);
    let mut password: Option<String> = None;
    let mut repositories: BTreeMap<String, Location> = BTreeMap::new();
    let mut claims_seen: HashSet<String> = HashSet::new();
    let mut running: Vec<(PodVolumeBackup, JobHandle)> = Vec::new();
    let pvbs: Api<PodVolumeBackup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);

    for (namespace, name) in pods {
        let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
        let Some(pod) = pod_api.get_opt(name).await? else {
            continue;
        };
        let pod_json = serde_json::to_value(&pod).unwrap_or(Value::Null);
        let (volumes, mut warnings) = chosen(&pod_json, default_volumes);
        for w in warnings.drain(..) {
            results
                .warnings
                .add(Some(namespace), format!("pod {name}: {w}"));
        }
        if volumes.is_empty() {
            continue;
        }
        let names = || {
            volumes
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(reason) = pod_unready(&pod_json) {
            results.warnings.add(
                Some(namespace),
                format!("pod {name}: volumes {} not backed up: {reason}", names()),
            );
            continue;
        }
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        if !ctx.agents.is_live(&node) {
            results.warnings.add(
                Some(namespace),
                format!(
                    "pod {name}: volumes {} not backed up: no live agent on node {node}",
                    names()
                ),
            );
            continue;
        }
        for volume in volumes {
            let (claim, pv) = match &volume.claim {
                Some(claim_name) => {
                    let claims: Api<PersistentVolumeClaim> =
                        Api::namespaced(ctx.client.clone(), namespace);
                    let claim = claims.get_opt(claim_name).await?;
                    let pv = match claim
                        .as_ref()
                        .and_then(|c| c.spec.as_ref())
                        .and_then(|s| s.volume_name.clone())
                        .filter(|n| !n.is_empty())
                    {
                        Some(pv) => {
                            Api::<PersistentVolume>::all(ctx.client.clone())
                                .get_opt(&pv)
                                .await?
                        }
                        None => None,
                    };
                    (claim, pv)
                }
                None => (None, None),
            };
            let claim_json = claim
                .as_ref()
                .map(|c| serde_json::to_value(c).unwrap_or(Value::Null));
            let pv_json = pv
                .as_ref()
                .map(|p| serde_json::to_value(p).unwrap_or(Value::Null));
            if volume.claim.is_some() && claim.is_none() {
                results.warnings.add(
                    Some(namespace),
                    format!(
                        "pod {name}: volume {} not backed up: its claim does not exist",
                        volume.name
                    ),
                );
                continue;
            }
            if let Some(reason) = unsupported(&volume, claim_json.as_ref(), pv_json.as_ref()) {
                results.warnings.add(
                    Some(namespace),
                    format!("pod {name}: volume {} not backed up: {reason}", volume.name),
                );
                continue;
            }
            if let Some(claim) = &claim {
                // A claim several pods mount is backed up once.
                if !claims_seen.insert(claim.uid().unwrap_or_default()) {
                    continue;
                }
            }

            let not_backed_up = |e: &super::Error| {
                format!(
                    "pod {name}: volume {} not backed up: {}",
                    volume.name,
                    chain(e)
                )
            };
            // The repository of the namespace, created on first use.
            let repository = match repositories.get(namespace) {
                Some(location) => location.clone(),
                None => {
                    if password.is_none() {
                        password = Some(ctx.repository_password().await.map_err(|e| {
                            crate::error::Error::NotReady(format!(
                                "the repository password cannot be read: {}",
                                chain(&e)
                            ))
                        })?);
                    }
                    let pw = password.clone().unwrap_or_default();
                    match ensure_repository(ctx, backup, store, namespace, &pw).await {
                        Ok(location) => {
                            repositories.insert(namespace.clone(), location.clone());
                            location
                        }
                        Err(e) => {
                            results.errors.add(Some(namespace), not_backed_up(&e));
                            continue;
                        }
                    }
                }
            };

            let message = match repository_message(
                store,
                &repository,
                password.as_deref().unwrap_or_default(),
            ) {
                Ok(message) => message,
                Err(e) => {
                    results
                        .errors
                        .add(Some(namespace), not_backed_up(&e.into()));
                    continue;
                }
            };
            let pvb = new_volume_backup(backup, &pod, &volume.name, &repository, claim.as_ref());
            let created = pvbs.create(&PostParams::default(), &pvb).await?;
            let parent = match &claim {
                Some(c) => parent_snapshot(ctx, &c.uid().unwrap_or_default(), backup).await?,
                None => None,
            };
            let stored_path = match &claim {
                Some(c) => format!("/{namespace}/pvc/{}", c.name_any()),
                None => format!("/{namespace}/pod/{name}/{}", volume.name),
            };
            let job = VolumeBackup {
                job_id: created.name_any(),
                pod_uid: pod.uid().unwrap_or_default(),
                volume_dir: pv
                    .as_ref()
                    .map_or_else(|| volume.name.clone(), ResourceExt::name_any),
                repository: Some(message),
                stored_path,
                host: "velero".into(),
                tags: created
                    .spec
                    .tags
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
                parent: parent.unwrap_or_default(),
            };
            let now = kube_time(ctx.clock.now());
            match ctx.agents.submit_backup(&node, job).await {
                Ok(handle) => {
                    set_status(ctx, &created, &PodVolumeBackupStatus::in_progress(now)).await;
                    running.push((created, handle));
                }
                Err(e) => {
                    let reason = e.to_string();
                    let status = PodVolumeBackupStatus {
                        phase: Some(PodVolumePhase::Failed),
                        message: Some(reason.clone()),
                        start_timestamp: Some(now.clone()),
                        completion_timestamp: Some(now),
                        ..PodVolumeBackupStatus::default()
                    };
                    set_status(ctx, &created, &status).await;
                    results.errors.add(
                        Some(namespace),
                        format!(
                            "pod volume backup {} of pod {name} volume {} failed: {reason}",
                            created.name_any(),
                            volume.name
                        ),
                    );
                }
            }
        }
    }

    // Every volume of every node at once; the timeout bounds them all.
    let timeout = backup
        .annotations()
        .get(TIMEOUT_ANNOTATION)
        .and_then(|t| parse_duration(t))
        .unwrap_or(ctx.settings.restic_timeout);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut waiting: FuturesUnordered<_> = running
        .into_iter()
        .map(|(pvb, handle)| follow(ctx, pvb, handle, deadline, timeout))
        .collect();
    while let Some((pvb, outcome)) = waiting.next().await {
        let pod = &pvb.spec.pod;
        let pod_name = pod.name.clone().unwrap_or_default();
        match outcome {
            Ended::Completed => {}
            Ended::Failed(reason) => results.errors.add(
                pod.namespace.as_deref(),
                format!(
                    "pod volume backup {} of pod {pod_name} volume {} failed: {reason}",
                    pvb.name_any(),
                    pvb.spec.volume
                ),
            ),
            // The agent did not find the volume. Legitimate only when the pod is no longer
            // there to back up; a pod still running on the node whose volume the agent cannot
            // see is an agent that looks in the wrong place, and nothing of it is protected.
            Ended::Skipped(reason) => match gone(ctx, &pvb).await {
                Some(why) => results.warnings.add(
                    pod.namespace.as_deref(),
                    format!(
                        "pod {pod_name}: volume {} not backed up: {why} ({reason})",
                        pvb.spec.volume
                    ),
                ),
                None => {
                    let message = unseen_volume(ctx, &pvb, &reason).await;
                    results.errors.add(pod.namespace.as_deref(), message);
                }
            },
        }
    }

    let selector = format!(
        "{}={}",
        labels::BACKUP_NAME,
        labels::value(&backup.name_any())
    );
    let mut list = pvbs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    list.retain(|p| {
        p.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == backup.uid().as_ref())
    });
    list.sort_by_key(ResourceExt::name_any);
    Ok(list)
}

/// Fails the PodVolumeBackups of `backup` that a stopped server left New or InProgress (their
/// agents gave the jobs up when its session ended), with `reason`.
pub(crate) async fn fail_abandoned(ctx: &Context, backup: &Backup, reason: &str) -> Result<()> {
    let pvbs: Api<PodVolumeBackup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let selector = format!(
        "{}={}",
        labels::BACKUP_UID,
        backup.uid().unwrap_or_default()
    );
    let now = kube_time(ctx.clock.now());
    for pvb in pvbs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
    {
        let phase = pvb.status.as_ref().and_then(|s| s.phase);
        if matches!(
            phase,
            None | Some(PodVolumePhase::New | PodVolumePhase::InProgress)
        ) {
            let status = PodVolumeBackupStatus::failed(reason, now.clone());
            set_status(ctx, &pvb, &status).await;
        }
    }
    Ok(())
}

/// Fails `pvb`, whose pod still runs on its node but whose agent found no volume (`reason`):
/// its message names the agent's own diagnosis of its host-pods root when it gave one.
/// Returns the backup's error.
async fn unseen_volume(ctx: &Context, pvb: &PodVolumeBackup, reason: &str) -> String {
    let node = &pvb.spec.node;
    let hint = ctx.agents.host_pods_problem(node).unwrap_or_else(|| {
        "check that the agent's /host_pods is the node's kubelet pods directory".into()
    });
    let cause =
        format!("the pod runs on node {node}, but its agent found no volume: {reason}; {hint}");
    let status = PodVolumeBackupStatus {
        message: Some(cause.clone()),
        ..PodVolumeBackupStatus::default()
    };
    set_status(ctx, pvb, &status).await;
    format!(
        "pod volume backup {} of pod {} volume {} failed: {cause}",
        pvb.name_any(),
        pvb.spec.pod.name.as_deref().unwrap_or_default(),
        pvb.spec.volume,
    )
}

/// Why the pod of `pvb` is legitimately no longer there to back up (deleted, replaced by
/// another pod of the same name, not running, moved to another node), or None when it still
/// runs where the job was sent.
async fn gone(ctx: &Context, pvb: &PodVolumeBackup) -> Option<String> {
    let pod = &pvb.spec.pod;
    let api: Api<Pod> = Api::namespaced(
        ctx.client.clone(),
        pod.namespace.as_deref().unwrap_or_default(),
    );
    let now = match api.get_opt(pod.name.as_deref().unwrap_or_default()).await {
        Ok(Some(now)) => now,
        Ok(None) => return Some("the pod was deleted during the backup".into()),
        // The pod cannot be looked at: count it as there, the safe side for "never silent".
        Err(_) => return None,
    };
    if now.uid() != pod.uid {
        return Some("the pod was replaced during the backup".into());
    }
    let json = serde_json::to_value(&now).unwrap_or(Value::Null);
    if let Some(reason) = pod_unready(&json) {
        return Some(reason);
    }
    let node = now.spec.as_ref().and_then(|s| s.node_name.as_deref());
    (node != Some(pvb.spec.node.as_str()))
        .then(|| format!("the pod moved to node {}", node.unwrap_or_default()))
}

/// Follows one job to its end, mirroring it into the PodVolumeBackup.
async fn follow(
    ctx: &Context,
    pvb: PodVolumeBackup,
    mut handle: JobHandle,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> (PodVolumeBackup, Ended) {
    let outcome = follow_job::<PodVolumeBackup>(
        ctx,
        &pvb.name_any(),
        &mut handle,
        deadline,
        format!(
            "timed out after {} (--restic-timeout, or the backup's {TIMEOUT_ANNOTATION})",
            humantime::format_duration(timeout)
        ),
    )
    .await;
    let now = kube_time(ctx.clock.now());
    match outcome {
        JobOutcome::Backup(done) => {
            let message = (!done.warnings.is_empty()).then(|| {
                format!(
                    "{} file(s) could not be read: {}",
                    done.warnings.len(),
                    done.warnings.join("; ")
                )
            });
            let status = PodVolumeBackupStatus {
                phase: Some(PodVolumePhase::Completed),
                snapshot_id: Some(done.snapshot_id),
                path: Some(done.path),
                completion_timestamp: Some(now),
                progress: Some(PodVolumeProgress::bytes(
                    done.bytes_processed,
                    done.bytes_processed,
                )),
                message,
                ..PodVolumeBackupStatus::default()
            };
            set_status(ctx, &pvb, &status).await;
            (pvb, Ended::Completed)
        }
        JobOutcome::Restore(_) => {
            let reason = "the agent answered a backup with a restore".to_string();
            set_status(ctx, &pvb, &PodVolumeBackupStatus::failed(&reason, now)).await;
            (pvb, Ended::Failed(reason))
        }
        JobOutcome::Failed(reason) => {
            set_status(ctx, &pvb, &PodVolumeBackupStatus::failed(&reason, now)).await;
            (pvb, Ended::Failed(reason))
        }
        JobOutcome::Skipped(reason) => {
            // Velero has no Skipped phase: Failed, with the reason, but a warning on the backup.
            let status = PodVolumeBackupStatus::failed(format!("skipped: {reason}"), now);
            set_status(ctx, &pvb, &status).await;
            (pvb, Ended::Skipped(reason))
        }
    }
}

/// How a volume's backup ended.
enum Ended {
    Completed,
    Failed(String),
    Skipped(String),
}

async fn set_status(ctx: &Context, pvb: &PodVolumeBackup, status: &PodVolumeBackupStatus) {
    record_status::<PodVolumeBackup>(ctx, &pvb.name_any(), status).await;
}

/// A PodVolumeBackup as Velero's `newPodVolumeBackup` makes it.
fn new_volume_backup(
    backup: &Backup,
    pod: &Pod,
    volume: &str,
    repository: &Location,
    claim: Option<&PersistentVolumeClaim>,
) -> PodVolumeBackup {
    let backup_name = backup.name_any();
    let backup_uid = backup.uid().unwrap_or_default();
    let mut tags: BTreeMap<String, String> = [
        ("backup", backup_name.clone()),
        ("backup-uid", backup_uid.clone()),
        ("pod", pod.name_any()),
        ("pod-uid", pod.uid().unwrap_or_default()),
        ("ns", pod.namespace().unwrap_or_default()),
        ("volume", volume.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut pvb_labels: BTreeMap<String, String> = [
        (labels::BACKUP_NAME.to_owned(), labels::value(&backup_name)),
        (labels::BACKUP_UID.to_owned(), backup_uid.clone()),
    ]
    .into();
    let mut annotations = BTreeMap::new();
    if let Some(claim) = claim {
        let uid = claim.uid().unwrap_or_default();
        tags.insert("pvc-uid".into(), uid.clone());
        pvb_labels.insert(PVC_UID_LABEL.into(), uid);
        annotations.insert(PVC_NAME_ANNOTATION.to_owned(), claim.name_any());
    }
    let mut pvb = PodVolumeBackup::new(
        "",
        PodVolumeBackupSpec {
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            pod: ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.namespace(),
                name: Some(pod.name_any()),
                uid: pod.uid(),
                ..ObjectReference::default()
            },
            volume: volume.to_owned(),
            backup_storage_location: backup.spec.storage_location.clone().unwrap_or_default(),
            repo_identifier: repository.to_string(),
            tags,
            ..PodVolumeBackupSpec::default()
        },
    );
    pvb.metadata = ObjectMeta {
        generate_name: Some(format!("{backup_name}-")),
        namespace: backup.namespace(),
        labels: Some(pvb_labels),
        annotations: (!annotations.is_empty()).then_some(annotations),
        owner_references: Some(vec![OwnerReference {
            api_version: Backup::api_version(&()).into_owned(),
            kind: Backup::kind(&()).into_owned(),
            name: backup_name,
            uid: backup_uid,
            controller: Some(true),
            ..OwnerReference::default()
        }]),
        ..ObjectMeta::default()
    };
    pvb
}
