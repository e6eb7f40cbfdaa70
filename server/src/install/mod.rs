//! What `lifeboat install` puts into a cluster, and putting it there.
//!
//! [`render`] turns [`InstallOptions`] into the objects of an install, typed k8s-openapi (and
//! `velero.io/v1`) objects serialised to JSON, in the order they must be applied: the namespace,
//! the CRDs, the service accounts, RBAC, the Secrets, the Service, the server Deployment, the
//! agent DaemonSet, then the BackupStorageLocation and VolumeSnapshotLocation (which need the
//! CRDs served). No YAML templates: a field renamed in k8s-openapi breaks the build, not a
//! cluster.
//!
//! The names are Velero's wherever Velero has one (Deployment `velero`, DaemonSet `restic`,
//! ServiceAccount `velero`, Secrets `cloud-credentials` and `velero-restic-credentials`, location
//! `default`), and every object carries Velero's label `component: velero`, so users' `kubectl`
//! habits and scripts keep working. What lifeboat adds has lifeboat's name: the Service
//! `lifeboat` the agents dial, the agents' ServiceAccount `lifeboat-agent` (no API access at
//! all: the agent never talks to the API server), and the TLS Secrets (see [`crate::pki`]).
//!
//! [`apply`] creates the objects through the API server (server-side apply for the ones install
//! owns, keep-if-present for the ones holding keys or user data), [`wait_ready`] waits for the
//! pods, and [`uninstall`] deletes by name what install creates.

mod apply;
mod render;

pub use apply::*;
pub use render::*;

/// The namespace of an install when none is given (Velero's).
pub const DEFAULT_NAMESPACE: &str = "velero";
/// The server's ServiceAccount, bound to `cluster-admin` as Velero's is.
pub const SERVER_ACCOUNT: &str = "velero";
/// The agents' ServiceAccount: no token, no bindings.
pub const AGENT_ACCOUNT: &str = "lifeboat-agent";
/// The server Deployment and its container.
pub const DEPLOYMENT: &str = "velero";
/// The agent DaemonSet and its container (Velero 1.5's name, which users' scripts use).
pub const DAEMONSET: &str = "restic";
/// The Service in front of the server's gRPC port, which the agents dial.
pub const SERVICE: &str = crate::pki::SERVER_NAME;
/// The cloud credentials Secret; its key [`CREDENTIALS_KEY`] is mounted at `/credentials/cloud`.
pub const CREDENTIALS_SECRET: &str = "cloud-credentials";
/// The key of the cloud credentials in [`CREDENTIALS_SECRET`].
pub const CREDENTIALS_KEY: &str = "cloud";
/// The repository password Secret (Velero 1.5's name).
pub const REPOSITORY_SECRET: &str = "velero-restic-credentials";
/// The key of the password in [`REPOSITORY_SECRET`].
pub const REPOSITORY_PASSWORD_KEY: &str = "repository-password";
/// The server's certificate, key and CA.
pub const SERVER_TLS_SECRET: &str = "lifeboat-server-tls";
/// The agents' client certificate, key and CA.
pub const AGENT_TLS_SECRET: &str = "lifeboat-agent-tls";
/// The CA's own certificate and key, so a later install can issue from it.
pub const CA_SECRET: &str = "lifeboat-ca";
/// The BackupStorageLocation and VolumeSnapshotLocation install creates.
pub const LOCATION_NAME: &str = "default";
/// The server's metrics and health port (Velero's).
pub const METRICS_PORT: i32 = 8085;
/// The server's gRPC port for the agents.
pub const GRPC_PORT: i32 = 8443;
/// The field manager of install's server-side applies.
pub const FIELD_MANAGER: &str = "lifeboat-install";
/// The label every installed object carries (Velero's): `component: velero`.
pub const COMPONENT_LABEL: (&str, &str) = ("component", "velero");
/// Where the cloud credentials Secret is mounted in both pods.
pub const CREDENTIALS_DIR: &str = "/credentials";

/// The image of this version: `lifeboat/lifeboat:v<version>`.
pub fn default_image() -> String {
    format!("lifeboat/lifeboat:v{}", env!("CARGO_PKG_VERSION"))
}

/// The address the agents dial the server at for an install in `namespace`.
pub fn server_url(namespace: &str) -> String {
    format!("https://{SERVICE}.{namespace}.svc:{GRPC_PORT}")
}

/// The ClusterRoleBinding of the server's account: `velero` in the namespace `velero`,
/// `velero-<namespace>` elsewhere, as Velero names it, so installs in two namespaces do not
/// take each other's binding.
pub fn cluster_role_binding_name(namespace: &str) -> String {
    if namespace == DEFAULT_NAMESPACE {
        SERVER_ACCOUNT.to_string()
    } else {
        format!("{SERVER_ACCOUNT}-{namespace}")
    }
}
