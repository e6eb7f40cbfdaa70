//! The three seeded datasets the benchmark backs up, and the file-tree helpers around them.
//!
//! - A: large files, half text-like (compressible), half random bytes.
//! - B: many small files of mostly text-like content in a three-level tree.
//! - C: A with about 1% of its bytes overwritten in scattered regions and one file appended to,
//!   the shape of a day's change on a volume of large files.
//!
//! Generation is deterministic: every file gets its own RNG seeded from the base seed and the
//! file's index, so the bytes do not depend on thread scheduling. A marker file holding the
//! parameters is written only after the last byte, so a run interrupted half-way regenerates
//! instead of benchmarking a truncated dataset.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Bumped whenever the generator's output changes, so cached datasets from an older
/// generator are not mistaken for current ones.
const GENERATOR_VERSION: u32 = 1;

/// Everything that decides the datasets' bytes; stored in the cache marker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Params {
    pub(crate) generator_version: u32,
    pub(crate) seed: u64,
    /// A: number of large files; the first half is text-like, the second half random.
    pub(crate) large_files: u64,
    pub(crate) large_file_size: u64,
    /// B: number of small files and their size range (inclusive).
    pub(crate) small_files: u64,
    pub(crate) small_min: u64,
    pub(crate) small_max: u64,
    pub(crate) files_per_dir: u64,
    /// C: share of A's bytes overwritten, in parts per thousand.
    pub(crate) changed_per_mille: u64,
    /// C: size of one overwritten region.
    pub(crate) change_region: u64,
    /// C: bytes appended to A's first file.
    pub(crate) append: u64,
}

impl Params {
    /// The full benchmark: 2 GiB of large files, 200,000 small files.
    pub(crate) fn full() -> Self {
        Self {
            generator_version: GENERATOR_VERSION,
            seed: 0x11fe_b0a7,
            large_files: 8,
            large_file_size: 256 * MIB,
            small_files: 200_000,
            small_min: KIB,
            small_max: 16 * KIB,
            files_per_dir: 100,
            changed_per_mille: 10,
            change_region: 64 * KIB,
            append: 32 * MIB,
        }
    }

    /// Scaled so both tools together finish well inside a minute on two cores.
    pub(crate) fn small() -> Self {
        Self {
            large_file_size: 8 * MIB,
            small_files: 5_000,
            append: MIB,
            ..Self::full()
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "A = {} × {} MiB (half text, half random); B = {} files of {}–{} KiB, {} per dir; \
             C = A with {:.1}% overwritten in {} KiB regions and {} MiB appended to one file",
            self.large_files,
            self.large_file_size / MIB,
            self.small_files,
            self.small_min / KIB,
            self.small_max / KIB,
            self.files_per_dir,
            self.changed_per_mille as f64 / 10.0,
            self.change_region / KIB,
            self.append / MIB,
        )
    }
}

/// The generated datasets on disk.
#[derive(Debug)]
pub(crate) struct Datasets {
    pub(crate) a: PathBuf,
    pub(crate) b: PathBuf,
    pub(crate) c: PathBuf,
}

impl Datasets {
    pub(crate) fn all(&self) -> [&Path; 3] {
        [&self.a, &self.b, &self.c]
    }
}

/// Returns the datasets under `root`, generating them unless a marker with the same
/// parameters says they are already complete (or `regen` asks for a fresh copy).
pub(crate) fn prepare(root: &Path, params: &Params, regen: bool) -> Result<Datasets> {
    let marker = root.join("complete.json");
    let sets = Datasets {
        a: root.join("A"),
        b: root.join("B"),
        c: root.join("C"),
    };
    if !regen && is_complete(&marker, params, &sets) {
        println!("datasets: cached in {}", root.display());
        return Ok(sets);
    }
    if root.exists() {
        fs::remove_dir_all(root)
            .with_context(|| format!("cannot remove the old datasets in {}", root.display()))?;
    }
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let started = Instant::now();
    println!("datasets: generating in {} …", root.display());
    generate_a(&sets.a, params)?;
    generate_b(&sets.b, params)?;
    let changed = generate_c(&sets.a, &sets.c, params)?;
    println!(
        "datasets: generated in {:.1}s (C: {} bytes overwritten)",
        started.elapsed().as_secs_f64(),
        changed
    );
    let json = serde_json::to_vec_pretty(params).context("cannot encode the dataset marker")?;
    fs::write(&marker, json).with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(sets)
}

fn is_complete(marker: &Path, params: &Params, sets: &Datasets) -> bool {
    let Ok(text) = fs::read(marker) else {
        return false;
    };
    let same = serde_json::from_slice::<Params>(&text).is_ok_and(|p| p == *params);
    // A dataset directory can be missing when an earlier run was killed while it was
    // renamed to the backup path and could not be put back.
    same && sets.all().iter().all(|d| d.is_dir())
}

/// A seed for one file of one dataset, so each file's bytes are independent of the others.
fn file_seed(params: &Params, dataset: u64, index: u64) -> u64 {
    params.seed ^ (dataset << 56) ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Writes text-like bytes: words from a small vocabulary, separated by spaces and newlines.
/// zstd compresses this about 3–4×, like logs or source code, unlike the random half.
struct Text {
    vocabulary: Vec<Vec<u8>>,
    rng: StdRng,
}

impl Text {
    fn new(seed: u64) -> Self {
        // The vocabulary is the same for every file (fixed seed) so files look like one corpus.
        let mut vocab_rng = StdRng::seed_from_u64(0x7e47);
        let vocabulary = (0..256)
            .map(|_| {
                let len = vocab_rng.random_range(2..=9);
                (0..len)
                    .map(|_| vocab_rng.random_range(b'a'..=b'z'))
                    .collect()
            })
            .collect();
        Self {
            vocabulary,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Replaces `buf`'s contents with exactly `len` bytes of text.
    fn fill(&mut self, buf: &mut Vec<u8>, len: usize) {
        buf.clear();
        while buf.len() < len {
            // One RNG call gives eight word choices; the low bits of each also decide
            // the separator, so about one word in sixteen ends a line.
            for byte in self.rng.next_u64().to_le_bytes() {
                buf.extend_from_slice(&self.vocabulary[usize::from(byte)]);
                buf.push(if byte & 0x0f == 0 { b'\n' } else { b' ' });
            }
        }
        buf.truncate(len);
    }
}

/// What kind of bytes a file of A holds: the first half of the files are text.
fn is_text(params: &Params, index: u64) -> bool {
    index < params.large_files / 2
}

/// Writes `len` bytes of the given kind to `out`, in 1 MiB pieces.
fn write_content(out: &mut impl Write, text: bool, seed: u64, len: u64) -> Result<()> {
    const PIECE: u64 = MIB;
    let mut buf = Vec::with_capacity(PIECE as usize + 16);
    let mut words = Text::new(seed);
    let mut random = StdRng::seed_from_u64(seed);
    let mut left = len;
    while left > 0 {
        let n = left.min(PIECE) as usize;
        if text {
            words.fill(&mut buf, n);
        } else {
            buf.resize(n, 0);
            random.fill_bytes(&mut buf);
        }
        out.write_all(&buf)?;
        left -= n as u64;
    }
    Ok(())
}

fn large_name(index: u64) -> String {
    format!("large-{index:02}.bin")
}

fn generate_a(dir: &Path, params: &Params) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    parallel_for(params.large_files, |i| {
        let path = dir.join(large_name(i));
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::with_capacity(MIB as usize, file);
        write_content(
            &mut out,
            is_text(params, i),
            file_seed(params, 0, i),
            params.large_file_size,
        )
        .and_then(|()| Ok(out.flush()?))
        .with_context(|| format!("cannot write {}", path.display()))
    })
}

/// B's tree: `DD/D/D/file-NNNNNN.txt`, `files_per_dir` files per leaf directory, leaf
/// directories numbered so that the middle and bottom levels fan out by ten.
fn small_path(dir: &Path, params: &Params, index: u64) -> PathBuf {
    let leaf = index / params.files_per_dir;
    dir.join(format!("{:02}", leaf / 100))
        .join(format!("{}", (leaf / 10) % 10))
        .join(format!("{}", leaf % 10))
        .join(format!("file-{index:06}.txt"))
}

fn generate_b(dir: &Path, params: &Params) -> Result<()> {
    let leaves = params.small_files.div_ceil(params.files_per_dir);
    parallel_for(leaves, |leaf| {
        let first = leaf * params.files_per_dir;
        let last = (first + params.files_per_dir).min(params.small_files);
        let mut buf = Vec::new();
        for i in first..last {
            let path = small_path(dir, params, i);
            if i == first {
                let parent = path
                    .parent()
                    .context("a small file always has a directory")?;
                fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            let seed = file_seed(params, 1, i);
            let mut rng = StdRng::seed_from_u64(seed);
            let len = rng.random_range(params.small_min..=params.small_max) as usize;
            // Mostly text, with one file in eight random: small files in real trees are
            // mostly source, config and logs, with the odd image or archive among them.
            if rng.random_ratio(1, 8) {
                buf.resize(len, 0);
                rng.fill_bytes(&mut buf);
            } else {
                Text::new(seed).fill(&mut buf, len);
            }
            fs::write(&path, &buf).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    })
}

/// Copies A to C, overwrites scattered regions until the share in `params` is changed, and
/// appends to the first file. Returns the number of bytes overwritten.
fn generate_c(a: &Path, c: &Path, params: &Params) -> Result<u64> {
    fs::create_dir_all(c).with_context(|| format!("cannot create {}", c.display()))?;
    parallel_for(params.large_files, |i| {
        let (from, to) = (a.join(large_name(i)), c.join(large_name(i)));
        fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        Ok(())
    })?;

    // Choose non-overlapping regions at arbitrary (unaligned) offsets, so the changes do not
    // line up with any chunker's boundaries by accident.
    let total = params.large_files * params.large_file_size;
    let target = total * params.changed_per_mille / 1000;
    let region = params.change_region.min(params.large_file_size);
    let mut rng = StdRng::seed_from_u64(file_seed(params, 2, 0));
    let mut regions: Vec<Vec<u64>> = vec![Vec::new(); params.large_files as usize];
    let mut changed = 0;
    let mut attempts = 0u64;
    while changed < target {
        attempts += 1;
        if attempts > 1_000_000 {
            bail!("cannot place {target} changed bytes in A's files: the files are too small");
        }
        let file = rng.random_range(0..params.large_files) as usize;
        let offset = rng.random_range(0..=params.large_file_size - region);
        let taken = &mut regions[file];
        if taken
            .iter()
            .any(|&o| o < offset + region && offset < o + region)
        {
            continue;
        }
        taken.push(offset);
        changed += region;
    }

    let mut buf = vec![0u8; region as usize];
    for (i, offsets) in regions.iter().enumerate() {
        if offsets.is_empty() {
            continue;
        }
        let path = c.join(large_name(i as u64));
        let file = File::options()
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        for &offset in offsets {
            rng.fill_bytes(&mut buf);
            file.write_all_at(&buf, offset)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }

    let path = c.join(large_name(0));
    let file = File::options()
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = BufWriter::with_capacity(MIB as usize, file);
    write_content(
        &mut out,
        is_text(params, 0),
        file_seed(params, 2, 1),
        params.append,
    )
    .and_then(|()| Ok(out.flush()?))
    .with_context(|| format!("cannot append to {}", path.display()))?;
    Ok(changed)
}

/// Runs `f(0..n)` on one thread per CPU; returns the first error.
fn parallel_for(n: u64, f: impl Fn(u64) -> Result<()> + Sync) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = AtomicUsize::new(0);
    let first_error = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as u64;
                    if i >= n {
                        return;
                    }
                    if let Err(e) = f(i) {
                        // Stop the other threads early: skip the rest of the range.
                        next.store(usize::MAX / 2, Ordering::Relaxed);
                        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Every regular file under `dir`, sorted, as paths relative to `dir`.
pub(crate) fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = dir.join(&rel);
        let entries =
            fs::read_dir(&full).with_context(|| format!("cannot list {}", full.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", full.display()))?;
            let kind = entry.file_type()?;
            let path = rel.join(entry.file_name());
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The sum of the sizes of all files under `dir`: a repository's size on disk.
pub(crate) fn size(dir: &Path) -> Result<u64> {
    files(dir)?.iter().try_fold(0, |sum, rel| {
        let path = dir.join(rel);
        let meta =
            fs::metadata(&path).with_context(|| format!("cannot stat {}", path.display()))?;
        Ok(sum + meta.len())
    })
}

/// Reads every file under `dir` once, so the timed runs all start from page-cached input
/// (dropping the page cache instead would need root). Returns the bytes read.
pub(crate) fn warm_up(dir: &Path) -> Result<u64> {
    let mut buf = vec![0u8; MIB as usize];
    let mut total = 0;
    for rel in files(dir)? {
        let path = dir.join(&rel);
        let mut file =
            File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    Ok(total)
}

/// The directory inside a restore target that holds the restored dataset.
///
/// restic and rustic restore a snapshot under its full absolute path
/// (`target/work/…/live/…`); following single-directory chains finds the dataset whatever
/// layout a tool chose, since the dataset itself has several entries at its top.
pub(crate) fn restored_root(target: &Path) -> Result<PathBuf> {
    let mut dir = target.to_path_buf();
    loop {
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot list {}", dir.display()))?;
        if entries.len() == 1 && entries[0].file_type()?.is_dir() {
            dir = entries.remove(0).path();
        } else {
            return Ok(dir);
        }
    }
}

/// Checks that `restored` holds exactly the files of `original` with the same bytes.
pub(crate) fn verify_same(original: &Path, restored: &Path) -> Result<()> {
    let want = files(original)?;
    let got = files(restored)?;
    if want != got {
        bail!(
            "the restored tree {} lists {} files where {} has {}",
            restored.display(),
            got.len(),
            original.display(),
            want.len()
        );
    }
    let (mut a, mut b) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    for rel in &want {
        let (pa, pb) = (original.join(rel), restored.join(rel));
        let mut fa = File::open(&pa).with_context(|| format!("cannot open {}", pa.display()))?;
        let mut fb = File::open(&pb).with_context(|| format!("cannot open {}", pb.display()))?;
        loop {
            let n = read_full(&mut fa, &mut a)
                .with_context(|| format!("cannot read {}", pa.display()))?;
            let m = read_full(&mut fb, &mut b)
                .with_context(|| format!("cannot read {}", pb.display()))?;
            if n != m || a[..n] != b[..m] {
                bail!(
                    "restored file {} differs from {}",
                    pb.display(),
                    pa.display()
                );
            }
            if n == 0 {
                break;
            }
        }
    }
    Ok(())
}

/// Fills `buf` unless the file ends first; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fill_is_exact_and_deterministic() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        Text::new(7).fill(&mut a, 1000);
        Text::new(7).fill(&mut b, 1000);
        assert_eq!(a.len(), 1000);
        assert_eq!(a, b);
    }

    #[test]
    fn small_paths_have_three_directory_levels() {
        let p = small_path(Path::new("/b"), &Params::full(), 199_999);
        assert_eq!(p, Path::new("/b/19/9/9/file-199999.txt"));
    }
}
