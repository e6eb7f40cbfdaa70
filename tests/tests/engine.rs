//! The engine as a library: restore safety, cancellation, logical paths and progress, through
//! lifeboat-repo's API on a real local repository.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lifeboat_repo::{
    BackupOptions, CheckOptions, Context, Error, Location, ParentChoice, Progress, Repository,
    RepositoryOptions, RestoreOptions, Stage, Unit, testing,
};
use lifeboat_tests::tree::{assert_same_tree, small_files};

const PW: &str = "engine-test";

async fn new_repo(dir: &Path) -> Repository {
    Repository::init(
        &Location::Local(dir.join("repo")),
        PW,
        RepositoryOptions::default(),
    )
    .await
    .expect("init")
}

/// Restores the latest snapshot of `src` whole into `target` and checks it came back as it
/// was (the snapshot holds the source under its absolute path).
async fn restore_latest(
    repo: &Repository,
    src: &Path,
    target: &Path,
) -> lifeboat_repo::RestoreStats {
    let stats = repo
        .restore(
            "latest",
            None,
            target,
            &RestoreOptions::default(),
            &Context::default(),
        )
        .await
        .expect("restore");
    assert_same_tree(src, &target.join(src.strip_prefix("/").expect("absolute")));
    stats
}

/// A new repository in a new bucket of the test S3 server.
async fn s3_repo(bucket: &str) -> Repository {
    let s3 = lifeboat_tests::s3::S3::bucket(bucket);
    s3.export_env();
    let location = Location::parse(&s3.restic_url("repo")).expect("parse");
    Repository::init(&location, PW, RepositoryOptions::default())
        .await
        .expect("init")
}

/// Restores `path` of `snapshot` into `target`; any failure fails the test.
async fn restore(
    repo: &Repository,
    snapshot: &str,
    path: Option<&str>,
    target: &Path,
    opts: RestoreOptions,
) {
    repo.restore(snapshot, path, target, &opts, &Context::default())
        .await
        .unwrap_or_else(|e| panic!("restore of {snapshot} into {}: {e}", target.display()));
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_refuses_entries_that_would_escape_the_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = new_repo(dir.path()).await;
    let before = entries(dir.path());
    for bad in [&b".."[..], b"a/b", b"x\0y", b"."] {
        let id = testing::snapshot_with_names(&repo, &[(b"fine.txt", b"ok"), (bad, b"escaped!")])
            .await
            .expect("crafted snapshot");
        let target = dir.path().join("target");
        let err = repo
            .restore(
                &id.to_string(),
                None,
                &target,
                &RestoreOptions::default(),
                &Context::default(),
            )
            .await
            .expect_err("must refuse");
        assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
        assert!(
            err.to_string().contains("escape the restore target"),
            "{err}"
        );
        assert!(
            !target.exists(),
            "nothing was restored for {bad:?}, not even the target"
        );
        assert_eq!(
            entries(dir.path()),
            before,
            "nothing appeared beside the target"
        );
    }
    // The same writer with ordinary names restores fine.
    let id = testing::snapshot_with_names(&repo, &[(b"fine.txt", b"ok")])
        .await
        .expect("snapshot");
    let target = dir.path().join("good");
    restore(
        &repo,
        &id.to_string(),
        None,
        &target,
        RestoreOptions::default(),
    )
    .await;
    assert_eq!(
        std::fs::read(target.join("crafted/fine.txt")).expect("read"),
        b"ok"
    );
}

/// Cancels the operation once `after` bytes were reported.
#[derive(Debug)]
struct CancelAfter {
    after: u64,
    seen: Arc<AtomicU64>,
    token: lifeboat_repo::CancellationToken,
}

struct Counting(Arc<AtomicU64>, u64, lifeboat_repo::CancellationToken);

impl Stage for Counting {
    fn set_total(&self, _: u64) {}
    fn advance(&self, n: u64) {
        if self.0.fetch_add(n, Ordering::SeqCst) + n >= self.1 {
            self.2.cancel();
        }
    }
    fn finish(&self) {}
}

impl Progress for CancelAfter {
    fn stage(&self, _: &str, unit: Unit) -> Box<dyn Stage> {
        let after = if unit == Unit::Bytes {
            self.after
        } else {
            u64::MAX
        };
        Box::new(Counting(self.seen.clone(), after, self.token.clone()))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_backup_leaves_the_repository_consistent_and_unlocked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    small_files(&src, 3000, 5);
    let repo = new_repo(dir.path()).await;

    let token = lifeboat_repo::CancellationToken::new();
    let seen = Arc::new(AtomicU64::new(0));
    let ctx = Context {
        progress: Arc::new(CancelAfter {
            after: 2 << 20,
            seen: seen.clone(),
            token: token.clone(),
        }),
        cancel: token,
    };
    let err = repo
        .backup(&src, &BackupOptions::default(), &ctx)
        .await
        .expect_err("cancelled");
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert!(
        seen.load(Ordering::SeqCst) >= 2 << 20,
        "progress reported bytes before the cancel"
    );
    assert!(
        repo.locks().await.expect("locks").is_empty(),
        "the lock was released"
    );
    assert!(
        repo.snapshots(&Default::default())
            .await
            .expect("list")
            .is_empty()
    );

    // A retry finishes the job, and the repository checks clean.
    repo.backup(&src, &BackupOptions::default(), &Context::default())
        .await
        .expect("retry");
    let report = repo
        .check(&CheckOptions { read_data: true }, &Context::default())
        .await
        .expect("check");
    assert!(report.errors.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn as_path_keeps_the_logical_path_so_a_moved_volume_finds_its_parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first_mount = dir.path().join("pods/uid-1/volumes/data");
    small_files(&first_mount, 200, 6);
    let repo = new_repo(dir.path()).await;
    let opts = BackupOptions {
        as_path: Some("/data".into()),
        tags: vec!["pvc-uid=1234".into()],
        ..Default::default()
    };
    let first = repo
        .backup(&first_mount, &opts, &Context::default())
        .await
        .expect("first");
    assert_eq!(first.snapshot.paths, vec!["/data".to_string()]);
    assert_eq!(first.files_new, 200);

    // The same volume under a new pod's directory: same inodes, different host path.
    let second_mount = dir.path().join("pods/uid-2/volumes/data");
    std::fs::create_dir_all(second_mount.parent().expect("parent")).expect("mkdir");
    std::fs::rename(&first_mount, &second_mount).expect("move");
    let second = repo
        .backup(&second_mount, &opts, &Context::default())
        .await
        .expect("second");
    assert_eq!(second.snapshot.parent, Some(first.snapshot.id));
    assert_eq!(second.files_unchanged, 200, "nothing re-read");
    // No file data: only the tree holding the volume directory's own node is new (the move
    // changed that directory's ctime).
    assert!(second.bytes_added < 1024, "{}", second.bytes_added);

    // An explicit parent is honoured whatever its path, and restore gives the volume back.
    let third = repo
        .backup(
            &second_mount,
            &BackupOptions {
                parent: ParentChoice::Snapshot(first.snapshot.id.short()),
                ..Default::default()
            },
            &Context::default(),
        )
        .await
        .expect("third");
    assert_eq!(third.snapshot.parent, Some(first.snapshot.id));
    let out = dir.path().join("out");
    let second_id = second.snapshot.id.to_string();
    restore(
        &repo,
        &second_id,
        Some("/data"),
        &out,
        RestoreOptions::default(),
    )
    .await;
    assert_same_tree(&second_mount, &out);
    // In batches of three files or blobs (hardlinks across batches, holes, symlinks, a FIFO,
    // owners and modes), the result is the same.
    let compat = dir.path().join("compat");
    lifeboat_tests::tree::compat_tree(&compat, 5);
    let snap = repo
        .backup(&compat, &BackupOptions::default(), &Context::default())
        .await
        .expect("backup of the compat tree");
    let batched = dir.path().join("batched");
    let in_threes = RestoreOptions {
        batch: Some(3),
        ..Default::default()
    };
    let path = compat.display().to_string();
    restore(
        &repo,
        &snap.snapshot.id.to_string(),
        Some(&path),
        &batched,
        in_threes,
    )
    .await;
    assert_same_tree(&compat, &batched);

    let err = repo
        .backup(
            &second_mount,
            &BackupOptions {
                parent: ParentChoice::Snapshot("deadbeef".into()),
                ..Default::default()
            },
            &Context::default(),
        )
        .await
        .expect_err("unknown parent");
    assert!(matches!(err, Error::SnapshotNotFound { .. }), "{err}");
}

/// Directories are listed by several walkers at once (one per core) and finished by whichever
/// thread completes their last child; each tree keeps its nodes in name order all the same,
/// so the same data gives the same trees every time, and a deep, wide tree with empty
/// directories is walked whole, then found unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn walkers_in_parallel_give_the_same_trees_every_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    small_files(&src, 600, 11);
    let mut deep = src.join("deep");
    for i in 0..40 {
        deep = deep.join(format!("l{i:02}"));
        std::fs::create_dir_all(&deep).expect("mkdir");
        std::fs::write(deep.join("f"), i.to_string()).expect("write");
    }
    for i in 0..50 {
        std::fs::create_dir_all(src.join(format!("empty/e{i:02}"))).expect("mkdir");
    }
    let repo = new_repo(dir.path()).await;
    // A logical path: the real path's ancestors (the temporary directory, /tmp) change as
    // other tests run, and their nodes would change the root tree.
    let logical = BackupOptions {
        as_path: Some("/data".into()),
        ..Default::default()
    };
    let fresh = BackupOptions {
        parent: ParentChoice::None,
        ..logical.clone()
    };
    let mut trees = Vec::new();
    for _ in 0..3 {
        let stats = repo
            .backup(&src, &fresh, &Context::default())
            .await
            .expect("backup");
        assert_eq!(stats.files_new, 640);
        // 17 + 221 directories of files, 41 of the chain, 51 of empties; the source and the
        // root.
        assert_eq!(stats.dirs_new, 17 + 221 + 41 + 51 + 2, "{stats:?}");
        trees.push(stats.snapshot.tree);
    }
    assert!(trees.iter().all(|t| *t == trees[0]), "{trees:?}");

    let again = repo
        .backup(&src, &logical, &Context::default())
        .await
        .expect("backup with a parent");
    assert_eq!(
        (again.files_unchanged, again.files_new, again.files_changed),
        (640, 0, 0)
    );
    assert_eq!((again.dirs_changed, again.dirs_new), (0, 0));
    assert_eq!(again.bytes_added, 0);
    assert_eq!(again.snapshot.tree, trees[0]);

    let out = dir.path().join("out");
    let again_id = again.snapshot.id.to_string();
    restore(
        &repo,
        &again_id,
        Some("/data"),
        &out,
        RestoreOptions::default(),
    )
    .await;
    assert_same_tree(&src, &out);
}

/// A file written to while it is read, with a warning naming it; the
/// backup of the others goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_changes_while_it_is_read_is_a_warning_with_its_stored_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    small_files(&src, 20, 9);
    let busy = src.join("busy.log");
    std::fs::write(&busy, vec![b'x'; 16 << 20]).expect("write");
    let repo = new_repo(dir.path()).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, busy) = (stop.clone(), busy.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&busy)
                .expect("open");
            while !stop.load(Ordering::SeqCst) {
                f.write_all(b"a line written during the backup\n")
                    .expect("append");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    let opts = BackupOptions {
        as_path: Some("/data".into()),
        ..Default::default()
    };
    let stats = repo
        .backup(&src, &opts, &Context::default())
        .await
        .expect("backup");
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    assert_eq!(stats.files_new, 21);
    assert_eq!(stats.warnings.len(), 1, "{:?}", stats.warnings);
    assert_eq!(stats.warnings[0].path, "/data/busy.log");
    assert!(
        stats.warnings[0]
            .message
            .contains("changed while it was being read"),
        "{:?}",
        stats.warnings
    );
    let report = repo
        .check(&CheckOptions { read_data: true }, &Context::default())
        .await
        .expect("check");
    assert!(report.errors.is_empty(), "{report:?}");
}

/// Over a remote store every request costs a round trip: a restore reads the snapshot's trees
/// once and together, in spans of their pack (its three walks used to read each one three
/// times, one after the other, then once each), and the files' data in a few large reads,
/// whatever the number of files or directories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_from_an_object_store_reads_each_tree_once() {
    let repo = s3_repo("restore-requests").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    small_files(&src, 1000, 18);
    // The trees of the source and of the directories above it.
    let dirs = (walkdir(&src).filter(|p| p.is_dir()).count() + src.ancestors().count()) as u64;
    assert!(dirs > 200, "{dirs} directories");
    repo.backup(&src, &BackupOptions::default(), &Context::default())
        .await
        .expect("backup");

    let stats = restore_latest(&repo, &src, &dir.path().join("restored")).await;
    // A read or two for the trees, a few for the data (8 MiB of files), and about ten for the
    // snapshot, the index and the lock; reading each tree per walk took over 3 × dirs, and one
    // read per tree dirs + 10.
    eprintln!("{dirs} directories: {}", stats.traffic);
    assert!(
        stats.traffic.requests < 40,
        "{} requests for {dirs} directories",
        stats.traffic.requests
    );
    assert_eq!(stats.traffic.failed(), 0, "{}", stats.traffic);
}

/// Opening reads the key files itself: one that is not a key file is passed over while another
/// opens, and named when none does; a config the key does not open is named too.
#[tokio::test]
async fn opening_passes_over_a_damaged_key_file_and_names_a_damaged_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    new_repo(dir.path()).await;
    let root = dir.path().join("repo");
    let location = Location::Local(root.clone());
    let open = |pw: &'static str| {
        let location = location.clone();
        async move { Repository::open(&location, pw, RepositoryOptions::default()).await }
    };
    let keys = root.join("keys");
    let good = std::fs::read_dir(&keys)
        .expect("keys")
        .next()
        .expect("one key")
        .expect("entry")
        .path();
    let damaged = keys.join("0".repeat(64));
    std::fs::write(&damaged, b"{\"kdf\": \"scrypt\"}").expect("write");

    open(PW)
        .await
        .expect("the good key opens beside a damaged one");
    assert!(matches!(
        open("wrong").await,
        Err(Error::WrongPassword { .. })
    ));

    let kept = std::fs::read(&good).expect("read");
    std::fs::remove_file(&good).expect("remove");
    match open(PW).await {
        Err(e @ Error::KeysDamaged { .. }) => {
            assert!(e.to_string().contains(&"0".repeat(64)), "{e}")
        }
        other => panic!("expected the damaged key file named, got {other:?}"),
    }
    std::fs::write(&good, kept).expect("restore the key");

    let config = root.join("config");
    let mut sealed = std::fs::read(&config).expect("config");
    sealed[20] ^= 1;
    std::fs::write(&config, sealed).expect("damage");
    assert!(
        matches!(open(PW).await, Err(Error::ConfigDamaged { .. })),
        "a damaged config is named"
    );
}

/// Over a slow link a job's fixed cost is the round trips it waits for, one after the other:
/// opening reads the config beside the key files' names, a job reads its listings and the
/// snapshot files while its lock is taken (and never reads its own lock back), a backup reads
/// the repository's config only once, and a restore reads the trees stored together in one
/// request. (Before: 5 round trips to open, 14 for a small backup, 9 plus one per level of
/// directories for a restore; at 80 ms that was most of a small job's time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_a_slow_link_waits_for_few_round_trips() {
    use lifeboat_tests::link::{Link, LinkOptions};
    let s3 = lifeboat_tests::s3::S3::bucket("round-trips");
    s3.export_env();
    let link = Link::start(
        s3.endpoint.trim_start_matches("http://"),
        LinkOptions {
            rtt: std::time::Duration::from_millis(30),
            ..LinkOptions::default()
        },
    )
    .expect("a link");
    let through = lifeboat_tests::s3::S3 {
        endpoint: link.endpoint(),
        bucket: s3.bucket.clone(),
    };
    let location = Location::parse(&through.restic_url("repo")).expect("parse");
    Repository::init(&location, PW, RepositoryOptions::default())
        .await
        .expect("init");
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    small_files(&src, 40, 5);

    // The config beside the key files' names, then the key file.
    link.reset_counters();
    let repo = Repository::open(&location, PW, RepositoryOptions::default())
        .await
        .expect("open");
    eprintln!("open: {:?}", link.stats());
    assert_eq!(link.stats().round_trips, 2, "open: {:?}", link.stats());

    // Lock written beside the listings; the lock's check (our own lock file is not read
    // back); the data pack, and the trees' pack beside it or after it (it is finished when
    // the walk is, which may be after the data pack's answer); the index file; the snapshot;
    // the unlock. (A first backup has no parent or index to read.)
    link.reset_counters();
    repo.backup(&src, &BackupOptions::default(), &Context::default())
        .await
        .expect("backup");
    let backup = link.stats();
    eprintln!("backup: {backup:?}");
    assert!(backup.round_trips <= 7, "backup: {backup:?}");

    // Lock beside the listings; its check beside the snapshot file; the index; the snapshot's
    // trees, all levels of them (the directories above the source, the source, its
    // subdirectories) in one read of their pack; the data; the unlock.
    link.reset_counters();
    restore_latest(&repo, &src, &dir.path().join("restored")).await;
    let levels = src.ancestors().count() + 2;
    let restore = link.stats();
    eprintln!("restore: {restore:?}");
    assert!(
        restore.round_trips <= 6,
        "restore ({levels} levels of trees): {restore:?}"
    );
}

fn walkdir(root: &Path) -> impl Iterator<Item = std::path::PathBuf> {
    let mut stack = vec![root.to_path_buf()];
    std::iter::from_fn(move || {
        let path = stack.pop()?;
        if path.is_dir() {
            for e in std::fs::read_dir(&path).expect("read_dir") {
                stack.push(e.expect("entry").path());
            }
        }
        Some(path)
    })
}

/// A read from an object store is taken as it arrives: a pack shorter than the index says
/// leaves out exactly the files whose blobs are past its end, and everything else is restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_pack_on_an_object_store_leaves_out_only_the_files_past_its_end() {
    use lifeboat_repo::FileKind;
    let repo = s3_repo("short-pack").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    small_files(&src, 600, 21);
    repo.backup(&src, &BackupOptions::default(), &Context::default())
        .await
        .expect("backup");

    // The largest pack holds file data (trees are small): cut it in half.
    let store = repo.store();
    let (pack, size) = store
        .list(FileKind::Pack)
        .await
        .expect("list packs")
        .into_iter()
        .max_by_key(|(_, size)| *size)
        .expect("a pack");
    let whole = store.read(FileKind::Pack, &pack).await.expect("read");
    store
        .write(
            FileKind::Pack,
            &pack,
            vec![whole.slice(..(size / 2) as usize)],
        )
        .await
        .expect("write the short pack");

    let target = dir.path().join("restored");
    let stats = repo
        .restore(
            "latest",
            Some(src.to_str().expect("utf-8")),
            &target,
            &RestoreOptions::default(),
            &Context::default(),
        )
        .await
        .expect("a damaged pack leaves files out, it does not stop the restore");
    assert!(stats.unrestored_count > 0, "nothing was past the end");
    assert!(stats.unrestored_count < 600, "every file was left out");
    for u in &stats.unrestored {
        assert!(
            u.reason.contains("past the end of the pack"),
            "{}: {}",
            u.path,
            u.reason
        );
        assert!(!target.join(&u.path).exists(), "{} was left behind", u.path);
    }
    // What was restored is whole.
    let mut restored = 0;
    for path in walkdir(&src).filter(|p| p.is_file()) {
        let rel = path.strip_prefix(&src).expect("inside");
        let got = target.join(rel);
        if got.exists() {
            assert_eq!(
                std::fs::read(&path).ok(),
                std::fs::read(&got).ok(),
                "{}",
                rel.display()
            );
            restored += 1;
        }
    }
    assert_eq!(restored + stats.unrestored_count, 600);
}
