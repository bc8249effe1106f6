//! Opening the log: creating a new file, verifying all of an existing one (see the
//! parent module's docs), and recovering the write-ahead file.

use super::*;

impl LogStore {
    /// Open (or create) the log in `dir`/[`LOG_FILE_NAME`], verify all of it (see the
    /// module docs), drop a damaged uncommitted tail, and recover the vote, the entries,
    /// the committed and the last purged log id.
    ///
    /// # Errors
    /// The directory cannot be created; the file cannot be opened (damaged, or another
    /// process has it open: [`StoreError::OpenDatabase`]); a meta record is damaged
    /// ([`StoreError::CorruptRecord`]); an entry is missing, damaged in the middle of the
    /// log or at or below the committed log id ([`StoreError::CorruptLog`]).
    pub fn open(dir: &Path, options: LogStoreOptions) -> Result<LogStore, StoreError> {
        Self::open_on(&Disk::for_dir(dir), dir, options)
    }

    /// [`LogStore::open`] with the files on `disk`.
    ///
    /// # Errors
    /// As [`LogStore::open`].
    pub fn open_on(
        disk: &Disk,
        dir: &Path,
        options: LogStoreOptions,
    ) -> Result<LogStore, StoreError> {
        disk.create_dir_all(dir)?;
        let path = dir.join(LOG_FILE_NAME);
        if !disk.exists(&path) {
            create_database(disk, dir, &path, options.page_cache_bytes)?;
        }
        let snapshot_index = crate::store::snapshot::newest_index_by_name(
            disk,
            &dir.join(crate::store::snapshot::SNAPSHOT_DIR_NAME),
        );
        let (db, scan) =
            open_and_scan(disk, &path, &path, snapshot_index, options.page_cache_bytes)?;
        // The file may have just been created (or created by a run that lost power before
        // it synced the directory): its directory entry must be durable before the node
        // writes a vote into it.
        let truncate_from = match disk.sync_dir(dir).and_then(|()| scan.verdict(&path)) {
            Ok(truncate_from) => truncate_from,
            Err(e) => {
                let _ = close_quietly(db);
                return Err(e);
            }
        };

        let store = LogStore {
            inner: Arc::new(Inner {
                db: RwLock::new(Some(db)),
                disk: disk.clone(),
                space: Arc::new(DiskSpace::default()),
                path,
                options,
                tail: Mutex::new(Tail {
                    cache: VecDeque::new(),
                    cache_bytes: 0,
                    last_log_id: None,
                    last_purged: None,
                }),
                write_transactions: AtomicU64::new(0),
                entries_appended: AtomicU64::new(0),
                inline_appends: AtomicU64::new(0),
                disk_reads: AtomicU64::new(0),
                closed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                unsaved_committed: Mutex::new(None),
                wal: Mutex::new(None),
                checkpoints: AtomicU64::new(0),
            }),
        };
        let last_entry = match truncate_from {
            None => scan.last_log_id,
            Some(index) => {
                tracing::warn!(
                    file = %store.inner.path.display(),
                    from_index = index,
                    to_index = scan.last_index,
                    committed = ?scan.committed,
                    "the log ends in damaged entries that were never committed (a torn \
                     write); deleting them: the leader sends them again"
                );
                let txn = store.begin_write(Durability::Immediate)?;
                {
                    let mut table = txn.open_table(LOG).map_err(|e| store.db_error(e))?;
                    table
                        .retain_in(index.., |_, _| false)
                        .map_err(|e| store.db_error(e))?;
                }
                store.commit(txn, true)?;
                scan.last_good_before_bad
            }
        };
        {
            let mut tail = store.tail();
            tail.last_purged = scan.last_purged;
            tail.last_log_id = last_entry.or(scan.last_purged);
        }
        // Writes to a file redb could read may still panic inside redb.
        let path = store.inner.path.clone();
        guarded(&path, "writing", || {
            store.recover_wal(dir, &scan, snapshot_index)
        })?;
        Ok(store)
    }

    /// Open the write-ahead file (creating it when in use and missing), move what it
    /// holds into redb with the file's next generation in one transaction (see the
    /// module docs), and keep it for appends when in use.
    pub(super) fn recover_wal(
        &self,
        dir: &Path,
        scan: &Scan,
        snapshot_index: Option<u64>,
    ) -> Result<(), StoreError> {
        let in_use = self.inner.options.wal_bytes > 0;
        let disk = &self.inner.disk;
        let wal_path = dir.join(wal::WAL_FILE_NAME);
        let exists = disk.exists(&wal_path);
        if let Some(generation) = scan.wal_generation
            && !exists
        {
            return Err(missing_wal(&wal_path, &self.inner.path, generation));
        }
        if !in_use && !exists {
            return Ok(());
        }
        let generation = scan.wal_generation.unwrap_or(Generation::NONE);
        let (mut wal, found) = Wal::open_on(disk, dir, self.inner.options.wal_bytes, generation)?;
        let log_end = self.tail().last_log_id;
        let plan = plan_wal(
            &found.records,
            &found.end,
            wal.path(),
            log_end,
            scan.committed,
            snapshot_index,
        )?;
        let upgrade_format = in_use && scan.format.is_some_and(|f| f < LOG_FORMAT);
        // A file whose generation holds nothing (after a clean close, or a checkpoint)
        // goes on under it with no write at all; otherwise what it holds moves into the
        // database with the next generation, in one transaction.
        let next = if found.in_use || scan.wal_generation.is_none() {
            generation.next()
        } else {
            generation
        };
        if next != generation || upgrade_format {
            let txn = self.begin_write(Durability::Immediate)?;
            {
                let mut table = txn.open_table(LOG).map_err(|e| self.db_error(e))?;
                for (entry, bytes) in &plan.entries {
                    table
                        .insert(entry.log_id.index, bytes.as_slice())
                        .map_err(|e| self.db_error(e))?;
                }
                if let Some(committed) = plan.committed.filter(|_| plan.committed > scan.committed)
                {
                    put_committed(&txn, &committed).map_err(|e| self.db_error(e))?;
                }
                put_meta(&txn, KEY_WAL_GENERATION, &next).map_err(|e| self.db_error(e))?;
                if upgrade_format {
                    put_meta(&txn, KEY_FORMAT, &LOG_FORMAT).map_err(|e| self.db_error(e))?;
                }
            }
            self.commit(txn, true)?;
        }
        if let Some((entry, _)) = plan.entries.last() {
            self.tail().last_log_id = Some(entry.log_id);
        }
        if !found.records.is_empty() {
            tracing::info!(
                file = %wal.path().display(),
                records = found.records.len(),
                entries_moved = plan.entries.len(),
                end_offset = plan.end.offset,
                end = plan.end.reason.as_deref().unwrap_or("the end of the file"),
                "recovered the write-ahead file into the log database"
            );
        }
        if in_use {
            wal.start_generation(next);
            *self.wal() = Some(WalState {
                wal,
                committed: None,
            });
        }
        Ok(())
    }
}

/// Run `work` on a possibly damaged file, turning a panic inside redb into a refusal that
/// names the file.
pub(crate) fn guarded<T>(
    path: &Path,
    doing: &str,
    work: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        let message = panic_message(&*panic);
        Err(StoreError::OpenDatabase {
            path: path.to_owned(),
            reason: format!("the file is damaged: redb panicked while {doing} it: {message}"),
        })
    })
}

/// Open (creating if needed) the log database at `file` for writing and verify all of it,
/// naming it `name` in errors. The scan's verdict is left to the caller. `check-data`
/// runs this on a copy, so it judges a file exactly as start-up does. `snapshot_index` is
/// the last index the newest snapshot covers.
pub(crate) fn open_and_scan(
    disk: &Disk,
    file: &Path,
    name: &Path,
    snapshot_index: Option<u64>,
    page_cache_bytes: usize,
) -> Result<(Database, Scan), StoreError> {
    refuse_empty_file(disk, file).map_err(|e| rename(e, name))?;
    let db = guarded(name, "opening", || {
        let mut builder = redb::Builder::new();
        builder.set_cache_size(page_cache_bytes);
        disk.create_database(file, &builder)
            .map_err(|e| StoreError::OpenDatabase {
                path: name.to_owned(),
                reason: e.to_string(),
            })
    })?;
    // Not dropped while a panic unwinds: closing a damaged file can panic again.
    let db = ManuallyDrop::new(db);
    let checked = guarded(name, "verifying", || {
        prepare(&db).map_err(|e| StoreError::Database {
            path: name.to_owned(),
            source: e,
        })?;
        Scan::run(&*db, name, snapshot_index)
    });
    let db = ManuallyDrop::into_inner(db);
    match checked {
        Ok(scan) => Ok((db, scan)),
        Err(e) => {
            let _ = close_quietly(db);
            Err(e)
        }
    }
}

/// What start-up does with the write-ahead file's records (shared with `check-data`).
#[derive(Debug)]
pub(crate) struct WalPlan {
    /// Entries after the redb log's end, verified and contiguous with it: decoded, and
    /// as stored.
    pub(crate) entries: Vec<(Ent, Vec<u8>)>,
    /// The newest committed log id in the file.
    pub(crate) committed: Option<LogId>,
    /// Where the file's records end, and why.
    pub(crate) end: RecordsEnd,
}

/// Check the write-ahead file's `records` (of the current generation, ending at `end`)
/// against the redb log, which ends at `log_end` (its last entry, or the last purged
/// id) after start-up's own verdict, holds `db_committed`, and is covered by a snapshot
/// up to `snapshot_index`.
///
/// # Errors
/// A record verified but its entry or committed id does not decode; the entries have a
/// gap or do not continue the log (the database and the file disagree); the records end
/// in damage in the middle of the file; the newest committed id (the database's or the
/// file's) lies beyond everything the two hold. Start-up refuses.
pub(crate) fn plan_wal(
    records: &[WalRecord],
    end: &RecordsEnd,
    path: &Path,
    log_end: Option<LogId>,
    db_committed: Option<LogId>,
    snapshot_index: Option<u64>,
) -> Result<WalPlan, StoreError> {
    let refuse = |index: u64, what: String| StoreError::CorruptLog {
        path: path.to_owned(),
        index,
        reason: format!("{what}; refusing to start"),
    };
    let mut plan = WalPlan {
        entries: Vec::new(),
        committed: None,
        end: end.clone(),
    };
    let mut next = log_end.map(|id| id.index + 1);
    for record in records {
        match record {
            WalRecord::Committed(bytes) => {
                let committed: LogId =
                    record::decode(KEY_COMMITTED.as_bytes(), bytes).map_err(|e| {
                        StoreError::CorruptRecord {
                            path: path.to_owned(),
                            record: KEY_COMMITTED.to_owned(),
                            reason: format!("in the write-ahead file: {e}; refusing to start"),
                        }
                    })?;
                plan.committed = plan.committed.max(Some(committed));
            }
            WalRecord::Entry {
                index,
                offset,
                bytes,
            } => {
                let entry = record::decode_entry(*index, bytes).map_err(|e| {
                    refuse(
                        *index,
                        format!("the record at byte {offset} does not verify: {e}"),
                    )
                })?;
                if let Some(next) = next
                    && *index != next
                {
                    return Err(refuse(
                        *index,
                        format!(
                            "the record at byte {offset} holds entry {index}, but the log \
                             continues at {next}: the file and the log database disagree"
                        ),
                    ));
                }
                next = Some(index + 1);
                plan.entries.push((entry, bytes.clone()));
            }
        }
    }
    if let Some((offset, append)) = end.damage_in_the_middle {
        return Err(refuse(
            next.unwrap_or(0),
            format!(
                "the write-ahead file's records stop at byte {} ({}), but a record of a \
                 later append (number {append}) verifies at byte {offset}: the bad record \
                 was synced before it, so this is damage in the middle of the file, not a \
                 torn write",
                end.offset,
                end.reason.as_deref().unwrap_or("the end of the file"),
            ),
        ));
    }
    let last_index = plan
        .entries
        .last()
        .map(|(entry, _)| entry.log_id.index)
        .or(log_end.map(|id| id.index));
    refuse_lost_committed(
        path,
        db_committed.max(plan.committed),
        last_index,
        snapshot_index,
        end,
    )?;
    Ok(plan)
}

/// Refuse start-up when the newest committed log id lies beyond both the log (ending at
/// `last_index` once the write-ahead file's entries are counted) and the newest
/// snapshot: committed entries were lost (from the write-ahead file, whose records end
/// at `end`).
fn refuse_lost_committed(
    path: &Path,
    committed: Option<LogId>,
    last_index: Option<u64>,
    snapshot_index: Option<u64>,
    end: &RecordsEnd,
) -> Result<(), StoreError> {
    let Some(committed) = committed else {
        return Ok(());
    };
    let covered = last_index.max(snapshot_index);
    if covered.is_some_and(|covered| committed.index <= covered) {
        return Ok(());
    }
    Err(StoreError::CorruptLog {
        path: path.to_owned(),
        index: covered.map_or(0, |c| c + 1),
        reason: format!(
            "the committed log id {committed} is beyond the end of the log ({}) and of the \
             newest snapshot ({}): committed entries are lost (the write-ahead file's \
             records end at byte {}: {}); refusing to start (restore this node from a \
             healthy replica)",
            last_index.map_or_else(|| "empty".to_owned(), |i| format!("index {i}")),
            snapshot_index.map_or_else(|| "none".to_owned(), |i| format!("index {i}")),
            end.offset,
            end.reason.as_deref().unwrap_or("the end of the file"),
        ),
    })
}

/// The refusal to start when the log database at `db_path` records a `generation` of the
/// write-ahead file at `wal_path` and the file is gone. The file is created (and its
/// directory synced) before a generation is first recorded, so it was in use: entries
/// acknowledged but not yet moved into the database may have been in it.
pub(crate) fn missing_wal(wal_path: &Path, db_path: &Path, generation: Generation) -> StoreError {
    StoreError::OpenDatabase {
        path: wal_path.to_owned(),
        reason: format!(
            "the write-ahead file is missing, but the log database {} records its \
             generation {}: it was in use, and entries acknowledged but not yet moved into \
             the database may have been in it. The node refuses to start (restore it from \
             a healthy replica)",
            db_path.display(),
            generation.number
        ),
    }
}

fn rename(error: StoreError, name: &Path) -> StoreError {
    match error {
        StoreError::OpenDatabase { reason, .. } => StoreError::OpenDatabase {
            path: name.to_owned(),
            reason,
        },
        other => other,
    }
}

/// redb turns an existing empty file into a new database, which would make a node whose
/// log file was truncated to nothing forget its vote: refuse instead.
pub(crate) fn refuse_empty_file(disk: &Disk, path: &Path) -> Result<(), StoreError> {
    if !disk.exists(path) {
        return Ok(());
    }
    match disk
        .open(path)
        .and_then(|file| file.len().map_err(StoreError::io(path)))
    {
        Ok(0) => Err(StoreError::OpenDatabase {
            path: path.to_owned(),
            reason: "the file is empty: it was truncated, or its creation was \
                         interrupted. A node that may have voted must not start with a new \
                         log; delete the file only if this node never joined a cluster"
                .to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Create a new, empty log database at `path` in one step a power cut cannot split: made
/// under a temporary name (its tables and format marker committed durably), then renamed
/// and the directory synced. Otherwise a cut during a node's very first start could leave
/// a file redb cannot open, or an empty one, and the node would refuse to start.
fn create_database(
    disk: &Disk,
    dir: &Path,
    path: &Path,
    page_cache_bytes: usize,
) -> Result<(), StoreError> {
    let tmp = path.with_extension("redb.tmp");
    if disk.exists(&tmp) {
        disk.remove_file(&tmp)?;
    }
    let mut builder = redb::Builder::new();
    builder.set_cache_size(page_cache_bytes);
    let db = disk
        .create_database(&tmp, &builder)
        .map_err(|e| StoreError::OpenDatabase {
            path: tmp.clone(),
            reason: e.to_string(),
        })?;
    let prepared = prepare(&db).map_err(|source| StoreError::Database {
        path: tmp.clone(),
        source,
    });
    let closed = close_quietly(db).map_err(|reason| StoreError::OpenDatabase {
        path: tmp.clone(),
        reason,
    });
    prepared.and(closed)?;
    disk.rename(&tmp, path)?;
    disk.sync_dir(dir)
}

/// Create the tables of a new file, and its format marker. An existing file is not
/// written to before it is verified.
fn prepare(db: &Database) -> Result<(), redb::Error> {
    let fresh = |log_empty: bool, meta_empty: bool| log_empty && meta_empty;
    let needs_write = {
        let txn = db.begin_read()?;
        match (txn.open_table(LOG), txn.open_table(META)) {
            (Ok(log), Ok(meta)) => fresh(log.is_empty()?, meta.is_empty()?),
            (Err(TableError::TableDoesNotExist(_)), _)
            | (_, Err(TableError::TableDoesNotExist(_))) => true,
            (Err(e), _) | (_, Err(e)) => return Err(e.into()),
        }
    };
    if !needs_write {
        return Ok(());
    }
    let txn = db.begin_write()?;
    {
        let log = txn.open_table(LOG)?;
        let mut meta = txn.open_table(META)?;
        if fresh(log.is_empty()?, meta.is_empty()?) {
            let marker = record::encode(KEY_FORMAT.as_bytes(), &LOG_FORMAT, Vec::new())
                .map_err(|e| redb::Error::Corrupted(format!("encoding the format marker: {e}")))?;
            meta.insert(KEY_FORMAT, marker.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// What kind of trouble an entry is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryTrouble {
    /// Fails verification.
    Corrupt,
    /// Absent between `last_purged + 1` and the last index.
    Missing,
    /// Present at or below the last purged index.
    Stale,
}

/// One entry that failed verification, or a run of missing ones.
#[derive(Clone, Debug)]
pub(crate) struct EntryProblem {
    pub(crate) index: u64,
    pub(crate) trouble: EntryTrouble,
    pub(crate) reason: String,
}

/// What reading and verifying a whole log database found. Shared by start-up and
/// `check-data`, so both judge a file the same way.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) format: Option<u32>,
    pub(crate) vote: Option<Vote<NodeId>>,
    pub(crate) committed: Option<LogId>,
    pub(crate) last_purged: Option<LogId>,
    /// The write-ahead file's current generation (none before the file was first used).
    pub(crate) wal_generation: Option<Generation>,
    /// Meta records that failed verification: `(key, reason)`.
    pub(crate) record_problems: Vec<(String, String)>,
    /// Entries read (good or bad).
    pub(crate) entries_checked: u64,
    pub(crate) first_index: Option<u64>,
    pub(crate) last_index: Option<u64>,
    /// The last entry's log id, when it verified.
    pub(crate) last_log_id: Option<LogId>,
    /// The first [`LISTED_PROBLEMS_MAX`] entry problems, in index order.
    pub(crate) entry_problems: Vec<EntryProblem>,
    pub(crate) entry_problem_count: u64,
    /// The first bad (corrupt, missing or stale) index.
    pub(crate) first_bad: Option<u64>,
    /// The last verified entry before `first_bad`.
    pub(crate) last_good_before_bad: Option<LogId>,
    /// The first verified entry after `first_bad`.
    pub(crate) good_after_bad: Option<u64>,
}

impl Scan {
    /// Read and verify every record of `db` (the file at `path`); `snapshot_index` is the
    /// last index the newest snapshot covers.
    pub(crate) fn run(
        db: &impl ReadableDatabase,
        path: &Path,
        snapshot_index: Option<u64>,
    ) -> Result<Scan, StoreError> {
        let db_error = |e: redb::Error| StoreError::Database {
            path: path.to_owned(),
            source: e,
        };
        let txn = db.begin_read().map_err(|e| db_error(e.into()))?;
        let mut scan = Scan::default();
        {
            let meta = txn.open_table(META).map_err(|e| db_error(e.into()))?;
            let meta_empty = meta.is_empty().map_err(|e| db_error(e.into()))?;
            let read = |key: &'static str| -> Result<Option<Vec<u8>>, StoreError> {
                Ok(meta
                    .get(key)
                    .map_err(|e| db_error(e.into()))?
                    .map(|bytes| bytes.value().to_vec()))
            };
            let format = read(KEY_FORMAT)?;
            let vote = read(KEY_VOTE)?;
            let committed = read(KEY_COMMITTED)?;
            let last_purged = read(KEY_LAST_PURGED)?;
            let wal_generation = read(KEY_WAL_GENERATION)?;
            scan.format = scan.meta(KEY_FORMAT, format.as_deref());
            scan.vote = scan.meta(KEY_VOTE, vote.as_deref());
            scan.committed = scan.meta(KEY_COMMITTED, committed.as_deref());
            scan.last_purged = scan.meta(KEY_LAST_PURGED, last_purged.as_deref());
            scan.wal_generation = scan.meta(KEY_WAL_GENERATION, wal_generation.as_deref());
            match (scan.format, format.is_some()) {
                (Some(f), _) if LOG_FORMATS_READ.contains(&f) => {}
                (None, true) => {}
                (Some(other), _) => scan.record_problems.insert(
                    0,
                    (
                        KEY_FORMAT.to_owned(),
                        format!("file format {other} (this build reads {LOG_FORMAT})"),
                    ),
                ),
                (None, false) if !meta_empty => scan.record_problems.insert(
                    0,
                    (
                        KEY_FORMAT.to_owned(),
                        "missing: the file was written by a build without checksummed records"
                            .to_owned(),
                    ),
                ),
                (None, false) => {}
            }
        }
        let log = txn.open_table(LOG).map_err(|e| db_error(e.into()))?;
        if scan.format.is_none()
            && scan.record_problems.is_empty()
            && !log.is_empty().map_err(|e| db_error(e.into()))?
        {
            scan.record_problems.push((
                KEY_FORMAT.to_owned(),
                "missing: the file was written by a build without checksummed records".to_owned(),
            ));
        }
        let purged_index = scan.last_purged.map(|id| id.index);
        let mut expected = purged_index.map(|p| p + 1);
        for item in log.iter().map_err(|e| db_error(e.into()))? {
            let (key, value) = item.map_err(|e| db_error(e.into()))?;
            let index = key.value();
            scan.entries_checked += 1;
            scan.first_index.get_or_insert(index);
            scan.last_index = Some(index);
            if purged_index.is_some_and(|p| index <= p) {
                scan.problem(
                    index,
                    EntryTrouble::Stale,
                    format!(
                        "present although the log was purged up to index {}",
                        purged_index.unwrap_or_default()
                    ),
                );
            } else if let Some(expected) = expected
                && index > expected
            {
                let reason = if index == expected + 1 {
                    format!("missing (the next entry present is {index})")
                } else {
                    format!(
                        "missing, with the {} entries up to {} (the next present is {index})",
                        index - expected,
                        index - 1
                    )
                };
                scan.problem(expected, EntryTrouble::Missing, reason);
            }
            expected = Some(expected.map_or(index + 1, |e| e.max(index + 1)));
            match record::decode_entry(index, value.value()) {
                Ok(entry) => {
                    if scan.first_bad.is_some() {
                        scan.good_after_bad.get_or_insert(index);
                    } else {
                        scan.last_good_before_bad = Some(entry.log_id);
                    }
                    scan.last_log_id = Some(entry.log_id);
                }
                Err(e) => {
                    scan.problem(index, EntryTrouble::Corrupt, e.to_string());
                    scan.last_log_id = None;
                }
            }
        }
        // A node's vote is never older than an entry it holds (it saves the vote of a
        // term before it appends that term's entries): a vote missing or older than the
        // log is a damaged file (a B-tree that no longer finds the record, say), and the
        // node must not start having forgotten it. Term 0 is the initial membership entry,
        // which may precede the first vote.
        let newest_term = [scan.last_good_before_bad, scan.committed, scan.last_purged]
            .into_iter()
            .flatten()
            .map(|id| id.leader_id.term)
            .max()
            .unwrap_or(0);
        let vote_term = scan.vote.map(|vote| vote.leader_id.term);
        if newest_term > 0
            && vote_term.is_none_or(|term| term < newest_term)
            && !scan.record_problems.iter().any(|(key, _)| key == KEY_VOTE)
        {
            scan.record_problems.push((
                KEY_VOTE.to_owned(),
                match vote_term {
                    None => format!("missing, while the log holds entries of term {newest_term}"),
                    Some(term) => format!(
                        "of term {term}, older than the log's entries of term {newest_term}"
                    ),
                },
            ));
        }
        // The committed log id is never beyond the log's end, or the snapshot's when one
        // was installed past it. Beyond both, committed entries are gone (e.g. a damaged
        // B-tree that redb reads as shorter).
        if let Some(committed) = scan.committed {
            let end = scan.last_index.max(purged_index).max(snapshot_index);
            if end.is_none_or(|end| committed.index > end) {
                let first_missing = end.map_or(0, |end| end + 1);
                scan.problem(
                    first_missing,
                    EntryTrouble::Missing,
                    format!(
                        "missing: the committed log id {committed} is beyond the end of the \
                         log ({}) and of the newest snapshot ({}): committed entries are lost",
                        scan.last_index
                            .max(purged_index)
                            .map_or_else(|| "empty".to_owned(), |i| format!("index {i}")),
                        snapshot_index.map_or_else(|| "none".to_owned(), |i| format!("index {i}"))
                    ),
                );
            }
        }
        Ok(scan)
    }

    /// Verify one meta record, noting a problem.
    fn meta<T: DeserializeOwned>(&mut self, key: &'static str, bytes: Option<&[u8]>) -> Option<T> {
        let bytes = bytes?;
        match record::decode::<T>(key.as_bytes(), bytes) {
            Ok(value) => Some(value),
            Err(e) => {
                self.record_problems.push((key.to_owned(), e.to_string()));
                None
            }
        }
    }

    fn problem(&mut self, index: u64, trouble: EntryTrouble, reason: String) {
        self.entry_problem_count += 1;
        if self.entry_problems.len() < LISTED_PROBLEMS_MAX {
            self.entry_problems.push(EntryProblem {
                index,
                trouble,
                reason,
            });
        }
        if self.first_bad.is_none() {
            self.first_bad = Some(index);
        } else if trouble != EntryTrouble::Corrupt {
            // A missing or stale entry is a gap in what follows the first bad one: the
            // damage is not confined to the tail.
            self.good_after_bad.get_or_insert(index);
        }
    }

    /// What start-up does about what the scan found: `Ok(None)` to start as is,
    /// `Ok(Some(index))` to delete the damaged uncommitted tail from `index` on first, or
    /// the error that refuses start-up.
    pub(crate) fn verdict(&self, path: &Path) -> Result<Option<u64>, StoreError> {
        if let Some((record, reason)) = self.record_problems.first() {
            let why = match record.as_str() {
                KEY_VOTE => "a node must never forget its vote",
                KEY_COMMITTED => "without it the node cannot tell which entries it may drop",
                KEY_LAST_PURGED => "without it the node cannot tell where its log begins",
                KEY_WAL_GENERATION => {
                    "without it the node cannot read the entries in the write-ahead file"
                }
                _ => "the file cannot be read safely",
            };
            return Err(StoreError::CorruptRecord {
                path: path.to_owned(),
                record: record.clone(),
                reason: format!("{reason}; refusing to start ({why})"),
            });
        }
        let Some(first) = self.entry_problems.first() else {
            return Ok(None);
        };
        let refuse = |reason: String| {
            Err(StoreError::CorruptLog {
                path: path.to_owned(),
                index: first.index,
                reason,
            })
        };
        match first.trouble {
            EntryTrouble::Missing | EntryTrouble::Stale => {
                return refuse(format!("{}; refusing to start", first.reason));
            }
            EntryTrouble::Corrupt => {}
        }
        if let Some(good) = self.good_after_bad {
            return refuse(format!(
                "{}; the log goes on after it (index {good}), so this is damage in the \
                 middle of the log, not a torn tail: refusing to start",
                first.reason
            ));
        }
        if let Some(committed) = self.committed
            && committed.index >= first.index
        {
            return refuse(format!(
                "{}; it is at or below the committed log id {committed}, so it may have \
                 been acknowledged: refusing to start (restore this node from a healthy \
                 replica)",
                first.reason
            ));
        }
        Ok(Some(first.index))
    }

    /// What [`Scan::verdict`] means, in words, for reports.
    pub(crate) fn verdict_text(&self, path: &Path) -> String {
        match self.verdict(path) {
            Ok(None) => "starts normally".to_owned(),
            Ok(Some(index)) => format!(
                "deletes the damaged uncommitted tail (entries {index}..={}) with a warning, \
                 then starts",
                self.last_index.unwrap_or(index)
            ),
            Err(e) => format!("refuses to start: {e}"),
        }
    }
}
