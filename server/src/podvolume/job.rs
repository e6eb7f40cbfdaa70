//! What the server and an agent exchange about one pod volume job: the repository it names,
//! in the agent protocol's terms, and following a running job to its outcome while its
//! progress is mirrored into the job's PodVolumeBackup or PodVolumeRestore.

use std::time::{Duration, Instant};

use lifeboat_agent::access::{AccessError, RepositoryAccess};
use lifeboat_agent::proto;
use lifeboat_repo::Location;

use crate::agents::{JobEvent, JobHandle, JobOutcome};
use crate::api::PodVolumeProgress;
use crate::controller::Context;
use crate::storage::{LocationStore, chain};

/// How often a volume's progress is written into its PodVolumeBackup at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The status of a PodVolumeBackup or PodVolumeRestore while it runs: the one field both
/// kinds share.
#[derive(serde::Serialize)]
struct ProgressStatus {
    progress: PodVolumeProgress,
}

/// What an agent needs to open the repository at `location`: the location's own credentials
/// and TLS settings (the agents hold none of their own) and the install's password.
pub(crate) fn repository_message(
    store: &LocationStore,
    location: &Location,
    password: &str,
) -> Result<proto::Repository, AccessError> {
    proto::Repository::try_from(RepositoryAccess {
        location: location.clone(),
        credentials: store.options.credentials.clone(),
        ca_certificates: store.options.ca_certificates.clone(),
        insecure_skip_tls_verify: store.options.insecure_skip_tls_verify,
        password: password.to_owned(),
    })
}

/// Follows a pod volume job (backup or restore) to its outcome, writing its progress into the
/// status of the `K` named `name` at most every [`PROGRESS_EVERY`]; past `deadline` the job is
/// cancelled and fails with `timeout_reason`.
pub(crate) async fn follow_job<K>(
    ctx: &Context,
    name: &str,
    handle: &mut JobHandle,
    deadline: tokio::time::Instant,
    timeout_reason: String,
) -> JobOutcome
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let mut last_report: Option<Instant> = None;
    loop {
        match tokio::time::timeout_at(deadline, handle.next()).await {
            Ok(Some(JobEvent::Progress(p))) => {
                if last_report.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
                    last_report = Some(Instant::now());
                    let progress = ProgressStatus {
                        progress: PodVolumeProgress {
                            total_bytes: Some(i64::try_from(p.bytes_total).unwrap_or(i64::MAX)),
                            bytes_done: Some(i64::try_from(p.bytes_done).unwrap_or(i64::MAX)),
                        },
                    };
                    record_status::<K>(ctx, name, &progress).await;
                }
            }
            Ok(Some(JobEvent::Done(outcome))) => return outcome,
            Ok(None) => return JobOutcome::Failed("the job ended without a result".into()),
            Err(_) => {
                ctx.agents.cancel_job(&handle.node, &handle.job_id).await;
                return JobOutcome::Failed(timeout_reason);
            }
        }
    }
}

/// Records a pod volume object's status; a failure is logged (the operation goes on, and the
/// final status is written again when the volume ends).
pub(crate) async fn record_status<K>(ctx: &Context, name: &str, status: impl serde::Serialize)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if let Err(e) = ctx.patch_status::<K>(name, status).await {
        tracing::warn!(object = %name, "cannot record the pod volume status: {}", chain(&e));
    }
}
