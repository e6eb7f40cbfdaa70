//! Encryption of the small JSON files we write ourselves (locks), in restic's format:
//! `IV(16) ‖ AES-256-CTR ciphertext ‖ Poly1305-AES MAC(16)`, and for repository version 2 a
//! plaintext of `0x02 ‖ zstd(JSON)`. Readers accept both compressed and plain JSON, as restic
//! does. Packs, trees, indexes and snapshots are written by the format engine.

use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use aes256ctr_poly1305aes::aead::Aead;
use rand::RngCore;

/// The repository's master key: AES-256 key, Poly1305 `k` and `r`.
#[derive(Clone)]
pub(crate) struct MasterKey(aes256ctr_poly1305aes::Key);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Decryption failed: wrong key, or the data was damaged.
#[derive(Debug, thiserror::Error)]
#[error("the data does not decrypt with the repository key (damaged, or not this repository's)")]
pub(crate) struct DecryptError;

impl MasterKey {
    pub(crate) fn from_rustic(key: &rustic_core::repofile::MasterKey) -> Self {
        let mut raw = aes256ctr_poly1305aes::Key::default();
        raw[0..32].copy_from_slice(&key.encrypt);
        raw[32..48].copy_from_slice(&key.mac.k);
        raw[48..64].copy_from_slice(&key.mac.r);
        Self(raw)
    }

    #[cfg(test)]
    pub(crate) fn random() -> Self {
        let mut raw = aes256ctr_poly1305aes::Key::default();
        rand::rng().fill_bytes(&mut raw);
        Self(raw)
    }

    pub(crate) fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let cipher = Aes256CtrPoly1305Aes::new(&self.0);
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt((&nonce).into(), plaintext)
            .expect("AES-CTR/Poly1305 encryption has no failure mode for in-memory data");
        let mut out = Vec::with_capacity(16 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub(crate) fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, DecryptError> {
        if data.len() < 32 {
            return Err(DecryptError);
        }
        let (nonce, sealed) = data.split_at(16);
        Aes256CtrPoly1305Aes::new(&self.0)
            .decrypt(nonce.into(), sealed)
            .map_err(|_| DecryptError)
    }
}

/// Plaintext of an unpacked file for repository `version`: v2 compresses.
pub(crate) fn pack_json(version: u32, json: &[u8]) -> Vec<u8> {
    if version >= 2 {
        let mut out = vec![2u8];
        out.extend(
            zstd::bulk::compress(json, 0).expect("zstd compression of a small buffer cannot fail"),
        );
        out
    } else {
        json.to_vec()
    }
}

/// JSON of an unpacked file's plaintext: `0x02 ‖ zstd` or plain JSON.
pub(crate) fn unpack_json(plain: &[u8]) -> Option<Vec<u8>> {
    match plain.first() {
        Some(2) => zstd::stream::decode_all(&plain[1..]).ok(),
        Some(b'{' | b'[') => Some(plain.to_vec()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_then_decrypt_round_trips_and_detects_damage() {
        let key = MasterKey::random();
        let sealed = key.encrypt(b"{\"a\":1}");
        assert_eq!(sealed.len(), 16 + 7 + 16);
        assert_eq!(key.decrypt(&sealed).expect("decrypts"), b"{\"a\":1}");
        let mut damaged = sealed.clone();
        damaged[20] ^= 1;
        assert!(key.decrypt(&damaged).is_err());
        assert!(MasterKey::random().decrypt(&sealed).is_err());
    }

    #[test]
    fn v2_json_is_compressed_and_both_forms_read() {
        let json = br#"{"time":"2026-01-01T00:00:00Z","exclusive":false}"#;
        let v2 = pack_json(2, json);
        assert_eq!(v2[0], 2);
        assert_eq!(unpack_json(&v2).expect("v2"), json);
        assert_eq!(unpack_json(&pack_json(1, json)).expect("v1"), json);
        assert!(unpack_json(b"garbage").is_none());
    }
}
