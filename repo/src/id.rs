//! Identifiers of repository objects: the SHA-256 of their stored bytes (packs, files) or of
//! their plaintext (blobs), written as 64 lowercase hex digits. Each kind is its own type so a
//! snapshot id cannot be passed where a pack id is meant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(into = "String", try_from = "String")]
        pub struct $name([u8; 32]);

        // Not every kind of id is built in every way (a lock's is never hashed here).
        #[allow(dead_code)]
        impl $name {
            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// The id whose raw bytes are `bytes` (a SHA-256 output, or 32 bytes of a file's
            /// format).
            pub(crate) const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }
            /// The id of `data`: its SHA-256.
            pub(crate) fn of(data: &[u8]) -> Self {
                Self(hash(data))
            }
            /// The format engine's id of the same object.
            pub(crate) fn to_rustic(self) -> rustic_core::Id {
                rustic_core::Id::new(self.0)
            }
            /// The id the format engine names `id`.
            pub(crate) fn from_rustic(id: rustic_core::Id) -> Self {
                Self(rustic_bytes(id))
            }
            /// The first 8 hex digits, as restic prints ids.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(s, &mut bytes).map_err(|_| InvalidId(s.to_string()))?;
                Ok(Self(bytes))
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.to_string()
            }
        }
    };
}

id_type!(
    /// A snapshot: the SHA-256 of its file in `snapshots/`.
    SnapshotId
);
id_type!(
    /// A pack: the SHA-256 of its file in `data/`.
    PackId
);
id_type!(
    /// A tree or data blob: the SHA-256 of its plaintext.
    BlobId
);
id_type!(
    /// A tree blob: the SHA-256 of a directory's JSON. A [`BlobId`] too ([`TreeId::blob`]);
    /// its own type where only a tree may be meant (a snapshot's root, a directory's subtree).
    TreeId
);
id_type!(
    /// A lock file in `locks/`.
    LockId
);

impl TreeId {
    /// The blob this tree is stored as.
    pub(crate) fn blob(self) -> BlobId {
        BlobId(self.0)
    }
}

/// A string that is not 64 hex digits.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{0}` is not a 64-digit hex id")]
pub struct InvalidId(pub String);

/// The bytes of a format engine id (it shows them only as hex).
pub(crate) fn rustic_bytes(id: rustic_core::Id) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(id.to_hex().as_str(), &mut out)
        .expect("the format engine's ids are 64 hex digits");
    out
}

/// SHA-256 of `data`: raw bytes, at the format's boundary (a file's name, an id's bytes).
pub(crate) fn hash(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_through_hex_and_json() {
        let id = SnapshotId(hash(b"lifeboat"));
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<SnapshotId>().expect("valid"), id);
        let json = serde_json::to_string(&id).expect("serialise");
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(id.short(), &text[..8]);
    }

    #[test]
    fn malformed_id_is_rejected() {
        assert!("abc".parse::<PackId>().is_err());
        assert!("zz".repeat(32).parse::<PackId>().is_err());
    }
}
