//! The results: one record per job and tool, printed as a table with ratios, and saved as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use lifeboat_tests::link::LinkStats;
use serde::Serialize;

use crate::measure::Usage;
use crate::tool::Job;

const MIB: f64 = 1024.0 * 1024.0;

/// One measured job of one tool.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Record {
    pub(crate) job: &'static str,
    pub(crate) tool: &'static str,
    pub(crate) wall_s: f64,
    pub(crate) cpu_s: f64,
    pub(crate) user_s: f64,
    pub(crate) sys_s: f64,
    pub(crate) max_rss_kib: u64,
    /// Size of the repository directory after the job, for the jobs that change it.
    pub(crate) repo_bytes: Option<u64>,
}

impl Record {
    pub(crate) fn new(
        job: Job,
        tool: &'static str,
        usage: &Usage,
        repo_bytes: Option<u64>,
    ) -> Self {
        Self {
            job: job.label(),
            tool,
            wall_s: usage.wall.as_secs_f64(),
            cpu_s: usage.cpu().as_secs_f64(),
            user_s: usage.user.as_secs_f64(),
            sys_s: usage.sys.as_secs_f64(),
            max_rss_kib: usage.max_rss_kib,
            repo_bytes,
        }
    }

    fn rss_mib(&self) -> f64 {
        self.max_rss_kib as f64 / 1024.0
    }

    /// The one line printed as soon as the job finishes.
    pub(crate) fn progress_line(&self) -> String {
        let mut line = format!(
            "  {:<9} {:<18} {:>8.2} s wall {:>8.2} s CPU {:>8.1} MiB RSS",
            self.tool,
            self.job,
            self.wall_s,
            self.cpu_s,
            self.rss_mib()
        );
        if let Some(bytes) = self.repo_bytes {
            let _ = write!(line, " {:>9.1} MiB repo", bytes as f64 / MIB);
        }
        line
    }
}

fn find<'a>(records: &'a [Record], job: &str, tool: &str) -> Option<&'a Record> {
    records.iter().find(|r| r.job == job && r.tool == tool)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".to_string()
    }
}

/// The full table: every job for every tool, with each tool's wall time relative to restic.
pub(crate) fn table(records: &[Record], tools: &[&'static str]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} | {:<8} | {:>8} | {:>8} | {:>12} | {:>13} | {:>11}",
        "job", "tool", "wall s", "CPU s", "peak RSS MiB", "repo size MiB", "wall/restic"
    );
    let _ = writeln!(out, "{}", "-".repeat(99));
    for job in Job::ALL {
        let restic = find(records, job.label(), "restic");
        for tool in tools {
            let Some(r) = find(records, job.label(), tool) else {
                continue;
            };
            let repo = r
                .repo_bytes
                .map_or("-".to_string(), |b| format!("{:.1}", b as f64 / MIB));
            let vs = restic.map_or("-".to_string(), |x| ratio(r.wall_s, x.wall_s));
            let _ = writeln!(
                out,
                "{:<18} | {:<8} | {:>8.2} | {:>8.2} | {:>12.1} | {:>13} | {:>11}",
                r.job,
                r.tool,
                r.wall_s,
                r.cpu_s,
                r.rss_mib(),
                repo,
                vs
            );
        }
    }
    out
}

/// Per job, lifeboat's wall time, CPU time and peak RSS relative to each other tool
/// (below 1 means lifeboat is faster or smaller), plus the totals over all jobs.
pub(crate) fn summary(records: &[Record], others: &[&'static str]) -> String {
    let mut out = String::new();
    for other in others {
        let _ = writeln!(
            out,
            "lifeboat/{other} (below 1: lifeboat is faster or smaller)"
        );
        let _ = writeln!(
            out,
            "  {:<18} {:>6} {:>6} {:>6}",
            "job", "wall", "CPU", "RSS"
        );
        let (mut lw, mut lc, mut ow, mut oc) = (0.0, 0.0, 0.0, 0.0);
        let (mut lr, mut or) = (0u64, 0u64);
        for job in Job::ALL {
            let (Some(l), Some(o)) = (
                find(records, job.label(), "lifeboat"),
                find(records, job.label(), other),
            ) else {
                continue;
            };
            (lw, lc, ow, oc) = (lw + l.wall_s, lc + l.cpu_s, ow + o.wall_s, oc + o.cpu_s);
            (lr, or) = (lr.max(l.max_rss_kib), or.max(o.max_rss_kib));
            let _ = writeln!(
                out,
                "  {:<18} {:>6} {:>6} {:>6}",
                job.label(),
                ratio(l.wall_s, o.wall_s),
                ratio(l.cpu_s, o.cpu_s),
                ratio(l.max_rss_kib as f64, o.max_rss_kib as f64)
            );
        }
        let _ = writeln!(
            out,
            "  {:<18} {:>6} {:>6} {:>6}   (sums of wall and CPU, largest peak RSS)",
            "all jobs",
            ratio(lw, ow),
            ratio(lc, oc),
            ratio(lr as f64, or as f64)
        );
    }
    out
}

/// One measured job of one tool over the wire, at one round-trip time.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WireRecord {
    pub(crate) rtt_ms: f64,
    #[serde(flatten)]
    pub(crate) record: Record,
    /// What the link carried during the job.
    pub(crate) link: LinkStats,
}

impl WireRecord {
    /// Requests per GiB that went over the link either way; `None` for a job that moved less
    /// than a MiB (init), where the ratio says nothing.
    pub(crate) fn requests_per_gib(&self) -> Option<f64> {
        let bytes = self.link.bytes_up + self.link.bytes_down;
        (bytes >= 1 << 20).then(|| self.link.requests as f64 * f64::from(1u32 << 30) / bytes as f64)
    }

    /// The one line printed as soon as the job finishes.
    pub(crate) fn progress_line(&self) -> String {
        format!(
            "{} {:>5} ms RTT {:>6} requests {:>4} round trips",
            self.record.progress_line(),
            self.rtt_ms,
            self.link.requests,
            self.link.round_trips
        )
    }
}

fn find_wire<'a>(
    records: &'a [WireRecord],
    job: Job,
    tool: &str,
    rtt_ms: f64,
) -> Option<&'a WireRecord> {
    records
        .iter()
        .find(|r| r.record.job == job.label() && r.record.tool == tool && r.rtt_ms == rtt_ms)
}

/// Over the wire, per job and RTT: each tool's wall time, requests and round trips waited
/// for ([`LinkStats::round_trips`]), requests per GiB moved, lifeboat's wall time
/// relative to restic's, and relative to its own at 0 ms (when 0 ms was run).
pub(crate) fn wire_table(records: &[WireRecord], rtts: &[Duration]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} | {:>6} | {:>10} | {:>9} | {:>7} | {:>10} | {:>9} | {:>7} | {:>11} | {:>12}",
        "job",
        "RTT ms",
        "lifeboat s",
        "req/trips",
        "req/GiB",
        "restic s",
        "req/trips",
        "req/GiB",
        "wall/restic",
        "wall/own 0ms"
    );
    let _ = writeln!(out, "{}", "-".repeat(128));
    let cell = |r: Option<&WireRecord>| {
        r.map_or(("-".into(), "-".into(), "-".into()), |r| {
            (
                format!("{:.2}", r.record.wall_s),
                format!("{}/{}", r.link.requests, r.link.round_trips),
                r.requests_per_gib()
                    .map_or("-".into(), |n| format!("{n:.0}")),
            )
        })
    };
    for job in Job::OVER_THE_WIRE {
        for rtt in rtts {
            let rtt_ms = rtt.as_secs_f64() * 1e3;
            let lifeboat = find_wire(records, job, "lifeboat", rtt_ms);
            let restic = find_wire(records, job, "restic", rtt_ms);
            if lifeboat.is_none() && restic.is_none() {
                continue;
            }
            let own = find_wire(records, job, "lifeboat", 0.0);
            let vs = |other: Option<&WireRecord>| match (lifeboat, other) {
                (Some(l), Some(o)) => ratio(l.record.wall_s, o.record.wall_s),
                _ => "-".to_string(),
            };
            let ((lw, lr, lg), (rw, rr, rg)) = (cell(lifeboat), cell(restic));
            let _ = writeln!(
                out,
                "{:<18} | {:>6} | {:>10} | {:>9} | {:>7} | {:>10} | {:>9} | {:>7} | {:>11} | {:>12}",
                job.label(),
                rtt_ms,
                lw,
                lr,
                lg,
                rw,
                rr,
                rg,
                vs(restic),
                vs(own)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(job: Job, tool: &'static str, wall: f64) -> Record {
        Record {
            job: job.label(),
            tool,
            wall_s: wall,
            cpu_s: wall,
            user_s: wall,
            sys_s: 0.0,
            max_rss_kib: 1024,
            repo_bytes: None,
        }
    }

    #[test]
    fn table_shows_wall_time_relative_to_restic() {
        let records = [
            record(Job::BackupA, "lifeboat", 1.0),
            record(Job::BackupA, "restic", 4.0),
        ];
        let table = table(&records, &["lifeboat", "restic"]);
        let lifeboat = table
            .lines()
            .find(|l| l.contains("lifeboat"))
            .expect("a lifeboat row");
        assert!(lifeboat.ends_with("0.25"), "{lifeboat}");
    }

    #[test]
    fn wire_table_compares_with_restic_and_with_lifeboat_at_zero_rtt() {
        let wire = |job, tool, rtt_ms, wall| WireRecord {
            rtt_ms,
            record: record(job, tool, wall),
            link: LinkStats {
                requests: 10,
                ..LinkStats::default()
            },
        };
        let records = [
            wire(Job::BackupA, "lifeboat", 0.0, 1.0),
            wire(Job::BackupA, "restic", 0.0, 2.0),
            wire(Job::BackupA, "lifeboat", 20.0, 3.0),
            wire(Job::BackupA, "restic", 20.0, 12.0),
        ];
        let rtts = [Duration::ZERO, Duration::from_millis(20)];
        let table = wire_table(&records, &rtts);
        let at_20 = table
            .lines()
            .find(|l| l.split('|').nth(1).is_some_and(|c| c.trim() == "20"))
            .expect("a row at 20 ms");
        assert!(at_20.ends_with("0.25 |         3.00"), "{at_20}");
    }
}
