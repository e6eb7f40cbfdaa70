//! Repository locks, exactly as restic keeps them, so lifeboat and restic can share a
//! repository safely.
//!
//! A lock is an encrypted JSON file `locks/<id>` (time, exclusive, hostname, username, pid,
//! uid, gid). Backup, restore and check take shared locks; forget and prune take exclusive
//! ones. Two locks conflict when either is exclusive. restic's staleness rule (0.14): a lock is
//! stale when its time is more than 30 minutes old, or when it was written on this host by a
//! process that no longer exists. Stale locks never conflict and are removed when seen; a live
//! conflicting lock fails the operation with [`Error::Locked`] naming its holder (or, with a wait
//! option, is waited for up to that long).
//!
//! Acquiring follows restic: look for conflicts, write our lock, look again (a concurrent
//! writer may have raced us), and withdraw ours if it now conflicts. While held, the lock is
//! refreshed every 5 minutes (restic's interval) by writing a new file and removing the old. If
//! refreshing keeps failing until the lock is close to stale, the operation is cancelled: others
//! would soon treat our lock as stale, and a prune could then delete packs we still reference.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::crypto::{self, MasterKey};
use crate::error::{Error, Result};
use crate::id::hash;
use crate::store::{FileKind, Store, StoreError};

/// The contents of a lock file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub time: jiff::Timestamp,
    pub exclusive: bool,
    pub hostname: String,
    pub username: String,
    pub pid: i64,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

impl fmt::Display for LockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lock of {}@{} (pid {}) since {}",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared"
            },
            self.username,
            self.hostname,
            self.pid,
            self.time.strftime("%Y-%m-%d %H:%M:%S UTC"),
        )
    }
}

impl LockInfo {
    fn ours(exclusive: bool) -> Self {
        let uid = nix::unistd::getuid();
        let username = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| uid.to_string());
        Self {
            time: jiff::Timestamp::now(),
            exclusive,
            hostname: hostname(),
            username,
            pid: i64::from(std::process::id()),
            uid: uid.as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        }
    }

    /// restic's rule: older than `stale_after`, or written on this host by a dead process.
    pub fn is_stale(&self, stale_after: Duration, now: jiff::Timestamp) -> bool {
        let age = now.duration_since(self.time);
        if age > jiff::SignedDuration::try_from(stale_after).unwrap_or(jiff::SignedDuration::MAX) {
            return true;
        }
        if self.hostname != hostname() {
            return false;
        }
        let Ok(pid) = i32::try_from(self.pid) else {
            return true;
        };
        // Signal 0 checks for existence without disturbing the process; EPERM means it exists.
        !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Ok(()) | Err(nix::errno::Errno::EPERM)
        )
    }

    fn conflicts_with(&self, exclusive: bool) -> bool {
        self.exclusive || exclusive
    }
}

fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// How locks are taken and kept.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// How long to wait for a conflicting lock to go away; zero fails at once.
    pub wait: Duration,
    /// How often a held lock is rewritten (restic: 5 minutes).
    pub refresh_interval: Duration,
    /// Age after which a lock is stale (restic: 30 minutes).
    pub stale_after: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            wait: Duration::ZERO,
            refresh_interval: Duration::from_secs(5 * 60),
            stale_after: Duration::from_secs(30 * 60),
        }
    }
}

/// Reads, writes and removes the lock files of one repository.
#[derive(Debug, Clone)]
pub(crate) struct Locks {
    store: Store,
    key: MasterKey,
    version: u32,
}

/// A lock file found in the repository.
#[derive(Debug, Clone)]
pub(crate) struct FoundLock {
    pub name: String,
    pub info: LockInfo,
}

impl Locks {
    pub(crate) fn new(store: Store, key: MasterKey, version: u32) -> Self {
        Self {
            store,
            key,
            version,
        }
    }

    async fn write(&self, info: &LockInfo) -> Result<String, StoreError> {
        let json = serde_json::to_vec(info).expect("a lock always serialises");
        let sealed = self.key.encrypt(&crypto::pack_json(self.version, &json));
        let name = hex::encode(hash(&sealed));
        self.store
            .write(FileKind::Lock, &name, vec![sealed.into()])
            .await?;
        Ok(name)
    }

    /// Every readable lock. Locks that vanish while we read them are skipped; locks that do not
    /// decrypt are skipped too (restic treats them as invalid, not as conflicts).
    pub(crate) async fn list(&self) -> Result<Vec<FoundLock>, StoreError> {
        self.list_except(None).await
    }

    /// The lock files but `own` (which the caller wrote: reading it back would cost a round
    /// trip), read together.
    async fn list_except(&self, own: Option<&str>) -> Result<Vec<FoundLock>, StoreError> {
        use futures::{StreamExt, TryStreamExt};
        let names = self.store.list(FileKind::Lock).await?;
        let read: Vec<Option<FoundLock>> = futures::stream::iter(names)
            .filter(|(name, _)| std::future::ready(Some(name.as_str()) != own))
            .map(|(name, _)| async move {
                let data = match self.store.read(FileKind::Lock, &name).await {
                    Ok(d) => d,
                    Err(StoreError::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(e),
                };
                let info = self
                    .key
                    .decrypt(&data)
                    .ok()
                    .and_then(|plain| crypto::unpack_json(&plain))
                    .and_then(|json| serde_json::from_slice::<LockInfo>(&json).ok());
                if info.is_none() {
                    log::warn!("ignoring lock file {name}: it cannot be read");
                }
                Ok(info.map(|info| FoundLock { name, info }))
            })
            .buffered(8)
            .try_collect()
            .await?;
        Ok(read.into_iter().flatten().collect())
    }

    /// The first live lock (other than `own`) that conflicts; stale ones are removed.
    async fn conflict(
        &self,
        exclusive: bool,
        own: Option<&str>,
        opts: &LockOptions,
    ) -> Result<Option<LockInfo>, StoreError> {
        let now = jiff::Timestamp::now();
        for lock in self.list_except(own).await? {
            if lock.info.is_stale(opts.stale_after, now) {
                log::info!("removing stale lock {}: {}", lock.name, lock.info);
                self.store.remove(FileKind::Lock, &lock.name).await?;
                continue;
            }
            if lock.info.conflicts_with(exclusive) {
                return Ok(Some(lock.info));
            }
        }
        Ok(None)
    }

    /// Takes a lock, refreshed in the background until released. `op` is cancelled if the lock
    /// cannot be kept fresh.
    pub(crate) async fn acquire(
        &self,
        exclusive: bool,
        opts: &LockOptions,
        op: &CancellationToken,
    ) -> Result<LockGuard> {
        let deadline = tokio::time::Instant::now() + opts.wait;
        let store_err = |source| Error::store(self.store.location(), source);
        // The first attempt writes its lock at once and then looks for others, as restic does
        // (of two processes doing so, at least one sees the other): one round trip fewer before
        // the operation starts. Once a conflict was seen, later attempts look first, so a
        // process waiting for a long prune does not write and remove a lock every second.
        let mut look_first = false;
        loop {
            let seen = if look_first {
                self.conflict(exclusive, None, opts)
                    .await
                    .map_err(store_err)?
            } else {
                None
            };
            look_first = true;
            let holder = match seen {
                Some(holder) => Some(holder),
                None => {
                    let name = self
                        .write(&LockInfo::ours(exclusive))
                        .await
                        .map_err(store_err)?;
                    match self.conflict(exclusive, Some(&name), opts).await {
                        Ok(None) => {
                            return Ok(self.guard(name, exclusive, opts.clone(), op.clone()));
                        }
                        Ok(Some(holder)) => {
                            self.store
                                .remove(FileKind::Lock, &name)
                                .await
                                .map_err(store_err)?;
                            Some(holder)
                        }
                        Err(e) => {
                            let _ = self.store.remove(FileKind::Lock, &name).await;
                            return Err(store_err(e));
                        }
                    }
                }
            };
            let holder = holder.expect("every path without a lock found a holder");
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Locked {
                    location: self.store.location().to_string(),
                    holder: Box::new(holder),
                });
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1).min(opts.wait)) => {}
                () = op.cancelled() => return Err(Error::Cancelled),
            }
        }
    }

    fn guard(
        &self,
        name: String,
        exclusive: bool,
        opts: LockOptions,
        op: CancellationToken,
    ) -> LockGuard {
        let current = Arc::new(Mutex::new(name));
        let stop = CancellationToken::new();
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn(refresh(
            self.clone(),
            current.clone(),
            exclusive,
            opts,
            stop.clone(),
            op,
            lost.clone(),
        ));
        LockGuard {
            locks: self.clone(),
            current,
            stop,
            task: Some(task),
            lost,
        }
    }

    /// Removes stale locks (all locks with `all`); returns how many were removed.
    pub(crate) async fn unlock(&self, all: bool, opts: &LockOptions) -> Result<usize, StoreError> {
        let now = jiff::Timestamp::now();
        let mut removed = 0;
        for lock in self.list().await? {
            if all || lock.info.is_stale(opts.stale_after, now) {
                self.store.remove(FileKind::Lock, &lock.name).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

async fn refresh(
    locks: Locks,
    current: Arc<Mutex<String>>,
    exclusive: bool,
    opts: LockOptions,
    stop: CancellationToken,
    op: CancellationToken,
    lost: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut last_ok = tokio::time::Instant::now();
    // Give up well before others may consider the lock stale: at 5/6 of the stale age.
    let give_up = opts.stale_after.mul_f64(5.0 / 6.0);
    let mut wait = opts.refresh_interval;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        match locks.write(&LockInfo::ours(exclusive)).await {
            Ok(new_name) => {
                let old = std::mem::replace(
                    &mut *current
                        .lock()
                        .expect("the lock name mutex is never poisoned"),
                    new_name,
                );
                if let Err(e) = locks.store.remove(FileKind::Lock, &old).await {
                    log::warn!("could not remove the superseded lock {old}: {e}");
                }
                last_ok = tokio::time::Instant::now();
                wait = opts.refresh_interval;
            }
            Err(e) => {
                log::warn!("refreshing the repository lock failed: {e}");
                if last_ok.elapsed() >= give_up {
                    lost.store(true, std::sync::atomic::Ordering::SeqCst);
                    op.cancel();
                    return;
                }
                // Retry sooner than the normal interval while the lock is at risk.
                wait = (opts.refresh_interval / 10).max(Duration::from_millis(100));
            }
        }
    }
}

/// A held lock. Call [`LockGuard::release`]; dropping it removes the lock in the background.
#[derive(Debug)]
pub(crate) struct LockGuard {
    locks: Locks,
    current: Arc<Mutex<String>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    lost: Arc<std::sync::atomic::AtomicBool>,
}

impl LockGuard {
    /// Whether the lock could not be kept fresh (the operation was cancelled because of it).
    pub(crate) fn was_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Where the lock is.
    #[cfg(feature = "testing")]
    pub(crate) fn location(&self) -> String {
        self.locks.store.location().to_string()
    }

    /// Stops refreshing and removes the lock file.
    pub(crate) async fn release(mut self) -> Result<(), StoreError> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let name = self
            .current
            .lock()
            .expect("the lock name mutex is never poisoned")
            .clone();
        self.locks.store.remove(FileKind::Lock, &name).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        self.stop.cancel();
        task.abort();
        let name = self.current.lock().map(|n| n.clone()).unwrap_or_default();
        let store = self.locks.store.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = store.remove(FileKind::Lock, &name).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::Location;

    fn locks(name: &str) -> Locks {
        let store = Store::open(&Location::Memory { name: name.into() }, &Default::default())
            .expect("memory store");
        Locks::new(store, MasterKey::random(), 2)
    }

    fn foreign(exclusive: bool, age: Duration) -> LockInfo {
        LockInfo {
            time: jiff::Timestamp::now() - jiff::SignedDuration::try_from(age).expect("small"),
            exclusive,
            hostname: "another-host".into(),
            username: "restic".into(),
            pid: 4242,
            uid: 0,
            gid: 0,
        }
    }

    #[tokio::test]
    async fn shared_locks_coexist_and_exclusive_conflicts_name_the_holder() {
        let l = locks("lock-coexist");
        let op = CancellationToken::new();
        let opts = LockOptions::default();
        let a = l.acquire(false, &opts, &op).await.expect("first shared");
        let b = l.acquire(false, &opts, &op).await.expect("second shared");
        let err = l
            .acquire(true, &opts, &op)
            .await
            .expect_err("exclusive must conflict");
        assert!(
            matches!(err, Error::Locked { ref holder, .. } if !holder.exclusive),
            "{err}"
        );
        assert!(err.to_string().contains("a shared lock of"), "{err}");
        a.release().await.expect("release");
        b.release().await.expect("release");
        assert!(
            l.list().await.expect("list").is_empty(),
            "release removes the files"
        );
        let x = l
            .acquire(true, &opts, &op)
            .await
            .expect("exclusive once free");
        assert!(matches!(
            l.acquire(false, &opts, &op).await,
            Err(Error::Locked { .. })
        ));
        x.release().await.expect("release");
    }

    #[tokio::test]
    async fn stale_locks_are_removed_and_live_foreign_ones_honoured() {
        let l = locks("lock-stale");
        let op = CancellationToken::new();
        let opts = LockOptions::default();
        l.write(&foreign(true, Duration::from_secs(31 * 60)))
            .await
            .expect("write");
        let g = l
            .acquire(true, &opts, &op)
            .await
            .expect("stale exclusive lock is ignored");
        assert_eq!(
            l.list().await.expect("list").len(),
            1,
            "the stale lock was removed"
        );
        g.release().await.expect("release");

        l.write(&foreign(true, Duration::from_secs(60)))
            .await
            .expect("write");
        assert!(matches!(
            l.acquire(false, &opts, &op).await,
            Err(Error::Locked { .. })
        ));
        assert_eq!(
            l.unlock(false, &opts).await.expect("unlock"),
            0,
            "a live lock is not stale"
        );
        assert_eq!(l.unlock(true, &opts).await.expect("unlock"), 1);
    }

    #[tokio::test]
    async fn a_lock_of_a_dead_process_on_this_host_is_stale() {
        let mut info = LockInfo::ours(true);
        assert!(!info.is_stale(Duration::from_secs(1800), jiff::Timestamp::now()));
        // pid_max on Linux is at most 2^22: this pid cannot be running.
        info.pid = 1 << 23;
        assert!(info.is_stale(Duration::from_secs(1800), jiff::Timestamp::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn held_lock_is_refreshed_with_a_new_file() {
        let l = locks("lock-refresh");
        let op = CancellationToken::new();
        let g = l
            .acquire(false, &LockOptions::default(), &op)
            .await
            .expect("lock");
        let before = l.list().await.expect("list");
        tokio::time::sleep(Duration::from_secs(5 * 60 + 1)).await;
        let after = l.list().await.expect("list");
        assert_eq!(
            after.len(),
            1,
            "the old file is removed after the new one is written"
        );
        assert_ne!(before[0].name, after[0].name);
        assert!(after[0].info.time > before[0].info.time);
        g.release().await.expect("release");
    }

    #[tokio::test]
    async fn waiting_for_a_lock_times_out_with_the_holder() {
        let l = locks("lock-wait");
        let op = CancellationToken::new();
        l.write(&foreign(true, Duration::from_secs(5)))
            .await
            .expect("write");
        let opts = LockOptions {
            wait: Duration::from_millis(300),
            ..Default::default()
        };
        let err = l.acquire(false, &opts, &op).await.expect_err("times out");
        assert!(err.to_string().contains("restic@another-host"), "{err}");
    }
}
