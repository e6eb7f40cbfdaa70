//! `lifeboat restore-helper`: the process of the `restic-wait` init container a restore adds to
//! restored pods. It waits until the agent has restored each of the pod's volumes (see
//! [`lifeboat_agent::helper`] for the markers it reads), so the pod's containers start on
//! restored data; its lines are plain text for `kubectl logs`.

use std::process::ExitCode;
use std::time::Duration;

use lifeboat_server::duration;

// See [`lifeboat_agent::helper`] for the contract.
// No `///` here: clap applies a struct's doc comment to its command too, and the command's
// help is its enum variant's doc comment.
#[derive(Debug, clap::Args)]
pub(crate) struct RestoreHelperArgs {
    /// The UID of the Restore (the name of the agent's marker files).
    restore_uid: String,
    /// Where the pod's volumes are mounted, one directory each.
    #[arg(long, default_value = "/restores")]
    restores_dir: std::path::PathBuf,
    /// How long to wait for every volume before failing.
    #[arg(long, default_value = "4h", value_parser = duration::parse_positive)]
    timeout: Duration,
    /// How often to look at the volumes' markers.
    #[arg(long, default_value = "1s", value_parser = duration::parse_positive)]
    poll_interval: Duration,
    /// A volume that cannot be restored, and why (repeatable; set by the server).
    #[arg(long, value_name = "VOLUME=REASON", value_parser = failed_volume)]
    failed: Vec<(String, String)>,
}

/// A `--failed` that is not `VOLUME=REASON`.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not VOLUME=REASON")]
struct FailedVolumeError(String);

fn failed_volume(text: &str) -> Result<(String, String), FailedVolumeError> {
    match text.split_once('=') {
        Some((volume, reason)) if !volume.trim().is_empty() => {
            Ok((volume.trim().to_string(), reason.trim().to_string()))
        }
        _ => Err(FailedVolumeError(text.to_string())),
    }
}

/// Runs the restore helper; its lines are plain text for `kubectl logs`, and its exit code is
/// the init container's: 0 when every volume is restored, 1 otherwise.
pub(crate) async fn run(args: RestoreHelperArgs) -> ExitCode {
    use lifeboat_agent::helper::{HelperOptions, Outcome, wait};
    let options = HelperOptions {
        restore_uid: args.restore_uid,
        restores_dir: args.restores_dir,
        failed: args.failed.into_iter().collect(),
        timeout: args.timeout,
        poll_interval: args.poll_interval,
    };
    match wait(&options).await {
        Err(e) => {
            eprintln!("lifeboat: {}", lifeboat_repo::error_chain(&e));
            ExitCode::FAILURE
        }
        Ok((Outcome::Restored(volumes), not_removed)) => {
            for volume in volumes {
                println!("volume {volume} restored");
            }
            for why in not_removed {
                eprintln!("warning: {why}");
            }
            ExitCode::SUCCESS
        }
        Ok((Outcome::Failed(failed), _)) => {
            for (volume, reason) in failed {
                eprintln!("volume {volume}: {reason}");
            }
            ExitCode::FAILURE
        }
        Ok((Outcome::TimedOut(waiting), _)) => {
            eprintln!(
                "timed out after {} waiting for the restore of volume(s) {}",
                crate::format::go_duration(options.timeout),
                waiting.join(", ")
            );
            ExitCode::FAILURE
        }
    }
}
