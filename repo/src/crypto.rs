//! Encryption of the small JSON files we write ourselves (locks), in restic's format:
//! `IV(16) ‖ AES-256-CTR ciphertext ‖ Poly1305-AES MAC(16)`, and for repository version 2 a
//! plaintext of `0x02 ‖ zstd(JSON)`. Readers accept both compressed and plain JSON, as restic
//! does. Packs, trees, indexes and snapshots are written by the format engine.
//!
//! Key files are ours too: restic's JSON (`kdf: scrypt`, N, r, p, salt, data), with the master
//! key encrypted under the 64 bytes scrypt derives from the password. We choose N = 2^15,
//! r = 8 (32 MiB of memory per derivation, within restic's own calibration cap of 60 MiB) and
//! p = 4 for a derivation time close to restic's 0.5 s target, instead of the 2^17 (128 MiB)
//! the format engine would pick: every open of the repository, on every agent, pays that
//! memory, and the agent's whole budget is 256 MiB by default.

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

    /// Appends `plaintext` sealed (nonce ‖ ciphertext ‖ MAC) to `out`, encrypting in place:
    /// no copy of the blob beside the pack it goes into.
    pub(crate) fn seal_into(&self, plaintext: &[u8], out: &mut Vec<u8>) {
        use aes256ctr_poly1305aes::aead::AeadInPlace;
        let cipher = Aes256CtrPoly1305Aes::new(&self.0);
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = cipher
            .encrypt_in_place_detached((&nonce).into(), b"", &mut out[start..])
            .expect("AES-CTR/Poly1305 encryption has no failure mode for in-memory data");
        out.extend_from_slice(&tag);
    }

    pub(crate) fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let mut out = Vec::new();
        self.decrypt_into(data, &mut out)?;
        Ok(out)
    }

    /// [`Self::decrypt`] into `out` (replacing what it held), decrypting in place: the
    /// buffer is reused from blob to blob instead of allocated per blob.
    pub(crate) fn decrypt_into(&self, data: &[u8], out: &mut Vec<u8>) -> Result<(), DecryptError> {
        use aes256ctr_poly1305aes::aead::AeadInPlace;
        if data.len() < 32 {
            return Err(DecryptError);
        }
        let (nonce, sealed) = data.split_at(16);
        let (ciphertext, tag) = sealed.split_at(sealed.len() - 16);
        out.clear();
        out.extend_from_slice(ciphertext);
        Aes256CtrPoly1305Aes::new(&self.0)
            .decrypt_in_place_detached(nonce.into(), b"", out, tag.into())
            .map_err(|_| DecryptError)
    }
}

/// Why a blob could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("does not decrypt")]
    Decrypt,
    #[error("does not decompress: {0}")]
    Decompress(std::io::Error),
}

/// A thread's buffers for opening blobs (decrypt, then decompress), kept from blob to blob:
/// a restore or a check opens thousands of blobs of up to 8 MiB, and two fresh buffers per
/// blob cost page faults on every one and the allocator's trimming on every free (measured:
/// a sixth of a 2 GiB restore's time).
#[derive(Default)]
pub(crate) struct Opener {
    plain: Vec<u8>,
    out: Vec<u8>,
    /// The last blob opened was compressed (its plaintext is in `out`).
    compressed: bool,
}

impl Opener {
    /// The plaintext of `sealed`, decompressed to `uncompressed` bytes unless that is 0
    /// (stored uncompressed). Valid until the next call.
    pub(crate) fn open(
        &mut self,
        key: &MasterKey,
        sealed: &[u8],
        uncompressed: u32,
    ) -> Result<&[u8], OpenError> {
        self.compressed = false;
        key.decrypt_into(sealed, &mut self.plain)
            .map_err(|_| OpenError::Decrypt)?;
        if uncompressed != 0 {
            decompress_into(&self.plain, uncompressed as usize, &mut self.out)
                .map_err(OpenError::Decompress)?;
            self.compressed = true;
        }
        Ok(self.last())
    }

    /// The plaintext of the last blob [`Self::open`] opened.
    pub(crate) fn last(&self) -> &[u8] {
        if self.compressed {
            &self.out
        } else {
            &self.plain
        }
    }
}

/// scrypt parameters of the key files we write (see the module comment).
pub(crate) const KDF_LOG_N: u8 = 15;
pub(crate) const KDF_R: u32 = 8;
pub(crate) const KDF_P: u32 = 4;

/// scrypt lanes (its `p`) derived at once: each holds its own table (32 MiB with our keys),
/// so this many tables is what deriving a key costs ([`crate::budget`]'s key reservation).
pub(crate) const KEY_LANES: usize = 2;

/// Runs `derive` (a key derivation) with scrypt's lanes on [`KEY_LANES`] threads: our keys
/// have four lanes (p = 4), and one after the other they took 0.4 s of every backup on this
/// 2-core machine, before anything else could start. restic's keys have one lane (p = 1):
/// no change for them.
pub(crate) fn deriving<T: Send>(derive: impl FnOnce() -> T + Send) -> T {
    match rayon::ThreadPoolBuilder::new()
        .num_threads(KEY_LANES)
        .thread_name(|_| "lifeboat-scrypt".into())
        .build()
    {
        Ok(pool) => pool.install(derive),
        // Without threads, one lane after the other on this one.
        Err(_) => derive(),
    }
}

/// A key file for `master` protected by `password`: its name (SHA-256 of the bytes) and bytes.
pub(crate) fn key_file(
    master: &rustic_core::repofile::MasterKey,
    password: &str,
) -> (String, Vec<u8>) {
    let mut salt = vec![0u8; 64];
    rand::rng().fill_bytes(&mut salt);
    let params =
        scrypt::Params::new(KDF_LOG_N, KDF_R, KDF_P).expect("fixed scrypt parameters are valid");
    let mut derived = aes256ctr_poly1305aes::Key::default();
    deriving(|| scrypt::scrypt(password.as_bytes(), &salt, &params, &mut derived))
        .expect("64 bytes is a valid scrypt output length");
    let user_key = MasterKey(derived);
    let master_json = serde_json::to_vec(master).expect("a master key always serialises");
    let file = rustic_core::repofile::KeyFile {
        hostname: Some(gethostname::gethostname().to_string_lossy().into_owned()),
        username: std::env::var("USER").ok(),
        created: Some(jiff::Zoned::now()),
        kdf: "scrypt".into(),
        n: 1 << KDF_LOG_N,
        r: KDF_R,
        p: KDF_P,
        data: user_key.encrypt(&master_json),
        salt,
    };
    let bytes = serde_json::to_vec(&file).expect("a key file always serialises");
    (hex::encode(crate::id::hash(&bytes)), bytes)
}

/// The most memory one scrypt lane of a key file may take, and the most lanes.
const MAX_KDF_LANE: u64 = 128 << 20;
const MAX_KDF_LANES: u32 = 16;

/// A key file that is not one: not restic's JSON, an unknown key derivation, scrypt
/// parameters out of range, or a master key that is not JSON once decrypted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct KeyFileDamaged(&'static str);

/// The master key `bytes` (a key file, restic's JSON) holds under `password`: `None` when
/// the password does not open it. Derives with the file's own scrypt parameters (restic's
/// keys and ours differ), its lanes as [`deriving`] runs them.
pub(crate) fn open_key_file(
    bytes: &[u8],
    password: &str,
) -> Result<Option<rustic_core::repofile::MasterKey>, KeyFileDamaged> {
    let file: rustic_core::repofile::KeyFile =
        serde_json::from_slice(bytes).map_err(|_| KeyFileDamaged("not a key file"))?;
    if file.kdf != "scrypt" {
        return Err(KeyFileDamaged("an unknown key derivation"));
    }
    if !file.n.is_power_of_two() || file.n < 2 {
        return Err(KeyFileDamaged("scrypt's N is not a power of two"));
    }
    // The file comes from the bucket: a derivation that would take gigabytes or minutes is
    // refused, not run. restic's keys take up to 60 MiB a lane, rustic's 128 MiB, ours 32 MiB.
    if u64::from(file.n) * u64::from(file.r) * 128 > MAX_KDF_LANE || file.p > MAX_KDF_LANES {
        return Err(KeyFileDamaged(
            "scrypt parameters beyond what restic-format tools write (over 128 MiB a lane or 16 lanes)",
        ));
    }
    let log_n = u8::try_from(file.n.trailing_zeros()).expect("below 32");
    let params = scrypt::Params::new(log_n, file.r, file.p)
        .map_err(|_| KeyFileDamaged("scrypt parameters out of range"))?;
    let mut derived = aes256ctr_poly1305aes::Key::default();
    deriving(|| scrypt::scrypt(password.as_bytes(), &file.salt, &params, &mut derived))
        .expect("64 bytes is a valid scrypt output length");
    match MasterKey(derived).decrypt(&file.data) {
        Err(DecryptError) => Ok(None),
        Ok(plain) => serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|_| KeyFileDamaged("its master key is not JSON")),
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

/// Compresses a small blob (a tree) at `level` with this thread's zstd context: a context per
/// tree cost more than compressing it (a million directories: most of the backup's time).
pub(crate) fn compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static CONTEXT: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
            const { std::cell::RefCell::new(None) };
    }
    CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        c.as_mut().expect("set above").1.compress(data)
    })
}

/// Decompresses a blob of known length with this thread's zstd context: a new context per
/// blob cost more than decompressing a small blob itself.
pub(crate) fn decompress(data: &[u8], len: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    decompress_into(data, len, &mut out)?;
    Ok(out)
}

/// [`decompress`] into `out` (replacing what it held); fails unless the blob is exactly
/// `len` bytes.
fn decompress_into(data: &[u8], len: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    thread_local! {
        static CONTEXT: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    out.clear();
    out.reserve(len);
    CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(zstd::bulk::Decompressor::new()?);
        }
        c.as_mut()
            .expect("set above")
            .decompress_to_buffer(data, out)
    })?;
    if out.len() == len {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} bytes, not the {len} its index says", out.len()),
        ))
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
    fn sealing_in_place_is_what_decrypt_reads() {
        let key = MasterKey::random();
        let mut out = b"before".to_vec();
        key.seal_into(b"a blob", &mut out);
        assert_eq!(&out[..6], b"before");
        assert_eq!(out.len(), 6 + 16 + 6 + 16);
        assert_eq!(key.decrypt(&out[6..]).expect("decrypts"), b"a blob");
    }

    #[test]
    fn opener_reads_plain_and_compressed_blobs_into_reused_buffers_and_refuses_damage() {
        let key = MasterKey::random();
        let text = b"restic ".repeat(1000);
        let packed = zstd::bulk::compress(&text, 3).expect("compress");
        let mut sealed_plain = Vec::new();
        key.seal_into(b"short", &mut sealed_plain);
        let mut sealed_packed = Vec::new();
        key.seal_into(&packed, &mut sealed_packed);
        let mut opener = Opener::default();
        for _ in 0..2 {
            assert_eq!(
                opener.open(&key, &sealed_packed, 7000).expect("opens"),
                &text[..]
            );
            assert_eq!(
                opener.open(&key, &sealed_plain, 0).expect("opens"),
                b"short"
            );
        }
        assert!(matches!(
            opener.open(&key, &sealed_packed, 6999),
            Err(OpenError::Decompress(_))
        ));
        let mut damaged = sealed_packed.clone();
        damaged[20] ^= 1;
        assert!(matches!(
            opener.open(&key, &damaged, 7000),
            Err(OpenError::Decrypt)
        ));
        assert!(matches!(
            opener.open(&key, &sealed_plain[..31], 0),
            Err(OpenError::Decrypt)
        ));
    }

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
    fn key_file_holds_the_master_key_under_the_password_with_restic_sized_scrypt() {
        let master = rustic_core::repofile::MasterKey::new();
        let (name, bytes) = key_file(&master, "pw");
        assert_eq!(name, hex::encode(crate::id::hash(&bytes)));
        let file: rustic_core::repofile::KeyFile =
            serde_json::from_slice(&bytes).expect("key file JSON");
        assert_eq!(
            (file.kdf.as_str(), file.n, file.r, file.p),
            ("scrypt", 32768, 8, 4)
        );
        assert_eq!(file.salt.len(), 64);
        let params = scrypt::Params::new(KDF_LOG_N, KDF_R, KDF_P).expect("params");
        let mut derived = aes256ctr_poly1305aes::Key::default();
        scrypt::scrypt(b"pw", &file.salt, &params, &mut derived).expect("scrypt");
        let plain = MasterKey(derived)
            .decrypt(&file.data)
            .expect("decrypts with the password");
        let back: rustic_core::repofile::MasterKey =
            serde_json::from_slice(&plain).expect("master key JSON");
        assert_eq!(back.encrypt, master.encrypt);
        assert_eq!((back.mac.k, back.mac.r), (master.mac.k, master.mac.r));
        let mut wrong = aes256ctr_poly1305aes::Key::default();
        scrypt::scrypt(b"not pw", &file.salt, &params, &mut wrong).expect("scrypt");
        assert!(MasterKey(wrong).decrypt(&file.data).is_err());
    }

    #[test]
    fn a_key_file_opens_with_its_password_only_and_damage_is_named() {
        let master = rustic_core::repofile::MasterKey::new();
        let (_, bytes) = key_file(&master, "pw");
        let opened = open_key_file(&bytes, "pw")
            .expect("a key file")
            .expect("the password opens it");
        assert_eq!(opened.encrypt, master.encrypt);
        assert_eq!((opened.mac.k, opened.mac.r), (master.mac.k, master.mac.r));
        assert!(
            open_key_file(&bytes, "not pw")
                .expect("a key file")
                .is_none()
        );
        assert!(open_key_file(b"{}", "pw").is_err());
        let mut file: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        file["N"] = 1000.into();
        let odd = serde_json::to_vec(&file).expect("JSON");
        assert!(open_key_file(&odd, "pw").is_err());
        file["N"] = 32768.into();
        file["kdf"] = "argon2".into();
        let unknown = serde_json::to_vec(&file).expect("JSON");
        assert!(open_key_file(&unknown, "pw").is_err());
        // A hostile key file asking for 32 GiB (N = 2^25, r = 8) or a thousand lanes is
        // refused before anything is derived.
        file["kdf"] = "scrypt".into();
        file["N"] = (1u32 << 25).into();
        let huge = serde_json::to_vec(&file).expect("JSON");
        assert!(open_key_file(&huge, "pw").is_err());
        file["N"] = 32768.into();
        file["p"] = 1000.into();
        let slow = serde_json::to_vec(&file).expect("JSON");
        assert!(open_key_file(&slow, "pw").is_err());
        file["p"] = 4.into();
        let fine = serde_json::to_vec(&file).expect("JSON");
        assert!(open_key_file(&fine, "pw").expect("a key file").is_some());
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
