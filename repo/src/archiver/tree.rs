//! The tree stage: a directory's tree written once its last child is done.
//!
//! Input: each child's node, given by the walker (directories' subtrees, symlinks, unchanged
//! files) or by a file worker (read files) through [`Shared::complete`]. A [`Pending`]
//! directory counts its children not done, plus one while the walker lists it; whichever
//! thread brings the count to zero writes the tree (serialised, hashed, compressed in version
//! 2, sealed into the trees' pack) and hands the directory's node to its own parent, up to the
//! snapshot's root tree.
//!
//! A tree's nodes keep their slots in name order (given when the directory was listed)
//! whichever thread finishes them, so the trees (and their ids) do not depend on the order the
//! threads ran in. Directories wait in memory only until their last child is done.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustic_core::repofile::{Node, Tree};

use crate::id::TreeId;

use super::{Shared, bump, lock};

/// A directory whose tree is not written yet.
pub(super) struct Pending {
    /// Its own node (`None` for the snapshot's root).
    pub(super) node: Mutex<Option<Node>>,
    pub(super) children: Mutex<Vec<Option<Node>>>,
    /// Children not done, plus one while the walker lists it.
    pub(super) remaining: AtomicUsize,
    up: Option<(Arc<Pending>, usize)>,
    /// The parent snapshot's tree of this directory.
    before: Option<TreeId>,
}

impl Pending {
    pub(super) fn new(
        node: Option<Node>,
        up: Option<(Arc<Pending>, usize)>,
        before: Option<TreeId>,
    ) -> Arc<Self> {
        Arc::new(Self {
            node: Mutex::new(node),
            children: Mutex::new(Vec::new()),
            remaining: AtomicUsize::new(1),
            up,
            before,
        })
    }
}

impl Shared<'_> {
    /// Every child of `dir` is done: writes its tree and hands its node to its parent.
    fn finish(&self, dir: &Arc<Pending>) {
        // Slots were given in name order when the directory was listed: restic's tree order.
        let nodes: Vec<Node> = std::mem::take(&mut *lock(&dir.children))
            .into_iter()
            .flatten()
            .collect();
        let mut json = serde_json::to_vec(&Tree { nodes }).expect("a tree always serialises");
        json.push(b'\n');
        let id = TreeId::of(&json);
        match dir.before {
            None => bump(&self.counters.dirs_new, 1),
            Some(before) if before == id => bump(&self.counters.dirs_unmodified, 1),
            Some(_) => bump(&self.counters.dirs_changed, 1),
        }
        if self.claim(&id.blob()) {
            let packed = (self.env.version >= 2)
                .then(|| crate::crypto::compress(&json, self.env.level).ok())
                .flatten()
                .filter(|p| p.len() < json.len());
            let mut trees = lock(&self.trees);
            let sealed = match &packed {
                Some(p) => trees.add(&self.env.key, id.blob(), p, json.len() as u32),
                None => trees.add(&self.env.key, id.blob(), &json, 0),
            };
            bump(&self.counters.tree_blobs, 1);
            bump(&self.counters.trees_added, json.len() as u64);
            bump(&self.counters.trees_added_packed, sealed);
            if trees.full() {
                self.upload(&mut trees);
            }
        }
        let node = lock(&dir.node).take();
        match (&dir.up, node) {
            (Some((parent, slot)), Some(mut node)) => {
                node.subtree = Some(rustic_core::TreeId::from(id.to_rustic()));
                self.complete(parent, *slot, Some(node));
            }
            _ => *lock(&self.root) = Some(id),
        }
    }

    /// Child `slot` of `dir` is done (`None`: left out of the snapshot).
    pub(super) fn complete(&self, dir: &Arc<Pending>, slot: usize, node: Option<Node>) {
        lock(&dir.children)[slot] = node;
        self.release(dir);
    }

    /// One child of `dir`, or its listing, is done.
    pub(super) fn release(&self, dir: &Arc<Pending>) {
        if dir.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish(dir);
        }
    }
}
