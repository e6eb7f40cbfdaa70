//! Backup storage locations as stores: a BackupStorageLocation's provider, bucket, prefix,
//! config keys and credentials turned into a [`Bucket`], and the validation that decides
//! whether the location is Available.
//!
//! The provider config keys are the ones Velero users already have in their manifests:
//! `region`, `s3Url`, `s3ForcePathStyle`, `insecureSkipTLSVerify`, `profile`,
//! `resticRepoPrefix` (aws); `storageAccount` (azure). Credentials come, in order, from the
//! location's `credential` Secret key, from the install's credentials file (the env variables
//! Velero's Deployment sets: `AWS_SHARED_CREDENTIALS_FILE`, `GOOGLE_APPLICATION_CREDENTIALS`,
//! `AZURE_CREDENTIALS_FILE`), and last from the process environment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) use lifeboat_repo::error_chain as chain;
use lifeboat_repo::{Bucket, Credentials, Location, StoreError, StoreOptions};

use crate::api::BackupStorageLocationSpec;

/// The top-level directories a backup store may hold under its prefix (Velero's list, plus
/// kopia's so a bucket shared with a newer Velero validates). Anything else means the prefix
/// is used by something that is not a backup store, and writing there would mix data.
pub const KNOWN_TOP_LEVEL_DIRS: &[&str] = &[
    "backups", "restores", "restic", "metadata", "plugins", "kopia",
];

/// What is wrong with a location's settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    #[error(
        "provider `{0}` is not supported; use aws (or any S3-compatible store), gcp, azure or filesystem"
    )]
    UnknownProvider(String),
    #[error("objectStorage.bucket is empty")]
    NoBucket,
    #[error("the filesystem provider needs an absolute directory as its bucket, not `{0}`")]
    RelativeDirectory(String),
    #[error("config key {key} has the invalid value `{value}`: {reason}")]
    BadConfig {
        key: String,
        value: String,
        reason: String,
    },
    #[error(
        "the credentials file has no profile `{profile}` with aws_access_key_id and aws_secret_access_key"
    )]
    NoProfile { profile: String },
    #[error("the credentials are not a valid AWS credentials file")]
    BadCredentialsFile(#[source] ini::ParseError),
    #[error(
        "the azure location needs config storageAccount and a credentials file with AZURE_STORAGE_ACCOUNT_ACCESS_KEY"
    )]
    NoAzureAccount,
    #[error("objectStorage.caCert is not valid base64")]
    BadCaCert,
    #[error("cannot read the credentials file {path}")]
    CredentialsFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the location's directory {path}")]
    CreateDirectory {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] lifeboat_repo::Error),
}

/// A location's store and how it may be used.
#[derive(Debug, Clone)]
pub struct LocationStore {
    /// The bucket and prefix.
    pub bucket: Bucket,
    /// `accessMode: ReadOnly`: nothing may be written.
    pub read_only: bool,
    /// Where the restic repositories live (`<prefix>/restic`, or `config.resticRepoPrefix`).
    pub repo_root: Location,
    /// The connection settings, for opening repositories under `repo_root`.
    pub options: StoreOptions,
}

/// AWS keys from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, when
/// both keys are set.
fn environment_aws_credentials() -> Option<Credentials> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Some(Credentials::Aws {
        access_key_id: var("AWS_ACCESS_KEY_ID")?,
        secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
        session_token: var("AWS_SESSION_TOKEN"),
    })
}

impl LocationStore {
    /// Connects to the location described by `spec`. `credential` holds the bytes of the
    /// location's `credential` Secret key when it names one. Nothing is contacted yet.
    pub fn open(
        spec: &BackupStorageLocationSpec,
        credential: Option<&[u8]>,
    ) -> Result<Self, SettingsError> {
        let config = &spec.config;
        let bucket_name = spec.object_storage.bucket.trim();
        if bucket_name.is_empty() {
            return Err(SettingsError::NoBucket);
        }
        let prefix = spec.object_storage.prefix.trim_matches('/').to_string();
        let provider = spec.provider.trim();
        let provider = provider.strip_prefix("velero.io/").unwrap_or(provider);
        let mut options = StoreOptions {
            insecure_skip_tls_verify: flag(config, "insecureSkipTLSVerify")?,
            ..StoreOptions::default()
        };
        if let Some(ca) = &spec.object_storage.ca_cert {
            options.ca_certificates = Some(decode_ca(ca)?);
        }
        let credentials_file = |env: &str| -> Result<Option<Vec<u8>>, SettingsError> {
            if let Some(bytes) = credential {
                return Ok(Some(bytes.to_vec()));
            }
            match std::env::var_os(env) {
                Some(path) if !path.is_empty() => {
                    std::fs::read(&path).map(Some).map_err(|source| {
                        SettingsError::CredentialsFile {
                            path: PathBuf::from(path).display().to_string(),
                            source,
                        }
                    })
                }
                _ => Ok(None),
            }
        };
        let location = match provider {
            "aws" | "s3" => {
                let endpoint = config
                    .get("s3Url")
                    .map(|u| u.trim().trim_end_matches('/').to_string())
                    .filter(|u| !u.is_empty());
                if let Some(url) = &endpoint
                    && !(url.starts_with("http://") || url.starts_with("https://"))
                {
                    return Err(SettingsError::BadConfig {
                        key: "s3Url".into(),
                        value: url.clone(),
                        reason: "it must start with http:// or https://".into(),
                    });
                }
                // s3ForcePathStyle is accepted for manifests' sake: a custom endpoint is always
                // addressed path-style (what on-prem stores need), AWS virtual-hosted.
                flag(config, "s3ForcePathStyle")?;
                if let Some(file) = credentials_file("AWS_SHARED_CREDENTIALS_FILE")? {
                    let profile = config.get("profile").map_or("default", String::as_str);
                    options.credentials = Some(aws_credentials(&file, profile)?);
                } else {
                    // The keys of the process's environment, resolved here so that they are
                    // part of the location's settings: the agents, which have none of their
                    // own, are handed what the server uses.
                    options.credentials = environment_aws_credentials();
                }
                Location::S3 {
                    bucket: bucket_name.to_string(),
                    prefix: prefix.clone(),
                    endpoint,
                    region: config.get("region").filter(|r| !r.is_empty()).cloned(),
                }
            }
            "gcp" | "gcs" => {
                if let Some(file) = credentials_file("GOOGLE_APPLICATION_CREDENTIALS")? {
                    options.credentials = Some(Credentials::Gcp {
                        service_account_key: String::from_utf8_lossy(&file).into_owned(),
                    });
                }
                Location::Gcs {
                    bucket: bucket_name.to_string(),
                    prefix: prefix.clone(),
                }
            }
            "azure" => {
                if let Some(file) = credentials_file("AZURE_CREDENTIALS_FILE")? {
                    let account = config
                        .get("storageAccount")
                        .ok_or(SettingsError::NoAzureAccount)?;
                    let key = env_file_value(&file, "AZURE_STORAGE_ACCOUNT_ACCESS_KEY")
                        .ok_or(SettingsError::NoAzureAccount)?;
                    options.credentials = Some(Credentials::Azure {
                        account: account.clone(),
                        key,
                    });
                }
                Location::Azure {
                    container: bucket_name.to_string(),
                    prefix: prefix.clone(),
                }
            }
            "filesystem" => {
                let dir = PathBuf::from(bucket_name);
                if !dir.is_absolute() {
                    return Err(SettingsError::RelativeDirectory(bucket_name.to_string()));
                }
                Location::Local(if prefix.is_empty() {
                    dir
                } else {
                    dir.join(&prefix)
                })
            }
            other => return Err(SettingsError::UnknownProvider(other.to_string())),
        };
        let read_only = spec.access_mode.as_deref() == Some("ReadOnly");
        let repo_root = match config.get("resticRepoPrefix").filter(|p| !p.is_empty()) {
            Some(p) => Location::parse(p)?,
            None => location.join("restic"),
        };
        // A filesystem location is a directory we may have to create: the bucket directory
        // must exist (it is the "bucket"), the prefix below it is made on first use.
        if let Location::Local(path) = &location
            && !read_only
            && !path.exists()
            && PathBuf::from(bucket_name).is_dir()
        {
            std::fs::create_dir_all(path).map_err(|source| SettingsError::CreateDirectory {
                path: path.display().to_string(),
                source,
            })?;
        }
        let bucket = Bucket::open(&location, &options)?;
        Ok(Self {
            bucket,
            read_only,
            repo_root,
            options,
        })
    }

    /// Checks that the location can be used: the bucket exists and can be listed, the prefix
    /// holds nothing but a backup store's directories, and (unless ReadOnly) an object can be
    /// written and removed. The error, in words, is the message for the location's status.
    pub async fn validate(&self, timeout: Duration) -> Result<(), ValidationError> {
        match tokio::time::timeout(timeout, self.validate_inner()).await {
            Ok(result) => result,
            Err(_) => Err(ValidationError::Timeout {
                seconds: timeout.as_secs(),
            }),
        }
    }

    async fn validate_inner(&self) -> Result<(), ValidationError> {
        let location = || self.bucket.location().to_string();
        let dirs = self.bucket.list_dirs("").await.map_err(|e| match &e {
            StoreError::NotFound { .. } => ValidationError::NoBucket {
                location: location(),
            },
            _ if bucket_missing(&e) => ValidationError::NoBucket {
                location: location(),
            },
            _ => ValidationError::List {
                location: location(),
                source: e,
            },
        })?;
        let unknown: Vec<&str> = dirs
            .iter()
            .map(String::as_str)
            .filter(|d| !KNOWN_TOP_LEVEL_DIRS.contains(d))
            .collect();
        if !unknown.is_empty() {
            return Err(ValidationError::ForeignDirectories {
                location: location(),
                directories: unknown.join(", "),
            });
        }
        if !self.read_only {
            let key = "metadata/lifeboat-write-check";
            self.bucket
                .put(key, bytes::Bytes::from_static(b"lifeboat\n"))
                .await
                .map_err(|source| ValidationError::Write {
                    location: location(),
                    source,
                })?;
            self.bucket
                .delete(key)
                .await
                .map_err(|source| ValidationError::Delete {
                    location: location(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// Why a location cannot be used as it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    #[error("the store did not answer within {seconds}s")]
    Timeout { seconds: u64 },
    #[error("the bucket of {location} does not exist")]
    NoBucket { location: String },
    #[error("cannot list {location}")]
    List {
        location: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "the prefix of {location} holds directories that are not a backup store's ({directories}); use another prefix"
    )]
    ForeignDirectories {
        location: String,
        directories: String,
    },
    #[error("cannot write to {location}")]
    Write {
        location: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot delete from {location}")]
    Delete {
        location: String,
        #[source]
        source: StoreError,
    },
}

/// Whether a store error says the bucket itself is missing (S3's NoSuchBucket, or a listing
/// of a bucket that does not exist answered with 404).
fn bucket_missing(e: &StoreError) -> bool {
    let text = chain(e);
    text.contains("NoSuchBucket") || text.contains("does not exist") || text.contains("404")
}

fn flag(config: &BTreeMap<String, String>, key: &str) -> Result<bool, SettingsError> {
    match config.get(key).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v.is_empty() || v == "false" => Ok(false),
        Some(v) if v == "true" => Ok(true),
        Some(v) => Err(SettingsError::BadConfig {
            key: key.into(),
            value: v,
            reason: "it must be true or false".into(),
        }),
    }
}

/// `caCert` is a `[]byte` in Velero's API: base64 text in JSON. A PEM given as is (a common
/// mistake in hand-written manifests) is accepted too.
fn decode_ca(text: &str) -> Result<Vec<u8>, SettingsError> {
    use base64::Engine as _;
    let trimmed = text.trim();
    if trimmed.starts_with("-----BEGIN") {
        return Ok(trimmed.as_bytes().to_vec());
    }
    let compact: String = trimmed.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| SettingsError::BadCaCert)
}

/// Keys of `profile` in an AWS shared credentials file (the format of Velero's
/// `cloud-credentials` Secret).
fn aws_credentials(file: &[u8], profile: &str) -> Result<Credentials, SettingsError> {
    let text = String::from_utf8_lossy(file);
    let ini = ini::Ini::load_from_str(&text).map_err(SettingsError::BadCredentialsFile)?;
    let section = ini
        .section(Some(profile))
        .or_else(|| (profile == "default").then(|| ini.general_section()));
    let get = |k: &str| {
        section
            .and_then(|s| s.get(k))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials::Aws {
            access_key_id,
            secret_access_key,
            session_token: get("aws_session_token"),
        }),
        _ => Err(SettingsError::NoProfile {
            profile: profile.to_string(),
        }),
    }
}

/// `KEY=value` from an env-style file (Velero's Azure credentials format).
fn env_file_value(file: &[u8], key: &str) -> Option<String> {
    String::from_utf8_lossy(file).lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ObjectStorageLocation;

    fn spec(provider: &str, bucket: &str, config: &[(&str, &str)]) -> BackupStorageLocationSpec {
        BackupStorageLocationSpec {
            provider: provider.into(),
            object_storage: ObjectStorageLocation {
                bucket: bucket.into(),
                prefix: "cluster-a".into(),
                ..Default::default()
            },
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    const CREDS: &[u8] =
        b"[default]\naws_access_key_id = AK\naws_secret_access_key = SK\n\n[other]\naws_access_key_id=A2\naws_secret_access_key=S2\naws_session_token=T\n";

    #[test]
    fn aws_location_uses_velero_config_keys_and_the_profile() {
        let s = spec(
            "velero.io/aws",
            "b",
            &[
                ("s3Url", "http://127.0.0.1:9000/"),
                ("region", "minio"),
                ("s3ForcePathStyle", "true"),
                ("profile", "other"),
            ],
        );
        let store = LocationStore::open(&s, Some(CREDS)).unwrap();
        assert_eq!(
            store.bucket.location().to_string(),
            "s3:http://127.0.0.1:9000/b/cluster-a"
        );
        assert_eq!(
            store.repo_root.to_string(),
            "s3:http://127.0.0.1:9000/b/cluster-a/restic"
        );
        assert_eq!(
            store.options.credentials,
            Some(Credentials::Aws {
                access_key_id: "A2".into(),
                secret_access_key: "S2".into(),
                session_token: Some("T".into())
            })
        );
        assert!(!store.read_only);
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |s: BackupStorageLocationSpec, c: Option<&[u8]>| {
            LocationStore::open(&s, c).unwrap_err().to_string()
        };
        assert!(err(spec("oracle", "b", &[]), None).contains("provider `oracle`"));
        assert!(err(spec("aws", " ", &[]), None).contains("bucket is empty"));
        assert!(err(spec("aws", "b", &[("s3Url", "minio:9000")]), Some(CREDS)).contains("s3Url"));
        assert!(
            err(spec("aws", "b", &[("insecureSkipTLSVerify", "yes")]), None)
                .contains("insecureSkipTLSVerify")
        );
        assert!(
            err(spec("aws", "b", &[("profile", "nope")]), Some(CREDS)).contains("profile `nope`")
        );
        assert!(err(spec("filesystem", "relative/dir", &[]), None).contains("absolute"));
    }

    #[test]
    fn resticrepoprefix_overrides_the_repository_root() {
        let s = spec(
            "aws",
            "b",
            &[
                ("s3Url", "http://h:1"),
                ("resticRepoPrefix", "s3:http://h:1/other/restic"),
            ],
        );
        let store = LocationStore::open(&s, Some(CREDS)).unwrap();
        assert_eq!(store.repo_root.to_string(), "s3:http://h:1/other/restic");
    }

    #[test]
    fn ca_cert_is_base64_or_pem() {
        assert_eq!(decode_ca("LS0tLS1CRUdJTg==").unwrap(), b"-----BEGIN");
        assert_eq!(decode_ca("-----BEGIN X").unwrap(), b"-----BEGIN X");
        assert!(decode_ca("%%%").is_err());
    }

    #[tokio::test]
    async fn a_filesystem_location_validates_and_refuses_foreign_directories() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec("filesystem", dir.path().to_str().unwrap(), &[]);
        let store = LocationStore::open(&s, None).unwrap();
        store.validate(Duration::from_secs(5)).await.unwrap();
        assert!(
            !dir.path()
                .join("cluster-a/metadata/lifeboat-write-check")
                .exists()
        );
        std::fs::create_dir_all(dir.path().join("cluster-a/photos")).unwrap();
        let msg = store
            .validate(Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.contains("photos"), "{msg}");

        let missing = spec("filesystem", "/nonexistent/lifeboat-test", &[]);
        let msg = match LocationStore::open(&missing, None) {
            Ok(store) => chain(&store.validate(Duration::from_secs(5)).await.unwrap_err()),
            Err(e) => e.to_string(),
        };
        assert!(msg.contains("/nonexistent/lifeboat-test"), "{msg}");
    }
}
