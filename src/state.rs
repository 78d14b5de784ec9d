//! The UIDL state of one account: which unique-ids have been delivered (and when they
//! were first seen), and which deliveries were under way when a run died.
//!
//! It is an append-only journal of checksummed lines, so recording a message costs
//! O(1), and it is compacted atomically (temporary file, fsync, rename, fsync the
//! directory) when it has grown. Each line is `RECORD<TAB>CRC32`:
//!
//! - `I uid location`: a delivery of `uid` to `location` is about to start. Made durable
//!   before the delivery can be (a staged batch syncs its intents before it links its
//!   files), so a restart can look at `location` and tell whether it completed.
//! - `D uid time`: `uid` was delivered; `time` is when it was first seen (Unix seconds).
//! - `A uid`: the delivery announced by `I` was abandoned and left nothing behind.
//! - `F uid`: `uid` is no longer on the server and is forgotten.
//!
//! A final line without its newline is a write cut short by a crash and is ignored;
//! any other damage stops popfetch instead of guessing.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use foldhash::{HashMap, HashMapExt};

use crate::durable::TempFile;

const MAGIC: &str = "popfetch-state";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} the state file {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the state file {path} is damaged at line {line} ({reason}); popfetch will not guess which messages were delivered. Restore it from a backup or remove the bad line by hand; moving it aside makes popfetch fetch every message on the server again")]
    Damaged {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("the state file {path} has format version {found}, written by a newer popfetch; upgrade popfetch")]
    Newer { path: PathBuf, found: u32 },
}

/// A read-only view of the state, for previews.
#[derive(Debug, Default)]
pub struct Snapshot {
    delivered: HashMap<String, u64>,
}

impl Snapshot {
    pub fn delivered_uids(&self) -> impl Iterator<Item = &str> {
        self.delivered.keys().map(String::as_str)
    }
}

impl crate::policy::Known for Snapshot {
    fn first_seen(&self, uid: &str) -> Option<u64> {
        self.delivered.get(uid).copied()
    }

    fn uids(&self) -> Vec<&str> {
        self.delivered_uids().collect()
    }

    fn count(&self) -> usize {
        self.delivered.len()
    }
}

impl crate::policy::Known for UidlState {
    fn first_seen(&self, uid: &str) -> Option<u64> {
        self.delivered.get(uid).copied()
    }

    fn uids(&self) -> Vec<&str> {
        self.delivered_uids().collect()
    }

    fn count(&self) -> usize {
        self.delivered.len()
    }
}

/// A delivery that was under way when a run died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    pub uid: String,
    pub location: String,
}

/// The state of one account, open for appending.
pub struct UidlState {
    path: PathBuf,
    /// Open for appending; `None` only inside [`UidlState::peek`].
    journal: Option<File>,
    /// Delivered unique-ids and when each was first seen.
    delivered: HashMap<String, u64>,
    /// Announced deliveries not yet completed or abandoned.
    pending: BTreeMap<String, String>,
    /// Lines in the journal, to decide when to compact.
    lines: usize,
    /// Length of the journal up to its last whole line.
    len: u64,
    /// Appended lines not yet fsynced.
    unsynced: bool,
}

enum Record<'a> {
    Intent(&'a str, &'a str),
    Delivered(&'a str, u64),
    Abandoned(&'a str),
    Forgotten(&'a str),
}

impl UidlState {
    /// Reads the state at `path` without changing anything on disk: no file is
    /// created and nothing is compacted (for `list` and `sync --dry-run`).
    pub fn peek(path: &Path) -> Result<Snapshot, StateError> {
        let text = match fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Snapshot::default()),
            Err(source) => {
                return Err(StateError::Io {
                    action: "read",
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let mut state = UidlState {
            path: path.to_path_buf(),
            journal: None,
            delivered: HashMap::new(),
            pending: BTreeMap::new(),
            lines: 0,
            len: 0,
            unsynced: false,
        };
        state.replay(&text)?;
        Ok(Snapshot {
            delivered: state.delivered,
        })
    }

    /// Opens the state at `path`, creating an empty one if there is none.
    pub fn open(path: &Path) -> Result<UidlState, StateError> {
        let io_err = |action| {
            let path = path.to_path_buf();
            move |source| StateError::Io {
                action,
                path,
                source,
            }
        };
        let text = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_snapshot(path, &HashMap::new(), &BTreeMap::new())
                    .map_err(io_err("create"))?;
                fs::read(path).map_err(io_err("read"))?
            }
            Err(e) => return Err(io_err("read")(e)),
        };
        let mut state = UidlState {
            path: path.to_path_buf(),
            journal: Some(open_append(path).map_err(io_err("open"))?),
            delivered: HashMap::new(),
            pending: BTreeMap::new(),
            lines: 0,
            len: text.len() as u64,
            unsynced: false,
        };
        let torn = state.replay(&text)?;
        if torn || state.bloated() {
            state.compact()?;
        }
        Ok(state)
    }

    /// Whether the journal holds many more lines than live records: a run that
    /// delivered N messages appended 2N (an intent and a delivery each).
    fn bloated(&self) -> bool {
        let live = self.delivered.len() + self.pending.len();
        self.lines > live + live / 2 + 1000
    }

    /// Compacts the journal if it has grown well past its live records, so that the
    /// next run reads one short line per message. The journal is valid either way,
    /// so a failure here (a full disk) changes nothing and is left to the next open.
    pub fn tidy(&mut self) {
        if self.journal.is_some() && self.bloated() {
            let _ = self.compact();
        }
    }

    /// Applies every line of the journal; returns whether its last line was torn.
    fn replay(&mut self, text: &[u8]) -> Result<bool, StateError> {
        let path = self.path.clone();
        let damaged = |line: usize, reason: &str| StateError::Damaged {
            path: path.clone(),
            line,
            reason: reason.to_string(),
        };
        let mut lines = Vec::with_capacity(text.len() / 32);
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', text) {
            lines.push(&text[start..end]);
            start = end + 1;
        }
        // After the final newline comes either nothing or a torn write.
        let torn = start < text.len();
        let Some(header) = lines.first() else {
            return Err(damaged(1, "the header is missing"));
        };
        let header = checked(header).ok_or_else(|| damaged(1, "bad header checksum"))?;
        let version = header
            .strip_prefix(MAGIC)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or_else(|| damaged(1, "not a popfetch state file"))?;
        if version > VERSION {
            return Err(StateError::Newer {
                path: self.path.clone(),
                found: version,
            });
        }
        // Replayed on borrowed text first: most messages have an intent and then a
        // delivery, and only what survives both is worth an allocation.
        let mut delivered: HashMap<&str, u64> = HashMap::with_capacity(lines.len());
        let mut pending: HashMap<&str, &str> = HashMap::new();
        for (index, line) in lines.iter().enumerate().skip(1) {
            let record = checked(line).ok_or_else(|| damaged(index + 1, "bad checksum"))?;
            match parse_record(record).ok_or_else(|| damaged(index + 1, "unknown record"))? {
                Record::Intent(uid, location) => {
                    pending.insert(uid, location);
                }
                Record::Delivered(uid, time) => {
                    // A compacted journal has no intents: no lookup for them.
                    if !pending.is_empty() {
                        pending.remove(uid);
                    }
                    delivered.entry(uid).or_insert(time);
                }
                Record::Abandoned(uid) => {
                    pending.remove(uid);
                }
                Record::Forgotten(uid) => {
                    delivered.remove(uid);
                }
            }
        }
        self.delivered = delivered
            .into_iter()
            .map(|(uid, time)| (uid.to_owned(), time))
            .collect();
        self.pending = pending
            .into_iter()
            .map(|(uid, location)| (uid.to_owned(), location.to_owned()))
            .collect();
        self.lines = lines.len();
        Ok(torn)
    }

    fn apply(&mut self, record: Record) {
        match record {
            Record::Intent(uid, location) => {
                self.pending.insert(uid.to_string(), location.to_string());
            }
            Record::Delivered(uid, time) => {
                self.pending.remove(uid);
                self.delivered.entry(uid.to_string()).or_insert(time);
            }
            Record::Abandoned(uid) => {
                self.pending.remove(uid);
            }
            Record::Forgotten(uid) => {
                self.delivered.remove(uid);
            }
        }
    }

    pub fn is_delivered(&self, uid: &str) -> bool {
        self.delivered.contains_key(uid)
    }

    /// When `uid` was first seen, if it has been delivered.
    pub fn first_seen(&self, uid: &str) -> Option<u64> {
        self.delivered.get(uid).copied()
    }

    /// Every delivered unique-id.
    pub fn delivered_uids(&self) -> impl Iterator<Item = &str> {
        self.delivered.keys().map(String::as_str)
    }

    /// Deliveries that a previous run announced but never finished or abandoned.
    pub fn interrupted(&self) -> Vec<Interrupted> {
        self.pending
            .iter()
            .map(|(uid, location)| Interrupted {
                uid: uid.clone(),
                location: location.clone(),
            })
            .collect()
    }

    /// Announces a delivery of `uid` to `location` before it starts. It is durable
    /// at the next [`sync`](Self::sync), which the caller makes before the delivery
    /// can become durable itself.
    pub fn record_intent(&mut self, uid: &str, location: &str) -> Result<(), StateError> {
        self.append(&format!("I {uid} {location}"))?;
        self.pending.insert(uid.to_string(), location.to_string());
        Ok(())
    }

    /// Records a completed delivery. It becomes durable at the next [`sync`](Self::sync);
    /// until then the intent record lets recovery find it.
    pub fn record_delivered(&mut self, uid: &str, first_seen: u64) -> Result<(), StateError> {
        self.append(&format!("D {uid} {first_seen}"))?;
        self.apply(Record::Delivered(uid, first_seen));
        Ok(())
    }

    /// Records that an announced delivery left nothing behind.
    pub fn record_abandoned(&mut self, uid: &str) -> Result<(), StateError> {
        self.append(&format!("A {uid}"))?;
        self.pending.remove(uid);
        Ok(())
    }

    /// Forgets unique-ids that are gone from the server.
    pub fn forget(&mut self, uids: &[String]) -> Result<(), StateError> {
        for uid in uids {
            self.append(&format!("F {uid}"))?;
            self.delivered.remove(uid);
        }
        Ok(())
    }

    /// Makes every record so far durable.
    pub fn sync(&mut self) -> Result<(), StateError> {
        if let (true, Some(journal)) = (self.unsynced, &self.journal) {
            journal.sync_data().map_err(|source| StateError::Io {
                action: "write",
                path: self.path.clone(),
                source,
            })?;
            self.unsynced = false;
        }
        Ok(())
    }

    fn append(&mut self, record: &str) -> Result<(), StateError> {
        let line = seal(record);
        let journal = self.journal.as_mut().expect("a state opened for writing");
        // One write per line, so a killed process leaves whole lines or a torn tail.
        if let Err(source) = journal.write_all(line.as_bytes()) {
            // A full disk may have taken part of the line; cut it off, or the next
            // record would be glued to it and the journal would read as damaged.
            let _ = journal.set_len(self.len);
            return Err(StateError::Io {
                action: "write",
                path: self.path.clone(),
                source,
            });
        }
        self.len += line.len() as u64;
        self.lines += 1;
        self.unsynced = true;
        Ok(())
    }

    /// Rewrites the journal as a snapshot of the live records, atomically.
    fn compact(&mut self) -> Result<(), StateError> {
        let io_err = |source| StateError::Io {
            action: "rewrite",
            path: self.path.clone(),
            source,
        };
        write_snapshot(&self.path, &self.delivered, &self.pending).map_err(io_err)?;
        let journal = open_append(&self.path).map_err(io_err)?;
        self.len = journal.metadata().map_err(io_err)?.len();
        self.journal = Some(journal);
        self.lines = 1 + self.delivered.len() + self.pending.len();
        self.unsynced = false;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

fn write_snapshot(
    path: &Path,
    delivered: &HashMap<String, u64>,
    pending: &BTreeMap<String, String>,
) -> io::Result<()> {
    let mut text = seal(&format!("{MAGIC} {VERSION}"));
    let mut uids: Vec<_> = delivered.iter().collect();
    uids.sort();
    for (uid, time) in uids {
        text.push_str(&seal(&format!("D {uid} {time}")));
    }
    for (uid, location) in pending {
        text.push_str(&seal(&format!("I {uid} {location}")));
    }
    let mut temp_name = path.as_os_str().to_owned();
    temp_name.push(format!(".tmp{}", std::process::id()));
    let mut temp = TempFile::create(PathBuf::from(temp_name))?;
    temp.file().write_all(text.as_bytes())?;
    temp.rename_into(path)
}

/// A record with its checksum and newline.
fn seal(record: &str) -> String {
    format!("{record}\t{:08x}\n", crc32fast::hash(record.as_bytes()))
}

/// The record of a sealed line, if its checksum matches.
fn checked(line: &[u8]) -> Option<&str> {
    let tab = memchr::memrchr(b'\t', line)?;
    let (record, crc) = (&line[..tab], &line[tab + 1..]);
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if crc32fast::hash(record) != crc {
        return None;
    }
    std::str::from_utf8(record).ok()
}

fn parse_record(record: &str) -> Option<Record<'_>> {
    // Words split with memchr: `str::split(' ')` cost a tenth of a replay.
    let mut rest = Some(record);
    let mut words = std::iter::from_fn(|| {
        let text = rest?;
        let (word, after) = match memchr::memchr(b' ', text.as_bytes()) {
            Some(i) => (&text[..i], Some(&text[i + 1..])),
            None => (text, None),
        };
        rest = after;
        Some(word)
    });
    let kind = words.next()?;
    let uid = words.next().filter(|u| !u.is_empty())?;
    let third = words.next();
    if words.next().is_some() {
        return None;
    }
    match (kind, third) {
        ("I", Some(location)) if !location.is_empty() => Some(Record::Intent(uid, location)),
        ("D", Some(time)) => Some(Record::Delivered(uid, time.parse().ok()?)),
        ("A", None) => Some(Record::Abandoned(uid)),
        ("F", None) => Some(Record::Forgotten(uid)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_state() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acct.state");
        (dir, path)
    }

    #[test]
    fn records_survive_reopen() {
        let (_dir, path) = temp_state();
        let mut s = UidlState::open(&path).unwrap();
        s.record_intent("u1", "loc1").unwrap();
        s.record_delivered("u1", 100).unwrap();
        s.record_intent("u2", "loc2").unwrap();
        s.record_intent("u3", "loc3").unwrap();
        s.record_abandoned("u3").unwrap();
        s.sync().unwrap();
        drop(s);
        let s = UidlState::open(&path).unwrap();
        assert!(s.is_delivered("u1"));
        assert_eq!(s.first_seen("u1"), Some(100));
        assert!(!s.is_delivered("u2"));
        assert_eq!(
            s.interrupted(),
            [Interrupted {
                uid: "u2".into(),
                location: "loc2".into()
            }]
        );
    }

    #[test]
    fn forget_removes() {
        let (_dir, path) = temp_state();
        let mut s = UidlState::open(&path).unwrap();
        s.record_delivered("u1", 1).unwrap();
        s.forget(&["u1".into()]).unwrap();
        s.sync().unwrap();
        assert!(!UidlState::open(&path).unwrap().is_delivered("u1"));
    }

    #[test]
    fn torn_tail_is_ignored_and_compacted_away() {
        let (_dir, path) = temp_state();
        let mut s = UidlState::open(&path).unwrap();
        s.record_delivered("u1", 1).unwrap();
        s.sync().unwrap();
        drop(s);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"D u2 5\t1234").unwrap();
        let mut s = UidlState::open(&path).unwrap();
        assert!(s.is_delivered("u1") && !s.is_delivered("u2"));
        s.record_delivered("u3", 1).unwrap();
        s.sync().unwrap();
        let s = UidlState::open(&path).unwrap();
        assert!(s.is_delivered("u3"));
    }

    #[test]
    fn damage_in_the_middle_is_refused() {
        let (_dir, path) = temp_state();
        let mut s = UidlState::open(&path).unwrap();
        s.record_delivered("u1", 1).unwrap();
        s.record_delivered("u2", 1).unwrap();
        s.sync().unwrap();
        drop(s);
        let text = fs::read_to_string(&path).unwrap().replace("D u1", "D x1");
        fs::write(&path, text).unwrap();
        let err = UidlState::open(&path).err().unwrap();
        assert!(matches!(err, StateError::Damaged { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("damaged at line 2"));
    }

    #[test]
    fn newer_version_is_refused() {
        let (_dir, path) = temp_state();
        fs::write(&path, seal("popfetch-state 9")).unwrap();
        assert!(matches!(
            UidlState::open(&path),
            Err(StateError::Newer { found: 9, .. })
        ));
    }

    #[test]
    fn empty_or_foreign_file_is_refused() {
        let (_dir, path) = temp_state();
        fs::write(&path, "").unwrap();
        assert!(UidlState::open(&path).is_err());
        fs::write(&path, "hello\n").unwrap();
        assert!(UidlState::open(&path).is_err());
    }

    #[test]
    fn tidy_compacts_a_run_of_intents_and_deliveries() {
        let (_dir, path) = temp_state();
        let mut s = UidlState::open(&path).unwrap();
        for i in 0..3000 {
            s.record_intent(&format!("u{i}"), "1795333438.M142162P31366Q1.host")
                .unwrap();
            s.record_delivered(&format!("u{i}"), i).unwrap();
        }
        s.record_intent("open", "somewhere").unwrap();
        s.sync().unwrap();
        let before = fs::metadata(&path).unwrap().len();
        s.tidy();
        // One short line per message now, and appending still works after it.
        assert!(fs::metadata(&path).unwrap().len() < before / 3);
        s.record_delivered("late", 9).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = UidlState::open(&path).unwrap();
        assert_eq!(s.delivered_uids().count(), 3001);
        assert_eq!(s.first_seen("u2999"), Some(2999));
        assert_eq!(s.first_seen("late"), Some(9));
        let open = s.interrupted();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].location, "somewhere");
    }

    #[test]
    fn compaction_keeps_live_records() {
        let (_dir, path) = temp_state();
        let mut s = UidlState::open(&path).unwrap();
        for i in 0..1500 {
            s.record_delivered(&format!("u{i}"), i).unwrap();
            s.forget(&[format!("u{i}")]).unwrap();
        }
        s.record_delivered("keep", 7).unwrap();
        s.sync().unwrap();
        drop(s);
        let before = fs::metadata(&path).unwrap().len();
        let s = UidlState::open(&path).unwrap();
        assert!(fs::metadata(&path).unwrap().len() < before / 100);
        assert_eq!(s.first_seen("keep"), Some(7));
        assert_eq!(s.delivered_uids().count(), 1);
    }
}
