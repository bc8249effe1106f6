//! Offline verification of a data directory (`fencelock check-data DIR`), without
//! modifying it.
//!
//! [`check_data_dir`] verifies what start-up verifies, and a little more:
//!
//! - the log database (`raft-log.redb`): copied to a temporary directory, and the copy
//!   opened and verified exactly as start-up does (a read-only open would skip parts of
//!   the file that opening for writing reads, and cannot recover a file left by a crash);
//!   a read-only probe of the original only adds notes (not closed cleanly, in use by a
//!   running node). Every meta record (format marker, vote, committed, last purged) and
//!   every entry is verified (checksum, decoding, index), and the entries must be
//!   contiguous from `last_purged + 1`. Every bad entry is listed, where start-up stops at
//!   the first. The report says what a node would do at start-up (see
//!   [`crate::store::log`]): start, drop a damaged uncommitted tail, or refuse;
//! - the write-ahead file (`raft-log.wal`), copied along and judged as start-up judges it
//!   ([`crate::store::wal`]): its header, every record of the generation the log database
//!   names, its entries continuing the database's, damage in the middle, and the
//!   committed log id against what the two hold together;
//! - every snapshot file in `snapshots/` (not just the newest one start-up loads):
//!   magic, version, length, CRC-32, decoding, the file name against the last log id it
//!   holds, and [`fencelock_core::State::check_invariants`] on the decoded state;
//! - that the newest good snapshot covers everything the log has purged.
//!
//! Problems name the file and the log index, the meta record, or the byte offset in a
//! snapshot file. A log index is the locator inside the log: redb is a B-tree file, so a
//! byte offset there says little; a damaged B-tree that redb itself refuses is reported
//! against the file.

use super::StoreError;
use super::disk::Disk;
use super::log::{
    EntryTrouble, LOG_FILE_NAME, Scan, close_quietly, guarded, missing_wal, open_and_scan, plan_wal,
};
use super::snapshot::{self, TMP_SUFFIX};
use super::wal::{self, WAL_FILE_NAME};
use crate::limits::DEFAULT_LOG_PAGE_CACHE_BYTES;
use crate::raft::{LogId, NodeId};
use openraft::Vote;
use redb::{DatabaseError, ReadOnlyDatabase};
use std::fmt;
use std::path::{Path, PathBuf};

pub use super::snapshot::SNAPSHOT_DIR_NAME;

/// Where in a file a problem is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// The file as a whole (cannot be opened, is missing, ...).
    File,
    /// A log entry, by index.
    Index(u64),
    /// A meta record of the log database, by key.
    Record(String),
    /// A byte offset in a snapshot file.
    Offset(u64),
}

/// One thing found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file it is in.
    pub file: PathBuf,
    /// Where in the file.
    pub location: Location,
    /// What is wrong.
    pub message: String,
}

/// What was found in the log database.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogCheck {
    /// The database file.
    pub path: PathBuf,
    /// Whether it could be opened and read at all.
    pub readable: bool,
    /// Entries read and verified (good or bad).
    pub entries_checked: u64,
    /// The first index present.
    pub first_index: Option<u64>,
    /// The last index present.
    pub last_index: Option<u64>,
    /// The vote, when its record verified.
    pub vote: Option<Vote<NodeId>>,
    /// The committed log id, when its record verified.
    pub committed: Option<LogId>,
    /// The last purged log id, when its record verified.
    pub last_purged: Option<LogId>,
    /// What a node would do at start-up with this log, in words.
    pub start_up: Option<String>,
    /// The write-ahead file, when there is one.
    pub wal: Option<WalCheck>,
}

/// What was found in the write-ahead file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalCheck {
    /// The file.
    pub path: PathBuf,
    /// The generation the log database names (0: none yet).
    pub generation: u64,
    /// Whether the file could be read and has its header.
    pub readable: bool,
    /// Records of that generation that verified.
    pub records: usize,
    /// Entries beyond the log database's that start-up moves into it.
    pub entries_to_move: usize,
    /// Where the records end, and why.
    pub records_end: String,
}

/// What was found in one snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotCheck {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// The last log id it holds (when it decoded).
    pub last_log_id: Option<LogId>,
    /// Whether it passed every check.
    pub ok: bool,
    /// Whether it is the newest by name: the one start-up loads.
    pub newest: bool,
}

/// The result of [`check_data_dir`]. Its `Display` is the report `check-data` prints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// The directory checked.
    pub data_dir: PathBuf,
    /// The log database.
    pub log: LogCheck,
    /// Every snapshot file, oldest first.
    pub snapshots: Vec<SnapshotCheck>,
    /// Everything wrong; empty when the directory is clean.
    pub problems: Vec<Problem>,
    /// Remarks that are not problems (a copy was checked, leftover temporary files, ...).
    pub notes: Vec<String>,
}

impl CheckReport {
    /// No problems were found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, file: &Path, location: Location, message: impl Into<String>) {
        self.problems.push(Problem {
            file: file.to_owned(),
            location,
            message: message.into(),
        });
    }
}

/// Verify the data directory `data_dir` without modifying it.
pub fn check_data_dir(data_dir: &Path) -> CheckReport {
    let mut report = CheckReport {
        data_dir: data_dir.to_owned(),
        log: LogCheck {
            path: data_dir.join(LOG_FILE_NAME),
            ..LogCheck::default()
        },
        ..CheckReport::default()
    };
    if !data_dir.is_dir() {
        report.problem(data_dir, Location::File, "not a directory");
        return report;
    }
    let newest_snapshot = check_snapshots(&mut report);
    check_log(&mut report, newest_snapshot.flatten().map(|id| id.index));
    let log_path = report.log.path.clone();
    if let Some(purged) = report.log.last_purged {
        let covered = newest_snapshot.flatten().map(|id| id.index);
        if covered.is_none_or(|covered| covered < purged.index) {
            report.problem(
                &log_path,
                Location::Record(super::log::KEY_LAST_PURGED.to_owned()),
                format!(
                    "the log was purged up to {purged}, but {}: those entries exist nowhere \
                     on this node",
                    match covered {
                        Some(index) => format!("the newest good snapshot ends at index {index}"),
                        None => "there is no good snapshot".to_owned(),
                    }
                ),
            );
        }
    }
    report
}

/// Notes about the state of the file, from a read-only open (which never changes it).
fn probe(report: &mut CheckReport) {
    let path = report.log.path.clone();
    let note = match guarded(&path, "opening", || Ok(ReadOnlyDatabase::open(&path))) {
        Ok(Err(DatabaseError::RepairAborted)) => {
            "was not closed cleanly (a crash, or damage): redb recovers it at start-up; the \
             check ran on a copy, the file itself is unchanged"
        }
        Ok(Err(DatabaseError::DatabaseAlreadyOpen)) => {
            "is open in another process (a running node?): the check ran on a copy taken \
             now, which may be inconsistent while the node writes; stop the node for an \
             exact answer"
        }
        _ => return,
    };
    report.notes.push(format!("{} {note}", path.display()));
}

/// A temporary copy of the log database and, when there is one, the write-ahead file.
fn copy_of(path: &Path, wal_path: &Path) -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(path, dir.path().join(LOG_FILE_NAME))?;
    if wal_path.exists() {
        std::fs::copy(wal_path, dir.path().join(WAL_FILE_NAME))?;
    }
    Ok(dir)
}

fn check_log(report: &mut CheckReport, snapshot_index: Option<u64>) {
    let path = report.log.path.clone();
    if !path.is_file() {
        report.problem(
            &path,
            Location::File,
            "missing: no log database (the vote and the log are lost, or this is not a \
             fencelock data directory)",
        );
        return;
    }
    probe(report);
    // Start-up opens the file for writing, which reads parts of it a read-only open does
    // not (and lets redb recover it): rehearse exactly that on a copy.
    let wal_path = path.with_file_name(WAL_FILE_NAME);
    let copy = match copy_of(&path, &wal_path) {
        Ok(copy) => copy,
        Err(e) => {
            report.problem(
                &path,
                Location::File,
                format!("cannot copy it to check: {e}"),
            );
            return;
        }
    };
    let scan = match open_and_scan(
        &Disk::real(),
        &copy.path().join(LOG_FILE_NAME),
        &path,
        snapshot_index,
        DEFAULT_LOG_PAGE_CACHE_BYTES,
    ) {
        Ok((db, scan)) => {
            let wal_copy = copy.path().join(WAL_FILE_NAME);
            if wal_copy.exists() {
                check_wal(report, &scan, &wal_copy, &wal_path, snapshot_index);
            } else if let Some(generation) = scan.wal_generation {
                let e = missing_wal(&wal_path, &path, generation);
                report.problem(&wal_path, Location::File, e.to_string());
                report.log.start_up = Some(format!("refuses to start: {e}"));
            }
            if let Err(message) = close_quietly(db) {
                report.problem(
                    &path,
                    Location::File,
                    format!("redb failed closing a copy of it (the file is damaged): {message}"),
                );
            }
            scan
        }
        Err(e) => {
            report.problem(&path, Location::File, e.to_string());
            report.log.start_up = Some(format!("refuses to start: {e}"));
            return;
        }
    };
    report.log.readable = true;
    report.log.entries_checked += scan.entries_checked;
    report.log.first_index = scan.first_index.or(report.log.first_index);
    report.log.last_index = report.log.last_index.max(scan.last_index);
    report.log.vote = scan.vote;
    report.log.committed = report.log.committed.max(scan.committed);
    report.log.last_purged = scan.last_purged;
    if report.log.start_up.is_none() || scan.verdict(&path).is_err() {
        report.log.start_up = Some(scan.verdict_text(&path));
    }
    for (record, reason) in &scan.record_problems {
        report.problem(&path, Location::Record(record.clone()), reason.clone());
    }
    for problem in &scan.entry_problems {
        let what = match problem.trouble {
            EntryTrouble::Corrupt => "corrupt",
            EntryTrouble::Missing => "gap",
            EntryTrouble::Stale => "stale",
        };
        report.problem(
            &path,
            Location::Index(problem.index),
            format!("{what}: {}", problem.reason),
        );
    }
    let unlisted = scan.entry_problem_count - scan.entry_problems.len() as u64;
    if unlisted > 0 {
        report.problem(
            &path,
            Location::File,
            format!("and {unlisted} more bad entries not listed"),
        );
    }
}

/// Judge the write-ahead file (its copy at `copy`, reported as `path`) as start-up does,
/// against the log database's `scan`. Fills `report.log.wal`, adds the file's entries and
/// committed id to the log's figures, and sets the start-up verdict when the file
/// decides it.
fn check_wal(
    report: &mut CheckReport,
    scan: &Scan,
    copy: &Path,
    path: &Path,
    snapshot_index: Option<u64>,
) {
    let generation = scan.wal_generation.unwrap_or(wal::Generation::NONE);
    let mut check = WalCheck {
        path: path.to_owned(),
        generation: generation.number,
        ..WalCheck::default()
    };
    let refused = |report: &mut CheckReport, e: &StoreError| {
        let location = match e {
            StoreError::CorruptLog { index, .. } => Location::Index(*index),
            _ => Location::File,
        };
        let message = e
            .to_string()
            .replace(&copy.display().to_string(), &path.display().to_string());
        report.problem(path, location, message.clone());
        report.log.start_up = Some(format!("refuses to start: {message}"));
    };
    let (records, end) = match wal::read_file(copy, generation) {
        Ok(read) => read,
        Err(e) => {
            refused(report, &e);
            report.log.wal = Some(check);
            return;
        }
    };
    check.readable = true;
    check.records = records.len();
    check.records_end = format!(
        "byte {}: {}",
        end.offset,
        end.reason.as_deref().unwrap_or("the end of the file")
    );
    // The log's end after start-up's own verdict on the database.
    let log_end = match scan.verdict(&report.log.path) {
        Ok(None) => scan.last_log_id.or(scan.last_purged),
        Ok(Some(_)) => scan.last_good_before_bad.or(scan.last_purged),
        Err(_) => {
            // The database already refuses start-up; the file cannot change that.
            report.log.wal = Some(check);
            return;
        }
    };
    match plan_wal(
        &records,
        &end,
        path,
        log_end,
        scan.committed,
        snapshot_index,
    ) {
        Ok(plan) => {
            check.entries_to_move = plan.entries.len();
            let log = &mut report.log;
            log.entries_checked += plan.entries.len() as u64;
            if let Some((first, _)) = plan.entries.first() {
                log.first_index.get_or_insert(first.log_id.index);
            }
            if let Some((last, _)) = plan.entries.last() {
                log.last_index = log.last_index.max(Some(last.log_id.index));
            }
            log.committed = log.committed.max(plan.committed);
        }
        Err(e) => refused(report, &e),
    }
    report.log.wal = Some(check);
}

/// Check every snapshot file; returns the newest good one's last log id (`Some(None)` for
/// a good snapshot of the empty log), or `None` when there is no good newest snapshot.
fn check_snapshots(report: &mut CheckReport) -> Option<Option<LogId>> {
    let dir = report.data_dir.join(SNAPSHOT_DIR_NAME);
    if !dir.is_dir() {
        report
            .notes
            .push(format!("{} does not exist: no snapshots", dir.display()));
        return None;
    }
    let listing = match std::fs::read_dir(&dir) {
        Ok(listing) => listing,
        Err(e) => {
            report.problem(&dir, Location::File, format!("cannot list it: {e}"));
            return None;
        }
    };
    let mut files = Vec::new();
    for item in listing {
        let name = match item {
            Ok(item) => item.file_name().to_string_lossy().into_owned(),
            Err(e) => {
                report.problem(&dir, Location::File, format!("cannot list it: {e}"));
                continue;
            }
        };
        match snapshot::parse_file_name(&name) {
            Some((term, index)) => files.push((term, index, dir.join(&name))),
            None if name.ends_with(TMP_SUFFIX) => report.notes.push(format!(
                "{} is a leftover of an interrupted snapshot write (start-up deletes it)",
                dir.join(&name).display()
            )),
            None => report.notes.push(format!(
                "{} is not a snapshot file (ignored)",
                dir.join(&name).display()
            )),
        }
    }
    files.sort();
    let newest = files.last().map(|(term, index, _)| (*term, *index));
    let mut newest_good = None;
    for (term, index, path) in files {
        let is_newest = newest == Some((term, index));
        let mut check = SnapshotCheck {
            path: path.clone(),
            bytes: 0,
            last_log_id: None,
            ok: false,
            newest: is_newest,
        };
        let consequence = if is_newest {
            "start-up refuses: this is the newest snapshot"
        } else {
            "start-up ignores it: a newer snapshot exists"
        };
        match std::fs::read(&path) {
            Err(e) => report.problem(&path, Location::File, format!("cannot read it: {e}")),
            Ok(bytes) => {
                check.bytes = bytes.len() as u64;
                match snapshot::decode(&bytes) {
                    Err(e) => report.problem(
                        &path,
                        Location::Offset(e.offset),
                        format!("{}; {consequence}", e.reason),
                    ),
                    Ok(content) => {
                        let last = content.meta.last_log_id;
                        check.last_log_id = last;
                        let named = last.map_or((0, 0), |id| (id.leader_id.term, id.index));
                        if named == (term, index) {
                            check.ok = true;
                            if is_newest {
                                newest_good = Some(last);
                            }
                        } else {
                            report.problem(
                                &path,
                                Location::File,
                                format!(
                                    "it holds last log id {last:?}, its name says term {term} \
                                     index {index}; {consequence}"
                                ),
                            );
                        }
                    }
                }
            }
        }
        report.snapshots.push(check);
    }
    newest_good
}

fn show_log_id(id: Option<LogId>) -> String {
    id.map_or_else(|| "none".to_owned(), |id| id.to_string())
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File => Ok(()),
            Location::Index(index) => write!(f, "entry {index}"),
            Location::Record(key) => write!(f, "record `{key}`"),
            Location::Offset(offset) => write!(f, "byte {offset}"),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.location != Location::File {
            write!(f, ", {}", self.location)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "data dir: {}", self.data_dir.display())?;
        let log = &self.log;
        writeln!(f, "log: {}", log.path.display())?;
        if log.readable {
            match (log.first_index, log.last_index) {
                (Some(first), Some(last)) => writeln!(
                    f,
                    "  entries checked: {} (index {first}..={last})",
                    log.entries_checked
                )?,
                _ => writeln!(f, "  entries checked: 0")?,
            }
            let vote = log
                .vote
                .map_or_else(|| "none".to_owned(), |v| v.to_string());
            writeln!(f, "  vote: {vote}")?;
            writeln!(f, "  committed: {}", show_log_id(log.committed))?;
            writeln!(f, "  last purged: {}", show_log_id(log.last_purged))?;
        }
        if let Some(wal) = &log.wal {
            writeln!(f, "write-ahead file: {}", wal.path.display())?;
            if wal.readable && wal.records == 0 {
                writeln!(
                    f,
                    "  generation {}: no records of it (the log database holds everything)",
                    wal.generation
                )?;
            } else if wal.readable {
                writeln!(
                    f,
                    "  generation {}: {} records, {} entries beyond the log database (moved \
                     into it at start-up); records end at {}",
                    wal.generation, wal.records, wal.entries_to_move, wal.records_end
                )?;
            } else {
                writeln!(f, "  unreadable")?;
            }
        }
        if let Some(start_up) = &log.start_up {
            writeln!(f, "  start-up: {start_up}")?;
        }
        if self.snapshots.is_empty() {
            writeln!(f, "snapshots: none")?;
        } else {
            writeln!(f, "snapshots:")?;
            for snapshot in &self.snapshots {
                let name = snapshot
                    .path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                writeln!(
                    f,
                    "  {name}: {} bytes, last log id {}, {}{}",
                    snapshot.bytes,
                    show_log_id(snapshot.last_log_id),
                    if snapshot.ok { "ok" } else { "BAD" },
                    if snapshot.newest { " (newest)" } else { "" }
                )?;
            }
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        if self.problems.is_empty() {
            writeln!(f, "problems: none")?;
            write!(f, "result: clean")
        } else {
            writeln!(f, "problems ({}):", self.problems.len())?;
            for problem in &self.problems {
                writeln!(f, "  - {problem}")?;
            }
            write!(
                f,
                "result: {} problem{} found",
                self.problems.len(),
                if self.problems.len() == 1 { "" } else { "s" }
            )
        }
    }
}
