//! The backup tools under test and their command lines for each benchmark job.
//!
//! Each tool gets the same password through its own variable, a fixed host name (so that
//! parent detection by host and path behaves the same everywhere) and no local cache:
//! lifeboat has none, so restic and rustic run with `--no-cache` to compare like with like.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

/// The host name every snapshot is stored under.
pub(crate) const HOST: &str = "bench";
const PASSWORD: &str = "lifeboat-bench";

/// Variables that would point a tool at another repository, password or cache; cleared so
/// the command lines below are the whole configuration.
const CLEARED_ENV: &[&str] = &[
    "LIFEBOAT_PASSWORD",
    "LIFEBOAT_PASSWORD_FILE",
    "LIFEBOAT_REPOSITORY",
    "RESTIC_PASSWORD",
    "RESTIC_PASSWORD_FILE",
    "RESTIC_PASSWORD_COMMAND",
    "RESTIC_REPOSITORY",
    "RESTIC_REPOSITORY_FILE",
    "RESTIC_CACHE_DIR",
    "RESTIC_PACK_SIZE",
    "RESTIC_COMPRESSION",
    "RUSTIC_PASSWORD",
    "RUSTIC_PASSWORD_FILE",
    "RUSTIC_PASSWORD_COMMAND",
    "RUSTIC_REPOSITORY",
    "RUSTIC_CACHE_DIR",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Lifeboat,
    Restic,
    Rustic,
}

/// One tool with its executable and the private directories its runs use.
#[derive(Debug, Clone)]
pub(crate) struct Tool {
    pub(crate) kind: Kind,
    pub(crate) exe: PathBuf,
    /// Holds `XDG_CACHE_HOME`, `XDG_CONFIG_HOME` and `TMPDIR` for the tool's processes, so
    /// nothing in `$HOME` (a user's rustic profile, an old restic cache) affects the run.
    pub(crate) scratch: PathBuf,
}

/// One benchmark step, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Job {
    Init,
    BackupA,
    BackupC,
    BackupB,
    BackupBUnchanged,
    RestoreA,
    /// Only over the wire, where both datasets are restored.
    RestoreB,
    Check,
}

impl Job {
    pub(crate) const ALL: [Job; 7] = [
        Job::Init,
        Job::BackupA,
        Job::BackupC,
        Job::BackupB,
        Job::BackupBUnchanged,
        Job::RestoreA,
        Job::Check,
    ];

    /// The jobs run against an S3 repository through a shaped link: a first backup of each
    /// dataset, a restore of each, and a check that reads everything back.
    pub(crate) const OVER_THE_WIRE: [Job; 6] = [
        Job::Init,
        Job::BackupA,
        Job::BackupB,
        Job::RestoreA,
        Job::RestoreB,
        Job::Check,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Job::Init => "init",
            Job::BackupA => "backup A",
            Job::BackupC => "incremental C",
            Job::BackupB => "backup B",
            Job::BackupBUnchanged => "B unchanged",
            Job::RestoreA => "restore A",
            Job::RestoreB => "restore B",
            Job::Check => "check --read-data",
        }
    }

    /// The file name stem for the job's logs.
    pub(crate) fn slug(self) -> &'static str {
        match self {
            Job::Init => "init",
            Job::BackupA => "backup-a",
            Job::BackupC => "backup-c",
            Job::BackupB => "backup-b",
            Job::BackupBUnchanged => "backup-b-unchanged",
            Job::RestoreA => "restore-a",
            Job::RestoreB => "restore-b",
            Job::Check => "check",
        }
    }

    pub(crate) fn is_backup(self) -> bool {
        matches!(
            self,
            Job::BackupA | Job::BackupC | Job::BackupB | Job::BackupBUnchanged
        )
    }
}

/// A snapshot as `snapshots --json` lists it; lifeboat and restic share these field names.
#[derive(Debug, Deserialize)]
pub(crate) struct ListedSnapshot {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) parent: Option<String>,
}

impl Tool {
    pub(crate) fn name(&self) -> &'static str {
        match self.kind {
            Kind::Lifeboat => "lifeboat",
            Kind::Restic => "restic",
            Kind::Rustic => "rustic",
        }
    }

    /// A command for this tool against `repo` (a directory, or an `s3:` URL), with the
    /// environment set up; `args` follow the tool's global options.
    pub(crate) fn command<I, S>(&self, repo: impl AsRef<OsStr>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let repo = repo.as_ref();
        let mut cmd = Command::new(&self.exe);
        for var in CLEARED_ENV {
            cmd.env_remove(var);
        }
        cmd.env("XDG_CACHE_HOME", self.scratch.join("cache"))
            .env("XDG_CONFIG_HOME", self.scratch.join("config"))
            .env("TMPDIR", self.scratch.join("tmp"));
        match self.kind {
            Kind::Lifeboat => {
                cmd.env("LIFEBOAT_PASSWORD", PASSWORD);
                cmd.arg("repo").arg("--repo").arg(repo);
            }
            Kind::Restic => {
                cmd.env("RESTIC_PASSWORD", PASSWORD);
                cmd.arg("--repo").arg(repo).args(["--no-cache", "--quiet"]);
            }
            Kind::Rustic => {
                cmd.env("RUSTIC_PASSWORD", PASSWORD);
                cmd.arg("--repository")
                    .arg(repo)
                    .args(["--no-cache", "--no-progress"]);
            }
        }
        cmd.args(args);
        cmd
    }

    /// Creates the scratch directories the environment of [`Tool::command`] points at.
    pub(crate) fn make_scratch(&self) -> Result<()> {
        for sub in ["cache", "config", "tmp"] {
            let dir = self.scratch.join(sub);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(())
    }

    /// The command for `job`. `source` is the directory to back up, `snapshot` the snapshot
    /// to restore and `target` where to restore it.
    pub(crate) fn job(
        &self,
        job: Job,
        repo: impl AsRef<OsStr>,
        source: &Path,
        snapshot: &str,
        target: &Path,
    ) -> Command {
        let os = |p: &Path| p.as_os_str().to_owned();
        let args: Vec<std::ffi::OsString> = match (self.kind, job) {
            // lifeboat always writes format 2 (compressed); restic 0.14's default is 2 as
            // well, but say so explicitly so the comparison cannot drift with its default.
            (Kind::Restic, Job::Init) => {
                vec!["init".into(), "--repository-version".into(), "2".into()]
            }
            (_, Job::Init) => vec!["init".into()],
            (_, Job::BackupA | Job::BackupC | Job::BackupB | Job::BackupBUnchanged) => {
                vec!["backup".into(), os(source), "--host".into(), HOST.into()]
            }
            (Kind::Rustic, Job::RestoreA | Job::RestoreB) => {
                vec!["restore".into(), snapshot.into(), os(target)]
            }
            (_, Job::RestoreA | Job::RestoreB) => vec![
                "restore".into(),
                snapshot.into(),
                "--target".into(),
                os(target),
            ],
            (_, Job::Check) => vec!["check".into(), "--read-data".into()],
        };
        self.command(repo, args)
    }

    /// The command listing the repository's snapshots as JSON, where the output format is
    /// known (rustic groups its listing differently, so it is not parsed).
    pub(crate) fn snapshots_json(&self, repo: &Path) -> Option<Command> {
        match self.kind {
            Kind::Lifeboat => Some(self.command(repo, ["snapshots", "-o", "json"])),
            Kind::Restic => Some(self.command(repo, ["snapshots", "--json"])),
            Kind::Rustic => None,
        }
    }

    /// The tool's version line, for the header; failures are reported, not fatal.
    pub(crate) fn version(&self) -> String {
        let arg = if self.kind == Kind::Restic {
            "version"
        } else {
            "--version"
        };
        match Command::new(&self.exe).arg(arg).output() {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
            Ok(out) => format!("unknown ({})", out.status),
            Err(e) => format!("unknown ({e})"),
        }
    }
}

/// Finds `name` on `PATH`.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The ids of the snapshot files in a repository. Every restic-format repository names
/// each snapshot file by the snapshot's id, so this works for every tool without parsing
/// their output.
pub(crate) fn snapshot_ids(repo: &Path) -> Result<Vec<String>> {
    let dir = repo.join("snapshots");
    let mut ids = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        ids.push(entry.file_name().to_string_lossy().into_owned());
    }
    ids.sort();
    Ok(ids)
}

/// The one snapshot in `after` that is not in `before`.
pub(crate) fn new_snapshot(before: &[String], after: &[String]) -> Result<String> {
    let new: Vec<&String> = after.iter().filter(|id| !before.contains(id)).collect();
    match new.as_slice() {
        [one] => Ok((*one).clone()),
        _ => bail!(
            "expected one new snapshot after a backup, found {}",
            new.len()
        ),
    }
}
