//! Parent matching: a file unchanged since the parent snapshot keeps that snapshot's content
//! without being read.
//!
//! Input: the parent snapshot's tree of the directory being listed (read through the index,
//! one tree at a time as the walkers reach it) and a file's node from its `lstat`. Output:
//! whether the file is unchanged by restic's rule ([`unchanged`]: size, mtime, ctime and inode)
//! with every chunk of its old content still in the index ([`Before::all_known`]); if so the
//! walker gives the file its old content and no worker sees it.
//!
//! Runs on the walkers' threads, each with the parent tree of the directory it lists: an
//! unchanged backup of many small files is mostly this comparison.

use std::collections::HashMap;

use rustic_core::repofile::Node;

use crate::id::TreeId;
use crate::index::{BlobIndex, Hex32};

use super::{Failure, Shared};

/// A parent snapshot's directory: its nodes by name.
pub(super) type Previous = HashMap<String, Before>;

/// A node of the parent snapshot's tree: only what the comparison reads, not the format
/// engine's whole node (its type and metadata flattened into it, so buffered before parsed).
/// With index files parsed on every core as well, an unchanged backup of 200,000 files went
/// from 1.52 to 1.29 s (medians of four runs).
#[derive(serde::Deserialize)]
pub(super) struct Before {
    pub(super) name: String,
    #[serde(rename = "type")]
    pub(super) kind: Kind,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    mtime: Option<jiff::Timestamp>,
    #[serde(default)]
    ctime: Option<jiff::Timestamp>,
    #[serde(default)]
    inode: u64,
    #[serde(default)]
    pub(super) content: Option<Vec<Hex32>>,
    #[serde(default)]
    pub(super) subtree: Option<Hex32>,
}

#[derive(serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Kind {
    File,
    Dir,
    #[serde(other)]
    Other,
}

#[derive(serde::Deserialize)]
struct BeforeTree {
    nodes: Vec<Before>,
}

impl Before {
    /// Every chunk of the file's old content is still in the index (a pruned or damaged
    /// repository may have lost some).
    pub(super) fn all_known(&self, index: &BlobIndex) -> bool {
        self.content
            .as_ref()
            .is_some_and(|c| c.iter().all(|id| index.contains(&id.blob())))
    }
}

/// The parent snapshot's tree `id`, its nodes by name (none without a parent tree).
pub(super) fn load(shared: &Shared<'_>, id: Option<TreeId>) -> Result<Previous, Failure> {
    let Some(id) = id else {
        return Ok(HashMap::new());
    };
    let env = shared.env;
    let json = shared
        .index
        .read_blob(&id.blob(), &env.store, &env.key, &env.rt)
        .map_err(|e| Failure::ParentTree {
            tree: id,
            source: Box::new(e),
        })?;
    let tree: BeforeTree = serde_json::from_slice(&json)
        .map_err(|source| Failure::ParentTreeParse { tree: id, source })?;
    Ok(tree
        .nodes
        .into_iter()
        .map(|n| (n.name.clone(), n))
        .collect())
}

/// restic's rule: a file whose type, size, mtime, ctime and inode match its node in the
/// parent snapshot is not read again.
pub(super) fn unchanged(before: &Before, now: &Node) -> bool {
    before.size == now.meta.size
        && before.mtime == now.meta.mtime
        && before.ctime == now.meta.ctime
        && before.inode == now.meta.inode
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use rustic_core::repofile::{Metadata, Node, NodeType};

    use super::{Before, unchanged};

    /// A file's node as the walker makes it from `lstat`.
    // `Metadata` is non-exhaustive: it can only be built from its default, then filled in.
    #[allow(clippy::field_reassign_with_default)]
    fn now(size: u64, mtime: i64, ctime: i64, inode: u64) -> Node {
        let mut meta = Metadata::default();
        meta.size = size;
        meta.mtime = Some(jiff::Timestamp::from_second(mtime).expect("a time"));
        meta.ctime = Some(jiff::Timestamp::from_second(ctime).expect("a time"));
        meta.inode = inode;
        Node::new_node(OsStr::new("f"), NodeType::File, meta)
    }

    /// The parent snapshot's node of that file, as restic stores it.
    fn before() -> Before {
        serde_json::from_value(serde_json::json!({
            "name": "f",
            "type": "file",
            "mode": 420,
            "size": 5,
            "mtime": "2020-09-13T12:26:40Z",
            "ctime": "2020-09-13T12:26:41Z",
            "inode": 42,
            "content": ["00".repeat(32)],
        }))
        .expect("a parent node parses")
    }

    #[test]
    fn an_unchanged_file_is_recognised_by_size_times_and_inode() {
        let (mtime, ctime) = (1_600_000_000, 1_600_000_001);
        assert!(unchanged(&before(), &now(5, mtime, ctime, 42)));
    }

    #[test]
    fn a_file_changed_in_size_times_or_inode_is_read_again() {
        let (mtime, ctime) = (1_600_000_000, 1_600_000_001);
        let b = before();
        assert!(!unchanged(&b, &now(6, mtime, ctime, 42)), "size");
        assert!(!unchanged(&b, &now(5, mtime + 1, ctime, 42)), "mtime");
        assert!(!unchanged(&b, &now(5, mtime, ctime + 1, 42)), "ctime");
        assert!(
            !unchanged(&b, &now(5, mtime, ctime, 43)),
            "inode (replaced)"
        );
    }
}
