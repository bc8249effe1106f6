//! The decision log: every admitted and refused write, in the order decided, kept in
//! memory (bounded) and optionally appended to a JSON-lines file.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;

use crate::types::{LogEntry, LogPage};

/// Largest page `GET /log` returns, whatever `limit` asks for.
pub const MAX_LOG_PAGE: usize = 10_000;

/// The in-memory log: the newest `capacity` entries.
#[derive(Debug)]
pub(crate) struct DecisionLog {
    entries: VecDeque<LogEntry>,
    capacity: usize,
    next_seq: u64,
    dropped: u64,
}

impl DecisionLog {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 1,
            dropped: 0,
        }
    }

    /// The sequence number the next entry gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends `entry` (whose `seq` must be [`Self::next_seq`] or later), dropping the
    /// oldest entry when full.
    pub(crate) fn push(&mut self, entry: LogEntry) {
        debug_assert!(entry.seq >= self.next_seq);
        self.next_seq = entry.seq + 1;
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
            self.dropped += 1;
        }
        self.entries.push_back(entry);
    }

    /// Entries with `seq >= since`, at most `limit` (and at most [`MAX_LOG_PAGE`]).
    pub(crate) fn page(&self, since: u64, limit: usize) -> LogPage {
        let limit = limit.clamp(1, MAX_LOG_PAGE);
        let first_seq = self
            .entries
            .front()
            .map_or(self.next_seq, |entry| entry.seq);
        let start = self.entries.partition_point(|entry| entry.seq < since);
        let entries: Vec<LogEntry> = self.entries.range(start..).take(limit).cloned().collect();
        let next = entries
            .last()
            .map_or(since.max(first_seq), |entry| entry.seq + 1);
        LogPage {
            entries,
            next,
            first_seq,
            next_seq: self.next_seq,
            dropped: self.dropped,
            missed: first_seq.saturating_sub(since.max(1)),
        }
    }
}

/// Opens `path` for appending, loading the entries it already holds into `log` (so a
/// restarted service continues the sequence), and returns the file.
///
/// A line that is not a log entry (a line cut short by a crash) is skipped with a
/// warning; a last line without its newline gets one, so the next entry starts a line.
pub(crate) fn open_log_file(path: &Path, log: &mut DecisionLog) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let mut loaded = 0_u64;
    for (number, line) in BufReader::new(&file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<LogEntry>(&line) {
            Ok(entry) if entry.seq >= log.next_seq() => {
                log.push(entry);
                loaded += 1;
            }
            Ok(entry) => tracing::warn!(
                path = %path.display(),
                line = number + 1,
                seq = entry.seq,
                "decision log file entry out of order; skipped"
            ),
            Err(error) => tracing::warn!(
                path = %path.display(),
                line = number + 1,
                %error,
                "decision log file line is not an entry; skipped"
            ),
        }
    }
    let length = file.metadata()?.len();
    if length > 0 {
        let mut last = [0_u8; 1];
        file.seek(SeekFrom::Start(length - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
        }
    }
    if loaded > 0 {
        tracing::info!(
            path = %path.display(),
            loaded,
            next_seq = log.next_seq(),
            "continuing the decision log file"
        );
    }
    Ok(file)
}

/// Appends `entry` to the file as one JSON line, in one write.
pub(crate) fn write_entry(file: &mut File, entry: &LogEntry) -> io::Result<()> {
    let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
    line.push(b'\n');
    file.write_all(&line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::WriteOp;

    fn entry(seq: u64) -> LogEntry {
        LogEntry {
            seq,
            op: WriteOp::Put,
            key: "k".into(),
            lock: "l".into(),
            token: seq,
            admitted: true,
            highest_seen: None,
            reason: None,
            bound_lock: None,
            version: Some(seq),
            body_len: 0,
            body_hash: crate::body_hash(b""),
            value_len: Some(0),
            value_hash: Some(crate::body_hash(b"")),
            fenced: true,
        }
    }

    #[test]
    fn pages_and_drops_the_oldest() {
        let mut log = DecisionLog::new(3);
        let empty = log.page(0, 10);
        assert!(empty.entries.is_empty());
        assert_eq!((empty.next, empty.first_seq, empty.missed), (1, 1, 0));
        for seq in 1..=5 {
            log.push(entry(seq));
        }
        let page = log.page(0, 2);
        assert_eq!(
            page.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!((page.next, page.first_seq, page.dropped), (5, 3, 2));
        assert_eq!(page.missed, 2);
        let rest = log.page(page.next, 2);
        assert_eq!(rest.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [5]);
        assert_eq!((rest.next, rest.missed), (6, 0));
        let caught_up = log.page(rest.next, 2);
        assert!(caught_up.entries.is_empty());
        assert_eq!(caught_up.next, 6);
    }

    #[test]
    fn file_is_reloaded_and_a_cut_line_is_skipped() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("log.jsonl");
        {
            let mut log = DecisionLog::new(10);
            let mut file = open_log_file(&path, &mut log).unwrap();
            for seq in 1..=3 {
                write_entry(&mut file, &entry(seq)).unwrap();
            }
            file.write_all(b"{\"seq\":4,\"op\"").unwrap();
        }
        let mut log = DecisionLog::new(2);
        let mut file = open_log_file(&path, &mut log).unwrap();
        assert_eq!(log.next_seq(), 4);
        let page = log.page(0, 10);
        assert_eq!((page.first_seq, page.dropped), (2, 1));
        write_entry(&mut file, &entry(4)).unwrap();
        drop(file);
        let mut again = DecisionLog::new(10);
        open_log_file(&path, &mut again).unwrap();
        assert_eq!(again.next_seq(), 5);
    }
}
