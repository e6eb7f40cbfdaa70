//! The benchmark over the wire: each tool against an S3 repository (the test S3 server)
//! reached through a [`Link`] that adds a round-trip time, once per RTT.
//!
//! Per tool and RTT there is a fresh bucket and a fresh link, and the jobs of
//! [`Job::OVER_THE_WIRE`]: init, a backup of A, a backup of B, a restore of each (compared
//! byte for byte with its dataset, untimed), and `check --read-data`. Besides wall time, CPU
//! and peak RSS, each job records the requests the link carried for it (its counters are
//! zeroed before the job and read right after, so the untimed listing around a job is not
//! counted). Snapshot ids and the cleanup go to the S3 server directly, not through the link.
//!
//! rustic is left out: it reaches S3 through an opendal profile rather than restic's URL.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use lifeboat_tests::S3;
use lifeboat_tests::bucket::TestBucket;
use lifeboat_tests::cluster::Storage;
use lifeboat_tests::link::{Link, LinkOptions};

use crate::dataset::{self, Datasets};
use crate::measure;
use crate::report::{Record, WireRecord};
use crate::tool::{Job, Kind, Tool};

/// Where the repository lives inside each bucket.
const PREFIX: &str = "repo";

/// `0ms`, `20ms`, `1s`, `0.5s`: a round-trip time on the command line.
pub(crate) fn parse_rtt(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (text.strip_suffix('s').unwrap_or(text), 1.0),
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(|n| Duration::from_secs_f64(n * unit))
        .ok_or_else(|| format!("`{text}` is not a round-trip time such as 20ms or 0.1s"))
}

/// Serves a link with round-trip time `rtt` in front of `upstream` (`http://HOST:PORT`) until
/// the process is stopped.
pub(crate) fn serve_link(upstream: &str, rtt: Duration) -> Result<()> {
    let link = Link::start(
        upstream.trim_start_matches("http://").trim_end_matches('/'),
        LinkOptions {
            rtt,
            ..LinkOptions::default()
        },
    )
    .context("cannot start a link in front of the S3 server")?;
    println!(
        "{} reaches {upstream} with a {} ms round trip; Ctrl-C stops it",
        link.endpoint(),
        rtt.as_millis()
    );
    loop {
        std::thread::park();
    }
}

/// Runs every tool but rustic at every RTT; returns the records in the order they ran.
pub(crate) fn run(
    tools: &[Tool],
    sets: &Datasets,
    rtts: &[Duration],
    run_dir: &Path,
    keep: bool,
) -> Result<Vec<WireRecord>> {
    let mut warmed = 0;
    for dir in [&sets.a, &sets.b] {
        warmed += dataset::warm_up(dir)?;
    }
    println!("over the wire: warm-up read {} MiB", warmed >> 20);
    let mut records = Vec::new();
    for &rtt in rtts {
        for tool in tools.iter().filter(|t| t.kind != Kind::Rustic) {
            records.extend(run_tool(tool, rtt, sets, run_dir, keep)?);
        }
    }
    Ok(records)
}

fn run_tool(
    tool: &Tool,
    rtt: Duration,
    sets: &Datasets,
    run_dir: &Path,
    keep: bool,
) -> Result<Vec<WireRecord>> {
    let name = tool.name();
    let rtt_ms = rtt.as_millis();
    let s3 = S3::bucket(&format!("bench-{name}-{rtt_ms}ms"));
    let link = Link::start(
        s3.endpoint.trim_start_matches("http://"),
        LinkOptions {
            rtt,
            ..LinkOptions::default()
        },
    )
    .context("cannot start a link in front of the S3 server")?;
    let through = S3 {
        endpoint: link.endpoint(),
        bucket: s3.bucket.clone(),
    };
    let url = through.restic_url(PREFIX);
    // Straight to the server: for snapshot ids, and to empty the bucket afterwards.
    let direct = TestBucket::open(&Storage::S3(s3.clone()), PREFIX);
    // Restores land on tmpfs when there is one: on ext4, creating files right after the
    // previous restore's were deleted spends seconds in the inode allocator (measured: 11 s
    // of system time in `recently_deleted` for 10,000 files), which would swamp the link.
    let shm = Path::new("/dev/shm");
    let target = if shm.is_dir() && !keep {
        shm.join(format!(
            "lifeboat-bench-{}-wire-restore-{name}",
            std::process::id()
        ))
    } else {
        run_dir.join(format!("wire-restore-{name}"))
    };
    let logs = run_dir.join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    tool.make_scratch()?;

    let mut records = Vec::new();
    let mut snapshots: HashMap<Job, String> = HashMap::new();
    for job in Job::OVER_THE_WIRE {
        let (source, snapshot) = match job {
            Job::BackupA => (&sets.a, String::new()),
            Job::BackupB => (&sets.b, String::new()),
            Job::RestoreA => (&sets.a, snapshots[&Job::BackupA].clone()),
            Job::RestoreB => (&sets.b, snapshots[&Job::BackupB].clone()),
            _ => (&sets.a, String::new()),
        };
        let before = if job.is_backup() {
            snapshot_ids(&direct)
        } else {
            Vec::new()
        };
        let mut cmd = tool.job(job, &url, source, &snapshot, &target);
        cmd.envs(through.env());
        crate::sync()?;
        link.reset_counters();
        let finished = measure::run(
            &mut cmd,
            &logs.join(format!("wire-{name}-{rtt_ms}ms-{}", job.slug())),
        )?;
        let stats = link.stats();

        if job.is_backup() {
            let after = snapshot_ids(&direct);
            let new: Vec<&String> = after.iter().filter(|id| !before.contains(id)).collect();
            let [id] = new.as_slice() else {
                bail!(
                    "{name} {} over the wire: expected one new snapshot, found {}",
                    job.label(),
                    new.len()
                );
            };
            snapshots.insert(job, (*id).clone());
        }
        let record = WireRecord {
            rtt_ms: rtt.as_secs_f64() * 1e3,
            record: Record::new(job, name, &finished.usage, None),
            link: stats,
        };
        println!("{}", record.progress_line());
        records.push(record);

        if matches!(job, Job::RestoreA | Job::RestoreB) {
            let root = restored(&target, source)?;
            dataset::verify_same(source, &root).with_context(|| {
                format!("{name} restored {} incorrectly over the wire", job.label())
            })?;
            if !keep {
                fs::remove_dir_all(&target)
                    .with_context(|| format!("cannot remove {}", target.display()))?;
            }
        }
    }

    // The S3 server keeps everything in memory: free this repository.
    for key in direct.keys("") {
        direct.delete(&key);
    }
    Ok(records)
}

/// The ids of the repository's snapshots, listed on the server directly.
fn snapshot_ids(direct: &TestBucket) -> Vec<String> {
    direct
        .keys("snapshots")
        .iter()
        .filter_map(|key| key.rsplit('/').next())
        .map(str::to_string)
        .collect()
}

/// Where a restore of `source` landed in `target`: restic restores a snapshot under its
/// full path; otherwise the dataset is found as in the local benchmark.
fn restored(target: &Path, source: &Path) -> Result<PathBuf> {
    let full = target.join(source.strip_prefix("/").unwrap_or(source));
    if full.is_dir() {
        Ok(full)
    } else {
        dataset::restored_root(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtts_are_read_in_milliseconds_or_seconds() {
        assert_eq!(parse_rtt("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_rtt("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_rtt("0.5s"), Ok(Duration::from_millis(500)));
        assert!(parse_rtt("fast").is_err());
        assert!(parse_rtt("-1ms").is_err());
    }
}
