//! Snapshots as the engine's callers see them, and how they are selected.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};

/// A snapshot in the repository.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub time: jiff::Timestamp,
    /// The root tree.
    pub tree: BlobId,
    /// The stored paths (the logical path with `--as-path`).
    pub paths: Vec<String>,
    pub hostname: String,
    pub username: String,
    pub tags: Vec<String>,
    pub parent: Option<SnapshotId>,
}

impl Snapshot {
    pub(crate) fn from_rustic(s: &rustic_core::repofile::SnapshotFile) -> Self {
        fn id<T: std::str::FromStr>(hex: &str) -> T {
            match hex.parse() {
                Ok(id) => id,
                Err(_) => unreachable!("rustic_core ids are 64 hex digits"),
            }
        }
        Self {
            id: id(s.id.to_hex().as_str()),
            time: s.time.timestamp(),
            tree: id(s.tree.to_hex().as_str()),
            paths: s.paths.iter().cloned().collect(),
            hostname: s.hostname.clone(),
            username: s.username.clone(),
            tags: s.tags.iter().cloned().collect(),
            parent: s.parent.map(|p| id(p.to_hex().as_str())),
        }
    }
}

/// Which snapshots to consider: all given tags must be present, and the host must match.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub tags: Vec<String>,
    pub host: Option<String>,
}

impl SnapshotFilter {
    /// Whether `s` passes the filter.
    pub fn matches(&self, s: &Snapshot) -> bool {
        self.host.as_ref().is_none_or(|h| &s.hostname == h)
            && self.tags.iter().all(|t| s.tags.contains(t))
    }
}

/// Resolves `latest`, a full id or a unique id prefix among `snapshots`.
pub(crate) fn resolve<'a>(snapshots: &'a [Snapshot], query: &str) -> Result<&'a Snapshot> {
    let not_found = || Error::SnapshotNotFound {
        query: query.to_string(),
    };
    if query == "latest" {
        return snapshots
            .iter()
            .max_by_key(|s| s.time)
            .ok_or_else(not_found);
    }
    if query.is_empty() || !query.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let query_lc = query.to_ascii_lowercase();
    let mut matches = snapshots
        .iter()
        .filter(|s| s.id.to_string().starts_with(&query_lc));
    let first = matches.next().ok_or_else(not_found)?;
    if matches.next().is_some() {
        return Err(Error::SnapshotAmbiguous {
            query: query.to_string(),
        });
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(hex_id: &str, secs: i64, host: &str, tags: &[&str]) -> Snapshot {
        Snapshot {
            id: hex_id.repeat(64 / hex_id.len()).parse().expect("hex"),
            time: jiff::Timestamp::from_second(secs).expect("valid"),
            tree: "00".repeat(32).parse().expect("hex"),
            paths: vec!["/data".into()],
            hostname: host.into(),
            username: "u".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            parent: None,
        }
    }

    #[test]
    fn resolves_latest_full_ids_and_unique_prefixes() {
        let all = [
            snap("ab", 10, "h", &[]),
            snap("ac", 30, "h", &[]),
            snap("bd", 20, "h", &[]),
        ];
        assert_eq!(
            resolve(&all, "latest").expect("latest").time.as_second(),
            30
        );
        assert_eq!(resolve(&all, "bd").expect("prefix").time.as_second(), 20);
        assert_eq!(
            resolve(&all, &"ab".repeat(32))
                .expect("full")
                .time
                .as_second(),
            10
        );
        assert!(matches!(
            resolve(&all, "a"),
            Err(Error::SnapshotAmbiguous { .. })
        ));
        assert!(matches!(
            resolve(&all, "ff"),
            Err(Error::SnapshotNotFound { .. })
        ));
        assert!(matches!(
            resolve(&all, "../x"),
            Err(Error::SnapshotNotFound { .. })
        ));
        assert!(matches!(
            resolve(&[], "latest"),
            Err(Error::SnapshotNotFound { .. })
        ));
    }

    #[test]
    fn filter_needs_every_tag_and_the_host() {
        let s = snap("ab", 1, "node-1", &["backup=b1", "ns=default"]);
        assert!(SnapshotFilter::default().matches(&s));
        assert!(
            SnapshotFilter {
                tags: vec!["ns=default".into()],
                host: Some("node-1".into())
            }
            .matches(&s)
        );
        assert!(
            !SnapshotFilter {
                tags: vec!["ns=default".into(), "x".into()],
                host: None
            }
            .matches(&s)
        );
        assert!(
            !SnapshotFilter {
                tags: vec![],
                host: Some("node-2".into())
            }
            .matches(&s)
        );
    }
}
