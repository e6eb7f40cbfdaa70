//! The real binaries under test: `lifeboat` (built from this workspace) and `restic`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The result of one command.
#[derive(Debug)]
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The result of a finished process.
    pub fn from_output(out: Output) -> Self {
        Self {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with both outputs unless the command succeeded.
    pub fn ok(self) -> Self {
        assert_eq!(
            self.status, 0,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command failed with exit code 1.
    pub fn fails(self) -> Self {
        self.fails_with(1)
    }

    /// Panics unless the command failed with exit code `code` (restic's: 3 a backup without
    /// unreadable files, 10 no repository, 11 locked, 12 wrong password).
    pub fn fails_with(self, code: i32) -> Self {
        assert_eq!(
            self.status, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// The password every test repository uses.
pub const PASSWORD: &str = "correct horse battery staple";

/// A command with a repository and a password, plus extra environment.
#[derive(Debug, Clone)]
struct Tool {
    exe: PathBuf,
    /// Arguments before the caller's: `repo` for lifeboat, `--no-cache` for restic.
    prefix: &'static str,
    repo: String,
    env: Vec<(String, String)>,
}

impl Tool {
    fn new(exe: PathBuf, prefix: &'static str, repo: String) -> Self {
        Self {
            exe,
            prefix,
            repo,
            env: Vec::new(),
        }
    }

    fn with_env(mut self, env: &[(&str, String)]) -> Self {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        self
    }

    fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(args);
        Run::from_output(
            cmd.output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.exe.display())),
        )
    }

    fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.exe);
        cmd.arg(self.prefix)
            .args(args)
            .env("LIFEBOAT_REPOSITORY", &self.repo)
            .env("RESTIC_REPOSITORY", &self.repo)
            .env("LIFEBOAT_PASSWORD", PASSWORD)
            .env("RESTIC_PASSWORD", PASSWORD)
            .env_remove("LIFEBOAT_PASSWORD_FILE")
            .env_remove("RESTIC_PASSWORD_FILE");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }
}

/// Runs `cmd` to its end; its result and its peak resident set in KiB, as the kernel
/// accounted that one process (`wait4`, what `/usr/bin/time` reports as maximum RSS).
#[allow(clippy::zombie_processes, reason = "wait4 reaps the child")]
pub fn run_measured(mut cmd: Command) -> (Run, u64) {
    use std::io::Read;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let (status, max_rss) = wait4(child.id());
    let run = Run {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    (run, max_rss)
}

/// Waits for child `pid`: its exit code (-1 if a signal ended it) and peak RSS in KiB.
#[allow(unsafe_code)]
fn wait4(pid: u32) -> (i32, u64) {
    let mut status = 0;
    // SAFETY: rusage is plain old data, and all zeroes is a valid value of it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own unwaited child, and both pointers are to live locals.
    let reaped = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(
        reaped,
        pid as libc::pid_t,
        "wait4 failed: {}",
        std::io::Error::last_os_error()
    );
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, usage.ru_maxrss as u64)
}

/// The `lifeboat` binary of this workspace, on one repository.
#[derive(Debug, Clone)]
pub struct Lifeboat(Tool);

/// Where cargo put the `lifeboat` binary: next to the test binary's `deps/` directory.
pub fn lifeboat_exe() -> PathBuf {
    if let Ok(p) = std::env::var("LIFEBOAT_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // Test binaries live in target/<profile>/deps, other binaries (testcluster, bench) in
    // target/<profile> itself, next to lifeboat.
    let dir = exe.parent().expect("binaries live in a directory");
    let bin = if dir.join("lifeboat").exists() {
        dir.join("lifeboat")
    } else {
        dir.parent()
            .expect("test binaries live in target/<profile>/deps")
            .join("lifeboat")
    };
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p lifeboat-cli`), as scripts/test does",
        bin.display()
    );
    bin
}

impl Lifeboat {
    /// lifeboat on `repo` (a path or URL).
    pub fn new(repo: impl Into<String>) -> Self {
        Self(Tool::new(lifeboat_exe(), "repo", repo.into()))
    }

    /// With extra environment (S3 credentials).
    pub fn with_env(self, env: &[(&str, String)]) -> Self {
        Self(self.0.with_env(env))
    }

    /// `lifeboat repo ARGS…`
    pub fn repo<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.0.run(args)
    }

    /// `lifeboat repo ARGS…`, and its peak resident set in KiB.
    pub fn repo_measured<I, S>(&self, args: I) -> (Run, u64)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_measured(self.0.command(args))
    }

    /// Backs up `path` and returns the new snapshot's id.
    pub fn backup(&self, path: &Path, extra: &[&str]) -> String {
        let mut args: Vec<std::ffi::OsString> =
            vec!["backup".into(), path.into(), "-o".into(), "json".into()];
        args.extend(extra.iter().map(Into::into));
        let run = self.repo(args).ok();
        run.json()["snapshot"]["id"]
            .as_str()
            .expect("snapshot.id in the backup summary")
            .to_string()
    }
}

/// The real restic 0.14 binary, on one repository.
#[derive(Debug, Clone)]
pub struct Restic(Tool);

impl Restic {
    /// restic on `repo`.
    pub fn new(repo: impl Into<String>) -> Self {
        let exe = std::env::var("RESTIC_BIN").unwrap_or_else(|_| "restic".into());
        Self(Tool::new(exe.into(), "--no-cache", repo.into()))
    }

    /// With extra environment (S3 credentials).
    pub fn with_env(self, env: &[(&str, String)]) -> Self {
        Self(self.0.with_env(env))
    }

    /// `restic ARGS…` without a local cache (our tests must see the repository itself).
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.0.run(args)
    }

    /// Backs up `path` and returns the new snapshot's id.
    pub fn backup(&self, path: &Path, extra: &[&str]) -> String {
        let mut args: Vec<std::ffi::OsString> = vec!["backup".into(), "--json".into(), path.into()];
        args.extend(extra.iter().map(Into::into));
        let run = self.run(args).ok();
        let summary = run
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message_type"] == "summary")
            .expect("restic prints a summary line");
        // restic 0.14 prints the short id in the summary: find the full one.
        let short = summary["snapshot_id"]
            .as_str()
            .expect("snapshot_id")
            .to_string();
        let listed = self.run(["snapshots", "--json"]).ok().json();
        listed
            .as_array()
            .expect("a JSON array")
            .iter()
            .filter_map(|s| s["id"].as_str())
            .find(|id| id.starts_with(&short))
            .expect("the new snapshot is listed")
            .to_string()
    }
}
