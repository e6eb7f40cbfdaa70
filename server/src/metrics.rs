//! The server's Prometheus metrics, served at `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::{BackupPhase, RestorePhase};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LocationLabels {
    location: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabels {
    schedule: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: String,
    result: String,
}

/// The metrics every part of the server updates. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    agents: Gauge,
    location_available: Family<LocationLabels, Gauge>,
    reconciles: Family<ReconcileLabels, Counter>,
    backup: BackupMetrics,
    restore: RestoreMetrics,
}

/// Velero's restore metrics, by the schedule of the restored backup (`""` for none).
#[derive(Debug, Clone)]
struct RestoreMetrics {
    attempt: Family<ScheduleLabels, Counter>,
    success: Family<ScheduleLabels, Counter>,
    partial_failure: Family<ScheduleLabels, Counter>,
    failed: Family<ScheduleLabels, Counter>,
    validation_failed: Family<ScheduleLabels, Counter>,
}

impl RestoreMetrics {
    fn register(registry: &mut Registry) -> Self {
        let mut counter = |name: &str, help: &str| {
            let family = Family::<ScheduleLabels, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        RestoreMetrics {
            attempt: counter(
                "velero_restore_attempt",
                "Total number of attempted restores",
            ),
            success: counter(
                "velero_restore_success",
                "Total number of successful restores",
            ),
            partial_failure: counter(
                "velero_restore_partial_failure",
                "Total number of partially failed restores",
            ),
            failed: counter("velero_restore_failed", "Total number of failed restores"),
            validation_failed: counter(
                "velero_restore_validation_failed",
                "Total number of failed restores failing validations",
            ),
        }
    }
}

/// Velero's backup metrics, under Velero's names (`pkg/metrics/metrics.go`), so dashboards and
/// alerts written for Velero keep working.
#[derive(Debug, Clone)]
struct BackupMetrics {
    attempt: Family<ScheduleLabels, Counter>,
    success: Family<ScheduleLabels, Counter>,
    partial_failure: Family<ScheduleLabels, Counter>,
    failure: Family<ScheduleLabels, Counter>,
    validation_failure: Family<ScheduleLabels, Counter>,
    deletion_success: Family<ScheduleLabels, Counter>,
    deletion_failure: Family<ScheduleLabels, Counter>,
    duration: Family<ScheduleLabels, Histogram>,
    tarball_size: Family<ScheduleLabels, Gauge>,
    last_success: Family<ScheduleLabels, Gauge>,
}

impl BackupMetrics {
    fn register(registry: &mut Registry) -> Self {
        fn counter(
            registry: &mut Registry,
            name: &str,
            help: &str,
        ) -> Family<ScheduleLabels, Counter> {
            let family = Family::<ScheduleLabels, Counter>::default();
            registry.register(name, help, family.clone());
            family
        }
        let duration = Family::<ScheduleLabels, Histogram>::new_with_constructor(|| {
            // Velero's buckets: 10 s to 4 h.
            Histogram::new([
                10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 14400.0,
            ])
        });
        registry.register(
            "velero_backup_duration_seconds",
            "Time taken to complete backup, in seconds",
            duration.clone(),
        );
        let tarball_size = Family::<ScheduleLabels, Gauge>::default();
        registry.register(
            "velero_backup_tarball_size_bytes",
            "Size, in bytes, of a backup",
            tarball_size.clone(),
        );
        let last_success = Family::<ScheduleLabels, Gauge>::default();
        registry.register(
            "velero_backup_last_successful_timestamp",
            "Last time a backup ran successfully, Unix timestamp in seconds",
            last_success.clone(),
        );
        BackupMetrics {
            attempt: counter(
                registry,
                "velero_backup_attempt",
                "Total number of attempted backups",
            ),
            success: counter(
                registry,
                "velero_backup_success",
                "Total number of successful backups",
            ),
            partial_failure: counter(
                registry,
                "velero_backup_partial_failure",
                "Total number of partially failed backups",
            ),
            failure: counter(
                registry,
                "velero_backup_failure",
                "Total number of failed backups",
            ),
            validation_failure: counter(
                registry,
                "velero_backup_validation_failure",
                "Total number of validation failed backups",
            ),
            deletion_success: counter(
                registry,
                "velero_backup_deletion_success",
                "Total number of successful backup deletions",
            ),
            deletion_failure: counter(
                registry,
                "velero_backup_deletion_failure",
                "Total number of failed backup deletions",
            ),
            duration,
            tarball_size,
            last_success,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with lifeboat's metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let agents = Gauge::default();
        registry.register(
            "lifeboat_agents_connected",
            "Nodes with a live agent session",
            agents.clone(),
        );
        let location_available = Family::<LocationLabels, Gauge>::default();
        registry.register(
            "lifeboat_backup_storage_location_available",
            "1 when the backup storage location validated, else 0",
            location_available.clone(),
        );
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "lifeboat_reconciles",
            "Reconciliations by controller and result",
            reconciles.clone(),
        );
        let backup = BackupMetrics::register(&mut registry);
        let restore = RestoreMetrics::register(&mut registry);
        Self {
            registry: Arc::new(registry),
            agents,
            location_available,
            reconciles,
            backup,
            restore,
        }
    }

    pub(crate) fn agents_live(&self, n: usize) {
        self.agents.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn location(&self, name: &str, available: bool) {
        self.location_available
            .get_or_create(&LocationLabels {
                location: name.to_string(),
            })
            .set(i64::from(available));
    }

    pub(crate) fn reconciled(&self, controller: &str, ok: bool) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller: controller.to_string(),
                result: if ok { "success" } else { "error" }.to_string(),
            })
            .inc();
    }

    fn schedule(schedule: &str) -> ScheduleLabels {
        ScheduleLabels {
            schedule: schedule.to_string(),
        }
    }

    pub(crate) fn restore_attempted(&self, schedule: &str) {
        self.restore
            .attempt
            .get_or_create(&Self::schedule(schedule))
            .inc();
    }

    /// A restore ended in `phase` (Completed, PartiallyFailed, Failed, FailedValidation).
    pub(crate) fn restore_finished(&self, schedule: &str, phase: RestorePhase) {
        let family = match phase {
            RestorePhase::Completed => &self.restore.success,
            RestorePhase::PartiallyFailed => &self.restore.partial_failure,
            RestorePhase::FailedValidation => &self.restore.validation_failed,
            _ => &self.restore.failed,
        };
        family.get_or_create(&Self::schedule(schedule)).inc();
    }

    pub(crate) fn backup_attempted(&self, schedule: &str) {
        self.backup
            .attempt
            .get_or_create(&Self::schedule(schedule))
            .inc();
    }

    /// A backup ended in `phase` (Completed, PartiallyFailed, Failed, FailedValidation).
    pub(crate) fn backup_finished(&self, schedule: &str, phase: BackupPhase) {
        let family = match phase {
            BackupPhase::Completed => &self.backup.success,
            BackupPhase::PartiallyFailed => &self.backup.partial_failure,
            BackupPhase::FailedValidation => &self.backup.validation_failure,
            _ => &self.backup.failure,
        };
        family.get_or_create(&Self::schedule(schedule)).inc();
    }

    pub(crate) fn backup_duration(&self, schedule: &str, seconds: f64) {
        self.backup
            .duration
            .get_or_create(&Self::schedule(schedule))
            .observe(seconds);
    }

    pub(crate) fn backup_tarball_size(&self, schedule: &str, bytes: u64) {
        self.backup
            .tarball_size
            .get_or_create(&Self::schedule(schedule))
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub(crate) fn backup_last_success(&self, schedule: &str, unix_seconds: i64) {
        self.backup
            .last_success
            .get_or_create(&Self::schedule(schedule))
            .set(unix_seconds);
    }

    pub(crate) fn backup_deleted(&self, schedule: &str, ok: bool) {
        let family = if ok {
            &self.backup.deletion_success
        } else {
            &self.backup.deletion_failure
        };
        family.get_or_create(&Self::schedule(schedule)).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
