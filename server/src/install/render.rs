//! The objects of an install, rendered from [`InstallOptions`] as typed objects and serialised.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    HostPathVolumeSource, Namespace, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ProjectedVolumeSource, ResourceRequirements, Secret,
    SecretVolumeSource, Service, ServiceAccount, ServiceAccountTokenProjection, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rand::RngCore as _;
use serde::Serialize;

use super::*;
use crate::api::{
    BackupStorageLocation, BackupStorageLocationSpec, ObjectStorageLocation,
    VolumeSnapshotLocation, VolumeSnapshotLocationSpec,
};
use crate::pki;

/// Everything that decides what an install renders.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The namespace of every namespaced object (Velero's default: `velero`).
    pub namespace: String,
    /// The image of both the server and the agents (default: [`default_image`]).
    pub image: String,
    /// The BackupStorageLocation `default`; none with `--no-default-backup-location`.
    pub backup_location: Option<BackupLocationOptions>,
    /// The VolumeSnapshotLocation `default`, when asked for.
    pub snapshot_location: Option<SnapshotLocationOptions>,
    /// The contents of `--secret-file`, for the Secret `cloud-credentials`; none with
    /// `--no-secret`.
    pub credentials: Option<Vec<u8>>,
    /// Whether to run the agent DaemonSet (`--use-restic`, `--use-node-agent`).
    pub use_restic: bool,
    /// Whether the server backs up every pod volume unless excluded (`--default-volumes-to-restic`).
    pub default_volumes_to_restic: bool,
    /// How often the server prunes repositories by default (`--default-restic-prune-frequency`).
    pub default_restic_prune_frequency: Option<String>,
    /// The server pod's requests and limits.
    pub server_resources: PodResources,
    /// An agent pod's requests and limits.
    pub agent_resources: PodResources,
    /// Server-side feature flags, passed to both the server and the agents.
    pub features: Vec<String>,
    /// Labels added to both pod templates (install's own labels win a clash, as the selectors
    /// depend on them).
    pub pod_labels: BTreeMap<String, String>,
    /// Annotations added to both pod templates (the user's win a clash, as in Velero).
    pub pod_annotations: BTreeMap<String, String>,
    /// Render the CRDs only.
    pub crds_only: bool,
    /// The certificates of the server, the agents and their CA (issued for [`Self::namespace`]).
    pub tls: pki::Bundle,
}

impl InstallOptions {
    /// Velero's defaults in `namespace` with `tls`: the default image and resources, no
    /// locations, no credentials, no agents.
    pub fn new(namespace: impl Into<String>, tls: pki::Bundle) -> Self {
        Self {
            namespace: namespace.into(),
            image: default_image(),
            backup_location: None,
            snapshot_location: None,
            credentials: None,
            use_restic: false,
            default_volumes_to_restic: false,
            default_restic_prune_frequency: None,
            server_resources: PodResources::server_default(),
            agent_resources: PodResources::agent_default(),
            features: Vec::new(),
            pod_labels: BTreeMap::new(),
            pod_annotations: BTreeMap::new(),
            crds_only: false,
            tls,
        }
    }
}

/// The BackupStorageLocation `default`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupLocationOptions {
    /// `aws`, `gcp`, `azure`, ….
    pub provider: String,
    /// The bucket (or container).
    pub bucket: String,
    /// The prefix within the bucket; empty for the bucket's root.
    pub prefix: String,
    /// Provider settings from `--backup-location-config`.
    pub config: BTreeMap<String, String>,
    /// The `--cacert` bundle (PEM) for an endpoint with a private CA.
    pub ca_cert: Option<Vec<u8>>,
}

/// The VolumeSnapshotLocation `default`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotLocationOptions {
    /// The provider (`--provider`).
    pub provider: String,
    /// Provider settings from `--snapshot-location-config`.
    pub config: BTreeMap<String, String>,
}

/// A pod's CPU and memory requests and limits, as Kubernetes quantities. An empty value or
/// `0` leaves that request or limit unset (no bound), as Velero does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodResources {
    /// CPU request (`500m`).
    pub cpu_request: String,
    /// Memory request (`128Mi`).
    pub memory_request: String,
    /// CPU limit (`1000m`).
    pub cpu_limit: String,
    /// Memory limit (`512Mi`).
    pub memory_limit: String,
}

impl PodResources {
    /// Velero's defaults for the server: requests 500m CPU and 128Mi; limits 1000m and 512Mi.
    pub fn server_default() -> Self {
        Self::of("500m", "128Mi", "1000m", "512Mi")
    }

    /// Velero's defaults for the restic (node-agent) pods: requests 500m CPU and 512Mi;
    /// limits 1000m and 1Gi.
    pub fn agent_default() -> Self {
        Self::of("500m", "512Mi", "1000m", "1Gi")
    }

    fn of(cpu_request: &str, memory_request: &str, cpu_limit: &str, memory_limit: &str) -> Self {
        Self {
            cpu_request: cpu_request.to_string(),
            memory_request: memory_request.to_string(),
            cpu_limit: cpu_limit.to_string(),
            memory_limit: memory_limit.to_string(),
        }
    }

    fn requirements(&self) -> ResourceRequirements {
        fn pairs(cpu: &str, memory: &str) -> Option<BTreeMap<String, Quantity>> {
            let map: BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", memory)]
                .into_iter()
                .filter(|(_, v)| !v.is_empty() && *v != "0")
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect();
            (!map.is_empty()).then_some(map)
        }
        ResourceRequirements {
            requests: pairs(&self.cpu_request, &self.memory_request),
            limits: pairs(&self.cpu_limit, &self.memory_limit),
            ..Default::default()
        }
    }
}

/// Whether `text` is a Kubernetes resource quantity (`500m`, `1Gi`, `0.5`, `1e3`), so that a
/// typo is refused before anything is applied rather than by the API server halfway through.
/// Negative quantities are refused: no request or limit can be negative.
pub fn is_quantity(text: &str) -> bool {
    // <digits>[.<digits>] or .<digits>, then one suffix: a binary or decimal SI unit, or an
    // exponent e<signed digits>.
    let text = text.strip_prefix('+').unwrap_or(text);
    let number_end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let mut parts = number.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let fraction = parts.next();
    if whole.is_empty() && fraction.is_none_or(str::is_empty) {
        return false;
    }
    if fraction.is_some_and(|f| f.contains('.')) {
        return false;
    }
    const UNITS: [&str; 14] = [
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    if UNITS.contains(&suffix) {
        return true;
    }
    match suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))
    {
        Some(exponent) => {
            let digits = exponent
                .strip_prefix('+')
                .or_else(|| exponent.strip_prefix('-'))
                .unwrap_or(exponent);
            !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

/// The objects of an install as JSON, in apply order: namespace, CRDs, service accounts, RBAC,
/// Secrets, Service, Deployment, DaemonSet, BackupStorageLocation, VolumeSnapshotLocation.
/// With `crds_only`, the CRDs alone.
///
/// Each call generates a new repository password: an install never uses a fixed default
/// (Velero's `static-passw0rd`, #1053). [`apply`] keeps the Secret of an earlier install.
pub fn render(options: &InstallOptions) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    if !options.crds_only {
        out.push(json(&namespace(options)));
    }
    for mut crd in crate::api::crds() {
        crd.metadata.labels = Some(labels());
        out.push(json(&crd));
    }
    if options.crds_only {
        return out;
    }
    out.push(json(&server_account(options)));
    out.push(json(&agent_account(options)));
    out.push(json(&cluster_role_binding(options)));
    if let Some(credentials) = &options.credentials {
        out.push(json(&secret(
            options,
            CREDENTIALS_SECRET,
            None,
            [(CREDENTIALS_KEY, credentials.clone())],
        )));
    }
    out.push(json(&secret(
        options,
        REPOSITORY_SECRET,
        None,
        [(REPOSITORY_PASSWORD_KEY, repository_password().into_bytes())],
    )));
    let tls = &options.tls;
    for (name, issued) in [
        (SERVER_TLS_SECRET, &tls.server),
        (AGENT_TLS_SECRET, &tls.agent),
        (CA_SECRET, &tls.ca),
    ] {
        let mut secret = secret(
            options,
            name,
            Some("kubernetes.io/tls"),
            [
                (pki::CERT_FILE, issued.cert.clone().into_bytes()),
                (pki::KEY_FILE, issued.key.clone().into_bytes()),
                (pki::CA_FILE, tls.ca.cert.clone().into_bytes()),
            ],
        );
        // The CA's and the agents' keys must never reach the bucket: whoever reads a backup
        // could mint certificates the server trusts. A restored cluster gets new ones from
        // its own install. (The repository password is kept: a restore needs it.)
        secret
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(
                crate::api::labels::EXCLUDE_FROM_BACKUP.into(),
                "true".into(),
            );
        out.push(json(&secret));
    }
    out.push(json(&service(options)));
    out.push(json(&deployment(options)));
    if options.use_restic {
        out.push(json(&daemon_set(options)));
    }
    if let Some(location) = &options.backup_location {
        out.push(json(&backup_location(options, location)));
    }
    if let Some(location) = &options.snapshot_location {
        out.push(json(&snapshot_location(options, location)));
    }
    out
}

/// 32 random bytes from the thread's CSPRNG, as 64 hex digits.
fn repository_password() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn json(object: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(object).expect("Kubernetes objects always serialise to JSON")
}

fn labels() -> BTreeMap<String, String> {
    let (k, v) = COMPONENT_LABEL;
    BTreeMap::from([(k.to_string(), v.to_string())])
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels()),
        ..Default::default()
    }
}

fn namespaced(options: &InstallOptions, name: &str) -> ObjectMeta {
    meta(name, Some(&options.namespace))
}

fn namespace(options: &InstallOptions) -> Namespace {
    let mut metadata = meta(&options.namespace, None);
    // The agents mount a hostPath, which the Pod Security "baseline" and "restricted" levels
    // forbid; Velero labels its namespace the same way.
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert(
            "pod-security.kubernetes.io/enforce".into(),
            "privileged".into(),
        );
        labels.insert(
            "pod-security.kubernetes.io/enforce-version".into(),
            "latest".into(),
        );
    }
    Namespace {
        metadata,
        ..Default::default()
    }
}

fn server_account(options: &InstallOptions) -> ServiceAccount {
    ServiceAccount {
        metadata: namespaced(options, SERVER_ACCOUNT),
        ..Default::default()
    }
}

fn agent_account(options: &InstallOptions) -> ServiceAccount {
    ServiceAccount {
        metadata: namespaced(options, AGENT_ACCOUNT),
        // The agent reads volumes and talks to the server over mutual TLS; it never calls the
        // API server, so it gets no API token to lose (only a token for the server's audience,
        // projected by its DaemonSet, which proves its node).
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

fn cluster_role_binding(options: &InstallOptions) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(&cluster_role_binding_name(&options.namespace), None),
        // Backups read every kind and restores create any kind, including ones not known at
        // install time: Velero binds cluster-admin for the same reason. It also covers what the
        // agents' identity check needs (`create` tokenreviews, `get` pods; see
        // `crate::identity`); a narrower role must keep those two.
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "cluster-admin".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: SERVER_ACCOUNT.into(),
            namespace: Some(options.namespace.clone()),
            ..Default::default()
        }]),
    }
}

fn secret<const N: usize>(
    options: &InstallOptions,
    name: &str,
    type_: Option<&str>,
    data: [(&str, Vec<u8>); N],
) -> Secret {
    Secret {
        metadata: namespaced(options, name),
        type_: Some(type_.unwrap_or("Opaque").to_string()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v)))
                .collect(),
        ),
        ..Default::default()
    }
}

fn service(options: &InstallOptions) -> Service {
    Service {
        metadata: namespaced(options, SERVICE),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("deploy".into(), DEPLOYMENT.into())])),
            ports: Some(vec![ServicePort {
                name: Some("grpc".into()),
                port: GRPC_PORT,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::String("grpc".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The `--features=a,b` argument, when features are given.
/// The agent's `--memory-budget` when its container's memory limit is too small for the
/// default 256Mi: three quarters of the limit (the rest is for what the container is charged
/// besides the agent's own memory: page tables, stacks, kernel buffers). `None`: the default
/// fits, or the limit is unset or written in a form other than whole units (`0.5Gi`).
pub fn agent_memory_budget(memory_limit: &str) -> Option<u64> {
    let limit = lifeboat_repo::parse_size(memory_limit).filter(|&l| l > 0)?;
    let budget = (limit / 4 * 3) >> 20 << 20;
    (budget < 256 << 20).then_some(budget)
}

fn memory_budget_arg(options: &InstallOptions) -> Option<String> {
    agent_memory_budget(&options.agent_resources.memory_limit)
        .map(|b| format!("--memory-budget={}Mi", b >> 20))
}

fn features_arg(options: &InstallOptions) -> Option<String> {
    (!options.features.is_empty()).then(|| format!("--features={}", options.features.join(",")))
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// Every provider's SDK reads the one credentials file from its own variable.
fn credential_env() -> Vec<EnvVar> {
    let file = format!("{CREDENTIALS_DIR}/{CREDENTIALS_KEY}");
    [
        "AWS_SHARED_CREDENTIALS_FILE",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "AZURE_CREDENTIALS_FILE",
    ]
    .into_iter()
    .map(|name| value_env(name, &file))
    .collect()
}

fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// The volumes and mounts both pods share: scratch space, the TLS Secret, and the cloud
/// credentials when installed.
fn common_volumes(options: &InstallOptions, tls_secret: &str) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![empty_dir("scratch"), secret_volume("tls", tls_secret)];
    let mut mounts = vec![
        mount("scratch", "/scratch", false),
        mount("tls", pki::TLS_DIR, true),
    ];
    if options.credentials.is_some() {
        volumes.push(secret_volume(CREDENTIALS_SECRET, CREDENTIALS_SECRET));
        mounts.push(mount(CREDENTIALS_SECRET, CREDENTIALS_DIR, false));
    }
    (volumes, mounts)
}

/// The env both pods share after their own: Velero's scratch variable and the credentials.
fn common_env(options: &InstallOptions) -> Vec<EnvVar> {
    let mut env = vec![value_env("VELERO_SCRATCH_DIR", "/scratch")];
    if options.credentials.is_some() {
        env.extend(credential_env());
    }
    env
}

/// `Always` for a moving `latest` tag, `IfNotPresent` for a version (Kubernetes' own rule).
fn pull_policy(image: &str) -> String {
    let tag = image
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map(|(_, tag)| tag);
    if image.contains('@') || tag.is_some_and(|t| t != "latest") {
        "IfNotPresent".into()
    } else {
        "Always".into()
    }
}

fn pod_metadata(
    options: &InstallOptions,
    own: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> ObjectMeta {
    let mut labels = options.pod_labels.clone();
    labels.extend(own.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut all_annotations: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all_annotations.extend(options.pod_annotations.clone());
    ObjectMeta {
        labels: Some(labels),
        annotations: (!all_annotations.is_empty()).then_some(all_annotations),
        ..Default::default()
    }
}

fn deployment(options: &InstallOptions) -> Deployment {
    let mut args = vec!["server".to_string()];
    args.extend(features_arg(options));
    if options.default_volumes_to_restic {
        args.push("--default-volumes-to-restic".into());
    }
    if let Some(frequency) = &options.default_restic_prune_frequency {
        args.push(format!("--default-restic-prune-frequency={frequency}"));
    }
    // Restored pods' restic-wait init container runs the install's image, not the default.
    if options.image != default_image() {
        args.push(format!("--restore-helper-image={}", options.image));
    }
    let mut env = vec![field_env("VELERO_NAMESPACE", "metadata.namespace")];
    env.extend(common_env(options));
    let (volumes, mounts) = common_volumes(options, SERVER_TLS_SECRET);
    let probe = |path: &str| http_probe(path, "metrics");
    let metrics_port = METRICS_PORT.to_string();
    let container = Container {
        name: DEPLOYMENT.into(),
        image: Some(options.image.clone()),
        image_pull_policy: Some(pull_policy(&options.image)),
        command: Some(vec!["/lifeboat".into()]),
        args: Some(args),
        ports: Some(vec![
            ContainerPort {
                name: Some("metrics".into()),
                container_port: METRICS_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("grpc".into()),
                container_port: GRPC_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        env: Some(env),
        volume_mounts: Some(mounts),
        liveness_probe: Some(probe("/healthz")),
        readiness_probe: Some(probe("/readyz")),
        resources: Some(options.server_resources.requirements()),
        ..Default::default()
    };
    Deployment {
        metadata: namespaced(options, DEPLOYMENT),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("deploy".into(), DEPLOYMENT.into())])),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(pod_metadata(
                    options,
                    &[COMPONENT_LABEL, ("deploy", DEPLOYMENT)],
                    &[
                        ("prometheus.io/scrape", "true"),
                        ("prometheus.io/port", &metrics_port),
                        ("prometheus.io/path", "/metrics"),
                    ],
                )),
                spec: Some(PodSpec {
                    service_account_name: Some(SERVER_ACCOUNT.into()),
                    restart_policy: Some("Always".into()),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The agent pod's volume holding its projected ServiceAccount token.
const AGENT_TOKEN_VOLUME: &str = "lifeboat-token";
/// How long an agent's token lives; the kubelet renews it at 80% of this. An hour is the
/// kubelet's default for projected tokens; the agent reads it afresh for every session.
const AGENT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// An HTTP GET probe of `path` on the container port named `port`.
fn http_probe(path: &str, port: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn daemon_set(options: &InstallOptions) -> DaemonSet {
    let mut args = vec!["agent".to_string()];
    args.extend(features_arg(options));
    args.extend(memory_budget_arg(options));
    let mut env = vec![
        field_env("NODE_NAME", "spec.nodeName"),
        // The agent checks that the host-pods mount holds its own pod's directory.
        field_env("POD_UID", "metadata.uid"),
        field_env("VELERO_NAMESPACE", "metadata.namespace"),
    ];
    env.extend(common_env(options));
    let (mut volumes, mut mounts) = common_volumes(options, AGENT_TLS_SECRET);
    // The token that proves to the server which node this agent runs on: bound to the pod,
    // for the server's audience only (worthless to the API server), rotated by the kubelet.
    volumes.push(Volume {
        name: AGENT_TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(lifeboat_agent::token::AUDIENCE.into()),
                    expiration_seconds: Some(AGENT_TOKEN_EXPIRATION_SECONDS),
                    path: lifeboat_agent::token::TOKEN_FILE_NAME.into(),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    mounts.push(mount(
        AGENT_TOKEN_VOLUME,
        lifeboat_agent::token::TOKEN_DIR,
        true,
    ));
    volumes.insert(
        0,
        Volume {
            name: "host-pods".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/var/lib/kubelet/pods".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    mounts.insert(
        0,
        VolumeMount {
            // HostToContainer: volumes the kubelet mounts after the agent started (every pod
            // scheduled later) appear inside the agent too.
            mount_propagation: Some("HostToContainer".into()),
            ..mount("host-pods", "/host_pods", false)
        },
    );
    let container = Container {
        name: DAEMONSET.into(),
        image: Some(options.image.clone()),
        image_pull_policy: Some(pull_policy(&options.image)),
        command: Some(vec!["/lifeboat".into()]),
        args: Some(args),
        env: Some(env),
        // Ready only with a session and a kubelet pods root (`lifeboat agent`'s /readyz).
        ports: Some(vec![ContainerPort {
            name: Some("health".into()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        liveness_probe: Some(http_probe("/healthz", "health")),
        readiness_probe: Some(http_probe("/readyz", "health")),
        volume_mounts: Some(mounts),
        resources: Some(options.agent_resources.requirements()),
        ..Default::default()
    };
    DaemonSet {
        metadata: namespaced(options, DAEMONSET),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("name".into(), DAEMONSET.into())])),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(pod_metadata(
                    options,
                    &[COMPONENT_LABEL, ("name", DAEMONSET)],
                    &[],
                )),
                spec: Some(PodSpec {
                    service_account_name: Some(AGENT_ACCOUNT.into()),
                    automount_service_account_token: Some(false),
                    // Root reads every file of every volume, whatever its owner and mode.
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(0),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Bytes as the base64 text Kubernetes writes for a `[]byte` field (k8s-openapi's encoding).
fn base64_text(bytes: &[u8]) -> String {
    json(&ByteString(bytes.to_vec()))
        .as_str()
        .expect("a ByteString serialises to a JSON string")
        .to_string()
}

fn backup_location(
    options: &InstallOptions,
    location: &BackupLocationOptions,
) -> BackupStorageLocation {
    let mut bsl = BackupStorageLocation::new(
        LOCATION_NAME,
        BackupStorageLocationSpec {
            provider: location.provider.clone(),
            object_storage: ObjectStorageLocation {
                bucket: location.bucket.clone(),
                prefix: location.prefix.clone(),
                ca_cert: location.ca_cert.as_deref().map(base64_text),
                ..Default::default()
            },
            config: location.config.clone(),
            default: true,
            ..Default::default()
        },
    );
    bsl.metadata = namespaced(options, LOCATION_NAME);
    bsl
}

fn snapshot_location(
    options: &InstallOptions,
    location: &SnapshotLocationOptions,
) -> VolumeSnapshotLocation {
    let mut vsl = VolumeSnapshotLocation::new(
        LOCATION_NAME,
        VolumeSnapshotLocationSpec {
            provider: location.provider.clone(),
            config: location.config.clone(),
            ..Default::default()
        },
    );
    vsl.metadata = namespaced(options, LOCATION_NAME);
    vsl
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn full_options() -> InstallOptions {
        let mut options = InstallOptions::new("backup", pki::Bundle::generate("backup").unwrap());
        options.image = "registry.local/lifeboat:v9".into();
        options.backup_location = Some(BackupLocationOptions {
            provider: "aws".into(),
            bucket: "velero-bucket".into(),
            prefix: "cluster-a".into(),
            config: BTreeMap::from([
                ("region".into(), "minio".into()),
                ("s3Url".into(), "http://minio.minio:9000/a=b".into()),
            ]),
            ca_cert: Some(b"-----BEGIN CERTIFICATE-----\n".to_vec()),
        });
        options.snapshot_location = Some(SnapshotLocationOptions {
            provider: "aws".into(),
            config: BTreeMap::from([("region".into(), "eu-west-1".into())]),
        });
        options.credentials = Some(b"[default]\naws_access_key_id=x\n".to_vec());
        options.use_restic = true;
        options.default_volumes_to_restic = true;
        options.server_resources = PodResources::of("250m", "256Mi", "2", "1Gi");
        options.agent_resources = PodResources::of("100m", "64Mi", "0", "2Gi");
        options.features = vec!["EnableCSI".into(), "Other".into()];
        options.pod_labels = BTreeMap::from([
            ("team".into(), "storage".into()),
            ("deploy".into(), "hijack".into()),
        ]);
        options.pod_annotations = BTreeMap::from([
            ("sidecar.istio.io/inject".into(), "false".into()),
            ("prometheus.io/port".into(), "9999".into()),
        ]);
        options
    }

    fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind}/{name} rendered"))
    }

    fn has(objects: &[Value], kind: &str, name: &str) -> bool {
        objects
            .iter()
            .any(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    fn secret_data(object: &Value) -> BTreeMap<String, Vec<u8>> {
        let secret: Secret = serde_json::from_value(object.clone()).unwrap();
        secret
            .data
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    }

    fn env_names(container: &Value) -> Vec<&str> {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn objects_come_in_apply_order_all_labelled_component_velero() {
        let objects = render(&full_options());
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        let mut order: Vec<&str> = kinds.clone();
        order.dedup();
        assert_eq!(
            order,
            [
                "Namespace",
                "CustomResourceDefinition",
                "ServiceAccount",
                "ClusterRoleBinding",
                "Secret",
                "Service",
                "Deployment",
                "DaemonSet",
                "BackupStorageLocation",
                "VolumeSnapshotLocation"
            ]
        );
        assert_eq!(
            kinds
                .iter()
                .filter(|k| **k == "CustomResourceDefinition")
                .count(),
            crate::api::crds().len()
        );
        for object in &objects {
            assert_eq!(
                object["metadata"]["labels"]["component"], "velero",
                "{}",
                object["metadata"]["name"]
            );
            assert!(object["apiVersion"].is_string() && object["kind"].is_string());
            let cluster_scoped = [
                "Namespace",
                "CustomResourceDefinition",
                "ClusterRoleBinding",
            ]
            .contains(&object["kind"].as_str().unwrap());
            assert_eq!(
                object["metadata"]["namespace"].as_str(),
                (!cluster_scoped).then_some("backup"),
                "{}",
                object["kind"]
            );
        }
    }

    #[test]
    fn features_reach_both_pods_and_default_volumes_the_server() {
        let objects = render(&full_options());
        let server =
            &find(&objects, "Deployment", "velero")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(server["command"], json!(["/lifeboat"]));
        assert_eq!(
            server["args"],
            json!([
                "server",
                "--features=EnableCSI,Other",
                "--default-volumes-to-restic",
                // Not the default image: restored pods' init container runs the install's.
                "--restore-helper-image=registry.local/lifeboat:v9"
            ])
        );
        let agent =
            &find(&objects, "DaemonSet", "restic")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(agent["command"], json!(["/lifeboat"]));
        assert_eq!(
            agent["args"],
            json!(["agent", "--features=EnableCSI,Other"])
        );
        assert_eq!(server["image"], "registry.local/lifeboat:v9");
        assert_eq!(agent["image"], "registry.local/lifeboat:v9");

        let mut plain = full_options();
        plain.features.clear();
        plain.default_volumes_to_restic = false;
        plain.image = default_image();
        let objects = render(&plain);
        let server =
            &find(&objects, "Deployment", "velero")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(server["args"], json!(["server"]));
    }

    #[test]
    fn resources_come_from_the_options_and_zero_means_unbounded() {
        let objects = render(&full_options());
        let server =
            &find(&objects, "Deployment", "velero")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            server["resources"],
            json!({"requests": {"cpu": "250m", "memory": "256Mi"},
                   "limits": {"cpu": "2", "memory": "1Gi"}})
        );
        let agent =
            &find(&objects, "DaemonSet", "restic")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            agent["resources"],
            json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "2Gi"}})
        );

        let defaults = InstallOptions {
            use_restic: true,
            ..InstallOptions::new("velero", full_options().tls)
        };
        let objects = render(&defaults);
        let server =
            &find(&objects, "Deployment", "velero")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            server["resources"],
            json!({"requests": {"cpu": "500m", "memory": "128Mi"},
                   "limits": {"cpu": "1000m", "memory": "512Mi"}})
        );
        let agent =
            &find(&objects, "DaemonSet", "restic")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            agent["resources"],
            json!({"requests": {"cpu": "500m", "memory": "512Mi"},
                   "limits": {"cpu": "1000m", "memory": "1Gi"}})
        );
        assert_eq!(
            server["image"],
            format!("lifeboat/lifeboat:v{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(server["imagePullPolicy"], "IfNotPresent");
    }

    #[test]
    fn the_agent_reads_host_pods_with_host_to_container_propagation_as_root_without_an_api_token() {
        let objects = render(&full_options());
        let ds = find(&objects, "DaemonSet", "restic");
        assert_eq!(
            ds["spec"]["selector"]["matchLabels"],
            json!({"name": "restic"})
        );
        let pod = &ds["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"]["component"], "velero");
        assert_eq!(pod["metadata"]["labels"]["name"], "restic");
        let spec = &pod["spec"];
        assert_eq!(spec["serviceAccountName"], "lifeboat-agent");
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["securityContext"]["runAsUser"], 0);
        let volumes = spec["volumes"].as_array().unwrap();
        let host = volumes.iter().find(|v| v["name"] == "host-pods").unwrap();
        assert_eq!(host["hostPath"]["path"], "/var/lib/kubelet/pods");
        let mounts = spec["containers"][0]["volumeMounts"].as_array().unwrap();
        let host_mount = mounts.iter().find(|m| m["name"] == "host-pods").unwrap();
        assert_eq!(host_mount["mountPath"], "/host_pods");
        assert_eq!(host_mount["mountPropagation"], "HostToContainer");
        let tls = mounts
            .iter()
            .find(|m| m["mountPath"] == "/etc/lifeboat/tls")
            .unwrap();
        assert_eq!(tls["readOnly"], true);
        let tls_volume = volumes.iter().find(|v| v["name"] == tls["name"]).unwrap();
        assert_eq!(tls_volume["secret"]["secretName"], "lifeboat-agent-tls");
        assert!(mounts.iter().any(|m| m["mountPath"] == "/scratch"));
        let env = env_names(&spec["containers"][0]);
        assert!(env.contains(&"NODE_NAME") && env.contains(&"VELERO_NAMESPACE"));
        let node = spec["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "NODE_NAME")
            .unwrap();
        assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
        let uid = spec["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "POD_UID")
            .unwrap();
        assert_eq!(uid["valueFrom"]["fieldRef"]["fieldPath"], "metadata.uid");
        let agent = &spec["containers"][0];
        assert_eq!(agent["ports"][0]["name"], "health");
        assert_eq!(agent["ports"][0]["containerPort"], 8085);
        assert_eq!(agent["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(agent["readinessProbe"]["httpGet"]["port"], "health");
        assert_eq!(agent["livenessProbe"]["httpGet"]["path"], "/healthz");

        let account = find(&objects, "ServiceAccount", "lifeboat-agent");
        assert_eq!(account["automountServiceAccountToken"], false);
        for binding in objects.iter().filter(|o| o["kind"] == "ClusterRoleBinding") {
            assert_eq!(
                binding["subjects"][0]["name"], "velero",
                "the agent has no binding"
            );
        }

        let mut no_agents = full_options();
        no_agents.use_restic = false;
        assert!(!has(&render(&no_agents), "DaemonSet", "restic"));
    }

    #[test]
    fn the_agent_gets_a_projected_token_for_the_lifeboat_audience_read_only_and_no_api_token() {
        let objects = render(&full_options());
        let spec = &find(&objects, "DaemonSet", "restic")["spec"]["template"]["spec"];
        assert_eq!(spec["automountServiceAccountToken"], false);
        let mounts = spec["containers"][0]["volumeMounts"].as_array().unwrap();
        let token_mount = mounts
            .iter()
            .find(|m| m["mountPath"] == "/var/run/secrets/lifeboat")
            .expect("the token is mounted where the agent reads it by default");
        assert_eq!(token_mount["readOnly"], true);
        let volume = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == token_mount["name"])
            .expect("the mount's volume");
        assert_eq!(
            volume["projected"]["sources"],
            json!([{"serviceAccountToken": {
                "audience": "lifeboat",
                "expirationSeconds": 3600,
                "path": "token",
            }}])
        );
        assert_eq!(
            format!("{}/{}", token_mount["mountPath"].as_str().unwrap(), "token"),
            lifeboat_agent::token::DEFAULT_TOKEN_FILE
        );
    }

    #[test]
    fn the_server_deployment_is_velero_s_with_tls_probes_and_a_service() {
        let objects = render(&full_options());
        let deploy = find(&objects, "Deployment", "velero");
        assert_eq!(
            deploy["spec"]["selector"]["matchLabels"],
            json!({"deploy": "velero"})
        );
        let pod = &deploy["spec"]["template"];
        assert_eq!(
            pod["metadata"]["labels"],
            json!({"component": "velero", "deploy": "velero", "team": "storage"}),
            "the user's labels join, but cannot take the selector's"
        );
        assert_eq!(
            pod["metadata"]["annotations"],
            json!({"prometheus.io/scrape": "true", "prometheus.io/port": "9999",
                   "prometheus.io/path": "/metrics", "sidecar.istio.io/inject": "false"}),
            "the user's annotations win, as in Velero"
        );
        let spec = &pod["spec"];
        assert_eq!(spec["serviceAccountName"], "velero");
        let container = &spec["containers"][0];
        assert_eq!(container["name"], "velero");
        assert_eq!(
            container["ports"],
            json!([{"name": "metrics", "containerPort": 8085, "protocol": "TCP"},
                   {"name": "grpc", "containerPort": 8443, "protocol": "TCP"}])
        );
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["readinessProbe"]["httpGet"]["port"], "metrics");
        let env = container["env"].as_array().unwrap();
        assert_eq!(env[0]["name"], "VELERO_NAMESPACE");
        assert_eq!(
            env[0]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        let mounts = container["volumeMounts"].as_array().unwrap();
        let tls = mounts
            .iter()
            .find(|m| m["mountPath"] == "/etc/lifeboat/tls")
            .unwrap();
        assert_eq!(tls["readOnly"], true);
        let volumes = spec["volumes"].as_array().unwrap();
        let tls_volume = volumes.iter().find(|v| v["name"] == tls["name"]).unwrap();
        assert_eq!(tls_volume["secret"]["secretName"], "lifeboat-server-tls");
        assert!(
            volumes
                .iter()
                .any(|v| v["name"] == "scratch" && v["emptyDir"].is_object())
        );

        let service = find(&objects, "Service", "lifeboat");
        assert_eq!(service["spec"]["selector"], json!({"deploy": "velero"}));
        assert_eq!(service["spec"]["ports"][0]["port"], 8443);
        assert_eq!(service["spec"]["ports"][0]["name"], "grpc");

        let binding = find(&objects, "ClusterRoleBinding", "velero-backup");
        assert_eq!(binding["roleRef"]["name"], "cluster-admin");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "velero", "namespace": "backup"}])
        );
        let in_velero = InstallOptions::new("velero", full_options().tls);
        assert!(has(&render(&in_velero), "ClusterRoleBinding", "velero"));
    }

    #[test]
    fn credentials_are_a_secret_mounted_in_both_pods_or_absent_everywhere() {
        let options = full_options();
        let objects = render(&options);
        let secret = find(&objects, "Secret", "cloud-credentials");
        assert_eq!(secret["type"], "Opaque");
        assert_eq!(
            secret_data(secret)["cloud"],
            options.credentials.clone().unwrap()
        );
        for (kind, name) in [("Deployment", "velero"), ("DaemonSet", "restic")] {
            let spec = &find(&objects, kind, name)["spec"]["template"]["spec"];
            let container = &spec["containers"][0];
            let env = container["env"].as_array().unwrap();
            for var in [
                "AWS_SHARED_CREDENTIALS_FILE",
                "GOOGLE_APPLICATION_CREDENTIALS",
                "AZURE_CREDENTIALS_FILE",
            ] {
                let found = env.iter().find(|e| e["name"] == var).unwrap();
                assert_eq!(found["value"], "/credentials/cloud", "{kind} {var}");
            }
            let mount = container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["mountPath"] == "/credentials")
                .unwrap();
            let volume = spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            assert_eq!(volume["secret"]["secretName"], "cloud-credentials");
        }

        let mut none = full_options();
        none.credentials = None;
        let objects = render(&none);
        assert!(!has(&objects, "Secret", "cloud-credentials"));
        for (kind, name) in [("Deployment", "velero"), ("DaemonSet", "restic")] {
            let spec = &find(&objects, kind, name)["spec"]["template"]["spec"];
            assert!(!env_names(&spec["containers"][0]).contains(&"AWS_SHARED_CREDENTIALS_FILE"));
            assert!(
                !spec["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v["secret"]["secretName"] == "cloud-credentials")
            );
        }
    }

    #[test]
    fn the_repository_password_is_random_per_render() {
        let options = full_options();
        let password = |objects: &[Value]| {
            let data = secret_data(find(objects, "Secret", "velero-restic-credentials"));
            String::from_utf8(data["repository-password"].clone()).unwrap()
        };
        let first = password(&render(&options));
        let second = password(&render(&options));
        assert_ne!(first, second);
        assert_eq!(first.len(), 64);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(first, "static-passw0rd");
    }

    #[test]
    fn tls_secrets_carry_the_bundle_with_the_ca() {
        let options = full_options();
        let objects = render(&options);
        let tls = &options.tls;
        for (name, issued) in [
            ("lifeboat-server-tls", &tls.server),
            ("lifeboat-agent-tls", &tls.agent),
            ("lifeboat-ca", &tls.ca),
        ] {
            let secret = find(&objects, "Secret", name);
            assert_eq!(secret["type"], "kubernetes.io/tls");
            let data = secret_data(secret);
            assert_eq!(data["tls.crt"], issued.cert.as_bytes());
            assert_eq!(data["tls.key"], issued.key.as_bytes());
            assert_eq!(data["ca.crt"], tls.ca.cert.as_bytes());
        }
    }

    #[test]
    fn locations_are_rendered_when_asked() {
        let objects = render(&full_options());
        let bsl = find(&objects, "BackupStorageLocation", "default");
        assert_eq!(bsl["apiVersion"], "velero.io/v1");
        assert_eq!(
            bsl["spec"],
            json!({
                "provider": "aws",
                "default": true,
                "objectStorage": {"bucket": "velero-bucket", "prefix": "cluster-a",
                                  "caCert": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="},
                "config": {"region": "minio", "s3Url": "http://minio.minio:9000/a=b"}
            })
        );
        assert!(bsl.get("status").is_none());
        let vsl = find(&objects, "VolumeSnapshotLocation", "default");
        assert_eq!(
            vsl["spec"],
            json!({"provider": "aws", "config": {"region": "eu-west-1"}})
        );

        let mut neither = full_options();
        neither.backup_location = None;
        neither.snapshot_location = None;
        let objects = render(&neither);
        assert!(!has(&objects, "BackupStorageLocation", "default"));
        assert!(!has(&objects, "VolumeSnapshotLocation", "default"));
    }

    #[test]
    fn crds_only_renders_the_labelled_crds_alone() {
        let mut options = full_options();
        options.crds_only = true;
        let objects = render(&options);
        assert_eq!(objects.len(), crate::api::crds().len());
        for object in &objects {
            assert_eq!(object["kind"], "CustomResourceDefinition");
            assert_eq!(object["metadata"]["labels"]["component"], "velero");
        }
        assert!(has(
            &objects,
            "CustomResourceDefinition",
            "backups.velero.io"
        ));
    }

    #[test]
    fn the_namespace_allows_the_agents_host_path() {
        let objects = render(&full_options());
        let ns = find(&objects, "Namespace", "backup");
        assert_eq!(
            ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "privileged"
        );
    }

    #[test]
    fn a_small_agent_memory_limit_lowers_its_budget_to_three_quarters() {
        assert_eq!(agent_memory_budget("1Gi"), None, "256Mi fits a 1Gi limit");
        assert_eq!(agent_memory_budget("342Mi"), None);
        assert_eq!(agent_memory_budget("256Mi"), Some(192 << 20));
        assert_eq!(agent_memory_budget("200000000"), Some(143 << 20));
        for unset in ["", "0", "0.5Gi"] {
            assert_eq!(agent_memory_budget(unset), None, "{unset}");
        }
        let mut options = full_options();
        options.agent_resources.memory_limit = "256Mi".into();
        let objects = render(&options);
        let agent = find(&objects, "DaemonSet", DAEMONSET);
        let args = &agent["spec"]["template"]["spec"]["containers"][0]["args"];
        assert!(
            args.as_array()
                .unwrap()
                .contains(&serde_json::json!("--memory-budget=192Mi")),
            "{args}"
        );
    }

    #[test]
    fn quantities_are_checked_as_kubernetes_reads_them() {
        for good in [
            "500m", "1", "1000m", "128Mi", "1Gi", "0.5", ".5", "1.", "1e3", "2E-2", "+1", "0",
        ] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in [
            "", "m", "500mb", "1GB", "-1", "1.2.3", "1e", "one", "1 Gi", ".", "1Mi2",
        ] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(pull_policy("lifeboat/lifeboat:v0.1.0"), "IfNotPresent");
        assert_eq!(pull_policy("lifeboat/lifeboat:latest"), "Always");
        assert_eq!(pull_policy("lifeboat/lifeboat"), "Always");
        assert_eq!(pull_policy("registry:5000/lifeboat"), "Always");
        assert_eq!(pull_policy("registry:5000/lifeboat:v1"), "IfNotPresent");
        assert_eq!(pull_policy("lifeboat/lifeboat@sha256:abc"), "IfNotPresent");
    }
}
