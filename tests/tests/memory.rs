//! The memory budget (`--memory-budget`, the agent's default 256Mi): the real binary's peak
//! resident set, as the kernel accounts it, stays within the budget it was given, while the
//! same backup without one holds more; what it writes under a small budget (smaller packs,
//! one worker) is a repository restic checks and restores; a budget below the smallest that
//! works is refused naming it.

use std::fs;
use std::path::Path;

use lifeboat_tests::tree::{assert_same_tree, random, small_files, text};
use lifeboat_tests::{Lifeboat, Restic};
use rand::{SeedableRng, rngs::StdRng};

const BUDGET_MIB: u64 = 96;

/// 160 MiB of large files (chunks up to restic's 8 MiB, packs filling up) and 2,000 small ones.
fn data(root: &Path) {
    let mut rng = StdRng::seed_from_u64(96);
    fs::create_dir_all(root.join("big")).expect("create big/");
    for i in 0..6 {
        fs::write(
            root.join(format!("big/noise{i}")),
            random(&mut rng, 24 << 20),
        )
        .expect("write noise");
    }
    fs::write(root.join("big/log"), text(&mut rng, 16 << 20)).expect("write the log");
    small_files(&root.join("small"), 2_000, 7);
}

#[test]
fn a_backup_and_a_restore_stay_within_their_memory_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    data(&src);
    let budget = format!("--memory-budget={BUDGET_MIB}Mi");

    let free = Lifeboat::new(dir.path().join("free").display().to_string());
    free.repo(["init"]).ok();
    let (run, free_kib) = free.repo_measured(["backup".as_ref(), src.as_os_str()]);
    run.ok();

    let repo = dir.path().join("budget").display().to_string();
    let lifeboat = Lifeboat::new(repo.clone());
    lifeboat.repo(["init"]).ok();
    let (run, backup_kib) =
        lifeboat.repo_measured(["backup".as_ref(), src.as_os_str(), budget.as_ref()]);
    run.ok();
    let target = dir.path().join("target");
    let (run, restore_kib) = lifeboat.repo_measured([
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
        budget.as_ref(),
    ]);
    run.ok();
    eprintln!(
        "peak RSS: backup without a budget {} MiB; with {BUDGET_MIB} MiB: backup {} MiB, restore {} MiB",
        free_kib / 1024,
        backup_kib / 1024,
        restore_kib / 1024
    );
    assert!(
        backup_kib <= BUDGET_MIB * 1024,
        "the backup peaked at {backup_kib} KiB, over its {BUDGET_MIB} MiB budget"
    );
    assert!(
        restore_kib <= BUDGET_MIB * 1024,
        "the restore peaked at {restore_kib} KiB, over its {BUDGET_MIB} MiB budget"
    );
    // The budget is what kept it there: unbounded, the same backup holds more.
    assert!(
        free_kib > backup_kib + 16 * 1024,
        "without a budget the backup peaked at {free_kib} KiB, with one at {backup_kib} KiB"
    );
    let stored = src.strip_prefix("/").expect("absolute");
    assert_same_tree(&src, &target.join(stored));

    // Small packs from one worker are still restic's format, and its data.
    let restic = Restic::new(repo);
    restic.run(["check", "--read-data"]).ok();
    let by_restic = dir.path().join("by-restic");
    restic
        .run([
            "restore".as_ref(),
            "latest".as_ref(),
            "--target".as_ref(),
            by_restic.as_os_str(),
        ])
        .ok();
    assert_same_tree(&src, &by_restic.join(stored));
}

#[test]
fn a_budget_below_the_smallest_that_works_is_refused_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lifeboat = Lifeboat::new(dir.path().join("repo").display().to_string());
    lifeboat.repo(["init"]).ok();
    let run = lifeboat.repo(["backup", "/etc/hostname", "--memory-budget", "64Mi"]);
    assert_eq!(run.status, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("a memory budget of `64Mi` is below the smallest that works, 96Mi"),
        "{}",
        run.stderr
    );
    let run = lifeboat.repo(["backup", "/etc/hostname", "--memory-budget", "2GB"]);
    assert!(
        run.stderr.contains("`2GB` is not a size such as 256Mi"),
        "{}",
        run.stderr
    );
    assert!(
        lifeboat.repo(["snapshots", "-o", "json"]).ok().json() == serde_json::json!([]),
        "nothing was backed up"
    );
}
