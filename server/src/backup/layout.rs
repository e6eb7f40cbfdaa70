//! Where a backup's and a restore's files live under a storage location's prefix, exactly as
//! Velero lays them out (`pkg/persistence/object_store_layout.go`), so either can read what the
//! other wrote.
//!
//! ```text
//! backups/<name>/velero-backup.json                      the Backup object, final status
//! backups/<name>/<name>.tar.gz                           the resources
//! backups/<name>/<name>-logs.gz                          the backup's log
//! backups/<name>/<name>-podvolumebackups.json.gz         the PodVolumeBackups (JSON list)
//! backups/<name>/<name>-volumesnapshots.json.gz          native volume snapshots (JSON list)
//! backups/<name>/<name>-resource-list.json.gz            {"<apiVersion>/<Kind>": ["ns/name"]}
//! backups/<name>/<name>-results.gz                       {"errors": …, "warnings": …}
//! backups/<name>/<name>-csi-volumesnapshots.json.gz      CSI snapshots (JSON list)
//! backups/<name>/<name>-csi-volumesnapshotcontents.json.gz
//! restores/<name>/restore-<name>-logs.gz
//! restores/<name>/restore-<name>-results.gz
//! restic/<namespace>/                                    the restic repositories
//! ```

/// The directory of every backup.
pub const BACKUPS_DIR: &str = "backups";
/// The directory of every restore's logs and results.
pub const RESTORES_DIR: &str = "restores";

/// The keys of one backup's files, relative to the location's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupKeys {
    name: String,
}

impl BackupKeys {
    /// The files of the backup `name`.
    pub fn new(name: &str) -> BackupKeys {
        BackupKeys {
            name: name.to_owned(),
        }
    }

    /// `backups/<name>`: every file of the backup is under it.
    pub fn dir(&self) -> String {
        format!("{BACKUPS_DIR}/{}", self.name)
    }

    fn file(&self, suffix: &str) -> String {
        format!("{BACKUPS_DIR}/{0}/{0}{suffix}", self.name)
    }

    /// `velero-backup.json`, the Backup object with its final status; a backup "exists" in a
    /// bucket when this file does.
    pub fn metadata(&self) -> String {
        format!("{BACKUPS_DIR}/{}/velero-backup.json", self.name)
    }

    /// The resource tarball.
    pub fn contents(&self) -> String {
        self.file(".tar.gz")
    }

    /// The backup's log (gzip).
    pub fn log(&self) -> String {
        self.file("-logs.gz")
    }

    /// The PodVolumeBackups (gzip JSON list).
    pub fn pod_volume_backups(&self) -> String {
        self.file("-podvolumebackups.json.gz")
    }

    /// Native volume snapshots (gzip JSON list).
    pub fn volume_snapshots(&self) -> String {
        self.file("-volumesnapshots.json.gz")
    }

    /// The resource list (gzip JSON).
    pub fn resource_list(&self) -> String {
        self.file("-resource-list.json.gz")
    }

    /// The warnings and errors (gzip JSON).
    pub fn results(&self) -> String {
        self.file("-results.gz")
    }

    /// CSI volume snapshots (gzip JSON list).
    pub fn csi_volume_snapshots(&self) -> String {
        self.file("-csi-volumesnapshots.json.gz")
    }

    /// CSI volume snapshot contents (gzip JSON list).
    pub fn csi_volume_snapshot_contents(&self) -> String {
        self.file("-csi-volumesnapshotcontents.json.gz")
    }
}

/// The keys of one restore's files, relative to the location's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreKeys {
    name: String,
}

impl RestoreKeys {
    /// The files of the restore `name`.
    pub fn new(name: &str) -> RestoreKeys {
        RestoreKeys {
            name: name.to_owned(),
        }
    }

    /// `restores/<name>`.
    pub fn dir(&self) -> String {
        format!("{RESTORES_DIR}/{}", self.name)
    }

    /// The restore's log (gzip).
    pub fn log(&self) -> String {
        format!("{RESTORES_DIR}/{0}/restore-{0}-logs.gz", self.name)
    }

    /// The restore's warnings and errors (gzip JSON).
    pub fn results(&self) -> String {
        format!("{RESTORES_DIR}/{0}/restore-{0}-results.gz", self.name)
    }
}

/// The most a backup's metadata file (`velero-backup.json`, the gzip lists) may hold, read or
/// unpacked: a bucket is not trusted, and these are read whole. A backup's pod volume list
/// takes about a kilobyte per volume, so 64 MiB is tens of thousands of volumes.
pub const METADATA_LIMIT: u64 = 64 << 20;

/// Why a gzip JSON list from the bucket cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    #[error("it is not readable gzip")]
    Gzip(#[source] std::io::Error),
    #[error("it unpacks to more than {} MiB, more than such a list can hold", METADATA_LIMIT >> 20)]
    TooLarge,
    #[error("it is not a JSON list")]
    Json(#[source] serde_json::Error),
}

/// A gzip JSON list as Velero writes it (`null` for none), at most [`METADATA_LIMIT`] unpacked.
pub fn decode_list<T: serde::de::DeserializeOwned>(gz: &[u8]) -> Result<Vec<T>, ListError> {
    use std::io::Read as _;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .take(METADATA_LIMIT + 1)
        .read_to_end(&mut json)
        .map_err(ListError::Gzip)?;
    if json.len() as u64 > METADATA_LIMIT {
        return Err(ListError::TooLarge);
    }
    let list: Option<Vec<T>> = serde_json::from_slice(&json).map_err(ListError::Json)?;
    Ok(list.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_velero_s() {
        let b = BackupKeys::new("nightly-20261122030405");
        assert_eq!(
            b.metadata(),
            "backups/nightly-20261122030405/velero-backup.json"
        );
        assert_eq!(
            b.contents(),
            "backups/nightly-20261122030405/nightly-20261122030405.tar.gz"
        );
        assert_eq!(
            b.log(),
            "backups/nightly-20261122030405/nightly-20261122030405-logs.gz"
        );
        assert_eq!(
            b.pod_volume_backups(),
            "backups/nightly-20261122030405/nightly-20261122030405-podvolumebackups.json.gz"
        );
        assert_eq!(
            b.resource_list(),
            "backups/nightly-20261122030405/nightly-20261122030405-resource-list.json.gz"
        );
        assert_eq!(
            b.results(),
            "backups/nightly-20261122030405/nightly-20261122030405-results.gz"
        );
        let r = RestoreKeys::new("r1");
        assert_eq!(r.log(), "restores/r1/restore-r1-logs.gz");
        assert_eq!(r.results(), "restores/r1/restore-r1-results.gz");
    }

    #[test]
    fn a_list_that_unpacks_past_the_limit_is_refused_not_held() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let zeros = vec![b' '; 1 << 20];
        for _ in 0..=(METADATA_LIMIT >> 20) {
            gz.write_all(&zeros).expect("compress");
        }
        let bomb = gz.finish().expect("compress");
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let e = decode_list::<crate::api::PodVolumeBackup>(&bomb).expect_err("refused");
        assert!(e.to_string().contains("more than 64 MiB"), "{e}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"null").expect("compress");
        let none = gz.finish().expect("compress");
        assert!(
            decode_list::<crate::api::PodVolumeBackup>(&none)
                .expect("null")
                .is_empty()
        );
    }
}
