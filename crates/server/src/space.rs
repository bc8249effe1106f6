//! Free space on the data disk, and what the storage does when it runs out.
//!
//! Two things can tell a node that its data disk is full, and either raises the
//! **NO_SPACE alarm** ([`DiskSpace::alarm`]):
//!
//! - **The monitor** ([`monitor`]) reads the file system's free space (`statvfs`) every
//!   `disk_check_interval` and raises the alarm while fewer than `disk_reserve_bytes`
//!   are free, so the node refuses new writes *before* a write can fail.
//! - **A write that failed for lack of space** (`ENOSPC`, `EDQUOT`): the storage does
//!   not hand the error to openraft (openraft 0.9 stops its core for good on any storage
//!   error, and the node would stay up but never serve again). It waits and retries the
//!   same write ([`DiskSpace::until_space`]), logging loudly, until space returns; the
//!   alarm stays up while any write waits. A full disk refused the write: the data never
//!   reached the file, so writing it again is the same write.
//!
//! While the alarm is up, a leader refuses new client writes with the `NO_SPACE` reason
//! (`proposer.rs`); reads, keepalives and writes that only free state (releases,
//! closes, expiries) still pass. Nothing needs a restart: the alarm goes down by itself
//! once space is back.
//!
//! **A failed sync is never retried** ([`stop_on_unknown_durability`]): after `fsync` or
//! `fdatasync` fails (or an `O_DSYNC` write, whose sync is part of the write), the kernel
//! may have dropped the dirty pages and marked them clean, so a second sync that
//! succeeds proves nothing (PostgreSQL's "fsyncgate"). What the disk holds is then
//! unknown to the running process; the node exits with a message naming the file, and
//! recovery at the next start reads what the disk really holds (a supervisor restarts
//! it). A Raft node that stops is safe: the others go on without it.

use crate::limits::{
    DEFAULT_DISK_CHECK_INTERVAL, DEFAULT_DISK_RESERVE_BYTES, SPACE_RETRY_WAIT_FIRST,
    SPACE_RETRY_WAIT_MAX, SPACE_STILL_WAITING_LOG_EVERY,
};
use crate::status::DiskStatus;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How the data disk's free space is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceOptions {
    /// Below this many free bytes the NO_SPACE alarm is up (0: only a write the full disk
    /// refused raises it); `disk_reserve_bytes` in the configuration.
    pub reserve_bytes: u64,
    /// How often the free space is read; `disk_check_interval` in the configuration.
    pub check_interval: Duration,
}

impl Default for SpaceOptions {
    fn default() -> Self {
        SpaceOptions {
            reserve_bytes: DEFAULT_DISK_RESERVE_BYTES,
            check_interval: DEFAULT_DISK_CHECK_INTERVAL,
        }
    }
}

/// What a handle of the simulated disk (`store/sim.rs`) from before a power cut answers:
/// that process is gone. Defined here, below the store, because a "stop on unknown
/// durability" after a simulated power cut does not stop the test process.
#[cfg(feature = "test-support")]
pub(crate) const POWER_LOST: &str =
    "the simulated disk lost power: this handle belongs to the process before";

/// The exit status of a node stopped by a storage error it cannot recover from in
/// process (`EX_IOERR` of `sysexits.h`).
pub const EXIT_STORAGE_FAILED: i32 = 74;

/// What the node knows about its data disk's space, shared by the monitor, the storage
/// (which reports writes waiting for space) and the write path (which refuses writes
/// while the alarm is up).
#[derive(Debug, Default)]
pub struct DiskSpace {
    reserve_bytes: AtomicU64,
    free_bytes: AtomicU64,
    total_bytes: AtomicU64,
    /// Whether the monitor has read the file system at least once.
    measured: AtomicBool,
    /// Free space is below the reserve (the monitor's view).
    low: AtomicBool,
    /// Storage writes waiting for space right now.
    waiting_writes: AtomicU64,
    /// Writes that waited for space since start-up (each counted once).
    writes_refused_total: AtomicU64,
    /// The last write refused for lack of space: what and which file.
    last_refused: Mutex<Option<String>>,
}

impl DiskSpace {
    /// Space accounting with `reserve_bytes` kept free (0: only a failed write raises the
    /// alarm).
    pub fn new(reserve_bytes: u64) -> DiskSpace {
        let space = DiskSpace::default();
        space.reserve_bytes.store(reserve_bytes, Ordering::Relaxed);
        space
    }

    /// Change the reserve (the node sets its configured one on the store's accounting).
    pub fn set_reserve_bytes(&self, reserve_bytes: u64) {
        self.reserve_bytes.store(reserve_bytes, Ordering::Relaxed);
        let free = self.free_bytes.load(Ordering::Relaxed);
        if self.measured.load(Ordering::Relaxed) {
            self.low.store(free < reserve_bytes, Ordering::Relaxed);
        }
    }

    /// Whether the NO_SPACE alarm is up: free space is below the reserve, or a storage
    /// write is waiting for space.
    pub fn alarm(&self) -> bool {
        self.low.load(Ordering::Relaxed) || self.waiting_writes.load(Ordering::Relaxed) > 0
    }

    /// What the status shows.
    pub fn status(&self) -> DiskStatus {
        let free_bytes = self.free_bytes.load(Ordering::Relaxed);
        let reserve_bytes = self.reserve_bytes.load(Ordering::Relaxed);
        let waiting = self.waiting_writes.load(Ordering::Relaxed);
        let low = self.low.load(Ordering::Relaxed);
        let reason = if waiting > 0 {
            let last = self
                .last_refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default();
            Some(format!(
                "{waiting} storage write(s) wait for space on the data disk ({last})"
            ))
        } else if low {
            Some(format!(
                "{free_bytes} bytes free on the data disk, below the reserve of \
                 {reserve_bytes} bytes"
            ))
        } else {
            None
        };
        DiskStatus {
            no_space_alarm: reason.is_some(),
            free_bytes,
            total_bytes: self.total_bytes.load(Ordering::Relaxed),
            reserve_bytes,
            writes_waiting_for_space: waiting,
            writes_refused_for_space_total: self.writes_refused_total.load(Ordering::Relaxed),
            reason,
        }
    }

    /// Record a reading of the file system: `free` bytes available of `total`. Logs when
    /// the alarm goes up or down because of it.
    pub fn record(&self, free: u64, total: u64, dir: &Path) {
        self.free_bytes.store(free, Ordering::Relaxed);
        self.total_bytes.store(total, Ordering::Relaxed);
        self.measured.store(true, Ordering::Relaxed);
        let reserve = self.reserve_bytes.load(Ordering::Relaxed);
        let low = free < reserve;
        let was_low = self.low.swap(low, Ordering::Relaxed);
        if low && !was_low {
            tracing::error!(
                data_dir = %dir.display(),
                free_bytes = free,
                reserve_bytes = reserve,
                "NO_SPACE alarm raised: free space on the data disk is below the reserve; \
                 this node refuses new writes while it leads (reads, keepalives and \
                 releases still work) until space is freed"
            );
        } else if was_low && !low {
            tracing::warn!(
                data_dir = %dir.display(),
                free_bytes = free,
                reserve_bytes = reserve,
                "NO_SPACE alarm cleared: free space on the data disk is back above the \
                 reserve; writes are accepted again"
            );
        }
    }

    /// Read the free space of the file system holding `dir` and [`record`](Self::record)
    /// it.
    ///
    /// # Errors
    /// `statvfs` failed (e.g. the directory is gone).
    pub fn measure(&self, dir: &Path) -> std::io::Result<()> {
        let stat = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        let total = stat.f_blocks.saturating_mul(stat.f_frsize);
        self.record(free, total, dir);
        Ok(())
    }

    /// Run `attempt` until it succeeds or fails for a reason other than a full disk
    /// (`no_space` tells which). While it fails for lack of space the alarm is up, the
    /// failure is logged (at once, then every 30 s), and it is tried again after a wait
    /// that doubles from 20 ms to 1 s. `attempt` must be safe to repeat: it is, for a
    /// write that a full disk refused (the data never reached the file).
    ///
    /// Blocks the calling thread: call it on a blocking-pool thread.
    ///
    /// # Errors
    /// The first error that is not a lack of space.
    pub fn until_space<T, E: std::fmt::Display>(
        &self,
        what: &str,
        path: &Path,
        no_space: impl Fn(&E) -> bool,
        mut attempt: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        let mut waiting: Option<(Instant, Instant)> = None;
        let mut wait = SPACE_RETRY_WAIT_FIRST;
        let result = loop {
            match attempt() {
                Err(error) if no_space(&error) => {
                    let now = Instant::now();
                    match &mut waiting {
                        None => {
                            waiting = Some((now, now));
                            self.waiting_writes.fetch_add(1, Ordering::Relaxed);
                            self.writes_refused_total.fetch_add(1, Ordering::Relaxed);
                            *self.last_refused.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(format!("{what}: {}", path.display()));
                            tracing::error!(
                                file = %path.display(),
                                %error,
                                "NO_SPACE: {what} failed: the data disk is full. The write \
                                 is kept and tried again until space is freed; meanwhile \
                                 this node refuses new writes"
                            );
                        }
                        Some((since, logged)) => {
                            if now.duration_since(*logged) >= SPACE_STILL_WAITING_LOG_EVERY {
                                *logged = now;
                                tracing::error!(
                                    file = %path.display(),
                                    %error,
                                    waited_s = now.duration_since(*since).as_secs(),
                                    "NO_SPACE: {what} still waits for space on the data disk"
                                );
                            }
                        }
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(SPACE_RETRY_WAIT_MAX);
                }
                other => break other,
            }
        };
        if let Some((since, _)) = waiting {
            self.waiting_writes.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(
                file = %path.display(),
                waited_ms = since.elapsed().as_millis() as u64,
                succeeded = result.is_ok(),
                "{what}: space returned, the write went through"
            );
        }
        result
    }
}

/// Whether `error` says the disk (or the user's quota) is full.
pub fn io_is_no_space(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(code) if code == libc::ENOSPC || code == libc::EDQUOT)
        || matches!(
            error.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
}

/// Stop the process after a sync (or a synchronous write) of `path` failed: whether the
/// data reached the disk is unknown and a retry cannot tell (see the module docs). The
/// message names the file and what failed, on the log and on standard error; the exit
/// status is [`EXIT_STORAGE_FAILED`]. Nothing else runs after it (no destructor writes
/// to the data directory on the way out).
///
/// Returns (the error it was given) only on the simulated disk of the tests, whose power
/// cut ends one node instance, not the process the test runs in: the error goes to
/// Raft, which stops that node's core.
pub fn stop_on_unknown_durability<E: std::fmt::Display>(path: &Path, what: &str, error: E) -> E {
    let message = format!(
        "{what} of {} failed: {error}. Whether the data reached the disk is unknown, and \
         syncing again cannot tell (the kernel may have dropped the unwritten pages), so \
         the node stops rather than go on as if it were safe; restart it (recovery reads \
         what the disk really holds)",
        path.display()
    );
    tracing::error!(file = %path.display(), "fatal storage error: {message}");
    #[cfg(feature = "test-support")]
    if message.contains(POWER_LOST) {
        return error;
    }
    eprintln!("fencelock: fatal storage error: {message}");
    std::process::exit(EXIT_STORAGE_FAILED)
}

/// Watch the free space of the file system holding `dir` every `interval` until
/// `stopped`, recording it in `space`.
pub async fn monitor(
    space: std::sync::Arc<DiskSpace>,
    dir: PathBuf,
    interval: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let (space_now, dir_now) = (space.clone(), dir.clone());
        let measured = tokio::task::spawn_blocking(move || space_now.measure(&dir_now)).await;
        match measured {
            Ok(Ok(())) => failing = false,
            Ok(Err(error)) if !failing => {
                failing = true;
                tracing::warn!(data_dir = %dir.display(), %error, "cannot read the data disk's free space");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn the_alarm_follows_the_reserve_and_waiting_writes() {
        let space = DiskSpace::new(100);
        let dir = Path::new("data");
        assert!(!space.alarm(), "no alarm before the first reading");
        space.record(99, 1000, dir);
        assert!(space.alarm());
        assert!(space.status().reason.unwrap().contains("below the reserve"));
        space.record(100, 1000, dir);
        assert!(!space.alarm());
        assert_eq!(space.status().reason, None);
        space.set_reserve_bytes(0);
        space.record(0, 1000, dir);
        assert!(!space.alarm(), "a reserve of 0 never raises it by itself");
    }

    #[test]
    fn a_write_refused_for_space_is_retried_with_the_alarm_up() {
        let space = DiskSpace::new(0);
        let mut tries = 0;
        let result: Result<u32, Error> =
            space.until_space("a test write", Path::new("f"), io_is_no_space, || {
                tries += 1;
                if tries < 3 {
                    assert!(
                        tries == 1 || space.alarm(),
                        "the alarm is up while it waits"
                    );
                    Err(Error::from(ErrorKind::StorageFull))
                } else {
                    Ok(tries)
                }
            });
        assert_eq!(result.unwrap(), 3);
        assert!(
            !space.alarm(),
            "the alarm goes down once the write went through"
        );
        assert_eq!(space.status().writes_refused_for_space_total, 1);
        let other: Result<(), Error> =
            space.until_space("w", Path::new("f"), io_is_no_space, || {
                Err(Error::other("EIO"))
            });
        assert!(other.is_err(), "any other error is returned at once");
    }

    #[test]
    fn enospc_and_edquot_are_lack_of_space() {
        assert!(io_is_no_space(&Error::from_raw_os_error(libc::ENOSPC)));
        assert!(io_is_no_space(&Error::from_raw_os_error(libc::EDQUOT)));
        assert!(!io_is_no_space(&Error::from_raw_os_error(libc::EIO)));
    }
}
