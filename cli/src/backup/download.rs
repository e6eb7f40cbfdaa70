//! `lifeboat backup download`: a finished backup's resources (its tarball) from its storage
//! location into a file only its owner can read.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use kube::api::Api;
use lifeboat_server::api::Backup;
use lifeboat_server::backup::layout::BackupKeys;

use super::{finished, open_location};
use crate::bucket::StoreAccessArgs;
use crate::cluster::{ClusterArgs, get_named};

// No `///` here: clap applies a struct's doc comment to its command too, and the command's
// help is its enum variant's doc comment.
#[derive(Debug, Args)]
pub(super) struct DownloadArgs {
    name: String,
    /// Where to write it (default: NAME-data.tar.gz in the current directory).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Overwrite the file if it exists.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    access: StoreAccessArgs,
}

pub(super) async fn run(cluster: &ClusterArgs, namespace: &str, args: DownloadArgs) -> Result<()> {
    let DownloadArgs {
        name,
        output,
        force,
        access,
    } = args;
    let path = match output {
        Some(path) => path,
        None => std::env::current_dir()
            .context("cannot find the current directory")?
            .join(format!("{name}-data.tar.gz")),
    };
    if !force && path.exists() {
        bail!(
            "{} already exists; pass --force to overwrite it",
            path.display()
        );
    }
    let client = cluster.client().await?;
    let api: Api<Backup> = Api::namespaced(client.clone(), namespace);
    let backup = get_named(&api, "Backup", &name).await?;
    finished(&backup, "The contents of")?;
    let files = open_location(&client, namespace, &backup, &access).await?;
    let key = BackupKeys::new(&name).contents();
    let Some(bytes) = files.read(&key).await? else {
        bail!(
            "backup {name:?} has no contents in backup storage location {:?} ({key} is missing)",
            files.name
        );
    };
    write_file(&path, &bytes, force)?;
    println!(
        "Backup {name} has been successfully downloaded to {}",
        path.display()
    );
    Ok(())
}

/// Writes a downloaded backup readable by its owner only (0600, also over an existing file
/// with `force`): it holds every Secret of the backed-up namespaces.
fn write_file(path: &std::path::Path, bytes: &[u8], force: bool) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = match options.open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!(
                "{} already exists; pass --force to overwrite it",
                path.display()
            )
        }
        other => other.with_context(|| format!("cannot create {}", path.display()))?,
    };
    let written = file
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}
