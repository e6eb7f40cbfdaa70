//! `bench`: lifeboat against restic (and rustic, when installed) on the same seeded data.
//!
//! ```text
//! cargo run --release -p lifeboat-tests --bin bench -- [--small] [--keep] [--regen] [--no-build] [--dir DIR]
//!     [--s3 http://127.0.0.1:PORT] [--link-rtt 0ms,20ms,80ms]
//! ```
//!
//! # What it measures
//!
//! For each tool, in one run and each with a fresh repository: `init`; a backup of dataset A
//! (large files, half text, half random); an incremental backup of C (A with 1% of its bytes
//! overwritten and one file appended to) with A's snapshot as parent; a backup of B (many
//! small files in a tree) and a second backup of B with nothing changed; a restore of A's
//! snapshot; and `check --read-data`. Each command's wall time, CPU time (user + system) and
//! peak RSS come from `wait4`'s rusage for that process alone; the repository's size on
//! disk is recorded after each backup. Finally `restic check --read-data` runs on the
//! repository lifeboat wrote, as proof that restic accepts it.
//!
//! # How the comparison is kept fair
//!
//! - Same input bytes, same password, same `--host`, the same order of jobs.
//! - A and C are backed up from one path (`<run>/live`, which each dataset is renamed to in
//!   turn), so every tool finds A's snapshot as C's parent by host and path, as it would for
//!   a volume backed up daily.
//! - No local caches: lifeboat has none, so restic and rustic run with `--no-cache`.
//! - Page-cached input: each dataset is read once, untimed, before each tool's run (dropping
//!   the page cache would need root), and `sync` runs before every job so one job's
//!   write-back is not billed to the next.
//! - Restores are compared byte for byte with the original, untimed, so a fast but wrong
//!   restore cannot pass as a result.
//!
//! # Over the wire
//!
//! Given an S3 server (`--s3`, or `LIFEBOAT_TEST_S3_ENDPOINT` as `scripts/test` exports it),
//! lifeboat and restic also run against S3 repositories reached through a shaped link on
//! loopback, once per round-trip time (`--link-rtt`; default 0, 20 and 80 ms, or 20 ms alone
//! with `--small`): init, a backup of A and of B, a restore of each (compared byte for byte),
//! and `check --read-data`, with the requests each job sent; see `bench/wire.rs`. A second
//! table shows them per job and RTT.
//!
//! Datasets are generated once per parameter set and cached under the work directory
//! (default `target/bench-data`); repositories and restore targets live in a per-run
//! directory that is deleted at the end unless `--keep` is given. Results go to
//! `<work>/results.json`.

// Only for `wait4` in `measure`, which gives each child's own CPU time and peak RSS.
#![allow(unsafe_code)]

// A binary's root resolves modules beside it (src/bin/), so point into bench/ explicitly.
#[path = "bench/dataset.rs"]
mod dataset;
#[path = "bench/measure.rs"]
mod measure;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/tool.rs"]
mod tool;
#[path = "bench/wire.rs"]
mod wire;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use serde::Serialize;

use crate::dataset::{Datasets, Params};
use crate::report::{Record, WireRecord};
use crate::tool::{Job, Kind, ListedSnapshot, Tool};

/// lifeboat against restic (and rustic) on the same seeded data.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Scaled-down datasets: the whole run takes well under a minute.
    #[arg(long)]
    small: bool,
    /// Keep the repositories and restore targets of this run.
    #[arg(long)]
    keep: bool,
    /// Regenerate the datasets even if cached ones match.
    #[arg(long)]
    regen: bool,
    /// Use the lifeboat binary beside the bench as it is instead of building it first.
    #[arg(long)]
    no_build: bool,
    /// Work directory for datasets, runs and results (default: target/bench-data).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// An S3 server (`http://127.0.0.1:PORT`, path-style, any credentials) to also run each
    /// tool over the wire against.
    #[arg(long, env = "LIFEBOAT_TEST_S3_ENDPOINT", value_name = "ENDPOINT")]
    s3: Option<String>,
    /// Round-trip times of the link to the S3 server [default: 0ms,20ms,80ms; 20ms with --small].
    #[arg(long, value_delimiter = ',', value_parser = wire::parse_rtt, value_name = "RTTS")]
    link_rtt: Vec<Duration>,
    /// Runs no job: serves a link to the --s3 server with the first --link-rtt and prints its
    /// address, until interrupted, for trying lifeboat and restic by hand over a slow link.
    #[arg(long, requires = "s3")]
    serve_link: bool,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    if args.serve_link {
        let upstream = args.s3.as_deref().expect("clap requires --s3");
        let rtt = args.link_rtt.first().copied().unwrap_or_default();
        return wire::serve_link(upstream, rtt);
    }
    if let Some(endpoint) = &args.s3 {
        // The test support creates buckets on the server this variable names.
        // SAFETY: nothing else runs yet: no thread has been started, nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("LIFEBOAT_TEST_S3_ENDPOINT", endpoint) };
    }
    let rtts = match (&args.s3, args.link_rtt.is_empty(), args.small) {
        (None, _, _) => Vec::new(),
        (Some(_), false, _) => args.link_rtt.clone(),
        (Some(_), true, true) => vec![Duration::from_millis(20)],
        (Some(_), true, false) => [0, 20, 80].map(Duration::from_millis).to_vec(),
    };

    // The bench runs from target/<profile>/bench; lifeboat is built in the same profile
    // (dependencies are optimised in the dev profile too, so CI's dev-profile run measures
    // the same engine without a second, release, build of everything).
    let exe = std::env::current_exe().context("cannot find the bench executable")?;
    let profile_dir = exe
        .parent()
        .context("the bench executable is not inside a cargo target directory")?;
    let target_dir = profile_dir
        .parent()
        .context("the bench executable is not inside a cargo target directory")?
        .to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    if !args.no_build {
        build_lifeboat(release)?;
    }
    let lifeboat = profile_dir.join("lifeboat");
    if !lifeboat.is_file() {
        bail!("{} is missing after the build", lifeboat.display());
    }
    let restic = tool::on_path("restic")
        .context("restic is not on PATH: install it (apt-get install restic) to compare with it")?;
    let rustic = tool::on_path("rustic");

    let work = args
        .dir
        .clone()
        .unwrap_or_else(|| target_dir.join("bench-data"));
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let work = work
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", work.display()))?;
    recover_swapped_datasets(&work)?;

    let (mode, params) = if args.small {
        ("small", Params::small())
    } else {
        ("full", Params::full())
    };
    let sets = dataset::prepare(&work.join(format!("datasets-{mode}")), &params, args.regen)?;

    let run_dir = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&work)
        .with_context(|| format!("cannot create a run directory in {}", work.display()))?;

    let tool = |kind, exe: PathBuf, name: &str| Tool {
        kind,
        exe,
        scratch: run_dir.path().join(format!("scratch-{name}")),
    };
    let mut tools = vec![
        tool(Kind::Lifeboat, lifeboat, "lifeboat"),
        tool(Kind::Restic, restic, "restic"),
    ];
    if let Some(exe) = rustic {
        tools.push(tool(Kind::Rustic, exe, "rustic"));
    }

    let setup = Setup {
        mode,
        params,
        work,
        sets,
        tools,
        run_dir: run_dir.path().to_path_buf(),
        keep: args.keep,
        rtts,
    };
    let result = bench(&setup);

    // Clean up on failure too: a failed full run can leave gigabytes of repositories.
    let cleanup = if args.keep {
        let kept = run_dir.keep();
        println!(
            "kept repositories, restore targets and every command's output (logs/) in {}",
            kept.display()
        );
        Ok(())
    } else {
        run_dir
            .close()
            .context("cannot remove the run directory (repositories and restore targets)")
    };
    result.and(cleanup)
}

/// Everything a run needs once the datasets and tools are ready.
#[derive(Debug)]
struct Setup {
    mode: &'static str,
    params: Params,
    work: PathBuf,
    sets: Datasets,
    tools: Vec<Tool>,
    /// This run's repositories, restore targets, logs and tool scratch directories.
    run_dir: PathBuf,
    keep: bool,
    /// Round-trip times to run over the wire at (none: no S3 server given).
    rtts: Vec<Duration>,
}

/// Runs every tool, the compatibility check, and reports.
fn bench(setup: &Setup) -> Result<()> {
    let Setup {
        mode,
        params,
        work,
        sets,
        tools,
        run_dir,
        keep,
        rtts,
    } = setup;
    println!();
    println!("lifeboat benchmark ({mode})");
    println!("  datasets: {}", params.describe());
    println!(
        "  work dir: {}  (run: {})",
        work.display(),
        run_dir.display()
    );
    let versions: Vec<String> = tools.iter().map(Tool::version).collect();
    for (t, version) in tools.iter().zip(&versions) {
        println!("  {:<9} {version} ({})", t.name(), t.exe.display());
    }
    if tools.iter().all(|t| t.kind != Kind::Rustic) {
        println!("  rustic: not installed");
    }
    println!(
        "  restic and rustic run with --no-cache (lifeboat keeps no local cache); all use --host {}",
        tool::HOST
    );
    println!(
        "  input is page-cached: each dataset is read once, untimed, before each tool's run; \
         `sync` runs before every job"
    );
    println!();

    let mut records = Vec::new();
    let mut parent_checks = Vec::new();
    for t in tools {
        let outcome = run_tool(t, sets, run_dir, *keep)?;
        records.extend(outcome.records);
        parent_checks.push(ParentCheck {
            tool: t.name(),
            verdict: outcome.parents,
        });
    }

    // The compatibility proof: restic reads and verifies every blob lifeboat wrote.
    let restic_tool = tools
        .iter()
        .find(|t| t.kind == Kind::Restic)
        .context("restic is always among the tools")?;
    let lifeboat_repo = run_dir.join("repo-lifeboat");
    sync()?;
    let compat = measure::run(
        &mut restic_tool.command(&lifeboat_repo, ["check", "--read-data"]),
        &run_dir.join("logs").join("compat-restic-check"),
    );
    let compat_ok = compat.is_ok();
    println!();
    println!(
        "restic check --read-data on lifeboat's repository: {}",
        if compat_ok { "ok" } else { "FAILED" }
    );

    // A failure over the wire is reported after the local results are printed and saved.
    let (wire_records, wire_failure) = if rtts.is_empty() {
        println!("over the wire: not run (no S3 server: give --s3 or LIFEBOAT_TEST_S3_ENDPOINT)");
        (Vec::new(), None)
    } else {
        println!();
        match wire::run(tools, sets, rtts, run_dir, *keep) {
            Ok(records) => (records, None),
            Err(e) => (Vec::new(), Some(e)),
        }
    };

    let names: Vec<&'static str> = tools.iter().map(Tool::name).collect();
    println!();
    print!("{}", report::table(&records, &names));
    println!();
    let others: Vec<&'static str> = names.iter().copied().filter(|n| *n != "lifeboat").collect();
    print!("{}", report::summary(&records, &others));
    for check in &parent_checks {
        if check.verdict != "ok" {
            println!(
                "WARNING: {}: {} (its incremental numbers are not comparable)",
                check.tool, check.verdict
            );
        }
    }
    if !wire_records.is_empty() {
        println!();
        println!("over the wire (S3 through a link with the given round-trip time)");
        print!("{}", report::wire_table(&wire_records, rtts));
    }

    let results = Results {
        mode,
        params,
        work_dir: work,
        restic_no_cache: true,
        page_cache_warmed: true,
        tools: tools
            .iter()
            .zip(versions)
            .map(|(t, version)| ToolInfo {
                name: t.name(),
                version,
                exe: t.exe.clone(),
            })
            .collect(),
        records: &records,
        parent_checks: &parent_checks,
        restic_check_of_lifeboat_repo: Compat {
            ok: compat_ok,
            wall_s: compat.as_ref().ok().map(|f| f.usage.wall.as_secs_f64()),
        },
        over_the_wire: &wire_records,
    };
    let results_path = work.join("results.json");
    let json = serde_json::to_vec_pretty(&results).context("cannot encode the results")?;
    fs::write(&results_path, json)
        .with_context(|| format!("cannot write {}", results_path.display()))?;
    println!();
    println!("results: {}", results_path.display());

    compat.context("restic does not accept the repository lifeboat wrote")?;
    wire_failure.map_or(Ok(()), |e| Err(e.context("over the wire")))
}

/// Builds lifeboat (in the bench's own profile) so the benchmark never measures a stale binary.
fn build_lifeboat(release: bool) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the tests crate lives inside the workspace")?;
    let status = Command::new(&cargo)
        // The whole workspace with every target, as `scripts/test` builds it: building one
        // package, or leaving out the tests' dev-dependencies, selects other features of the
        // shared dependencies and rebuilds them.
        .args(["build", "--workspace", "--all-targets"])
        .args(release.then_some("--release"))
        .current_dir(workspace)
        .status()
        .with_context(|| format!("cannot run {}", cargo.to_string_lossy()))?;
    if !status.success() {
        bail!("building lifeboat failed ({status})");
    }
    Ok(())
}

/// What one tool's run produced.
struct ToolOutcome {
    records: Vec<Record>,
    /// "ok" when C's parent was A and the second B backup's parent the first.
    parents: String,
}

/// Runs every job for one tool against its own fresh repository.
fn run_tool(tool: &Tool, sets: &Datasets, run_dir: &Path, keep: bool) -> Result<ToolOutcome> {
    let name = tool.name();
    let repo = run_dir.join(format!("repo-{name}"));
    let live = run_dir.join("live");
    let target = run_dir.join(format!("restore-{name}"));
    let logs = run_dir.join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    tool.make_scratch()?;

    let mut warmed = 0;
    for dir in sets.all() {
        warmed += dataset::warm_up(dir)?;
    }
    println!("{name}: warm-up read {} MiB", warmed >> 20);

    let mut records = Vec::new();
    let mut snapshots: HashMap<Job, String> = HashMap::new();
    for job in Job::ALL {
        let (source, swap) = match job {
            Job::BackupA => (live.clone(), Some(Swap::new(&sets.a, &live)?)),
            Job::BackupC => (live.clone(), Some(Swap::new(&sets.c, &live)?)),
            _ => (sets.b.clone(), None),
        };
        let before = if job.is_backup() {
            tool::snapshot_ids(&repo)?
        } else {
            Vec::new()
        };
        let snapshot_a = snapshots.get(&Job::BackupA).cloned().unwrap_or_default();
        let mut cmd = tool.job(job, &repo, &source, &snapshot_a, &target);
        sync()?;
        let finished = measure::run(&mut cmd, &logs.join(format!("{name}-{}", job.slug())));
        // Put the dataset back before looking at the result, so a failure leaves it in place.
        if let Some(swap) = swap {
            swap.undo()?;
        }
        let finished = finished?;

        let mut repo_bytes = None;
        if job.is_backup() {
            let id = tool::new_snapshot(&before, &tool::snapshot_ids(&repo)?)
                .with_context(|| format!("{name} {}", job.label()))?;
            snapshots.insert(job, id);
        }
        if job.is_backup() || job == Job::Check {
            repo_bytes = Some(dataset::size(&repo)?);
        }
        let record = Record::new(job, name, &finished.usage, repo_bytes);
        println!("{}", record.progress_line());
        records.push(record);

        if job == Job::RestoreA {
            let root = dataset::restored_root(&target)?;
            dataset::verify_same(&sets.a, &root)
                .with_context(|| format!("{name} restored A incorrectly"))?;
            if !keep {
                fs::remove_dir_all(&target)
                    .with_context(|| format!("cannot remove {}", target.display()))?;
            }
        }
    }

    let parents = check_parents(tool, &repo, &logs, &snapshots)?;
    if parents == "ok" {
        println!("{name}: restore verified, parents detected as expected");
    } else {
        println!("{name}: restore verified; WARNING: {parents}");
    }
    Ok(ToolOutcome { records, parents })
}

/// Checks from the tool's own listing that it chose the expected parents: A for C, and the
/// first B backup for the second. Returns "ok" or what went wrong.
fn check_parents(
    tool: &Tool,
    repo: &Path,
    logs: &Path,
    snapshots: &HashMap<Job, String>,
) -> Result<String> {
    let Some(mut cmd) = tool.snapshots_json(repo) else {
        return Ok("not checked (output format unknown)".to_string());
    };
    let finished = measure::run(&mut cmd, &logs.join(format!("{}-snapshots", tool.name())))?;
    let listed: Vec<ListedSnapshot> = serde_json::from_str(&finished.stdout)
        .with_context(|| format!("cannot parse {}'s snapshot list", tool.name()))?;
    // Listings may show ids in full or shortened; compare by prefix.
    let same =
        |a: &str, b: &str| !a.is_empty() && !b.is_empty() && (a.starts_with(b) || b.starts_with(a));
    let mut problems = Vec::new();
    for (child, parent) in [
        (Job::BackupC, Job::BackupA),
        (Job::BackupBUnchanged, Job::BackupB),
    ] {
        let (Some(child_id), Some(parent_id)) = (snapshots.get(&child), snapshots.get(&parent))
        else {
            continue;
        };
        let found = listed.iter().find(|s| same(&s.id, child_id));
        let got = found.and_then(|s| s.parent.as_deref()).unwrap_or("");
        if !same(got, parent_id) {
            problems.push(format!(
                "{}'s parent is `{got}`, expected {}'s {}",
                child.label(),
                parent.label(),
                &parent_id[..parent_id.len().min(8)]
            ));
        }
    }
    Ok(if problems.is_empty() {
        "ok".to_string()
    } else {
        problems.join("; ")
    })
}

/// A dataset renamed to the shared backup path for one job.
///
/// A rename within one filesystem is instant, so A and C can be backed up from the same
/// path without copying gigabytes. `live.from` beside it records where the dataset came
/// from, so a run that is killed mid-job can be repaired by the next one.
#[derive(Debug)]
struct Swap {
    from: PathBuf,
    live: PathBuf,
    done: bool,
}

impl Swap {
    fn new(from: &Path, live: &Path) -> Result<Self> {
        let marker = marker_for(live);
        fs::write(&marker, from.as_os_str().as_encoded_bytes())
            .with_context(|| format!("cannot write {}", marker.display()))?;
        fs::rename(from, live)
            .with_context(|| format!("cannot rename {} to {}", from.display(), live.display()))?;
        Ok(Self {
            from: from.to_path_buf(),
            live: live.to_path_buf(),
            done: false,
        })
    }

    fn undo(mut self) -> Result<()> {
        self.done = true;
        put_back(&self.live, &self.from)
    }
}

impl Drop for Swap {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = put_back(&self.live, &self.from)
        {
            eprintln!("bench: {e:#}");
        }
    }
}

fn marker_for(live: &Path) -> PathBuf {
    live.with_file_name("live.from")
}

fn put_back(live: &Path, from: &Path) -> Result<()> {
    fs::rename(live, from).with_context(|| {
        format!(
            "cannot rename {} back to {}",
            live.display(),
            from.display()
        )
    })?;
    let marker = marker_for(live);
    fs::remove_file(&marker).with_context(|| format!("cannot remove {}", marker.display()))
}

/// Puts back any dataset that a killed run left renamed to its `live` path.
fn recover_swapped_datasets(work: &Path) -> Result<()> {
    for entry in fs::read_dir(work).with_context(|| format!("cannot list {}", work.display()))? {
        let dir = entry?.path();
        let is_run = dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("run-"));
        let marker = dir.join("live.from");
        if !is_run || !marker.is_file() {
            continue;
        }
        let from = fs::read_to_string(&marker)
            .with_context(|| format!("cannot read {}", marker.display()))?;
        let (live, from) = (dir.join("live"), PathBuf::from(from));
        if live.is_dir() && !from.exists() {
            println!(
                "putting {} back to {} (left by an interrupted run)",
                live.display(),
                from.display()
            );
            put_back(&live, &from)?;
        }
    }
    Ok(())
}

/// Flushes dirty pages, so the previous job's write-back does not slow the next one.
pub(crate) fn sync() -> Result<()> {
    let status = Command::new("sync").status().context("cannot run sync")?;
    if !status.success() {
        bail!("sync failed ({status})");
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct ParentCheck {
    tool: &'static str,
    verdict: String,
}

#[derive(Debug, Serialize)]
struct ToolInfo {
    name: &'static str,
    version: String,
    exe: PathBuf,
}

#[derive(Debug, Serialize)]
struct Compat {
    ok: bool,
    wall_s: Option<f64>,
}

/// The contents of `results.json`.
#[derive(Debug, Serialize)]
struct Results<'a> {
    mode: &'a str,
    params: &'a Params,
    work_dir: &'a Path,
    restic_no_cache: bool,
    page_cache_warmed: bool,
    tools: Vec<ToolInfo>,
    records: &'a [Record],
    parent_checks: &'a [ParentCheck],
    restic_check_of_lifeboat_repo: Compat,
    /// Jobs against S3 through the link, per round-trip time (empty without an S3 server).
    over_the_wire: &'a [WireRecord],
}
