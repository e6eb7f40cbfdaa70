//! `lifeboat backup-location create|get|set|delete` and `lifeboat snapshot-location
//! create|get|set`, with Velero's flags, table and `-o json|yaml` output.
//!
//! Exactly one backup storage location is the default: `--default` on create or set moves the
//! mark, clearing it from every other location.
//!
//! One file per resource ([`backup`], [`snapshot`]); here is what both take: `--credential`
//! and `--cacert`.

mod backup;
mod snapshot;

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use k8s_openapi::api::core::v1::SecretKeySelector;

pub(crate) use backup::{BackupLocationArgs, run_backup_location};
pub(crate) use snapshot::{SnapshotLocationArgs, run_snapshot_location};

/// What to do about a location that already exists.
const SET_OR_DELETE: &str = "change it with `set` or delete it first";

fn parse_credential(text: &str) -> Result<SecretKeySelector> {
    match text.split_once('=') {
        Some((name, key)) if !name.trim().is_empty() && !key.trim().is_empty() => {
            Ok(SecretKeySelector {
                name: name.trim().to_string(),
                key: key.trim().to_string(),
                optional: None,
            })
        }
        _ => bail!("--credential takes secret-name=key, not `{text}`"),
    }
}

fn read_cacert(path: &PathBuf) -> Result<String> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        bail!("{} is not a PEM certificate", path.display());
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_secret_equals_key() {
        let sel = parse_credential("bsl-creds=cloud").unwrap();
        assert_eq!(
            (sel.name.as_str(), sel.key.as_str()),
            ("bsl-creds", "cloud")
        );
        assert!(parse_credential("bsl-creds").is_err());
        assert!(parse_credential("=cloud").is_err());
    }
}
