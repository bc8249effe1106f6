//! The files and directories the storage writes, behind one small interface.
//!
//! Every file the log and the snapshots keep goes through a [`Disk`]: the write-ahead file
//! and snapshot files as [`DiskFile`]s, directory changes (create, rename, remove) and
//! their syncs as calls on the [`Disk`], and the log database (redb) through redb's own
//! `StorageBackend` interface. [`Disk::real`] is the operating system's file system (what
//! production runs on); with the `test-support` feature, `sim::SimDisk` keeps every
//! file in memory and can simulate a power cut (see `store/sim.rs`).
//!
//! # Durability rules the storage follows
//!
//! - A file's data is durable once [`DiskFile::sync_data`] returns, or when a write through
//!   [`Disk::open_direct`] returns (`O_DIRECT | O_DSYNC`).
//! - A directory entry (a created file or directory, a rename, a removal) is durable once
//!   the directory that holds it is synced ([`Disk::sync_dir`]). [`Disk::create_dir_all`]
//!   syncs each directory it creates into its parent.

use super::StoreError;
use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// One open file.
#[allow(clippy::len_without_is_empty)]
pub trait DiskFile: Send + Sync + Debug {
    /// Fill `buf` from `offset` (an error if the file ends first).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Write all of `buf` at `offset`, growing the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Set the file's length (new bytes are zeros).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Make the file's data (and its length) durable.
    fn sync_data(&self) -> io::Result<()>;
}

/// The operations on files and directories the storage needs.
pub(crate) trait Backend: Send + Sync + Debug {
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    fn is_dir(&self, path: &Path) -> bool;
    fn open(&self, path: &Path, create: bool, truncate: bool) -> io::Result<Box<dyn DiskFile>>;
    fn open_direct(&self, path: &Path) -> Option<Box<dyn DiskFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn create_database(
        &self,
        path: &Path,
        builder: &redb::Builder,
    ) -> Result<redb::Database, redb::DatabaseError>;
}

/// Where the storage keeps its files: the real file system, or (tests) a simulated one.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Disk(pub(crate) Arc<dyn Backend>);

impl Disk {
    /// The operating system's file system.
    pub fn real() -> Disk {
        Disk(Arc::new(RealDisk))
    }

    /// The disk that holds `dir`: the real one, unless (test builds only) a simulated disk
    /// was mounted over a directory that contains it.
    pub fn for_dir(dir: &Path) -> Disk {
        #[cfg(feature = "test-support")]
        if let Some(disk) = super::sim::mounted(dir) {
            return disk;
        }
        let _ = dir;
        Disk::real()
    }

    /// Create `dir` and any missing parents, syncing each new directory's parent so the
    /// new entry survives a power cut; then sync `dir`'s parent once more in any case (a
    /// directory created by an earlier run that crashed may not have been synced).
    ///
    /// # Errors
    /// Creating or syncing failed.
    pub fn create_dir_all(&self, dir: &Path) -> Result<(), StoreError> {
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(path) = at {
            if path.as_os_str().is_empty() || self.0.is_dir(path) {
                break;
            }
            missing.push(path);
            at = path.parent();
        }
        for path in missing.iter().rev() {
            match self.0.create_dir(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.0.is_dir(path) => {}
                Err(e) => return Err(StoreError::io(*path)(e)),
            }
            self.sync_parent(path)?;
        }
        if missing.is_empty() {
            self.sync_parent(dir)?;
        }
        Ok(())
    }

    /// Sync the directory that holds `path`.
    ///
    /// # Errors
    /// The sync failed.
    pub fn sync_parent(&self, path: &Path) -> Result<(), StoreError> {
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => self.sync_dir(parent),
            _ => self.sync_dir(Path::new(".")),
        }
    }

    /// Sync directory `dir`: the entries created, renamed or removed in it become durable.
    ///
    /// # Errors
    /// The sync failed ([`StoreError::Sync`]).
    pub fn sync_dir(&self, dir: &Path) -> Result<(), StoreError> {
        if cfg!(feature = "mutant-skip-dir-sync") {
            return Ok(());
        }
        self.0.sync_dir(dir).map_err(StoreError::sync(dir))
    }

    /// Whether `path` exists.
    pub fn exists(&self, path: &Path) -> bool {
        self.0.exists(path)
    }

    /// Open `path` for reading and writing.
    ///
    /// # Errors
    /// It does not exist, or cannot be opened.
    pub fn open(&self, path: &Path) -> Result<Box<dyn DiskFile>, StoreError> {
        self.0
            .open(path, false, false)
            .map_err(StoreError::io(path))
    }

    /// Create `path` empty (or empty it), for writing. Its directory entry is durable only
    /// once its directory is synced.
    ///
    /// # Errors
    /// It cannot be created.
    pub fn create(&self, path: &Path) -> Result<Box<dyn DiskFile>, StoreError> {
        self.0.open(path, true, true).map_err(StoreError::io(path))
    }

    /// `path` opened for direct, synchronous writes (`O_DIRECT | O_DSYNC`): a write is
    /// durable when it returns. Offsets and lengths must be whole 512-byte sectors and
    /// the buffer aligned to 512 bytes. `None` where the platform or file system refuses.
    pub fn open_direct(&self, path: &Path) -> Option<Box<dyn DiskFile>> {
        self.0.open_direct(path)
    }

    /// Rename `from` to `to` (in the same directory), replacing `to`.
    ///
    /// # Errors
    /// The rename failed.
    pub fn rename(&self, from: &Path, to: &Path) -> Result<(), StoreError> {
        self.0.rename(from, to).map_err(StoreError::io(to))
    }

    /// Remove the file `path`.
    ///
    /// # Errors
    /// The removal failed.
    pub fn remove_file(&self, path: &Path) -> Result<(), StoreError> {
        self.0.remove_file(path).map_err(StoreError::io(path))
    }

    /// The names in directory `dir`.
    ///
    /// # Errors
    /// It cannot be read.
    pub fn read_dir(&self, dir: &Path) -> Result<Vec<String>, StoreError> {
        self.0.read_dir(dir).map_err(StoreError::io(dir))
    }

    /// All of file `path`.
    ///
    /// # Errors
    /// It cannot be opened or read.
    pub fn read(&self, path: &Path) -> Result<Vec<u8>, StoreError> {
        let file = self
            .0
            .open(path, false, false)
            .map_err(StoreError::io(path))?;
        read_all(file.as_ref()).map_err(StoreError::io(path))
    }

    /// Open or create the redb database `path` with `builder`'s settings.
    ///
    /// # Errors
    /// What redb reports.
    pub(crate) fn create_database(
        &self,
        path: &Path,
        builder: &redb::Builder,
    ) -> Result<redb::Database, redb::DatabaseError> {
        self.0.create_database(path, builder)
    }
}

/// All of `file`.
pub(crate) fn read_all(file: &dyn DiskFile) -> io::Result<Vec<u8>> {
    let len = usize::try_from(file.len()?).map_err(io::Error::other)?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// The operating system's file system.
#[derive(Debug)]
struct RealDisk;

/// A real file.
#[derive(Debug)]
struct RealFile(std::fs::File);

impl DiskFile for RealFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.0, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Backend for RealDisk {
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn open(&self, path: &Path, create: bool, truncate: bool) -> io::Result<Box<dyn DiskFile>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(truncate)
            .open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    #[cfg(target_os = "linux")]
    fn open_direct(&self, path: &Path) -> Option<Box<dyn DiskFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)
            .ok()?;
        Some(Box::new(RealFile(file)))
    }

    #[cfg(not(target_os = "linux"))]
    fn open_direct(&self, _path: &Path) -> Option<Box<dyn DiskFile>> {
        None
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for item in std::fs::read_dir(dir)? {
            if let Ok(name) = item?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create_database(
        &self,
        path: &Path,
        builder: &redb::Builder,
    ) -> Result<redb::Database, redb::DatabaseError> {
        builder.create(path)
    }
}
