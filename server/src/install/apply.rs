//! Applying rendered objects to a cluster, waiting for the pods, and uninstalling.
//!
//! Each object is created; when it exists already, what install owns (CRDs, the namespace's
//! labels, service accounts, RBAC, the Service, the Deployment, the DaemonSet) is brought to the
//! rendered state by server-side apply with field manager [`FIELD_MANAGER`], forcing ownership,
//! and what holds keys or user data (Secrets, locations) is kept untouched: an existing
//! repository password encrypts repositories, an existing CA signs certificates running agents
//! hold, and a location may have been edited by its user.
//!
//! Objects go through `Api<DynamicObject>` with the [`ApiResource`] of their kind, taken from
//! the typed k8s-openapi (and `velero.io/v1`) kinds install renders, so plural names are never
//! spelled by hand. After the CRDs, nothing of theirs is applied until discovery serves them.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::{Client, Resource as _};
use tokio::time::Instant;

use super::*;
use crate::api::{BackupStorageLocation, VolumeSnapshotLocation};
use crate::pki;

/// How long the API server may take to serve new CRDs (it usually takes a second or two).
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `--wait` waits for the server and agents to be ready (image pulls included).
pub const READY_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How often discovery and readiness are polled.
const POLL: Duration = Duration::from_secs(1);

/// What went wrong applying or removing an install.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rendered object has a kind this module has no API resource for (a bug in render).
    #[error("{api_version} {kind} is not a kind install applies")]
    UnknownKind {
        /// The object's apiVersion.
        api_version: String,
        /// The object's kind.
        kind: String,
    },
    /// A rendered object is not a Kubernetes object (a bug in render).
    #[error("a rendered object is not a Kubernetes object")]
    Malformed(#[source] serde_json::Error),
    /// The API server refused or failed a request about one object.
    #[error("cannot {action} {kind}/{name}")]
    Request {
        /// "create", "update", "read", "delete".
        action: &'static str,
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The API server did not answer discovery.
    #[error("cannot read the API server's discovery of {group_version}")]
    Discovery {
        /// `velero.io/v1`.
        group_version: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The CRDs were created but not served in time.
    #[error("the API server did not serve {group_version} {missing} within {}s of creating its CRDs", timeout.as_secs())]
    NotServed {
        /// `velero.io/v1`.
        group_version: String,
        /// The resources still missing, comma-separated.
        missing: String,
        /// How long was waited.
        timeout: Duration,
    },
    /// The pods were not ready in time.
    #[error("{what} was not ready within {}s", timeout.as_secs())]
    NotReady {
        /// What was waited for.
        what: String,
        /// How long was waited.
        timeout: Duration,
    },
    /// Objects were still there after uninstall waited.
    #[error("{what} was still there {}s after uninstall deleted it", timeout.as_secs())]
    NotGone {
        /// What is still there.
        what: String,
        /// How long was waited.
        timeout: Duration,
    },
    /// The Secret `lifeboat-ca` exists but cannot issue certificates.
    #[error("the Secret {namespace}/{CA_SECRET} holds no usable CA; delete it to make a new one")]
    ExistingCa {
        /// The install's namespace.
        namespace: String,
        #[source]
        source: pki::Error,
    },
    /// The Secret `lifeboat-ca` lacks `tls.crt` or `tls.key`.
    #[error("the Secret {namespace}/{CA_SECRET} has no {key}; delete it to make a new CA")]
    ExistingCaIncomplete {
        /// The install's namespace.
        namespace: String,
        /// The missing key.
        key: &'static str,
    },
}

impl Error {
    /// Whether trying again may succeed: timeouts and the API server's transient failures.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::NotServed { .. } | Self::NotReady { .. } | Self::NotGone { .. } => true,
            Self::Request { source, .. } | Self::Discovery { source, .. } => {
                match source.as_ref() {
                    kube::Error::Api(status) => {
                        status.code == 429 || status.code >= 500 || status.is_conflict()
                    }
                    kube::Error::HyperError(_) | kube::Error::Service(_) => true,
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

/// The result of this module's functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist and was created.
    Created,
    /// It existed and install owns it: brought to the rendered state.
    Updated,
    /// It existed and holds keys or user data: left as it was.
    Kept,
    /// It was deleted (uninstall).
    Deleted,
    /// It was not there (uninstall).
    Missing,
    /// It was left in place on purpose (uninstall: a namespace install did not create).
    Spared,
}

/// One line of progress: an object and what happened to it, or what is being waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// `Kind/name: outcome`.
    Object {
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
        /// What happened.
        outcome: Outcome,
    },
    /// A wait started.
    Waiting(String),
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Object {
                kind,
                name,
                outcome,
            } => {
                let said = match outcome {
                    Outcome::Created => "created",
                    Outcome::Updated => "already exists, updated",
                    Outcome::Kept => "already exists, kept",
                    Outcome::Deleted => "deleted",
                    Outcome::Missing => "not found",
                    Outcome::Spared => "kept (it does not carry the label component=velero)",
                };
                write!(f, "{kind}/{name}: {said}")
            }
            Self::Waiting(what) => write!(f, "Waiting for {what}..."),
        }
    }
}

/// The API resource of each kind install renders, and whether install owns it (updates it
/// when it exists) rather than keeping an existing one.
fn resource_of(api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
    fn erase<K: kube::Resource<DynamicType = ()>>() -> ApiResource {
        ApiResource::erase::<K>(&())
    }
    let resource = match kind {
        "Namespace" => (erase::<Namespace>(), true),
        "CustomResourceDefinition" => (erase::<CustomResourceDefinition>(), true),
        "ServiceAccount" => (erase::<ServiceAccount>(), true),
        "ClusterRoleBinding" => (erase::<ClusterRoleBinding>(), true),
        "Service" => (erase::<Service>(), true),
        "Deployment" => (erase::<Deployment>(), true),
        "DaemonSet" => (erase::<DaemonSet>(), true),
        "Secret" => (erase::<Secret>(), false),
        "BackupStorageLocation" => (erase::<BackupStorageLocation>(), false),
        "VolumeSnapshotLocation" => (erase::<VolumeSnapshotLocation>(), false),
        _ => return None,
    };
    (resource.0.api_version == api_version).then_some(resource)
}

fn dynamic_api(
    client: &Client,
    resource: &ApiResource,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// The CA of an earlier install in `namespace`, from its Secret `lifeboat-ca`; `None` when
/// there is none (or no namespace yet).
pub async fn existing_authority(
    client: &Client,
    namespace: &str,
) -> Result<Option<pki::Authority>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get_opt(CA_SECRET)
        .await
        .map_err(|source| Error::Request {
            action: "read",
            kind: "Secret".into(),
            name: CA_SECRET.into(),
            source: Box::new(source),
        })?;
    let Some(secret) = secret else {
        return Ok(None);
    };
    let data = secret.data.unwrap_or_default();
    let text = |key: &'static str| {
        data.get(key)
            .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
            .ok_or_else(|| Error::ExistingCaIncomplete {
                namespace: namespace.to_string(),
                key,
            })
    };
    let authority = pki::Authority::from_pem(&text(pki::CERT_FILE)?, &text(pki::KEY_FILE)?)
        .map_err(|source| Error::ExistingCa {
            namespace: namespace.to_string(),
            source,
        })?;
    Ok(Some(authority))
}

/// A rendered object, its API resource, and whether install owns it (see [`resource_of`]).
fn rendered(value: &serde_json::Value) -> Result<(DynamicObject, ApiResource, bool)> {
    let object: DynamicObject = serde_json::from_value(value.clone()).map_err(Error::Malformed)?;
    let types = object.types.clone().unwrap_or_default();
    let Some((resource, owned)) = resource_of(&types.api_version, &types.kind) else {
        return Err(Error::UnknownKind {
            api_version: types.api_version,
            kind: types.kind,
        });
    };
    Ok((object, resource, owned))
}

/// The objects among `objects` (as [`render`] returns them) that [`apply`] would keep as they
/// are because they exist already and hold keys or user data (Secrets, locations), as
/// `(kind, name)`: what a dry run must leave out, so that applying its output elsewhere
/// (`kubectl apply`) can never replace a repository password, a CA or a location.
pub async fn kept(client: &Client, objects: &[serde_json::Value]) -> Result<Vec<(String, String)>> {
    let mut kept = Vec::new();
    for value in objects {
        let (object, resource, owned) = rendered(value)?;
        if owned {
            continue;
        }
        let name = object.metadata.name.clone().unwrap_or_default();
        let api = dynamic_api(client, &resource, object.metadata.namespace.as_deref());
        match api.get_opt(&name).await {
            Ok(Some(_)) => kept.push((resource.kind.clone(), name)),
            Ok(None) => {}
            // The kind is not served yet (its CRD is not installed): nothing of it exists.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Request {
                    action: "read",
                    kind: resource.kind.clone(),
                    name,
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(kept)
}

/// Applies `objects` (as [`render`] returns them) in order, telling `progress` about each.
///
/// Idempotent: a second run updates what install owns and keeps the rest. After the last of a
/// run of CRDs, waits up to [`DISCOVERY_TIMEOUT`] until the API server serves them.
pub async fn apply(
    client: &Client,
    objects: &[serde_json::Value],
    mut progress: impl FnMut(&Progress),
) -> Result<()> {
    // CRDs applied whose resources must be served before anything else goes on.
    let mut unserved: Vec<(String, String)> = Vec::new();
    for value in objects {
        let (object, resource, owned) = rendered(value)?;
        if resource.kind != "CustomResourceDefinition" && !unserved.is_empty() {
            wait_served(client, std::mem::take(&mut unserved), &mut progress).await?;
        }
        let name = object.metadata.name.clone().unwrap_or_default();
        let api = dynamic_api(client, &resource, object.metadata.namespace.as_deref());
        let request_error = |action, source| Error::Request {
            action,
            kind: resource.kind.clone(),
            name: name.clone(),
            source: Box::new(source),
        };
        let outcome = match api.create(&PostParams::default(), &object).await {
            Ok(_) => Outcome::Created,
            Err(kube::Error::Api(status)) if status.is_already_exists() || status.code == 409 => {
                if owned {
                    let params = PatchParams::apply(FIELD_MANAGER).force();
                    api.patch(&name, &params, &Patch::Apply(&object))
                        .await
                        .map_err(|e| request_error("update", e))?;
                    Outcome::Updated
                } else {
                    Outcome::Kept
                }
            }
            Err(e) => return Err(request_error("create", e)),
        };
        if resource.kind == "CustomResourceDefinition" {
            unserved.push(served_as(value));
        }
        progress(&Progress::Object {
            kind: resource.kind.clone(),
            name,
            outcome,
        });
    }
    if !unserved.is_empty() {
        wait_served(client, unserved, &mut progress).await?;
    }
    Ok(())
}

/// The group/version and plural a CRD makes the API server serve.
fn served_as(crd: &serde_json::Value) -> (String, String) {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let version = spec["versions"][0]["name"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    (format!("{group}/{version}"), plural.to_string())
}

/// Waits until discovery lists every `(group/version, plural)`.
async fn wait_served(
    client: &Client,
    mut wanted: Vec<(String, String)>,
    progress: &mut impl FnMut(&Progress),
) -> Result<()> {
    wanted.sort();
    wanted.dedup();
    let mut group_versions: Vec<String> = wanted.iter().map(|(gv, _)| gv.clone()).collect();
    group_versions.dedup();
    progress(&Progress::Waiting(format!(
        "the API server to serve {}",
        group_versions.join(", ")
    )));
    let deadline = Instant::now() + DISCOVERY_TIMEOUT;
    loop {
        let mut missing = Vec::new();
        for group_version in &group_versions {
            let served: Vec<String> = match client.list_api_group_resources(group_version).await {
                Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
                // Not served yet: the group appears with its first CRD.
                Err(kube::Error::Api(status)) if status.is_not_found() => Vec::new(),
                Err(source) => {
                    return Err(Error::Discovery {
                        group_version: group_version.clone(),
                        source: Box::new(source),
                    });
                }
            };
            missing.extend(
                wanted
                    .iter()
                    .filter(|(gv, plural)| gv == group_version && !served.contains(plural))
                    .map(|(_, plural)| plural.clone()),
            );
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::NotServed {
                group_version: group_versions.join(", "),
                missing: missing.join(", "),
                timeout: DISCOVERY_TIMEOUT,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits up to [`READY_TIMEOUT`] until the server Deployment has an available replica and,
/// with `agents`, every scheduled agent pod is ready.
pub async fn wait_ready(
    client: &Client,
    namespace: &str,
    agents: bool,
    mut progress: impl FnMut(&Progress),
) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    progress(&Progress::Waiting(format!(
        "Deployment/{DEPLOYMENT} to have an available replica"
    )));
    poll_until(deadline, &format!("Deployment/{DEPLOYMENT}"), || async {
        let deployment = read(&deployments, DEPLOYMENT).await?;
        Ok(deployment_ready(&deployment))
    })
    .await?;
    if agents {
        let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
        progress(&Progress::Waiting(format!(
            "DaemonSet/{DAEMONSET} to have every scheduled pod ready"
        )));
        poll_until(deadline, &format!("DaemonSet/{DAEMONSET}"), || async {
            let daemon_set = read(&daemon_sets, DAEMONSET).await?;
            Ok(daemon_set_ready(&daemon_set))
        })
        .await?;
    }
    Ok(())
}

async fn read<K>(api: &Api<K>, name: &str) -> Result<Option<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + fmt::Debug,
{
    api.get_opt(name).await.map_err(|source| Error::Request {
        action: "read",
        kind: K::kind(&()).into_owned(),
        name: name.to_string(),
        source: Box::new(source),
    })
}

async fn poll_until<F, Fut>(deadline: Instant, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::NotReady {
                what: what.to_string(),
                timeout: READY_TIMEOUT,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// At least one available replica of the current generation.
fn deployment_ready(deployment: &Option<Deployment>) -> bool {
    let Some(deployment) = deployment else {
        return false;
    };
    let Some(status) = &deployment.status else {
        return false;
    };
    observed(deployment.metadata.generation, status.observed_generation)
        && status.available_replicas.unwrap_or(0) >= 1
}

/// Every pod the DaemonSet schedules is ready (also when it schedules none: a cluster whose
/// nodes all refuse it), once the controller has looked at the current generation.
fn daemon_set_ready(daemon_set: &Option<DaemonSet>) -> bool {
    let Some(daemon_set) = daemon_set else {
        return false;
    };
    let Some(status) = &daemon_set.status else {
        return false;
    };
    observed(daemon_set.metadata.generation, status.observed_generation)
        && status.number_ready == status.desired_number_scheduled
}

/// Whether the controller's status speaks of the current spec (when both sides say).
fn observed(generation: Option<i64>, observed: Option<i64>) -> bool {
    match (generation, observed) {
        (Some(generation), Some(observed)) => observed >= generation,
        _ => true,
    }
}

/// What install creates, by name, in the order uninstall deletes it: the pods' owners first so
/// nothing restarts while their Secrets go, the namespace and the CRDs last.
fn installed(namespace: &str) -> Vec<(ApiResource, Option<&str>, String)> {
    fn erase<K: kube::Resource<DynamicType = ()>>() -> ApiResource {
        ApiResource::erase::<K>(&())
    }
    let ns = Some(namespace);
    let mut out = vec![
        (erase::<Deployment>(), ns, DEPLOYMENT.to_string()),
        (erase::<DaemonSet>(), ns, DAEMONSET.to_string()),
        (erase::<Service>(), ns, SERVICE.to_string()),
        (
            erase::<BackupStorageLocation>(),
            ns,
            LOCATION_NAME.to_string(),
        ),
        (
            erase::<VolumeSnapshotLocation>(),
            ns,
            LOCATION_NAME.to_string(),
        ),
    ];
    for secret in [
        CREDENTIALS_SECRET,
        REPOSITORY_SECRET,
        SERVER_TLS_SECRET,
        AGENT_TLS_SECRET,
        CA_SECRET,
    ] {
        out.push((erase::<Secret>(), ns, secret.to_string()));
    }
    for account in [SERVER_ACCOUNT, AGENT_ACCOUNT] {
        out.push((erase::<ServiceAccount>(), ns, account.to_string()));
    }
    out.push((
        erase::<ClusterRoleBinding>(),
        None,
        cluster_role_binding_name(namespace),
    ));
    out
}

/// Deletes what install creates in `namespace`: the Deployment, DaemonSet, Service, locations
/// `default`, Secrets and service accounts by name, the ClusterRoleBinding, the namespace (when
/// it carries install's label `component: velero`), then the `velero.io` CRDs, which takes
/// every object of theirs with them. Objects already gone are fine: uninstall is idempotent.
pub async fn uninstall(
    client: &Client,
    namespace: &str,
    mut progress: impl FnMut(&Progress),
) -> Result<()> {
    let params = DeleteParams::background();
    for (resource, ns, name) in installed(namespace) {
        let outcome = delete(client, &resource, ns, &name, &params).await?;
        progress(&Progress::Object {
            kind: resource.kind.clone(),
            name,
            outcome,
        });
    }

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let existing = namespaces
        .get_opt(namespace)
        .await
        .map_err(|source| Error::Request {
            action: "read",
            kind: "Namespace".into(),
            name: namespace.into(),
            source: Box::new(source),
        })?;
    let outcome = match existing {
        None => Outcome::Missing,
        Some(ns) if !carries_component_label(&ns.metadata.labels) => Outcome::Spared,
        Some(_) => {
            delete(
                client,
                &ApiResource::erase::<Namespace>(&()),
                None,
                namespace,
                &params,
            )
            .await?
        }
    };
    progress(&Progress::Object {
        kind: "Namespace".into(),
        name: namespace.into(),
        outcome,
    });

    let crd = ApiResource::erase::<CustomResourceDefinition>(&());
    for definition in crate::api::crds() {
        let name = definition.meta().name.clone().unwrap_or_default();
        let outcome = delete(client, &crd, None, &name, &params).await?;
        progress(&Progress::Object {
            kind: crd.kind.clone(),
            name,
            outcome,
        });
    }
    Ok(())
}

fn carries_component_label(labels: &Option<std::collections::BTreeMap<String, String>>) -> bool {
    let (key, value) = COMPONENT_LABEL;
    labels
        .as_ref()
        .and_then(|l| l.get(key))
        .is_some_and(|v| v == value)
}

async fn delete(
    client: &Client,
    resource: &ApiResource,
    namespace: Option<&str>,
    name: &str,
    params: &DeleteParams,
) -> Result<Outcome> {
    let api = dynamic_api(client, resource, namespace);
    match api.delete(name, params).await {
        Ok(_) => Ok(Outcome::Deleted),
        // Gone already, or its kind is not served (the CRDs went first in an earlier run).
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(Outcome::Missing),
        Err(source) => Err(Error::Request {
            action: "delete",
            kind: resource.kind.clone(),
            name: name.to_string(),
            source: Box::new(source),
        }),
    }
}

/// Waits up to [`READY_TIMEOUT`] until the namespace (when uninstall deleted it) and the CRDs
/// are gone: their finalizers delete what they hold first.
pub async fn wait_uninstalled(
    client: &Client,
    namespace: &str,
    namespace_deleted: bool,
    mut progress: impl FnMut(&Progress),
) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut pending: Vec<(ApiResource, String)> = Vec::new();
    if namespace_deleted {
        pending.push((ApiResource::erase::<Namespace>(&()), namespace.to_string()));
    }
    let crd = ApiResource::erase::<CustomResourceDefinition>(&());
    for definition in crate::api::crds() {
        pending.push((
            crd.clone(),
            definition.meta().name.clone().unwrap_or_default(),
        ));
    }
    progress(&Progress::Waiting(
        "the namespace and the CRDs to be deleted".into(),
    ));
    loop {
        let mut still = Vec::new();
        for (resource, name) in pending {
            let api = dynamic_api(client, &resource, None);
            let found = api.get_opt(&name).await.map_err(|source| Error::Request {
                action: "read",
                kind: resource.kind.clone(),
                name: name.clone(),
                source: Box::new(source),
            })?;
            if found.is_some() {
                still.push((resource, name));
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let what = still
                .iter()
                .map(|(r, n)| format!("{}/{n}", r.kind))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::NotGone {
                what,
                timeout: READY_TIMEOUT,
            });
        }
        pending = still;
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rendered_kind_has_an_api_resource_with_its_plural() {
        let (deployment, owned) = resource_of("apps/v1", "Deployment").expect("deployment");
        assert_eq!(deployment.plural, "deployments");
        assert!(owned);
        let (bsl, owned) = resource_of("velero.io/v1", "BackupStorageLocation").expect("location");
        assert_eq!(bsl.plural, "backupstoragelocations");
        assert!(!owned, "a location the user edited is kept");
        let (secret, owned) = resource_of("v1", "Secret").expect("secret");
        assert_eq!(secret.plural, "secrets");
        assert!(!owned, "a Secret holding keys is kept");
        let (crd, _) =
            resource_of("apiextensions.k8s.io/v1", "CustomResourceDefinition").expect("crd");
        assert_eq!(crd.plural, "customresourcedefinitions");
        assert!(
            resource_of("apps/v1beta1", "Deployment").is_none(),
            "a kind at another version is not mistaken for ours"
        );
        assert!(resource_of("v1", "ConfigMap").is_none());
    }

    #[test]
    fn progress_lines_read_as_velero_prints_them() {
        let line = Progress::Object {
            kind: "CustomResourceDefinition".into(),
            name: "backups.velero.io".into(),
            outcome: Outcome::Created,
        };
        assert_eq!(
            line.to_string(),
            "CustomResourceDefinition/backups.velero.io: created"
        );
        let kept = Progress::Object {
            kind: "Secret".into(),
            name: REPOSITORY_SECRET.into(),
            outcome: Outcome::Kept,
        };
        assert_eq!(
            kept.to_string(),
            "Secret/velero-restic-credentials: already exists, kept"
        );
    }

    #[test]
    fn readiness_needs_a_status_of_the_current_generation() {
        let mut deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "velero", "generation": 2},
            "status": {"observedGeneration": 1, "availableReplicas": 1}
        }))
        .unwrap();
        assert!(!deployment_ready(&Some(deployment.clone())), "stale status");
        deployment.status.as_mut().unwrap().observed_generation = Some(2);
        assert!(deployment_ready(&Some(deployment.clone())));
        deployment.status.as_mut().unwrap().available_replicas = Some(0);
        assert!(!deployment_ready(&Some(deployment)));
        assert!(!deployment_ready(&None));

        let ds = |ready: i32, desired: i32| -> Option<DaemonSet> {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "restic"},
                "status": {"numberReady": ready, "desiredNumberScheduled": desired,
                           "currentNumberScheduled": desired, "numberMisscheduled": 0}
            }))
            .unwrap()
        };
        assert!(daemon_set_ready(&ds(3, 3)));
        assert!(!daemon_set_ready(&ds(2, 3)));
        assert!(daemon_set_ready(&ds(0, 0)), "no node schedules an agent");
        let no_status: DaemonSet =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "restic"}})).unwrap();
        assert!(!daemon_set_ready(&Some(no_status)));
    }

    #[test]
    fn uninstall_deletes_what_render_creates() {
        let tls = pki::Bundle::generate("backup").unwrap();
        let mut options = InstallOptions::new("backup", tls);
        options.use_restic = true;
        options.credentials = Some(b"[default]\n".to_vec());
        options.backup_location = Some(BackupLocationOptions {
            provider: "aws".into(),
            bucket: "b".into(),
            ..Default::default()
        });
        options.snapshot_location = Some(SnapshotLocationOptions {
            provider: "aws".into(),
            ..Default::default()
        });
        let deleted: Vec<(String, String)> = installed("backup")
            .into_iter()
            .map(|(r, _, name)| (r.kind, name))
            .collect();
        for object in render(&options) {
            let kind = object["kind"].as_str().unwrap().to_string();
            let name = object["metadata"]["name"].as_str().unwrap().to_string();
            if kind == "Namespace" || kind == "CustomResourceDefinition" {
                continue; // deleted after the rest, by uninstall itself
            }
            assert!(
                deleted.contains(&(kind.clone(), name.clone())),
                "uninstall forgets {kind}/{name}"
            );
        }
    }
}
