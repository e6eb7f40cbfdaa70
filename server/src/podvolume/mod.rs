//! Pod volume work, beside the resource backups and restores it accompanies: which volumes a
//! backup protects ([`select`]), the PodVolumeBackups of a backup handed to the agents and
//! followed to their end ([`backup`]), the `restic-wait` handshake that brings volumes back
//! into restored pods ([`restore`]), the repositories volumes go into ([`repository`]), and
//! what a job tells its agent ([`job`]).
//!
//! The controllers call in here; nothing here is a reconciler of its own.

pub(crate) mod backup;
pub(crate) mod job;
pub(crate) mod repository;
pub(crate) mod restore;
pub(crate) mod select;

use lifeboat_repo::Location;

/// The label of a PodVolumeBackup naming its claim's UID (how a parent is found).
pub(crate) const PVC_UID_LABEL: &str = "velero.io/pvc-uid";

/// Why a volume could not be handed to its agent; the volume is failed with this reason.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("cannot open repository {location}")]
    OpenRepository {
        location: Location,
        #[source]
        source: lifeboat_repo::Error,
    },
    #[error("cannot initialise repository {location}")]
    InitRepository {
        location: Location,
        #[source]
        source: lifeboat_repo::Error,
    },
    #[error("cannot record the repository of namespace {namespace}")]
    RecordRepository {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Access(#[from] lifeboat_agent::access::AccessError),
}
