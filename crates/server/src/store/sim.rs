//! A simulated disk that can lose power (tests only: the `test-support` feature).
//!
//! [`SimDisk`] keeps every file and directory under its root in memory, and keeps apart
//! what a real disk would have made durable and what it might still lose:
//!
//! - **File data**: a write changes what reads see at once, and marks the 512-byte
//!   sectors it touched (and a change of length) unsynced. `sync_data` makes the file's
//!   data and length durable. A write through [`Disk::open_direct`] (`O_DIRECT |
//!   O_DSYNC`) is durable when it returns.
//! - **Directory entries**: creating a file or directory, a rename and a removal change
//!   what lookups see at once, and are kept in order as unsynced operations. Syncing a
//!   directory makes the operations on its entries durable. A path is there only if every
//!   directory above it is.
//! - **A power cut** ([`SimDisk::power_cut`], or the `n`-th write after
//!   [`SimDisk::cut_after`]) throws away what was not durable, as a disk may: each
//!   unsynced sector of each file survives or not (a torn write: old and new sectors
//!   mixed), an unsynced length change survives or not, and a random prefix of the
//!   unsynced directory operations survives (a journaling file system keeps them in
//!   order). The choices come from a seeded generator, so a seed replays a run. Every
//!   [`Disk`] and file handed out before the cut fails from then on (the old process is
//!   gone); [`SimDisk::mount`] gives the restarted one a fresh handle.
//!
//! What it does not model: a sector that reads back garbage (bit rot, misdirected
//! writes), a sync that fails, a disk that lies about syncs, full disks, metadata other
//! than names and lengths (times, permissions), hard links.

use super::disk::{Backend, Disk, DiskFile};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Sector size: the granularity of torn writes.
pub const SECTOR: u64 = 512;

/// A small, seeded generator (SplitMix64): enough for choosing what a power cut keeps.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator that replays from `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A seed for a test run: `FENCELOCK_SIM_SEED` if set (to replay a failure), else drawn
/// from the clock. The test prints it.
pub fn seed_from_env() -> u64 {
    std::env::var("FENCELOCK_SIM_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(u64),
}

#[derive(Clone, Debug)]
enum Op {
    Put(PathBuf, Node),
    Remove(PathBuf),
    Rename(PathBuf, PathBuf),
}

impl Op {
    fn touches(&self, dir: &Path) -> bool {
        let parent_is = |p: &Path| p.parent() == Some(dir);
        match self {
            Op::Put(p, _) | Op::Remove(p) => parent_is(p),
            Op::Rename(a, b) => parent_is(a) || parent_is(b),
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, Node>) {
        match self {
            Op::Put(p, node) => {
                names.insert(p.clone(), *node);
            }
            Op::Remove(p) => {
                names.remove(p);
            }
            Op::Rename(a, b) => {
                if let Some(node) = names.remove(a) {
                    names.insert(b.clone(), node);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Inode {
    /// What reads see.
    current: Vec<u8>,
    /// What survives a power cut for sure.
    durable: Vec<u8>,
    /// Sectors written since the last sync.
    dirty: BTreeSet<u64>,
}

impl Inode {
    fn write(&mut self, buf: &[u8], offset: u64, durable: bool) {
        let end = offset as usize + buf.len();
        if self.current.len() < end {
            self.current.resize(end, 0);
        }
        self.current[offset as usize..end].copy_from_slice(buf);
        if durable {
            if self.durable.len() < end {
                self.durable.resize(end, 0);
            }
            self.durable[offset as usize..end].copy_from_slice(buf);
        } else if !buf.is_empty() {
            self.dirty
                .extend(offset / SECTOR..=(end as u64 - 1) / SECTOR);
        }
    }

    fn sync(&mut self) {
        let len = self.current.len();
        self.durable.resize(len, 0);
        for sector in std::mem::take(&mut self.dirty) {
            let from = (sector * SECTOR) as usize;
            let to = ((sector + 1) * SECTOR).min(len as u64) as usize;
            if from < to {
                self.durable[from..to].copy_from_slice(&self.current[from..to]);
            }
        }
    }

    /// What is left after a power cut: each unsynced sector survives or not, and so does
    /// an unsynced length.
    fn cut(&mut self, rng: &mut SimRng, keep_percent: u64) {
        let len = if self.current.len() != self.durable.len() && keep_percent > 0 && rng.chance(50)
        {
            self.current.len()
        } else {
            self.durable.len()
        };
        self.durable.resize(len, 0);
        for sector in std::mem::take(&mut self.dirty) {
            if !rng.chance(keep_percent) {
                continue;
            }
            let from = (sector * SECTOR) as usize;
            let to = ((sector + 1) * SECTOR).min(len as u64) as usize;
            if from < to && to <= self.current.len() {
                self.durable[from..to].copy_from_slice(&self.current[from..to]);
            }
        }
        self.current = self.durable.clone();
    }
}

#[derive(Debug)]
struct State {
    root: PathBuf,
    /// Counts power cuts: handles from an earlier one fail.
    epoch: u64,
    rng: SimRng,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    names: BTreeMap<PathBuf, Node>,
    durable_names: BTreeMap<PathBuf, Node>,
    pending: Vec<Op>,
    /// Writes left before the automatic power cut.
    cut_in: Option<u64>,
    cuts: u64,
    writes: u64,
}

pub(crate) use crate::space::POWER_LOST;

fn gone() -> io::Error {
    io::Error::other(POWER_LOST)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "{}: no such file or directory (simulated disk)",
            path.display()
        ),
    )
}

impl State {
    fn check(&self, epoch: u64) -> io::Result<()> {
        if epoch == self.epoch {
            Ok(())
        } else {
            Err(gone())
        }
    }

    /// A change is about to be made: the automatic power cut may come first (and the
    /// change is then lost with everything else since the last sync).
    fn write_tick(&mut self, epoch: u64) -> io::Result<()> {
        self.check(epoch)?;
        self.writes += 1;
        if let Some(left) = self.cut_in.as_mut() {
            if *left == 0 {
                self.cut();
                return Err(gone());
            }
            *left -= 1;
        }
        Ok(())
    }

    fn cut(&mut self) {
        let keep_percent = match self.rng.below(4) {
            0 => 0,
            1 => 100,
            _ => self.rng.below(101),
        };
        self.cut_keeping(keep_percent, None);
    }

    /// Lose power, keeping each unsynced sector with probability `keep_percent`/100 and
    /// `kept` of the unsynced directory operations (random when `None`).
    fn cut_keeping(&mut self, keep_percent: u64, kept: Option<usize>) {
        self.cut_in = None;
        let inodes: Vec<u64> = self.inodes.keys().copied().collect();
        for inode in inodes {
            let mut node = self.inodes.remove(&inode).expect("listed");
            node.cut(&mut self.rng, keep_percent);
            self.inodes.insert(inode, node);
        }
        let kept = kept
            .unwrap_or_else(|| self.rng.below(self.pending.len() as u64 + 1) as usize)
            .min(self.pending.len());
        for op in self.pending.drain(..kept) {
            op.apply(&mut self.durable_names);
        }
        self.pending.clear();
        self.names = self.durable_names.clone();
        let visible: Vec<PathBuf> = self
            .names
            .keys()
            .filter(|p| !self.visible(p))
            .cloned()
            .collect();
        for orphan in visible {
            self.names.remove(&orphan);
        }
        self.durable_names = self.names.clone();
        let live: BTreeSet<u64> = self
            .names
            .values()
            .filter_map(|n| match n {
                Node::File(i) => Some(*i),
                Node::Dir => None,
            })
            .collect();
        self.inodes.retain(|i, _| live.contains(i));
        self.epoch += 1;
        self.cuts += 1;
    }

    /// Whether every directory above `path` is there.
    fn visible(&self, path: &Path) -> bool {
        let mut at = path.parent();
        while let Some(dir) = at {
            if dir == self.root {
                return true;
            }
            if self.names.get(dir) != Some(&Node::Dir) {
                return false;
            }
            at = dir.parent();
        }
        false
    }

    fn lookup(&self, path: &Path) -> Option<Node> {
        if path == self.root {
            return Some(Node::Dir);
        }
        let node = *self.names.get(path)?;
        self.visible(path).then_some(node)
    }

    fn parent_ok(&self, path: &Path) -> io::Result<()> {
        match path.parent().map(|p| self.lookup(p)) {
            Some(Some(Node::Dir)) => Ok(()),
            _ => Err(not_found(path)),
        }
    }

    fn change(&mut self, op: Op) {
        op.apply(&mut self.names);
        self.pending.push(op);
    }

    fn inode(&mut self, inode: u64) -> io::Result<&mut Inode> {
        self.inodes.get_mut(&inode).ok_or_else(gone)
    }
}

/// An in-memory disk that can lose power (see the module docs).
#[derive(Clone, Debug)]
pub struct SimDisk {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

static MOUNTS: Mutex<Vec<(PathBuf, Weak<Shared>)>> = Mutex::new(Vec::new());

/// The simulated disk mounted over a directory that holds `dir`, if any.
pub(crate) fn mounted(dir: &Path) -> Option<Disk> {
    let mut mounts = MOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    mounts.retain(|(_, shared)| shared.strong_count() > 0);
    mounts
        .iter()
        .find(|(root, _)| dir.starts_with(root))
        .and_then(|(_, shared)| shared.upgrade())
        .map(|shared| SimDisk { shared }.mount())
}

impl SimDisk {
    /// An empty disk whose root directory is `root` (a path that need not exist on the
    /// real file system; it is there, durably, from the start). Every file the storage
    /// opens under `root` goes to this disk while it lives ([`Disk::for_dir`]), so a node
    /// started with its data directory under `root` runs on it.
    pub fn new(root: &Path, seed: u64) -> SimDisk {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                root: root.to_owned(),
                epoch: 0,
                rng: SimRng::new(seed),
                inodes: BTreeMap::new(),
                next_inode: 1,
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                pending: Vec::new(),
                cut_in: None,
                cuts: 0,
                writes: 0,
            }),
        });
        MOUNTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((root.to_owned(), Arc::downgrade(&shared)));
        SimDisk { shared }
    }

    /// A handle for the process running now (until the next power cut).
    pub fn mount(&self) -> Disk {
        let epoch = self.shared.lock().epoch;
        Disk(Arc::new(SimBackend {
            shared: self.shared.clone(),
            epoch,
        }))
    }

    /// Lose power now.
    pub fn power_cut(&self) {
        self.shared.lock().cut();
    }

    /// Lose power now, losing everything not durable (no unsynced sector or directory
    /// operation survives): the worst case a disk may leave.
    pub fn power_cut_losing_everything_unsynced(&self) {
        self.shared.lock().cut_keeping(0, Some(0));
    }

    /// Lose power just before the write (data written, length set, file synced, entry
    /// created, renamed or removed, directory synced) after the next `writes`; that one
    /// is lost too. `None` cancels.
    pub fn cut_after(&self, writes: Option<u64>) {
        self.shared.lock().cut_in = writes;
    }

    /// Power cuts so far.
    pub fn cuts(&self) -> u64 {
        self.shared.lock().cuts
    }

    /// Writes so far (as [`SimDisk::cut_after`] counts them).
    pub fn writes(&self) -> u64 {
        self.shared.lock().writes
    }

    /// Whether `path` exists now.
    pub fn exists(&self, path: &Path) -> bool {
        self.shared.lock().lookup(path).is_some()
    }

    /// Remove `path` at once and durably (tests of a file lost by other means).
    pub fn remove_durably(&self, path: &Path) {
        let mut state = self.shared.lock();
        state.names.remove(path);
        state.durable_names.remove(path);
    }
}

#[derive(Debug)]
struct SimBackend {
    shared: Arc<Shared>,
    epoch: u64,
}

impl SimBackend {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    fn handle(&self, inode: u64, direct: bool) -> SimFile {
        SimFile {
            shared: self.shared.clone(),
            epoch: self.epoch,
            inode,
            direct,
        }
    }
}

impl Backend for SimBackend {
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.write_tick(self.epoch)?;
        state.parent_ok(dir)?;
        if state.lookup(dir).is_some() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        state.change(Op::Put(dir.to_owned(), Node::Dir));
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.lock();
        state.check(self.epoch).is_ok() && state.lookup(path).is_some()
    }

    fn is_dir(&self, path: &Path) -> bool {
        let state = self.lock();
        state.check(self.epoch).is_ok() && state.lookup(path) == Some(Node::Dir)
    }

    fn open(&self, path: &Path, create: bool, truncate: bool) -> io::Result<Box<dyn DiskFile>> {
        let mut state = self.lock();
        state.check(self.epoch)?;
        let inode = match state.lookup(path) {
            Some(Node::File(inode)) => inode,
            Some(Node::Dir) => return Err(io::Error::other("is a directory")),
            None if create => {
                state.write_tick(self.epoch)?;
                state.parent_ok(path)?;
                let inode = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(inode, Inode::default());
                state.change(Op::Put(path.to_owned(), Node::File(inode)));
                inode
            }
            None => return Err(not_found(path)),
        };
        if truncate {
            state.write_tick(self.epoch)?;
            state.inode(inode)?.current.clear();
        }
        Ok(Box::new(self.handle(inode, false)))
    }

    fn open_direct(&self, path: &Path) -> Option<Box<dyn DiskFile>> {
        let state = self.lock();
        state.check(self.epoch).ok()?;
        match state.lookup(path)? {
            Node::File(inode) => Some(Box::new(self.handle(inode, true))),
            Node::Dir => None,
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.write_tick(self.epoch)?;
        if state.lookup(from).is_none() {
            return Err(not_found(from));
        }
        state.parent_ok(to)?;
        state.change(Op::Rename(from.to_owned(), to.to_owned()));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.write_tick(self.epoch)?;
        match state.lookup(path) {
            Some(Node::File(_)) => {
                state.change(Op::Remove(path.to_owned()));
                Ok(())
            }
            _ => Err(not_found(path)),
        }
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.write_tick(self.epoch)?;
        if state.lookup(dir) != Some(Node::Dir) {
            return Err(not_found(dir));
        }
        let pending = std::mem::take(&mut state.pending);
        let (synced, rest): (Vec<Op>, Vec<Op>) =
            pending.into_iter().partition(|op| op.touches(dir));
        for op in synced {
            op.apply(&mut state.durable_names);
        }
        state.pending = rest;
        Ok(())
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.check(self.epoch)?;
        if state.lookup(dir) != Some(Node::Dir) {
            return Err(not_found(dir));
        }
        Ok(state
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn create_database(
        &self,
        path: &Path,
        builder: &redb::Builder,
    ) -> Result<redb::Database, redb::DatabaseError> {
        let file = self.open(path, true, false)?;
        builder.create_with_backend(RedbOnSim(file))
    }
}

/// A file of a [`SimDisk`].
#[derive(Debug)]
struct SimFile {
    shared: Arc<Shared>,
    epoch: u64,
    inode: u64,
    direct: bool,
}

impl DiskFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut state = self.shared.lock();
        state.check(self.epoch)?;
        let data = &state.inode(self.inode)?.current;
        let end = offset as usize + buf.len();
        if end > data.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&data[offset as usize..end]);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.direct
            && (!offset.is_multiple_of(SECTOR)
                || !(buf.len() as u64).is_multiple_of(SECTOR)
                || !(buf.as_ptr() as usize).is_multiple_of(SECTOR as usize))
        {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut state = self.shared.lock();
        state.write_tick(self.epoch)?;
        state.inode(self.inode)?.write(buf, offset, self.direct);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut state = self.shared.lock();
        state.check(self.epoch)?;
        Ok(state.inode(self.inode)?.current.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.shared.lock();
        state.write_tick(self.epoch)?;
        let inode = state.inode(self.inode)?;
        inode.current.resize(len as usize, 0);
        inode.dirty.retain(|&s| s * SECTOR < len);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.shared.lock();
        state.write_tick(self.epoch)?;
        state.inode(self.inode)?.sync();
        Ok(())
    }
}

/// redb on a file of a [`SimDisk`].
#[derive(Debug)]
struct RedbOnSim(Box<dyn DiskFile>);

impl redb::StorageBackend for RedbOnSim {
    fn len(&self) -> Result<u64, io::Error> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.0.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.0.write_all_at(data, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_data_and_entries_are_lost_synced_ones_kept() {
        let root = Path::new("/sim-unit");
        let sim = SimDisk::new(root, 1);
        let disk = sim.mount();
        let dir = root.join("d");
        disk.create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let file = disk.create(&path).unwrap();
        file.write_all_at(b"hello", 0).unwrap();
        file.sync_data().unwrap();
        disk.sync_dir(&dir).unwrap();
        file.write_all_at(&[7u8; 1024], 512).unwrap();
        let lost = dir.join("g");
        disk.create(&lost).unwrap();
        sim.power_cut_losing_everything_unsynced();
        assert!(file.len().is_err(), "old handles fail after the cut");
        let disk = sim.mount();
        assert_eq!(disk.read(&path).unwrap(), b"hello");
        assert!(
            !disk.exists(&lost),
            "an entry whose directory was not synced is lost"
        );
    }

    #[test]
    fn a_directory_whose_parent_was_not_synced_takes_its_files_with_it() {
        // The directory's own entry in the root is never synced: a cut that keeps none of
        // the unsynced operations loses it, and the synced file in it.
        let root = Path::new("/sim-unit-3");
        let mut lost = false;
        for seed in 0..64 {
            let sim = SimDisk::new(&root.join(format!("s{seed}")), seed);
            let disk = sim.mount();
            let dir = root.join(format!("s{seed}")).join("d");
            disk.0.create_dir(&dir).unwrap();
            disk.create(&dir.join("f")).unwrap().sync_data().unwrap();
            disk.sync_dir(&dir).unwrap();
            sim.power_cut();
            lost |= !sim.exists(&dir.join("f"));
        }
        assert!(lost);
    }

    #[test]
    fn direct_writes_are_durable_when_they_return_and_refuse_misalignment() {
        let root = Path::new("/sim-unit-4");
        let sim = SimDisk::new(root, 3);
        let disk = sim.mount();
        let path = root.join("f");
        disk.create(&path).unwrap().sync_data().unwrap();
        disk.sync_dir(root).unwrap();
        let direct = disk.open_direct(&path).unwrap();
        let mut buf = vec![0u8; 2048];
        let start = buf.as_ptr().align_offset(512);
        buf[start..start + 512].fill(9);
        let err = direct
            .write_all_at(&buf[start..start + 100], 0)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        direct.write_all_at(&buf[start..start + 512], 0).unwrap();
        sim.power_cut();
        assert_eq!(sim.mount().read(&path).unwrap(), vec![9u8; 512]);
    }
}
