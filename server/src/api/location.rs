//! BackupStorageLocation and VolumeSnapshotLocation.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::SecretKeySelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Extra;

/// Where backups are stored: a bucket and prefix of a provider.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "velero.io",
    version = "v1",
    kind = "BackupStorageLocation",
    shortname = "bsl",
    namespaced,
    status = "BackupStorageLocationStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Last Validated","type":"date","jsonPath":".status.lastValidationTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Default","type":"boolean","jsonPath":".spec.default"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct BackupStorageLocationSpec {
    /// `aws` (and S3-compatible stores), `gcp`, `azure` or `filesystem`.
    pub provider: String,
    pub object_storage: ObjectStorageLocation,
    /// Provider settings: `region`, `s3Url`, `s3ForcePathStyle`, `insecureSkipTLSVerify`,
    /// `profile`, `resticRepoPrefix`…
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    pub credential: Option<SecretKeySelector>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// `ReadWrite` (the default) or `ReadOnly`.
    pub access_mode: Option<String>,
    pub backup_sync_period: Option<String>,
    pub validation_frequency: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// The bucket and prefix.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct ObjectStorageLocation {
    pub bucket: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// PEM bundle for a self-signed endpoint, as the base64 text Kubernetes writes for `[]byte`.
    #[schemars(extend("format" = "byte"))]
    pub ca_cert: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Whether a location can be used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LocationPhase {
    Available,
    #[default]
    Unavailable,
    #[serde(other)]
    Unknown,
}

/// What validation and sync found.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct BackupStorageLocationStatus {
    pub phase: Option<LocationPhase>,
    pub last_synced_time: Option<Time>,
    pub last_validation_time: Option<Time>,
    pub message: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Where volume snapshots would be taken (recorded; lifeboat protects volume data with file-level backups).
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "velero.io",
    version = "v1",
    kind = "VolumeSnapshotLocation",
    shortname = "vsl",
    namespaced,
    status = "VolumeSnapshotLocationStatus",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct VolumeSnapshotLocationSpec {
    pub provider: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    pub credential: Option<SecretKeySelector>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A snapshot location's state.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct VolumeSnapshotLocationStatus {
    pub phase: Option<LocationPhase>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}
