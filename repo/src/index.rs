//! The repository's blob index as backups and checks need it: which blobs exist, and where
//! each one is. Loaded from restic's index files (JSON, encrypted, compressed in version 2)
//! into one array sorted by blob id, 48 bytes per blob, plus a table of where each id prefix
//! starts (half a byte per blob): two million blobs — a repository of 2 TiB of 1 MiB chunks,
//! or of two million small files — take 97 MiB (93 MiB measured for 2,002,026 blobs). The hash
//! map it replaces took 60 to 120 bytes per blob by its layout, depending on where its growth
//! stood.
//!
//! Index files are written here too: [`IndexWriter`] turns the packs a backup uploaded into
//! restic's format. [`IdSet`] holds the blobs a backup writes itself, about 36 bytes each by
//! its layout.

use std::io::Write;
use std::sync::Mutex;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use tokio::runtime::Handle;

use crate::crypto::{self, MasterKey};
use crate::id::{BlobId, PackId, TreeId};
use crate::pack::PackedBlob;
use crate::store::{FileKind, Store, StoreError};

/// Why a blob could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BlobError {
    #[error("blob {blob} is not in the index")]
    NotIndexed { blob: BlobId },
    #[error("cannot read pack {pack}")]
    Read {
        pack: PackId,
        // Boxed: a store error is large, and this travels up through every read's result.
        #[source]
        source: Box<StoreError>,
    },
    /// A ranged read of several blobs came back short.
    #[error(
        "pack {pack} is shorter than the index says ({got} of {wanted} bytes from offset {start})"
    )]
    Short {
        pack: PackId,
        got: usize,
        wanted: u64,
        start: u64,
    },
    #[error("blob {blob} in pack {pack} does not decrypt: the pack is damaged")]
    Decrypt { blob: BlobId, pack: PackId },
    #[error("blob {blob} in pack {pack} does not decompress")]
    Decompress {
        blob: BlobId,
        pack: PackId,
        #[source]
        source: std::io::Error,
    },
}

/// Where a blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub pack: u32,
    pub offset: u32,
    pub length: u32,
    /// 0: stored uncompressed.
    pub uncompressed: u32,
    pub tree: bool,
}

/// A pack and the blobs the index puts in it: (blob, where).
pub(crate) type PackBlobs = (PackId, Vec<(BlobId, Loc)>);

/// The tree flag's bit in [`Entry::pack`].
const TREE: u32 = 1 << 31;

/// One blob of the index, as stored: 48 bytes.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: BlobId,
    /// The pack's number, with [`TREE`] set for a tree blob.
    pack: u32,
    offset: u32,
    length: u32,
    uncompressed: u32,
}

impl Entry {
    fn loc(&self) -> Loc {
        Loc {
            pack: self.pack & !TREE,
            offset: self.offset,
            length: self.length,
            uncompressed: self.uncompressed,
            tree: self.pack & TREE != 0,
        }
    }
}

/// The top `bits` bits of an id (ids sort as these do).
fn bucket(id: &BlobId, bits: u32) -> u64 {
    u64::from_be_bytes(id.as_bytes()[..8].try_into().expect("8 bytes"))
        .checked_shr(64 - bits)
        .unwrap_or(0)
}

/// Every blob of the repository's index files.
#[derive(Debug, Default)]
pub(crate) struct BlobIndex {
    packs: Vec<PackId>,
    /// Sorted by id; a blob stored in two packs has two entries.
    entries: Vec<Entry>,
    /// `starts[p]`: the first entry whose id's top `bits` bits are `p` or more.
    starts: Vec<u32>,
    bits: u32,
    /// The tree entries, by pack and offset (numbers into `entries`): built on the first
    /// [`Self::trees_near`], 4 bytes per tree blob.
    trees: std::sync::OnceLock<Vec<u32>>,
}

#[derive(Deserialize)]
struct FileIn {
    #[serde(default)]
    packs: Vec<PackIn>,
}

#[derive(Deserialize)]
struct PackIn {
    id: Hex32,
    #[serde(default)]
    blobs: Vec<BlobIn>,
}

#[derive(Deserialize)]
struct BlobIn {
    id: Hex32,
    #[serde(rename = "type")]
    kind: Kind,
    offset: u32,
    length: u32,
    #[serde(default)]
    uncompressed_length: Option<u32>,
}

#[derive(Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Data,
    Tree,
}

/// An id parsed from its hex text without allocating a string for it (the ids' own
/// deserialisation goes through a `String`): raw bytes at the JSON boundary, made a typed id
/// by [`Hex32::blob`], [`Hex32::pack`] or [`Hex32::tree`].
pub(crate) struct Hex32(pub [u8; 32]);

impl Hex32 {
    pub(crate) fn blob(&self) -> BlobId {
        BlobId::from_bytes(self.0)
    }
    pub(crate) fn pack(&self) -> PackId {
        PackId::from_bytes(self.0)
    }
    pub(crate) fn tree(&self) -> TreeId {
        TreeId::from_bytes(self.0)
    }
}

impl<'de> Deserialize<'de> for Hex32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Hex32;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("64 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Hex32, E> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(text, &mut out)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(text), &self))?;
                Ok(Hex32(out))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// Why the index could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexError {
    #[error("cannot read index file {name}")]
    Store {
        name: String,
        #[source]
        source: StoreError,
    },
    #[error("index file {0} does not decrypt or parse: the repository is damaged")]
    Damaged(String),
}

impl BlobIndex {
    /// Reads the index files `names` (the repository's listing: name, size), `reads` at a
    /// time.
    pub(crate) async fn load(
        store: &Store,
        key: &MasterKey,
        names: Vec<(String, u64)>,
        reads: usize,
    ) -> Result<Self, IndexError> {
        let mut files =
            futures::stream::iter(names.into_iter().map(|(name, _)| async move {
                let raw = store.read(FileKind::Index, &name).await.map_err(|source| {
                    IndexError::Store {
                        name: name.clone(),
                        source,
                    }
                })?;
                // Decrypted and parsed off the runtime's thread, so the files in flight are
                // parsed on every core (one after the other, this was most of the load).
                let key = key.clone();
                let parsed = tokio::task::spawn_blocking(move || -> Option<FileIn> {
                    let plain = key.decrypt(&raw).ok()?;
                    serde_json::from_slice(&crypto::unpack_json(&plain)?).ok()
                })
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                parsed.ok_or(IndexError::Damaged(name))
            }))
            .buffer_unordered(reads.max(1));
        let mut packs = Vec::new();
        let mut pack_numbers: std::collections::HashMap<PackId, u32> =
            std::collections::HashMap::new();
        let mut entries = Vec::new();
        while let Some(file) = files.try_next().await? {
            for pack in file.packs {
                let number = *pack_numbers.entry(pack.id.pack()).or_insert_with(|| {
                    packs.push(pack.id.pack());
                    (packs.len() - 1) as u32
                });
                entries.extend(pack.blobs.into_iter().map(|b| Entry {
                    id: b.id.blob(),
                    pack: number | if b.kind == Kind::Tree { TREE } else { 0 },
                    offset: b.offset,
                    length: b.length,
                    uncompressed: b.uncompressed_length.unwrap_or(0),
                }));
            }
        }
        Ok(Self::build(packs, entries))
    }

    /// Sorts `entries` and tables where each id prefix starts.
    fn build(packs: Vec<PackId>, mut entries: Vec<Entry>) -> Self {
        entries.sort_unstable_by_key(|e| e.id);
        entries.shrink_to_fit();
        // About 8 entries per prefix: a lookup is one table read and a short binary search.
        let bits = (entries.len() / 8).max(1).ilog2().min(24);
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut i = 0;
        for p in 0..=(1u64 << bits) {
            while i < entries.len() && bucket(&entries[i].id, bits) < p {
                i += 1;
            }
            starts.push(i as u32);
        }
        Self {
            packs,
            entries,
            starts,
            bits,
            trees: std::sync::OnceLock::new(),
        }
    }

    /// The entries whose id is `blob`.
    fn find(&self, blob: &BlobId) -> &[Entry] {
        if self.entries.is_empty() {
            return &[];
        }
        let p = bucket(blob, self.bits) as usize;
        let bucket = &self.entries[self.starts[p] as usize..self.starts[p + 1] as usize];
        let first = bucket.partition_point(|e| e.id < *blob);
        let end = first + bucket[first..].partition_point(|e| e.id == *blob);
        &bucket[first..end]
    }

    pub(crate) fn get(&self, blob: &BlobId) -> Option<Loc> {
        self.find(blob).first().map(Entry::loc)
    }

    pub(crate) fn contains(&self, blob: &BlobId) -> bool {
        !self.find(blob).is_empty()
    }

    /// The id of pack number `pack` (a [`Loc`]'s).
    pub(crate) fn pack_id(&self, pack: u32) -> PackId {
        self.packs[pack as usize]
    }

    /// The blob the index places at `offset` of pack number `pack`: a scan of the whole index,
    /// for naming a damaged blob, not for lookups.
    pub(crate) fn blob_at(&self, pack: u32, offset: u32) -> Option<BlobId> {
        self.entries
            .iter()
            .find(|e| e.pack & !TREE == pack && e.offset == offset)
            .map(|e| e.id)
    }

    /// Tree `tree`'s pack and the tree blobs stored beside it there, in pack order, as far as
    /// they lie within `span` bytes from the first to the end of the last: the blobs one
    /// ranged read brings at once. Trees are written together into packs of their own, so
    /// over a remote store one read brings a snapshot's directories instead of one round
    /// trip per level of them. Empty if `tree` is not in the index.
    pub(crate) fn trees_near(&self, tree: &TreeId, span: u32) -> Vec<(TreeId, Loc)> {
        let Some(at) = self.find(&tree.blob()).first().map(Entry::loc) else {
            return Vec::new();
        };
        let order = self.trees.get_or_init(|| {
            let mut order: Vec<u32> = (0..self.entries.len() as u32)
                .filter(|&i| self.entries[i as usize].pack & TREE != 0)
                .collect();
            order.sort_unstable_by_key(|&i| {
                let e = &self.entries[i as usize];
                (e.pack, e.offset)
            });
            order
        });
        let loc = |i: u32| self.entries[i as usize].loc();
        let key = |i: u32| (loc(i).pack, loc(i).offset);
        let first = order.partition_point(|&i| key(i) < (at.pack, at.offset));
        let end = first + order[first..].partition_point(|&i| loc(i).pack == at.pack);
        // From `tree` on: the crawl asks for directories before what they hold, and trees
        // are written after what they hold, so what it needs next is mostly before it;
        // take those first, then those after, within the span.
        let mut lo = first;
        let mut hi = first;
        while hi < end && loc(order[hi]).offset == at.offset {
            hi += 1;
        }
        let spans = |lo: usize, hi: usize| {
            let (a, b) = (loc(order[lo]), loc(order[hi - 1]));
            u64::from(b.offset) + u64::from(b.length) - u64::from(a.offset) <= u64::from(span)
        };
        if hi == lo {
            return Vec::new();
        }
        let start = order[..first].partition_point(|&i| loc(i).pack < at.pack);
        while lo > start && spans(lo - 1, hi) {
            lo -= 1;
        }
        while hi < end && spans(lo, hi + 1) {
            hi += 1;
        }
        order[lo..hi]
            .iter()
            .map(|&i| {
                let id = TreeId::from_bytes(*self.entries[i as usize].id.as_bytes());
                (id, loc(i))
            })
            .collect()
    }

    /// Blobs in the index (a blob stored twice counts twice).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes this index holds in memory.
    pub(crate) fn memory(&self) -> u64 {
        (self.entries.capacity() * size_of::<Entry>()
            + self.starts.capacity() * 4
            + self.packs.capacity() * 32) as u64
    }

    /// Every pack the index names, in turn, with its blobs in pack order; 4 bytes per blob
    /// besides the index, and one pack's blobs at a time.
    pub(crate) fn by_pack(&self) -> ByPack<'_> {
        let mut starts = vec![0u32; self.packs.len() + 1];
        for e in &self.entries {
            starts[(e.pack & !TREE) as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut order = vec![0u32; self.entries.len()];
        for (i, e) in self.entries.iter().enumerate() {
            let pack = (e.pack & !TREE) as usize;
            order[next[pack] as usize] = i as u32;
            next[pack] += 1;
        }
        ByPack {
            index: self,
            starts,
            order,
        }
    }

    /// Reads, decrypts and decompresses one blob.
    pub(crate) fn read_blob(
        &self,
        blob: &BlobId,
        store: &Store,
        key: &MasterKey,
        rt: &Handle,
    ) -> Result<Vec<u8>, BlobError> {
        let raw = rt.block_on(self.fetch_blob(blob, store))?;
        self.open_blob(blob, &raw, key)
    }

    /// Blob `blob` as stored (encrypted, perhaps compressed): one ranged read of its pack.
    pub(crate) async fn fetch_blob(
        &self,
        blob: &BlobId,
        store: &Store,
    ) -> Result<Bytes, BlobError> {
        let loc = self
            .get(blob)
            .ok_or(BlobError::NotIndexed { blob: *blob })?;
        let pack = self.packs[loc.pack as usize];
        store
            .read_range(
                FileKind::Pack,
                &pack.to_string(),
                loc.offset.into(),
                loc.length.into(),
            )
            .await
            .map_err(|e| BlobError::Read {
                pack,
                source: Box::new(e),
            })
    }

    /// The plaintext of blob `blob` from `raw`, as [`Self::fetch_blob`] read it.
    pub(crate) fn open_blob(
        &self,
        blob: &BlobId,
        raw: &[u8],
        key: &MasterKey,
    ) -> Result<Vec<u8>, BlobError> {
        let loc = self
            .get(blob)
            .ok_or(BlobError::NotIndexed { blob: *blob })?;
        let pack = self.packs[loc.pack as usize];
        let blob = *blob;
        let plain = key
            .decrypt(raw)
            .map_err(|_| BlobError::Decrypt { blob, pack })?;
        if loc.uncompressed == 0 {
            return Ok(plain);
        }
        crate::crypto::decompress(&plain, loc.uncompressed as usize)
            .map_err(|source| BlobError::Decompress { blob, pack, source })
    }
}

/// The index's blobs grouped by pack: see [`BlobIndex::by_pack`].
pub(crate) struct ByPack<'a> {
    index: &'a BlobIndex,
    starts: Vec<u32>,
    order: Vec<u32>,
}

impl ByPack<'_> {
    pub(crate) fn len(&self) -> usize {
        self.index.packs.len()
    }

    /// Pack `i` and its blobs in pack order.
    pub(crate) fn pack(&self, i: usize) -> PackBlobs {
        let mut blobs: Vec<_> = self.order[self.starts[i] as usize..self.starts[i + 1] as usize]
            .iter()
            .map(|&e| {
                let e = &self.index.entries[e as usize];
                (e.id, e.loc())
            })
            .collect();
        blobs.sort_by_key(|(_, l)| l.offset);
        (self.index.packs[i], blobs)
    }
}

/// A set of blob ids that threads add to at once: shards by id prefix, each a sorted array
/// behind its own lock, grown by a quarter when full, so about 36 bytes per id by its layout
/// (a hash set's is 50 to 66) and no thread waits on another's shard.
pub(crate) struct IdSet {
    shards: Box<[Mutex<Vec<BlobId>>]>,
}

/// 65,536 shards: 2 MiB of locks, and at two million ids about 30 per shard, so an insert
/// moves a kilobyte at most.
const ID_SHARD_BITS: u32 = 16;

impl Default for IdSet {
    fn default() -> Self {
        Self {
            shards: (0..1 << ID_SHARD_BITS)
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
        }
    }
}

impl IdSet {
    /// Adds `id`; false if it was there.
    pub(crate) fn insert(&self, id: &BlobId) -> bool {
        let shard = &self.shards[bucket(id, ID_SHARD_BITS) as usize];
        let mut ids = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match ids.binary_search(id) {
            Ok(_) => false,
            Err(at) => {
                if ids.len() == ids.capacity() {
                    let more = (ids.len() / 4).max(4);
                    ids.reserve_exact(more);
                }
                ids.insert(at, *id);
                true
            }
        }
    }
}

/// Index entries of packs not yet in an index file.
#[derive(Debug, Default)]
pub(crate) struct IndexWriter {
    packs: Vec<(PackId, Vec<PackedBlob>)>,
    blobs: usize,
}

/// Blobs per index file (restic writes at most 50,000 per file, then starts another).
pub(crate) const BLOBS_PER_FILE: usize = 50_000;

impl IndexWriter {
    pub(crate) fn add(&mut self, pack: PackId, blobs: Vec<PackedBlob>) {
        self.blobs += blobs.len();
        self.packs.push((pack, blobs));
    }

    pub(crate) fn blobs(&self) -> usize {
        self.blobs
    }

    /// Packs not yet in an index file.
    pub(crate) fn packs(&self) -> usize {
        self.packs.len()
    }

    /// The index file of the packs added so far (name, bytes), emptying the writer; `None`
    /// when there are none.
    pub(crate) fn take_file(&mut self, key: &MasterKey, version: u32) -> Option<(String, Bytes)> {
        if self.packs.is_empty() {
            return None;
        }
        let packs = std::mem::take(&mut self.packs);
        // Written directly: restic's format, without a string per id. Encoded through owned
        // strings, index files of 230,000 tiny blobs took the 2,000,000-file backup to 330 MiB
        // (with packs not yet capped at PACK_BLOBS).
        let mut json = Vec::with_capacity(64 + self.blobs * 140);
        self.blobs = 0;
        json.extend_from_slice(b"{\"packs\":[");
        for (i, (id, blobs)) in packs.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            json.extend_from_slice(b"{\"id\":\"");
            push_hex(&mut json, id.as_bytes());
            json.extend_from_slice(b"\",\"blobs\":[");
            for (j, b) in blobs.iter().enumerate() {
                if j > 0 {
                    json.push(b',');
                }
                json.extend_from_slice(b"{\"id\":\"");
                push_hex(&mut json, b.id.as_bytes());
                let kind = if b.tree { "tree" } else { "data" };
                // Writing into a Vec cannot fail.
                let _ = write!(
                    json,
                    "\",\"type\":\"{kind}\",\"offset\":{},\"length\":{}",
                    b.offset, b.length
                );
                if b.uncompressed != 0 {
                    let _ = write!(json, ",\"uncompressed_length\":{}", b.uncompressed);
                }
                json.push(b'}');
            }
            json.extend_from_slice(b"]}");
        }
        json.extend_from_slice(b"]}");
        let bytes = key.encrypt(&crypto::pack_json(version, &json));
        Some((hex::encode(crate::id::hash(&bytes)), Bytes::from(bytes)))
    }
}

/// Writes an id's 64 hex digits (the raw bytes: index JSON is written at the byte level).
fn push_hex(out: &mut Vec<u8>, id: &[u8; 32]) {
    let at = out.len();
    out.resize(at + 64, 0);
    hex::encode_to_slice(id, &mut out[at..]).expect("64 bytes for 32");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> BlobId {
        BlobId::of(&n.to_le_bytes())
    }

    fn tree(n: u64) -> TreeId {
        TreeId::of(&n.to_le_bytes())
    }

    fn pack(n: u8) -> PackId {
        PackId::from_bytes([n; 32])
    }

    fn entry(n: u64, pack: u32, tree: bool) -> Entry {
        Entry {
            id: id(n),
            pack: pack | if tree { TREE } else { 0 },
            offset: n as u32 * 10,
            length: 10,
            uncompressed: 0,
        }
    }

    #[test]
    fn trees_near_one_are_those_of_its_pack_within_the_span_and_no_data() {
        // Pack 0: trees 0–5, a data blob 6, trees 7–9; pack 1: trees 10–12. Blob n is 10
        // bytes at offset 10 × n.
        let entries = (0..13)
            .map(|i| entry(i, u32::from(i >= 10), i != 6))
            .collect();
        let index = BlobIndex::build(vec![pack(1), pack(2)], entries);
        let near = |n: u64, span: u32| -> Vec<u32> {
            index
                .trees_near(&tree(n), span)
                .iter()
                .map(|(_, loc)| loc.offset / 10)
                .collect()
        };
        // Before it first (the crawl's next trees were written before it), then after.
        assert_eq!(near(9, 40), [7, 8, 9]);
        assert_eq!(
            near(9, 50),
            [5, 7, 8, 9],
            "the data blob between is read, not kept"
        );
        assert_eq!(
            near(0, 1000),
            [0, 1, 2, 3, 4, 5, 7, 8, 9],
            "pack 0's trees only"
        );
        assert_eq!(near(11, 1000), [10, 11, 12]);
        assert_eq!(
            near(3, 0),
            [3],
            "a span too short for any neighbour: the tree alone"
        );
        assert!(
            near(6, 1000).is_empty(),
            "a data blob has no tree neighbours"
        );
        assert!(
            index.trees_near(&tree(99), 1000).is_empty(),
            "not in the index"
        );
    }

    #[test]
    fn finds_every_blob_and_nothing_else_at_every_size() {
        for n in [0u64, 1, 2, 7, 8, 9, 100, 5000] {
            let entries = (0..n)
                .map(|i| entry(i, (i % 3) as u32, i % 5 == 0))
                .collect();
            let index = BlobIndex::build(vec![pack(1), pack(2), pack(3)], entries);
            for i in 0..n {
                let loc = index.get(&id(i)).expect("indexed");
                assert_eq!(
                    (loc.pack, loc.offset, loc.tree),
                    ((i % 3) as u32, i as u32 * 10, i % 5 == 0)
                );
            }
            for i in n..n + 200 {
                assert!(!index.contains(&id(i)), "{n} blobs: {i} is not indexed");
            }
            assert!(
                !index.contains(&BlobId::from_bytes([0; 32]))
                    && !index.contains(&BlobId::from_bytes([0xff; 32]))
            );
            assert_eq!(index.len(), n as usize);
        }
    }

    #[test]
    fn a_blob_in_two_packs_is_found_and_listed_in_both() {
        let index = BlobIndex::build(
            vec![pack(1), pack(2)],
            vec![entry(1, 0, false), entry(2, 1, false), entry(1, 1, false)],
        );
        assert!(index.contains(&id(1)));
        let packs = index.by_pack();
        assert_eq!(packs.len(), 2);
        let (first, blobs) = packs.pack(0);
        assert_eq!((first, blobs.len()), (pack(1), 1));
        let (second, blobs) = packs.pack(1);
        assert_eq!(second, pack(2));
        // In pack order: blob 1 at offset 10, blob 2 at 20.
        assert_eq!(
            blobs.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
            vec![id(1), id(2)]
        );
    }

    #[test]
    fn an_index_takes_about_48_bytes_per_blob() {
        let entries: Vec<_> = (0..100_000).map(|i| entry(i, 0, false)).collect();
        let index = BlobIndex::build(vec![pack(1)], entries);
        let per_blob = index.memory() as f64 / 100_000.0;
        assert!(
            (48.0..49.0).contains(&per_blob),
            "{per_blob} bytes per blob"
        );
    }

    #[test]
    fn an_index_file_written_reads_back_as_restic_writes_it() {
        let key = MasterKey::random();
        let mut w = IndexWriter::default();
        let blob = |n: u64, tree, uncompressed| PackedBlob {
            id: id(n),
            tree,
            offset: n as u32 * 100,
            length: 100,
            uncompressed,
        };
        w.add(pack(7), vec![blob(0, false, 0), blob(1, true, 250)]);
        w.add(pack(8), vec![blob(2, false, 4000)]);
        for version in [1, 2] {
            let mut w = IndexWriter {
                packs: w.packs.clone(),
                blobs: 3,
            };
            let (name, bytes) = w.take_file(&key, version).expect("packs were added");
            assert_eq!(name, hex::encode(crate::id::hash(&bytes)));
            let json = crypto::unpack_json(&key.decrypt(&bytes).unwrap()).unwrap();
            let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(value["packs"][0]["id"], hex::encode([7u8; 32]));
            let b1 = &value["packs"][0]["blobs"][1];
            assert_eq!(b1["id"], id(1).to_string());
            assert_eq!(b1["type"], "tree");
            assert_eq!(
                (b1["offset"].as_u64(), b1["length"].as_u64()),
                (Some(100), Some(100))
            );
            assert_eq!(b1["uncompressed_length"], 250);
            assert!(
                value["packs"][0]["blobs"][0]
                    .get("uncompressed_length")
                    .is_none()
            );
            let file: FileIn = serde_json::from_slice(&json).unwrap();
            assert_eq!(file.packs[1].blobs[0].uncompressed_length, Some(4000));
            assert!(w.take_file(&key, version).is_none());
        }
    }

    #[test]
    fn an_id_set_says_each_id_is_new_once_from_many_threads() {
        let set = IdSet::default();
        let new = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..20_000 {
                        if set.insert(&id(i)) {
                            new.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(new.into_inner(), 20_000);
        assert!(!set.insert(&id(7)) && set.insert(&id(20_000)));
    }
}
