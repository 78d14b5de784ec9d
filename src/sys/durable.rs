//! The one way popfetch makes a file durable: write a temporary file, fsync it, put it
//! in place with link or rename, then fsync the directory so that the new name
//! survives a power cut too. A guard removes the temporary file on every early return.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A file being written under a temporary name. Dropped without being placed, it
/// removes itself, so a failed write never leaves a partial file behind.
pub(crate) struct TempFile {
    path: PathBuf,
    file: File,
    placed: bool,
}

impl TempFile {
    /// Creates `path`, which must not exist yet, readable by its owner only.
    pub(crate) fn create(path: PathBuf) -> io::Result<TempFile> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(TempFile {
            path,
            file,
            placed: false,
        })
    }

    /// A temporary file beside `path`, to replace it: `.NAME.PID.tmp`, one a
    /// killed writer of the same pid left removed first.
    fn beside(path: &Path) -> io::Result<TempFile> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp_path = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&temp_path);
        TempFile::create(temp_path)
    }

    pub(crate) fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Keeps the file under its temporary name, not yet durable: the caller makes a
    /// batch durable at once (one `syncfs`) and then [`place`]s each file.
    pub(crate) fn keep(mut self) {
        self.placed = true;
    }

    /// Makes the content durable and atomically replaces `dest` with it.
    pub(crate) fn rename_into(mut self, dest: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        fs::rename(&self.path, dest)?;
        self.placed = true;
        sync_parent(dest)
    }
}

/// Replaces `path` whole with `bytes`, owner-only, atomically and durably: a
/// temporary file beside it (one a killed writer of the same pid left is
/// cleared first), fsync, rename, fsync of the directory.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_with(path, |out| out.write_all(bytes))
}

/// [`replace`], with the content written by `write` through a buffer instead of
/// held whole in memory first: a state of 100,000 messages is some 6 MB.
pub(crate) fn replace_with<T>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<T>,
) -> io::Result<T> {
    let mut temp = TempFile::beside(path)?;
    let mut out = io::BufWriter::with_capacity(64 << 10, temp.file());
    let value = write(&mut out)?;
    // Every byte in the file before its fsync; a failed write removes the file.
    out.flush()?;
    drop(out);
    temp.rename_into(path)?;
    Ok(value)
}

/// Replaces `path` whole with `bytes`, owner-only and atomically but not
/// durably: no fsync. For hints whose loss in a power cut costs only work or a
/// figure (the glance, the status record), never mail; their readers take an
/// empty, torn or missing file for no file. Each fsync it spares is a journal
/// commit that every account syncing at once would wait for.
pub(crate) fn replace_lazily(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temp = TempFile::beside(path)?;
    temp.file().write_all(bytes)?;
    fs::rename(&temp.path, path)?;
    temp.placed = true;
    Ok(())
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.placed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes to a file and starts the kernel's writeback every few MiB, without waiting
/// for it, so that a large message is mostly on disk by the time the batch's
/// `syncfs` runs, which then waits for the tail only. Durability still comes from
/// that sync; this only overlaps the disk with the download.
pub(crate) struct Writeback<'a> {
    file: &'a mut File,
    written: u64,
    started: u64,
}

/// How much is written before writeback of it is started.
const WRITEBACK_CHUNK: u64 = 8 << 20;

impl<'a> Writeback<'a> {
    pub(crate) fn new(file: &'a mut File) -> Writeback<'a> {
        Writeback {
            file,
            written: 0,
            started: 0,
        }
    }

    #[cfg(target_os = "linux")]
    fn start_writeback(&mut self) {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (
            libc::off64_t::try_from(self.started),
            libc::off64_t::try_from(self.written - self.started),
        ) else {
            return;
        };
        // SAFETY: a plain system call on a file descriptor this struct borrows; it
        // reads no memory of ours. Failure only loses the hint, so it is ignored.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                offset,
                len,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.started = self.written;
    }

    #[cfg(not(target_os = "linux"))]
    fn start_writeback(&mut self) {}
}

impl io::Write for Writeback<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_CHUNK {
            self.start_writeback();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Gives the file at `temp` the name `dest` with a hard link, which never replaces an
/// existing file, and drops the temporary name.
pub(crate) fn place(temp: &Path, dest: &Path) -> io::Result<()> {
    match fs::hard_link(temp, dest) {
        Ok(()) => {
            // A leftover temporary name is harmless: recovery removes it.
            let _ = fs::remove_file(temp);
            Ok(())
        }
        // Some file systems have no hard links; the name is unique, so a rename
        // cannot replace anything either.
        Err(e) if e.kind() == io::ErrorKind::Unsupported || e.raw_os_error() == Some(1) => {
            fs::rename(temp, dest)
        }
        Err(e) => Err(e),
    }
}

/// fsyncs the directory that holds `path`, making a new or renamed entry durable.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Makes the files `names` in `dir` durable. On Linux, one `syncfs(2)` of the
/// file system: one journal commit for the whole batch instead of one per file.
/// Elsewhere, an fsync per file: `File::sync_all`, which on macOS is
/// `fcntl(F_FULLFSYNC)` (plain fsync there leaves data in the drive's cache).
pub(crate) fn sync_files(dir: &Path, names: &[String]) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let _ = names;
        rustix::fs::syncfs(&File::open(dir)?).map_err(io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        names
            .iter()
            .try_for_each(|name| File::open(dir.join(name))?.sync_all())
    }
}

/// Creates a directory and its parents, owner-only, and makes the new entries durable.
pub(crate) fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => sync_parent(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens `path` for reading and writing, creating it private to its owner (mode
/// 0600) if it is missing and never truncating it: a lock file, or a mailbox that
/// is locked before it is appended to.
pub(crate) fn open_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_temp_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        {
            let mut t = TempFile::create(path.clone()).unwrap();
            t.file().write_all(b"half").unwrap();
        }
        assert!(!path.exists());
    }

    #[test]
    fn placing_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("d");
        fs::write(&dest, b"old").unwrap();
        let temp = dir.path().join("t");
        fs::write(&temp, b"new").unwrap();
        assert!(place(&temp, &dest).is_err());
        assert_eq!(fs::read(&dest).unwrap(), b"old");
    }

    /// A write that fails half-way leaves the old file whole and no temporary file.
    #[test]
    fn a_failed_streamed_replace_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("d");
        fs::write(&dest, b"old").unwrap();
        let failed = replace_with(&dest, |out| {
            out.write_all(&[b'x'; 100_000])?;
            Err::<(), _>(io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(
            replace_with(&dest, |out| out.write_all(b"new").map(|()| 7)).unwrap(),
            7
        );
        assert_eq!(fs::read(&dest).unwrap(), b"new");
    }

    #[test]
    fn rename_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("d");
        fs::write(&dest, b"old").unwrap();
        let mut t = TempFile::create(dir.path().join("t")).unwrap();
        t.file().write_all(b"new").unwrap();
        t.rename_into(&dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
    }
}
