//! The upload stage: finished packs to the store, and the index files naming them.
//!
//! Input: a full [`Packer`] from a file worker or the trees. A pack is finished only once an
//! upload permit is free, so at most `uploads` finished packs ([`crate::budget`]'s
//! `BackupBuffers::uploads`, what the memory budget allows) exist at once: a slow store makes
//! the workers wait with their packs unfinished instead of filling memory. Output: each pack
//! written by a task on the runtime, which then adds the pack to the index being written; an
//! index file is written once it holds [`BLOBS_PER_FILE`] blobs or [`PACKS_PER_INDEX`] packs,
//! and the last one after every upload is done.
//!
//! Write order: an index file names only packs whose write succeeded, and the snapshot (by the
//! caller) comes after the last index file, so a crash leaves only packs no index names.
//! Concurrency: up to `uploads` tasks in flight; the first failure stops the backup
//! ([`FailSlot`]).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::index::BLOBS_PER_FILE;
use crate::store::{FileKind, StoreError};

use super::packer::Packer;
use super::{Failure, Shared, lock};

/// Packs after which an index file is written even if it holds fewer than
/// [`BLOBS_PER_FILE`] blobs, so an interrupted backup's retry finds most of its data.
const PACKS_PER_INDEX: usize = 32;

impl Shared<'_> {
    /// Stops the backup with `failure`, unless one came first.
    pub(super) fn fail(&self, failure: Failure) {
        FailSlot {
            stop: self.stop.clone(),
            failure: self.failure.clone(),
        }
        .fail_with(failure);
    }

    /// Finishes `packer`'s pack and sends it to the store, once fewer than the budget's uploads are
    /// in flight (a full pack waits unfinished, so no more than that many exist finished).
    pub(super) fn upload(&self, packer: &mut Packer) {
        let env = self.env;
        let stop = self.stop.clone();
        let permit = env.rt.block_on(async {
            tokio::select! {
                p = self.uploads.clone().acquire_owned() => p.ok(),
                () = stop.cancelled() => None,
            }
        });
        let Some(permit) = permit else { return };
        let pack = match packer.finish(&env.key) {
            Ok(Some(pack)) => pack,
            Ok(None) => return,
            Err(e) => {
                self.fail(Failure::Pack(e));
                return;
            }
        };
        let store = env.store.clone();
        let key = env.key.clone();
        let version = env.version;
        let written = self.written.clone();
        let spare = self.spare.clone();
        let failure = FailSlot {
            stop: self.stop.clone(),
            failure: self.failure.clone(),
        };
        let task = env.rt.spawn(async move {
            let _permit = permit;
            let name = pack.id.to_string();
            let bytes = Bytes::from(pack.bytes);
            let kept = bytes.clone();
            if let Err(e) = store.write(FileKind::Pack, &name, vec![bytes]).await {
                failure.fail(e);
                return;
            }
            // The store let go of its reference: the buffer is ours again.
            if let Ok(buf) = kept.try_into_mut() {
                let buf = Vec::from(buf);
                if buf.capacity() >= spare.capacity {
                    lock(&spare.bufs).push(buf);
                }
            }
            let file = {
                let mut w = lock(&written);
                w.add(pack.id, pack.blobs);
                if w.blobs() >= BLOBS_PER_FILE || w.packs() >= PACKS_PER_INDEX {
                    w.take_file(&key, version)
                } else {
                    None
                }
            };
            if let Some((name, bytes)) = file
                && let Err(e) = store.write(FileKind::Index, &name, vec![bytes]).await
            {
                failure.fail(e);
            }
        });
        lock(&self.tasks).push(task);
    }

    /// Waits for every upload in flight (their failures are in the failure slot).
    pub(super) fn wait_uploads(&self) {
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        self.env.rt.block_on(async {
            for t in tasks {
                let _ = t.await;
            }
        });
    }

    /// Writes the index file of the packs not yet in one: after every upload is done.
    pub(super) fn write_last_index(&self) -> Result<(), Failure> {
        let env = self.env;
        if let Some((name, bytes)) = lock(&self.written).take_file(&env.key, env.version) {
            env.rt
                .block_on(env.store.write(FileKind::Index, &name, vec![bytes]))
                .map_err(Failure::Store)?;
        }
        Ok(())
    }
}

/// Failing from an upload task, which outlives the borrow of [`Shared`].
struct FailSlot {
    stop: CancellationToken,
    failure: Arc<Mutex<Option<Failure>>>,
}

impl FailSlot {
    fn fail(&self, e: StoreError) {
        self.fail_with(Failure::Store(e));
    }

    /// Keeps the first failure and stops the backup.
    fn fail_with(&self, failure: Failure) {
        lock(&self.failure).get_or_insert(failure);
        self.stop.cancel();
    }
}
