//! Faults a user meets: a live restic lock, a damaged pack, a wrong password, a missing
//! repository or bucket. Each must fail with exit code 1 and one sentence naming the cause,
//! and change nothing. And faults of the store and the network that must cost nothing but
//! time: a store restarting, a link that throttles, resets and stalls requests.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{SeedableRng, rngs::StdRng};

use lifeboat_tests::bin::PASSWORD;
use lifeboat_tests::link::{Faults, Link, LinkOptions};
use lifeboat_tests::tree::{assert_same_tree, random, small_files, text};
use lifeboat_tests::{Lifeboat, Restic, S3};

fn lock_files(repo: &Path) -> Vec<String> {
    std::fs::read_dir(repo.join("locks"))
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn live_restic_exclusive_lock_blocks_backup_and_a_dead_holders_lock_is_stale() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    small_files(&src, 20, 1);
    Restic::new(repo.display().to_string()).run(["init"]).ok();

    // `restic key passwd` takes an exclusive lock, then waits for the new password on stdin:
    // a live restic holding an exclusive lock for as long as we keep stdin open.
    let mut holder = Command::new("restic")
        .args([
            "--no-cache",
            "-r",
            repo.to_str().expect("utf-8"),
            "key",
            "passwd",
        ])
        .env("RESTIC_PASSWORD", PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start restic");
    let deadline = Instant::now() + Duration::from_secs(30);
    while lock_files(&repo).is_empty() {
        assert!(Instant::now() < deadline, "restic never took its lock");
        std::thread::sleep(Duration::from_millis(50));
    }

    let lifeboat = Lifeboat::new(repo.display().to_string());
    let run = lifeboat
        .repo(["backup", src.to_str().expect("utf-8")])
        .fails_with(11);
    assert!(
        run.stderr.contains("is locked by an exclusive lock of")
            && run.stderr.contains(&format!("(pid {})", holder.id())),
        "the error names the holder: {}",
        run.stderr
    );
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "one sentence: {}",
        run.stderr
    );
    let snaps = lifeboat.repo(["snapshots", "-o", "json"]).ok().json();
    assert_eq!(
        snaps.as_array().map(Vec::len),
        Some(0),
        "nothing was written"
    );

    // Waiting has a bound too.
    let started = Instant::now();
    lifeboat
        .repo(["backup", src.to_str().expect("utf-8"), "--lock-wait", "2s"])
        .fails_with(11);
    assert!(started.elapsed() >= Duration::from_secs(2));

    // Kill the holder: its lock stays behind, but its process is gone on this host, which
    // makes it stale by restic's rule; the next backup removes it and runs.
    holder.kill().expect("kill restic");
    holder.wait().expect("reap restic");
    assert_eq!(
        lock_files(&repo).len(),
        1,
        "the dead holder's lock is still there"
    );
    lifeboat.backup(&src, &[]);
    assert!(
        lock_files(&repo).is_empty(),
        "stale lock removed and our own lock released"
    );
    Restic::new(repo.display().to_string())
        .run(["check", "--read-data"])
        .ok();
}

#[test]
fn a_damaged_pack_is_named_by_check_read_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    small_files(&src, 50, 2);
    let lifeboat = Lifeboat::new(repo.display().to_string());
    lifeboat.repo(["init"]).ok();
    lifeboat.backup(&src, &[]);
    lifeboat.repo(["check", "--read-data"]).ok();

    // Flip one byte in the middle of the largest pack.
    let mut packs: Vec<_> = walk(&repo.join("data"));
    packs.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let pack = packs.last().expect("a pack").clone();
    let name = pack
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pack)
        .expect("open pack");
    let mid = f.metadata().expect("stat").len() / 2;
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(mid)).expect("seek");
    f.read_exact(&mut byte).expect("read");
    f.seek(SeekFrom::Start(mid)).expect("seek");
    f.write_all(&[byte[0] ^ 0xff]).expect("write");
    drop(f);

    let run = lifeboat.repo(["check", "--read-data"]).fails();
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!("pack {name} is damaged")),
        "the damaged pack is named: {}",
        run.stderr
    );
    // Without --read-data the structure is intact.
    lifeboat.repo(["check"]).ok();
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn wrong_password_missing_repository_and_missing_bucket_exit_with_restic_s_codes_and_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    Lifeboat::new(repo.display().to_string())
        .repo(["init"])
        .ok();

    let out = Command::new(lifeboat_tests::bin::lifeboat_exe())
        .args(["repo", "snapshots", "--repo", repo.to_str().expect("utf-8")])
        .env("LIFEBOAT_PASSWORD", "not the password")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(12), "restic's wrong-password code");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("wrong password for the repository at"),
        "{stderr}"
    );

    let run = Lifeboat::new(dir.path().join("nothing-here").display().to_string())
        .repo(["snapshots"])
        .fails_with(10);
    assert!(
        run.stderr.contains("there is no repository at"),
        "{}",
        run.stderr
    );
    assert!(
        !dir.path().join("nothing-here").exists(),
        "a failed open creates nothing"
    );

    let missing = S3::missing_bucket();
    let run = Lifeboat::new(missing.restic_url("x"))
        .with_env(&missing.env())
        .repo(["snapshots"])
        .fails();
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);
    let run = Lifeboat::new(missing.restic_url("x"))
        .with_env(&missing.env())
        .repo(["init"])
        .fails();
    assert!(run.stderr.contains("bucket"), "{}", run.stderr);

    let out = Command::new(lifeboat_tests::bin::lifeboat_exe())
        .args(["repo", "snapshots", "--repo", &missing.restic_url("x")])
        .env("LIFEBOAT_PASSWORD", PASSWORD)
        .env_remove("AWS_ACCESS_KEY_ID")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no credentials for the S3 endpoint"),
        "{stderr}"
    );

    let run = Lifeboat::new("sftp:user@host:/srv")
        .repo(["snapshots"])
        .fails();
    assert!(
        run.stderr.contains("sftp backend is not supported"),
        "{}",
        run.stderr
    );

    let run = Lifeboat::new(repo.display().to_string())
        .repo(["init"])
        .fails();
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
}

#[test]
fn forget_by_policy_and_restore_errors_name_the_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    small_files(&src, 10, 3);
    let lifeboat = Lifeboat::new(repo.display().to_string());
    lifeboat.repo(["init"]).ok();
    for i in 0..3 {
        std::fs::write(src.join("counter"), format!("{i}")).expect("write");
        lifeboat.backup(&src, &["--tag", "app=web"]);
    }
    lifeboat.repo(["forget"]).fails();
    let out = lifeboat
        .repo(["forget", "--keep-last", "1", "--prune", "-o", "json"])
        .ok()
        .json();
    assert_eq!(out["forget"]["removed"].as_array().map(Vec::len), Some(2));
    assert_eq!(out["forget"]["kept"].as_array().map(Vec::len), Some(1));
    assert!(
        out["prune"]["packs_kept"].as_u64().is_some(),
        "--prune ran: {out}"
    );
    lifeboat.repo(["check", "--read-data"]).ok();
    let listed = lifeboat
        .repo(["snapshots", "--tag", "app=web", "-o", "json"])
        .ok()
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));

    let target = dir.path().join("out");
    let run = lifeboat
        .repo([
            "restore",
            "ffffffff",
            "--target",
            target.to_str().expect("utf-8"),
        ])
        .fails();
    assert!(
        run.stderr.contains("no snapshot matches `ffffffff`"),
        "{}",
        run.stderr
    );
    let run = lifeboat
        .repo([
            "restore",
            "latest:/no/such/dir",
            "--target",
            target.to_str().expect("utf-8"),
        ])
        .fails();
    assert!(
        run.stderr.contains("does not exist in snapshot"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_store_that_refuses_connections_for_seconds_is_waited_for_not_failed() {
    let s3 = S3::bucket("store-restarts");
    let gate = lifeboat_tests::gate::Gate::new(s3.endpoint.trim_start_matches("http://"))
        .expect("a gate in front of the S3 server");
    let through = S3 {
        endpoint: gate.endpoint(),
        bucket: s3.bucket.clone(),
    };
    let lifeboat = Lifeboat::new(through.restic_url("repo")).with_env(&through.env());
    lifeboat.repo(["init"]).ok();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    small_files(&src, 200, 7);

    // The store goes away (a restart) for 6 s just as the backup starts: its requests are
    // retried with backoff until the store is back, and the backup ends as if nothing happened.
    gate.shut_for(Duration::from_secs(6));
    let started = Instant::now();
    lifeboat.repo(["backup", src.to_str().expect("utf-8")]).ok();
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "the backup did not meet the outage ({:?})",
        started.elapsed()
    );
    Restic::new(s3.restic_url("repo"))
        .with_env(&s3.env())
        .run(["check", "--read-data"])
        .ok();

    // A window the user shortened is kept: the failure names the store.
    gate.shut_for(Duration::from_secs(30));
    let run = lifeboat
        .clone()
        .with_env(&[("LIFEBOAT_STORE_RETRY_WINDOW", "2s".into())])
        .repo(["snapshots"])
        .fails();
    assert!(
        run.stderr.contains(&through.endpoint) || run.stderr.contains("127.0.0.1"),
        "{}",
        run.stderr
    );
}

/// A link with a 2 ms round trip and `faults` in front of `s3`, and the bucket reached
/// through it.
fn flaky_link(s3: &S3, faults: Faults) -> (Link, S3) {
    let link = Link::start(
        s3.endpoint.trim_start_matches("http://"),
        LinkOptions {
            rtt: Duration::from_millis(2),
            bandwidth: None,
            faults,
        },
    )
    .expect("a link in front of the S3 server");
    let through = S3 {
        endpoint: link.endpoint(),
        bucket: s3.bucket.clone(),
    };
    (link, through)
}

#[test]
fn a_link_that_throttles_resets_and_stalls_requests_loses_nothing() {
    let s3 = S3::bucket("flaky-link");
    // Coprime periods, so each kind of fault meets every kind of request in turn; a retry
    // is a new request with a new number, so it can pass.
    let faults = Faults {
        slow_down_every: Some(7),
        reset_every: Some(11),
        stall_every: Some(29),
    };
    let (link, through) = flaky_link(&s3, faults);
    // A stalled response is given up after 3 s and its request retried.
    let lifeboat = Lifeboat::new(through.restic_url("repo"))
        .with_env(&through.env())
        .with_env(&[("LIFEBOAT_STORE_TIMEOUT", "3s".into())]);
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    small_files(&src, 300, 13);
    let mut rng = StdRng::seed_from_u64(13);
    std::fs::write(src.join("random.bin"), random(&mut rng, 6 << 20)).expect("write");
    std::fs::write(src.join("text.txt"), text(&mut rng, 4 << 20)).expect("write");

    lifeboat.repo(["init"]).ok();
    let id = lifeboat.backup(&src, &[]);
    let out = dir.path().join("restored");
    let restored = lifeboat
        .repo([
            "restore",
            &format!("{id}:{}", src.display()),
            "--target",
            out.to_str().expect("utf-8"),
        ])
        .ok();
    assert_same_tree(&src, &out);
    // The retries are counted and said, by cause.
    assert!(
        restored.stdout.contains("requests to the store") && restored.stdout.contains("retried ("),
        "{}",
        restored.stdout
    );
    Restic::new(s3.restic_url("repo"))
        .with_env(&s3.env())
        .run(["check", "--read-data"])
        .ok();

    let stats = link.stats();
    assert!(
        stats.slow_downs > 0
            && stats.resets_before_forwarding > 0
            && stats.resets_mid_response > 0
            && stats.stalls > 0,
        "every kind of fault was met: {stats:?}"
    );
}

#[test]
fn restic_backs_up_and_restores_through_a_link_that_throttles_and_resets() {
    let s3 = S3::bucket("restic-link");
    // No stalls: restic 0.14 sets no response timeout, so it would wait for ever.
    let (link, through) = flaky_link(
        &s3,
        Faults {
            slow_down_every: Some(7),
            reset_every: Some(11),
            stall_every: None,
        },
    );
    let restic = Restic::new(through.restic_url("repo")).with_env(&through.env());
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    small_files(&src, 200, 17);
    let mut rng = StdRng::seed_from_u64(17);
    std::fs::write(src.join("random.bin"), random(&mut rng, 3 << 20)).expect("write");

    restic.run(["init"]).ok();
    let id = restic.backup(&src, &[]);
    let out = dir.path().join("restored");
    restic
        .run(["restore", &id, "--target", out.to_str().expect("utf-8")])
        .ok();
    assert_same_tree(&src, &out.join(src.strip_prefix("/").expect("absolute")));
    Restic::new(s3.restic_url("repo"))
        .with_env(&s3.env())
        .run(["check", "--read-data"])
        .ok();
    let stats = link.stats();
    assert!(
        stats.slow_downs > 0 && stats.resets() > 0,
        "faults were met: {stats:?}"
    );
}
