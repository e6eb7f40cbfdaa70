//! The repository's blob index as backups need it: which blobs exist, and where a tree blob
//! is (to read a parent snapshot's trees). Loaded from restic's index files (JSON, encrypted,
//! compressed in version 2); about 56 bytes per blob in memory, so 2 million blobs — a
//! repository of 2 TiB of 1 MiB chunks, or of two million small files — take about 110 MiB.
//!
//! Index files are written here too: [`IndexWriter`] turns the packs a backup uploaded into
//! restic's format.

use std::collections::HashMap;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use crate::crypto::{self, MasterKey};
use crate::store::{FileKind, Store, StoreError};

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
pub(crate) type PackBlobs = ([u8; 32], Vec<([u8; 32], Loc)>);

/// Every blob of the repository's index files.
#[derive(Debug, Default)]
pub(crate) struct BlobIndex {
    packs: Vec<[u8; 32]>,
    blobs: HashMap<[u8; 32], Loc>,
}

#[derive(Deserialize)]
struct FileIn {
    #[serde(default)]
    packs: Vec<PackIn>,
}

#[derive(Deserialize)]
struct PackIn {
    id: String,
    #[serde(default)]
    blobs: Vec<BlobIn>,
}

#[derive(Deserialize)]
struct BlobIn {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    offset: u32,
    length: u32,
    #[serde(default)]
    uncompressed_length: Option<u32>,
}

fn id(hex_id: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_id, &mut out).ok()?;
    Some(out)
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
    /// Reads every index file, `reads` at a time.
    pub(crate) async fn load(
        store: &Store,
        key: &MasterKey,
        reads: usize,
    ) -> Result<Self, IndexError> {
        let names = store
            .list(FileKind::Index)
            .await
            .map_err(|source| IndexError::Store {
                name: "(listing)".into(),
                source,
            })?;
        let mut files =
            futures::stream::iter(names.into_iter().map(|(name, _)| async move {
                let raw = store.read(FileKind::Index, &name).await.map_err(|source| {
                    IndexError::Store {
                        name: name.clone(),
                        source,
                    }
                })?;
                let file: FileIn = key
                    .decrypt(&raw)
                    .ok()
                    .and_then(|plain| crypto::unpack_json(&plain))
                    .and_then(|json| serde_json::from_slice(&json).ok())
                    .ok_or_else(|| IndexError::Damaged(name.clone()))?;
                Ok::<_, IndexError>((name, file))
            }))
            .buffer_unordered(reads.max(1));
        let mut index = Self::default();
        let mut pack_numbers: HashMap<[u8; 32], u32> = HashMap::new();
        while let Some((name, file)) = files.try_next().await? {
            for pack in file.packs {
                let pack_id = id(&pack.id).ok_or_else(|| IndexError::Damaged(name.clone()))?;
                let number = *pack_numbers.entry(pack_id).or_insert_with(|| {
                    index.packs.push(pack_id);
                    (index.packs.len() - 1) as u32
                });
                for b in pack.blobs {
                    let blob = id(&b.id).ok_or_else(|| IndexError::Damaged(name.clone()))?;
                    index.blobs.insert(
                        blob,
                        Loc {
                            pack: number,
                            offset: b.offset,
                            length: b.length,
                            uncompressed: b.uncompressed_length.unwrap_or(0),
                            tree: b.kind == "tree",
                        },
                    );
                }
            }
        }
        Ok(index)
    }

    pub(crate) fn get(&self, blob: &[u8; 32]) -> Option<Loc> {
        self.blobs.get(blob).copied()
    }

    /// Every pack the index names, with its blobs in pack order.
    pub(crate) fn by_pack(&self) -> Vec<PackBlobs> {
        let mut packs: Vec<_> = self.packs.iter().map(|p| (*p, Vec::new())).collect();
        for (id, loc) in &self.blobs {
            packs[loc.pack as usize].1.push((*id, *loc));
        }
        for (_, blobs) in &mut packs {
            blobs.sort_by_key(|(_, l)| l.offset);
        }
        packs
    }

    pub(crate) fn contains(&self, blob: &[u8; 32]) -> bool {
        self.blobs.contains_key(blob)
    }

    /// Reads, decrypts and decompresses one blob.
    pub(crate) fn read_blob(
        &self,
        blob: &[u8; 32],
        store: &Store,
        key: &MasterKey,
        rt: &Handle,
    ) -> Result<Vec<u8>, String> {
        let loc = self
            .get(blob)
            .ok_or_else(|| format!("blob {} is not in the index", hex::encode(blob)))?;
        let pack = hex::encode(self.packs[loc.pack as usize]);
        let raw = rt
            .block_on(store.read_range(FileKind::Pack, &pack, loc.offset.into(), loc.length.into()))
            .map_err(|e| format!("cannot read pack {pack}: {}", crate::error_chain(&e)))?;
        let plain = key.decrypt(&raw).map_err(|_| {
            format!(
                "blob {} in pack {pack} does not decrypt: the pack is damaged",
                hex::encode(blob)
            )
        })?;
        if loc.uncompressed == 0 {
            return Ok(plain);
        }
        crate::crypto::decompress(&plain, loc.uncompressed as usize).map_err(|e| {
            format!(
                "blob {} in pack {pack} does not decompress: {e}",
                hex::encode(blob)
            )
        })
    }
}

/// One blob of a pack, as its header and the index list it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PackedBlob {
    pub id: [u8; 32],
    pub tree: bool,
    pub offset: u32,
    /// Encrypted length.
    pub length: u32,
    /// 0: stored uncompressed.
    pub uncompressed: u32,
}

#[derive(Serialize)]
struct FileOut<'a> {
    packs: Vec<PackOut<'a>>,
}

#[derive(Serialize)]
struct PackOut<'a> {
    id: String,
    blobs: Vec<BlobOut<'a>>,
}

#[derive(Serialize)]
struct BlobOut<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'a str,
    offset: u32,
    length: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    uncompressed_length: Option<u32>,
}

/// Index entries of packs not yet in an index file.
#[derive(Debug, Default)]
pub(crate) struct IndexWriter {
    packs: Vec<([u8; 32], Vec<PackedBlob>)>,
    blobs: usize,
}

/// Blobs per index file (restic writes at most 50,000 per file, then starts another).
pub(crate) const BLOBS_PER_FILE: usize = 50_000;

impl IndexWriter {
    pub(crate) fn add(&mut self, pack: [u8; 32], blobs: Vec<PackedBlob>) {
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
        self.blobs = 0;
        let file = FileOut {
            packs: packs
                .iter()
                .map(|(id, blobs)| PackOut {
                    id: hex::encode(id),
                    blobs: blobs
                        .iter()
                        .map(|b| BlobOut {
                            id: hex::encode(b.id),
                            kind: if b.tree { "tree" } else { "data" },
                            offset: b.offset,
                            length: b.length,
                            uncompressed_length: (b.uncompressed != 0).then_some(b.uncompressed),
                        })
                        .collect(),
                })
                .collect(),
        };
        let json = serde_json::to_vec(&file).expect("an index always serialises");
        let bytes = key.encrypt(&crypto::pack_json(version, &json));
        Some((hex::encode(crate::id::hash(&bytes)), Bytes::from(bytes)))
    }
}
