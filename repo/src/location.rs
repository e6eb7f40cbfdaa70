//! Where a repository lives, parsed from the strings users already have.
//!
//! We accept our URL forms (`/path`, `file:///path`, `s3://bucket/prefix`, `gs://…`, `az://…`)
//! and restic's own repository strings (`s3:http://host:port/bucket/prefix`,
//! `s3:s3.amazonaws.com/bucket/prefix`, `gs:bucket:/prefix`, `azure:container:/prefix`,
//! `local:/path`), because Velero writes the latter into every PodVolumeBackup's
//! `repoIdentifier`.

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// A parsed repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A directory on a local or mounted file system.
    Local(PathBuf),
    /// An S3 bucket, on AWS or an S3-compatible store.
    S3 {
        bucket: String,
        prefix: String,
        /// `scheme://host[:port]` of a non-AWS store; `None` is AWS (or `AWS_ENDPOINT_URL`).
        endpoint: Option<String>,
        /// Region implied by an AWS host name such as `s3.eu-west-1.amazonaws.com`.
        region: Option<String>,
    },
    /// A Google Cloud Storage bucket.
    Gcs { bucket: String, prefix: String },
    /// An Azure Blob Storage container.
    Azure { container: String, prefix: String },
    /// A process-local in-memory store named `name` (tests and examples).
    Memory { name: String },
}

impl Location {
    /// Parses a repository string. Relative paths are taken from the current directory.
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidLocation {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let input_trim = input.trim();
        if input_trim.is_empty() {
            return Err(bad("it is empty"));
        }
        if let Some(rest) = input_trim.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(bad(
                    "a file:// URL needs an absolute path, as in file:///srv/repo",
                ));
            }
            return Ok(Location::Local(PathBuf::from(rest)));
        }
        if let Some(rest) = input_trim.strip_prefix("local:") {
            return Ok(Location::Local(PathBuf::from(rest)));
        }
        if let Some(name) = input_trim.strip_prefix("memory:") {
            return Ok(Location::Memory {
                name: name.trim_start_matches('/').to_string(),
            });
        }
        if let Some(rest) = input_trim.strip_prefix("s3://") {
            let (bucket, prefix) =
                split_bucket(rest).ok_or_else(|| bad("no bucket name after s3://"))?;
            return Ok(Location::S3 {
                bucket,
                prefix,
                endpoint: None,
                region: None,
            });
        }
        if let Some(rest) = input_trim.strip_prefix("s3:") {
            return parse_restic_s3(rest).ok_or_else(|| {
                bad("expected s3:http(s)://host[:port]/bucket[/prefix] or s3:host/bucket[/prefix]")
            });
        }
        if let Some(rest) = input_trim.strip_prefix("gs://") {
            let (bucket, prefix) =
                split_bucket(rest).ok_or_else(|| bad("no bucket name after gs://"))?;
            return Ok(Location::Gcs { bucket, prefix });
        }
        if let Some(rest) = input_trim.strip_prefix("gs:") {
            let (bucket, prefix) =
                split_colon(rest).ok_or_else(|| bad("expected gs:bucket:/prefix"))?;
            return Ok(Location::Gcs { bucket, prefix });
        }
        for scheme in ["az://", "azure://"] {
            if let Some(rest) = input_trim.strip_prefix(scheme) {
                let (container, prefix) =
                    split_bucket(rest).ok_or_else(|| bad("no container name after az://"))?;
                return Ok(Location::Azure { container, prefix });
            }
        }
        if let Some(rest) = input_trim.strip_prefix("azure:") {
            let (container, prefix) =
                split_colon(rest).ok_or_else(|| bad("expected azure:container:/prefix"))?;
            return Ok(Location::Azure { container, prefix });
        }
        for unsupported in ["rest:", "sftp:", "b2:", "swift:", "rclone:"] {
            if input_trim.starts_with(unsupported) {
                return Err(bad(&format!(
                    "the {} backend is not supported; use a local path, S3, GCS or Azure",
                    unsupported.trim_end_matches(':')
                )));
            }
        }
        if input_trim.contains("://") {
            return Err(bad(
                "unknown scheme; use a local path, file://, s3://, gs:// or az://",
            ));
        }
        let path = PathBuf::from(input_trim);
        let path = if path.is_absolute() {
            path
        } else {
            std::env::current_dir()
                .map_err(|e| bad(&format!("cannot resolve a relative path: {e}")))?
                .join(path)
        };
        Ok(Location::Local(path))
    }
}

/// `bucket/some/prefix/` → (`bucket`, `some/prefix`).
fn split_bucket(rest: &str) -> Option<(String, String)> {
    let rest = rest.trim_matches('/');
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| (bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// restic's `bucket:/prefix` form for GCS and Azure.
fn split_colon(rest: &str) -> Option<(String, String)> {
    let (bucket, prefix) = rest.split_once(':').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| (bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// restic's S3 strings: `http(s)://host[:port]/bucket/prefix` or `host/bucket/prefix` (https).
fn parse_restic_s3(rest: &str) -> Option<Location> {
    let (scheme, hostpath) = if let Some(r) = rest.strip_prefix("http://") {
        ("http", r)
    } else if let Some(r) = rest.strip_prefix("https://") {
        ("https", r)
    } else {
        ("https", rest)
    };
    let (host, path) = hostpath.split_once('/')?;
    if host.is_empty() {
        return None;
    }
    let (bucket, prefix) = split_bucket(path)?;
    let hostname = host.split(':').next().unwrap_or(host);
    // AWS's own endpoints: let the SDK defaults (and the region) pick the URL.
    if scheme == "https" && hostname.ends_with(".amazonaws.com") {
        let region = hostname
            .strip_suffix(".amazonaws.com")
            .and_then(|h| h.strip_prefix("s3.").or_else(|| h.strip_prefix("s3-")))
            .filter(|r| !r.is_empty())
            .map(str::to_string);
        return Some(Location::S3 {
            bucket,
            prefix,
            endpoint: None,
            region,
        });
    }
    Some(Location::S3 {
        bucket,
        prefix,
        endpoint: Some(format!("{scheme}://{host}")),
        region: None,
    })
}

impl Location {
    /// The location of `dir` under this one (a repository under a backup location's prefix).
    pub fn join(&self, dir: &str) -> Location {
        let dir = dir.trim_matches('/');
        if dir.is_empty() {
            return self.clone();
        }
        let under = |prefix: &str| {
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                dir.to_string()
            } else {
                format!("{prefix}/{dir}")
            }
        };
        match self {
            Location::Local(path) => Location::Local(path.join(dir)),
            Location::S3 {
                bucket,
                prefix,
                endpoint,
                region,
            } => Location::S3 {
                bucket: bucket.clone(),
                prefix: under(prefix),
                endpoint: endpoint.clone(),
                region: region.clone(),
            },
            Location::Gcs { bucket, prefix } => Location::Gcs {
                bucket: bucket.clone(),
                prefix: under(prefix),
            },
            Location::Azure { container, prefix } => Location::Azure {
                container: container.clone(),
                prefix: under(prefix),
            },
            Location::Memory { name } => Location::Memory {
                name: format!("{}/{dir}", name.trim_end_matches('/')),
            },
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn join(bucket: &str, prefix: &str) -> String {
            if prefix.is_empty() {
                bucket.to_string()
            } else {
                format!("{bucket}/{prefix}")
            }
        }
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::S3 {
                bucket,
                prefix,
                endpoint: Some(endpoint),
                ..
            } => write!(f, "s3:{endpoint}/{}", join(bucket, prefix)),
            Location::S3 { bucket, prefix, .. } => write!(f, "s3://{}", join(bucket, prefix)),
            Location::Gcs { bucket, prefix } => write!(f, "gs://{}", join(bucket, prefix)),
            Location::Azure { container, prefix } => write!(f, "az://{}", join(container, prefix)),
            Location::Memory { name } => write!(f, "memory:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str, endpoint: Option<&str>, region: Option<&str>) -> Location {
        Location::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: endpoint.map(Into::into),
            region: region.map(Into::into),
        }
    }

    #[test]
    fn join_puts_a_directory_under_the_prefix() {
        let base = Location::parse("s3:http://127.0.0.1:9000/bucket/prefix").unwrap();
        assert_eq!(
            base.join("restic/app").to_string(),
            "s3:http://127.0.0.1:9000/bucket/prefix/restic/app"
        );
        let bare = Location::parse("s3://bucket").unwrap();
        assert_eq!(
            bare.join("/restic/app/").to_string(),
            "s3://bucket/restic/app"
        );
        assert_eq!(
            Location::parse("/srv/b").unwrap().join("restic/x"),
            Location::Local("/srv/b/restic/x".into())
        );
        assert_eq!(bare.join(""), bare);
    }

    #[test]
    fn parses_our_url_forms() {
        assert_eq!(
            Location::parse("/srv/repo").unwrap(),
            Location::Local("/srv/repo".into())
        );
        assert_eq!(
            Location::parse("file:///srv/repo").unwrap(),
            Location::Local("/srv/repo".into())
        );
        assert_eq!(
            Location::parse("s3://b/p/q/").unwrap(),
            s3("b", "p/q", None, None)
        );
        assert_eq!(Location::parse("s3://b").unwrap(), s3("b", "", None, None));
        assert_eq!(
            Location::parse("gs://b/x").unwrap(),
            Location::Gcs {
                bucket: "b".into(),
                prefix: "x".into()
            }
        );
        assert_eq!(
            Location::parse("az://c/x").unwrap(),
            Location::Azure {
                container: "c".into(),
                prefix: "x".into()
            }
        );
    }

    #[test]
    fn parses_restic_repository_strings_from_velero() {
        assert_eq!(
            Location::parse("s3:http://127.0.0.1:9000/velero/restic/default").unwrap(),
            s3(
                "velero",
                "restic/default",
                Some("http://127.0.0.1:9000"),
                None
            )
        );
        assert_eq!(
            Location::parse("s3:s3.amazonaws.com/b/restic/ns").unwrap(),
            s3("b", "restic/ns", None, None)
        );
        assert_eq!(
            Location::parse("s3:s3-eu-west-1.amazonaws.com/b/p/restic/ns").unwrap(),
            s3("b", "p/restic/ns", None, Some("eu-west-1"))
        );
        assert_eq!(
            Location::parse("s3:minio.local:9000/b/p").unwrap(),
            s3("b", "p", Some("https://minio.local:9000"), None)
        );
        assert_eq!(
            Location::parse("gs:bucket:/pre/restic/ns").unwrap(),
            Location::Gcs {
                bucket: "bucket".into(),
                prefix: "pre/restic/ns".into()
            }
        );
        assert_eq!(
            Location::parse("azure:cont:/restic/ns").unwrap(),
            Location::Azure {
                container: "cont".into(),
                prefix: "restic/ns".into()
            }
        );
    }

    #[test]
    fn bad_locations_name_the_input() {
        for input in [
            "",
            "s3://",
            "s3:http://host",
            "sftp:u@h:/x",
            "ftp://x/y",
            "file://rel",
        ] {
            let err = Location::parse(input).expect_err(input).to_string();
            assert!(
                err.contains(&format!("`{input}`")) || input.is_empty(),
                "{err}"
            );
        }
    }
}
