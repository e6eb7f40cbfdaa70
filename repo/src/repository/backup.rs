//! Backup: the parent chosen, the index loaded and the memory budget reserved, then the
//! archiver ([`crate::archiver`]) writes packs, trees and index files, and the snapshot is
//! written last, so it only ever names stored data.

use std::path::Path;
use std::time::{Duration, Instant};

use rustic_core::SnapshotOptions;
use rustic_core::repofile::SnapshotFile;

use crate::archiver::{self, Failure};
use crate::budget::{BackupBuffers, Hold, INDEX_LOAD_MIB, mib_of};
use crate::chunker::{Rabin, Sizes};
use crate::crypto::{self, MasterKey};
use crate::error::{Error, Result};
use crate::id::{SnapshotId, TreeId};
use crate::index::BlobIndex;
use crate::snapshot::{Snapshot, SnapshotFilter};
use crate::source::{Warning, Warnings};
use crate::store::{FileKind, TrafficCount};

use super::options::default_uploads;
use super::{
    BackupOptions, BackupStats, Context, INDEX_READS, MAX_CHUNK, ParentChoice, Repository,
    ZSTD_LEVEL, beyond, on_engine_thread, reserve_blocking, store_error,
};

impl Repository {
    /// Backs up the directory (or file) `source` into a new snapshot, under a shared lock.
    pub async fn backup(
        &self,
        source: &Path,
        opts: &BackupOptions,
        ctx: &Context,
    ) -> Result<BackupStats> {
        let started = Instant::now();
        let traffic = self.store.traffic();
        let source = std::fs::canonicalize(source).map_err(|e| Error::Source {
            path: source.display().to_string(),
            source: e,
        })?;
        if let Some(p) = &opts.as_path
            && !p.is_absolute()
        {
            return Err(Error::InvalidOption(format!(
                "the path to store the backup as must be absolute, got `{}`",
                p.display()
            )));
        }
        let opts = opts.clone();
        let stored_root = opts.as_path.clone().unwrap_or_else(|| source.clone());
        let host = opts
            .host
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
        let warnings = Warnings::new(source.clone(), stored_root.clone());
        let w = warnings.clone();
        // The parent and the index files' names are read while the lock is taken.
        let (auto_host, auto_paths) = (
            host.clone(),
            vec![stored_root.to_string_lossy().into_owned()],
        );
        let parent = async {
            Ok(match &opts.parent {
                ParentChoice::None => None,
                ParentChoice::Snapshot(q) => {
                    Some(self.find_snapshot(q, &SnapshotFilter::default()).await?)
                }
                // restic's choice: the newest snapshot of this host and these paths.
                ParentChoice::Auto => self
                    .snapshots(&SnapshotFilter::default())
                    .await?
                    .into_iter()
                    .filter(|s| s.hostname == auto_host && s.paths == auto_paths)
                    .max_by_key(|s| s.time),
            })
        };
        let listed = async { tokio::try_join!(parent, self.index_files()) };
        let snap = self
            .locked_after(false, ctx, listed, async |ctx, (parent, index_files)| {
                let key = MasterKey::from_rustic(&self.key);
                // A backup that cannot fit beside the index fails before loading it.
                if let Some(budget) = &self.opts.memory {
                    let index_mib = self.index_estimate(&index_files);
                    let smallest = BackupBuffers::smallest().mib(MAX_CHUNK as usize);
                    let index_text = format!("~{index_mib} MiB");
                    beyond(budget, "backup", &index_text, index_mib, smallest)?;
                }
                let loading = self.reserve(INDEX_LOAD_MIB, ctx).await?;
                let index = BlobIndex::load(&self.store, &key, index_files, INDEX_READS)
                    .await
                    .map_err(|e| self.index_error(e))?;
                drop(loading);
                let store = self.store.clone();
                let rt = self.rt.clone();
                let version = self.version;
                let budget = self.opts.memory.clone();
                let cores = std::thread::available_parallelism().map_or(2, usize::from);
                let uploads = default_uploads(self.location());
                let (cancel, progress) = (ctx.cancel.clone(), ctx.progress.clone());
                let config = self.config.clone();
                on_engine_thread("backup", move || {
                    if config.chunker() != rustic_core::repofile::Chunker::Rabin {
                        return Err(Error::engine(
                            "this repository uses a fixed-size chunker, which lifeboat does not write",
                        )
                        .into());
                    }
                    let sizes = Sizes {
                        min: config.chunk_min_size(),
                        max: config.chunk_max_size(),
                        average: config.chunk_size(),
                    };
                    let level = match config.zstd()? {
                        None => None,
                        Some(0) => Some(ZSTD_LEVEL),
                        Some(l) => Some(l),
                    };
                    // The index for as long as the backup runs, and the largest buffers that
                    // fit beside it in what is free now (the smallest, waited for, if none do).
                    let (buffers, _held) = match &budget {
                        None => (BackupBuffers::full(cores, uploads), Hold::none()),
                        Some(budget) => {
                            let index_mib = mib_of(index.memory());
                            let smallest = BackupBuffers::smallest().mib(sizes.max);
                            let index_text =
                                format!("{} blobs, {index_mib} MiB", index.len());
                            beyond(budget, "backup", &index_text, index_mib, smallest)?;
                            let buffers = BackupBuffers::fitting(
                                cores,
                                uploads,
                                sizes.max,
                                budget.free().saturating_sub(index_mib),
                            )
                            .unwrap_or_else(BackupBuffers::smallest);
                            let hold = reserve_blocking(
                                &rt,
                                budget,
                                index_mib + buffers.mib(sizes.max),
                                &cancel,
                            )?;
                            (buffers, hold)
                        }
                    };
                    let env = archiver::Env {
                        store: store.clone(),
                        rt,
                        key: key.clone(),
                        version: if level.is_some() { version } else { 1 },
                        rabin: Rabin::new(config.poly()?, sizes),
                        level: level.unwrap_or(0),
                        buffers,
                        cancel,
                        progress,
                        warnings: w,
                    };
                    let plan = archiver::Plan {
                        source: &source,
                        stored: &stored_root,
                        parent: parent.as_ref().map(|p| TreeId::from_bytes(*p.tree.as_bytes())),
                    };
                    let (root, summary) =
                        archiver::archive(&env, &index, &plan).map_err(|f| match f {
                            Failure::Cancelled => Error::Cancelled,
                            Failure::Store(e) => store_error(&store, e),
                            other => Error::Backup(other.into()),
                        })?;
                    let mut snap = SnapshotOptions::default().to_snapshot()?;
                    snap.hostname = host;
                    for tag in &opts.tags {
                        snap.tags.add(tag.clone());
                    }
                    snap.paths.add(stored_root.to_string_lossy().into_owned());
                    snap.tree = rustic_core::TreeId::from(root.to_rustic());
                    snap.parent = parent.map(|p| {
                        rustic_core::repofile::SnapshotId::from(rustic_core::Id::new(
                            *p.id.as_bytes(),
                        ))
                    });
                    snap.summary = Some(summary_of(&summary, &snap.time, started));
                    // Written as the last file: a snapshot only ever names stored data.
                    let json = serde_json::to_vec(&snap)
                        .map_err(|e| Error::engine(format!("cannot encode the snapshot: {e}")))?;
                    let bytes = key.encrypt(&crypto::pack_json(version, &json));
                    let id = SnapshotId::of(&bytes);
                    env.rt
                        .block_on(store.write(
                            FileKind::Snapshot,
                            &id.to_string(),
                            vec![bytes.into()],
                        ))
                        .map_err(|e| store_error(&store, e))?;
                    snap.id = rustic_core::repofile::SnapshotId::from(id.to_rustic());
                    Ok(snap)
                })
                .await
            })
            .await?;
        let mut stats = backup_stats(&snap, warnings.take(), started.elapsed());
        stats.traffic = self.store.traffic().since(traffic);
        Ok(stats)
    }
}

/// restic's summary of a backup from the archiver's counters.
fn summary_of(
    c: &archiver::Counters,
    start: &jiff::Zoned,
    started: Instant,
) -> rustic_core::repofile::SnapshotSummary {
    let g = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let mut out = rustic_core::repofile::SnapshotSummary::default();
    out.files_new = g(&c.files_new);
    out.files_changed = g(&c.files_changed);
    out.files_unmodified = g(&c.files_unmodified);
    out.total_files_processed = out.files_new + out.files_changed + out.files_unmodified;
    out.total_bytes_processed = g(&c.bytes_processed);
    out.dirs_new = g(&c.dirs_new);
    out.dirs_changed = g(&c.dirs_changed);
    out.dirs_unmodified = g(&c.dirs_unmodified);
    out.total_dirs_processed = out.dirs_new + out.dirs_changed + out.dirs_unmodified;
    out.data_blobs = g(&c.data_blobs);
    out.tree_blobs = g(&c.tree_blobs);
    out.data_added_files = g(&c.data_added);
    out.data_added_files_packed = g(&c.data_added_packed);
    out.data_added_trees = g(&c.trees_added);
    out.data_added_trees_packed = g(&c.trees_added_packed);
    out.data_added = out.data_added_files + out.data_added_trees;
    out.data_added_packed = out.data_added_files_packed + out.data_added_trees_packed;
    out.command = "backup".into();
    out.backup_start = start.clone();
    out.backup_end = jiff::Zoned::now();
    out.backup_duration = secs;
    out.total_duration = secs;
    out
}

fn backup_stats(snap: &SnapshotFile, warnings: Vec<Warning>, elapsed: Duration) -> BackupStats {
    let s = snap.summary.clone().unwrap_or_default();
    BackupStats {
        snapshot: Snapshot::from_rustic(snap),
        files_new: s.files_new,
        files_changed: s.files_changed,
        files_unchanged: s.files_unmodified,
        dirs_new: s.dirs_new,
        dirs_changed: s.dirs_changed,
        dirs_unchanged: s.dirs_unmodified,
        bytes_processed: s.total_bytes_processed,
        bytes_added: s.data_added,
        bytes_stored: s.data_added_packed,
        duration_secs: elapsed.as_secs_f64(),
        warnings,
        traffic: TrafficCount::default(),
    }
}
