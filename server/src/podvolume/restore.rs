//! Pod volume restores: the `restic-wait` handshake between a restored pod, the server and the
//! agent on the pod's node (Velero's design, with a way out when a volume cannot come back).
//!
//! 1. When a pod whose volumes were backed up is restored, [`add_wait_container`] puts the
//!    `restic-wait` init container first: our image running `lifeboat restore-helper
//!    <restore-uid>`, every such volume mounted at `/restores/<volume>`. Kubelet cannot start
//!    the pod's containers before it exits.
//! 2. [`run`] creates a PodVolumeRestore per volume (Velero's spec and labels), watches the
//!    restored pods, and once a pod is on a node with `restic-wait` running, hands each volume
//!    to that node's agent. The agent restores the snapshot (from the repository of the
//!    namespace it was backed up in) and writes `.velero/<restore-uid>` into the volume, or
//!    `.velero/<restore-uid>.failed` with the reason.
//! 3. The helper exits 0 when every volume has its marker (the pod starts), or non-zero naming
//!    the volumes that failed. A volume the backup holds no snapshot of is failed from the start
//!    (`--failed <volume>=<reason>` on the helper's command line), and the helper's `--timeout`
//!    (`--restic-timeout`) bounds the wait for a volume whose agent never answers.
//!
//! A failed volume fails its PodVolumeRestore with the reason and counts as an error of the
//! restore (PartiallyFailed).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use lifeboat_agent::proto::VolumeRestore;
use serde_json::{Value, json};

use super::job::{follow_job, record_status, repository_message};
use crate::agents::JobOutcome;
use crate::api::{
    PodVolumeBackup, PodVolumePhase, PodVolumeProgress, PodVolumeRestore, PodVolumeRestoreSpec,
    PodVolumeRestoreStatus, Restore, labels,
};
use crate::backup::BackupResults;
use crate::clock::kube_time;
use crate::controller::{Context, Settings};
use crate::duration::go_duration;
use crate::error::Result;
use crate::storage::{LocationStore, chain};

/// The init container's name (Velero's).
pub const WAIT_CONTAINER: &str = "restic-wait";
/// Where the init container sees the volumes.
pub const RESTORES_DIR: &str = "/restores";
/// The label of a PodVolumeRestore naming its restore's UID.
const RESTORE_UID_LABEL: &str = "velero.io/restore-uid";
/// The label of a PodVolumeRestore naming its pod's UID.
const POD_UID_LABEL: &str = "velero.io/pod-uid";

/// Why a volume of a restored pod does not get its data back. The text is what its
/// PodVolumeRestore, its pod's failure marker and the restore's errors say.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum VolumeFailure {
    #[error(
        "the backup has no snapshot of volume {volume} (its pod volume backup {backup} is {phase:?}{message})"
    )]
    NoSnapshot {
        volume: String,
        backup: String,
        phase: PodVolumePhase,
        /// The backup's own message, with its separator, or empty.
        message: String,
    },
    #[error("cannot read claim {claim}: {reason}")]
    ReadClaim { claim: String, reason: String },
    #[error("claim {namespace}/{claim} is not bound to a volume")]
    Unbound { namespace: String, claim: String },
    /// The job could not be handed to the agent, or the repository not described to it.
    #[error("{0}")]
    Submit(String),
    /// The agent's own account of the failure (a sentence from the agent protocol).
    #[error("{0}")]
    Agent(String),
    #[error("the agent answered a restore with a backup")]
    WrongAnswer,
    #[error("the server stopped watching the restored pods")]
    WatchEnded,
}

/// One volume of a restored pod.
#[derive(Debug, Clone)]
pub(crate) struct VolumeToRestore {
    pub volume: String,
    /// The snapshot, or why there is none.
    pub snapshot: std::result::Result<String, VolumeFailure>,
    /// Its backup.
    pub backup: PodVolumeBackup,
}

/// A restored pod whose volumes wait for their data.
#[derive(Debug, Clone)]
pub(crate) struct PodVolumes {
    /// The pod as restored (target namespace).
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The namespace it was backed up in: its repository.
    pub source_namespace: String,
    pub volumes: Vec<VolumeToRestore>,
    /// Claims by volume name.
    pub claims: BTreeMap<String, String>,
    /// The restore's UID, which names the volumes' marker files.
    pub restore_uid: String,
}

/// Puts the `restic-wait` init container first in `pod` (a prepared object) for the volumes
/// the backup holds pod volume backups of; returns those volumes, or `None` when there are none.
pub(crate) fn add_wait_container(
    pod: &mut Value,
    backups: &[PodVolumeBackup],
    settings: &Settings,
    restore_uid: &str,
) -> Option<Vec<VolumeToRestore>> {
    let pod_volumes: Vec<String> = pod["spec"]["volumes"]
        .as_array()?
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect();
    let mut volumes: Vec<VolumeToRestore> = Vec::new();
    for pvb in backups {
        let volume = &pvb.spec.volume;
        if !pod_volumes.contains(volume) || volumes.iter().any(|v| v.volume == *volume) {
            continue;
        }
        let status = pvb.status.clone().unwrap_or_default();
        let snapshot = match (status.phase, status.snapshot_id.as_deref()) {
            (Some(PodVolumePhase::Completed), Some(id)) if !id.is_empty() => Ok(id.to_owned()),
            (phase, _) => Err(VolumeFailure::NoSnapshot {
                volume: volume.clone(),
                backup: pvb.name_any(),
                phase: phase.unwrap_or(PodVolumePhase::New),
                message: status
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default(),
            }),
        };
        volumes.push(VolumeToRestore {
            volume: volume.clone(),
            snapshot,
            backup: pvb.clone(),
        });
    }
    if volumes.is_empty() {
        return None;
    }
    let mut args = vec![
        "restore-helper".to_owned(),
        restore_uid.to_owned(),
        "--timeout".to_owned(),
        go_duration(settings.restic_timeout),
    ];
    for v in &volumes {
        if let Err(reason) = &v.snapshot {
            args.push("--failed".into());
            args.push(format!("{}={reason}", v.volume));
        }
    }
    let container = json!({
        "name": WAIT_CONTAINER,
        "image": settings.restore_helper_image,
        "command": ["/lifeboat"],
        "args": args,
        "env": [
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "100m", "memory": "128Mi"},
        },
        "volumeMounts": volumes.iter().map(|v| json!({
            "name": v.volume, "mountPath": format!("{RESTORES_DIR}/{}", v.volume),
        })).collect::<Vec<_>>(),
    });
    let spec = pod["spec"].as_object_mut()?;
    let init = spec
        .entry("initContainers")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = init {
        // A pod backed up after an earlier restore still carries the old one.
        list.retain(|c| c["name"] != WAIT_CONTAINER);
        list.insert(0, container);
    }
    Some(volumes)
}

/// Creates the PodVolumeRestores of `pods`, hands each volume to the agent on its pod's node
/// once `restic-wait` runs, and waits for them all (bounded by `--restic-timeout`). Failures go
/// to `results` as errors of the pod's namespace.
pub(crate) async fn run(
    ctx: &Context,
    restore: &Restore,
    store: &LocationStore,
    pods: Vec<PodVolumes>,
    results: &mut BackupResults,
) -> Result<()> {
    let password = match ctx.repository_password().await {
        Ok(p) => Some(p),
        Err(e) => {
            results.errors.velero.push(format!(
                "cannot read the repository password, no pod volume is restored: {}",
                chain(&e)
            ));
            None
        }
    };
    let pvrs: Api<PodVolumeRestore> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    // Every volume gets its PodVolumeRestore first, so `restore describe --details` shows all.
    let mut waiting: HashMap<String, (PodVolumes, Vec<(VolumeToRestore, String)>)> = HashMap::new();
    for pod in pods {
        let mut made = Vec::new();
        for volume in &pod.volumes {
            let pvr = pvrs
                .create(
                    &PostParams::default(),
                    &new_pvr(restore, &pod, volume, store),
                )
                .await?;
            let name = pvr.name_any();
            if let Err(reason) = &volume.snapshot {
                fail(ctx, &name, &reason.to_string()).await;
                results.errors.add(
                    Some(&pod.namespace),
                    format!(
                        "pod volume {}/{} {}: {reason}",
                        pod.name, volume.volume, "was not restored"
                    ),
                );
                continue;
            }
            if password.is_none() {
                fail(ctx, &name, "the repository password could not be read").await;
                continue;
            }
            made.push((volume.clone(), name));
        }
        if !made.is_empty() {
            waiting.insert(pod.uid.clone(), (pod, made));
        }
    }
    let Some(password) = password else {
        return Ok(());
    };

    let timeout = ctx.settings.restic_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let selector = format!(
        "{}={}",
        labels::RESTORE_NAME,
        labels::value(&restore.name_any())
    );
    let pods_api: Api<Pod> = Api::all(ctx.client.clone());
    let mut events = std::pin::pin!(
        watcher(pods_api, watcher::Config::default().labels(&selector))
            .default_backoff()
            .applied_objects()
    );
    let mut jobs = FuturesUnordered::new();
    let store_ref = store;
    let password = &password;
    while !waiting.is_empty() || !jobs.is_empty() {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                for (_, (pod, volumes)) in waiting.drain() {
                    for (volume, pvr) in volumes {
                        let reason = format!(
                            "pod {}/{} did not run its {WAIT_CONTAINER} init container within {}",
                            pod.namespace, pod.name, humantime::format_duration(timeout)
                        );
                        fail(ctx, &pvr, &reason).await;
                        results.errors.add(Some(&pod.namespace), format!("pod volume {}/{}: {reason}", pod.name, volume.volume));
                    }
                }
                // Running jobs have the same deadline and end on it.
                if jobs.is_empty() { break; }
            }
            event = events.try_next(), if !waiting.is_empty() => match event {
                Ok(Some(live)) => {
                    let uid = live.uid().unwrap_or_default();
                    let Some(node) = ready_on(&live) else { continue };
                    let Some((pod, volumes)) = waiting.remove(&uid) else { continue };
                    for (volume, pvr) in volumes {
                        jobs.push(restore_volume(ctx, store_ref, password, pod.clone(), volume, pvr, node.clone(), deadline, timeout));
                    }
                }
                // The watch cannot end while the server runs; if it does, the pods still
                // waiting can no longer be seen: their volumes fail, the running ones finish.
                Ok(None) => {
                    for (_, (pod, volumes)) in waiting.drain() {
                        for (volume, pvr) in volumes {
                            let reason = VolumeFailure::WatchEnded.to_string();
                            fail(ctx, &pvr, &reason).await;
                            results.errors.add(Some(&pod.namespace), format!("pod volume {}/{}: {reason}", pod.name, volume.volume));
                        }
                    }
                }
                Err(e) => tracing::debug!("pod watch: {e}"),
            },
            Some(done) = jobs.next(), if !jobs.is_empty() => {
                let (namespace, failure): (String, Option<String>) = done;
                if let Some(message) = failure {
                    results.errors.add(Some(&namespace), message);
                }
            }
        }
    }
    Ok(())
}

/// The node of a pod whose `restic-wait` runs (or has run).
fn ready_on(pod: &Pod) -> Option<String> {
    let node = pod.spec.as_ref()?.node_name.clone()?;
    let statuses = pod.status.as_ref()?.init_container_statuses.as_ref()?;
    let wait = statuses.iter().find(|s| s.name == WAIT_CONTAINER)?;
    let state = wait.state.as_ref()?;
    (state.running.is_some() || state.terminated.is_some()).then_some(node)
}

/// A PodVolumeRestore as Velero makes it.
fn new_pvr(
    restore: &Restore,
    pod: &PodVolumes,
    volume: &VolumeToRestore,
    store: &LocationStore,
) -> PodVolumeRestore {
    let restore_name = restore.name_any();
    let mut pvr = PodVolumeRestore::new(
        "",
        PodVolumeRestoreSpec {
            pod: ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some(pod.namespace.clone()),
                name: Some(pod.name.clone()),
                uid: Some(pod.uid.clone()),
                ..ObjectReference::default()
            },
            volume: volume.volume.clone(),
            backup_storage_location: volume.backup.spec.backup_storage_location.clone(),
            repo_identifier: if volume.backup.spec.repo_identifier.is_empty() {
                store.repo_root.join(&pod.source_namespace).to_string()
            } else {
                volume.backup.spec.repo_identifier.clone()
            },
            snapshot_id: volume.snapshot.clone().unwrap_or_default(),
            source_namespace: (pod.source_namespace != pod.namespace)
                .then(|| pod.source_namespace.clone()),
            ..PodVolumeRestoreSpec::default()
        },
    );
    pvr.metadata = ObjectMeta {
        generate_name: Some(format!("{restore_name}-")),
        namespace: restore.namespace(),
        labels: Some(
            [
                (
                    labels::RESTORE_NAME.to_owned(),
                    labels::value(&restore_name),
                ),
                (
                    RESTORE_UID_LABEL.to_owned(),
                    restore.uid().unwrap_or_default(),
                ),
                (POD_UID_LABEL.to_owned(), pod.uid.clone()),
            ]
            .into(),
        ),
        owner_references: Some(vec![OwnerReference {
            api_version: Restore::api_version(&()).into_owned(),
            kind: Restore::kind(&()).into_owned(),
            name: restore_name,
            uid: restore.uid().unwrap_or_default(),
            controller: Some(true),
            ..OwnerReference::default()
        }]),
        ..ObjectMeta::default()
    };
    pvr
}

/// Restores one volume on `node`; the outcome is its pod's namespace and, when it failed, the
/// line for the restore's errors.
#[allow(clippy::too_many_arguments)]
async fn restore_volume(
    ctx: &Context,
    store: &LocationStore,
    password: &str,
    pod: PodVolumes,
    volume: VolumeToRestore,
    pvr: String,
    node: String,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> (String, Option<String>) {
    let label = format!("pod volume {}/{} ({pvr})", pod.name, volume.volume);
    let outcome = match volume_dir(ctx, &pod, &volume).await {
        Ok(dir) => restore_volume_inner(
            ctx, store, password, &pod, &volume, &pvr, &node, &dir, deadline, timeout,
        )
        .await
        .map_err(|reason| (reason, Some(dir))),
        Err(reason) => Err((reason, None)),
    };
    match outcome {
        Ok(()) => (pod.namespace, None),
        Err((failure, dir)) => {
            let reason = failure.to_string();
            fail(ctx, &pvr, &reason).await;
            // However it failed (its agent died, the timeout, the agent's own failure), the
            // pod must not wait out its init container's timeout for it.
            if let Some(volume_dir) = dir {
                mark_failed(
                    ctx.agents.clone(),
                    node,
                    VolumeRestore {
                        job_id: format!("{pvr}-failed"),
                        pod_uid: pod.uid.clone(),
                        volume_dir,
                        restore_uid: pod.restore_uid.clone(),
                        fail_reason: reason.clone(),
                        ..VolumeRestore::default()
                    },
                );
            }
            (pod.namespace, Some(format!("{label} failed: {reason}")))
        }
    }
}

/// How long the server tries to have a failed volume's marker written (the node's agent may
/// be restarting: it was killed, or its session broke).
const MARK_FAILED_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Has the agent on `node` write the failure marker of `job` (a restore job with its
/// `fail_reason`) into the volume, in the background: at once when the agent is live, else
/// as soon as an agent of the node holds a session, for up to [`MARK_FAILED_WINDOW`].
pub(crate) fn mark_failed(agents: crate::agents::Agents, node: String, job: VolumeRestore) {
    tokio::spawn(async move {
        let give_up = tokio::time::Instant::now() + MARK_FAILED_WINDOW;
        let mut last = String::new();
        'marking: while tokio::time::Instant::now() < give_up {
            if agents.is_live(&node) {
                match agents.submit_restore(&node, job.clone()).await {
                    Ok(mut handle) => loop {
                        match tokio::time::timeout(Duration::from_secs(60), handle.next()).await {
                            Ok(Some(crate::agents::JobEvent::Progress(_))) => {}
                            Ok(Some(crate::agents::JobEvent::Done(JobOutcome::Restore(_)))) => {
                                tracing::info!(%node, job = %job.job_id, "the failed volume is marked for its pod");
                                return;
                            }
                            Ok(Some(crate::agents::JobEvent::Done(outcome))) => {
                                last = match outcome {
                                    JobOutcome::Failed(reason) => reason,
                                    other => format!("{other:?}"),
                                };
                                // The agent answered (it cannot find the volume, say): asking
                                // again would get the same answer. Only an agent that left is
                                // asked again.
                                if agents.is_live(&node) {
                                    break 'marking;
                                }
                                break;
                            }
                            Ok(None) | Err(_) => break,
                        }
                    },
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        tracing::warn!(%node, job = %job.job_id, "the failure marker could not be written ({last}); the pod waits for its init container's timeout");
    });
}

/// Fails the PodVolumeRestores of `restore` that a stopped server left New or InProgress, with
/// `reason`, and has each volume's failure marker written (through the node's agent), so the
/// restored pods stop waiting for data that will not come.
pub(crate) async fn fail_abandoned(ctx: &Context, restore: &Restore, reason: &str) -> Result<()> {
    let pvrs: Api<PodVolumeRestore> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let restore_uid = restore.uid().unwrap_or_default();
    let selector = format!("{RESTORE_UID_LABEL}={restore_uid}");
    for pvr in pvrs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
    {
        let phase = pvr.status.as_ref().and_then(|s| s.phase);
        if !matches!(
            phase,
            None | Some(PodVolumePhase::New | PodVolumePhase::InProgress)
        ) {
            continue;
        }
        fail(ctx, &pvr.name_any(), reason).await;
        let pod_ref = &pvr.spec.pod;
        let pods: Api<Pod> = Api::namespaced(
            ctx.client.clone(),
            pod_ref.namespace.as_deref().unwrap_or_default(),
        );
        let Some(pod) = pods
            .get_opt(pod_ref.name.as_deref().unwrap_or_default())
            .await?
        else {
            continue;
        };
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let (Some(node), true) = (node, pod.uid() == pod_ref.uid) else {
            continue;
        };
        let claim = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .and_then(|vs| vs.iter().find(|v| v.name == pvr.spec.volume))
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone());
        let volume_dir = match claim {
            Some(claim) => {
                let claims: Api<PersistentVolumeClaim> =
                    Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
                let bound = claims
                    .get_opt(&claim)
                    .await?
                    .and_then(|c| c.spec.and_then(|s| s.volume_name))
                    .filter(|n| !n.is_empty());
                let Some(pv) = bound else { continue };
                pv
            }
            None => pvr.spec.volume.clone(),
        };
        mark_failed(
            ctx.agents.clone(),
            node,
            VolumeRestore {
                job_id: format!("{}-failed", pvr.name_any()),
                pod_uid: pod.uid().unwrap_or_default(),
                volume_dir,
                restore_uid: restore_uid.clone(),
                fail_reason: reason.to_owned(),
                ..VolumeRestore::default()
            },
        );
    }
    Ok(())
}

/// The directory kubelet keeps a volume in: the bound PV's name for a claim.
async fn volume_dir(
    ctx: &Context,
    pod: &PodVolumes,
    volume: &VolumeToRestore,
) -> std::result::Result<String, VolumeFailure> {
    match pod.claims.get(&volume.volume) {
        Some(claim) => {
            let claims: Api<PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), &pod.namespace);
            let bound = claims
                .get_opt(claim)
                .await
                .map_err(|e| VolumeFailure::ReadClaim {
                    claim: claim.clone(),
                    reason: e.to_string(),
                })?
                .and_then(|c| c.spec.and_then(|s| s.volume_name))
                .filter(|n| !n.is_empty());
            bound.ok_or_else(|| VolumeFailure::Unbound {
                namespace: pod.namespace.clone(),
                claim: claim.clone(),
            })
        }
        None => Ok(volume.volume.clone()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn restore_volume_inner(
    ctx: &Context,
    store: &LocationStore,
    password: &str,
    pod: &PodVolumes,
    volume: &VolumeToRestore,
    pvr: &str,
    node: &str,
    volume_dir: &str,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> std::result::Result<(), VolumeFailure> {
    let snapshot_id = volume.snapshot.clone()?;
    let volume_dir = volume_dir.to_owned();
    let now = kube_time(ctx.clock.now());
    set_status(ctx, pvr, &PodVolumeRestoreStatus::in_progress(now)).await;
    let location = store.repo_root.join(&pod.source_namespace);
    let job = VolumeRestore {
        job_id: pvr.to_owned(),
        pod_uid: pod.uid.clone(),
        volume_dir,
        repository: Some(
            repository_message(store, &location, password)
                .map_err(|e| VolumeFailure::Submit(chain(&e)))?,
        ),
        snapshot_id,
        restore_uid: pod.restore_uid.clone(),
        fail_reason: String::new(),
    };
    let mut handle = ctx
        .agents
        .submit_restore(node, job)
        .await
        .map_err(|e| VolumeFailure::Submit(e.to_string()))?;
    let outcome = follow_job::<PodVolumeRestore>(
        ctx,
        pvr,
        &mut handle,
        deadline,
        format!(
            "timed out after {} (--restic-timeout)",
            humantime::format_duration(timeout)
        ),
    )
    .await;
    match outcome {
        JobOutcome::Restore(done) => {
            let status = PodVolumeRestoreStatus {
                phase: Some(PodVolumePhase::Completed),
                completion_timestamp: Some(kube_time(ctx.clock.now())),
                progress: Some(PodVolumeProgress::bytes(done.bytes, done.bytes)),
                ..PodVolumeRestoreStatus::default()
            };
            set_status(ctx, pvr, &status).await;
            Ok(())
        }
        JobOutcome::Failed(reason) | JobOutcome::Skipped(reason) => {
            Err(VolumeFailure::Agent(reason))
        }
        JobOutcome::Backup(_) => Err(VolumeFailure::WrongAnswer),
    }
}

async fn fail(ctx: &Context, pvr: &str, reason: &str) {
    tracing::warn!(pvr, "pod volume restore failed: {reason}");
    let status = PodVolumeRestoreStatus::failed(reason, kube_time(ctx.clock.now()));
    set_status(ctx, pvr, &status).await;
}

async fn set_status(ctx: &Context, pvr: &str, status: &PodVolumeRestoreStatus) {
    record_status::<PodVolumeRestore>(ctx, pvr, status).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PodVolumeBackupSpec, PodVolumeBackupStatus};

    fn pvb(volume: &str, snapshot: Option<&str>) -> PodVolumeBackup {
        let mut pvb = PodVolumeBackup::new(
            "b1-x",
            PodVolumeBackupSpec {
                volume: volume.into(),
                ..PodVolumeBackupSpec::default()
            },
        );
        pvb.status = Some(PodVolumeBackupStatus {
            phase: Some(if snapshot.is_some() {
                PodVolumePhase::Completed
            } else {
                PodVolumePhase::Failed
            }),
            snapshot_id: snapshot.map(str::to_owned),
            message: snapshot.is_none().then(|| "disk on fire".to_owned()),
            ..PodVolumeBackupStatus::default()
        });
        pvb
    }

    #[test]
    fn the_wait_container_comes_first_with_the_volumes_and_the_failures() {
        let mut pod = json!({"spec": {
            "volumes": [{"name": "data"}, {"name": "logs"}, {"name": "tmp"}],
            "initContainers": [{"name": "setup"}, {"name": WAIT_CONTAINER, "image": "old"}],
            "containers": [{"name": "app"}]}});
        let settings = Settings {
            restore_helper_image: "lifeboat/lifeboat:v9".into(),
            restic_timeout: Duration::from_secs(3600),
            ..Settings::default()
        };
        let volumes = add_wait_container(
            &mut pod,
            &[
                pvb("data", Some("abc")),
                pvb("logs", None),
                pvb("gone", Some("x")),
            ],
            &settings,
            "uid-1",
        )
        .expect("two volumes");
        assert_eq!(volumes.len(), 2);
        assert_eq!(volumes[0].snapshot, Ok("abc".to_owned()));
        let reason = volumes[1].snapshot.clone().unwrap_err().to_string();
        assert!(reason.contains("no snapshot of volume logs"), "{reason}");
        assert!(reason.contains("disk on fire"), "{reason}");
        let init = pod["spec"]["initContainers"].as_array().unwrap();
        assert_eq!(init.len(), 2, "the old restic-wait is replaced: {init:?}");
        assert_eq!(init[0]["name"], WAIT_CONTAINER);
        assert_eq!(init[0]["image"], "lifeboat/lifeboat:v9");
        assert_eq!(init[1]["name"], "setup");
        assert_eq!(
            init[0]["args"],
            json!([
                "restore-helper",
                "uid-1",
                "--timeout",
                "1h0m0s",
                "--failed",
                format!("logs={reason}")
            ])
        );
        assert_eq!(
            init[0]["volumeMounts"],
            json!([{"name": "data", "mountPath": "/restores/data"}, {"name": "logs", "mountPath": "/restores/logs"}])
        );
    }

    #[test]
    fn a_pod_without_backed_up_volumes_is_left_alone() {
        let mut pod = json!({"spec": {"volumes": [{"name": "tmp"}], "containers": []}});
        let before = pod.clone();
        assert!(
            add_wait_container(
                &mut pod,
                &[pvb("data", Some("a"))],
                &Settings::default(),
                "u"
            )
            .is_none()
        );
        assert_eq!(pod, before);
    }
}
