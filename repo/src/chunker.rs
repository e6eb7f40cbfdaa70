//! restic's content-defined chunker: a Rabin fingerprint over a 64-byte window, modulo the
//! repository's random irreducible polynomial (its `config`), cuts a file where the low 20 bits
//! of the fingerprint are zero, at least 512 KiB and at most 8 MiB after the previous cut.
//! Chunk boundaries must match restic's exactly, or data restic stored would not deduplicate
//! against ours (and ours against the next restic run's): `restic_compat` proves it with the
//! real binary.
//!
//! Speed: the fingerprint is computed only from 64 bytes before the minimum size on (the
//! first 448 KiB of every chunk are skipped, as restic does), and the byte leaving the window
//! is read from the buffer itself, so the inner loop is two table lookups, a shift and three
//! XORs per byte.

use std::io::{self, Read};

const WINDOW: usize = 64;

/// Chunk size limits and the split mask of a repository.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub min: usize,
    pub max: usize,
    /// A power of two: the average distance between cuts past `min`.
    pub average: usize,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            min: 512 << 10,
            max: 8 << 20,
            average: 1 << 20,
        }
    }
}

/// The tables of one polynomial.
#[derive(Clone)]
pub(crate) struct Rabin {
    out: [u64; 256],
    reduce: [u64; 256],
    shift: u32,
    mask: u64,
    sizes: Sizes,
}

impl std::fmt::Debug for Rabin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rabin").field("sizes", &self.sizes).finish()
    }
}

fn degree(p: u64) -> u32 {
    63 - p.leading_zeros()
}

/// `x mod p` over GF(2).
fn modulo(mut x: u64, p: u64) -> u64 {
    let dp = degree(p);
    while x != 0 && degree(x) >= dp {
        x ^= p << (degree(x) - dp);
    }
    x
}

impl Rabin {
    /// The largest chunk it cuts.
    pub(crate) fn max_size(&self) -> usize {
        self.sizes.max
    }

    /// Tables for polynomial `pol` (degree 53 in restic's configs).
    pub(crate) fn new(pol: u64, sizes: Sizes) -> Self {
        let k = degree(pol);
        let shift = k - 8;
        // Appends byte `b` to fingerprint `h`, keeping it reduced.
        let append = |h: u64, b: u8| modulo((h << 8) | u64::from(b), pol);
        let mut out = [0u64; 256];
        let mut reduce = [0u64; 256];
        for b in 0..256usize {
            // The contribution of byte b once WINDOW - 1 more bytes followed it.
            let mut h = append(0, b as u8);
            for _ in 0..WINDOW - 1 {
                h = append(h, 0);
            }
            out[b] = h;
            // XOR clears the 8 bits above the degree and adds their remainder.
            let high = (b as u64) << k;
            reduce[b] = modulo(high, pol) | high;
        }
        Self {
            out,
            reduce,
            shift,
            mask: sizes.average as u64 - 1,
            sizes,
        }
    }

    /// Length of the first chunk of `data`, or `None` when no cut lies in `data` and more may
    /// follow (`data` shorter than the maximum). `data` starts at a chunk boundary.
    #[cfg(test)]
    pub(crate) fn cut(&self, data: &[u8]) -> Option<usize> {
        self.scan(data, &mut Scan::default())
    }

    /// The fingerprint after `b` slides in and `out` (the byte 64 places back) leaves.
    #[inline(always)]
    fn roll(&self, h: u64, out: u8, b: u8) -> u64 {
        let h = h ^ self.out[out as usize];
        ((h << 8) | u64::from(b)) ^ self.reduce[((h >> self.shift) & 0xff) as usize]
    }

    /// The fingerprint of a whole window.
    fn window(&self, w: &[u8]) -> u64 {
        w.iter().fold(0, |h, &b| {
            ((h << 8) | u64::from(b)) ^ self.reduce[((h >> self.shift) & 0xff) as usize]
        })
    }

    /// [`Rabin::cut`] resumed where `scan` left off: `data` only grew since.
    ///
    /// Each step of the fingerprint waits on the table lookup of the one before, so one pass
    /// leaves the core mostly idle. A long stretch is therefore cut into [`LANES`] segments
    /// whose fingerprints roll in lockstep (each lane starts from its own first window); the
    /// first cut in byte order wins, exactly where a single pass would have found it.
    fn scan(&self, data: &[u8], scan: &mut Scan) -> Option<usize> {
        let Sizes { min, max, .. } = self.sizes;
        if scan.pos == 0 {
            if data.len() < min {
                return None;
            }
            scan.h = self.window(&data[min - WINDOW..min]);
            scan.pos = min;
            if scan.h & self.mask == 0 {
                return Some(min);
            }
        }
        let mut h = scan.h;
        let mut pos = scan.pos;
        let end = data.len().min(max);
        if end > pos && end - pos >= LANES * 4096 {
            let seg = (end - pos) / LANES;
            let starts: [usize; LANES] = std::array::from_fn(|j| pos + j * seg);
            let mut hs: [u64; LANES] = std::array::from_fn(|j| {
                if j == 0 {
                    h
                } else {
                    self.window(&data[starts[j] - WINDOW..starts[j]])
                }
            });
            let lanes: [&[u8]; LANES] =
                std::array::from_fn(|j| &data[starts[j] - WINDOW..starts[j] + seg]);
            let mut found = [usize::MAX; LANES];
            for t in 0..seg {
                let mut hit = 0u32;
                for j in 0..LANES {
                    hs[j] = self.roll(hs[j], lanes[j][t], lanes[j][t + WINDOW]);
                    hit |= u32::from(hs[j] & self.mask == 0) << j;
                }
                if hit != 0 {
                    for (j, f) in found.iter_mut().enumerate() {
                        if hit & (1 << j) != 0 && *f == usize::MAX {
                            *f = starts[j] + t + 1;
                        }
                    }
                    if found[0] != usize::MAX {
                        return Some(found[0]);
                    }
                }
            }
            if let Some(&f) = found.iter().find(|&&f| f != usize::MAX) {
                return Some(f);
            }
            h = hs[LANES - 1];
            pos += LANES * seg;
        }
        for i in pos..end {
            h = self.roll(h, data[i - WINDOW], data[i]);
            if h & self.mask == 0 {
                return Some(i + 1);
            }
        }
        scan.h = h;
        scan.pos = pos.max(end);
        (data.len() >= max).then_some(max)
    }
}

/// Fingerprints rolled side by side in [`Rabin::scan`].
const LANES: usize = 4;

/// How far a chunk was scanned for a cut, and the fingerprint there.
#[derive(Debug, Default, Clone, Copy)]
struct Scan {
    /// The next byte to slide in; 0 before the first window.
    pos: usize,
    h: u64,
}

/// Reads `r` and hands out its chunks. The buffer is the caller's, kept from file to file
/// (one maximum-size chunk plus one read: allocated and zeroed once per worker, not per file).
pub(crate) struct Chunks<'a, R> {
    rabin: &'a Rabin,
    r: R,
    buf: &'a mut Vec<u8>,
    /// The unread part of `buf` is `start..end`.
    start: usize,
    end: usize,
    /// Length of the chunk handed out last, dropped on the next call.
    last: usize,
    scan: Scan,
    eof: bool,
}

/// Bytes read from the file at a time once past the minimum.
const READ: usize = 1 << 20;

impl<'a, R: Read> Chunks<'a, R> {
    pub(crate) fn new(rabin: &'a Rabin, r: R, buf: &'a mut Vec<u8>) -> Self {
        let need = rabin.sizes.max + READ;
        if buf.len() < need {
            buf.resize(need, 0);
        }
        Self {
            rabin,
            r,
            buf,
            start: 0,
            end: 0,
            last: 0,
            scan: Scan::default(),
            eof: false,
        }
    }

    /// The next chunk, or `None` at the end of the file.
    pub(crate) fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        if self.last > 0 {
            self.start += self.last;
            self.last = 0;
            self.scan = Scan::default();
        }
        loop {
            let data = &self.buf[self.start..self.end];
            if let Some(n) = self.rabin.scan(data, &mut self.scan) {
                self.last = n;
                return Ok(Some(&self.buf[self.start..self.start + n]));
            }
            if self.eof {
                if data.is_empty() {
                    return Ok(None);
                }
                self.last = data.len();
                return Ok(Some(&self.buf[self.start..self.end]));
            }
            let have = self.end - self.start;
            // The first read of a chunk goes to the minimum at once, later ones a block.
            let want = if have < self.rabin.sizes.min {
                self.rabin.sizes.min - have
            } else {
                READ.min(self.rabin.sizes.max - have)
            };
            if self.end + want > self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.start = 0;
                self.end = have;
            }
            let target = self.end + want;
            while self.end < target {
                match self.r.read(&mut self.buf[self.end..target]) {
                    Ok(0) => {
                        self.eof = true;
                        break;
                    }
                    Ok(n) => self.end += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// restic's tests' polynomial.
    const POL: u64 = 0x3DA3358B4DC173;

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// The fingerprint of a window computed directly, byte by byte modulo the polynomial.
    fn fingerprint(window: &[u8]) -> u64 {
        window
            .iter()
            .fold(0, |h, &b| modulo((h << 8) | u64::from(b), POL))
    }

    #[test]
    fn the_rolling_fingerprint_is_the_window_fingerprint() {
        let rabin = Rabin::new(POL, Sizes::default());
        let d = data(4 << 20, 7);
        let cut = rabin.cut(&d).expect("a cut within 4 MiB of random data");
        assert!((512 << 10..=4 << 20).contains(&cut));
        // Where we cut, the window's fingerprint has its 20 low bits zero; nowhere before.
        assert_eq!(fingerprint(&d[cut - WINDOW..cut]) & 0xF_FFFF, 0);
        for end in (512 << 10)..cut {
            if end % 997 == 0 || end + 3 > cut {
                assert_ne!(fingerprint(&d[end - WINDOW..end]) & 0xF_FFFF, 0, "{end}");
            }
        }
    }

    /// The chunk lengths of `d` by one plain pass, byte by byte.
    fn one_pass(rabin: &Rabin, d: &[u8]) -> Vec<usize> {
        let Sizes { min, max, .. } = rabin.sizes;
        let mut out = Vec::new();
        let mut start = 0;
        while start < d.len() {
            let rest = &d[start..];
            let mut cut = rest.len().min(max);
            if rest.len() > min {
                let mut h = rabin.window(&rest[min - WINDOW..min]);
                if h & rabin.mask == 0 {
                    cut = min;
                } else {
                    for i in min..rest.len().min(max) {
                        h = rabin.roll(h, rest[i - WINDOW], rest[i]);
                        if h & rabin.mask == 0 {
                            cut = i + 1;
                            break;
                        }
                    }
                }
            }
            out.push(cut);
            start += cut;
        }
        out
    }

    #[test]
    fn lanes_cut_exactly_where_one_pass_does() {
        // Small sizes: thousands of cuts, falling in every lane.
        let sizes = Sizes {
            min: 4096,
            max: 96 << 10,
            average: 16 << 10,
        };
        let rabin = Rabin::new(POL, sizes);
        let mut buf = Vec::new();
        for seed in 1..6 {
            let d = data(6 << 20, seed);
            let mut chunks = Chunks::new(&rabin, &d[..], &mut buf);
            let mut lengths = Vec::new();
            while let Some(c) = chunks.next_chunk().expect("read") {
                lengths.push(c.len());
            }
            assert_eq!(lengths, one_pass(&rabin, &d), "seed {seed}");
            // Cuts past min + 16 KiB were found by the lanes.
            assert!(lengths.iter().filter(|&&l| l > 4096 + LANES * 4096).count() > 10);
        }
    }

    #[test]
    fn chunks_cover_the_file_within_the_limits_and_resynchronise_after_an_insert() {
        let rabin = Rabin::new(POL, Sizes::default());
        let d = data(24 << 20, 3);
        let mut buf = Vec::new();
        let mut split = |bytes: &[u8]| {
            let mut chunks = Chunks::new(&rabin, bytes, &mut buf);
            let mut out = Vec::new();
            while let Some(c) = chunks.next_chunk().expect("read") {
                out.push(c.to_vec());
            }
            out
        };
        let a = split(&d);
        assert_eq!(a.concat(), d);
        assert!(
            a[..a.len() - 1]
                .iter()
                .all(|c| c.len() >= 512 << 10 && c.len() <= 8 << 20)
        );
        // 100 bytes inserted early: the chunks after the first cut past it are the same.
        let mut changed = d[..1000].to_vec();
        changed.extend_from_slice(&[9u8; 100]);
        changed.extend_from_slice(&d[1000..]);
        let b = split(&changed);
        let same = a.iter().filter(|c| b.contains(c)).count();
        assert!(same + 2 >= a.len(), "{same} of {} chunks kept", a.len());
        // Zeros cut at the minimum: the fingerprint of a window of zeros is zero.
        let zeros = split(&vec![0u8; 3 << 20]);
        assert_eq!(zeros[0].len(), 512 << 10);
        assert!(split(&[]).is_empty());
        assert_eq!(split(b"small"), vec![b"small".to_vec()]);
    }
}
