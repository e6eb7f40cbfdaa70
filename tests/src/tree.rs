//! Seeded test trees and their comparison.
//!
//! [`compat_tree`] builds the tree every compatibility test backs up: large, compressible,
//! random, empty and sparse files, a hardlink pair, symlinks (one dangling), a fifo, a
//! mode-0600 file, foreign numeric owners, a non-UTF-8 name and a deep path.
//! [`assert_same_tree`] compares two trees by content and metadata.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

/// Compressible text: words from a small vocabulary.
pub fn text(rng: &mut StdRng, len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "lifeboat", "restic", "volume", "backup", "pod", "node", "chunk", "pack", "index", "tree",
        "snapshot", "lock", "prune", "check", "restore", "kube",
    ];
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(WORDS[rng.random_range(0..WORDS.len())].as_bytes());
        out.push(if rng.random_ratio(1, 12) { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// Incompressible bytes.
pub fn random(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    rng.fill_bytes(&mut out);
    out
}

/// A fixed time, so restored times are compared against known values.
fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(123_456_789)
}

fn set_mtime(path: &Path, secs: u64) {
    File::options()
        .write(true)
        .open(path)
        .or_else(|_| File::open(path))
        .and_then(|f| f.set_modified(at(secs)))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// Builds the compatibility tree under `root` (which must not exist). Owners are only set
/// when running as root.
pub fn compat_tree(root: &Path, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    fs::create_dir_all(root).expect("create root");
    let write = |name: &str, data: &[u8]| {
        let p = root.join(name);
        fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    };
    let large = write("large-text.txt", &text(&mut rng, 12 << 20));
    let random_file = write("random.bin", &random(&mut rng, 6 << 20));
    let small = write("small.txt", b"hello from lifeboat\n");
    write("empty", b"");
    // 16 MiB with 1 MiB of data in the middle: sparse on disk.
    let sparse = root.join("sparse.img");
    {
        let mut f = File::create(&sparse).expect("create sparse");
        f.set_len(16 << 20).expect("set_len");
        f.seek(SeekFrom::Start(8 << 20)).expect("seek");
        f.write_all(&random(&mut rng, 1 << 20)).expect("write");
    }
    // Two names, one inode.
    let linked = write("hardlink-a", &text(&mut rng, 100_000));
    fs::hard_link(&linked, root.join("hardlink-b")).expect("hard link");
    symlink("random.bin", root.join("symlink")).expect("symlink");
    symlink("does/not/exist", root.join("dangling")).expect("dangling symlink");
    let status = Command::new("mkfifo")
        .arg(root.join("fifo"))
        .status()
        .expect("mkfifo");
    assert!(status.success(), "mkfifo failed");
    let secret = write("secret", b"top secret\n");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod");
    let odd = root.join(OsStr::from_bytes(b"caf\xe9-latin1.txt"));
    fs::write(&odd, b"not utf-8 name\n").expect("write non-UTF-8 name");
    let mut deep = root.join("deep");
    for i in 0..24 {
        deep.push(format!("level-{i:02}"));
    }
    fs::create_dir_all(&deep).expect("deep dirs");
    fs::write(deep.join("bottom.txt"), b"at the bottom\n").expect("deep file");
    if nix_is_root() {
        std::os::unix::fs::chown(&small, Some(1234), Some(5678)).expect("chown");
    }
    for (i, p) in [
        &large,
        &random_file,
        &small,
        &sparse,
        &linked,
        &secret,
        &odd,
    ]
    .iter()
    .enumerate()
    {
        set_mtime(p, 1_700_000_000 + i as u64 * 1000);
    }
}

fn nix_is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// What we compare of one entry.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Files and dirs: mtime in ns. Symlinks: not compared (restorers differ on lutimes).
    mtime: Option<i128>,
    size: u64,
    /// Files: a hash of the content; symlinks: the target.
    content: Vec<u8>,
    /// Files: the other names of the same inode, relative.
    links: Vec<PathBuf>,
}

fn content_hash(path: &Path) -> Vec<u8> {
    use std::hash::Hasher;
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.write(&buf[..n]);
    }
    h.finish().to_le_bytes().to_vec()
}

fn scan(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        {
            let entry = entry.expect("dir entry");
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else {
                "special"
            };
            let (content, size) = match kind {
                "file" => (content_hash(&path), meta.len()),
                "symlink" => (
                    fs::read_link(&path)
                        .expect("readlink")
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                    0,
                ),
                _ => (Vec::new(), 0),
            };
            if kind == "file" && meta.nlink() > 1 {
                inodes.entry(meta.ino()).or_default().push(rel.clone());
            }
            let mtime = (kind == "file" || kind == "dir")
                .then(|| i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()));
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: meta.mode(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                    mtime,
                    size,
                    content,
                    links: Vec::new(),
                },
            );
            if ft.is_dir() {
                stack.push(path);
            }
        }
    }
    for group in inodes.values() {
        for p in group {
            let others: Vec<PathBuf> = group.iter().filter(|o| *o != p).cloned().collect();
            out.get_mut(p).expect("scanned").links = others;
        }
    }
    out
}

/// Panics with the first difference between the trees at `a` and `b` (contents, type, mode,
/// owner, mtime of files and directories, symlink targets, hardlink groups). The roots' own
/// metadata is not compared.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let left = scan(a);
    let right = scan(b);
    let lk: Vec<_> = left.keys().collect();
    let rk: Vec<_> = right.keys().collect();
    assert_eq!(
        lk,
        rk,
        "the trees hold different names: {} vs {}",
        a.display(),
        b.display()
    );
    for (path, l) in &left {
        let r = &right[path];
        assert_eq!(
            l,
            r,
            "`{}` differs between {} and {}",
            path.display(),
            a.display(),
            b.display()
        );
    }
}

/// Whether the file occupies fewer blocks than its length (holes were kept).
pub fn is_sparse(path: &Path) -> bool {
    let meta = fs::metadata(path).expect("stat");
    meta.blocks() * 512 < meta.len()
}

/// Fills `dir` with `files` small seeded files in a nested tree.
pub fn small_files(dir: &Path, files: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..files {
        let sub = dir.join(format!("d{:02}/e{:02}", i % 17, (i / 17) % 13));
        fs::create_dir_all(&sub).expect("dirs");
        let len = rng.random_range(1024..16 * 1024);
        fs::write(sub.join(format!("f{i:06}")), text(&mut rng, len)).expect("write");
    }
}
