//! The controllers, in the style of controller-rs: one file per resource exposing `run`, a thin
//! `reconcile` and an `error_policy`, sharing one [`Context`].
//!
//! Reconcilers are level-triggered: they look at the object and the world and make them agree,
//! whatever event woke them. Status is written with the field manager [`MANAGER`]; Events are
//! published on transitions only.

pub(crate) mod backup;
pub(crate) mod deletion;
pub(crate) mod gc;
pub(crate) mod location;
pub(crate) mod operation;
pub(crate) mod repository;
pub(crate) mod restore;
pub(crate) mod schedule;
mod settings;
pub(crate) mod sync;

pub use settings::Settings;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};

use crate::api::{BackupStorageLocation, Lenient};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::storage::{LocationStore, chain};

/// The field manager of every write the server makes.
pub const MANAGER: &str = "lifeboat-server";

/// What every reconciler shares.
pub(crate) struct Context {
    pub client: kube::Client,
    pub namespace: String,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub settings: Settings,
    pub locations: location::State,
    pub clock: Clock,
    /// Backups this process is running.
    pub running_backups: Running,
    /// Restores this process is running.
    pub running_restores: Running,
    /// When each location was last synced.
    pub sync: sync::State,
    /// The live agents, to hand pod volumes to.
    pub agents: crate::agents::Agents,
    /// The API server's version, recorded on each Backup as Velero does.
    pub server_version: k8s_openapi::apimachinery::pkg::version::Info,
}

impl Context {
    pub fn new(
        client: kube::Client,
        namespace: String,
        metrics: Metrics,
        settings: Settings,
        clock: Clock,
        server_version: k8s_openapi::apimachinery::pkg::version::Info,
        agents: crate::agents::Agents,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Self {
            client,
            namespace,
            recorder,
            metrics,
            settings,
            locations: location::State::default(),
            clock,
            running_backups: Running::default(),
            running_restores: Running::default(),
            sync: sync::State::default(),
            agents,
            server_version,
        }
    }

    /// The install's repository password, from Velero's Secret `velero-restic-credentials`
    /// (key `repository-password`), so an existing Velero bucket's repositories keep opening.
    pub async fn repository_password(&self) -> Result<String> {
        let bytes = self
            .secret_key(
                crate::install::REPOSITORY_SECRET,
                crate::install::REPOSITORY_PASSWORD_KEY,
            )
            .await?;
        Ok(String::from_utf8_lossy(&bytes).trim_end().to_owned())
    }

    /// Merges `status` (a typed status: absent fields are left as they are) into the status
    /// of the `K` named `name` in the install namespace, as this server's field manager: how
    /// every controller records what it did.
    pub async fn patch_status<K>(&self, name: &str, status: impl serde::Serialize) -> Result<()>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.patch_status_clearing::<K>(name, status, &[]).await
    }

    /// As [`Context::patch_status`], and removes the status fields named in `clear` (a merge
    /// patch's `null`): how a status drops what no longer holds, such as a location's message
    /// once it is available again.
    pub async fn patch_status_clearing<K>(
        &self,
        name: &str,
        status: impl serde::Serialize,
        clear: &[&str],
    ) -> Result<()>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let patch = status_patch(status, clear);
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        api.patch_status(
            name,
            &kube::api::PatchParams::apply(MANAGER),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    /// Opens a storage location with its credentials (the location's `credential` Secret key,
    /// else the server's credentials file or environment).
    pub async fn open_location(
        &self,
        bsl: &BackupStorageLocation,
    ) -> std::result::Result<LocationStore, OpenLocationError> {
        let credential = match &bsl.spec.credential {
            Some(sel) => Some(
                self.secret_key(&sel.name, &sel.key)
                    .await
                    .map_err(OpenLocationError::Credential)?,
            ),
            None => None,
        };
        Ok(LocationStore::open(&bsl.spec, credential.as_deref())?)
    }

    /// The bytes of `key` in the Secret `name` of the server's namespace.
    pub async fn secret_key(&self, name: &str, key: &str) -> Result<Vec<u8>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let missing = || Error::SecretKey {
            namespace: self.namespace.clone(),
            name: name.to_string(),
            key: key.to_string(),
        };
        let secret = api.get_opt(name).await?.ok_or_else(missing)?;
        if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
            return Ok(v.0.clone());
        }
        if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
            return Ok(v.clone().into_bytes());
        }
        Err(missing())
    }
}

/// The merge patch that writes `status` (its absent fields left alone) and removes the status
/// fields named in `clear`.
fn status_patch(
    status: impl serde::Serialize,
    clear: &[&str],
) -> operation::StatusPatch<serde_json::Value> {
    let mut status = serde_json::to_value(status)
        .expect("status types have string keys and no maps of other keys");
    if let Some(fields) = status.as_object_mut() {
        for field in clear {
            fields.insert((*field).to_owned(), serde_json::Value::Null);
        }
    }
    operation::StatusPatch { status }
}

/// Why a storage location cannot be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenLocationError {
    #[error("credential")]
    Credential(#[source] Error),
    #[error(transparent)]
    Settings(#[from] crate::storage::SettingsError),
}

/// The object behind `lenient`, or, when it cannot be read, the note that says why, once it
/// has been said: a warning in the log and a Warning Event on the object naming the field.
/// Such an object is left to be fixed; [`operation::claim`] also ends a Backup or Restore that
/// has not started (FailedValidation with the note), so that it does not wait for ever.
pub(crate) async fn readable<K>(
    ctx: &Context,
    lenient: &Lenient<K>,
) -> std::result::Result<std::sync::Arc<K>, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    use kube::{Resource as _, ResourceExt as _};
    let why = match &lenient.object {
        Ok(object) => return Ok(std::sync::Arc::new(object.clone())),
        Err(why) => why,
    };
    let kind = K::kind(&());
    let name = lenient.name_any();
    let note = format!(
        "this {kind} cannot be read: {why}; correct the field or delete the object (the others are not affected)"
    );
    tracing::warn!(kind = %kind, object = %name, "{note}");
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: "Malformed".into(),
        note: Some(note.clone()),
        action: "Read".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &lenient.object_ref(&())).await {
        tracing::debug!(object = %name, "cannot publish an event: {e}");
    }
    Err(note)
}

/// The operations (backups, restores) this process is running, by UID: one found InProgress
/// that is not among them was left by a server that stopped.
#[derive(Debug, Default)]
pub(crate) struct Running {
    uids: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Running {
    /// Records `uid` as running; false when it already was.
    pub fn start(&self, uid: &str) -> bool {
        self.lock().insert(uid.to_owned())
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.lock().contains(uid)
    }

    pub fn end(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.uids.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Item counts of a running operation: (total, done).
pub(crate) type ItemProgress = std::sync::Arc<(
    std::sync::atomic::AtomicUsize,
    std::sync::atomic::AtomicUsize,
)>;

/// Writes `progress` into the status of the `K` named `name` at most once a second, when it
/// changed, from a task of its own so the operation never waits on the API server for it.
/// Abort the handle when done.
pub(crate) fn report_progress<K>(
    ctx: &Context,
    name: &str,
    progress: ItemProgress,
) -> tokio::task::JoinHandle<()>
where
    K: operation::Operation + Send + 'static,
    K::Status: Send + Sync,
{
    use std::sync::atomic::Ordering;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let name = name.to_owned();
    tokio::spawn(async move {
        let mut last = (usize::MAX, usize::MAX);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = (
                progress.0.load(Ordering::Relaxed),
                progress.1.load(Ordering::Relaxed),
            );
            if now == last {
                continue;
            }
            last = now;
            let patch = operation::StatusPatch {
                status: K::progress(now.0, now.1),
            };
            if let Err(e) = api
                .patch_status(
                    &name,
                    &kube::api::PatchParams::apply(MANAGER),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
            {
                tracing::debug!(object = %name, "cannot record progress: {e}");
            }
        }
    })
}

/// Drives a controller's reconcile stream to its end, logging the failures (the error policy
/// has already counted and reported them).
pub(crate) async fn log_reconciles<S, T, E>(controller: &'static str, stream: S)
where
    S: futures::Stream<Item = std::result::Result<T, E>>,
    E: std::error::Error + 'static,
{
    use futures::StreamExt as _;
    stream
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(controller, "{}", chain(&e));
            }
        })
        .await;
}

/// When a failed reconcile is tried again: soon when the failure may pass (the API server
/// restarting, a conflict), later when it needs a change first.
pub(crate) fn retry_after(error: &Error) -> kube::runtime::controller::Action {
    kube::runtime::controller::Action::requeue(if error.is_retryable() {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(60)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::{BackupStorageLocationStatus, LocationPhase};

    #[test]
    fn a_status_patch_writes_what_is_set_and_removes_what_is_cleared() {
        let status = BackupStorageLocationStatus {
            phase: Some(LocationPhase::Available),
            ..BackupStorageLocationStatus::default()
        };
        let patch = serde_json::to_value(status_patch(&status, &["message"])).expect("json");
        assert_eq!(
            patch,
            json!({"status": {"phase": "Available", "message": null}})
        );
        let patch = serde_json::to_value(status_patch(&status, &[])).expect("json");
        assert_eq!(patch, json!({"status": {"phase": "Available"}}));
    }
}
