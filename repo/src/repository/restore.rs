//! Restore: the snapshot's trees read and every name checked before anything is written,
//! then the restorer ([`crate::restorer`]) writes files only beneath the target.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rustic_core::repofile::Node;

use crate::beneath::Beneath;
use crate::budget::{Hold, INDEX_LOAD_MIB, RestoreBuffers, mib_of};
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::TreeId;
use crate::index::BlobIndex;
use crate::restorer::{self, RestoreOptions as RestoreRun, Restorer};
use crate::tree::{TreeCache, Trees, WalkError, unsafe_name_in};

use super::{
    Context, INDEX_READS, MAX_CHUNK, Repository, RestoreOptions, RestoreStats, TREE_CACHE_MIB,
    TREE_READS, beyond, on_thread, reserve_blocking,
};

impl Repository {
    /// Restores `snapshot` (`latest`, an id or a prefix), or its `subpath`, into `target`,
    /// under a shared lock. Every entry name is checked first: a name that would leave the
    /// target (`..`, `/`, NUL, empty) or that appears twice in a directory fails the restore
    /// before anything is written, the target itself included; and nothing is written outside
    /// the target whatever it already holds ([`crate::beneath`]). Damaged data leaves out the
    /// files holding it, listed in [`RestoreStats::unrestored`]; everything else is restored.
    pub async fn restore(
        &self,
        snapshot: &str,
        subpath: Option<&str>,
        target: &Path,
        opts: &RestoreOptions,
        ctx: &Context,
    ) -> Result<RestoreStats> {
        let started = Instant::now();
        let traffic = self.store.traffic();
        // The snapshot and the index files' names are read while the lock is taken.
        let listed = async {
            tokio::try_join!(
                self.find_snapshot(snapshot, &opts.filter),
                self.index_files()
            )
        };
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        // Every core decrypting and decompressing (never more than 8 threads), the store's
        // reads in flight, and the trees kept between the walks.
        let full = RestoreBuffers {
            readers: cores.clamp(1, 8),
            reads: self.pack_reads(),
            trees_mib: TREE_CACHE_MIB,
            batch: opts.batch.unwrap_or(restorer::BATCH).max(1),
        };
        let smallest = RestoreBuffers {
            readers: 1,
            reads: 1,
            trees_mib: 0,
            batch: full.batch.min(16_384),
        };
        // A read taken as it arrives holds a connection's buffers, not its length: it may
        // span a whole pack (restic's packs reach 128 MiB).
        let (read_cost, max_read) = if self.store.streams() {
            (restorer::STREAMED_READ, 128 << 20)
        } else {
            (restorer::MAX_READ, restorer::MAX_READ)
        };
        let budget = self.opts.memory.clone();
        let subpath = subpath.unwrap_or("").trim_start_matches('/').to_string();
        let key = MasterKey::from_rustic(&self.key);
        let target = target.to_path_buf();
        let (snap_id, written, left_out) = self
            .locked_after(false, ctx, listed, async |ctx, (snap, index_files)| {
                // The index, estimated before it is loaded: a restore that cannot fit fails
                // before it starts (and before the target is made).
                let index_mib = self.index_estimate(&index_files);
                if let Some(budget) = &budget {
                    let smallest_mib = smallest.mib(read_cost, MAX_CHUNK);
                    let index_text = format!("~{index_mib} MiB");
                    beyond(budget, "restore", &index_text, index_mib, smallest_mib)?;
                }
                // A snapshot's tree is a tree blob.
                let (snap_id, root) = (snap.id, TreeId::from_bytes(*snap.tree.as_bytes()));
                let loading = self.reserve(INDEX_LOAD_MIB + index_mib, ctx).await?;
                let index = BlobIndex::load(&self.store, &key, index_files, INDEX_READS)
                    .await
                    .map_err(|e| self.index_error(e))?;
                drop(loading);
                let (store, rt) = (self.store.clone(), self.rt.clone());
                let (progress, cancel) = (ctx.progress.clone(), ctx.cancel.clone());
                on_thread("restore", move || {
                    let max_blob = MAX_CHUNK;
                    let index_mib = mib_of(index.memory());
                    let (buffers, _held) = match &budget {
                        None => (full, Hold::none()),
                        Some(budget) => {
                            let buffers = RestoreBuffers::fitting(
                                full,
                                read_cost,
                                max_blob,
                                budget.free().saturating_sub(index_mib),
                            )
                            .unwrap_or(smallest);
                            let mib = index_mib + buffers.mib(read_cost, max_blob);
                            (buffers, reserve_blocking(&rt, budget, mib, &cancel)?)
                        }
                    };
                    let ropts = RestoreRun {
                        readers: buffers.readers,
                        reads: buffers.reads,
                        max_read,
                        batch: buffers.batch,
                    };
                    let cache = TreeCache::new(u64::from(buffers.trees_mib) << 20);
                    // Over a remote store a missing tree is read with its neighbours, in
                    // spans the size (and number) of the budget's reads.
                    let span_reads = tokio::sync::Semaphore::new(if store.streams() {
                        buffers.reads
                    } else {
                        0
                    });
                    let trees = Trees {
                        index: &index,
                        store: &store,
                        key: &key,
                        rt: &rt,
                        cache: &cache,
                        span: u32::try_from(read_cost).unwrap_or(u32::MAX),
                        span_reads: &span_reads,
                    };
                    let walk_error = |e: WalkError| match e {
                        WalkError::NotFound { .. } => Error::PathNotInSnapshot {
                            snapshot: snap_id,
                            path: subpath.clone(),
                        },
                        // The public error holds the detail as text: the walk's error and its
                        // causes, each once.
                        e => Error::TreeUnreadable {
                            snapshot: snap_id,
                            detail: crate::error_chain(&e),
                        },
                    };
                    let node = trees.find(&root, &subpath).map_err(walk_error)?;
                    let single = (!node.is_dir()).then(|| PathBuf::from(node.name().into_owned()));
                    // Every name first, before the target is made: the restore writes as it
                    // walks, so a bad name must be found before it starts. This crawl reads
                    // every tree with the store's reads in flight and keeps them for the
                    // walks after it (as far as the cache holds them).
                    let found = match &single {
                        Some(_) => Ok(unsafe_name_in(Path::new(""), std::slice::from_ref(&node))),
                        None => trees.check_every_name(&node, ropts.reads.max(TREE_READS)),
                    };
                    if let Some((parent, name, why)) = found.map_err(walk_error)? {
                        return Err(Error::UnsafeEntry {
                            snapshot: snap_id,
                            parent: parent.display().to_string(),
                            name: name.to_string_lossy().into_owned(),
                            why,
                        });
                    }
                    let target_err = |e| Error::Target {
                        path: target.display().to_string(),
                        source: e,
                    };
                    std::fs::create_dir_all(&target).map_err(target_err)?;
                    let beneath = Beneath::open(&target).map_err(target_err)?;
                    let mut restorer = Restorer::new(&index, beneath);
                    let contents = |restorer: &mut Restorer<'_>| {
                        restorer
                            .write_contents(&store, &key, &rt, ropts, progress.as_ref(), &cancel)
                            .map_err(|e| Error::Restore(e.into()))
                    };
                    match &single {
                        Some(name) => restorer
                            .lay_out(name, &node)
                            .map_err(|e| Error::Restore(e.into()))?,
                        None => {
                            for item in trees.walk(&node) {
                                let (dir, entry) = item.map_err(walk_error)?;
                                let path = dir.join(entry.name());
                                restorer
                                    .lay_out(&path, &entry)
                                    .map_err(|e| Error::Restore(e.into()))?;
                                if restorer.batch_full(ropts) {
                                    contents(&mut restorer)?;
                                }
                            }
                        }
                    }
                    contents(&mut restorer)?;
                    // Metadata last, each directory after everything in it.
                    match &single {
                        Some(name) => restorer.set_metadata(name, &node),
                        None => {
                            let mut dirs_open: Vec<(PathBuf, Node)> = Vec::new();
                            for item in trees.walk(&node) {
                                let (dir, entry) = item.map_err(walk_error)?;
                                let path = dir.join(entry.name());
                                while let Some((open, _)) = dirs_open.last() {
                                    if path.starts_with(open) {
                                        break;
                                    }
                                    let (open, dnode) = dirs_open.pop().expect("not empty");
                                    restorer.set_metadata(&open, &dnode);
                                }
                                if entry.is_dir() {
                                    dirs_open.push((path, entry));
                                } else {
                                    restorer.set_metadata(&path, &entry);
                                }
                            }
                            for (dir, dnode) in dirs_open.into_iter().rev() {
                                restorer.set_metadata(&dir, &dnode);
                            }
                            // The target takes the restored directory's own owner, mode and
                            // times: a volume's root (a database's data directory must be
                            // 0700 and its user's) comes back as it was.
                            restorer.set_metadata(Path::new(""), &node);
                        }
                    }
                    Ok((snap_id, restorer.written(), restorer.left_out))
                })
                .await?
            })
            .await?;
        Ok(RestoreStats {
            snapshot: snap_id,
            files: written.files,
            dirs: written.dirs,
            bytes: written.bytes,
            duration_secs: started.elapsed().as_secs_f64(),
            unrestored: left_out.listed,
            unrestored_count: left_out.count,
            traffic: self.store.traffic().since(traffic),
        })
    }
}
