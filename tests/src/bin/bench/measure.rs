//! Runs one command and measures it: wall time, the child's own CPU time and peak RSS.
//!
//! The child is reaped with `wait4`, whose `rusage` covers exactly that process (and its
//! waited-for descendants), unlike `getrusage(RUSAGE_CHILDREN)` deltas, which would also
//! pick up any other child the benchmark reaps meanwhile. Output goes to log files rather
//! than pipes, so nothing has to drain a pipe while we block in `wait4`.

use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// What one command cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    pub(crate) wall: Duration,
    pub(crate) user: Duration,
    pub(crate) sys: Duration,
    /// Peak resident set size; Linux reports `ru_maxrss` in KiB.
    pub(crate) max_rss_kib: u64,
}

impl Usage {
    pub(crate) fn cpu(&self) -> Duration {
        self.user + self.sys
    }
}

/// A finished command: its cost and where its output went.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) usage: Usage,
    pub(crate) stdout: String,
}

/// Runs `cmd` with stdout and stderr written to `<log>.stdout` / `<log>.stderr`, and fails
/// with the command line and the tail of its stderr if it exits non-zero.
pub(crate) fn run(cmd: &mut Command, log: &Path) -> Result<Finished> {
    let out_path = log.with_extension("stdout");
    let err_path = log.with_extension("stderr");
    let stdout =
        File::create(&out_path).with_context(|| format!("cannot create {}", out_path.display()))?;
    let stderr =
        File::create(&err_path).with_context(|| format!("cannot create {}", err_path.display()))?;
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);

    let line = command_line(cmd);
    let started = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    // The pid stays ours until we reap it below; `child` is dropped without waiting (that
    // neither kills nor reaps it), so the single reap is the wait4.
    let pid = libc::pid_t::try_from(child.id()).context("a pid always fits in pid_t")?;
    drop(child);
    let (status, rusage) = wait4(pid).with_context(|| format!("cannot wait for `{line}`"))?;
    let wall = started.elapsed();

    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    if !status.success() {
        let stderr = fs::read_to_string(&err_path).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "`{line}` failed ({status}); its stderr ends with:\n{}",
            tail.join("\n")
        );
    }
    let usage = Usage {
        wall,
        user: timeval(rusage.ru_utime),
        sys: timeval(rusage.ru_stime),
        max_rss_kib: u64::try_from(rusage.ru_maxrss).unwrap_or(0),
    };
    Ok(Finished { usage, stdout })
}

/// Waits for `pid`, retrying on EINTR.
fn wait4(pid: libc::pid_t) -> std::io::Result<(ExitStatus, libc::rusage)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `rusage` holds only integers, so all-zero bytes are a valid value, and
        // wait4 writes only through the two pointers, which point at these live locals.
        let (ret, rusage) = unsafe {
            let mut rusage: libc::rusage = std::mem::zeroed();
            let ret = libc::wait4(pid, &mut status, 0, &mut rusage);
            (ret, rusage)
        };
        if ret == pid {
            return Ok((ExitStatus::from_raw(status), rusage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
}

/// The command as a shell-like line, for messages.
pub(crate) fn command_line(cmd: &Command) -> String {
    let mut parts: Vec<OsString> = vec![cmd.get_program().to_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_owned()));
    parts
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
