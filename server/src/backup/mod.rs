//! Backups of cluster resources in Velero's format: which objects a Backup selects
//! ([`filter`]), how they are read from the API server ([`collect`]), and the files they are
//! written to ([`tarball`]).
//!
//! The pieces are independent of the controller that drives them: the controller validates a
//! spec with [`validate`], discovers the served resources with [`discover`], builds a
//! [`BackupFilter`], runs [`collect`] into a [`TarballWriter`] and uploads the tarball, the
//! [`ResourceList`] and the [`BackupResults`] it returns. Only the discovery and the sink can
//! fail a collection; a failure on one resource or object is recorded in the results, as
//! Velero does, and the backup goes on (ending PartiallyFailed).

pub mod collect;
pub mod filter;
pub mod layout;
pub mod log;
pub(crate) mod run;
pub mod tarball;
pub mod upload;

pub use collect::{CollectOptions, CollectStats, DiscoveredResources, ItemSink, collect, discover};
pub use filter::{
    BackupFilter, GroupResource, IncludesExcludes, ResourceIndex, Selector, SelectorError,
    ServedResource, validate, validate_includes_excludes,
};
pub use tarball::{
    BackupResults, FORMAT_VERSION, ItemPath, Messages, ResourceList, TarballWriter, json_gz,
};

/// Why a collection stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API server's discovery documents could not be read.
    #[error("cannot discover the resources the API server serves")]
    Discovery(#[source] kube::Error),
    /// The tarball could not be written.
    #[error("cannot write the backup tarball")]
    Write(#[source] std::io::Error),
}

impl Error {
    /// Whether the collection may succeed when run again (a discovery failure may be a
    /// passing API server restart; a failing sink is the caller's to judge, so no).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Discovery(_))
    }
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
