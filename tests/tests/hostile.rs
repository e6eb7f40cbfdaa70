//! The engine as an attacker and an unlucky operator meet it: snapshots crafted to write
//! outside the restore target, damaged packs, paths the target cannot hold, and the exit codes
//! scripts rely on. restic 0.14 runs beside us on the same input where it has a behaviour.
//!
//! `hostile_trees_never_touch_anything_outside_the_target` generates trees from a fixed seed;
//! `LIFEBOAT_HOSTILE_CASES=N` (default 120) and `LIFEBOAT_HOSTILE_SEED=S` run more or others.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use lifeboat_repo::testing::{self, Crafted};
use lifeboat_repo::{
    Context, Error, Location, Repository, RepositoryOptions, RestoreOptions, RestoreStats,
    UnsafeName,
};
use lifeboat_tests::bin::{Lifeboat, PASSWORD, Restic, Run};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A scratch directory with a repository, an `outside` directory holding what an attacker
/// wants to reach, and a `target` path beside it (not made).
struct Scene {
    dir: tempfile::TempDir,
    repo: Repository,
}

impl Scene {
    async fn new() -> Scene {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init(
            &Location::Local(dir.path().join("repo")),
            PASSWORD,
            RepositoryOptions::default(),
        )
        .await
        .expect("init");
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).expect("outside");
        fs::write(outside.join("secret"), b"the node's secret\n").expect("secret");
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o750)).expect("chmod");
        Scene { dir, repo }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn repo_path(&self) -> String {
        self.path("repo").display().to_string()
    }

    async fn restore(
        &self,
        id: &str,
        sub: Option<&str>,
        target: &Path,
    ) -> lifeboat_repo::Result<RestoreStats> {
        self.repo
            .restore(
                id,
                sub,
                target,
                &RestoreOptions::default(),
                &Context::default(),
            )
            .await
    }

    /// `lifeboat repo restore SNAPSHOT --target TARGET` on the scene's repository.
    fn lifeboat_restore(&self, snapshot: &str, target: &Path) -> Run {
        Lifeboat::new(self.repo_path()).repo([
            "restore",
            snapshot,
            "--target",
            &target.display().to_string(),
        ])
    }

    /// `restic restore SNAPSHOT --target TARGET` on the scene's repository.
    fn restic_restore(&self, snapshot: &str, target: &Path) -> Run {
        restic(self).run([
            "restore",
            snapshot,
            "--target",
            &target.display().to_string(),
        ])
    }

    /// The file of the (one) pack holding blobs of `kind` (`data` or `tree`), as restic's
    /// index lists it.
    fn pack_of(&self, kind: &str) -> PathBuf {
        let restic = restic(self);
        let list = restic.run(["list", "index"]).ok();
        for index in list.stdout.lines() {
            let json = restic.run(["cat", "index", index.trim()]).ok().json();
            for pack in json["packs"].as_array().expect("packs") {
                if pack["blobs"][0]["type"] == kind {
                    let id = pack["id"].as_str().expect("an id");
                    return self.path("repo/data").join(&id[..2]).join(id);
                }
            }
        }
        panic!("no {kind} pack")
    }

    /// Everything under the scratch directory but the repository and the target: path →
    /// type, mode, owner, size, mtime, content or link.
    fn outside_state(&self, target: &Path) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.dir.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            let m = fs::symlink_metadata(&dir).expect("lstat");
            // Making or clearing the target changes its parent's times, and only those.
            let mut state = describe(&dir, &m);
            if Some(dir.as_path()) == target.parent() {
                state = format!("mode {:o} uid {} gid {}", m.mode(), m.uid(), m.gid());
            }
            out.insert(dir.clone(), state);
            for e in fs::read_dir(&dir).expect("read_dir") {
                let p = e.expect("entry").path();
                if p == target || p == self.path("repo") {
                    continue;
                }
                let m = fs::symlink_metadata(&p).expect("lstat");
                if m.is_dir() {
                    stack.push(p);
                } else {
                    out.insert(p.clone(), describe(&p, &m));
                }
            }
        }
        out
    }
}

fn describe(p: &Path, m: &fs::Metadata) -> String {
    let what = if m.file_type().is_symlink() {
        format!("-> {}", fs::read_link(p).expect("readlink").display())
    } else if m.is_file() {
        String::from_utf8_lossy(&fs::read(p).expect("read")).into_owned()
    } else {
        String::new()
    };
    format!(
        "mode {:o} uid {} gid {} size {} mtime {}.{} {what}",
        m.mode(),
        m.uid(),
        m.gid(),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    )
}

fn file(name: &str, data: &[u8]) -> Crafted {
    Crafted::File {
        name: name.into(),
        data: data.to_vec(),
        mode: 0o644,
    }
}

fn dir(name: &str, mode: u32, entries: Vec<Crafted>) -> Crafted {
    Crafted::Dir {
        name: name.into(),
        mode,
        entries,
    }
}

fn link(name: &str, to: &Path) -> Crafted {
    Crafted::Symlink {
        name: name.into(),
        target: to.as_os_str().as_bytes().to_vec(),
    }
}

fn restic(scene: &Scene) -> Restic {
    Restic::new(scene.repo_path())
}

/// The reproduction of the issue: a symlink `x` to a directory outside, then a directory `x`
/// holding a file. Written through the first, the file would land outside and the directory's
/// mode (0777) would be set on the outside one.
#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_and_a_directory_of_one_name_are_refused_and_nothing_is_written() {
    let scene = Scene::new().await;
    let outside = scene.path("outside");
    let snapshot = testing::snapshot_of_tree(
        &scene.repo,
        &[
            link("x", &outside),
            dir("x", 0o777, vec![file("pwn", b"planted\n")]),
        ],
    )
    .await
    .expect("crafted snapshot")
    .to_string();
    let target = scene.path("target");
    let before = scene.outside_state(&target);

    let err = scene
        .restore(&snapshot, None, &target)
        .await
        .expect_err("a name twice in one directory refuses the snapshot");
    assert!(
        matches!(err, Error::UnsafeEntry { why: UnsafeName::Twice, ref name, .. } if name == "x"),
        "{err}"
    );
    assert!(err.to_string().contains("`x` under `/` twice"), "{err}");
    assert!(!target.exists(), "nothing was made, not even the target");
    assert_eq!(scene.outside_state(&target), before);

    // The CLI says the same and exits 1.
    let run = scene.lifeboat_restore(&snapshot, &target);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(
        run.stderr.contains("could escape the restore target"),
        "{run:?}"
    );
    assert_eq!(scene.outside_state(&target), before);

    // restic on the same snapshot writes nothing outside either, and fails.
    let restic_target = scene.path("restic-target");
    let run = scene.restic_restore(&snapshot, &restic_target);
    // restic 0.14 makes the directory, then fails the symlink ("file exists"): exit 1.
    assert_eq!(run.status, 1, "restic: {run:?}");
    assert!(!outside.join("pwn").exists(), "restic: {run:?}");
    assert_eq!(
        fs::metadata(&outside).expect("outside").mode() & 0o777,
        0o750,
        "restic: {run:?}"
    );
}

/// A target that already holds a symlink where the snapshot has a directory or a file: the
/// symlink is replaced, never followed.
#[tokio::test(flavor = "multi_thread")]
async fn symlinks_already_in_the_target_are_replaced_not_followed() {
    let scene = Scene::new().await;
    let outside = scene.path("outside");
    let snapshot = testing::snapshot_of_tree(
        &scene.repo,
        &[
            file("f", b"restored f\n"),
            dir("x", 0o777, vec![file("pwn", b"restored pwn\n")]),
        ],
    )
    .await
    .expect("snapshot")
    .to_string();
    let target = scene.path("target");
    fs::create_dir(&target).expect("target");
    symlink(&outside, target.join("x")).expect("symlink");
    symlink(outside.join("secret"), target.join("f")).expect("symlink");
    let before = scene.outside_state(&target);

    let stats = scene
        .restore(&snapshot, None, &target)
        .await
        .expect("restore");
    assert!(stats.is_complete(), "{stats:?}");
    assert_eq!(
        scene.outside_state(&target),
        before,
        "nothing outside changed"
    );
    assert!(fs::symlink_metadata(target.join("x")).expect("x").is_dir());
    assert_eq!(
        fs::read(target.join("x/pwn")).expect("pwn"),
        b"restored pwn\n"
    );
    assert_eq!(fs::read(target.join("f")).expect("f"), b"restored f\n");
    assert_eq!(
        fs::metadata(target.join("x")).expect("x").mode() & 0o777,
        0o777
    );
}

/// Names drawn so that collisions, dot names, separators, NUL and non-UTF-8 bytes all come up.
fn hostile_name(rng: &mut StdRng) -> Vec<u8> {
    const NAMES: [&[u8]; 12] = [
        b"a", b"b", b"x", b"..", b".", b"a/", b"x/y", b"/", b"a\0", b"\xff", b"\xff", b"",
    ];
    if rng.random_ratio(3, 4) {
        NAMES[rng.random_range(0..3)].to_vec()
    } else {
        NAMES[rng.random_range(0..NAMES.len())].to_vec()
    }
}

/// Where generated symlinks point: outside by absolute and relative paths, chains of links,
/// and the target's own entries.
fn hostile_link(rng: &mut StdRng, outside: &Path) -> Vec<u8> {
    let choices: [Vec<u8>; 8] = [
        outside.as_os_str().as_bytes().to_vec(),
        outside.join("secret").as_os_str().as_bytes().to_vec(),
        b"../outside".to_vec(),
        b"../../outside".to_vec(),
        b"../../../outside/secret".to_vec(),
        b"a".to_vec(),
        b"x/../..".to_vec(),
        b"b".to_vec(),
    ];
    choices[rng.random_range(0..choices.len())].clone()
}

fn hostile_tree(rng: &mut StdRng, outside: &Path, depth: u32) -> Vec<Crafted> {
    let n = rng.random_range(0..5);
    (0..n)
        .map(|_| {
            let name = hostile_name(rng);
            match rng.random_range(0..10) {
                0..=3 => Crafted::Symlink {
                    name,
                    target: hostile_link(rng, outside),
                },
                4..=6 if depth > 0 => Crafted::Dir {
                    name,
                    mode: [0o777, 0o700, 0o755][rng.random_range(0..3)],
                    entries: hostile_tree(rng, outside, depth - 1),
                },
                _ => Crafted::File {
                    name,
                    data: format!("planted {}\n", rng.random::<u32>()).into_bytes(),
                    mode: [0o777, 0o4755, 0o644][rng.random_range(0..3)],
                },
            }
        })
        .collect()
}

/// Symlinks a target may already hold before a restore (a volume restored twice, or a pod
/// that wrote them).
fn plant_links(rng: &mut StdRng, target: &Path, outside: &Path) {
    fs::create_dir_all(target).expect("target");
    for name in ["a", "b", "x"] {
        if rng.random_ratio(1, 3) {
            let to = PathBuf::from(OsStr::from_bytes(&hostile_link(rng, outside)));
            symlink(to, target.join(name)).expect("plant a link");
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

/// The property: whatever the tree, and whatever symlinks the target already holds, a restore
/// either refuses the snapshot or restores it, and nothing outside the target is created,
/// changed, chmodded or timed.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_trees_never_touch_anything_outside_the_target() {
    let cases = env_number("LIFEBOAT_HOSTILE_CASES", 120);
    let seed = env_number("LIFEBOAT_HOSTILE_SEED", 16);
    let scene = Scene::new().await;
    let outside = scene.path("outside");
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut refused, mut restored) = (0, 0);
    for case in 0..cases {
        let tree = hostile_tree(&mut rng, &outside, 3);
        let id = testing::snapshot_of_tree(&scene.repo, &tree)
            .await
            .expect("crafted snapshot")
            .to_string();
        let target = scene.path("target");
        if target.exists() {
            fs::remove_dir_all(&target).expect("clear the target");
        }
        if rng.random_ratio(1, 2) {
            plant_links(&mut rng, &target, &outside);
        }
        let before = scene.outside_state(&target);
        match scene.restore(&id, None, &target).await {
            Ok(_) => restored += 1,
            Err(Error::UnsafeEntry { .. }) => refused += 1,
            Err(e) => panic!("case {case} (seed {seed}): {e}\n{tree:?}"),
        }
        assert_eq!(
            scene.outside_state(&target),
            before,
            "case {case} (seed {seed}) changed something outside the target:\n{tree:?}"
        );
        // Each restore lists the snapshots: keep one, so a long run stays linear.
        fs::remove_file(scene.path("repo/snapshots").join(&id)).expect("forget the case");
    }
    println!("{cases} hostile trees (seed {seed}): {refused} refused, {restored} restored");
    assert!(
        refused > 0 && restored > 0,
        "the generator covers both outcomes"
    );
}

/// A flipped byte in one blob of a data pack: every other file is restored, the damaged one is
/// left out and named with its pack and blob, and the restore says it is partial (restic
/// restores the others too and names the file).
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_blob_leaves_out_only_its_file_and_names_it() {
    let scene = Scene::new().await;
    let damaged_data = vec![b'd'; 4000];
    let snapshot = testing::snapshot_of_tree(
        &scene.repo,
        &[
            // The first data blob of the pack: the byte flipped below.
            file("damaged.bin", &damaged_data),
            dir(
                "dir",
                0o755,
                (0..50)
                    .map(|i| file(&format!("ok-{i:02}"), format!("file {i}\n").as_bytes()))
                    .collect(),
            ),
        ],
    )
    .await
    .expect("snapshot")
    .to_string();
    let pack = scene.pack_of("data");
    let mut bytes = fs::read(&pack).expect("pack");
    bytes[100] ^= 0x40;
    fs::set_permissions(&pack, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::write(&pack, &bytes).expect("damage the pack");
    let pack_id = pack
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();

    let target = scene.path("target");
    let stats = scene
        .restore(&snapshot, None, &target)
        .await
        .expect("the restore goes on");
    assert_eq!(stats.unrestored_count, 1, "{stats:?}");
    let left = &stats.unrestored[0];
    assert_eq!(left.path, "damaged.bin");
    assert!(left.reason.contains(&pack_id), "{left:?}");
    assert!(left.reason.contains("blob "), "{left:?}");
    assert!(
        !target.join("damaged.bin").exists(),
        "never left zero-filled"
    );
    for i in 0..50 {
        assert_eq!(
            fs::read(target.join(format!("dir/ok-{i:02}"))).expect("restored"),
            format!("file {i}\n").as_bytes()
        );
    }

    // The CLI: each left-out file named, exit 1, "partially".
    let cli_target = scene.path("cli-target");
    let run = scene.lifeboat_restore(&snapshot, &cli_target);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(run.stderr.contains("damaged.bin"), "{run:?}");
    assert!(run.stderr.contains("restored partially"), "{run:?}");
    assert!(cli_target.join("dir/ok-49").is_file());

    // restic restores the others and names the damaged file.
    let restic_target = scene.path("restic-target");
    let run = scene.restic_restore(&snapshot, &restic_target);
    assert_ne!(run.status, 0, "{run:?}");
    assert!(run.stderr.contains("damaged.bin"), "{run:?}");
    assert!(restic_target.join("dir/ok-49").is_file(), "{run:?}");
}

/// Opens `path` under `root` one name at a time: the kernel refuses paths longer than
/// PATH_MAX whole.
fn read_deep(root: &Path, path: &Path) -> Vec<u8> {
    use nix::fcntl::{OFlag, open, openat};
    use nix::sys::stat::Mode;
    let mut fd = open(root, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).expect("root");
    let names: Vec<_> = path.iter().collect();
    let (last, dirs) = names.split_last().expect("a name");
    for name in dirs {
        fd = openat(
            &fd,
            *name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .expect("dir");
    }
    let f = openat(&fd, *last, OFlag::O_RDONLY, Mode::empty()).expect("file");
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut fs::File::from(f), &mut out).expect("read");
    out
}

/// A path deeper than PATH_MAX is restored name by name; a name longer than the file system
/// allows is left out and named, and the rest is restored.
#[tokio::test(flavor = "multi_thread")]
async fn long_paths_are_restored_and_a_name_the_target_cannot_hold_is_left_out() {
    let scene = Scene::new().await;
    let long = "n".repeat(200);
    let mut deep = vec![file("bottom", b"deep\n")];
    for _ in 0..25 {
        deep = vec![dir(&long, 0o755, deep)];
    }
    let too_long = "t".repeat(300);
    let mut entries = deep;
    entries.push(file(&too_long, b"cannot be named\n"));
    entries.push(file("plain", b"plain\n"));
    let snapshot = testing::snapshot_of_tree(&scene.repo, &entries)
        .await
        .expect("snapshot")
        .to_string();
    let target = scene.path("target");
    let stats = scene
        .restore(&snapshot, None, &target)
        .await
        .expect("restore");
    assert_eq!(stats.unrestored_count, 1, "{stats:?}");
    assert_eq!(stats.unrestored[0].path, too_long);
    assert_eq!(fs::read(target.join("plain")).expect("plain"), b"plain\n");
    let bottom: PathBuf = std::iter::repeat_n(long.as_str(), 25)
        .chain(["bottom"])
        .collect();
    assert!(bottom.as_os_str().len() > libc::PATH_MAX as usize);
    assert_eq!(read_deep(&target, &bottom), b"deep\n");
}

/// A sub-path that is not in the snapshot fails before anything is made.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_of_a_missing_sub_path_makes_no_target() {
    let scene = Scene::new().await;
    let snapshot = testing::snapshot_of_tree(&scene.repo, &[file("a", b"a")])
        .await
        .expect("snapshot")
        .to_string();
    let target = scene.path("target");
    let err = scene
        .restore(&snapshot, Some("no/such/dir"), &target)
        .await
        .expect_err("not in the snapshot");
    assert!(matches!(err, Error::PathNotInSnapshot { .. }), "{err}");
    assert!(!target.exists());
}

/// A damaged tree pack, a damaged index file: the message names the directory or file, says
/// the repository is damaged, and carries nothing of the format engine's internals.
#[tokio::test(flavor = "multi_thread")]
async fn damaged_trees_and_indexes_are_named_in_our_words() {
    let scene = Scene::new().await;
    let snapshot =
        testing::snapshot_of_tree(&scene.repo, &[dir("d", 0o755, vec![file("f", b"data\n")])])
            .await
            .expect("snapshot")
            .to_string();
    let internals = [
        "BlobLocation",
        "aead::Error",
        "Backtrace",
        "rustic",
        "error processing",
    ];
    let tree_pack = scene.pack_of("tree");
    let original = fs::read(&tree_pack).expect("pack");
    let mut bytes = original.clone();
    bytes[20] ^= 1;
    fs::set_permissions(&tree_pack, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::write(&tree_pack, &bytes).expect("damage");
    let err = scene
        .restore(&snapshot, None, &scene.path("t1"))
        .await
        .expect_err("a tree is damaged");
    let text = err.to_string();
    assert!(matches!(err, Error::TreeUnreadable { .. }), "{text}");
    // Trees are packed children first: the byte flipped is in `d`'s.
    assert!(text.contains("the directory `d`"), "{text}");
    assert!(text.contains("the pack is damaged"), "{text}");
    assert!(!scene.path("t1").exists(), "nothing was made");
    for word in internals {
        assert!(!text.contains(word), "{text}");
    }
    fs::write(&tree_pack, &original).expect("mend");

    let index = fs::read_dir(scene.path("repo/index"))
        .expect("index")
        .next()
        .expect("an index file")
        .expect("entry")
        .path();
    fs::set_permissions(&index, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::write(&index, b"not an index").expect("damage");
    let run = scene.lifeboat_restore(&snapshot, &scene.path("t2"));
    assert_eq!(run.status, 1, "{run:?}");
    let name = index
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        run.stderr.contains(&format!("index file {name}")),
        "{run:?}"
    );
    assert!(run.stderr.contains("damaged"), "{run:?}");
    for word in internals {
        assert!(!run.stderr.contains(word), "{run:?}");
    }
    let run = Lifeboat::new(scene.repo_path()).repo(["check"]);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!("index file {name}")),
        "{run:?}"
    );
    for word in internals {
        assert!(!run.stderr.contains(word), "{run:?}");
        assert!(!run.stdout.contains(word), "{run:?}");
    }

    // A damaged snapshot file is named too.
    let snap_file = scene.path("repo/snapshots").join(&snapshot);
    fs::set_permissions(&snap_file, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::write(&snap_file, b"not a snapshot").expect("damage");
    let run = Lifeboat::new(scene.repo_path()).repo(["snapshots"]);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!("snapshot file {snapshot}")),
        "{run:?}"
    );
    for word in internals {
        assert!(!run.stderr.contains(word), "{run:?}");
    }
}

/// A pack that is in no index (an interrupted backup's) is a warning in our words, with our
/// command, never the format engine's advice.
#[tokio::test(flavor = "multi_thread")]
async fn check_speaks_our_words_about_a_stray_pack() {
    let scene = Scene::new().await;
    testing::snapshot_of_tree(&scene.repo, &[file("a", b"a\n")])
        .await
        .expect("snapshot");
    for index in fs::read_dir(scene.path("repo/index")).expect("index") {
        fs::remove_file(index.expect("entry").path()).expect("remove");
    }
    let run = Lifeboat::new(scene.repo_path()).repo(["check"]);
    let text = format!("{}{}", run.stdout, run.stderr);
    assert!(!text.contains("rustic"), "{run:?}");
    assert!(!text.contains("Backtrace"), "{run:?}");
}

/// restic's exit codes: 10 no repository, 12 wrong password, 11 locked, 3 a snapshot saved
/// without files that could not be read.
#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_are_restic_s() {
    let scene = Scene::new().await;
    let nowhere = Lifeboat::new(scene.path("nowhere").display().to_string()).repo(["snapshots"]);
    nowhere.fails_with(10);
    let wrong = Lifeboat::new(scene.repo_path())
        .with_env(&[("LIFEBOAT_PASSWORD", "not the password".into())])
        .repo(["snapshots"]);
    wrong.fails_with(12);
    let held = testing::hold_lock(&scene.repo, true).await.expect("lock");
    let src = scene.path("src");
    fs::create_dir(&src).expect("src");
    fs::write(src.join("a"), b"a").expect("a");
    let locked = Lifeboat::new(scene.repo_path()).repo(["backup", &src.display().to_string()]);
    locked.fails_with(11);
    held.release().await.expect("release");

    // As an unprivileged user, a file only root may read: the snapshot is saved without it.
    fs::write(src.join("root-only"), b"secret").expect("write");
    fs::set_permissions(src.join("root-only"), fs::Permissions::from_mode(0o600)).expect("chmod");
    for p in [scene.dir.path(), &src, &scene.path("repo")] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let status = std::process::Command::new("chmod")
        .args(["-R", "a+rwX", &scene.repo_path()])
        .status()
        .expect("chmod");
    assert!(status.success());
    let run = lifeboat_tests::bin::Run::from_output(
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(lifeboat_tests::bin::lifeboat_exe())
            .args(["repo", "backup", &src.display().to_string()])
            .env("LIFEBOAT_REPOSITORY", scene.repo_path())
            .env("LIFEBOAT_PASSWORD", PASSWORD)
            .env("HOME", scene.dir.path())
            .output()
            .expect("setpriv"),
    );
    assert_eq!(run.status, 3, "{run:?}");
    assert!(run.stderr.contains("root-only"), "{run:?}");
    assert!(run.stdout.contains("saved"), "{run:?}");
}
