//! Reading a snapshot's trees, depth first, through our blob index: what a restore walks.
//!
//! A tree is untrusted input (anyone who can write to the bucket can write one), so the walk
//! says exactly which directory could not be read and why, in our words, and the restore
//! checks every name before it writes anything ([`unsafe_name_in`]): a name that is not one plain
//! file name, and a name that appears twice in one directory (a symlink `x` then a directory
//! `x` would lead the second through the first), refuse the snapshot. Only the directories
//! along the walk are held: each one's nodes while its subdirectories are walked.
//!
//! Over a remote store every tree read is a round trip, and a restore walks the trees three
//! times (names, layout, metadata). So the names are checked by a crawl that reads every
//! tree once with many reads in flight ([`Trees::check_every_name`]), keeping the trees as
//! stored (encrypted and compressed, a fraction of their parsed size) in a [`TreeCache`] up
//! to a bound; the walks after it read from the cache, and only what did not fit again.
//! Over a remote store a tree missing from the cache is read with the trees stored beside it
//! in its pack ([`Trees::span`]): trees are written together, so the first read of a restore
//! brings most of a snapshot's directories, not one level of them per round trip.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use rustic_core::repofile::{Metadata, Node, NodeType, Tree};
use tokio::runtime::Handle;

use crate::crypto::MasterKey;
use crate::id::TreeId;
use crate::index::{BlobError, BlobIndex};
use crate::store::{FileKind, Store};

/// Why a walk stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WalkError {
    /// A tree blob could not be read, decrypted or parsed.
    #[error("the directory `{path}` (tree {tree}) cannot be read")]
    Unreadable {
        path: String,
        tree: TreeId,
        #[source]
        source: Box<TreeError>,
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
    /// Trees already read, looked up before the store.
    pub cache: &'a TreeCache,
    /// Bytes of a pack read at once for a tree the cache lacks, bringing the trees beside
    /// it into the cache (as far as it has room); 0: the tree alone (a local store, where a
    /// read costs no round trip).
    pub span: u32,
    /// Reads of a whole span at once (each holds its span while it is read; beyond these a
    /// tree is read alone).
    pub span_reads: &'a tokio::sync::Semaphore,
}

/// Tree blobs as stored, kept between a restore's walks up to `limit` bytes; what does not
/// fit is not kept (and is read again when walked).
pub(crate) struct TreeCache {
    blobs: Mutex<Cached>,
    limit: u64,
}

#[derive(Default)]
struct Cached {
    /// Each tree as stored, and whether its names were checked.
    trees: HashMap<TreeId, (Bytes, bool)>,
    bytes: u64,
}

impl TreeCache {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            blobs: Mutex::default(),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.blobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cache holds tree `id` and its names were checked.
    fn checked(&self, id: &TreeId) -> bool {
        self.lock()
            .trees
            .get(id)
            .is_some_and(|(_, checked)| *checked)
    }

    fn get(&self, id: &TreeId) -> Option<Bytes> {
        self.lock().trees.get(id).map(|(raw, _)| raw.clone())
    }

    /// Bytes it may still keep.
    fn room(&self) -> u64 {
        self.limit.saturating_sub(self.lock().bytes)
    }

    /// Keeps `raw` if it fits (an entry costs its bytes and about 64 more); `checked`: its
    /// names were checked.
    fn keep(&self, id: TreeId, raw: Bytes, checked: bool) {
        let mut cached = self.lock();
        if let Some(entry) = cached.trees.get_mut(&id) {
            entry.1 |= checked;
            return;
        }
        let cost = raw.len() as u64 + 64;
        if cached.bytes + cost <= self.limit {
            cached.bytes += cost;
            cached.trees.insert(id, (raw, checked));
        }
    }
}

/// Why a tree blob is not a tree.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TreeError {
    #[error(transparent)]
    Blob(#[from] BlobError),
    // The parser's words in parentheses, as the sentence has always read (not a source: that
    // would print them twice).
    #[error("it is not a valid tree ({0})")]
    NotATree(serde_json::Error),
}

/// Tree `id`, directory `path`, could not be read.
fn unreadable(id: &TreeId, path: &Path, source: impl Into<TreeError>) -> WalkError {
    WalkError::Unreadable {
        path: shown(path),
        tree: *id,
        source: Box::new(source.into()),
    }
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
    pub(crate) fn load(&self, id: &TreeId, path: &Path) -> Result<Vec<Node>, WalkError> {
        let raw = self
            .rt
            .block_on(self.fetch(id))
            .map_err(|reason| unreadable(id, path, reason))?;
        self.parse(id, &raw, path)
    }

    /// Tree `id` as stored: from the cache, or read from its pack with the trees beside it
    /// (within [`Self::span`] and the cache's room), which the cache keeps unchecked.
    async fn fetch(&self, id: &TreeId) -> Result<Bytes, BlobError> {
        if let Some(raw) = self.cache.get(id) {
            return Ok(raw);
        }
        let Ok(_spanning) = self.span_reads.try_acquire() else {
            return self.index.fetch_blob(&id.blob(), self.store).await;
        };
        let span = u64::from(self.span).min(self.cache.room());
        let near: Vec<_> = self
            .index
            .trees_near(id, u32::try_from(span).unwrap_or(u32::MAX))
            .into_iter()
            .filter(|(tree, _)| tree == id || self.cache.get(tree).is_none())
            .collect();
        let (Some((_, first)), Some((_, last))) = (near.first(), near.last()) else {
            return self.index.fetch_blob(&id.blob(), self.store).await;
        };
        if near.len() == 1 {
            return self.index.fetch_blob(&id.blob(), self.store).await;
        }
        let pack = self.index.pack_id(first.pack);
        let start = u64::from(first.offset);
        let end = u64::from(last.offset) + u64::from(last.length);
        let bytes = self
            .store
            .read_range(FileKind::Pack, &pack.to_string(), start, end - start)
            .await
            .map_err(|e| BlobError::Read {
                pack,
                source: Box::new(e),
            })?;
        let mut wanted = None;
        for (tree, loc) in &near {
            let from = (u64::from(loc.offset) - start) as usize;
            let Some(raw) = bytes.get(from..from + loc.length as usize) else {
                continue; // (a short read: the tree asked for says so below)
            };
            // Copied out: the cache accounts for what it keeps, not for the whole read.
            let raw = Bytes::copy_from_slice(raw);
            if tree == id {
                wanted = Some(raw);
            } else {
                self.cache.keep(*tree, raw, false);
            }
        }
        wanted.ok_or(BlobError::Short {
            pack,
            got: bytes.len(),
            wanted: end - start,
            start,
        })
    }

    /// The nodes of tree `id` (directory `path`) from its blob as stored.
    fn parse(&self, id: &TreeId, raw: &[u8], path: &Path) -> Result<Vec<Node>, WalkError> {
        let json = self
            .index
            .open_blob(&id.blob(), raw, self.key)
            .map_err(|e| unreadable(id, path, e))?;
        let tree: Tree = serde_json::from_slice(&json)
            .map_err(|e| unreadable(id, path, TreeError::NotATree(e)))?;
        Ok(tree.nodes)
    }

    /// Reads every tree below directory node `top` with up to `in_flight` reads at once,
    /// keeps them in the cache as far as it holds them, and checks each directory's names:
    /// the first unsafe entry found (its directory, name and why, see [`unsafe_name_in`]), in
    /// no particular order. A tree found at several paths is read and checked once while the
    /// cache holds it (its names are the same wherever it is).
    pub(crate) fn check_every_name(
        &self,
        top: &Node,
        in_flight: usize,
    ) -> Result<Option<(PathBuf, OsString, UnsafeName)>, WalkError> {
        let root = subtree(top).ok_or_else(|| WalkError::NoTree {
            path: shown(Path::new("")),
        })?;
        // Directories to read, taken from the end: the crawl goes deep first, so what waits
        // is about the siblings along one path, not a whole level of the tree.
        let mut waiting: Vec<(PathBuf, TreeId)> = vec![(PathBuf::new(), root)];
        let mut reads = FuturesUnordered::new();
        self.rt.block_on(async {
            loop {
                while reads.len() < in_flight.max(1)
                    && let Some((path, id)) = waiting.pop()
                {
                    // A tree checked and in the cache: what it holds is on its way, so a tree
                    // found again (empty directories all share one) costs nothing.
                    if self.cache.checked(&id) {
                        continue;
                    }
                    reads.push(async move {
                        let raw = self.fetch(&id).await;
                        (path, id, raw)
                    });
                }
                let Some((path, id, raw)) = reads.next().await else {
                    return Ok(None);
                };
                let raw = raw.map_err(|reason| unreadable(&id, &path, reason))?;
                let nodes = self.parse(&id, &raw, &path)?;
                self.cache.keep(id, raw, true);
                if let Some(found) = unsafe_name_in(&path, &nodes) {
                    return Ok(Some(found));
                }
                for node in nodes.iter().filter(|n| n.is_dir()) {
                    let sub = path.join(node.name());
                    let id =
                        subtree(node).ok_or_else(|| WalkError::NoTree { path: shown(&sub) })?;
                    waiting.push((sub, id));
                }
            }
        })
    }

    /// The node at `subpath` (names separated by `/`; empty: the root) of the snapshot whose
    /// root tree is `root`. The root is a directory node without metadata.
    pub(crate) fn find(&self, root: &TreeId, subpath: &str) -> Result<Node, WalkError> {
        let mut node = Node::new_node(OsStr::new(""), NodeType::Dir, Metadata::default());
        node.subtree = Some(rustic_core::TreeId::from(root.to_rustic()));
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
fn subtree(node: &Node) -> Option<TreeId> {
    if !node.is_dir() {
        return None;
    }
    node.subtree.map(|t| TreeId::from_rustic(*t))
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

/// Why `name` cannot be restored whatever else its directory holds.
fn not_a_name(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    bytes.is_empty()
        || bytes == b"."
        || bytes == b".."
        || bytes.contains(&b'/')
        || bytes.contains(&0)
}

/// The first entry of directory `parent`'s `nodes` whose name could lead a restore outside its
/// target: its directory, its name and why.
pub(crate) fn unsafe_name_in(
    parent: &Path,
    nodes: &[Node],
) -> Option<(PathBuf, OsString, UnsafeName)> {
    let mut names: HashSet<OsString> = HashSet::with_capacity(nodes.len());
    for node in nodes {
        let name = node.name().into_owned();
        if not_a_name(&name) {
            return Some((parent.to_path_buf(), name, UnsafeName::NotAName));
        }
        if !names.insert(name.clone()) {
            return Some((parent.to_path_buf(), name, UnsafeName::Twice));
        }
    }
    None
}
