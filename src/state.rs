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
//!   `I uid location size digest` carries the message's identity too, so that
//!   recovery records it with the delivery: at once where the target read the
//!   message before announcing it (mbox), else as a second line once the body has
//!   been read, before the delivery is committed (Maildir).
//! - `D uid time [size digest]`: `uid` was delivered; `time` is when it was first seen
//!   (Unix seconds); `size digest` is the message's identity (see [`crate::identity`]).
//!   A server may give several messages one unique-id (popa3d does) or reuse one,
//!   so a unique-id may have several records, told apart by their identities. A
//!   record without one (written by an older popfetch, or imported) marks its
//!   unique-id as delivered but can never authorize a DELE.
//! - `A uid`: the delivery announced by `I` was abandoned and left nothing behind.
//! - `F uid [size digest]`: `uid` (or only its record with that identity) is no
//!   longer on the server and is forgotten.
//!
//! A final line without its newline is a write cut short by a crash and is ignored;
//! any other damage stops popfetch instead of guessing.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use foldhash::{HashMap, HashMapExt};

use crate::durable::TempFile;
use crate::identity::{Identity, Record as Delivered};
use crate::policy::Known as _;

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

/// The delivered messages: the records of each unique-id, and an index of the keys
/// an older popfetch wrote for repeated unique-ids (`uid-HEX`, HEX 32 hex digits of
/// a digest of the headers from TOP and the listed size), so that a message known
/// under one form is known under the other.
#[derive(Debug, Default)]
struct Records {
    by_uid: HashMap<String, Vec<Delivered>>,
    forms: HashMap<String, Vec<String>>,
}

impl Records {
    /// Adds a record; one with the same identity keeps its first sighting.
    fn insert(&mut self, uid: &str, record: Delivered) {
        let records = match self.by_uid.get_mut(uid) {
            Some(records) => records,
            None => {
                if let Some(base) = digest_form(uid) {
                    self.forms
                        .entry(base.to_string())
                        .or_default()
                        .push(uid.to_string());
                }
                self.by_uid.entry(uid.to_string()).or_default()
            }
        };
        if !records.iter().any(|r| r.id == record.id) {
            records.push(record);
        }
    }

    /// Forgets every record of `uid`, or only the one with identity `id`.
    fn forget(&mut self, uid: &str, id: Option<Identity>) {
        if let (Some(id), Some(records)) = (id, self.by_uid.get_mut(uid)) {
            records.retain(|r| r.id != Some(id));
            if !records.is_empty() {
                return;
            }
        }
        if self.by_uid.remove(uid).is_some() {
            if let Some(base) = digest_form(uid) {
                if let Some(keys) = self.forms.get_mut(base) {
                    keys.retain(|k| k != uid);
                    if keys.is_empty() {
                        self.forms.remove(base);
                    }
                }
            }
        }
    }
}

/// The unique-id in a key of the form `uid-HEX` an older popfetch gave messages
/// whose unique-id repeated.
fn digest_form(key: &str) -> Option<&str> {
    let (base, hex) = key.rsplit_once('-')?;
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) && !base.is_empty())
        .then_some(base)
}

impl crate::policy::Known for Records {
    fn records(&self, uid: &str) -> &[Delivered] {
        self.by_uid.get(uid).map_or(&[], Vec::as_slice)
    }

    fn forms(&self, uid: &str) -> &[String] {
        self.forms.get(uid).map_or(&[], Vec::as_slice)
    }

    fn uids(&self) -> Vec<&str> {
        self.by_uid.keys().map(String::as_str).collect()
    }

    fn count(&self) -> usize {
        self.by_uid.len()
    }
}

/// A read-only view of the state, for previews.
#[derive(Debug, Default)]
pub struct Snapshot {
    delivered: Records,
}

impl Snapshot {
    pub fn delivered_uids(&self) -> impl Iterator<Item = &str> {
        self.delivered.by_uid.keys().map(String::as_str)
    }
}

impl crate::policy::Known for Snapshot {
    fn records(&self, uid: &str) -> &[Delivered] {
        self.delivered.records(uid)
    }

    fn forms(&self, uid: &str) -> &[String] {
        self.delivered.forms(uid)
    }

    fn uids(&self) -> Vec<&str> {
        self.delivered.uids()
    }

    fn count(&self) -> usize {
        self.delivered.count()
    }
}

impl crate::policy::Known for UidlState {
    fn records(&self, uid: &str) -> &[Delivered] {
        self.delivered.records(uid)
    }

    fn forms(&self, uid: &str) -> &[String] {
        self.delivered.forms(uid)
    }

    fn uids(&self) -> Vec<&str> {
        self.delivered.uids()
    }

    fn count(&self) -> usize {
        self.delivered.count()
    }
}

/// A delivery that was under way when a run died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    pub uid: String,
    pub location: String,
    /// The message's identity, if its body was read before the run died.
    pub id: Option<Identity>,
}

/// An announced delivery: where, and the message's identity once known.
type Pending = (String, Option<Identity>);

/// The state of one account, open for appending.
pub struct UidlState {
    path: PathBuf,
    /// Open for appending; `None` only inside [`UidlState::peek`].
    journal: Option<File>,
    /// Delivered messages.
    delivered: Records,
    /// Announced deliveries not yet completed or abandoned.
    pending: BTreeMap<String, Pending>,
    /// Lines in the journal, to decide when to compact.
    lines: usize,
    /// Length of the journal up to its last whole line.
    len: u64,
    /// Appended lines not yet fsynced.
    unsynced: bool,
}

enum Record<'a> {
    Intent(&'a str, &'a str, Option<Identity>),
    Delivered(&'a str, Delivered),
    Abandoned(&'a str),
    Forgotten(&'a str, Option<Identity>),
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
            delivered: Records::default(),
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
                write_snapshot(path, &Records::default(), &BTreeMap::new())
                    .map_err(io_err("create"))?;
                fs::read(path).map_err(io_err("read"))?
            }
            Err(e) => return Err(io_err("read")(e)),
        };
        let mut state = UidlState {
            path: path.to_path_buf(),
            journal: Some(open_append(path).map_err(io_err("open"))?),
            delivered: Records::default(),
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
        let live = self.delivered.count() + self.pending.len();
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
        let mut delivered: HashMap<&str, Vec<Delivered>> = HashMap::with_capacity(lines.len());
        let mut pending: HashMap<&str, (&str, Option<Identity>)> = HashMap::new();
        for (index, line) in lines.iter().enumerate().skip(1) {
            let record = checked(line).ok_or_else(|| damaged(index + 1, "bad checksum"))?;
            match parse_record(record).ok_or_else(|| damaged(index + 1, "unknown record"))? {
                Record::Intent(uid, location, id) => {
                    pending.insert(uid, (location, id));
                }
                Record::Delivered(uid, record) => {
                    // A compacted journal has no intents: no lookup for them.
                    if !pending.is_empty() {
                        pending.remove(uid);
                    }
                    let records = delivered.entry(uid).or_default();
                    if !records.iter().any(|r| r.id == record.id) {
                        records.push(record);
                    }
                }
                Record::Abandoned(uid) => {
                    pending.remove(uid);
                }
                Record::Forgotten(uid, id) => match (id, delivered.get_mut(uid)) {
                    (Some(id), Some(records)) => {
                        records.retain(|r| r.id != Some(id));
                        if records.is_empty() {
                            delivered.remove(uid);
                        }
                    }
                    _ => {
                        delivered.remove(uid);
                    }
                },
            }
        }
        let mut records = Records::default();
        for (uid, list) in delivered {
            for record in list {
                records.insert(uid, record);
            }
        }
        self.delivered = records;
        self.pending = pending
            .into_iter()
            .map(|(uid, (location, id))| (uid.to_owned(), (location.to_owned(), id)))
            .collect();
        self.lines = lines.len();
        Ok(torn)
    }

    fn apply(&mut self, record: Record) {
        match record {
            Record::Intent(uid, location, id) => {
                self.pending
                    .insert(uid.to_string(), (location.to_string(), id));
            }
            Record::Delivered(uid, record) => {
                self.pending.remove(uid);
                self.delivered.insert(uid, record);
            }
            Record::Abandoned(uid) => {
                self.pending.remove(uid);
            }
            Record::Forgotten(uid, id) => self.delivered.forget(uid, id),
        }
    }

    pub fn is_delivered(&self, uid: &str) -> bool {
        self.delivered.by_uid.contains_key(uid)
    }

    /// When `uid` was first seen, if it has been delivered (its earliest record).
    pub fn first_seen(&self, uid: &str) -> Option<u64> {
        let records = self.delivered.by_uid.get(uid)?;
        records.iter().map(|r| r.first_seen).min()
    }

    /// Every delivered unique-id.
    pub fn delivered_uids(&self) -> impl Iterator<Item = &str> {
        self.delivered.by_uid.keys().map(String::as_str)
    }

    /// Deliveries that a previous run announced but never finished or abandoned.
    pub fn interrupted(&self) -> Vec<Interrupted> {
        self.pending
            .iter()
            .map(|(uid, (location, id))| Interrupted {
                uid: uid.clone(),
                location: location.clone(),
                id: *id,
            })
            .collect()
    }

    /// Announces a delivery of `uid` to `location` before it starts. It is durable
    /// at the next [`sync`](Self::sync), which the caller makes before the delivery
    /// can become durable itself.
    /// The message's identity goes with it when the target has read the message
    /// before announcing it (mbox spools it first).
    pub fn record_intent(
        &mut self,
        uid: &str,
        location: &str,
        id: Option<Identity>,
    ) -> Result<(), StateError> {
        self.append(&match id {
            Some(id) => format!("I {uid} {location} {} {}", id.size, id.hex()),
            None => format!("I {uid} {location}"),
        })?;
        self.apply(Record::Intent(uid, location, id));
        Ok(())
    }

    /// Adds the message's identity to the announced delivery of `uid`, once its body
    /// has been read, so that recovery can record it too.
    pub fn record_identity(&mut self, uid: &str, id: Identity) -> Result<(), StateError> {
        let Some((location, _)) = self.pending.get(uid).cloned() else {
            return Ok(());
        };
        self.append(&format!("I {uid} {location} {} {}", id.size, id.hex()))?;
        self.apply(Record::Intent(uid, &location, Some(id)));
        Ok(())
    }

    /// Records a completed delivery, with the message's identity when known. It
    /// becomes durable at the next [`sync`](Self::sync); until then the intent
    /// record lets recovery find it.
    pub fn record_delivered(
        &mut self,
        uid: &str,
        first_seen: u64,
        id: Option<Identity>,
    ) -> Result<(), StateError> {
        self.append(&delivered_line(uid, first_seen, id))?;
        self.apply(Record::Delivered(uid, Delivered { first_seen, id }));
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
            self.delivered.forget(uid, None);
        }
        Ok(())
    }

    /// Forgets single records of unique-ids still on the server: those that no
    /// message listed under them matches any more.
    pub fn forget_records(&mut self, records: &[(String, Identity)]) -> Result<(), StateError> {
        for (uid, id) in records {
            self.append(&format!("F {uid} {} {}", id.size, id.hex()))?;
            self.delivered.forget(uid, Some(*id));
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
        self.lines = 1 + self.delivered.count() + self.pending.len();
        self.unsynced = false;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

/// A `D` line: the identity, when known, as two trailing fields, so that a record
/// without one reads as before.
fn delivered_line(uid: &str, first_seen: u64, id: Option<Identity>) -> String {
    match id {
        Some(id) => format!("D {uid} {first_seen} {} {}", id.size, id.hex()),
        None => format!("D {uid} {first_seen}"),
    }
}

fn write_snapshot(
    path: &Path,
    delivered: &Records,
    pending: &BTreeMap<String, Pending>,
) -> io::Result<()> {
    let mut text = seal(&format!("{MAGIC} {VERSION}"));
    let mut uids: Vec<_> = delivered.by_uid.iter().collect();
    uids.sort_by(|a, b| a.0.cmp(b.0));
    for (uid, records) in uids {
        for record in records {
            text.push_str(&seal(&delivered_line(uid, record.first_seen, record.id)));
        }
    }
    for (uid, (location, id)) in pending {
        text.push_str(&seal(&format!("I {uid} {location}")));
        if let Some(id) = id {
            text.push_str(&seal(&format!(
                "I {uid} {location} {} {}",
                id.size,
                id.hex()
            )));
        }
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
    let rest: [Option<&str>; 3] = [words.next(), words.next(), words.next()];
    if words.next().is_some() {
        return None;
    }
    // An identity is two trailing fields, both or neither.
    let identity = |size: Option<&str>, hex: Option<&str>| match (size, hex) {
        (None, None) => Some(None),
        (Some(size), Some(hex)) => Identity::parse(size, hex).map(Some),
        _ => None,
    };
    match (kind, rest) {
        ("I", [Some(location), size, hex]) if !location.is_empty() => {
            Some(Record::Intent(uid, location, identity(size, hex)?))
        }
        ("D", [Some(time), size, hex]) => Some(Record::Delivered(
            uid,
            Delivered {
                first_seen: time.parse().ok()?,
                id: identity(size, hex)?,
            },
        )),
        ("A", [None, None, None]) => Some(Record::Abandoned(uid)),
        ("F", [size, hex, None]) => Some(Record::Forgotten(uid, identity(size, hex)?)),
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
        s.record_intent("u1", "loc1", None).unwrap();
        s.record_delivered("u1", 100, None).unwrap();
        s.record_intent("u2", "loc2", None).unwrap();
        s.record_intent("u3", "loc3", None).unwrap();
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
                location: "loc2".into(),
                id: None
            }]
        );
    }

    #[test]
    fn identities_are_kept_apart_under_one_unique_id_and_survive_compaction() {
        use crate::policy::Known;
        let a = Identity {
            size: 10,
            digest: [0xa; 16],
        };
        let b = Identity {
            size: 20,
            digest: [0xb; 16],
        };
        let (_dir, path) = temp_state();
        let mut s = UidlState::open(&path).unwrap();
        s.record_delivered("X", 1, Some(a)).unwrap();
        s.record_delivered("X", 2, Some(b)).unwrap();
        s.record_delivered("X", 3, Some(a)).unwrap();
        s.record_delivered("old", 4, None).unwrap();
        s.record_delivered("Y-0123456789abcdef0123456789abcdef", 5, None)
            .unwrap();
        s.record_intent("Z", "loc", None).unwrap();
        s.record_identity("Z", b).unwrap();
        s.sync().unwrap();
        drop(s);
        let check = |s: &UidlState| {
            let x = s.records("X");
            assert_eq!(x.len(), 2);
            assert_eq!((x[0].first_seen, x[0].id), (1, Some(a)));
            assert_eq!(s.records("old")[0].id, None);
            assert_eq!(s.forms("Y"), ["Y-0123456789abcdef0123456789abcdef"]);
            assert_eq!(s.interrupted()[0].id, Some(b));
        };
        let mut s = UidlState::open(&path).unwrap();
        check(&s);
        s.compact().unwrap();
        let mut s = UidlState::open(&path).unwrap();
        check(&s);
        s.forget_records(&[("X".into(), a)]).unwrap();
        s.forget(&["Y-0123456789abcdef0123456789abcdef".into()])
            .unwrap();
        s.sync().unwrap();
        let s = UidlState::open(&path).unwrap();
        assert_eq!(s.records("X").len(), 1);
        assert_eq!(s.records("X")[0].id, Some(b));
        assert!(s.forms("Y").is_empty());
        // A record with half an identity is damage, not a guess.
        drop(s);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(seal("D W 1 10").as_bytes()).unwrap();
        assert!(UidlState::open(&path).is_err());
    }

    #[test]
    fn forget_removes() {
        let (_dir, path) = temp_state();
        let mut s = UidlState::open(&path).unwrap();
        s.record_delivered("u1", 1, None).unwrap();
        s.forget(&["u1".into()]).unwrap();
        s.sync().unwrap();
        assert!(!UidlState::open(&path).unwrap().is_delivered("u1"));
    }

    #[test]
    fn torn_tail_is_ignored_and_compacted_away() {
        let (_dir, path) = temp_state();
        let mut s = UidlState::open(&path).unwrap();
        s.record_delivered("u1", 1, None).unwrap();
        s.sync().unwrap();
        drop(s);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"D u2 5\t1234").unwrap();
        let mut s = UidlState::open(&path).unwrap();
        assert!(s.is_delivered("u1") && !s.is_delivered("u2"));
        s.record_delivered("u3", 1, None).unwrap();
        s.sync().unwrap();
        let s = UidlState::open(&path).unwrap();
        assert!(s.is_delivered("u3"));
    }

    #[test]
    fn damage_in_the_middle_is_refused() {
        let (_dir, path) = temp_state();
        let mut s = UidlState::open(&path).unwrap();
        s.record_delivered("u1", 1, None).unwrap();
        s.record_delivered("u2", 1, None).unwrap();
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
            s.record_intent(&format!("u{i}"), "1795333438.M142162P31366Q1.host", None)
                .unwrap();
            s.record_delivered(&format!("u{i}"), i, None).unwrap();
        }
        s.record_intent("open", "somewhere", None).unwrap();
        s.sync().unwrap();
        let before = fs::metadata(&path).unwrap().len();
        s.tidy();
        // One short line per message now, and appending still works after it.
        assert!(fs::metadata(&path).unwrap().len() < before / 3);
        s.record_delivered("late", 9, None).unwrap();
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
            s.record_delivered(&format!("u{i}"), i, None).unwrap();
            s.forget(&[format!("u{i}")]).unwrap();
        }
        s.record_delivered("keep", 7, None).unwrap();
        s.sync().unwrap();
        drop(s);
        let before = fs::metadata(&path).unwrap().len();
        let s = UidlState::open(&path).unwrap();
        assert!(fs::metadata(&path).unwrap().len() < before / 100);
        assert_eq!(s.first_seen("keep"), Some(7));
        assert_eq!(s.delivered_uids().count(), 1);
    }
}
