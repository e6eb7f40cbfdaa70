//! Test helpers: repositories in states a well-behaved writer never produces.

use std::ffi::OsStr;
use std::io::Cursor;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{ReadSource, ReadSourceEntry, RusticResult, SnapshotOptions};

use super::{Context, Repository};
use crate::error::Result;
use crate::id::SnapshotId;

/// A lock held by a test, released on `release` (or in the background when dropped).
#[derive(Debug)]
pub struct HeldLock(crate::lock::LockGuard);

impl HeldLock {
    /// Removes the lock file.
    pub async fn release(self) -> Result<()> {
        let location = self.0.location();
        self.0
            .release()
            .await
            .map_err(|e| crate::error::Error::store(location, e))
    }
}

/// Takes a lock the way an operation does, and holds it until released.
pub async fn hold_lock(repo: &Repository, exclusive: bool) -> Result<HeldLock> {
    let guard = repo
        .locks
        .acquire(
            exclusive,
            &repo.opts.lock,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await?;
    Ok(HeldLock(guard))
}

struct Files(Vec<(PathBuf, Node, Vec<u8>)>);

impl ReadSource for Files {
    type Open = Cursor<Vec<u8>>;
    type Iter = std::vec::IntoIter<RusticResult<ReadSourceEntry<Cursor<Vec<u8>>>>>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(None)
    }

    fn entries(&self) -> Self::Iter {
        self.0
            .iter()
            .map(|(path, node, data)| {
                Ok(ReadSourceEntry {
                    path: path.clone(),
                    node: node.clone(),
                    open: Some(Cursor::new(data.clone())),
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
    }
}

/// An entry of a crafted tree: stored as given, in the given order — duplicate names,
/// names no file system allows and symlinks anywhere included.
#[derive(Debug, Clone)]
pub enum Crafted {
    /// A file with `data` and permission bits `mode`.
    File {
        name: Vec<u8>,
        data: Vec<u8>,
        mode: u32,
    },
    /// A directory with permission bits `mode`.
    Dir {
        name: Vec<u8>,
        mode: u32,
        entries: Vec<Crafted>,
    },
    /// A symlink to `target`.
    Symlink { name: Vec<u8>, target: Vec<u8> },
}

/// Writes packs, an index file and a snapshot of `/crafted` whose root tree holds
/// `entries` exactly as given: what a hostile writer of the bucket could store.
#[allow(clippy::field_reassign_with_default)]
pub async fn snapshot_of_tree(repo: &Repository, entries: &[Crafted]) -> Result<SnapshotId> {
    use crate::archiver::Packer;
    use crate::crypto::{self, MasterKey};
    use crate::id::{BlobId, TreeId};
    use crate::index::IndexWriter;
    use crate::store::FileKind;

    struct Writer {
        key: MasterKey,
        data: Packer,
        trees: Packer,
        seen: std::collections::HashSet<BlobId>,
    }
    impl Writer {
        fn node(&mut self, entry: &Crafted) -> Node {
            let mut meta = Metadata::default();
            meta.mtime = Some(jiff::Timestamp::from_second(1_600_000_000).expect("a time"));
            meta.atime = meta.mtime;
            match entry {
                Crafted::File { name, data, mode } => {
                    meta.size = data.len() as u64;
                    meta.mode = Some(*mode);
                    let mut node = Node::new_node(OsStr::from_bytes(name), NodeType::File, meta);
                    let mut content = Vec::new();
                    if !data.is_empty() {
                        let id = BlobId::of(data);
                        if self.seen.insert(id) {
                            self.data.add(&self.key, id, data, 0);
                        }
                        content.push(rustic_core::DataId::from(id.to_rustic()));
                    }
                    node.content = Some(content);
                    node
                }
                Crafted::Dir {
                    name,
                    mode,
                    entries,
                } => {
                    meta.mode = Some((1 << 31) | *mode);
                    let id = self.tree(entries);
                    let mut node = Node::new_node(OsStr::from_bytes(name), NodeType::Dir, meta);
                    node.subtree = Some(rustic_core::TreeId::from(id.to_rustic()));
                    node
                }
                Crafted::Symlink { name, target } => {
                    meta.mode = Some((1 << 27) | 0o777);
                    let link = NodeType::from_link(std::path::Path::new(OsStr::from_bytes(target)));
                    Node::new_node(OsStr::from_bytes(name), link, meta)
                }
            }
        }

        fn tree(&mut self, entries: &[Crafted]) -> TreeId {
            let nodes = entries.iter().map(|e| self.node(e)).collect();
            let mut json = serde_json::to_vec(&rustic_core::repofile::Tree { nodes })
                .expect("a tree serialises");
            json.push(b'\n');
            let id = TreeId::of(&json);
            if self.seen.insert(id.blob()) {
                self.trees.add(&self.key, id.blob(), &json, 0);
            }
            id
        }
    }

    let key = MasterKey::from_rustic(&repo.key);
    let mut w = Writer {
        key: key.clone(),
        data: Packer::alone(false),
        trees: Packer::alone(true),
        seen: std::collections::HashSet::new(),
    };
    let root = w.tree(entries);
    let store = repo.store();
    let mut index = IndexWriter::default();
    for packer in [&mut w.data, &mut w.trees] {
        if let Some(pack) = packer.finish(&key).map_err(crate::error::Error::engine)? {
            store
                .write(
                    FileKind::Pack,
                    &pack.id.to_string(),
                    vec![pack.bytes.into()],
                )
                .await
                .map_err(|e| crate::error::Error::store(store.location(), e))?;
            index.add(pack.id, pack.blobs);
        }
    }
    if let Some((name, bytes)) = index.take_file(&key, repo.version) {
        store
            .write(FileKind::Index, &name, vec![bytes])
            .await
            .map_err(|e| crate::error::Error::store(store.location(), e))?;
    }
    let mut snap = SnapshotOptions::default()
        .to_snapshot()
        .map_err(crate::error::Error::engine)?;
    snap.hostname = "crafted".into();
    snap.paths.add("/crafted".into());
    snap.tree = rustic_core::TreeId::from(root.to_rustic());
    let json = serde_json::to_vec(&snap).expect("a snapshot serialises");
    let bytes = key.encrypt(&crypto::pack_json(repo.version, &json));
    let id = SnapshotId::of(&bytes);
    store
        .write(FileKind::Snapshot, &id.to_string(), vec![bytes.into()])
        .await
        .map_err(|e| crate::error::Error::store(store.location(), e))?;
    Ok(id)
}

/// Writes a snapshot of `/crafted` holding one file per `(name, content)`, with the names
/// stored verbatim — also names no file system allows (`..`, `a/b`, NUL), to prove that
/// restore refuses them.
// `Metadata` is non-exhaustive: it can only be built from its default, then filled in.
#[allow(clippy::field_reassign_with_default)]
pub async fn snapshot_with_names(
    repo: &Repository,
    files: &[(&[u8], &[u8])],
) -> Result<SnapshotId> {
    let entries: Vec<(PathBuf, Node, Vec<u8>)> = files
        .iter()
        .enumerate()
        .map(|(i, (name, data))| {
            let mut meta = Metadata::default();
            meta.size = data.len() as u64;
            meta.mode = Some(0o100_644);
            meta.mtime = Some(jiff::Timestamp::now());
            let node = Node::new_node(OsStr::from_bytes(name), NodeType::File, meta);
            (
                PathBuf::from(format!("/crafted/f{i:04}")),
                node,
                data.to_vec(),
            )
        })
        .collect();
    let snap = repo
        .run("backup", &Context::default(), move |r| {
            let r = r.to_indexed_ids()?;
            let snap = SnapshotOptions::default().to_snapshot()?;
            let opts = rustic_core::BackupOptions::default();
            Ok(r.archive(&opts, &Files(entries), snap, &[PathBuf::from("/crafted")])?)
        })
        .await?;
    Ok(crate::snapshot::Snapshot::from_rustic(&snap).id)
}
