//! PodVolumeBackup, PodVolumeRestore and ResticRepository: the volume data path.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Extra;

/// One pod volume to back up, handed to the agent on the pod's node.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "velero.io",
    version = "v1",
    kind = "PodVolumeBackup",
    namespaced,
    status = "PodVolumeBackupStatus",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Created","type":"date","jsonPath":".status.startTimestamp"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.pod.namespace"}"#,
    printcolumn = r#"{"name":"Pod","type":"string","jsonPath":".spec.pod.name"}"#,
    printcolumn = r#"{"name":"Volume","type":"string","jsonPath":".spec.volume"}"#,
    printcolumn = r#"{"name":"Storage Location","type":"string","jsonPath":".spec.backupStorageLocation"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct PodVolumeBackupSpec {
    pub node: String,
    pub pod: ObjectReference,
    pub volume: String,
    pub backup_storage_location: String,
    /// restic's repository string, e.g. `s3:http://minio:9000/velero/restic/default`.
    pub repo_identifier: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    pub uploader_type: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Where a volume backup or restore is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PodVolumePhase {
    #[default]
    New,
    InProgress,
    Completed,
    Failed,
    #[serde(other)]
    Unknown,
}

/// Bytes done of a volume.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodVolumeProgress {
    pub total_bytes: Option<i64>,
    pub bytes_done: Option<i64>,
}

/// What happened to a volume backup.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct PodVolumeBackupStatus {
    pub phase: Option<PodVolumePhase>,
    /// The path backed up, as stored in the snapshot.
    pub path: Option<String>,
    #[serde(rename = "snapshotID")]
    pub snapshot_id: Option<String>,
    pub message: Option<String>,
    pub start_timestamp: Option<Time>,
    pub completion_timestamp: Option<Time>,
    pub progress: Option<PodVolumeProgress>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

impl PodVolumeProgress {
    /// `done` of `total` bytes, saturating at what a Kubernetes integer holds.
    pub fn bytes(total: u64, done: u64) -> Self {
        Self {
            total_bytes: Some(i64::try_from(total).unwrap_or(i64::MAX)),
            bytes_done: Some(i64::try_from(done).unwrap_or(i64::MAX)),
        }
    }
}

/// The statuses a pod volume job starts and fails with, the same for backups and restores.
macro_rules! pod_volume_status {
    ($status:ty) => {
        impl $status {
            /// Handed to its agent at `at`.
            pub fn in_progress(at: Time) -> Self {
                Self {
                    phase: Some(PodVolumePhase::InProgress),
                    start_timestamp: Some(at),
                    ..Self::default()
                }
            }

            /// Ended at `at` without its data, for `message`.
            pub fn failed(message: impl Into<String>, at: Time) -> Self {
                Self {
                    phase: Some(PodVolumePhase::Failed),
                    message: Some(message.into()),
                    completion_timestamp: Some(at),
                    ..Self::default()
                }
            }
        }
    };
}

pod_volume_status!(PodVolumeBackupStatus);

/// One pod volume to restore from a snapshot.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "velero.io",
    version = "v1",
    kind = "PodVolumeRestore",
    namespaced,
    status = "PodVolumeRestoreStatus",
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.pod.namespace"}"#,
    printcolumn = r#"{"name":"Pod","type":"string","jsonPath":".spec.pod.name"}"#,
    printcolumn = r#"{"name":"Volume","type":"string","jsonPath":".spec.volume"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Created","type":"date","jsonPath":".status.startTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct PodVolumeRestoreSpec {
    pub pod: ObjectReference,
    pub volume: String,
    pub backup_storage_location: String,
    pub repo_identifier: String,
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    /// The namespace the volume was backed up in (its repository), when mapped to another.
    pub source_namespace: Option<String>,
    pub uploader_type: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// What happened to a volume restore.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct PodVolumeRestoreStatus {
    pub phase: Option<PodVolumePhase>,
    pub message: Option<String>,
    pub start_timestamp: Option<Time>,
    pub completion_timestamp: Option<Time>,
    pub progress: Option<PodVolumeProgress>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

pod_volume_status!(PodVolumeRestoreStatus);

/// One restic repository: a namespace's volumes on one storage location.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "velero.io",
    version = "v1",
    kind = "ResticRepository",
    namespaced,
    status = "ResticRepositoryStatus",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Last Maintenance","type":"date","jsonPath":".status.lastMaintenanceTime"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct ResticRepositorySpec {
    pub volume_namespace: String,
    pub backup_storage_location: String,
    pub restic_identifier: String,
    /// How often prune runs, as a duration string (`168h0m0s`).
    pub maintenance_frequency: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Whether a repository can be used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RepositoryPhase {
    #[default]
    New,
    Ready,
    NotReady,
    #[serde(other)]
    Unknown,
}

/// A repository's state.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct ResticRepositoryStatus {
    pub phase: Option<RepositoryPhase>,
    pub message: Option<String>,
    pub last_maintenance_time: Option<Time>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}
