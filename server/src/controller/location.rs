//! The BackupStorageLocation controller: validates each location on its `validationFrequency`
//! and records the outcome in `status.phase` (Available / Unavailable), `status.message` and
//! `status.lastValidationTime`.
//!
//! Our own status writes wake the controller again (they are watch events like any other), so
//! the reconciler remembers when it last validated each location at which generation and does
//! nothing until that generation's next validation is due: a spec change validates at once, a
//! status write costs nothing. `validationFrequency: 0` validates on spec changes only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::{Context, log_reconciles, retry_after};
use crate::api::{BackupStorageLocation, BackupStorageLocationStatus, Lenient, LocationPhase};
use crate::duration::parse_duration;
use crate::error::{Error, Result};
use crate::storage::chain;

const NAME: &str = "backup-storage-location";

/// When each location was last validated, and at which generation.
#[derive(Debug, Default)]
pub(crate) struct State {
    validated: Mutex<HashMap<String, (Option<i64>, Instant)>>,
}

impl State {
    fn last(&self, name: &str) -> Option<(Option<i64>, Instant)> {
        self.validated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
    }

    fn record(&self, name: &str, generation: Option<i64>) {
        self.validated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), (generation, Instant::now()));
    }

    fn forget(&self, name: &str) {
        self.validated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

/// Runs the controller until `shutdown` fires.
pub(crate) async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let api: Api<Lenient<BackupStorageLocation>> =
        Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let concurrency = ctx.settings.location_concurrency;
    log_reconciles(
        NAME,
        Controller::new(api, watcher::Config::default())
            .with_config(Config::default().concurrency(concurrency))
            .graceful_shutdown_on(async move { shutdown.cancelled().await })
            .run(reconcile, error_policy, ctx),
    )
    .await;
}

async fn reconcile(bsl: Arc<Lenient<BackupStorageLocation>>, ctx: Arc<Context>) -> Result<Action> {
    let Ok(bsl) = super::readable(&ctx, &bsl).await else {
        return Ok(Action::await_change());
    };
    let name = bsl.name_any();
    if bsl.meta().deletion_timestamp.is_some() {
        ctx.locations.forget(&name);
        return Ok(Action::await_change());
    }
    let frequency = match bsl.spec.validation_frequency.as_deref() {
        None | Some("") => ctx.settings.default_validation_frequency,
        Some(text) => parse_duration(text).unwrap_or(ctx.settings.default_validation_frequency),
    };
    let generation = bsl.meta().generation;
    if let Some((validated_generation, at)) = ctx.locations.last(&name)
        && validated_generation == generation
    {
        if frequency.is_zero() {
            return Ok(Action::await_change());
        }
        let age = at.elapsed();
        if age < frequency {
            return Ok(Action::requeue(frequency - age));
        }
    }

    let outcome = validate(&bsl, &ctx).await;
    let (phase, message) = match &outcome {
        Ok(()) => (LocationPhase::Available, None),
        Err(e) => (LocationPhase::Unavailable, Some(chain(e))),
    };
    let previous = bsl.status.as_ref().and_then(|s| s.phase);
    let status = BackupStorageLocationStatus {
        phase: Some(phase),
        message: message.clone(),
        last_validation_time: Some(Time(ctx.clock.now())),
        ..BackupStorageLocationStatus::default()
    };
    // An available location has no message: one left from before goes.
    let clear: &[&str] = if message.is_none() { &["message"] } else { &[] };
    ctx.patch_status_clearing::<BackupStorageLocation>(&name, &status, clear)
        .await?;
    ctx.locations.record(&name, generation);
    ctx.metrics.reconciled(NAME, true);
    ctx.metrics
        .location(&name, phase == LocationPhase::Available);
    if previous != Some(phase) {
        match &message {
            None => tracing::info!(location = %name, "backup storage location is available"),
            Some(m) => {
                tracing::warn!(location = %name, "backup storage location is unavailable: {m}")
            }
        }
        let event = Event {
            type_: if message.is_none() {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: if message.is_none() {
                "Available".into()
            } else {
                "Unavailable".into()
            },
            note: message.clone(),
            action: "Validate".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &bsl.object_ref(&())).await {
            tracing::debug!(location = %name, "cannot publish an event: {e}");
        }
    }
    Ok(if frequency.is_zero() {
        Action::await_change()
    } else {
        Action::requeue(frequency)
    })
}

/// Why a location is Unavailable.
#[derive(Debug, thiserror::Error)]
enum Unavailable {
    #[error(transparent)]
    Open(#[from] super::OpenLocationError),
    #[error(transparent)]
    Invalid(#[from] crate::storage::ValidationError),
}

/// Validates the location.
async fn validate(
    bsl: &BackupStorageLocation,
    ctx: &Context,
) -> std::result::Result<(), Unavailable> {
    let store = ctx.open_location(bsl).await?;
    Ok(store.validate(ctx.settings.validation_timeout).await?)
}

fn error_policy(
    bsl: Arc<Lenient<BackupStorageLocation>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.reconciled(NAME, false);
    tracing::warn!(location = %bsl.name_any(), "reconcile failed: {}", chain(error));
    retry_after(error)
}
