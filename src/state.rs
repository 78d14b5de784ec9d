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
//!   record without one (recovered before its body was checked) marks its
//!   unique-id as delivered but can never authorize a DELE.
//! - `A uid`: the delivery announced by `I` was abandoned and left nothing behind.
//! - `F uid [size digest]`: `uid` (or only its record with that identity) is no
//!   longer on the server and is forgotten.
//! - `L D uid time`, `L I uid location`: a record adopted from a state that does not
//!   say which mailbox wrote it (format 1, or `import-state`). It keeps the message
//!   from being fetched again, but never leads to a DELE.
//!
//! The header is `popfetch-state 2 MAILBOX EPOCH`: the mailbox the file belongs to
//! (see [`Place`]) and a random epoch, new at every compaction. Format 1 files
//! (`popfetch-state 1`, no mailbox) are still read: all their records are adopted.
//!
//! A final line without its newline is a write cut short by a crash and is ignored;
//! any other damage stops popfetch instead of guessing. A file cut short at a line
//! boundary has no such tell, so a witness outside the journal, `MAILBOX.synced`,
//! holds the epoch, length and line count of the journal as of its last fsync: a
//! journal of the same epoch that is shorter than that was cut, and is refused.
//! The witness is written only after the fsync it describes, so after a crash it is
//! the old value or the new one, never ahead of what is durable; it needs no fsync.
//! A witness of another epoch (a crash between a compaction and its witness) says
//! nothing and is ignored.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::durable::TempFile;
use crate::identity::{Identity, Record as Delivered};

const MAGIC: &str = "popfetch-state";
/// 2: the header names the mailbox and an epoch; `L` records.
const VERSION: u32 = 2;

/// Where the state of one mailbox lives, and whose it is.
///
/// Why a DELE is only ever planned on the strength of records this mailbox's own
/// sessions wrote (issue 15, bug 2):
/// - The file is named after the mailbox, `user@host:port` with the host lowercased,
///   escaped so that the naming is one-to-one ([`mailbox_key`]): sessions of another
///   mailbox open another file, whatever their account is called and whichever
///   config names it; an account renamed keeps its file.
/// - Its header names the mailbox again, and a file whose header names another one
///   (copied or renamed by hand) is refused, never read, trusted or pruned.
/// - The lock beside it is per mailbox too, so two sessions of one mailbox never
///   write at once.
/// - Records that no session of this mailbox provably wrote — a format-1 file
///   adopted from `STATE_DIR/NAME.state`, which named no mailbox, and UIDs imported
///   from another tool — are `L` records: [`crate::policy::Known::own`] says no for
///   them, and the policy then keeps the message on the server rather than delete
///   it unfetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    dir: PathBuf,
    /// The mailbox, escaped: see [`mailbox_key`].
    mailbox: String,
    /// The file name without its extension: the mailbox, or a digest of a long one.
    stem: String,
    /// `STATE_DIR/NAME.state`, where popfetch kept an account's state in format 1.
    legacy: Option<PathBuf>,
}

impl Place {
    /// The state of `mailbox` (from [`mailbox_key`]) in `dir`; `account` is the name
    /// an older popfetch filed it under.
    pub fn new(dir: &Path, mailbox: String, account: Option<&str>) -> Place {
        // NAME_MAX is 255; a longer key keeps a readable start and a digest.
        let stem = if mailbox.len() <= 200 {
            mailbox.clone()
        } else {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(mailbox.as_bytes());
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            let mut cut = 160;
            while !mailbox.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}~{hex}", &mailbox[..cut])
        };
        Place {
            dir: dir.to_path_buf(),
            legacy: account.map(|name| dir.join(format!("{name}.state"))),
            mailbox,
            stem,
        }
    }

    /// `STATE_DIR/MAILBOX.state`: the journal.
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.state", self.stem))
    }

    /// `STATE_DIR/MAILBOX.lock`: one sync of the mailbox at a time.
    pub fn lock(&self) -> PathBuf {
        self.dir.join(format!("{}.lock", self.stem))
    }

    /// `STATE_DIR/MAILBOX.synced`: the journal's length as of its last fsync.
    pub fn witness(&self) -> PathBuf {
        self.dir.join(format!("{}.synced", self.stem))
    }

    pub fn mailbox(&self) -> &str {
        &self.mailbox
    }
}

/// `user@host:port` as one safe file name and header word: the host lowercased,
/// and in the user and the host every byte but `A-Z a-z 0-9 . _ + -` written `%XX`,
/// so `@`, `:`, `/`, spaces and control characters never appear raw and no two
/// mailboxes share a key.
pub fn mailbox_key(user: &str, host: &str, port: u16) -> String {
    fn escape(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for &b in text.as_bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
    format!(
        "{}@{}:{port}",
        escape(user),
        escape(&host.to_ascii_lowercase())
    )
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} the state file {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the state file {path} is damaged at line {line} ({reason}); popfetch will not guess which messages were delivered. Restore it from a backup, or remove the bad line by hand and then the .synced file beside it; moving it aside makes popfetch fetch every message on the server again")]
    Damaged {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("the state file {path} has format version {found}, written by a newer popfetch; upgrade popfetch")]
    Newer { path: PathBuf, found: u32 },
    #[error("the state file {path} belongs to the mailbox {found}, not to {expected}; popfetch names each state file after its mailbox, so this one was copied or renamed by hand: move it back to {home}, or move it aside to fetch every message on the server again")]
    Foreign {
        path: PathBuf,
        found: String,
        expected: String,
        home: PathBuf,
    },
    #[error("the state file {path} was cut short: it holds {len} bytes ({lines} lines), but {synced_len} bytes ({synced_lines} lines) of it had been made durable; popfetch will not guess which messages were delivered. Restore it from a backup; if you restored an older copy on purpose, remove {witness}")]
    CutShort {
        path: PathBuf,
        len: u64,
        lines: u64,
        synced_len: u64,
        synced_lines: u64,
        witness: PathBuf,
    },
}

/// The records of one unique-id: one, nearly always.
type Deliveries = smallvec::SmallVec<[Delivered; 1]>;

/// The delivered messages: the records of each unique-id, and an index of the keys
/// an older popfetch wrote for repeated unique-ids (`uid-HEX`, HEX 32 hex digits of
/// a digest of the headers from TOP and the listed size), so that a message known
/// under one form is known under the other.
#[derive(Debug, Default)]
struct Records {
    by_uid: HashMap<String, Deliveries>,
    forms: HashMap<String, Vec<String>>,
}

impl Records {
    /// Adds a record; one with the same identity keeps its first sighting.
    fn insert(&mut self, uid: &str, record: Delivered) {
        let records = match self.by_uid.get_mut(uid) {
            Some(records) => records,
            None => {
                self.index_form(uid);
                self.by_uid.entry(uid.to_string()).or_default()
            }
        };
        if !records.iter().any(|r| r.id == record.id) {
            records.push(record);
        }
    }

    /// Sets the records of `uid`, which has none yet (a replay's last step).
    fn put(&mut self, uid: &str, records: Deliveries) {
        self.index_form(uid);
        self.by_uid.insert(uid.to_string(), records);
    }

    /// Indexes a new key of the digest form `uid-HEX` under its unique-id.
    fn index_form(&mut self, uid: &str) {
        if let Some(base) = digest_form(uid) {
            self.forms
                .entry(base.to_string())
                .or_default()
                .push(uid.to_string());
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

/// The same questions as [`crate::policy::Known`], less ownership, which the
/// state keeps beside the records.
impl Records {
    fn records(&self, uid: &str) -> &[Delivered] {
        self.by_uid
            .get(uid)
            .map_or(&[], |records| records.as_slice())
    }

    fn forms(&self, uid: &str) -> &[String] {
        // Digest forms come only from an older popfetch's state: usually none,
        // and then no lookup for each listed message.
        if self.forms.is_empty() {
            return &[];
        }
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
    adopted: HashSet<String>,
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

    fn own(&self, uid: &str) -> bool {
        !self.adopted.contains(uid)
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

    fn own(&self, uid: &str) -> bool {
        !self.adopted.contains(uid)
    }
}

/// A delivery that was under way when a run died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    pub uid: String,
    pub location: String,
    /// Announced in an adopted record: if it completed, record it adopted too.
    pub adopted: bool,
    /// The message's identity, if its body was read before the run died.
    pub id: Option<Identity>,
}

/// An announced delivery: where, and the message's identity once known.
type Pending = (String, Option<Identity>);

/// A state file of an older popfetch taken over by its mailbox, said once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    pub from: PathBuf,
    pub to: PathBuf,
    pub messages: usize,
}

impl std::fmt::Display for Adoption {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "adopted {} from an older popfetch as {}: its {} message(s) are not fetched again, but as it does not say which mailbox wrote it, none of them is ever deleted from the server unfetched; the old file stays for any other mailbox that used it, and may be removed once each has synced",
            self.from.display(),
            self.to.display(),
            self.messages,
        )
    }
}

/// The state of one account, open for appending.
pub struct UidlState {
    path: PathBuf,
    place: Option<Place>,
    /// Open for appending; `None` only inside [`UidlState::peek`].
    journal: Option<File>,
    /// Delivered messages.
    delivered: Records,
    /// Unique-ids whose records are adopted (`L`): never grounds for a DELE.
    adopted: HashSet<String>,
    /// Announced deliveries not yet completed or abandoned.
    pending: BTreeMap<String, Pending>,
    /// Lines in the journal, to decide when to compact.
    lines: usize,
    /// Length of the journal up to its last whole line.
    len: u64,
    /// Appended lines not yet fsynced.
    unsynced: bool,
    /// The header's epoch.
    epoch: u64,
    /// The witness file, once written.
    witness: Option<File>,
    /// Set when this open adopted a format-1 file.
    adoption: Option<Adoption>,
}

enum Record<'a> {
    Intent(&'a str, &'a str, Option<Identity>),
    Delivered(&'a str, Delivered),
    Abandoned(&'a str),
    Forgotten(&'a str, Option<Identity>),
}

/// What the header and the shape of a journal said.
struct Replayed {
    version: u32,
    mailbox: Option<String>,
    epoch: u64,
    /// A partial last line.
    torn: bool,
    /// Length up to the last whole line.
    whole: u64,
}

/// The witness: epoch, length and lines of the journal as of its last fsync.
struct Synced {
    epoch: u64,
    len: u64,
    lines: u64,
}

impl Synced {
    fn read(path: &Path) -> Option<Synced> {
        let text = fs::read(path).ok()?;
        let line = text.strip_suffix(b"\n")?;
        let mut words = checked(line)?.split(' ');
        let synced = Synced {
            epoch: u64::from_str_radix(words.next()?, 16).ok()?,
            len: words.next()?.parse().ok()?,
            lines: words.next()?.parse().ok()?,
        };
        words.next().is_none().then_some(synced)
    }

    /// Always the same length, so an overwrite in place never leaves a stale tail.
    fn line(&self) -> String {
        seal(&format!(
            "{:016x} {:020} {:020}",
            self.epoch, self.len, self.lines
        ))
    }
}

/// The file's bytes, or `None` if there is no file.
fn read_existing(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match fs::read(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

impl UidlState {
    fn empty(path: &Path, place: Option<&Place>) -> UidlState {
        UidlState {
            path: path.to_path_buf(),
            place: place.cloned(),
            journal: None,
            delivered: Records::default(),
            adopted: HashSet::new(),
            pending: BTreeMap::new(),
            lines: 0,
            len: 0,
            unsynced: false,
            epoch: 0,
            witness: None,
            adoption: None,
        }
    }

    /// Reads the state of `place` without changing anything on disk: no file is
    /// created, adopted or compacted (for `list` and `sync --dry-run`).
    pub fn peek(place: &Place) -> Result<Snapshot, StateError> {
        let state = UidlState::read(place)?;
        Ok(Snapshot {
            delivered: state.delivered,
            adopted: state.adopted,
        })
    }

    /// Reads the state of `place`: its own file, checked against the header's
    /// mailbox and the witness; else the format-1 file of its account, adopted;
    /// else nothing. `unsynced` is set when the file needs a rewrite (a torn tail,
    /// an old format).
    fn read(place: &Place) -> Result<UidlState, StateError> {
        let path = place.path();
        // The witness first: it only grows after the journal has, so a journal read
        // after it is never shorter than it unless the file was cut.
        let synced = Synced::read(&place.witness());
        if let Some(text) = read_existing(&path)? {
            let mut state = UidlState::empty(&path, Some(place));
            let replayed = state.replay(&text)?;
            if let Some(found) = replayed.mailbox.filter(|m| m != place.mailbox()) {
                return Err(StateError::Foreign {
                    home: Place::new(&place.dir, found.clone(), None).path(),
                    path,
                    found,
                    expected: place.mailbox().to_string(),
                });
            }
            if let Some(synced) = synced.filter(|s| s.epoch == replayed.epoch) {
                if synced.len > replayed.whole {
                    return Err(StateError::CutShort {
                        path,
                        len: replayed.whole,
                        lines: state.lines as u64,
                        synced_len: synced.len,
                        synced_lines: synced.lines,
                        witness: place.witness(),
                    });
                }
            }
            state.epoch = replayed.epoch;
            state.len = text.len() as u64;
            state.unsynced = replayed.torn || replayed.version < VERSION;
            return Ok(state);
        }
        let mut state = UidlState::empty(&path, Some(place));
        let Some(legacy) = &place.legacy else {
            return Ok(state);
        };
        let Some(text) = read_existing(legacy)? else {
            return Ok(state);
        };
        let mut old = UidlState::empty(legacy, None);
        // Format 1 only: no popfetch writes a newer format under an account's name.
        if old.replay(&text)?.version != 1 {
            return Ok(state);
        }
        state.adoption = Some(Adoption {
            from: legacy.clone(),
            to: path,
            messages: old.delivered.count(),
        });
        state.delivered = old.delivered;
        state.adopted = old.adopted;
        state.pending = old.pending;
        Ok(state)
    }

    /// Opens the state of `place`, creating an empty one if there is none. A
    /// format-1 state of its account is adopted: see [`UidlState::adoption`].
    pub fn open(place: &Place) -> Result<UidlState, StateError> {
        let mut state = UidlState::read(place)?;
        let path = state.path.clone();
        let io_err = |action| {
            let path = path.clone();
            move |source| StateError::Io {
                action,
                path,
                source,
            }
        };
        // `unsynced` after `read`: the file is missing, torn, or in an old format.
        let fresh = !path.exists();
        if fresh || state.unsynced || state.bloated() {
            state.unsynced = false;
            state.compact()?;
        } else {
            state.journal = Some(open_append(&path).map_err(io_err("open"))?);
            // A run that ended without its last fsync left a witness behind the
            // journal: make the journal durable and say so, for the next open.
            let synced = Synced::read(&place.witness());
            if synced.is_none_or(|s| s.epoch != state.epoch || s.len != state.len) {
                state.unsynced = true;
                state.sync()?;
            }
        }
        // The old file stays where it is: each mailbox adopts it once (it then has
        // a state of its own), so two that shared an account name before keep
        // apart, instead of the first taking it from the other.
        Ok(state)
    }

    /// The format-1 file this open adopted, for a one-time notice.
    pub fn adoption(&self) -> Option<&Adoption> {
        self.adoption.as_ref()
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

    /// Applies every line of the journal.
    fn replay(&mut self, text: &[u8]) -> Result<Replayed, StateError> {
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
        let not_ours = || damaged(1, "not a popfetch state file");
        let mut words = header.split(' ');
        if words.next() != Some(MAGIC) {
            return Err(not_ours());
        }
        let version: u32 = words
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(not_ours)?;
        if version > VERSION {
            return Err(StateError::Newer {
                path: self.path.clone(),
                found: version,
            });
        }
        let (mailbox, epoch) = if version >= 2 {
            // Only what mailbox_key writes, so that a hand-made header never puts a
            // raw control character into a message.
            let mailbox = words.next().filter(|m| {
                !m.is_empty()
                    && m.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._+-%@:~".contains(&b))
            });
            let epoch = words.next().and_then(|e| u64::from_str_radix(e, 16).ok());
            let (Some(mailbox), Some(epoch)) = (mailbox, epoch) else {
                return Err(damaged(1, "the header names no mailbox"));
            };
            (Some(mailbox.to_string()), epoch)
        } else {
            (None, 0)
        };
        if words.next().is_some() {
            return Err(not_ours());
        }
        // Format 1 named no mailbox: all its records are adopted.
        let all_adopted = version < 2;
        // Replayed on borrowed text first: most messages have an intent and then a
        // delivery, and only what survives both is worth an allocation.
        let mut delivered: HashMap<&str, Deliveries> = HashMap::with_capacity(lines.len());
        let mut pending: HashMap<&str, (&str, Option<Identity>)> = HashMap::new();
        let mut adopted: HashSet<&str> = HashSet::new();
        for (index, line) in lines.iter().enumerate().skip(1) {
            let record = checked(line).ok_or_else(|| damaged(index + 1, "bad checksum"))?;
            let (record, prefixed) = match record.strip_prefix("L ") {
                Some(inner) if version >= 2 => (inner, true),
                _ => (record, false),
            };
            let marked = prefixed || all_adopted;
            let parsed = parse_record(record)
                .filter(|r| !prefixed || matches!(r, Record::Intent(..) | Record::Delivered(..)))
                .ok_or_else(|| damaged(index + 1, "unknown record"))?;
            // An adopted record never carries an identity: an identity is what
            // lets a record ground a DELE, and only this mailbox's own may.
            let parsed = match parsed {
                Record::Intent(uid, location, _) if marked => Record::Intent(uid, location, None),
                Record::Delivered(uid, record) if marked => {
                    Record::Delivered(uid, Delivered { id: None, ..record })
                }
                other => other,
            };
            match parsed {
                Record::Intent(uid, location, id) => {
                    if !is_plain_location(location) {
                        return Err(damaged(
                            index + 1,
                            "an intent names a location outside its target",
                        ));
                    }
                    pending.insert(uid, (location, id));
                    if marked {
                        adopted.insert(uid);
                    }
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
                    if marked {
                        adopted.insert(uid);
                    } else if !adopted.is_empty() {
                        // A delivery of this mailbox's own makes the record its own.
                        adopted.remove(uid);
                    }
                }
                Record::Abandoned(uid) => {
                    pending.remove(uid);
                }
                Record::Forgotten(uid, id) => {
                    let gone = match (id, delivered.get_mut(uid)) {
                        (Some(id), Some(records)) => {
                            records.retain(|r| r.id != Some(id));
                            records.is_empty()
                        }
                        _ => true,
                    };
                    if gone {
                        delivered.remove(uid);
                        if !adopted.is_empty() {
                            adopted.remove(uid);
                        }
                    }
                }
            }
        }
        let mut records = Records::default();
        records.by_uid.reserve(delivered.len());
        for (uid, list) in delivered {
            records.put(uid, list);
        }
        self.delivered = records;
        self.pending = pending
            .into_iter()
            .map(|(uid, (location, id))| (uid.to_owned(), (location.to_owned(), id)))
            .collect();
        self.adopted = adopted.into_iter().map(str::to_owned).collect();
        self.lines = lines.len();
        Ok(Replayed {
            version,
            mailbox,
            epoch,
            torn,
            whole: start as u64,
        })
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
                self.adopted.remove(uid);
            }
            Record::Abandoned(uid) => {
                self.pending.remove(uid);
            }
            Record::Forgotten(uid, id) => {
                self.delivered.forget(uid, id);
                if !self.delivered.by_uid.contains_key(uid) {
                    self.adopted.remove(uid);
                }
            }
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
                adopted: self.adopted.contains(uid),
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
        self.append(&intent_line(uid, location, id))?;
        self.apply(Record::Intent(uid, location, id));
        Ok(())
    }

    /// Adds the message's identity to the announced delivery of `uid`, once its body
    /// has been read, so that recovery can record it too.
    pub fn record_identity(&mut self, uid: &str, id: Identity) -> Result<(), StateError> {
        let Some((location, _)) = self.pending.get(uid).cloned() else {
            return Ok(());
        };
        self.record_intent(uid, &location, Some(id))
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

    /// Records `uid` as delivered on the word of something other than this
    /// mailbox's own sessions (another tool's list, an adopted intent): it keeps the
    /// message from being fetched again, but never leads to a DELE.
    pub fn record_adopted(&mut self, uid: &str, first_seen: u64) -> Result<(), StateError> {
        self.append(&format!("L D {uid} {first_seen}"))?;
        let id = None;
        self.apply(Record::Delivered(uid, Delivered { first_seen, id }));
        self.adopted.insert(uid.to_string());
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
            self.apply(Record::Forgotten(uid, None));
        }
        Ok(())
    }

    /// Forgets single records of unique-ids still on the server: those that no
    /// message listed under them matches any more.
    pub fn forget_records(&mut self, records: &[(String, Identity)]) -> Result<(), StateError> {
        for (uid, id) in records {
            self.append(&format!("F {uid} {} {}", id.size, id.hex()))?;
            self.apply(Record::Forgotten(uid, Some(*id)));
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
            self.witness();
        }
        Ok(())
    }

    /// Tells the witness how long the journal is now. Called only once that length
    /// is durable. A witness that cannot be written stays behind the journal, which
    /// only weakens the check, so a failure here is not an error.
    fn witness(&mut self) {
        let Some(place) = &self.place else {
            return;
        };
        if self.witness.is_none() {
            self.witness = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(place.witness())
                .ok();
        }
        if let Some(file) = &self.witness {
            let synced = Synced {
                epoch: self.epoch,
                len: self.len,
                lines: self.lines as u64,
            };
            let _ = file.write_all_at(synced.line().as_bytes(), 0);
        }
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
        let mailbox = self.place.as_ref().map_or("", |p| p.mailbox());
        let mut epoch = [0u8; 8];
        getrandom::fill(&mut epoch).map_err(|e| io_err(io::Error::other(e.to_string())))?;
        // Never 0, the epoch of a format-1 file.
        let epoch = u64::from_le_bytes(epoch) | 1;
        let header = format!("{MAGIC} {VERSION} {mailbox} {epoch:016x}");
        let lines = write_snapshot(&self.path, &header, self).map_err(io_err)?;
        let journal = open_append(&self.path).map_err(io_err)?;
        self.len = journal.metadata().map_err(io_err)?.len();
        self.journal = Some(journal);
        self.epoch = epoch;
        self.lines = lines;
        self.unsynced = false;
        // The snapshot and its directory entry are durable.
        self.witness();
        Ok(())
    }
}

/// Whether an intent's location can only name something inside its target: a
/// file name of one component, or an mbox mark. Each target checks its own form
/// again before it touches anything (issue 15, bug 8).
fn is_plain_location(location: &str) -> bool {
    !location.is_empty() && location != "." && location != ".." && !location.contains(['/', '\0'])
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

/// Writes a snapshot of `state` atomically; returns how many lines it holds.
/// An `I` line, with the identity as two trailing fields when known.
fn intent_line(uid: &str, location: &str, id: Option<Identity>) -> String {
    match id {
        Some(id) => format!("I {uid} {location} {} {}", id.size, id.hex()),
        None => format!("I {uid} {location}"),
    }
}

fn write_snapshot(path: &Path, header: &str, state: &UidlState) -> io::Result<usize> {
    let mut text = seal(header);
    let mark = |uid: &str| {
        if state.adopted.contains(uid) {
            "L "
        } else {
            ""
        }
    };
    let mut uids: Vec<_> = state.delivered.by_uid.iter().collect();
    uids.sort_by(|a, b| a.0.cmp(b.0));
    for (uid, records) in uids {
        for record in records {
            let line = delivered_line(uid, record.first_seen, record.id);
            text.push_str(&seal(&format!("{}{line}", mark(uid))));
        }
    }
    for (uid, (location, id)) in &state.pending {
        text.push_str(&seal(&format!(
            "{}{}",
            mark(uid),
            intent_line(uid, location, None)
        )));
        if id.is_some() {
            let line = intent_line(uid, location, *id);
            text.push_str(&seal(&format!("{}{line}", mark(uid))));
        }
    }
    let mut temp_name = path.as_os_str().to_owned();
    temp_name.push(format!(".tmp{}", std::process::id()));
    let mut temp = TempFile::create(PathBuf::from(temp_name))?;
    temp.file().write_all(text.as_bytes())?;
    temp.rename_into(path)?;
    Ok(memchr::memchr_iter(b'\n', text.as_bytes()).count())
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

    fn temp_state() -> (tempfile::TempDir, Place) {
        let dir = tempfile::tempdir().unwrap();
        let place = Place::new(
            dir.path(),
            mailbox_key("me", "Pop.Example", 995),
            Some("acct"),
        );
        (dir, place)
    }

    #[test]
    fn records_survive_reopen() {
        let (_dir, place) = temp_state();
        let mut s = UidlState::open(&place).unwrap();
        s.record_intent("u1", "loc1", None).unwrap();
        s.record_delivered("u1", 100, None).unwrap();
        s.record_intent("u2", "loc2", None).unwrap();
        s.record_intent("u3", "loc3", None).unwrap();
        s.record_abandoned("u3").unwrap();
        s.sync().unwrap();
        drop(s);
        let s = UidlState::open(&place).unwrap();
        assert!(s.is_delivered("u1"));
        assert_eq!(s.first_seen("u1"), Some(100));
        assert!(!s.is_delivered("u2"));
        assert_eq!(
            s.interrupted(),
            [Interrupted {
                uid: "u2".into(),
                location: "loc2".into(),
                adopted: false,
                id: None,
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
        let (_dir, place) = temp_state();
        let path = place.path();
        let mut s = UidlState::open(&place).unwrap();
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
        let mut s = UidlState::open(&place).unwrap();
        check(&s);
        s.compact().unwrap();
        let mut s = UidlState::open(&place).unwrap();
        check(&s);
        s.forget_records(&[("X".into(), a)]).unwrap();
        s.forget(&["Y-0123456789abcdef0123456789abcdef".into()])
            .unwrap();
        s.sync().unwrap();
        let s = UidlState::open(&place).unwrap();
        assert_eq!(s.records("X").len(), 1);
        assert_eq!(s.records("X")[0].id, Some(b));
        assert!(s.forms("Y").is_empty());
        // A record with half an identity is damage, not a guess.
        drop(s);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(seal("D W 1 10").as_bytes()).unwrap();
        assert!(UidlState::open(&place).is_err());
    }

    #[test]
    fn forget_removes() {
        let (_dir, place) = temp_state();
        let mut s = UidlState::open(&place).unwrap();
        s.record_delivered("u1", 1, None).unwrap();
        s.forget(&["u1".into()]).unwrap();
        s.sync().unwrap();
        assert!(!UidlState::open(&place).unwrap().is_delivered("u1"));
    }

    #[test]
    fn torn_tail_is_ignored_and_compacted_away() {
        let (_dir, place) = temp_state();
        let path = place.path();
        let mut s = UidlState::open(&place).unwrap();
        s.record_delivered("u1", 1, None).unwrap();
        s.sync().unwrap();
        drop(s);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"D u2 5\t1234").unwrap();
        let mut s = UidlState::open(&place).unwrap();
        assert!(s.is_delivered("u1") && !s.is_delivered("u2"));
        s.record_delivered("u3", 1, None).unwrap();
        s.sync().unwrap();
        let s = UidlState::open(&place).unwrap();
        assert!(s.is_delivered("u3"));
    }

    #[test]
    fn damage_in_the_middle_is_refused() {
        let (_dir, place) = temp_state();
        let path = place.path();
        let mut s = UidlState::open(&place).unwrap();
        s.record_delivered("u1", 1, None).unwrap();
        s.record_delivered("u2", 1, None).unwrap();
        s.sync().unwrap();
        drop(s);
        let text = fs::read_to_string(&path).unwrap().replace("D u1", "D x1");
        fs::write(&path, text).unwrap();
        let err = UidlState::open(&place).err().unwrap();
        assert!(matches!(err, StateError::Damaged { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("damaged at line 2"));
    }

    #[test]
    fn newer_version_is_refused() {
        let (_dir, place) = temp_state();
        let path = place.path();
        fs::write(&path, seal("popfetch-state 9")).unwrap();
        assert!(matches!(
            UidlState::open(&place),
            Err(StateError::Newer { found: 9, .. })
        ));
    }

    #[test]
    fn empty_or_foreign_file_is_refused() {
        let (_dir, place) = temp_state();
        let path = place.path();
        fs::write(&path, "").unwrap();
        assert!(UidlState::open(&place).is_err());
        fs::write(&path, "hello\n").unwrap();
        assert!(UidlState::open(&place).is_err());
    }

    #[test]
    fn tidy_compacts_a_run_of_intents_and_deliveries() {
        let (_dir, place) = temp_state();
        let path = place.path();
        let mut s = UidlState::open(&place).unwrap();
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
        let s = UidlState::open(&place).unwrap();
        assert_eq!(s.delivered_uids().count(), 3001);
        assert_eq!(s.first_seen("u2999"), Some(2999));
        assert_eq!(s.first_seen("late"), Some(9));
        let open = s.interrupted();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].location, "somewhere");
    }

    #[test]
    fn compaction_keeps_live_records() {
        let (_dir, place) = temp_state();
        let path = place.path();
        let mut s = UidlState::open(&place).unwrap();
        for i in 0..1500 {
            s.record_delivered(&format!("u{i}"), i, None).unwrap();
            s.forget(&[format!("u{i}")]).unwrap();
        }
        s.record_delivered("keep", 7, None).unwrap();
        s.sync().unwrap();
        drop(s);
        let before = fs::metadata(&path).unwrap().len();
        let s = UidlState::open(&place).unwrap();
        assert!(fs::metadata(&path).unwrap().len() < before / 100);
        assert_eq!(s.first_seen("keep"), Some(7));
        assert_eq!(s.delivered_uids().count(), 1);
    }

    #[test]
    fn mailbox_keys_are_safe_file_names_and_one_to_one() {
        assert_eq!(
            mailbox_key("me", "Pop.Example.COM", 995),
            "me@pop.example.com:995"
        );
        assert_eq!(
            mailbox_key("a@b/../c d", "::1", 110),
            "a%40b%2F..%2Fc%20d@%3A%3A1:110"
        );
        // `@` in the user cannot pass for the separator.
        assert_ne!(mailbox_key("a@b", "c", 1), mailbox_key("a", "b@c", 1));
        let long = Place::new(Path::new("/s"), mailbox_key(&"x".repeat(300), "h", 1), None);
        let name = long.path().file_name().unwrap().len();
        assert!(name < 255, "{name}");
        let other = Place::new(Path::new("/s"), mailbox_key(&"x".repeat(301), "h", 1), None);
        assert_ne!(long.path(), other.path());
    }

    #[test]
    fn the_state_of_another_mailbox_is_refused() {
        let (dir, place) = temp_state();
        let mut s = UidlState::open(&place).unwrap();
        s.record_delivered("u1", 1, None).unwrap();
        s.sync().unwrap();
        drop(s);
        let other = Place::new(dir.path(), mailbox_key("you", "pop.example", 995), None);
        fs::copy(place.path(), other.path()).unwrap();
        let err = UidlState::open(&other).err().unwrap();
        assert!(matches!(err, StateError::Foreign { .. }), "{err}");
        assert!(err
            .to_string()
            .contains(&place.path().display().to_string()));
        assert!(UidlState::peek(&other).is_err());
    }

    #[test]
    fn a_format_1_state_is_adopted_once_and_owns_nothing() {
        let (_dir, place) = temp_state();
        let legacy = place.legacy.clone().unwrap();
        let old = [
            "popfetch-state 1",
            "D u1 5",
            "D u2 6",
            "I u3 1.M1P1Q1.host",
            "F u2",
        ];
        fs::write(&legacy, old.iter().map(|r| seal(r)).collect::<String>()).unwrap();
        let peeked = UidlState::peek(&place).unwrap();
        use crate::policy::Known;
        assert_eq!(peeked.records("u1")[0].first_seen, 5);
        assert!(!peeked.own("u1"));
        assert!(legacy.exists(), "peek changes nothing");

        let mut s = UidlState::open(&place).unwrap();
        assert_eq!(s.adoption().unwrap().messages, 1);
        assert!(legacy.exists(), "left for any other mailbox that used it");
        assert!(!s.own("u1") && s.first_seen("u1") == Some(5));
        assert_eq!(s.first_seen("u2"), None);
        assert!(s.interrupted()[0].adopted);
        s.record_adopted("u3", 7).unwrap();
        s.record_delivered("u4", 8, None).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = UidlState::open(&place).unwrap();
        assert!(s.adoption().is_none(), "adopted once");
        assert!(!s.own("u1") && !s.own("u3") && s.own("u4"));
        assert!(s.interrupted().is_empty());
        let text = fs::read_to_string(place.path()).unwrap();
        assert!(
            text.starts_with("popfetch-state 2 me@pop.example:995 "),
            "{text}"
        );
        assert!(text.contains("L D u1 5\t"), "{text}");

        // A delivery of this mailbox's own makes the record its own, also across a
        // compaction.
        let mut s = s;
        s.record_delivered("u1", 9, None).unwrap();
        s.compact().unwrap();
        drop(s);
        let s = UidlState::open(&place).unwrap();
        assert!(s.own("u1") && s.first_seen("u1") == Some(5));
    }

    /// Issue 15, bug 7: a real journal cut at every byte offset. Every cut below
    /// what was made durable is refused; a torn tail beyond it is tolerated.
    #[test]
    fn a_journal_cut_anywhere_below_the_witness_is_refused() {
        let (_dir, place) = temp_state();
        let path = place.path();
        let mut s = UidlState::open(&place).unwrap();
        for i in 0..6 {
            s.record_intent(&format!("u{i}"), "1795333438.M1P2Q3.host", None)
                .unwrap();
            s.record_delivered(&format!("u{i}"), i, None).unwrap();
        }
        s.sync().unwrap();
        // Appended after the last fsync: what a crash may tear.
        s.record_intent("late", "1795333438.M1P2Q9.host", None)
            .unwrap();
        drop(s);
        let whole = fs::read(&path).unwrap();
        let synced = Synced::read(&place.witness()).unwrap();
        assert!(synced.len < whole.len() as u64);
        for cut in 0..whole.len() {
            fs::write(&path, &whole[..cut]).unwrap();
            let opened = UidlState::open(&place);
            if (cut as u64) < synced.len {
                let err = opened
                    .err()
                    .unwrap_or_else(|| panic!("cut at {cut} accepted"));
                assert!(
                    matches!(
                        err,
                        StateError::CutShort { .. } | StateError::Damaged { .. }
                    ),
                    "cut at {cut}: {err}"
                );
                assert_eq!(fs::read(&path).unwrap(), &whole[..cut], "left alone");
            } else {
                let s = opened.unwrap_or_else(|e| panic!("torn tail at {cut}: {e}"));
                assert_eq!(s.delivered_uids().count(), 6);
                drop(s);
                // Accepting it compacted the file under a new epoch: start again.
                fs::write(&path, &whole).unwrap();
                fs::write(place.witness(), synced.line()).unwrap();
            }
        }
        // A witness of another epoch (a crash right after a compaction) says nothing.
        fs::write(&path, &whole[..synced.len as usize - 10]).unwrap();
        let other = Synced {
            epoch: synced.epoch ^ 2,
            ..synced
        };
        fs::write(place.witness(), other.line()).unwrap();
        assert!(UidlState::open(&place).is_ok());
        // And after a refusal, removing the witness is the way to accept a copy.
        let mut s = UidlState::open(&place).unwrap();
        s.record_delivered("x", 1, None).unwrap();
        s.sync().unwrap();
        drop(s);
        let text = fs::read(&path).unwrap();
        fs::write(&path, &text[..text.len() - 3]).unwrap();
        let err = UidlState::open(&place).err().unwrap();
        assert!(err.to_string().contains("cut short"), "{err}");
        assert!(err.to_string().contains(".synced"), "{err}");
        fs::remove_file(place.witness()).unwrap();
        assert!(UidlState::open(&place).is_ok());
    }

    /// Issue 15, bug 8: a location that could leave its target is damage.
    #[test]
    fn an_intent_outside_its_target_is_damage() {
        for location in ["/etc/passwd", "../x", "a/b", "..", "."] {
            let (_dir, place) = temp_state();
            let mut s = UidlState::open(&place).unwrap();
            s.sync().unwrap();
            drop(s);
            let mut f = OpenOptions::new().append(true).open(place.path()).unwrap();
            f.write_all(seal(&format!("I u1 {location}")).as_bytes())
                .unwrap();
            let err = UidlState::open(&place).err().unwrap();
            assert!(
                matches!(err, StateError::Damaged { line: 2, .. }),
                "{location}: {err}"
            );
        }
    }
}
