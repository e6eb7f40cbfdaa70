//! The server's Prometheus metrics, served at `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LocationLabels {
    location: String,
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
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with lifeboat's metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("lifeboat");
        let agents = Gauge::default();
        registry.register(
            "agents_connected",
            "Nodes with a live agent session",
            agents.clone(),
        );
        let location_available = Family::<LocationLabels, Gauge>::default();
        registry.register(
            "backup_storage_location_available",
            "1 when the backup storage location validated, else 0",
            location_available.clone(),
        );
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciliations by controller and result",
            reconciles.clone(),
        );
        Self {
            registry: Arc::new(registry),
            agents,
            location_available,
            reconciles,
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

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
