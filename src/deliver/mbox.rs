//! Delivery into an mbox file in mboxrd format: a `From SENDER DATE` line, every
//! `^>*From ` line quoted with one more `>`, a blank line after each message.
//!
//! The message is first formatted into a spool file, so the mbox is locked only for
//! the append and the exact bytes (length and checksum) are known before the first
//! one lands. The append happens under an fcntl lock and a dotlock, the way Debian's
//! MUAs and MDAs lock (Debian Policy §11.6), is fsynced, and is cut back to the
//! original length on any failure.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rustix::fs::{fcntl_lock, FlockOperation};

use crate::sys::durable::open_private;

use super::{
    copy_message, envelope, Announce, Class, DeliverError, Kind, Recovered, Target, TargetError,
};

/// `mbox:PATH`. Waiting for the mbox's locks is bounded by the account's `timeout`.
pub(crate) const KIND: Kind = Kind {
    name: "mbox",
    takes: "PATH",
    parse: |rest, env| {
        env.path_spec(rest, |path, context| {
            Ok(Box::new(MboxTarget::open(path, context.timeout)?))
        })
    },
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum MboxError {
    /// The local side failed: disk full, permissions, I/O error.
    #[error("cannot deliver into {path}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "the mbox {path} stayed locked by another program (lock {lock}); the next run tries again"
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("the mbox {path} changed after offset {offset} in a way popfetch cannot account for; check the end of the file by hand")]
    Conflict { path: PathBuf, offset: u64 },
}

impl TargetError for MboxError {
    fn class(&self) -> Class {
        match self {
            MboxError::Locked { .. } => Class::Temporary,
            MboxError::Io { .. } | MboxError::Conflict { .. } => Class::Failed,
        }
    }
}

/// A dotlock older than this is left over from a dead process (procmail's default).
const STALE_DOTLOCK: Duration = Duration::from_secs(300);

pub(crate) struct MboxTarget {
    path: PathBuf,
    lock_wait: Duration,
}

impl MboxTarget {
    /// Delivers to the mbox at `path`, created on first delivery. Waiting for its
    /// locks is bounded by `lock_wait`.
    pub(crate) fn open(path: &Path, lock_wait: Duration) -> Result<MboxTarget, DeliverError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::sys::durable::create_dir_all(dir).map_err(|source| MboxError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        Ok(MboxTarget {
            path: path.to_path_buf(),
            lock_wait,
        })
    }

    fn local(&self) -> impl Fn(io::Error) -> MboxError + '_ {
        |source| MboxError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Formats the message into an anonymous spool file next to the mbox.
    fn spool(&self, message: &mut dyn Read) -> Result<Spool, DeliverError> {
        let head = envelope::read_head(message).map_err(DeliverError::Source)?;
        let from_line = format!(
            "From {} {}\n",
            envelope::sender(&head),
            chrono::Utc::now().format("%a %b %e %H:%M:%S %Y")
        );
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let file = tempfile::tempfile_in(dir)
            .or_else(|_| tempfile::tempfile())
            .map_err(self.local())?;
        let mut out = Summed::new(BufWriter::with_capacity(64 * 1024, file));
        out.write_all(from_line.as_bytes()).map_err(self.local())?;
        let mut quoted = Quoter::new(&mut out);
        copy_message(
            &mut io::Cursor::new(head).chain(message),
            &mut quoted,
            self.local(),
        )?;
        quoted.finish().map_err(self.local())?;
        let (len, crc) = (out.len, out.crc.clone().finalize());
        let mut file = out
            .inner
            .into_inner()
            .map_err(|e| self.local()(e.into_error()))?;
        file.rewind().map_err(self.local())?;
        Ok(Spool {
            file,
            mark: Mark {
                offset: 0,
                len,
                crc,
                head_len: from_line.len() as u64,
                head_crc: crc32fast::hash(from_line.as_bytes()),
            },
        })
    }
}

struct Spool {
    file: File,
    mark: Mark,
}

/// Where a delivery goes and what it will look like, as recorded in the state:
/// `OFFSET:LEN:CRC:FROMLEN:FROMCRC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    offset: u64,
    len: u64,
    crc: u32,
    head_len: u64,
    head_crc: u32,
}

impl Mark {
    fn encode(&self) -> String {
        format!(
            "{}:{}:{:08x}:{}:{:08x}",
            self.offset, self.len, self.crc, self.head_len, self.head_crc
        )
    }

    /// Only what `encode` writes: decimal digits and eight hex digits, nothing else.
    fn decode(text: &str) -> Option<Mark> {
        let mut parts = text.split(':');
        let mut next = || parts.next();
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        let crc = |s: &str| {
            (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(s, 16).ok())
                .flatten()
        };
        let mark = Mark {
            offset: number(next()?)?,
            len: number(next()?)?,
            crc: crc(next()?)?,
            head_len: number(next()?)?,
            head_crc: crc(next()?)?,
        };
        next().is_none().then_some(mark)
    }
}

impl Target for MboxTarget {
    fn deliver(&mut self, message: &mut dyn Read, announce: Announce) -> Result<u64, DeliverError> {
        let Spool { mut file, mut mark } = self.spool(message)?;
        let locked = MboxLock::acquire(&self.path, self.lock_wait)?;
        let mbox = &locked.file;
        let mut offset = mbox.metadata().map_err(self.local())?.len();
        // A last line without its newline would swallow our From_ line.
        if offset > 0 && last_byte(mbox, offset).map_err(self.local())? != b'\n' {
            mbox.write_all_at(b"\n", offset).map_err(self.local())?;
            offset += 1;
        }
        mark.offset = offset;
        announce(&mark.encode()).map_err(DeliverError::State)?;
        let appended = (|| {
            let mut writer: &File = mbox;
            writer.seek(SeekFrom::Start(offset))?;
            let copied = io::copy(&mut file, &mut writer)?;
            if copied != mark.len {
                return Err(io::Error::other("the spool file changed under us"));
            }
            mbox.sync_data()
        })();
        if let Err(e) = appended {
            // Never leave half a message in the mailbox.
            let _ = mbox.set_len(offset);
            let _ = mbox.sync_data();
            return Err(self.local()(e).into());
        }
        Ok(mark.len)
    }

    fn recover(&mut self, location: &str) -> Result<Recovered, DeliverError> {
        let conflict = |offset| MboxError::Conflict {
            path: self.path.clone(),
            offset,
        };
        let mark = Mark::decode(location).ok_or_else(|| DeliverError::BadLocation {
            target: self.path.clone(),
            location: location.to_string(),
        })?;
        let locked = MboxLock::acquire(&self.path, self.lock_wait)?;
        let mbox = &locked.file;
        let size = mbox.metadata().map_err(self.local())?.len();
        if size <= mark.offset {
            return Ok(Recovered::NotDelivered);
        }
        let crc_of = |start, len| crc_range(mbox, start, len).map_err(self.local());
        if size >= mark.offset + mark.len && crc_of(mark.offset, mark.len)? == mark.crc {
            return Ok(Recovered::Delivered);
        }
        // What lies past the offset is ours only if it starts with our From_ line
        // and no other message follows it; then it is a partial append, cut it off.
        let ours = size < mark.offset + mark.len
            && (size - mark.offset < mark.head_len
                || crc_of(mark.offset, mark.head_len)? == mark.head_crc)
            && !holds_message_start(mbox, mark.offset + 1, size).map_err(self.local())?;
        if !ours {
            return Err(conflict(mark.offset).into());
        }
        mbox.set_len(mark.offset).map_err(self.local())?;
        mbox.sync_data().map_err(self.local())?;
        Ok(Recovered::NotDelivered)
    }
}

fn last_byte(file: &File, size: u64) -> io::Result<u8> {
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, size - 1)?;
    Ok(byte[0])
}

fn crc_range(file: &File, start: u64, len: u64) -> io::Result<u32> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0;
    while done < len {
        let want = chunk(&buf, len - done);
        file.read_exact_at(&mut buf[..want], start + done)?;
        hasher.update(&buf[..want]);
        done += want as u64;
    }
    Ok(hasher.finalize())
}

/// How much of `buf` one read fills when `left` bytes remain. A `left` too large
/// for a `usize` (on a 32-bit system) is certainly more than the buffer holds.
fn chunk(buf: &[u8], left: u64) -> usize {
    usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()))
}

/// Whether `\nFrom ` occurs in `[start, end)`: the start of another message.
fn holds_message_start(file: &File, start: u64, end: u64) -> io::Result<bool> {
    let needle = b"\nFrom ";
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = start.saturating_sub(1);
    while at < end {
        let want = chunk(&buf, end - at);
        file.read_exact_at(&mut buf[..want], at)?;
        if memchr::memmem::find(&buf[..want], needle).is_some() {
            return Ok(true);
        }
        if want < needle.len() {
            break;
        }
        // Overlap so a needle split across reads is still found.
        at += (want - (needle.len() - 1)) as u64;
        if want < buf.len() {
            break;
        }
    }
    Ok(false)
}

/// Counts and checksums what passes through.
struct Summed<W> {
    inner: W,
    len: u64,
    crc: crc32fast::Hasher,
}

impl<W: Write> Summed<W> {
    fn new(inner: W) -> Self {
        Summed {
            inner,
            len: 0,
            crc: crc32fast::Hasher::new(),
        }
    }
}

impl<W: Write> Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The mboxrd quoting as a stream: a line matching `^>*From ` gets one more `>`.
/// Only the start of a line is held back while it could still become `>*From `.
pub(crate) struct Quoter<W: Write> {
    out: W,
    at_line_start: bool,
    pending: Vec<u8>,
    last: Option<u8>,
}

impl<W: Write> Quoter<W> {
    pub(crate) fn new(out: W) -> Self {
        Quoter {
            out,
            at_line_start: true,
            pending: Vec::new(),
            last: None,
        }
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(&b) = bytes.last() {
            self.last = Some(b);
        }
        self.out.write_all(bytes)
    }

    /// Writes what is held back, ends the message with a newline, and adds the blank
    /// line that separates it from the next.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        self.emit(&pending)?;
        if !matches!(self.last, None | Some(b'\n')) {
            self.emit(b"\n")?;
        }
        self.emit(b"\n")?;
        self.out.flush()
    }
}

impl<W: Write> Write for Quoter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if !self.at_line_start {
                match memchr::memchr(b'\n', rest) {
                    Some(p) => {
                        self.emit(&rest[..=p])?;
                        rest = &rest[p + 1..];
                        self.at_line_start = true;
                    }
                    None => {
                        self.emit(rest)?;
                        rest = &[];
                    }
                }
                continue;
            }
            self.pending.push(rest[0]);
            rest = &rest[1..];
            let unquoted = self.pending.iter().position(|&b| b != b'>');
            let tail = unquoted.map_or(&[][..], |i| &self.pending[i..]);
            if tail == b"From " {
                let pending = std::mem::take(&mut self.pending);
                self.emit(b">")?;
                self.emit(&pending)?;
                self.at_line_start = false;
            } else if !b"From ".starts_with(tail) {
                let pending = std::mem::take(&mut self.pending);
                self.emit(&pending)?;
                self.at_line_start = pending.last() == Some(&b'\n');
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// An mbox held under both locks; dropping it releases them.
struct MboxLock {
    file: File,
    dotlock: Option<PathBuf>,
}

impl MboxLock {
    /// fcntl first, then the dotlock (Debian Policy §11.6), waiting at most `wait`.
    fn acquire(path: &Path, wait: Duration) -> Result<MboxLock, MboxError> {
        let local = |source| MboxError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dotlock_path = with_suffix(path, ".lock");
        let locked = || MboxError::Locked {
            path: path.to_path_buf(),
            lock: dotlock_path.clone(),
        };
        // The config bounds `wait`; should a caller not, a deadline past the clock's
        // range means waiting without end rather than a panic.
        let deadline = Instant::now().checked_add(wait);
        let expired = || deadline.is_some_and(|d| Instant::now() >= d);
        let pause = || std::thread::sleep(Duration::from_millis(100));
        let file = open_private(path).map_err(local)?;
        loop {
            match fcntl_lock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::ACCESS => {
                    if expired() {
                        return Err(locked());
                    }
                    pause();
                }
                Err(e) => return Err(local(e.into())),
            }
        }
        loop {
            match create_dotlock(path, &dotlock_path) {
                Ok(true) => {
                    return Ok(MboxLock {
                        file,
                        dotlock: Some(dotlock_path),
                    })
                }
                // A directory we may not write to (such as /var/mail without the
                // mail group): the fcntl lock is all we can take.
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    return Ok(MboxLock {
                        file,
                        dotlock: None,
                    })
                }
                Err(e) => return Err(local(e)),
                Ok(false) => {
                    if is_stale(&dotlock_path) {
                        let _ = fs::remove_file(&dotlock_path);
                        continue;
                    }
                    if expired() {
                        return Err(locked());
                    }
                    pause();
                }
            }
        }
    }
}

impl Drop for MboxLock {
    fn drop(&mut self) {
        if let Some(dotlock) = &self.dotlock {
            let _ = fs::remove_file(dotlock);
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates the dotlock the NFS-safe way: make a unique file, hard-link it to the
/// lock name, and trust the link count rather than link()'s return value, which NFS
/// may lose (the method of liblockfile and procmail).
fn create_dotlock(mbox: &Path, lock: &Path) -> io::Result<bool> {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let unique = with_suffix(mbox, &format!(".lock.{}.{nanos}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&unique)?;
    let written = writeln!(file, "{}", std::process::id());
    let linked = written.and_then(|()| {
        let _ = fs::hard_link(&unique, lock);
        Ok(fs::metadata(&unique)?.nlink() == 2)
    });
    let _ = fs::remove_file(&unique);
    linked
}

/// A dotlock is stale when it is old, or when it names a process that no longer
/// exists (liblockfile's rule), such as a popfetch killed while holding it.
fn is_stale(lock: &Path) -> bool {
    let old = fs::metadata(lock)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok())
        .is_some_and(|age| age > STALE_DOTLOCK);
    let holder = fs::read_to_string(lock)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw);
    let dead = holder
        .is_some_and(|pid| rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH));
    old || dead
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote_in_chunks(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut q = Quoter::new(&mut out);
        for piece in input.chunks(chunk) {
            q.write_all(piece).unwrap();
        }
        q.finish().unwrap();
        out
    }

    #[test]
    fn a_lock_wait_past_the_clock_is_no_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let lock = MboxLock::acquire(&path, Duration::from_secs(u64::MAX)).unwrap();
        drop(lock);
    }

    #[test]
    fn quoting_is_mboxrd_at_any_split() {
        let input = b"From here\n>From there\n>>From x\nFrom\nFro\n>Fr\n>\nxFrom y\n\nFrom end";
        let expected =
            b">From here\n>>From there\n>>>From x\nFrom\nFro\n>Fr\n>\nxFrom y\n\n>From end\n\n";
        for chunk in 1..input.len() + 1 {
            assert_eq!(quote_in_chunks(input, chunk), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn message_ending_in_partial_prefix_is_kept() {
        assert_eq!(quote_in_chunks(b"a\n>Fro", 1), b"a\n>Fro\n\n");
        assert_eq!(quote_in_chunks(b"", 1), b"\n");
    }

    fn deliver(target: &mut MboxTarget, message: &[u8]) -> String {
        let mut location = String::new();
        target
            .deliver(&mut &message[..], &mut |l| {
                location = l.to_string();
                Ok(())
            })
            .unwrap();
        location
    }

    #[test]
    fn appends_with_from_line_and_blank_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mail/inbox");
        let mut target = MboxTarget::open(&path, Duration::from_secs(1)).unwrap();
        deliver(&mut target, b"Return-Path: <a@x>\nSubject: 1\n\nFrom me\n");
        let second = deliver(&mut target, b"From: b@y\n\nno newline");
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert!(lines[0].starts_with("From a@x "), "{text}");
        assert_eq!(lines[4], ">From me");
        assert_eq!(lines[5], "");
        assert!(lines[6].starts_with("From b@y "), "{text}");
        assert!(text.ends_with("no newline\n\n"));
        assert!(!with_suffix(&path, ".lock").exists());
        assert_eq!(target.recover(&second).unwrap(), Recovered::Delivered);
    }

    #[test]
    fn recovery_cuts_off_a_partial_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let mut target = MboxTarget::open(&path, Duration::from_secs(1)).unwrap();
        deliver(&mut target, b"Subject: 1\n\none\n");
        let complete = fs::read(&path).unwrap();
        let second = deliver(&mut target, b"Subject: 2\n\ntwo\n");
        let full = fs::read(&path).unwrap();

        // Killed halfway through the second append.
        fs::write(&path, &full[..complete.len() + 20]).unwrap();
        assert_eq!(target.recover(&second).unwrap(), Recovered::NotDelivered);
        assert_eq!(fs::read(&path).unwrap(), complete);

        // Killed before the append started.
        assert_eq!(target.recover(&second).unwrap(), Recovered::NotDelivered);

        // Killed halfway, and then another program appended a message.
        let mut tangled = full[..complete.len() + 20].to_vec();
        tangled.extend_from_slice(b"\nFrom other@x Mon Jan  1 00:00:00 2024\nhi\n\n");
        fs::write(&path, &tangled).unwrap();
        let err = target.recover(&second).unwrap_err();
        assert!(
            matches!(err.of_kind(), Some(MboxError::Conflict { .. })),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), tangled, "nothing is touched");
    }

    #[test]
    fn held_lock_times_out_as_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        // Held by a live process (ourselves), so not stale.
        fs::write(
            with_suffix(&path, ".lock"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        let mut target = MboxTarget::open(&path, Duration::from_millis(300)).unwrap();
        let err = target
            .deliver(&mut &b"x\n"[..], &mut |_| Ok(()))
            .unwrap_err();
        assert_eq!(err.class(), Class::Temporary, "{err}");
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn dotlock_of_a_dead_process_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        fs::write(with_suffix(&path, ".lock"), format!("{dead}\n")).unwrap();
        let mut target = MboxTarget::open(&path, Duration::from_millis(300)).unwrap();
        deliver(&mut target, b"x\n");
        assert!(!with_suffix(&path, ".lock").exists());
    }

    #[test]
    fn mark_round_trips() {
        let mark = Mark {
            offset: 10,
            len: 20,
            crc: 0xdeadbeef,
            head_len: 5,
            head_crc: 7,
        };
        assert_eq!(Mark::decode(&mark.encode()), Some(mark));
        assert_eq!(Mark::decode("1:2"), None);
        // Only what encode writes (issue 15, bug 8).
        for bad in [
            "+10:20:deadbeef:5:00000007",
            "10:20:deadbeef:5:7",
            "10:20:DEADBEEG:5:00000007",
            "/etc/passwd",
            "../x",
        ] {
            assert_eq!(Mark::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn recovery_refuses_a_location_that_is_not_a_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        fs::write(&path, b"From x\n\nkept\n").unwrap();
        let mut target = MboxTarget::open(&path, Duration::from_millis(300)).unwrap();
        let err = target.recover("../inbox").unwrap_err();
        assert!(matches!(err, DeliverError::BadLocation { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"From x\n\nkept\n");
    }
}
