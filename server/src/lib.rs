//! lifeboat-server: the `velero.io/v1` API types (used by the CLI too); the controllers and the
//! agent service join them with the cluster issues.

pub mod api;
pub mod install;
pub mod pki;
