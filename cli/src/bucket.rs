//! Reading a backup's files (log, tarball, resource list) straight from its storage location,
//! for `backup logs`, `backup download` and `backup describe --details`, and a restore's
//! (log, results) for `restore logs` and `restore describe`; and removing a restore's files
//! for `restore delete`, the one write the client makes.
//!
//! Velero's client asks its server for a signed URL (a DownloadRequest) and needs the server
//! running and the bucket reachable through the URL. lifeboat's client opens the location
//! itself, with the location's own settings and the credentials the server would use: the
//! Secret key the location's `credential` names, else key `cloud` of the install's Secret
//! `cloud-credentials`, else the environment (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_*`, …). So
//! whoever can read those Secrets can read the bucket, as with the server. The location is
//! opened read-only, so nothing is created or written, except by [`LocationFiles::open_writable`],
//! which refuses a `ReadOnly` location.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use lifeboat_repo::StoreError;
use lifeboat_server::api::BackupStorageLocation;
use lifeboat_server::install::{CREDENTIALS_KEY, CREDENTIALS_SECRET};
use lifeboat_server::storage::LocationStore;

/// How the client reaches the object store (Velero's flags of `logs`, `download`, `describe`).
#[derive(Debug, Clone, Args)]
pub(crate) struct StoreAccessArgs {
    /// Do not verify the object store's TLS certificate (insecure: use only for testing).
    #[arg(long)]
    insecure_skip_tls_verify: bool,
    /// A PEM bundle to trust for the object store's certificate, instead of the location's caCert.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// How long to wait for the object store.
    #[arg(long, default_value = "1m", value_parser = lifeboat_server::duration::parse_positive)]
    timeout: Duration,
}

/// An opened storage location.
#[derive(Debug)]
pub(crate) struct LocationFiles {
    /// The location's name.
    pub name: String,
    store: LocationStore,
    timeout: Duration,
}

impl LocationFiles {
    /// Opens the location `name` of the install in `namespace`; the default location when
    /// `name` is empty (a backup the server has not processed yet names none).
    pub(crate) async fn open(
        client: &kube::Client,
        namespace: &str,
        name: &str,
        access: &StoreAccessArgs,
    ) -> Result<Self> {
        Self::open_as(client, namespace, name, access, false).await
    }

    /// Opens the location for removing files; a `ReadOnly` location is refused, naming it.
    pub(crate) async fn open_writable(
        client: &kube::Client,
        namespace: &str,
        name: &str,
        access: &StoreAccessArgs,
    ) -> Result<Self> {
        Self::open_as(client, namespace, name, access, true).await
    }

    async fn open_as(
        client: &kube::Client,
        namespace: &str,
        name: &str,
        access: &StoreAccessArgs,
        writable: bool,
    ) -> Result<Self> {
        let locations: Api<BackupStorageLocation> = Api::namespaced(client.clone(), namespace);
        let location = if name.is_empty() {
            match locations
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|l| l.spec.default)
            {
                Some(l) => l,
                None => {
                    bail!("no backup storage location in namespace {namespace:?} is the default")
                }
            }
        } else {
            match locations.get_opt(name).await? {
                Some(l) => l,
                None => bail!("backup storage location {name:?} does not exist"),
            }
        };
        let name = location.name_any();
        let mut spec = location.spec;
        if !writable {
            // Read-only: nothing is written, nor a filesystem location's directory created.
            spec.access_mode = Some("ReadOnly".into());
        } else if spec.access_mode.as_deref() == Some("ReadOnly") {
            bail!("backup storage location {name:?} is ReadOnly");
        }
        if access.insecure_skip_tls_verify {
            spec.config
                .insert("insecureSkipTLSVerify".into(), "true".into());
        }
        if let Some(path) = &access.cacert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA bundle {}", path.display()))?;
            spec.object_storage.ca_cert = Some(String::from_utf8_lossy(&pem).into_owned());
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let credential = match &spec.credential {
            Some(sel) => match secret_key(&secrets, &sel.name, &sel.key).await? {
                Some(bytes) => Some(bytes),
                None => bail!(
                    "the credential of backup storage location {name:?}, key {:?} of Secret {:?} in namespace {namespace:?}, does not exist",
                    sel.key,
                    sel.name
                ),
            },
            None => secret_key(&secrets, CREDENTIALS_SECRET, CREDENTIALS_KEY).await?,
        };
        let store = LocationStore::open(&spec, credential.as_deref())
            .with_context(|| format!("cannot open backup storage location {name:?}"))?;
        Ok(Self {
            name,
            store,
            timeout: access.timeout,
        })
    }

    /// The object at `key` (relative to the location's prefix), or None when it does not exist.
    pub(crate) async fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let location = self.store.bucket.location().to_string();
        match tokio::time::timeout(self.timeout, self.store.bucket.get(key)).await {
            Err(_) => bail!(
                "the object store of location {:?} did not answer within {}s (see --timeout)",
                self.name,
                self.timeout.as_secs()
            ),
            Ok(Ok(bytes)) => Ok(Some(bytes.to_vec())),
            Ok(Err(StoreError::NotFound { .. })) => Ok(None),
            Ok(Err(e)) => Err(e).with_context(|| format!("cannot read {key} from {location}")),
        }
    }

    /// The results file at `key` (a backup's or a restore's errors and warnings, gzip JSON);
    /// an error when it is missing or is not one.
    pub(crate) async fn read_results(
        &self,
        key: &str,
    ) -> Result<lifeboat_server::backup::BackupResults> {
        let Some(gz) = self.read(key).await? else {
            bail!("{key} is not in backup storage location {:?}", self.name);
        };
        serde_json::from_slice(&gunzip(&gz, key)?)
            .with_context(|| format!("{key} is not a results file"))
    }

    /// Removes every object under `dir` (relative to the prefix); returns how many there were.
    pub(crate) async fn remove_dir(&self, dir: &str) -> Result<usize> {
        let location = self.store.bucket.location().to_string();
        let remove = async {
            let keys = self
                .store
                .bucket
                .list_keys(dir)
                .await
                .with_context(|| format!("cannot list {dir} in {location}"))?;
            for key in &keys {
                self.store
                    .bucket
                    .delete(key)
                    .await
                    .with_context(|| format!("cannot remove {key} from {location}"))?;
            }
            Ok(keys.len())
        };
        match tokio::time::timeout(self.timeout, remove).await {
            Ok(result) => result,
            Err(_) => bail!(
                "the object store of location {:?} did not answer within {}s (see --timeout)",
                self.name,
                self.timeout.as_secs()
            ),
        }
    }
}

/// The decompressed contents of the gzip file `what`.
pub(crate) fn gunzip(bytes: &[u8], what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .with_context(|| format!("{what} is not a valid gzip file"))?;
    Ok(out)
}

/// The bytes of `key` in Secret `name`, None when the Secret or key does not exist.
async fn secret_key(secrets: &Api<Secret>, name: &str, key: &str) -> Result<Option<Vec<u8>>> {
    let Some(secret) = secrets
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read the Secret {name:?}"))?
    else {
        return Ok(None);
    };
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Ok(Some(v.0.clone()));
    }
    Ok(secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.clone().into_bytes()))
}
