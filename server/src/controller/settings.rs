//! The controllers' settings, from the server's flags: each default and where it comes from.

use std::time::Duration;

/// Settings of the controllers, from the server's flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Locations reconciled at once. Validation is mostly waiting on the store, so a few in
    /// parallel keep one slow store from delaying the others.
    pub location_concurrency: u16,
    /// How long one location's validation may take before it counts as unreachable.
    pub validation_timeout: Duration,
    /// Validation frequency of a location that does not set one (Velero's default: 1m).
    pub default_validation_frequency: Duration,
    /// Backups run at once (`--backup-concurrency`). Velero runs one at a time; two keep a
    /// long backup (hours of pod volumes) from holding up a schedule's next one.
    pub backup_concurrency: u16,
    /// TTL of a backup that does not set one (`--default-backup-ttl`, 720h).
    pub default_backup_ttl: Duration,
    /// The location of a backup that names none, when no location is marked default
    /// (`--default-backup-storage-location`, `default`).
    pub default_backup_location: String,
    /// `defaultVolumesToRestic` of a backup that does not set it.
    pub default_volumes_to_restic: bool,
    /// Volume snapshot location per provider for backups that name none
    /// (`--default-volume-snapshot-locations provider:name,…`).
    pub default_snapshot_locations: std::collections::BTreeMap<String, String>,
    /// How often each location's backups are synced into the cluster, unless the location
    /// sets `backupSyncPeriod` (`--backup-sync-period`, 1m; 0 turns sync off).
    pub backup_sync_period: Duration,
    /// How often expired backups are looked for (`--garbage-collection-frequency`, 1h).
    pub gc_frequency: Duration,
    /// How long a backup's pod volumes may take in all (`--restic-timeout`, 4h).
    pub restic_timeout: Duration,
    /// How often a repository is pruned unless it says otherwise
    /// (`--default-restic-prune-frequency`, 7 days).
    pub default_prune_frequency: Duration,
    /// The image of the `restic-wait` init container of restored pods
    /// (`--restore-helper-image`; default: this version's image).
    pub restore_helper_image: String,
    /// `--restore-only`: backups, schedules and garbage collection are off.
    pub restore_only: bool,
    /// Where restores unpack their backup's tarball (`VELERO_SCRATCH_DIR`, the Deployment's
    /// `/scratch` volume; default: the system's temporary directory).
    pub scratch_dir: Option<std::path::PathBuf>,
    /// What a restore may unpack from a backup's tarball (`--restore-max-unpacked-size`,
    /// `--restore-max-object-size`, `--restore-max-entries`): the bucket is not trusted.
    pub restore_limits: crate::restore::archive::ArchiveLimits,
}

impl Settings {
    /// Where restores make their scratch directories: [`Settings::scratch_dir`], else the
    /// system's temporary directory.
    pub fn scratch_root(&self) -> std::path::PathBuf {
        self.scratch_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            location_concurrency: 4,
            validation_timeout: Duration::from_secs(30),
            default_validation_frequency: Duration::from_secs(60),
            backup_concurrency: 2,
            default_backup_ttl: Duration::from_secs(720 * 3600),
            default_backup_location: "default".into(),
            default_volumes_to_restic: false,
            default_snapshot_locations: Default::default(),
            backup_sync_period: Duration::from_secs(60),
            gc_frequency: Duration::from_secs(3600),
            restic_timeout: Duration::from_secs(4 * 3600),
            default_prune_frequency: Duration::from_secs(7 * 24 * 3600),
            restore_helper_image: crate::install::default_image(),
            restore_only: false,
            scratch_dir: None,
            restore_limits: Default::default(),
        }
    }
}
