//! The `velero.io/v1` API, field for field as Velero defines it (v1.5, plus the newer fields
//! users already write, such as `defaultVolumesToFsBackup` and `orLabelSelectors`), so that a
//! manifest written for Velero deserialises unchanged.
//!
//! Every spec and status keeps the fields it does not know in `extra` and writes them back,
//! and its schema says `x-kubernetes-preserve-unknown-fields`, so neither we nor the API server
//! drop a field a newer Velero (or a user) set. Durations are Kubernetes duration strings
//! (`720h0m0s`), kept as written. Unset optional fields are left out when written
//! (`skip_serializing_none` on each struct), as Go's `omitempty` does. The CRD YAML under
//! `deploy/crds/` is generated from these types by `cargo run -p lifeboat-server --bin
//! gen-crds`, and a test fails when it is stale.

mod backup;
mod lenient;
mod location;
mod restore;
mod volume;

use std::collections::BTreeMap;

pub use backup::*;
pub use lenient::{Lenient, Malformed};
pub use location::*;
pub use restore::*;
pub use volume::*;

/// The API group.
pub const GROUP: &str = "velero.io";
/// The API version.
pub const VERSION: &str = "v1";

/// Why `name` cannot name an object (a DNS-1123 subdomain: at most 253 lowercase letters,
/// digits, `-` and `.`, starting and ending with a letter or digit), or None when it can.
/// A spec field naming another object is checked with this before it is looked up or
/// written into a label, so that `../../etc` fails validation instead of a request.
pub fn bad_object_name(name: &str) -> Option<String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let fine = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| alnum(c) || c == '-' || c == '.')
        && name.starts_with(alnum)
        && name.ends_with(alnum);
    (!fine).then(|| {
        format!(
            "{name:?} is not a valid object name (at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
        )
    })
}

/// The label and annotation keys Velero puts on objects (`pkg/apis/velero/v1/labels_annotations.go`).
pub mod labels {
    /// On a Backup: the storage location it was written to.
    pub const STORAGE_LOCATION: &str = "velero.io/storage-location";
    /// On a Backup a Schedule created: the schedule.
    pub const SCHEDULE_NAME: &str = "velero.io/schedule-name";
    /// On what belongs to a backup (DeleteBackupRequests, PodVolumeBackups, Restores' objects).
    pub const BACKUP_NAME: &str = "velero.io/backup-name";
    /// The UID of that backup.
    pub const BACKUP_UID: &str = "velero.io/backup-uid";
    /// On restored objects and PodVolumeRestores: the restore.
    pub const RESTORE_NAME: &str = "velero.io/restore-name";
    /// The source cluster's Kubernetes version, on each Backup.
    pub const SOURCE_CLUSTER_GIT_VERSION: &str = "velero.io/source-cluster-k8s-gitversion";
    /// Its major version.
    pub const SOURCE_CLUSTER_MAJOR: &str = "velero.io/source-cluster-k8s-major-version";
    /// Its minor version.
    pub const SOURCE_CLUSTER_MINOR: &str = "velero.io/source-cluster-k8s-minor-version";
    /// On an object no backup takes (Velero's label; value `true`).
    pub const EXCLUDE_FROM_BACKUP: &str = "velero.io/exclude-from-backup";
    /// lifeboat's own annotation on a Backup that bucket sync created (value: the location):
    /// such a backup already happened elsewhere and is never run.
    pub const SYNCED_FROM: &str = "lifeboat.io/synced-from";

    /// `name` as a label value, as Velero's `label.GetValidName`: unchanged when it fits the
    /// 63 characters a label value may have, else its first 57 characters and the first 6
    /// hex digits of its SHA-256.
    pub fn value(name: &str) -> String {
        const MAX: usize = 63;
        if name.len() <= MAX {
            return name.to_owned();
        }
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(name.as_bytes()));
        let mut cut = MAX - 6;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}{}", &name[..cut], &digest[..6])
    }
}

/// Fields of an object this version of lifeboat does not know, kept as they were.
pub type Extra = BTreeMap<String, serde_json::Value>;

/// Every CRD of the API, in the order `install` applies them.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        Backup::crd(),
        Restore::crd(),
        Schedule::crd(),
        BackupStorageLocation::crd(),
        VolumeSnapshotLocation::crd(),
        PodVolumeBackup::crd(),
        PodVolumeRestore::crd(),
        ResticRepository::crd(),
        DeleteBackupRequest::crd(),
    ]
}

/// The file name of each CRD under `deploy/crds/` and its YAML.
pub fn crd_files() -> Vec<(String, String)> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default());
            let yaml = serde_yaml::to_string(&crd).expect("a CRD always serialises");
            (name, yaml)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Backup as a Velero user writes it, with a field of a newer Velero.
    const BACKUP: &str = r#"{
        "apiVersion": "velero.io/v1",
        "kind": "Backup",
        "metadata": {"name": "nightly", "namespace": "velero"},
        "spec": {
            "includedNamespaces": ["app"],
            "excludedResources": ["events"],
            "labelSelector": {"matchLabels": {"tier": "db"}},
            "snapshotVolumes": false,
            "ttl": "72h0m0s",
            "storageLocation": "default",
            "defaultVolumesToRestic": true,
            "hooks": {"resources": [{"name": "freeze", "includedNamespaces": ["app"],
                "pre": [{"exec": {"container": "db", "command": ["/bin/sync"], "onError": "Fail", "timeout": "30s"}}]}]},
            "itemOperationTimeout": "4h0m0s"
        },
        "status": {"phase": "Completed", "formatVersion": "1.1.0", "errors": 0, "warnings": 2,
                   "progress": {"totalItems": 10, "itemsBackedUp": 10},
                   "startTimestamp": "2026-11-22T01:00:00Z", "hookStatus": {"hooksAttempted": 1}}
    }"#;

    #[test]
    fn a_velero_backup_manifest_round_trips_keeping_unknown_fields() {
        let backup: Backup = serde_json::from_str(BACKUP).expect("a Velero manifest deserialises");
        assert_eq!(backup.spec.included_namespaces, ["app"]);
        assert_eq!(backup.spec.default_volumes_to_restic, Some(true));
        assert_eq!(backup.spec.ttl.as_deref(), Some("72h0m0s"));
        let hook = &backup.spec.hooks.as_ref().expect("hooks").resources[0].pre[0];
        assert_eq!(
            hook.exec.as_ref().expect("exec").on_error.as_deref(),
            Some("Fail")
        );
        let status = backup.status.as_ref().expect("status");
        assert_eq!(status.phase, Some(BackupPhase::Completed));
        assert_eq!(
            status.progress.as_ref().and_then(|p| p.items_backed_up),
            Some(10)
        );

        let back = serde_json::to_value(&backup).expect("serialise");
        let original: serde_json::Value = serde_json::from_str(BACKUP).expect("json");
        assert_eq!(
            back["spec"], original["spec"],
            "the spec is written back as read"
        );
        assert_eq!(
            back["status"], original["status"],
            "the status is written back as read"
        );
    }

    #[test]
    fn schedules_and_volume_objects_use_velero_field_names() {
        let schedule: Schedule = serde_json::from_value(serde_json::json!({
            "apiVersion": "velero.io/v1", "kind": "Schedule",
            "metadata": {"name": "daily", "namespace": "velero"},
            "spec": {"schedule": "0 1 * * *", "template": {"includedNamespaces": ["*"], "ttl": "720h0m0s"}}
        }))
        .expect("schedule");
        assert_eq!(schedule.spec.schedule, "0 1 * * *");
        assert!(!schedule.spec.paused);

        let pvb: PodVolumeBackup = serde_json::from_value(serde_json::json!({
            "apiVersion": "velero.io/v1", "kind": "PodVolumeBackup",
            "metadata": {"name": "nightly-x7k2p", "namespace": "velero"},
            "spec": {"node": "node-1", "pod": {"kind": "Pod", "namespace": "app", "name": "db-0", "uid": "u1"},
                     "volume": "data", "backupStorageLocation": "default",
                     "repoIdentifier": "s3:http://minio:9000/velero/restic/app",
                     "tags": {"backup": "nightly", "ns": "app"}},
            "status": {"phase": "Completed", "snapshotID": "3a4b5c6d", "path": "/host_pods/u1/volumes/kubernetes.io~csi/pv-1/mount",
                       "progress": {"totalBytes": 100, "bytesDone": 100}}
        }))
        .expect("pod volume backup");
        let status = pvb.status.as_ref().expect("status");
        assert_eq!(status.snapshot_id.as_deref(), Some("3a4b5c6d"));
        assert_eq!(status.phase, Some(PodVolumePhase::Completed));
        let back = serde_json::to_value(&pvb).expect("serialise");
        assert_eq!(back["status"]["snapshotID"], "3a4b5c6d");

        let restore: Restore = serde_json::from_value(serde_json::json!({
            "apiVersion": "velero.io/v1", "kind": "Restore", "metadata": {"name": "r"},
            "spec": {"backupName": "nightly", "namespaceMapping": {"app": "app-copy"}, "restorePVs": true}
        }))
        .expect("restore");
        assert_eq!(restore.spec.restore_pvs, Some(true));
        assert_eq!(
            serde_json::to_value(&restore).expect("json")["spec"]["restorePVs"],
            true
        );
    }

    #[test]
    fn a_phase_of_a_newer_velero_is_read_as_unknown() {
        let status: BackupStatus =
            serde_json::from_value(serde_json::json!({"phase": "WaitingForPluginOperations"}))
                .expect("status");
        assert_eq!(status.phase, Some(BackupPhase::Unknown));
    }

    #[test]
    fn checked_in_crds_match_the_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
        for (name, yaml) in crd_files() {
            let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
            assert!(
                on_disk == yaml,
                "deploy/crds/{name} is stale: run `cargo run -p lifeboat-server --bin gen-crds`"
            );
        }
        let files = std::fs::read_dir(&dir).expect("deploy/crds exists").count();
        assert_eq!(
            files,
            crds().len(),
            "deploy/crds holds exactly the generated CRDs"
        );
    }

    #[test]
    fn every_crd_is_velero_io_v1_namespaced_with_status_and_preserves_unknown_fields() {
        for crd in crds() {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Namespaced");
            let v = &crd.spec.versions[0];
            assert_eq!(v.name, VERSION);
            assert!(
                v.subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some()
            );
            let schema = serde_json::to_value(&v.schema).expect("schema");
            let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
            assert_eq!(
                spec["x-kubernetes-preserve-unknown-fields"], true,
                "{}",
                crd.spec.names.kind
            );
        }
    }
}
