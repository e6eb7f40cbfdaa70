//! `check --read-data`: every pack the index names is read whole, once, by one reader per
//! core (each keeping the next packs' reads in flight), and must hash to its name; its header must list exactly the blobs the index puts in
//! it, where the index puts them; and each blob must decrypt (its MAC), decompress and hash
//! to its id. Memory: one pack per read in flight. The structure (snapshots, trees, index against
//! pack sizes) is checked by the format engine before this runs.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::crypto::{MasterKey, OpenError, Opener};
use crate::id::{BlobId, PackId};
use crate::index::{BlobIndex, Loc};
use crate::pack::{self, PackError};
use crate::progress::Stage;
use crate::store::{Asked, FileKind, Store, StoreError};

/// A damaged pack: its id and what is wrong with it.
pub(crate) type Damage = (PackId, PackDamage);

/// What is wrong with a pack. Each message completes "pack … is damaged: ".
#[derive(Debug, thiserror::Error)]
pub(crate) enum PackDamage {
    #[error("cannot be read")]
    Unreadable {
        #[source]
        source: Box<StoreError>,
    },
    #[error("its contents hash to {hash}, not to its name")]
    WrongHash { hash: PackId },
    // Which part of the header is damaged is left out: it names a byte of ciphertext.
    #[error("its header is damaged")]
    Header(PackError),
    #[error("its header does not hold blob {blob} where the index puts it")]
    NotInHeader { blob: BlobId },
    #[error("it is shorter than its index says")]
    Short,
    // The opener's words follow the blob's id ("blob … does not decrypt").
    #[error("blob {blob} {what}")]
    Blob { blob: BlobId, what: OpenError },
    #[error("blob {blob} hashes to {hash}")]
    BlobHash { blob: BlobId, hash: BlobId },
}

/// Reads and verifies every pack of `index` with `readers` threads that keep `reads` whole
/// packs in flight between them (at least one each: a remote store's round trips overlap the
/// hashing); `Err` only when the check itself could not go on (cancelled).
pub(crate) fn read_data(
    store: &Store,
    rt: &Handle,
    key: &MasterKey,
    index: &BlobIndex,
    (readers, reads): (usize, usize),
    cancel: &CancellationToken,
    stage: &dyn Stage,
) -> Result<Vec<Damage>, ()> {
    let packs = index.by_pack();
    stage.set_total(packs.len() as u64);
    let next = AtomicUsize::new(0);
    let damage = Mutex::new(Vec::new());
    let readers = readers.max(1);
    let ahead = reads.max(readers).div_ceil(readers);
    std::thread::scope(|scope| {
        for _ in 0..readers {
            scope.spawn(|| {
                let mut opener = Opener::default();
                let mut asked: VecDeque<(usize, Asked)> = VecDeque::with_capacity(ahead);
                loop {
                    while asked.len() < ahead {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= packs.len() {
                            break;
                        }
                        let name = packs.pack(i).0.to_string();
                        asked.push_back((i, store.ask(rt, FileKind::Pack, name, None)));
                    }
                    let Some((i, read)) = asked.pop_front() else {
                        break;
                    };
                    if cancel.is_cancelled() {
                        break;
                    }
                    let (id, blobs) = packs.pack(i);
                    let checked = read
                        .wait(rt)
                        .and_then(|arriving| arriving.collect(rt))
                        .map_err(|e| PackDamage::Unreadable {
                            source: Box::new(e),
                        })
                        .and_then(|data| verify_pack(&data, key, &mut opener, &id, &blobs));
                    if let Err(what) = checked {
                        damage
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push((id, what));
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
    data: &[u8],
    key: &MasterKey,
    opener: &mut Opener,
    id: &PackId,
    blobs: &[(BlobId, Loc)],
) -> Result<(), PackDamage> {
    let hash = PackId::of(data);
    if &hash != id {
        return Err(PackDamage::WrongHash { hash });
    }
    // The index may name a blob stored twice at one place only: every blob it puts here must
    // be in the header, at that offset and length.
    let header: std::collections::HashSet<(BlobId, u32, u32)> = pack::read_header(key, data)
        .map_err(PackDamage::Header)?
        .into_iter()
        .map(|b| (b.id, b.offset, b.length))
        .collect();
    if let Some((blob, _)) = blobs
        .iter()
        .find(|(b, l)| !header.contains(&(*b, l.offset, l.length)))
    {
        return Err(PackDamage::NotInHeader { blob: *blob });
    }
    for (blob, loc) in blobs {
        let sealed = data
            .get(loc.offset as usize..(loc.offset + loc.length) as usize)
            .ok_or(PackDamage::Short)?;
        let plain = opener
            .open(key, sealed, loc.uncompressed)
            .map_err(|what| PackDamage::Blob { blob: *blob, what })?;
        let hash = BlobId::of(plain);
        if &hash != blob {
            return Err(PackDamage::BlobHash { blob: *blob, hash });
        }
    }
    Ok(())
}
