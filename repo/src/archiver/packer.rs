//! The packer stage: blobs sealed into a pack being filled, and the pack finished when full.
//!
//! Input: a blob's id and its (perhaps compressed) plaintext, from a file worker (data) or from
//! whichever thread finishes a directory (trees). Output: a [`Pack`] (id, bytes, the blobs it
//! holds), finished through [`crate::pack`]'s header writer, for [`super::upload`].
//!
//! Concurrency: a packer is not shared. Each file worker owns one for data blobs; the one
//! trees' packer sits behind a lock (trees are few and small beside data), so in a version 2
//! repository trees and data never share a pack, as the format asks. Buffers of uploaded packs
//! come back through [`Spares`] and are reused by the next pack.

use std::sync::{Arc, Mutex};

use crate::crypto::MasterKey;
use crate::id::{BlobId, PackId};
use crate::index::BLOBS_PER_FILE;
use crate::pack::{self, PackError, PackedBlob};

use super::lock;

/// Blobs in one pack at most (a quarter of an index file).
const PACK_BLOBS: usize = BLOBS_PER_FILE / 4;

/// Pack buffers whose upload finished, reused: a new buffer per pack cost page faults and
/// zeroing of every pack's pages, and left freed buffers to the allocator's heap.
pub(super) type Spare = Arc<Spares>;

pub(super) struct Spares {
    pub(super) bufs: Mutex<Vec<Vec<u8>>>,
    /// Of each pack buffer: the pack's target size, the last blob that may pass it (a chunk
    /// at most), then the header.
    pub(super) capacity: usize,
}

impl Spares {
    /// No buffer yet; each one made `capacity` bytes.
    pub(super) fn shared(capacity: usize) -> Spare {
        Arc::new(Self {
            bufs: Mutex::default(),
            capacity,
        })
    }
}

/// A pack being filled.
pub(crate) struct Packer {
    tree: bool,
    buf: Vec<u8>,
    blobs: Vec<PackedBlob>,
    spare: Spare,
    /// The target size.
    size: usize,
}

/// A finished pack: its id, bytes and blobs.
pub(crate) struct Pack {
    pub id: PackId,
    pub bytes: Vec<u8>,
    pub blobs: Vec<PackedBlob>,
}

impl Packer {
    pub(super) fn new(tree: bool, spare: Spare, size: usize) -> Self {
        Self {
            tree,
            buf: Vec::new(),
            blobs: Vec::new(),
            spare,
            size,
        }
    }

    /// A packer of its own (no shared buffers), for test repositories.
    #[cfg(feature = "testing")]
    pub(crate) fn alone(tree: bool) -> Self {
        let spare = Arc::new(Spares {
            bufs: Mutex::default(),
            capacity: 0,
        });
        Self::new(tree, spare, usize::MAX)
    }

    /// Seals `data` (the blob, compressed when `uncompressed` is not 0) into the pack;
    /// returns its sealed length.
    pub(crate) fn add(
        &mut self,
        key: &MasterKey,
        id: BlobId,
        data: &[u8],
        uncompressed: u32,
    ) -> u64 {
        // The trees' pack grows as trees come: a backup of a few large files writes a few
        // kilobytes of trees, and a spare pack buffer (written before, so resident up to its
        // 16-25 MiB) would be held for them to the end.
        if !self.tree && self.buf.capacity() < self.spare.capacity {
            self.buf = lock(&self.spare.bufs).pop().unwrap_or_default();
            self.buf.clear();
            self.buf.reserve_exact(self.spare.capacity);
        }
        let offset = self.buf.len();
        key.seal_into(data, &mut self.buf);
        let length = self.buf.len() - offset;
        self.blobs.push(PackedBlob {
            id,
            tree: self.tree,
            offset: offset as u32,
            length: length as u32,
            uncompressed,
        });
        length as u64
    }

    /// A pack is full at its target size or [`PACK_BLOBS`] blobs: two million 40-byte
    /// files would otherwise fill a 16 MiB pack with 230,000 blobs, and its index file (held
    /// until written, then encoded whole) would take ~100 MiB.
    pub(super) fn full(&self) -> bool {
        self.buf.len() >= self.size || self.blobs.len() >= PACK_BLOBS
    }

    /// The pack file: blobs, then the encrypted header and its length ([`crate::pack`]);
    /// `Ok(None)` when it holds no blob.
    pub(crate) fn finish(&mut self, key: &MasterKey) -> Result<Option<Pack>, PackError> {
        if self.blobs.is_empty() {
            return Ok(None);
        }
        let mut bytes = std::mem::take(&mut self.buf);
        let blobs = std::mem::take(&mut self.blobs);
        pack::write_header(key, &blobs, &mut bytes)?;
        Ok(Some(Pack {
            id: PackId::of(&bytes),
            bytes,
            blobs,
        }))
    }
}
