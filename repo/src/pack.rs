//! The pack format, in one place: how a pack file is laid out, written and read back.
//!
//! ```text
//!  blob 0 (sealed) ‖ blob 1 (sealed) ‖ … ‖ header (sealed) ‖ header length (u32 LE)
//! ```
//!
//! Blobs are contiguous from offset 0, each sealed on its own (`IV ‖ AES-256-CTR ‖ MAC`, see
//! [`crate::crypto`]). The header is sealed as one object and lists the blobs in pack order,
//! one entry each:
//!
//! ```text
//!  type (1) ‖ sealed length (4, LE) ‖ [uncompressed length (4, LE)] ‖ SHA-256 of plaintext (32)
//! ```
//!
//! The type byte is 0 for data and 1 for a tree, plus 2 when the blob is zstd-compressed
//! (repository version 2); only then does the uncompressed length follow. An entry holds no
//! offset: a blob's offset is the sum of the lengths before it, so the index (which does name
//! offsets) must agree with the header exactly, and `restic check` says so when it does not.
//!
//! The header is verified when written: the sealed header is opened again and parsed back,
//! and must list what was written, where it was written. That costs a decryption of at most
//! ~0.5 MiB per pack (12,500 entries of 41 bytes), against the 16 MiB or more of blobs sealed
//! before it, and catches a header that would make the whole pack unreadable (memory damaged
//! between sealing and writing, or a bug in the offsets) before it is uploaded and indexed.

use crate::crypto::MasterKey;
use crate::id::BlobId;

/// An entry of an uncompressed blob: type, sealed length, id.
pub(crate) const ENTRY_LEN: usize = 1 + 4 + 32;
/// An entry of a compressed blob: an uncompressed length (4 bytes) after the sealed length.
pub(crate) const COMPRESSED_ENTRY_LEN: usize = ENTRY_LEN + 4;
/// The header's length, after the sealed header at the end of the pack.
pub(crate) const HEADER_LENGTH_LEN: usize = 4;
/// What sealing adds to the header: IV (16) and MAC (16).
const SEAL_OVERHEAD: usize = 32;

/// The type byte's bit for a tree blob (clear: data).
const TYPE_TREE: u8 = 1;
/// The type byte's bit for a compressed blob.
const TYPE_COMPRESSED: u8 = 2;

/// One blob of a pack, as its header and the index list it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackedBlob {
    pub id: BlobId,
    pub tree: bool,
    pub offset: u32,
    /// Sealed length.
    pub length: u32,
    /// 0: stored uncompressed.
    pub uncompressed: u32,
}

/// Why a pack's header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum PackError {
    /// Too short to hold the header length.
    #[error("the pack is {len} bytes, too short to hold a header")]
    TooShort { len: usize },
    /// The header length points before the start of the pack.
    #[error("the pack's header length {header} is more than its {len} bytes")]
    HeaderLength { header: u32, len: usize },
    /// The header's MAC does not match: damaged, or another repository's key.
    #[error("the pack's header does not decrypt")]
    HeaderDecrypt,
    /// The header ends inside an entry.
    #[error("the pack's header ends inside entry {entry}")]
    Truncated { entry: usize },
    /// An entry's type is none of the four the format knows.
    #[error("entry {entry} of the pack's header has unknown blob type {kind}")]
    UnknownType { entry: usize, kind: u8 },
    /// The blobs' lengths add up past the 4 GiB a pack's offsets can name.
    #[error("the blobs the pack's header lists add up to more than 4 GiB")]
    TooLarge,
    /// The header read back on write is not the one meant (a bug, or damaged memory).
    #[error("the pack's header read back after sealing does not list the blobs written")]
    Unverified,
}

/// The type byte of a blob.
fn type_byte(blob: &PackedBlob) -> u8 {
    let mut kind = 0;
    if blob.tree {
        kind |= TYPE_TREE;
    }
    if blob.uncompressed != 0 {
        kind |= TYPE_COMPRESSED;
    }
    kind
}

/// The header's plaintext listing `blobs`.
fn encode_header(blobs: &[PackedBlob]) -> Vec<u8> {
    let mut header = Vec::with_capacity(blobs.len() * COMPRESSED_ENTRY_LEN);
    for b in blobs {
        header.push(type_byte(b));
        header.extend_from_slice(&b.length.to_le_bytes());
        if b.uncompressed != 0 {
            header.extend_from_slice(&b.uncompressed.to_le_bytes());
        }
        header.extend_from_slice(b.id.as_bytes());
    }
    header
}

/// The blobs a header's plaintext lists, with the offsets their order gives them.
fn decode_header(mut plain: &[u8]) -> Result<Vec<PackedBlob>, PackError> {
    let mut out = Vec::with_capacity(plain.len() / ENTRY_LEN);
    let mut offset = 0u32;
    while let Some(&kind) = plain.first() {
        let entry = out.len();
        if kind & !(TYPE_TREE | TYPE_COMPRESSED) != 0 {
            return Err(PackError::UnknownType { entry, kind });
        }
        let compressed = kind & TYPE_COMPRESSED != 0;
        let len = if compressed {
            COMPRESSED_ENTRY_LEN
        } else {
            ENTRY_LEN
        };
        let bytes = plain.get(..len).ok_or(PackError::Truncated { entry })?;
        let u32_at = |at: usize| {
            u32::from_le_bytes(
                bytes[at..at + 4]
                    .try_into()
                    .expect("4 bytes within the entry"),
            )
        };
        let length = u32_at(1);
        let uncompressed = if compressed { u32_at(5) } else { 0 };
        // The header's bytes: raw here, typed as soon as they are read.
        let id: [u8; 32] = bytes[len - 32..]
            .try_into()
            .expect("the entry ends with 32 bytes of id");
        out.push(PackedBlob {
            id: BlobId::from_bytes(id),
            tree: kind & TYPE_TREE != 0,
            offset,
            length,
            uncompressed,
        });
        offset = offset.checked_add(length).ok_or(PackError::TooLarge)?;
        plain = &plain[len..];
    }
    Ok(out)
}

/// Finishes a pack: `pack` holds the sealed blobs `blobs` lists, in that order from offset 0;
/// appends the sealed header and its length, then opens the header again and checks it lists
/// `blobs` where they are ([`PackError::Unverified`] if not: the pack must not be stored).
pub(crate) fn write_header(
    key: &MasterKey,
    blobs: &[PackedBlob],
    pack: &mut Vec<u8>,
) -> Result<(), PackError> {
    let data_end = pack.len();
    let plain = encode_header(blobs);
    let sealed = key.encrypt(&plain);
    debug_assert_eq!(sealed.len(), plain.len() + SEAL_OVERHEAD);
    let header_len = u32::try_from(sealed.len()).map_err(|_| PackError::TooLarge)?;
    pack.extend_from_slice(&sealed);
    pack.extend_from_slice(&header_len.to_le_bytes());
    let read_back = read_header(key, pack)?;
    let ends_at = read_back
        .last()
        .map_or(0, |b| b.offset as usize + b.length as usize);
    if read_back != blobs || ends_at != data_end {
        return Err(PackError::Unverified);
    }
    Ok(())
}

/// The blobs `pack`'s header lists (a whole pack file), with their offsets.
pub(crate) fn read_header(key: &MasterKey, pack: &[u8]) -> Result<Vec<PackedBlob>, PackError> {
    let len = pack.len();
    let tail = len
        .checked_sub(HEADER_LENGTH_LEN)
        .ok_or(PackError::TooShort { len })?;
    let header = u32::from_le_bytes(
        pack[tail..]
            .try_into()
            .expect("HEADER_LENGTH_LEN bytes at the end"),
    );
    let start = tail
        .checked_sub(header as usize)
        .ok_or(PackError::HeaderLength { header, len })?;
    let plain = key
        .decrypt(&pack[start..tail])
        .map_err(|_| PackError::HeaderDecrypt)?;
    decode_header(&plain)
}

/// The bytes a pack's header and its length take, for `blobs` entries of which `compressed`
/// are compressed.
#[cfg(test)]
fn header_size(blobs: usize, compressed: usize) -> usize {
    (blobs - compressed) * ENTRY_LEN
        + compressed * COMPRESSED_ENTRY_LEN
        + SEAL_OVERHEAD
        + HEADER_LENGTH_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seals `blobs` (tree?, plaintext, compressed?) into a pack, as the archiver does.
    fn pack_of(key: &MasterKey, blobs: &[(bool, &[u8], bool)]) -> (Vec<u8>, Vec<PackedBlob>) {
        let mut pack = Vec::new();
        let mut listed = Vec::new();
        for &(tree, plain, compress) in blobs {
            let id = BlobId::of(plain);
            let (stored, uncompressed) = if compress {
                let z = crate::crypto::compress(plain, 3).expect("compress");
                (z, plain.len() as u32)
            } else {
                (plain.to_vec(), 0)
            };
            let offset = pack.len();
            key.seal_into(&stored, &mut pack);
            listed.push(PackedBlob {
                id,
                tree,
                offset: offset as u32,
                length: (pack.len() - offset) as u32,
                uncompressed,
            });
        }
        (pack, listed)
    }

    #[test]
    fn a_written_header_reads_back_with_its_entries_and_offsets() {
        let key = MasterKey::random();
        let text =
            b"a tree's json, long enough to compress: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let blobs: [(bool, &[u8], bool); 4] = [
            (false, b"plain data", false),
            (false, &[7u8; 4096], true),
            (true, b"{\"nodes\":[]}\n", false),
            (true, text, true),
        ];
        let (mut pack, listed) = pack_of(&key, &blobs);
        let data_end = pack.len();
        write_header(&key, &listed, &mut pack).expect("the header verifies");
        assert_eq!(pack.len() - data_end, header_size(4, 2));
        let read = read_header(&key, &pack).expect("the header reads back");
        assert_eq!(read, listed);
        assert_eq!(read[0].offset, 0);
        for (before, next) in read.iter().zip(&read[1..]) {
            assert_eq!(next.offset, before.offset + before.length);
        }
        assert!(read[2].tree && !read[1].tree);
        assert_eq!(read[3].uncompressed as usize, text.len());
    }

    #[test]
    fn a_damaged_header_is_refused() {
        let key = MasterKey::random();
        let (mut pack, listed) = pack_of(&key, &[(false, b"data", false)]);
        write_header(&key, &listed, &mut pack).expect("written");
        let header_at = pack.len() - HEADER_LENGTH_LEN - 10;

        let mut flipped = pack.clone();
        flipped[header_at] ^= 1;
        assert_eq!(read_header(&key, &flipped), Err(PackError::HeaderDecrypt));

        let mut long = pack.clone();
        let at = long.len() - HEADER_LENGTH_LEN;
        long[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_header(&key, &long),
            Err(PackError::HeaderLength { .. })
        ));

        assert_eq!(
            read_header(&key, &pack[..3]),
            Err(PackError::TooShort { len: 3 })
        );
        assert_eq!(
            read_header(&MasterKey::random(), &pack),
            Err(PackError::HeaderDecrypt)
        );
    }

    #[test]
    fn a_header_that_ends_inside_an_entry_or_names_an_unknown_type_is_refused() {
        let blob = PackedBlob {
            id: BlobId::from_bytes([9; 32]),
            tree: false,
            offset: 0,
            length: 40,
            uncompressed: 100,
        };
        let plain = encode_header(&[blob]);
        assert_eq!(plain.len(), COMPRESSED_ENTRY_LEN);
        assert_eq!(
            decode_header(&plain[..ENTRY_LEN]),
            Err(PackError::Truncated { entry: 0 })
        );
        let mut odd = plain.clone();
        odd[0] = 4;
        assert_eq!(
            decode_header(&odd),
            Err(PackError::UnknownType { entry: 0, kind: 4 })
        );
    }

    #[test]
    fn a_header_that_does_not_match_its_blobs_is_not_written() {
        let key = MasterKey::random();
        let (mut pack, mut listed) =
            pack_of(&key, &[(false, b"one", false), (true, b"two", false)]);
        // An offset the blobs' order does not give.
        listed[1].offset += 1;
        assert_eq!(
            write_header(&key, &listed, &mut pack),
            Err(PackError::Unverified)
        );
    }
}
