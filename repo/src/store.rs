//! Storage: the repository's files on an object store.
//!
//! A [`Store`] maps restic's file kinds onto object names under a prefix (`config`,
//! `keys/<id>`, `data/<2 hex>/<id>`, `index/<id>`, `snapshots/<id>`, `locks/<id>`) and speaks
//! `object_store`, so a local directory, S3 (and S3-compatible stores over plain http), GCS and
//! Azure behave the same.
//!
//! Contract, for every backend:
//! - a write is atomic (a single PUT, or a local write to a temporary file and a rename): a
//!   reader sees the whole file or none of it; files are content-addressed, so writing the same
//!   name twice writes the same bytes and is idempotent;
//! - removing a missing file succeeds (a retried delete is not an error);
//! - listing returns every file of a kind with its size, including more than one page;
//! - reads and writes may run concurrently; their number is capped by the store's semaphore.
//!
//! HTTP stores retry transient failures inside `object_store`: 5xx answers (503 SlowDown
//! included), 429, refused, reset and timed-out connections, with exponential backoff and
//! jitter for up to [`StoreOptions::retry_window`]; a stalled request is abandoned after
//! [`StoreOptions::request_timeout`] and retried. Every attempt is counted
//! ([`Bucket::traffic`]); what still fails is reported with [`StoreError::is_retryable`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::location::Location;

/// The kinds of files in a restic repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Config,
    Key,
    Snapshot,
    Index,
    Pack,
    Lock,
}

impl FileKind {
    /// The directory of this kind, as restic names it.
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Key => "keys",
            FileKind::Snapshot => "snapshots",
            FileKind::Index => "index",
            FileKind::Pack => "data",
            FileKind::Lock => "locks",
        }
    }
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The object does not exist.
    #[error("`{path}` does not exist")]
    NotFound { path: String },
    /// The store refused our credentials or permissions.
    #[error("access to `{path}` was denied; check the credentials")]
    Denied {
        path: String,
        #[source]
        source: object_store::Error,
    },
    /// Any other failure of the store.
    #[error("request for `{path}` failed")]
    Backend {
        path: String,
        #[source]
        source: object_store::Error,
    },
    /// The store could not be set up from its location.
    #[error("cannot set up the store")]
    Setup {
        #[source]
        source: object_store::Error,
    },
    /// No credentials were given for a store that needs them.
    #[error(
        "no credentials for the S3 endpoint {endpoint}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    NoCredentials { endpoint: String },
    /// The object is larger than the reader allows (a file of a bucket that is not trusted).
    #[error("`{path}` is larger than {limit} bytes, more than such a file can hold")]
    TooLarge { path: String, limit: u64 },
    /// A local directory could not be prepared.
    #[error("cannot prepare `{path}`")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether the object (or directory) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Whether retrying the same request may succeed (network and server errors).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Backend { source, .. } => matches!(
                source,
                object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
            ),
            _ => false,
        }
    }

    fn from_object_store(path: &ObjectPath, err: object_store::Error) -> Self {
        let path = path.to_string();
        match err {
            object_store::Error::NotFound { .. } => StoreError::NotFound { path },
            e @ (object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }) => {
                StoreError::Denied { path, source: e }
            }
            source => StoreError::Backend { path, source },
        }
    }
}

/// How to reach a store: connection settings beyond what the [`Location`] says.
///
/// A backup storage location carries its own credentials and TLS settings; the CLI leaves them
/// unset and takes credentials from the environment as restic does.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Requests in flight at once. 16 keeps a remote store busy on a fast link without
    /// opening hundreds of connections; local stores are bounded by the disk anyway.
    pub connections: usize,
    /// Credentials to use instead of the environment's.
    pub credentials: Option<Credentials>,
    /// PEM certificates to trust for an endpoint with a private CA (a location's `caCert`).
    pub ca_certificates: Option<Vec<u8>>,
    /// Accept any certificate (a location's `insecureSkipTLSVerify`).
    pub insecure_skip_tls_verify: bool,
    /// How long one request is retried (with backoff: 0.2 s doubling to 10 s) while the store
    /// refuses connections or answers with server errors, before it fails: long enough for a
    /// store to restart under a long backup. Default [`DEFAULT_RETRY_WINDOW`], or
    /// `LIFEBOAT_STORE_RETRY_WINDOW` (`90s`, `5m`).
    pub retry_window: Duration,
    /// How long one attempt of a request may take, its body included, before it is abandoned
    /// and retried (a stalled connection): default [`DEFAULT_REQUEST_TIMEOUT`], or
    /// `LIFEBOAT_STORE_TIMEOUT`.
    pub request_timeout: Duration,
}

/// How long one attempt of a request may take unless `LIFEBOAT_STORE_TIMEOUT` says otherwise:
/// a 16 MiB pack still goes up at 1.2 Mbit/s, and a stalled request is retried within the
/// retry window.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2 * 60);

/// How long a failing request is retried unless `LIFEBOAT_STORE_RETRY_WINDOW` says otherwise.
/// Kept under five minutes: a signed request must still be valid when it is finally sent.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(3 * 60);

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            connections: 16,
            credentials: None,
            ca_certificates: None,
            insecure_skip_tls_verify: false,
            retry_window: duration_from_env("LIFEBOAT_STORE_RETRY_WINDOW", DEFAULT_RETRY_WINDOW),
            request_timeout: duration_from_env("LIFEBOAT_STORE_TIMEOUT", DEFAULT_REQUEST_TIMEOUT),
        }
    }
}

/// A duration from the environment, or `default` (also when it is not one: said once).
fn duration_from_env(var: &'static str, default: Duration) -> Duration {
    let Ok(text) = std::env::var(var) else {
        return default;
    };
    parse_window(&text).unwrap_or_else(|| {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            log::warn!(
                "{var}={text:?} is not a duration such as 90s or 5m; using {}s",
                default.as_secs()
            );
        });
        default
    })
}

/// A duration as `90s`, `5m` or `1h 30m` (or ISO 8601); None when it is not one or negative.
fn parse_window(text: &str) -> Option<Duration> {
    let parsed: jiff::SignedDuration = text.trim().parse().ok()?;
    Duration::try_from(parsed).ok()
}

/// The retries of one request: backoff from 0.2 s to 10 s for up to `window`.
fn retry_config(window: Duration) -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
        // The window bounds the retries; the count only keeps a zero window from looping.
        max_retries: if window.is_zero() { 0 } else { 10_000 },
        retry_timeout: window,
    }
}

/// The HTTP requests of a bucket, counted beneath `object_store`'s retries: every attempt,
/// and why attempts failed. A job reports them when it ends (see [`TrafficCount`]).
#[derive(Debug, Default)]
struct Traffic {
    requests: AtomicU64,
    throttled: AtomicU64,
    server_errors: AtomicU64,
    broken: AtomicU64,
}

impl Traffic {
    fn count(&self) -> TrafficCount {
        TrafficCount {
            requests: self.requests.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
            broken: self.broken.load(Ordering::Relaxed),
        }
    }
}

/// HTTP requests to a store: every attempt, retries included, and the failed attempts by
/// cause (each was retried, unless the job failed on it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TrafficCount {
    pub requests: u64,
    /// Answered 503 or 429: the store asked us to slow down.
    pub throttled: u64,
    /// Answered with another server error (5xx).
    pub server_errors: u64,
    /// No answer: the connection was refused, reset or timed out.
    pub broken: u64,
}

impl TrafficCount {
    /// What happened since `earlier`.
    pub fn since(self, earlier: TrafficCount) -> TrafficCount {
        TrafficCount {
            requests: self.requests.saturating_sub(earlier.requests),
            throttled: self.throttled.saturating_sub(earlier.throttled),
            server_errors: self.server_errors.saturating_sub(earlier.server_errors),
            broken: self.broken.saturating_sub(earlier.broken),
        }
    }

    /// Failed attempts, all causes.
    pub fn failed(&self) -> u64 {
        self.throttled + self.server_errors + self.broken
    }
}

impl std::fmt::Display for TrafficCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} requests to the store", self.requests)?;
        if self.failed() > 0 {
            write!(
                f,
                ", {} retried ({} throttled, {} server errors, {} connections refused, reset or timed out)",
                self.failed(),
                self.throttled,
                self.server_errors,
                self.broken
            )?;
        }
        Ok(())
    }
}

/// The HTTP client of an object store, counting into a [`Traffic`].
#[derive(Debug)]
struct Counted(Arc<Traffic>);

impl object_store::client::HttpConnector for Counted {
    fn connect(
        &self,
        options: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        let inner = object_store::client::ReqwestConnector::default().connect(options)?;
        Ok(object_store::client::HttpClient::new(CountedClient {
            inner,
            traffic: self.0.clone(),
        }))
    }
}

#[derive(Debug)]
struct CountedClient {
    inner: object_store::client::HttpClient,
    traffic: Arc<Traffic>,
}

#[async_trait::async_trait]
impl object_store::client::HttpService for CountedClient {
    async fn call(
        &self,
        req: object_store::client::HttpRequest,
    ) -> std::result::Result<object_store::client::HttpResponse, object_store::client::HttpError>
    {
        let t = &self.traffic;
        t.requests.fetch_add(1, Ordering::Relaxed);
        // Each request at debug level (`LIFEBOAT_LOG=lifeboat_repo::store=debug`): which of a
        // job's requests wait for each other shows in their times.
        let asked = log::log_enabled!(log::Level::Debug).then(|| {
            (
                req.method().clone(),
                req.uri().path().to_string(),
                Instant::now(),
            )
        });
        let res = self.inner.execute(req).await;
        if let Some((method, path, at)) = asked {
            let answer = match &res {
                Ok(r) => r.status().as_u16().to_string(),
                Err(e) => e.to_string(),
            };
            log::debug!(
                "{method} {path}: {answer} after {} ms (headers)",
                at.elapsed().as_millis()
            );
        }
        let failed = match &res {
            Ok(r) if matches!(r.status().as_u16(), 429 | 503) => Some(&t.throttled),
            Ok(r) if r.status().is_server_error() => Some(&t.server_errors),
            Ok(_) => None,
            Err(_) => Some(&t.broken),
        };
        if let Some(counter) = failed {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        res
    }
}

/// Credentials for one provider. `Debug` never prints a secret.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// An S3 access key.
    Aws {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
    /// A Google service account key (its JSON).
    Gcp { service_account_key: String },
    /// An Azure storage account and its key.
    Azure { account: String, key: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Aws { access_key_id, .. } => {
                write!(f, "Aws {{ access_key_id: {access_key_id:?}, .. }}")
            }
            Credentials::Gcp { .. } => f.write_str("Gcp { .. }"),
            Credentials::Azure { account, .. } => write!(f, "Azure {{ account: {account:?}, .. }}"),
        }
    }
}

/// Any object under a location's prefix: the backup storage location's view (validation,
/// backup files), on which repository [`Store`]s are built. Cheap to clone.
#[derive(Clone)]
pub struct Bucket {
    inner: Arc<dyn ObjectStore>,
    root: String,
    location: Location,
    permits: Arc<Semaphore>,
    traffic: Arc<Traffic>,
    retry_window: Duration,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({})", self.location)
    }
}

impl Bucket {
    /// Connects to the store at `location`; a local directory must exist. Credentials come from
    /// `opts`, else from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`, `GOOGLE_APPLICATION_CREDENTIALS`,
    /// `AZURE_STORAGE_ACCOUNT_NAME`/`_KEY` or restic's `AZURE_ACCOUNT_NAME`/`_KEY`). Nothing is
    /// contacted yet.
    pub fn open(location: &Location, opts: &StoreOptions) -> Result<Self> {
        let setup = |source| Error::store(location, StoreError::Setup { source });
        let client = client_options(location, opts)?;
        let traffic = Arc::new(Traffic::default());
        let (inner, root): (Arc<dyn ObjectStore>, String) = match location {
            Location::Local(path) => {
                // Opening changes nothing: a missing directory is reported, not created
                // (`Repository::init` creates it first).
                let fs =
                    object_store::local::LocalFileSystem::new_with_prefix(path).map_err(|_| {
                        Error::store(
                            location,
                            StoreError::NotFound {
                                path: path.display().to_string(),
                            },
                        )
                    })?;
                (Arc::new(fs.with_automatic_cleanup(false)), String::new())
            }
            Location::S3 {
                bucket,
                prefix,
                endpoint,
                region,
            } => {
                use object_store::aws::AmazonS3Builder;
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_client_options(client)
                    .with_http_connector(Counted(traffic.clone()))
                    .with_retry(retry_config(opts.retry_window));
                if std::env::var_os("AWS_DEFAULT_REGION").is_none()
                    && std::env::var_os("AWS_REGION").is_none()
                {
                    b = b.with_region(region.clone().unwrap_or_else(|| "us-east-1".into()));
                } else if let Some(r) = region {
                    b = b.with_region(r);
                }
                let has_keys = match &opts.credentials {
                    Some(Credentials::Aws {
                        access_key_id,
                        secret_access_key,
                        session_token,
                    }) => {
                        b = b
                            .with_access_key_id(access_key_id)
                            .with_secret_access_key(secret_access_key);
                        if let Some(token) = session_token {
                            b = b.with_token(token);
                        }
                        true
                    }
                    _ => std::env::var_os("AWS_ACCESS_KEY_ID").is_some(),
                };
                let endpoint = endpoint
                    .clone()
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
                if let Some(ep) = endpoint {
                    // Without keys object_store would ask the cloud metadata service, which an
                    // on-prem endpoint never has: say what is missing instead.
                    if !has_keys {
                        return Err(Error::store(
                            location,
                            StoreError::NoCredentials { endpoint: ep },
                        ));
                    }
                    // On-prem stores: path-style addressing, and plain http when the URL says so.
                    b = b
                        .with_endpoint(&ep)
                        .with_allow_http(ep.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                (Arc::new(b.build().map_err(setup)?), prefix.clone())
            }
            Location::Gcs { bucket, prefix } => {
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_client_options(client)
                    .with_http_connector(Counted(traffic.clone()))
                    .with_retry(retry_config(opts.retry_window));
                if let Some(Credentials::Gcp {
                    service_account_key,
                }) = &opts.credentials
                {
                    b = b.with_service_account_key(service_account_key);
                }
                (Arc::new(b.build().map_err(setup)?), prefix.clone())
            }
            Location::Azure { container, prefix } => {
                let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(container)
                    .with_client_options(client)
                    .with_http_connector(Counted(traffic.clone()))
                    .with_retry(retry_config(opts.retry_window));
                if let Ok(account) = std::env::var("AZURE_ACCOUNT_NAME") {
                    b = b.with_account(account);
                }
                if let Ok(key) = std::env::var("AZURE_ACCOUNT_KEY") {
                    b = b.with_access_key(key);
                }
                if let Some(Credentials::Azure { account, key }) = &opts.credentials {
                    b = b.with_account(account).with_access_key(key);
                }
                (Arc::new(b.build().map_err(setup)?), prefix.clone())
            }
            // `memory:NAME/dir` is `dir` inside the in-memory store NAME, so a repository
            // opened by its joined location is the one a bucket handed out.
            Location::Memory { name } => match name.split_once('/') {
                Some((store, dir)) => (memory_store(store), dir.to_string()),
                None => (memory_store(name), String::new()),
            },
        };
        Ok(Self {
            inner,
            root: root.trim_matches('/').to_string(),
            location: location.clone(),
            permits: Arc::new(Semaphore::new(opts.connections.max(1))),
            traffic,
            retry_window: opts.retry_window,
        })
    }

    /// The HTTP requests made through this bucket (and the stores built on it) so far.
    pub fn traffic(&self) -> TrafficCount {
        self.traffic.count()
    }

    /// Where this bucket (and prefix) is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    fn key(&self, key: &str) -> ObjectPath {
        let key = key.trim_matches('/');
        match (self.root.is_empty(), key.is_empty()) {
            (true, _) => ObjectPath::from(key),
            (false, true) => ObjectPath::from(self.root.as_str()),
            (false, false) => ObjectPath::from(format!("{}/{key}", self.root)),
        }
    }

    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.permits
            .acquire()
            .await
            .expect("the store's semaphore is never closed")
    }

    /// A connection permit held by whatever it moves into (a stream, an upload).
    async fn owned_permit(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .expect("the store's semaphore is never closed")
    }

    /// The names of the "directories" directly under `dir` (relative to the prefix): the common
    /// prefixes of a delimited listing. Fails when the bucket does not exist or cannot be listed.
    pub async fn list_dirs(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let path = self.key(dir);
        let path = (!path.as_ref().is_empty()).then_some(path);
        let _p = self.permit().await;
        match self.inner.list_with_delimiter(path.as_ref()).await {
            Ok(listing) => Ok(listing
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(str::to_string))
                .collect()),
            // A local prefix directory that does not exist yet simply holds nothing.
            Err(object_store::Error::NotFound { .. })
                if matches!(self.location, Location::Local(_)) && path.is_some() =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err(StoreError::from_object_store(
                path.as_ref().unwrap_or(&ObjectPath::from("/")),
                e,
            )),
        }
    }

    /// Reads a whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.key(key);
        let _p = self.permit().await;
        match self.inner.get(&path).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| StoreError::from_object_store(&path, e)),
            Err(e) => Err(StoreError::from_object_store(&path, e)),
        }
    }

    /// Reads a whole object of at most `limit` bytes; a larger one fails with
    /// [`StoreError::TooLarge`] once `limit` bytes have arrived, so memory stays bounded
    /// whatever a bucket writer put there.
    pub async fn get_at_most(&self, key: &str, limit: u64) -> Result<Bytes, StoreError> {
        use futures::TryStreamExt as _;
        let mut stream = std::pin::pin!(self.get_stream(key).await?);
        let mut out = Vec::new();
        while let Some(chunk) = stream.try_next().await? {
            if (out.len() + chunk.len()) as u64 > limit {
                return Err(StoreError::TooLarge {
                    path: self.key(key).to_string(),
                    limit,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    /// Streams an object as it arrives, one response chunk at a time, so a reader that stops
    /// early (a limit reached, a corrupt stream) stops the transfer by dropping the stream.
    /// The stream holds one of the store's connection permits until it is dropped.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<impl futures::Stream<Item = Result<Bytes, StoreError>> + Send + 'static, StoreError>
    {
        let path = self.key(key);
        let permit = self.owned_permit().await;
        let stream = self
            .inner
            .get(&path)
            .await
            .map_err(|e| StoreError::from_object_store(&path, e))?
            .into_stream();
        Ok(stream.map_err(move |e| {
            // The permit lives as long as the stream: one transfer, one connection.
            let _held = &permit;
            StoreError::from_object_store(&path, e)
        }))
    }

    /// Copies an object into the local file `to` as it arrives, so memory stays at one
    /// response chunk whatever the object's size; returns the bytes written.
    pub async fn download(&self, key: &str, to: &std::path::Path) -> Result<u64, StoreError> {
        use tokio::io::AsyncWriteExt as _;
        let path = self.key(key);
        let local = |e: std::io::Error| {
            StoreError::from_object_store(
                &path,
                object_store::Error::Generic {
                    store: "local file",
                    source: format!("cannot write {}: {e}", to.display()).into(),
                },
            )
        };
        let mut stream = std::pin::pin!(self.get_stream(key).await?);
        let mut file = tokio::fs::File::create(to).await.map_err(local)?;
        let mut written = 0u64;
        while let Some(chunk) = stream.try_next().await? {
            file.write_all(&chunk).await.map_err(local)?;
            written += chunk.len() as u64;
        }
        file.flush().await.map_err(local)?;
        Ok(written)
    }

    /// Writes a whole object atomically.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.key(key);
        let _p = self.permit().await;
        self.inner
            .put(&path, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from_object_store(&path, e))
    }

    /// Removes an object; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.key(key);
        self.delete_path(&path).await
    }

    /// Deletes `path` (a missing one too), again while it fails in a way a retry may mend:
    /// S3 deletes with a POST, which `object_store` does not retry once the request was sent,
    /// so a connection cut before the answer was read would fail an operation that succeeded.
    /// Deleting twice is harmless.
    async fn delete_path(&self, path: &ObjectPath) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(200);
        loop {
            let res = {
                let _p = self.permit().await;
                self.inner.delete(path).await
            };
            match res {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => return Ok(()),
                Err(e) => {
                    let e = StoreError::from_object_store(path, e);
                    if !e.is_retryable() || started.elapsed() + backoff > self.retry_window {
                        return Err(e);
                    }
                    log::debug!("retrying the delete of `{path}` in {backoff:?}: {e}");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Whether an object exists.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.key(key);
        let _p = self.permit().await;
        match self.inner.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(StoreError::from_object_store(&path, e)),
        }
    }

    /// Every object under `dir` (relative to the prefix, recursively), as keys relative to the
    /// prefix. A directory that does not exist holds nothing.
    pub async fn list_keys(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let path = self.key(dir);
        let prefix = (!path.as_ref().is_empty()).then_some(path);
        let _p = self.permit().await;
        let listed: Vec<_> = match self.inner.list(prefix.as_ref()).try_collect().await {
            Ok(listed) => listed,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => {
                return Err(StoreError::from_object_store(
                    prefix.as_ref().unwrap_or(&ObjectPath::from("/")),
                    e,
                ));
            }
        };
        let root = format!("{}/", self.root);
        Ok(listed
            .into_iter()
            .map(|meta| {
                let key = meta.location.as_ref();
                match self.root.is_empty() {
                    true => key.to_string(),
                    false => key.strip_prefix(&root).unwrap_or(key).to_string(),
                }
            })
            .collect())
    }

    /// Starts a streaming upload of `key`: parts of `part_size` bytes are sent while the
    /// caller writes (at most two in flight), and nothing is visible under `key` until
    /// [`Upload::finish`] (a multipart upload on object stores, a temporary file renamed on a
    /// local directory). Memory stays within about three parts, whatever the object's size.
    pub async fn upload(&self, key: &str, part_size: usize) -> Result<Upload, StoreError> {
        let path = self.key(key);
        let permit = self.owned_permit().await;
        let upload = self
            .inner
            .put_multipart(&path)
            .await
            .map_err(|e| StoreError::from_object_store(&path, e))?;
        Ok(Upload {
            writer: object_store::WriteMultipart::new_with_chunk_size(upload, part_size.max(1)),
            path,
            _permit: permit,
        })
    }

    /// The repository store at `dir` under this bucket's prefix (`restic/<namespace>`).
    pub fn store(&self, dir: &str) -> Store {
        let dir = dir.trim_matches('/');
        let root = match (self.root.is_empty(), dir.is_empty()) {
            (true, _) => dir.to_string(),
            (false, true) => self.root.clone(),
            (false, false) => format!("{}/{dir}", self.root),
        };
        Store {
            bucket: Bucket {
                inner: self.inner.clone(),
                root,
                location: self.location.join(dir),
                permits: self.permits.clone(),
                traffic: self.traffic.clone(),
                retry_window: self.retry_window,
            },
        }
    }
}

/// A streaming upload started by [`Bucket::upload`]. Dropping it without [`Upload::finish`]
/// leaves nothing under its key (call [`Upload::abort`] to also free the parts already sent).
pub struct Upload {
    writer: object_store::WriteMultipart,
    path: ObjectPath,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upload({})", self.path)
    }
}

impl Upload {
    /// Parts sent at once: one uploading while the next fills keeps the link busy.
    const IN_FLIGHT: usize = 2;

    /// Appends `bytes`, waiting first while too many parts are in flight.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.writer
            .wait_for_capacity(Self::IN_FLIGHT)
            .await
            .map_err(|e| StoreError::from_object_store(&self.path, e))?;
        self.writer.write(bytes);
        Ok(())
    }

    /// Sends what is left and makes the object visible.
    pub async fn finish(self) -> Result<(), StoreError> {
        let path = self.path;
        self.writer
            .finish()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from_object_store(&path, e))
    }

    /// Gives the upload up and frees the parts already sent. A failure is not reported: the
    /// object never became visible, and stores expire abandoned parts on their own.
    pub async fn abort(self) {
        let _ = self.writer.abort().await;
    }
}

/// The HTTP client settings of a store: a private CA and certificate checking.
fn client_options(location: &Location, opts: &StoreOptions) -> Result<object_store::ClientOptions> {
    let mut client = object_store::ClientOptions::new()
        .with_allow_invalid_certificates(opts.insecure_skip_tls_verify)
        .with_timeout(opts.request_timeout);
    if let Some(pem) = &opts.ca_certificates {
        let certs = object_store::Certificate::from_pem_bundle(pem)
            .map_err(|source| Error::store(location, StoreError::Setup { source }))?;
        for cert in certs {
            client = client.with_root_certificate(cert);
        }
    }
    Ok(client)
}

/// A repository's files on an object store. Cheap to clone.
/// A [`Bucket`] whose prefix is the repository's root.
#[derive(Clone)]
pub struct Store {
    bucket: Bucket,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.bucket.location)
    }
}

impl Store {
    /// Connects to the repository at `location` (see [`Bucket::open`]); a local directory must
    /// exist. Nothing is contacted yet.
    pub fn open(location: &Location, opts: &StoreOptions) -> Result<Self> {
        Ok(Bucket::open(location, opts)?.store(""))
    }

    /// Wraps an existing object store (tests, and callers that build their own client).
    pub fn from_object_store(
        inner: Arc<dyn ObjectStore>,
        prefix: &str,
        location: Location,
    ) -> Self {
        Self {
            bucket: Bucket {
                inner,
                root: prefix.trim_matches('/').to_string(),
                location,
                permits: Arc::new(Semaphore::new(StoreOptions::default().connections)),
                traffic: Arc::default(),
                retry_window: StoreOptions::default().retry_window,
            },
        }
    }

    /// Where this store is.
    pub fn location(&self) -> &Location {
        &self.bucket.location
    }

    /// The HTTP requests made through this store's bucket so far.
    pub fn traffic(&self) -> TrafficCount {
        self.bucket.traffic()
    }

    fn path(&self, kind: FileKind, name: &str) -> ObjectPath {
        let rel = match kind {
            FileKind::Config => "config".to_string(),
            FileKind::Pack => format!("data/{}/{name}", &name[..name.len().min(2)]),
            other => format!("{}/{name}", other.dir()),
        };
        if self.bucket.root.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.bucket.root))
        }
    }

    fn dir_path(&self, kind: FileKind) -> ObjectPath {
        if self.bucket.root.is_empty() {
            ObjectPath::from(kind.dir())
        } else {
            ObjectPath::from(format!("{}/{}", self.bucket.root, kind.dir()))
        }
    }

    /// Prepares an empty repository: on a local directory, restic's directory layout
    /// (`data/00`…`data/ff` and the others), which restic expects to find; nothing on object
    /// stores, which have no directories.
    pub async fn create(&self) -> Result<(), StoreError> {
        if let Location::Local(root) = &self.bucket.location {
            let mut dirs: Vec<PathBuf> = ["keys", "snapshots", "index", "locks", "data"]
                .iter()
                .map(|d| root.join(d))
                .collect();
            dirs.extend((0..=255u8).map(|i| root.join("data").join(format!("{i:02x}"))));
            for dir in dirs {
                tokio::fs::create_dir_all(&dir)
                    .await
                    .map_err(|source| StoreError::Io {
                        path: dir.display().to_string(),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// Checks that the bucket (or directory) can be listed.
    pub async fn probe(&self) -> Result<(), StoreError> {
        let _p = self.bucket.permit().await;
        let root =
            (!self.bucket.root.is_empty()).then(|| ObjectPath::from(self.bucket.root.as_str()));
        match self.bucket.inner.list_with_delimiter(root.as_ref()).await {
            Ok(_) => Ok(()),
            Err(e) => Err(StoreError::from_object_store(
                root.as_ref().unwrap_or(&ObjectPath::from("/")),
                e,
            )),
        }
    }

    /// Reads a whole file.
    pub async fn read(&self, kind: FileKind, name: &str) -> Result<Bytes, StoreError> {
        let path = self.path(kind, name);
        let _p = self.bucket.permit().await;
        let res = self.bucket.inner.get(&path).await;
        match res {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| StoreError::from_object_store(&path, e)),
            Err(e) => Err(StoreError::from_object_store(&path, e)),
        }
    }

    /// Reads `length` bytes at `offset`.
    pub async fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, StoreError> {
        let path = self.path(kind, name);
        let _p = self.bucket.permit().await;
        self.bucket
            .inner
            .get_range(&path, offset..offset + length)
            .await
            .map_err(|e| StoreError::from_object_store(&path, e))
    }

    /// Writes a whole file atomically, replacing any file of that name.
    pub async fn write(
        &self,
        kind: FileKind,
        name: &str,
        parts: Vec<Bytes>,
    ) -> Result<(), StoreError> {
        let path = self.path(kind, name);
        let payload: PutPayload = parts.into_iter().collect();
        let _p = self.bucket.permit().await;
        self.bucket
            .inner
            .put(&path, payload)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from_object_store(&path, e))
    }

    /// Removes a file; a missing file is not an error.
    pub async fn remove(&self, kind: FileKind, name: &str) -> Result<(), StoreError> {
        self.bucket.delete_path(&self.path(kind, name)).await
    }

    /// Size of a file, or `None` when it does not exist.
    pub async fn size(&self, kind: FileKind, name: &str) -> Result<Option<u64>, StoreError> {
        let path = self.path(kind, name);
        let _p = self.bucket.permit().await;
        match self.bucket.inner.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::from_object_store(&path, e)),
        }
    }

    /// Every file of `kind` whose name is a 64-digit hex id, with its size. Other names
    /// (temporary files, stray objects) are skipped, as restic does.
    pub async fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>, StoreError> {
        if kind == FileKind::Config {
            return Ok(self
                .size(kind, "")
                .await?
                .map(|s| vec![("config".to_string(), s)])
                .unwrap_or_default());
        }
        let dir = self.dir_path(kind);
        let _p = self.bucket.permit().await;
        let entries: Vec<_> = match self.bucket.inner.list(Some(&dir)).try_collect().await {
            Ok(v) => v,
            // A local repository without the directory simply has no such files.
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(StoreError::from_object_store(&dir, e)),
        };
        Ok(entries
            .into_iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?.to_string();
                (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then_some((name, meta.size))
            })
            .collect())
    }
}

/// In-memory stores live as long as the process and are shared by name, so a test can open the
/// same "repository" twice.
/// A read asked for on the runtime, taken on a thread: a reader keeps its next reads in
/// flight while it works on the one that arrived, so round trips overlap. Dropping it
/// abandons the read.
pub(crate) struct Asked(tokio::task::JoinHandle<Result<Arriving, StoreError>>);

/// The bytes of a read as they arrive. From an object store they come in the response's
/// chunks, and what the reader has not taken yet waits in the connection (its buffers fill
/// and the sender waits), so a read in flight costs a connection, not its length in memory;
/// from a local directory the whole range is read at once.
pub(crate) enum Arriving {
    Whole(Option<Bytes>),
    Chunks(futures::stream::BoxStream<'static, Result<Bytes, StoreError>>),
}

impl Arriving {
    /// The next chunk; `None` at the end.
    pub(crate) fn next(
        &mut self,
        rt: &tokio::runtime::Handle,
    ) -> Option<Result<Bytes, StoreError>> {
        match self {
            Arriving::Whole(bytes) => bytes.take().map(Ok),
            Arriving::Chunks(stream) => rt.block_on(futures::StreamExt::next(stream)),
        }
    }

    /// Everything, in one buffer.
    pub(crate) fn collect(mut self, rt: &tokio::runtime::Handle) -> Result<Bytes, StoreError> {
        if let Arriving::Whole(bytes) = &mut self {
            return Ok(bytes.take().unwrap_or_default());
        }
        let mut all = Vec::new();
        while let Some(chunk) = self.next(rt) {
            all.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(all))
    }
}

impl Store {
    /// Whether reads are better streamed than held: an object store's are (see [`Arriving`]).
    pub(crate) fn streams(&self) -> bool {
        !matches!(
            self.bucket.location,
            Location::Local(_) | Location::Memory { .. }
        )
    }

    /// Asks for file `name` of `kind`, whole or its `range` (offset, length).
    pub(crate) fn ask(
        &self,
        rt: &tokio::runtime::Handle,
        kind: FileKind,
        name: String,
        range: Option<(u64, u64)>,
    ) -> Asked {
        let store = self.clone();
        Asked(rt.spawn(async move {
            if !store.streams() {
                let bytes = match range {
                    None => store.read(kind, &name).await?,
                    Some((offset, length)) => store.read_range(kind, &name, offset, length).await?,
                };
                return Ok(Arriving::Whole(Some(bytes)));
            }
            let path = store.path(kind, &name);
            let permit = store.bucket.owned_permit().await;
            let opts = object_store::GetOptions {
                range: range.map(|(offset, length)| (offset..offset + length).into()),
                ..Default::default()
            };
            let stream = store
                .bucket
                .inner
                .get_opts(&path, opts)
                .await
                .map_err(|e| StoreError::from_object_store(&path, e))?
                .into_stream();
            Ok(Arriving::Chunks(Box::pin(stream.map_err(move |e| {
                // The permit lives as long as the stream: one transfer, one connection.
                let _held = &permit;
                StoreError::from_object_store(&path, e)
            }))))
        }))
    }
}

impl Asked {
    /// The read, once its answer has begun to arrive.
    pub(crate) fn wait(mut self, rt: &tokio::runtime::Handle) -> Result<Arriving, StoreError> {
        rt.block_on(&mut self.0).unwrap_or_else(|e| {
            // Only a panic or an abort ends the task otherwise: the read did not happen.
            Err(StoreError::Io {
                path: "a read".into(),
                source: std::io::Error::other(format!("it was abandoned ({e})")),
            })
        })
    }
}

impl Drop for Asked {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn memory_store(name: &str) -> Arc<dyn ObjectStore> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .expect("the memory store registry is never poisoned: nothing panics while holding it");
    stores
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(object_store::memory::InMemory::new()))
        .clone()
}
