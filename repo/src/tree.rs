//! Reading a snapshot's trees, depth first, through our blob index: what a restore walks.
//!
//! A tree is untrusted input (anyone who can write to the bucket can write one), so the walk
//! says exactly which directory could not be read and why, in our words, and the restore
//! checks every name before it writes anything ([`check_names`]): a name that is not one plain
//! file name, and a name that appears twice in one directory (a symlink `x` then a directory
//! `x` would lead the second through the first), refuse the snapshot. Only the directories
//! along the walk are held: each one's nodes while its subdirectories are walked.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustic_core::repofile::{Metadata, Node, NodeType, Tree};
use tokio::runtime::Handle;

use crate::crypto::MasterKey;
use crate::index::BlobIndex;
use crate::store::Store;

/// Why a walk stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WalkError {
    /// A tree blob could not be read, decrypted or parsed.
    #[error("the directory `{path}` (tree {tree}) cannot be read: {reason}")]
    Unreadable {
        path: String,
        tree: String,
        reason: String,
    },
    /// A directory node without a tree.
    #[error("the directory `{path}` has no tree")]
    NoTree { path: String },
    /// A path asked for is not in the snapshot.
    #[error("`{path}` is not in the snapshot")]
    NotFound { path: String },
}

/// What the walk reads trees with.
#[derive(Clone, Copy)]
pub(crate) struct Trees<'a> {
    pub index: &'a BlobIndex,
    pub store: &'a Store,
    pub key: &'a MasterKey,
    pub rt: &'a Handle,
}

fn shown(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        "/".into()
    } else {
        path.display().to_string()
    }
}

impl Trees<'_> {
    /// The nodes of tree `id`, which is directory `path`.
    pub(crate) fn load(&self, id: &[u8; 32], path: &Path) -> Result<Vec<Node>, WalkError> {
        let unreadable = |reason: String| WalkError::Unreadable {
            path: shown(path),
            tree: hex::encode(id),
            reason,
        };
        let json = self
            .index
            .read_blob(id, self.store, self.key, self.rt)
            .map_err(unreadable)?;
        let tree: Tree = serde_json::from_slice(&json)
            .map_err(|e| unreadable(format!("it is not a valid tree ({e})")))?;
        Ok(tree.nodes)
    }

    /// The node at `subpath` (names separated by `/`; empty: the root) of the snapshot whose
    /// root tree is `root`. The root is a directory node without metadata.
    pub(crate) fn find(&self, root: &[u8; 32], subpath: &str) -> Result<Node, WalkError> {
        let mut node = Node::new_node(OsStr::new(""), NodeType::Dir, Metadata::default());
        node.subtree = Some(rustic_core::TreeId::from(rustic_core::Id::new(*root)));
        let mut at = PathBuf::new();
        for name in subpath.split('/').filter(|n| !n.is_empty()) {
            let Some(tree) = subtree(&node) else {
                return Err(WalkError::NotFound {
                    path: subpath.into(),
                });
            };
            let nodes = self.load(&tree, &at)?;
            node = nodes
                .into_iter()
                .find(|n| n.name().as_bytes() == name.as_bytes())
                .ok_or_else(|| WalkError::NotFound {
                    path: subpath.into(),
                })?;
            at.push(name);
        }
        Ok(node)
    }

    /// Every entry below directory node `top`, depth first, each directory before what it
    /// holds, with the path of the directory holding it (relative to `top`).
    pub(crate) fn walk(&self, top: &Node) -> Walk<'_> {
        Walk {
            trees: *self,
            stack: Vec::new(),
            first: Some(top.clone()),
        }
    }
}

/// The id of a directory node's tree.
fn subtree(node: &Node) -> Option<[u8; 32]> {
    if !node.is_dir() {
        return None;
    }
    node.subtree.map(|t| crate::id::rustic_bytes(*t))
}

/// See [`Trees::walk`].
pub(crate) struct Walk<'a> {
    trees: Trees<'a>,
    /// Directories being walked: their path and the nodes not visited yet.
    stack: Vec<(PathBuf, std::vec::IntoIter<Node>)>,
    /// The top directory, until its tree is read.
    first: Option<Node>,
}

impl Walk<'_> {
    fn enter(&mut self, path: PathBuf, node: &Node) -> Result<(), WalkError> {
        let id = subtree(node).ok_or_else(|| WalkError::NoTree { path: shown(&path) })?;
        let nodes = self.trees.load(&id, &path)?;
        self.stack.push((path, nodes.into_iter()));
        Ok(())
    }
}

impl Iterator for Walk<'_> {
    type Item = Result<(PathBuf, Node), WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(top) = self.first.take()
            && let Err(e) = self.enter(PathBuf::new(), &top)
        {
            return Some(Err(e));
        }
        loop {
            let (dir, nodes) = self.stack.last_mut()?;
            let Some(node) = nodes.next() else {
                self.stack.pop();
                continue;
            };
            let dir = dir.clone();
            if node.is_dir()
                && let Err(e) = self.enter(dir.join(node.name()), &node)
            {
                self.stack.clear();
                return Some(Err(e));
            }
            return Some(Ok((dir, node)));
        }
    }
}

/// Why a name refuses a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsafeName {
    /// Empty, `.`, `..`, or holding `/` or NUL: not one plain file name.
    NotAName,
    /// The same name twice in one directory.
    Twice,
}

impl std::fmt::Display for UnsafeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnsafeName::NotAName => "which is not a plain file name",
            UnsafeName::Twice => "twice",
        })
    }
}

/// The first entry whose name could lead a restore outside its target: its directory, its
/// name and why. `entries` come as [`Trees::walk`] gives them: directory and node.
pub(crate) fn check_names<E>(
    entries: impl Iterator<Item = Result<(PathBuf, Node), E>>,
    mut counted: impl FnMut(&Node),
) -> Result<Option<(PathBuf, OsString, UnsafeName)>, E> {
    // The names seen in each directory along the walk.
    let mut seen: Vec<(PathBuf, HashSet<OsString>)> = vec![(PathBuf::new(), HashSet::new())];
    for entry in entries {
        let (parent, node) = entry?;
        let name = node.name().into_owned();
        let bytes = name.as_bytes();
        if bytes.is_empty()
            || bytes == b"."
            || bytes == b".."
            || bytes.contains(&b'/')
            || bytes.contains(&0)
        {
            return Ok(Some((parent, name, UnsafeName::NotAName)));
        }
        while seen.len() > 1 && seen.last().is_some_and(|(dir, _)| *dir != parent) {
            seen.pop();
        }
        let (_, names) = seen.last_mut().expect("the root stays");
        if !names.insert(name.clone()) {
            return Ok(Some((parent, name, UnsafeName::Twice)));
        }
        counted(&node);
        if node.is_dir() {
            seen.push((parent.join(&name), HashSet::new()));
        }
    }
    Ok(None)
}
