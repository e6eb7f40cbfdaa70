//! Pod volume backups within a backup: for each backed-up pod, the volumes Velero's rules
//! choose ([`volumes`](crate::backup::volumes)) become PodVolumeBackups handed to the agent on
//! the pod's node, all at once (each agent runs as many as its concurrency allows); their
//! progress and outcome are mirrored into the PodVolumeBackups' status.
//!
//! Velero 1.5 backs up one pod's volumes at a time, in the middle of the resource walk; here
//! the walk finishes first and every volume of every node runs in parallel. A volume that
//! cannot be backed up is a warning naming why; one that fails (its agent died, its data
//! could not be read) is an error naming the volume, and the backup ends PartiallyFailed. The
//! per-backup timeout (`--restic-timeout`, or the backup's `velero.io/pod-volume-timeout`
//! annotation) bounds the whole; what is still running then is cancelled and failed.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use lifeboat_agent::proto::{self as agent_proto, VolumeBackup};
use lifeboat_repo::{Credentials, Location, Repository, RepositoryOptions};
use serde_json::{Value, json};

use super::{Context, MANAGER, parse_duration};
use crate::agents::{JobEvent, JobHandle, JobOutcome};
use crate::api::{
    Backup, PodVolumeBackup, PodVolumeBackupSpec, PodVolumePhase, ResticRepository,
    ResticRepositorySpec, labels,
};
use crate::backup::BackupResults;
use crate::backup::volumes::{chosen, pod_unready, unsupported};
use crate::clock::kube_time;
use crate::error::Result;
use crate::storage::{LocationStore, chain};

/// The label of a PodVolumeBackup naming its claim's UID (how a parent is found).
const PVC_UID_LABEL: &str = "velero.io/pvc-uid";
/// The annotation naming its claim.
const PVC_NAME_ANNOTATION: &str = "velero.io/pvc-name";
/// The backup annotation that overrides the server's pod volume timeout.
const TIMEOUT_ANNOTATION: &str = "velero.io/pod-volume-timeout";
/// How often a volume's progress is written into its PodVolumeBackup at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

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

            // The repository of the namespace, created on first use.
            let repository = match repositories.get(namespace) {
                Some(location) => location.clone(),
                None => {
                    if password.is_none() {
                        password = Some(ctx.repository_password().await.map_err(|e| {
                            crate::error::Error::NotReady(format!(
                                "the repository password cannot be read: {e}"
                            ))
                        })?);
                    }
                    let pw = password.clone().unwrap_or_default();
                    match ensure_repository(ctx, backup, store, namespace, &pw).await {
                        Ok(location) => {
                            repositories.insert(namespace.clone(), location.clone());
                            location
                        }
                        Err(reason) => {
                            results.errors.add(
                                Some(namespace),
                                format!(
                                    "pod {name}: volume {} not backed up: {reason}",
                                    volume.name
                                ),
                            );
                            continue;
                        }
                    }
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
                repository: Some(repository_message(
                    store,
                    &repository,
                    password.as_deref().unwrap_or_default(),
                )),
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
                    set_status(
                        ctx,
                        &created,
                        json!({"phase": PodVolumePhase::InProgress, "startTimestamp": now}),
                    )
                    .await;
                    running.push((created, handle));
                }
                Err(reason) => {
                    set_status(ctx, &created, json!({"phase": PodVolumePhase::Failed, "message": reason, "startTimestamp": now, "completionTimestamp": now})).await;
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
            Ended::Skipped(reason) => {
                match gone(ctx, &pvb).await {
                    Some(why) => results.warnings.add(
                        pod.namespace.as_deref(),
                        format!(
                            "pod {pod_name}: volume {} not backed up: {why} ({reason})",
                            pvb.spec.volume
                        ),
                    ),
                    None => {
                        let hint = ctx.agents.host_pods_problem(&pvb.spec.node).unwrap_or_else(|| {
                        "check that the agent's /host_pods is the node's kubelet pods directory"
                            .into()
                    });
                        let cause = format!(
                            "the pod runs on node {}, but its agent found no volume: {reason}; {hint}",
                            pvb.spec.node
                        );
                        set_status(ctx, &pvb, json!({"message": cause})).await;
                        let message = format!(
                            "pod volume backup {} of pod {pod_name} volume {} failed: {cause}",
                            pvb.name_any(),
                            pvb.spec.volume,
                        );
                        results.errors.add(pod.namespace.as_deref(), message);
                    }
                }
            }
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
            let status = json!({"phase": PodVolumePhase::Failed, "message": reason, "completionTimestamp": now});
            set_status(ctx, &pvb, status).await;
        }
    }
    Ok(())
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
            let status = json!({
                "phase": PodVolumePhase::Completed,
                "snapshotID": done.snapshot_id,
                "path": done.path,
                "completionTimestamp": now,
                "progress": {"totalBytes": done.bytes_processed, "bytesDone": done.bytes_processed},
                "message": if done.warnings.is_empty() { None } else { Some(format!("{} file(s) could not be read: {}", done.warnings.len(), done.warnings.join("; "))) },
            });
            set_status(ctx, &pvb, status).await;
            (pvb, Ended::Completed)
        }
        JobOutcome::Restore(_) => {
            let reason = "the agent answered a backup with a restore".to_string();
            set_status(ctx, &pvb, json!({"phase": PodVolumePhase::Failed, "message": reason, "completionTimestamp": now})).await;
            (pvb, Ended::Failed(reason))
        }
        JobOutcome::Failed(reason) => {
            let status = json!({
                "phase": PodVolumePhase::Failed,
                "message": reason,
                "completionTimestamp": now,
            });
            set_status(ctx, &pvb, status).await;
            (pvb, Ended::Failed(reason))
        }
        JobOutcome::Skipped(reason) => {
            // Velero has no Skipped phase: Failed, with the reason, but a warning on the backup.
            let status = json!({
                "phase": PodVolumePhase::Failed,
                "message": format!("skipped: {reason}"),
                "completionTimestamp": now,
            });
            set_status(ctx, &pvb, status).await;
            (pvb, Ended::Skipped(reason))
        }
    }
}

/// Follows a pod volume job (backup or restore) to its outcome, writing its progress into the
/// status of the `K` named `name` at most every [`PROGRESS_EVERY`]; past `deadline` the job is
/// cancelled and fails with `timeout_reason`.
pub(crate) async fn follow_job<K>(
    ctx: &Context,
    name: &str,
    handle: &mut JobHandle,
    deadline: tokio::time::Instant,
    timeout_reason: String,
) -> JobOutcome
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let mut last_report: Option<Instant> = None;
    loop {
        match tokio::time::timeout_at(deadline, handle.next()).await {
            Ok(Some(JobEvent::Progress(p))) => {
                if last_report.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
                    last_report = Some(Instant::now());
                    let progress = json!({"progress": {
                        "totalBytes": p.bytes_total, "bytesDone": p.bytes_done,
                    }});
                    record_status::<K>(ctx, name, progress).await;
                }
            }
            Ok(Some(JobEvent::Done(outcome))) => return outcome,
            Ok(None) => return JobOutcome::Failed("the job ended without a result".into()),
            Err(_) => {
                ctx.agents.cancel_job(&handle.node, &handle.job_id).await;
                return JobOutcome::Failed(timeout_reason);
            }
        }
    }
}

/// Records a pod volume object's status; a failure is logged (the operation goes on, and the
/// final status is written again when the volume ends).
pub(crate) async fn record_status<K>(ctx: &Context, name: &str, status: Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if let Err(e) = ctx.patch_status::<K>(name, status).await {
        tracing::warn!(object = %name, "cannot record the pod volume status: {}", chain(&e));
    }
}

/// How a volume's backup ended.
enum Ended {
    Completed,
    Failed(String),
    Skipped(String),
}

async fn set_status(ctx: &Context, pvb: &PodVolumeBackup, status: Value) {
    record_status::<PodVolumeBackup>(ctx, &pvb.name_any(), status).await;
}

/// The repository of `namespace` on the backup's location: its ResticRepository object, and
/// the repository itself, initialised on first use.
async fn ensure_repository(
    ctx: &Context,
    backup: &Backup,
    store: &LocationStore,
    namespace: &str,
    password: &str,
) -> std::result::Result<Location, String> {
    let location_name = backup.spec.storage_location.clone().unwrap_or_default();
    let location = store.repo_root.join(namespace);
    let opts = RepositoryOptions {
        store: store.options.clone(),
        ..RepositoryOptions::default()
    };
    match Repository::open(&location, password, opts.clone()).await {
        Ok(_) => {}
        Err(lifeboat_repo::Error::NoRepository { .. }) => {
            match Repository::init(&location, password, opts).await {
                Ok(_) | Err(lifeboat_repo::Error::AlreadyInitialized { .. }) => {
                    tracing::info!(repository = %location, "repository initialised");
                }
                Err(e) => {
                    return Err(format!(
                        "cannot initialise repository {location}: {}",
                        lifeboat_repo::error_chain(&e)
                    ));
                }
            }
        }
        Err(e) => {
            return Err(format!(
                "cannot open repository {location}: {}",
                lifeboat_repo::error_chain(&e)
            ));
        }
    }

    let api: Api<ResticRepository> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let selector = format!(
        "velero.io/volume-namespace={},{}={}",
        labels::value(namespace),
        labels::STORAGE_LOCATION,
        labels::value(&location_name)
    );
    let existing = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| chain(&e))?;
    if existing.items.is_empty() {
        let mut repo = ResticRepository::new(
            "",
            ResticRepositorySpec {
                volume_namespace: namespace.to_owned(),
                backup_storage_location: location_name.clone(),
                restic_identifier: location.to_string(),
                maintenance_frequency: super::go_duration(ctx.settings.default_prune_frequency),
                ..ResticRepositorySpec::default()
            },
        );
        repo.metadata = ObjectMeta {
            generate_name: Some(format!("{namespace}-{location_name}-")),
            namespace: Some(ctx.namespace.clone()),
            labels: Some(
                [
                    (
                        "velero.io/volume-namespace".to_string(),
                        labels::value(namespace),
                    ),
                    (
                        labels::STORAGE_LOCATION.to_string(),
                        labels::value(&location_name),
                    ),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        };
        let created = api
            .create(&PostParams::default(), &repo)
            .await
            .map_err(|e| chain(&e))?;
        let status = json!({"status": {"phase": "Ready"}});
        let _ = api
            .patch_status(
                &created.name_any(),
                &PatchParams::apply(MANAGER),
                &Patch::Merge(&status),
            )
            .await;
    }
    Ok(location)
}

/// The newest completed snapshot of the claim on the backup's location, as a parent.
async fn parent_snapshot(
    ctx: &Context,
    claim_uid: &str,
    backup: &Backup,
) -> Result<Option<String>> {
    let api: Api<PodVolumeBackup> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let selector = format!("{PVC_UID_LABEL}={claim_uid}");
    let location = backup.spec.storage_location.clone().unwrap_or_default();
    let newest = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|p| p.spec.backup_storage_location == location)
        .filter_map(|p| {
            let status = p.status?;
            (status.phase == Some(PodVolumePhase::Completed))
                .then_some(())
                .and(status.snapshot_id.zip(status.completion_timestamp))
        })
        .max_by_key(|(_, at)| at.0)
        .map(|(id, _)| id);
    Ok(newest)
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

/// What an agent needs to open the repository at `location`.
pub(crate) fn repository_message(
    store: &LocationStore,
    location: &Location,
    password: &str,
) -> agent_proto::Repository {
    let region = match location {
        Location::S3 { region, .. } => region.clone().unwrap_or_default(),
        _ => String::new(),
    };
    let from_environment = || match location {
        Location::S3 { .. } => environment_credentials(),
        _ => None,
    };
    let credentials = store
        .options
        .credentials
        .clone()
        .or_else(from_environment)
        .and_then(|c| {
            Some(match c {
                Credentials::Aws {
                    access_key_id,
                    secret_access_key,
                    session_token,
                } => agent_proto::repository::Credentials::Aws(agent_proto::AwsCredentials {
                    access_key_id,
                    secret_access_key,
                    session_token: session_token.unwrap_or_default(),
                }),
                Credentials::Gcp {
                    service_account_key,
                } => agent_proto::repository::Credentials::Gcp(agent_proto::GcpCredentials {
                    service_account_key,
                }),
                Credentials::Azure { account, key } => {
                    agent_proto::repository::Credentials::Azure(agent_proto::AzureCredentials {
                        account,
                        key,
                    })
                }
                _ => return None,
            })
        });
    agent_proto::Repository {
        location: location.to_string(),
        region,
        password: password.to_owned(),
        credentials,
        ca_certificates: store.options.ca_certificates.clone().unwrap_or_default(),
        insecure_skip_tls_verify: store.options.insecure_skip_tls_verify,
    }
}

/// The server's own AWS keys from its environment, for a location that names no credentials:
/// the agents have none of their own.
fn environment_credentials() -> Option<Credentials> {
    let id = std::env::var("AWS_ACCESS_KEY_ID")
        .ok()
        .filter(|v| !v.is_empty())?;
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY")
        .ok()
        .filter(|v| !v.is_empty())?;
    Some(Credentials::Aws {
        access_key_id: id,
        secret_access_key: secret,
        session_token: std::env::var("AWS_SESSION_TOKEN")
            .ok()
            .filter(|v| !v.is_empty()),
    })
}
