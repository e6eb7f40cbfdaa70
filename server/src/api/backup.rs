//! Backup, Schedule and DeleteBackupRequest.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Extra;

/// What a backup takes: resources by namespace, kind and label, and how volumes are protected.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "velero.io",
    version = "v1",
    kind = "Backup",
    namespaced,
    status = "BackupStatus",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Errors","type":"integer","jsonPath":".status.errors"}"#,
    printcolumn = r#"{"name":"Warnings","type":"integer","jsonPath":".status.warnings"}"#,
    printcolumn = r#"{"name":"Created","type":"date","jsonPath":".status.startTimestamp"}"#,
    printcolumn = r#"{"name":"Expires","type":"date","jsonPath":".status.expiration"}"#,
    printcolumn = r#"{"name":"Storage Location","type":"string","jsonPath":".spec.storageLocation"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct BackupSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_resources: Vec<String>,
    pub label_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub or_label_selectors: Vec<LabelSelector>,
    pub snapshot_volumes: Option<bool>,
    /// How long the backup is kept, as a duration string (`720h0m0s`); the server's default
    /// applies when empty.
    pub ttl: Option<String>,
    pub include_cluster_resources: Option<bool>,
    pub hooks: Option<BackupHooks>,
    pub storage_location: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_snapshot_locations: Vec<String>,
    pub default_volumes_to_restic: Option<bool>,
    /// Velero ≥ 1.10's name for `defaultVolumesToRestic`.
    pub default_volumes_to_fs_backup: Option<bool>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ordered_resources: std::collections::BTreeMap<String, String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Hooks run in pods around their backup.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct BackupHooks {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<BackupResourceHookSpec>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// The hooks for the pods a selector picks.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct BackupResourceHookSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_resources: Vec<String>,
    pub label_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre: Vec<BackupResourceHook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post: Vec<BackupResourceHook>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// One hook.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct BackupResourceHook {
    pub exec: Option<ExecHook>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A command run in a container.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct ExecHook {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container: String,
    pub command: Vec<String>,
    /// `Continue` or `Fail`.
    pub on_error: Option<String>,
    pub timeout: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Where a backup is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackupPhase {
    #[default]
    New,
    FailedValidation,
    InProgress,
    Completed,
    PartiallyFailed,
    Failed,
    Deleting,
    /// A phase of a newer Velero that this version does not know.
    #[serde(other)]
    Unknown,
}

/// Counts of items while a backup runs.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupProgress {
    pub total_items: Option<i64>,
    pub items_backed_up: Option<i64>,
}

/// What happened to a backup.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct BackupStatus {
    /// Deprecated major format version (always 1), still written for Velero 1.x readers.
    pub version: Option<i64>,
    /// `1.1.0`: the layout of the resource tarball.
    pub format_version: Option<String>,
    pub expiration: Option<Time>,
    pub phase: Option<BackupPhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<String>,
    pub start_timestamp: Option<Time>,
    pub completion_timestamp: Option<Time>,
    pub volume_snapshots_attempted: Option<i64>,
    pub volume_snapshots_completed: Option<i64>,
    pub warnings: Option<i64>,
    pub errors: Option<i64>,
    pub progress: Option<BackupProgress>,
    /// Why a Failed backup failed (Velero ≥ 1.6's field).
    pub failure_reason: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Backups taken on a cron schedule from a template.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "velero.io",
    version = "v1",
    kind = "Schedule",
    namespaced,
    status = "ScheduleStatus",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Last Backup","type":"date","jsonPath":".status.lastBackup"}"#,
    printcolumn = r#"{"name":"Paused","type":"boolean","jsonPath":".spec.paused"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct ScheduleSpec {
    pub template: BackupSpec,
    /// Five-field cron, or `@every 6h`.
    pub schedule: String,
    pub use_owner_references_in_backup: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A schedule's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SchedulePhase {
    #[default]
    New,
    Enabled,
    FailedValidation,
    #[serde(other)]
    Unknown,
}

/// What a schedule has done.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct ScheduleStatus {
    pub phase: Option<SchedulePhase>,
    pub last_backup: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A request to delete a backup with everything it stored.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "velero.io",
    version = "v1",
    kind = "DeleteBackupRequest",
    namespaced,
    status = "DeleteBackupRequestStatus",
    printcolumn = r#"{"name":"Backup","type":"string","jsonPath":".spec.backupName"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct DeleteBackupRequestSpec {
    pub backup_name: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A deletion's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeleteBackupRequestPhase {
    #[default]
    New,
    InProgress,
    Processed,
    #[serde(other)]
    Unknown,
}

/// What a deletion did.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct DeleteBackupRequestStatus {
    pub phase: Option<DeleteBackupRequestPhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}
