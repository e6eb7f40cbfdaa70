//! The memory budget: a ledger, shared by every operation of a process, that backups and
//! restores reserve from before they hold memory. An operation sizes its buffers to what is
//! free (fewer workers, smaller packs, fewer reads in flight when memory is short) and waits
//! while others hold the rest, so an agent running several volumes at once stays within one
//! figure: `lifeboat agent --memory-budget` (default 256 MiB).
//!
//! What is reserved, in MiB, is each operation's most (measured figures are in README's
//! Performance section):
//!
//! - the process itself (binary, runtime, connections): [`PROCESS_MIB`], taken off the top;
//! - opening a repository with its password ([`KEY_MIB`]: scrypt's table);
//! - loading an index ([`INDEX_LOAD_MIB`]: files being read and parsed), then the index
//!   itself for as long as the operation runs: a backup's as measured (48 bytes per blob, see
//!   [`crate::index`]), a restore's (the format engine's) as estimated from the size of the
//!   index files;
//! - a backup's buffers ([`BackupBuffers::mib`]) or a restore's ([`RestoreBuffers::mib`]).
//!
//! Not reserved: the set of blobs a backup adds (about 36 bytes per new blob, so 70 MiB for
//! two million new files). An operation that cannot fit even its smallest buffers beside its
//! index fails at once with [`Error::MemoryBudget`](crate::Error), naming what it needs.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What the process holds besides its operations: an idle agent's resident set.
pub const PROCESS_MIB: u32 = 24;
/// Opening a repository with a password: scrypt holds 128·N·r bytes per lane derived at
/// once, 32 MiB with restic's and our keys (N = 2^15, r = 8), and our keys' lanes run two at
/// a time ([`crate::crypto::KEY_LANES`]); restic's keys have one lane, calibrated to 60 MiB
/// at most.
pub(crate) const KEY_MIB: u32 = 64;
/// Index files being read and parsed at once during an index load.
pub(crate) const INDEX_LOAD_MIB: u32 = 48;
/// A backup's or restore's own small state: walk, queue, trees in flight, connections.
const JOB_MIB: u32 = 8;
/// The smallest budget an agent accepts.
pub const MIN_BUDGET_MIB: u32 = 96;

const MIB: u64 = 1 << 20;

/// Memory shared by the operations of a process; cloning shares the ledger.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    total: u32,
    ledger: Arc<Semaphore>,
}

/// Memory reserved from a [`MemoryBudget`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Hold {
    _permit: Option<OwnedSemaphorePermit>,
}

impl MemoryBudget {
    /// A budget of `bytes` for the whole process, [`PROCESS_MIB`] of it for the process
    /// itself; `None` below [`MIN_BUDGET_MIB`].
    pub fn new(bytes: u64) -> Option<Self> {
        let mib = u32::try_from(bytes / MIB).ok()?;
        (mib >= MIN_BUDGET_MIB).then(|| Self {
            total: mib,
            ledger: Arc::new(Semaphore::new((mib - PROCESS_MIB) as usize)),
        })
    }

    /// The whole budget, in MiB.
    pub fn mib(&self) -> u32 {
        self.total
    }

    /// What operations may reserve at most, in MiB.
    pub(crate) fn usable(&self) -> u32 {
        self.total - PROCESS_MIB
    }

    /// What is free now, in MiB.
    pub(crate) fn free(&self) -> u32 {
        u32::try_from(self.ledger.available_permits()).unwrap_or(u32::MAX)
    }

    /// Reserves `mib`, waiting while others hold too much. More than the whole budget takes
    /// all of it (the operation runs alone); callers refuse what cannot fit beforehand.
    pub(crate) async fn reserve(&self, mib: u32) -> Hold {
        let permit = self
            .ledger
            .clone()
            .acquire_many_owned(mib.min(self.usable()))
            .await
            .expect("the ledger is never closed");
        Hold {
            _permit: Some(permit),
        }
    }
}

impl Hold {
    /// Nothing held (operations without a budget).
    pub(crate) fn none() -> Self {
        Self { _permit: None }
    }
}

/// A size as Kubernetes writes memory quantities: bytes, or with a binary (`Ki`, `Mi`, `Gi`,
/// `Ti`) or decimal (`k`, `M`, `G`, `T`) suffix; `256Mi` is 256 MiB. Whole numbers only.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits);
    let scale: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(scale)
}

/// Why a text is not a memory budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    #[error("`{text}` is not a size such as 256Mi, 1Gi or 300M")]
    NotASize { text: String },
    #[error(
        "a memory budget of `{text}` is below the smallest that works, {MIN_BUDGET_MIB}Mi ({PROCESS_MIB} MiB for the process, the rest for one backup's smallest buffers and its index)"
    )]
    TooSmall { text: String },
}

/// A memory budget as written (`--memory-budget`): a size (see [`parse_size`]) of at least
/// [`MIN_BUDGET_MIB`].
pub fn parse_budget(text: &str) -> Result<MemoryBudget, BudgetError> {
    let bytes = parse_size(text).ok_or_else(|| BudgetError::NotASize {
        text: text.to_owned(),
    })?;
    MemoryBudget::new(bytes).ok_or_else(|| BudgetError::TooSmall {
        text: text.to_owned(),
    })
}

/// Bytes to MiB, rounded up.
pub(crate) fn mib_of(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(MIB)).unwrap_or(u32::MAX)
}

/// How much a backup holds: the defaults are every core, 16 MiB packs (restic's), and the
/// store's uploads in flight (two on a local disk, four on an object store, where each
/// upload also waits out round trips).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BackupBuffers {
    pub workers: usize,
    pub pack_size: usize,
    pub uploads: usize,
}

impl BackupBuffers {
    pub(crate) fn full(cores: usize, uploads: usize) -> Self {
        Self {
            workers: cores.max(1),
            pack_size: 16 << 20,
            uploads: uploads.max(1),
        }
    }

    /// The most they hold with chunks of at most `max_chunk` bytes: per worker its pack
    /// (which the last blob may pass by a chunk), a chunk read and its compressed copy, a
    /// compressor; the tree pack; each upload's pack.
    pub(crate) fn mib(&self, max_chunk: usize) -> u32 {
        let pack = (self.pack_size + max_chunk) as u64;
        let worker = pack + 2 * max_chunk as u64 + 2 * MIB;
        JOB_MIB + mib_of(self.workers as u64 * worker + (1 + self.uploads as u64) * pack)
    }

    /// The largest buffers that fit in `mib` with at most `uploads` in flight: fewer
    /// uploads, smaller packs and one upload before fewer workers (every core busy matters
    /// most); `None` if even one worker with 4 MiB packs (restic's smallest) does not fit.
    pub(crate) fn fitting(
        cores: usize,
        uploads: usize,
        max_chunk: usize,
        mib: u32,
    ) -> Option<Self> {
        let most = uploads.max(1);
        (1..=cores.max(1))
            .rev()
            .flat_map(|workers| {
                [16usize, 8, 4].into_iter().flat_map(move |pack| {
                    [most, most.min(2), 1].into_iter().map(move |uploads| Self {
                        workers,
                        pack_size: pack << 20,
                        uploads,
                    })
                })
            })
            .find(|b| b.mib(max_chunk) <= mib)
    }

    pub(crate) fn smallest() -> Self {
        Self {
            workers: 1,
            pack_size: 4 << 20,
            uploads: 1,
        }
    }
}

/// How much a restore holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RestoreBuffers {
    /// Threads that decrypt and write, each holding a blob decrypted and decompressed.
    pub readers: usize,
    /// Ranged reads in flight (at least one per reader), each up to `max_read` bytes.
    pub reads: usize,
    /// Tree blobs kept between the walks, in MiB (0: each walk reads them again).
    pub trees_mib: u32,
    /// Pieces or files planned before their contents are written.
    pub batch: usize,
}

/// Bytes of plan per piece or file: the piece, the file's path.
const PLAN_BYTES: u64 = 128;

impl RestoreBuffers {
    /// The most they hold with reads holding `read` bytes each and blobs of at most
    /// `max_blob` bytes: the reads in flight, per reader a blob as read (when it spans
    /// chunks), decrypted and decompressed, the tree cache, and the batch's plan.
    pub(crate) fn mib(&self, read: u64, max_blob: u64) -> u32 {
        let reads = self.reads.max(self.readers) as u64;
        JOB_MIB
            + self.trees_mib
            + mib_of(
                reads * read + self.readers as u64 * 3 * max_blob + self.batch as u64 * PLAN_BYTES,
            )
    }

    /// The largest that fit in `mib`, from `full` down: fewer reads in flight first (down to
    /// one per reader), then fewer readers, then a smaller tree cache (halved, then none),
    /// then smaller batches (down to 16,384); `None` if one read, no cache and the smallest
    /// batch do not.
    pub(crate) fn fitting(full: Self, max_read: u64, max_blob: u64, mib: u32) -> Option<Self> {
        let mut batch = full.batch;
        loop {
            for trees_mib in [full.trees_mib, full.trees_mib / 2, 0] {
                for readers in (1..=full.readers.max(1)).rev() {
                    for reads in (readers..=full.reads.max(readers)).rev() {
                        let b = Self {
                            readers,
                            reads,
                            trees_mib,
                            batch,
                        };
                        if b.mib(max_read, max_blob) <= mib {
                            return Some(b);
                        }
                    }
                }
            }
            if batch <= 16_384 {
                return None;
            }
            batch = (batch / 2).max(16_384);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: usize = 8 << 20;

    #[test]
    fn the_default_budget_holds_the_default_backup_and_a_two_million_blob_index() {
        let full = BackupBuffers::full(2, 2);
        let budget = MemoryBudget::new(256 * MIB).unwrap();
        // Two workers, 16 MiB packs, two uploads: 8 + 2 × 42 + 3 × 24 MiB.
        assert_eq!(full.mib(CHUNK), 164);
        assert_eq!(
            BackupBuffers::fitting(2, 2, CHUNK, budget.usable()),
            Some(full)
        );
        // Beside a 97 MiB index (two million blobs) the packs shrink, both cores still work.
        let beside = BackupBuffers::fitting(2, 2, CHUNK, budget.usable() - 97).unwrap();
        assert_eq!((beside.workers, beside.pack_size), (2, 8 << 20));
        assert!(beside.mib(CHUNK) + 97 <= budget.usable());
    }

    #[test]
    fn an_object_store_s_uploads_are_given_up_before_packs_shrink() {
        // Two workers, 16 MiB packs, four uploads: 8 + 2 × 42 + 5 × 24 MiB.
        let full = BackupBuffers::full(2, 4);
        assert_eq!(full.mib(CHUNK), 212);
        assert_eq!(BackupBuffers::fitting(2, 4, CHUNK, 212), Some(full));
        assert_eq!(
            BackupBuffers::fitting(2, 4, CHUNK, 211),
            Some(BackupBuffers::full(2, 2))
        );
    }

    #[test]
    fn buffers_shrink_to_what_is_free_and_none_fit_below_the_smallest() {
        let mut last = u32::MAX;
        for mib in (0..=300).rev() {
            match BackupBuffers::fitting(4, 4, CHUNK, mib) {
                Some(b) => {
                    assert!(b.mib(CHUNK) <= mib && b.mib(CHUNK) <= last);
                    last = b.mib(CHUNK);
                }
                None => assert!(mib < BackupBuffers::smallest().mib(CHUNK)),
            }
        }
        assert_eq!(
            BackupBuffers::fitting(4, 4, CHUNK, BackupBuffers::smallest().mib(CHUNK)),
            Some(BackupBuffers::smallest())
        );
    }

    #[test]
    fn restore_buffers_give_up_reads_then_readers_then_trees_then_batch() {
        let full = RestoreBuffers {
            readers: 2,
            reads: 8,
            trees_mib: 32,
            batch: 256 * 1024,
        };
        let read = 8 << 20;
        // 8 reads of 8 MiB, 2 readers × 3 blobs of 8 MiB, 32 MiB of trees, 32 MiB of plan.
        assert_eq!(full.mib(read, read), 8 + 64 + 48 + 32 + 32);
        assert_eq!(RestoreBuffers::fitting(full, read, read, 184), Some(full));
        let fewer = RestoreBuffers::fitting(full, read, read, 150).unwrap();
        assert_eq!((fewer.readers, fewer.reads, fewer.trees_mib), (2, 3, 32));
        let one = RestoreBuffers::fitting(full, read, read, 110).unwrap();
        assert_eq!((one.readers, one.reads, one.trees_mib), (1, 1, 32));
        let small = RestoreBuffers::fitting(full, read, read, 44).unwrap();
        assert_eq!((small.readers, small.reads, small.trees_mib), (1, 1, 0));
        assert!(small.batch < full.batch && small.mib(read, read) <= 44);
        assert_eq!(RestoreBuffers::fitting(full, read, read, 20), None);
        // A streamed read costs its buffers: all eight fit where two held reads would not.
        let streamed = RestoreBuffers::fitting(full, 1 << 20, read, 130).unwrap();
        assert_eq!((streamed.readers, streamed.reads), (2, 8));
        // Reads never fall below one per reader.
        let even = RestoreBuffers { reads: 1, ..full };
        assert_eq!(even.mib(read, read), full.mib(read, read) - 48);
    }

    #[test]
    fn budgets_are_read_as_kubernetes_writes_memory() {
        assert_eq!(parse_size("256Mi"), Some(256 << 20));
        assert_eq!(parse_size("1Gi"), Some(1 << 30));
        assert_eq!(parse_size("300M"), Some(300_000_000));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        for bad in [
            "",
            "Mi",
            "1.5Gi",
            "256MB",
            "-1Gi",
            "256 Mi",
            "99999999999Ti",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(parse_budget("256Mi").unwrap().mib(), 256);
        assert!(
            parse_budget("64Mi")
                .unwrap_err()
                .to_string()
                .contains("96Mi")
        );
        assert!(
            parse_budget("lots")
                .unwrap_err()
                .to_string()
                .contains("`lots` is not a size")
        );
    }

    #[tokio::test]
    async fn reservations_wait_for_each_other_and_never_exceed_the_budget() {
        let budget = MemoryBudget::new(96 * MIB).unwrap();
        assert_eq!(budget.usable(), 72);
        let all = budget.reserve(1000).await;
        assert_eq!(budget.free(), 0, "more than the budget takes all of it");
        drop(all);
        let first = budget.reserve(50).await;
        assert_eq!(budget.free(), 22);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { drop(budget.reserve(30).await) }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "30 MiB cannot be had while 50 of 72 are held"
        );
        drop(first);
        waiting.await.expect("the second reservation");
        assert_eq!(budget.free(), 72);
        assert!(MemoryBudget::new(95 * MIB).is_none());
    }
}
