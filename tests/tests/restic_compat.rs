//! Compatibility with the real restic 0.14 binary, both ways, on a local directory and on S3:
//! what lifeboat writes restic checks and restores identically, what restic writes lifeboat
//! restores identically, lifeboat's incremental backups build on restic's snapshots, and each
//! tool's prune leaves the other's repository checkable.

use std::path::{Path, PathBuf};

use lifeboat_tests::tree::{assert_same_tree, compat_tree, is_sparse};
use lifeboat_tests::{Lifeboat, Restic, S3};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Local,
    S3,
}

struct Case {
    dir: tempfile::TempDir,
    src: PathBuf,
    lifeboat: Lifeboat,
    restic: Restic,
}

impl Case {
    fn new(name: &str, backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        compat_tree(&src, 7);
        let (url, env) = match backend {
            Backend::Local => (dir.path().join("repo").display().to_string(), Vec::new()),
            Backend::S3 => {
                let s3 = S3::bucket(name);
                (s3.restic_url("velero/restic/default"), s3.env())
            }
        };
        Self {
            lifeboat: Lifeboat::new(url.clone()).with_env(&env),
            restic: Restic::new(url).with_env(&env),
            src,
            dir,
        }
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `ID:<src>`: lifeboat restores the source directory's contents straight into the target.
    fn sub(&self, id: &str) -> String {
        format!("{id}:{}", self.src.display())
    }

    /// restic 0.14 has no `ID:subpath`: it restores the whole path under the target.
    fn restic_restore(&self, id: &str, name: &str) -> PathBuf {
        let target = self.out(name);
        self.restic
            .run(["restore", id, "--target", target.to_str().expect("utf-8")])
            .ok();
        target.join(self.src.strip_prefix("/").expect("absolute"))
    }
}

fn lifeboat_writes_what_restic_checks_and_restores(backend: Backend) {
    let c = Case::new("lb-to-restic", backend);
    c.lifeboat.repo(["init"]).ok();
    let id = c.lifeboat.backup(&c.src, &["--tag", "backup=b1"]);

    c.restic.run(["check", "--read-data"]).ok();
    let listed = c.restic.run(["snapshots", "--json"]).ok().json();
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["tags"][0], "backup=b1");

    let by_restic = c.restic_restore(&id, "restic-restored");
    assert_same_tree(&c.src, &by_restic);

    let by_lifeboat = c.out("lifeboat-restored");
    c.lifeboat
        .repo([
            "restore",
            &c.sub(&id),
            "--target",
            by_lifeboat.to_str().expect("utf-8"),
        ])
        .ok();
    assert_same_tree(&c.src, &by_lifeboat);
    assert!(
        is_sparse(&by_lifeboat.join("sparse.img")),
        "lifeboat restores sparse files sparse"
    );
}

fn restic_writes_what_lifeboat_restores(backend: Backend) {
    let c = Case::new("restic-to-lb", backend);
    c.restic.run(["init", "--repository-version", "2"]).ok();
    let id = c.restic.backup(&c.src, &[]);

    c.lifeboat.repo(["check", "--read-data"]).ok();
    let listed = c.lifeboat.repo(["snapshots", "-o", "json"]).ok().json();
    assert_eq!(listed[0]["id"], id.as_str());

    let out = c.out("restored");
    c.lifeboat
        .repo([
            "restore",
            &c.sub(&id[..8]),
            "--target",
            out.to_str().expect("utf-8"),
        ])
        .ok();
    assert_same_tree(&c.src, &out);
    assert!(is_sparse(&out.join("sparse.img")));
}

#[test]
fn lifeboat_writes_what_restic_checks_and_restores_local() {
    lifeboat_writes_what_restic_checks_and_restores(Backend::Local);
}

#[test]
fn lifeboat_writes_what_restic_checks_and_restores_s3() {
    lifeboat_writes_what_restic_checks_and_restores(Backend::S3);
}

#[test]
fn restic_writes_what_lifeboat_restores_local() {
    restic_writes_what_lifeboat_restores(Backend::Local);
}

#[test]
fn restic_writes_what_lifeboat_restores_s3() {
    restic_writes_what_lifeboat_restores(Backend::S3);
}

fn change_tree(src: &Path) {
    std::fs::write(src.join("small.txt"), b"changed by the second backup\n").expect("modify");
    std::fs::write(src.join("new-file.txt"), b"added later\n").expect("add");
    std::fs::remove_file(src.join("random.bin")).expect("remove");
}

#[test]
fn lifeboat_incremental_backup_uses_restic_snapshot_as_parent() {
    let c = Case::new("incremental", Backend::Local);
    c.restic.run(["init", "--repository-version", "2"]).ok();
    let first = c.restic.backup(&c.src, &["--host", "node-1"]);
    change_tree(&c.src);

    let run = c
        .lifeboat
        .repo([
            "backup",
            c.src.to_str().expect("utf-8"),
            "--host",
            "node-1",
            "-o",
            "json",
        ])
        .ok();
    let stats = run.json();
    assert_eq!(
        stats["snapshot"]["parent"],
        first.as_str(),
        "restic's snapshot is the parent"
    );
    // Unchanged regular files are matched against restic's tree and not read; as in restic's
    // summary, only regular files are counted (not the symlinks or the fifo).
    assert_eq!(stats["files_unchanged"], 8, "{stats}");
    assert_eq!(stats["files_new"], 1, "{stats}");
    assert_eq!(stats["files_changed"], 1, "{stats}");
    assert_eq!(
        stats["bytes_added"].as_u64().map(|b| b < 64 << 10),
        Some(true),
        "{stats}"
    );
    let second = stats["snapshot"]["id"].as_str().expect("id").to_string();

    c.restic.run(["check", "--read-data"]).ok();
    let out = c.restic_restore(&second, "restored");
    assert_same_tree(&c.src, &out);
}

#[test]
fn restic_prune_on_lifeboat_repository_leaves_it_checkable() {
    let c = Case::new("restic-prunes", Backend::Local);
    c.lifeboat.repo(["init"]).ok();
    let first = c.lifeboat.backup(&c.src, &[]);
    change_tree(&c.src);
    c.lifeboat.backup(&c.src, &[]);
    c.lifeboat.repo(["forget", &first]).ok();

    c.restic.run(["prune"]).ok();
    c.lifeboat.repo(["check", "--read-data"]).ok();
    c.restic.run(["check", "--read-data"]).ok();
    let out = c.out("restored");
    c.lifeboat
        .repo([
            "restore",
            &c.sub("latest"),
            "--target",
            out.to_str().expect("utf-8"),
        ])
        .ok();
    assert_same_tree(&c.src, &out);
}

#[test]
fn lifeboat_prune_on_restic_repository_leaves_it_checkable() {
    let c = Case::new("lb-prunes", Backend::Local);
    c.restic.run(["init", "--repository-version", "2"]).ok();
    let first = c.restic.backup(&c.src, &[]);
    change_tree(&c.src);
    c.restic.backup(&c.src, &[]);
    c.restic.run(["forget", &first]).ok();

    let pruned = c.lifeboat.repo(["prune", "-o", "json"]).ok().json();
    assert!(
        pruned["packs_removed"].as_u64().expect("count")
            + pruned["packs_repacked"].as_u64().expect("count")
            > 0,
        "the forgotten snapshot's random.bin must be freed: {pruned}"
    );
    c.restic.run(["check", "--read-data"]).ok();
    c.lifeboat.repo(["check", "--read-data"]).ok();
    let out = c.restic_restore("latest", "restored");
    assert_same_tree(&c.src, &out);
}

#[test]
fn restic_honours_lifeboat_locks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo_dir = dir.path().join("repo");
    let restic = Restic::new(repo_dir.display().to_string());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let repo = rt
        .block_on(lifeboat_repo::Repository::init(
            &lifeboat_repo::Location::Local(repo_dir.clone()),
            lifeboat_tests::bin::PASSWORD,
            Default::default(),
        ))
        .expect("init");

    // Our shared lock: restic may read, but not prune.
    let held = rt
        .block_on(lifeboat_repo::testing::hold_lock(&repo, false))
        .expect("lock");
    restic.run(["snapshots"]).ok();
    let run = restic.run(["prune"]);
    assert_ne!(run.status, 0, "restic must not prune under our lock");
    assert!(run.stderr.contains("already locked"), "{}", run.stderr);
    rt.block_on(held.release()).expect("release");
    restic.run(["prune"]).ok();

    // Our exclusive lock: restic may not even back up.
    let held = rt
        .block_on(lifeboat_repo::testing::hold_lock(&repo, true))
        .expect("lock");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    let run = restic.run(["backup", src.to_str().expect("utf-8")]);
    assert_ne!(
        run.status, 0,
        "restic must not back up under our exclusive lock"
    );
    assert!(
        run.stderr.contains("already locked exclusively"),
        "{}",
        run.stderr
    );
    rt.block_on(held.release()).expect("release");
}

#[test]
fn lifeboat_backs_up_into_a_version_1_repository_as_velero_1_5_made_them() {
    let c = Case::new("v1", Backend::Local);
    // Velero 1.5 shipped restic 0.9: repositories of format version 1, without compression.
    c.restic.run(["init", "--repository-version", "1"]).ok();
    c.restic.backup(&c.src, &[]);
    let run = c
        .lifeboat
        .repo(["backup", c.src.to_str().expect("utf-8"), "-o", "json"])
        .ok();
    let id = run.json()["snapshot"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    c.restic.run(["check", "--read-data"]).ok();
    let out = c.restic_restore(&id, "restored");
    assert_same_tree(&c.src, &out);
    let config = c.restic.run(["cat", "config"]).ok().json();
    assert_eq!(config["version"], 1, "the repository stays at version 1");
}

/// Our chunker cuts where restic's does: a file restic stored is not stored again by us.
#[test]
fn lifeboat_cuts_chunks_where_restic_does_so_restic_data_deduplicates() {
    let c = Case::new("same-chunks", Backend::Local);
    let big = c.dir.path().join("big");
    std::fs::create_dir_all(&big).expect("mkdir");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..(24 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    std::fs::write(big.join("noise.bin"), &noise).expect("write");
    // Text-like data compresses, so the blobs differ from their chunks in size.
    let text: Vec<u8> = noise
        .chunks(7)
        .take(2 << 20)
        .flat_map(|w| format!("line {} {}\n", w[0], w[1] % 13).into_bytes())
        .collect();
    std::fs::write(big.join("text.log"), &text).expect("write");
    c.restic.run(["init", "--repository-version", "2"]).ok();
    c.restic.backup(&big, &["--host", "restic-node"]);

    let stats = c
        .lifeboat
        .repo([
            "backup",
            big.to_str().expect("utf-8"),
            "--host",
            "lifeboat-node",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(stats["files_new"], 2, "{stats}");
    let added = stats["bytes_added"].as_u64().expect("bytes_added");
    assert!(
        added < 64 << 10,
        "only our trees are new, restic's chunks are reused: {stats}"
    );
    c.restic.run(["check", "--read-data"]).ok();
}
