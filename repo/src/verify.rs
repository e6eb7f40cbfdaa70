//! `check --read-data`: every pack the index names is read whole, once, by one reader per
//! core, and must hash to its name; its header must list exactly the blobs the index puts in
//! it, where the index puts them; and each blob must decrypt (its MAC), decompress and hash
//! to its id. Memory: one pack per reader. The structure (snapshots, trees, index against
//! pack sizes) is checked by the format engine before this runs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::crypto::{MasterKey, Opener};
use crate::index::{BlobIndex, Loc};
use crate::progress::Stage;
use crate::store::{FileKind, Store};

/// A damaged pack: its name and what is wrong with it.
pub(crate) type Damage = (String, String);

/// Reads and verifies every pack of `index` with `readers` threads; `Err` only when the
/// check itself could not go on (cancelled).
pub(crate) fn read_data(
    store: &Store,
    rt: &Handle,
    key: &MasterKey,
    index: &BlobIndex,
    readers: usize,
    cancel: &CancellationToken,
    stage: &dyn Stage,
) -> Result<Vec<Damage>, ()> {
    let packs = index.by_pack();
    stage.set_total(packs.len() as u64);
    let next = AtomicUsize::new(0);
    let damage = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..readers.max(1) {
            scope.spawn(|| {
                let mut opener = Opener::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= packs.len() {
                        break;
                    }
                    let (id, blobs) = packs.pack(i);
                    if cancel.is_cancelled() {
                        break;
                    }
                    let name = hex::encode(id);
                    if let Err(what) = verify_pack(store, rt, key, &mut opener, &name, &id, &blobs)
                    {
                        damage
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push((name, what));
                    }
                    stage.advance(1);
                }
            });
        }
    });
    if cancel.is_cancelled() {
        return Err(());
    }
    Ok(damage
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner))
}

fn verify_pack(
    store: &Store,
    rt: &Handle,
    key: &MasterKey,
    opener: &mut Opener,
    name: &str,
    id: &[u8; 32],
    blobs: &[([u8; 32], Loc)],
) -> Result<(), String> {
    let data = rt
        .block_on(store.read(FileKind::Pack, name))
        .map_err(|e| format!("cannot be read: {}", crate::error_chain(&e)))?;
    let hash: [u8; 32] = Sha256::digest(&data).into();
    if &hash != id {
        return Err(format!(
            "its contents hash to {}, not to its name",
            hex::encode(hash)
        ));
    }
    // The index may name a blob stored twice at one place only: every blob it puts here must
    // be in the header, at that offset and length.
    let header: std::collections::HashSet<([u8; 32], u32, u32)> =
        header(key, &data)?.into_iter().collect();
    if let Some((blob, _)) = blobs
        .iter()
        .find(|(b, l)| !header.contains(&(*b, l.offset, l.length)))
    {
        return Err(format!(
            "its header does not hold blob {} where the index puts it",
            hex::encode(blob)
        ));
    }
    for (blob, loc) in blobs {
        let sealed = data
            .get(loc.offset as usize..(loc.offset + loc.length) as usize)
            .ok_or("it is shorter than its index says")?;
        let plain = opener
            .open(key, sealed, loc.uncompressed)
            .map_err(|e| format!("blob {} {e}", hex::encode(blob)))?;
        let hash: [u8; 32] = Sha256::digest(plain).into();
        if &hash != blob {
            return Err(format!(
                "blob {} hashes to {}",
                hex::encode(blob),
                hex::encode(hash)
            ));
        }
    }
    Ok(())
}

/// The blobs a pack's header lists: id, offset, encrypted length.
fn header(key: &MasterKey, data: &[u8]) -> Result<Vec<([u8; 32], u32, u32)>, String> {
    let bad = || "its header is damaged".to_string();
    let n = data.len();
    let tail = n.checked_sub(4).ok_or_else(bad)?;
    let len = u32::from_le_bytes(data[tail..].try_into().map_err(|_| bad())?) as usize;
    let start = tail.checked_sub(len).ok_or_else(bad)?;
    let plain = key.decrypt(&data[start..tail]).map_err(|_| bad())?;
    let mut out = Vec::new();
    let mut offset = 0u32;
    let mut rest = &plain[..];
    while !rest.is_empty() {
        let kind = rest[0];
        let entry = if kind & 2 != 0 { 41 } else { 37 };
        let e = rest.get(..entry).ok_or_else(bad)?;
        let length = u32::from_le_bytes(e[1..5].try_into().map_err(|_| bad())?);
        let id: [u8; 32] = e[entry - 32..].try_into().map_err(|_| bad())?;
        out.push((id, offset, length));
        offset += length;
        rest = &rest[entry..];
    }
    Ok(out)
}
