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
//!   (Unix seconds); `size digest` is the message's identity (see [`crate::sync::state::identity`]).
//!   A server may give several messages one unique-id (popa3d does) or reuse one,
//!   so a unique-id may have several records, told apart by their identities. A
//!   record without one (recovered before its body was checked) marks its
//!   unique-id as delivered but can never authorize a DELE.
//! - `d uid offset [size digest]`: a `D` record as a compaction writes it, in fewer
//!   bytes: `offset` is the first-seen time less the header's base time, `digest`
//!   is in base64 (22 characters). Lines appended later keep the `D` form.
//! - `A uid`: the delivery announced by `I` was abandoned and left nothing behind.
//! - `F uid [size digest]`: `uid` (or only its record with that identity) is no
//!   longer on the server and is forgotten.
//! - `L D uid time`, `L d uid offset`, `L I uid location`: a record adopted from a state that does not
//!   say which mailbox wrote it (format 1, or `import-state`). It keeps the message
//!   from being fetched again, but never leads to a DELE.
//!
//! The header is `popfetch-state 3 MAILBOX EPOCH BASE`: the mailbox the file
//! belongs to (see [`Place`]), a random epoch, new at every compaction, and the
//! base time of the `d` records (the least first-seen time in the snapshot).
//! Format 2 files (no base, no `d` records) and format 1 files (`popfetch-state 1`,
//! no mailbox; all their records are adopted) are still read, and compacted into
//! format 3 at once.
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
//!
//! Here: the public types and the recording API. Beside it: `place` (file names),
//! `record` (one line), `known` (the records in memory), `replay` (reading a
//! journal back), `open` (checks on open), `journal` (appending), `compact`,
//! `witness` (`.synced`), `adopt` (format 1) and `located` (where delivered
//! messages landed, for `keep = "until-deleted-locally"`).

mod adopt;
mod compact;
pub(crate) mod fingerprint;
pub(crate) mod identity;
mod journal;
mod known;
mod located;
mod open;
mod place;
mod record;
mod replay;
mod witness;

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::PathBuf;

pub(crate) use adopt::Adoption;
pub(crate) use known::Snapshot;
pub(crate) use located::Locations;
pub(crate) use place::Place;

use crate::sync::policy::Known;
use crate::sync::state::identity::{Identity, Record as Delivered};
use known::Holds;
use record::{delivered_line, intent_line, Record};

const MAGIC: &str = "popfetch-state";
/// 2: the header names the mailbox and an epoch; `L` records. 3: the header's base
/// time, and the compact `d` records counting from it.
const VERSION: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
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
    /// Reading was stopped because the session no longer needs the state
    /// (`UidlState::open_unless`, which never passes it on).
    #[error("reading the state file was stopped")]
    Stopped,
}

/// A delivery that was under way when a run died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Interrupted {
    pub uid: String,
    pub location: String,
    /// Announced in an adopted record: if it completed, record it adopted too.
    pub adopted: bool,
    /// The message's identity, if its body was read before the run died.
    pub id: Option<Identity>,
}

/// An announced delivery: where, and the message's identity once known.
type Pending = (String, Option<Identity>);

/// The state of one account, open for appending.
pub(crate) struct UidlState {
    path: PathBuf,
    place: Option<Place>,
    /// Open for appending; `None` only inside [`UidlState::peek`].
    journal: Option<File>,
    /// Delivered messages, and which of their records are adopted.
    recorded: Snapshot,
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

impl Holds for UidlState {
    fn snapshot(&self) -> &Snapshot {
        &self.recorded
    }
}

impl UidlState {
    fn apply(&mut self, record: Record) {
        match record {
            Record::Intent(uid, location, id) => {
                self.pending
                    .insert(uid.to_string(), (location.to_string(), id));
            }
            Record::Delivered(uid, record) => {
                // The table grown once for all the run's deliveries: grown as they
                // come, it would hold its old and new buckets at once each time it
                // doubles, at the run's peak of memory (issue 22).
                let expected = self.recorded.expected.take();
                self.recorded.delivered.by_uid.reserve(expected);
                let announced = self.pending.remove(uid);
                // Paired by identity too: of two messages under one unique-id
                // in one batch, the later intent replaced the earlier.
                if let (Some(located), Some((location, Some(announced))), Some(id)) =
                    (&mut self.recorded.located, announced, record.id)
                {
                    if announced == id {
                        located.insert(uid, id, &location);
                    }
                }
                self.recorded.delivered.insert(uid, record);
                self.recorded.adopted.remove(uid);
            }
            Record::Abandoned(uid) => {
                self.pending.remove(uid);
            }
            Record::Forgotten(uid, id) => {
                if let Some(located) = &mut self.recorded.located {
                    located.forget(uid, id);
                }
                self.recorded.delivered.forget(uid, id);
                if !self.recorded.delivered.by_uid.contains_key(uid) {
                    self.recorded.adopted.remove(uid);
                }
            }
        }
    }

    pub(crate) fn is_delivered(&self, uid: &str) -> bool {
        self.recorded.delivered.by_uid.contains_key(uid)
    }

    /// When `uid` was first seen, if it has been delivered (its earliest record).
    #[cfg(test)]
    pub(crate) fn first_seen(&self, uid: &str) -> Option<u64> {
        let records = self.recorded.delivered.by_uid.get(uid)?;
        records.iter().map(|r| r.first_seen).min()
    }

    /// Every delivered unique-id.
    #[cfg(test)]
    pub(crate) fn delivered_uids(&self) -> impl Iterator<Item = &str> {
        self.recorded.delivered_uids()
    }

    /// Deliveries that a previous run announced but never finished or abandoned.
    pub(crate) fn interrupted(&self) -> Vec<Interrupted> {
        self.pending
            .iter()
            .map(|(uid, (location, id))| Interrupted {
                uid: uid.clone(),
                location: location.clone(),
                adopted: self.recorded.adopted.contains(uid),
                id: *id,
            })
            .collect()
    }

    /// Every location kept (with `keep = "until-deleted-locally"`), for the
    /// target to say which are gone.
    pub(crate) fn locations(&self) -> Vec<&str> {
        self.recorded
            .located
            .as_ref()
            .map_or_else(Vec::new, Locations::all)
    }

    /// Notes the locations the target no longer holds: the plan then deletes
    /// their messages from the server (see [`Known::deleted_locally`]).
    pub(crate) fn mark_gone(&mut self, gone: Vec<String>) {
        if let Some(located) = &mut self.recorded.located {
            located.set_gone(gone);
        }
    }

    /// Records `uid` as delivered on the word of something other than this
    /// mailbox's own sessions (another tool's list, an adopted intent): it keeps the
    /// message from being fetched again, but never leads to a DELE.
    pub(crate) fn record_adopted(&mut self, uid: &str, first_seen: u64) -> Result<(), StateError> {
        self.append(&format!("L D {uid} {first_seen}"))?;
        let id = None;
        self.apply(Record::Delivered(uid, Delivered { first_seen, id }));
        self.recorded.adopted.insert(uid.to_string());
        Ok(())
    }
}

/// What a session needs of the state: the records the plan reads ([`Known`]), the
/// records it writes, and a way to make them durable. [`UidlState`] keeps them in
/// its journal; the session's tests put an instrumented one in its place, to see
/// when each record becomes durable and to make that fail.
pub(crate) trait Ledger: Known {
    fn record_intent(
        &mut self,
        uid: &str,
        location: &str,
        id: Option<Identity>,
    ) -> Result<(), StateError>;
    fn record_identity(&mut self, uid: &str, id: Identity) -> Result<(), StateError>;
    fn record_delivered(
        &mut self,
        uid: &str,
        first_seen: u64,
        id: Option<Identity>,
    ) -> Result<(), StateError>;
    fn record_abandoned(&mut self, uid: &str) -> Result<(), StateError>;
    fn forget(&mut self, uids: &[String]) -> Result<(), StateError>;
    fn forget_records(&mut self, records: &[(String, Identity)]) -> Result<(), StateError>;
    /// Makes every record so far durable.
    fn sync(&mut self) -> Result<(), StateError>;
    /// Compacts the journal when it has grown; never fails the session.
    fn tidy(&mut self);
}

impl Ledger for UidlState {
    /// Announces a delivery of `uid` to `location` before it starts. It is durable
    /// at the next [`sync`](Ledger::sync), which the caller makes before the delivery
    /// can become durable itself.
    /// The message's identity goes with it when the target has read the message
    /// before announcing it (mbox spools it first).
    fn record_intent(
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
    fn record_identity(&mut self, uid: &str, id: Identity) -> Result<(), StateError> {
        let Some((location, _)) = self.pending.get(uid).cloned() else {
            return Ok(());
        };
        self.record_intent(uid, &location, Some(id))
    }

    /// Records a completed delivery, with the message's identity when known. It
    /// becomes durable at the next [`sync`](Ledger::sync); until then the intent
    /// record lets recovery find it.
    fn record_delivered(
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
    fn record_abandoned(&mut self, uid: &str) -> Result<(), StateError> {
        self.append(&format!("A {uid}"))?;
        self.pending.remove(uid);
        Ok(())
    }

    /// Forgets unique-ids that are gone from the server.
    fn forget(&mut self, uids: &[String]) -> Result<(), StateError> {
        for uid in uids {
            self.append(&format!("F {uid}"))?;
            self.apply(Record::Forgotten(uid, None));
        }
        Ok(())
    }

    /// Forgets single records of unique-ids still on the server: those that no
    /// message listed under them matches any more.
    fn forget_records(&mut self, records: &[(String, Identity)]) -> Result<(), StateError> {
        for (uid, id) in records {
            self.append(&format!("F {uid} {} {}", id.size, id.hex()))?;
            self.apply(Record::Forgotten(uid, Some(*id)));
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StateError> {
        self.sync_journal()
    }

    fn tidy(&mut self) {
        self.compact_if_bloated()
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::place::mailbox_key;
    use super::record::seal;
    use super::*;

    pub(super) fn temp_state() -> (tempfile::TempDir, Place) {
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
        use crate::sync::policy::Known;
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

    /// `keep = "until-deleted-locally"`: where each delivery landed survives a
    /// reopen and a compaction, goes with its record, and is never kept for an
    /// adopted record or by a state that does not keep locations.
    #[test]
    fn locations_follow_their_records_through_reopen_and_compaction() {
        let id = |tag| Identity {
            size: 10,
            digest: [tag; 16],
        };
        let (_dir, place) = temp_state();
        let mut s = UidlState::open_located(&place, true).unwrap();
        for (uid, tag) in [("a", 1), ("b", 2), ("c", 3)] {
            s.record_intent(uid, &format!("17.M1P1Q{tag}.h"), None)
                .unwrap();
            s.record_identity(uid, id(tag)).unwrap();
            s.record_delivered(uid, 1, Some(id(tag))).unwrap();
        }
        // No identity, no location: such a record can never ground a DELE.
        s.record_intent("n", "17.M1P1Q9.h", None).unwrap();
        s.record_delivered("n", 1, None).unwrap();
        s.record_adopted("old", 1).unwrap();
        s.forget(&["c".into()]).unwrap();
        s.sync().unwrap();
        let sorted = |s: &UidlState| {
            let mut l: Vec<String> = s.locations().into_iter().map(str::to_string).collect();
            l.sort();
            l
        };
        assert_eq!(sorted(&s), ["17.M1P1Q1.h", "17.M1P1Q2.h"]);
        drop(s);
        let mut s = UidlState::open_located(&place, true).unwrap();
        assert_eq!(sorted(&s), ["17.M1P1Q1.h", "17.M1P1Q2.h"]);
        s.compact().unwrap();
        drop(s);
        let mut s = UidlState::open_located(&place, true).unwrap();
        assert_eq!(sorted(&s), ["17.M1P1Q1.h", "17.M1P1Q2.h"]);
        assert!(!s.bloated(), "a kept location is not bloat");
        // The target says b's file is gone: b, and only b, was deleted locally.
        s.mark_gone(vec!["17.M1P1Q2.h".into()]);
        assert!(s.deleted_locally("b", id(2)));
        assert!(!s.deleted_locally("a", id(1)));
        assert!(!s.deleted_locally("b", id(7)));
        // Two messages under one unique-id in one batch: the later intent
        // replaced the earlier, and neither delivery takes the other's place.
        s.record_intent("r", "17.M1P1Q5.h", Some(id(5))).unwrap();
        s.record_intent("r", "17.M1P1Q6.h", Some(id(6))).unwrap();
        s.record_delivered("r", 1, Some(id(5))).unwrap();
        s.record_delivered("r", 1, Some(id(6))).unwrap();
        assert_eq!(sorted(&s), ["17.M1P1Q1.h", "17.M1P1Q2.h"]);
        // A state that does not keep locations knows none, and a compacted
        // journal still reads as before to it.
        drop(s);
        let plain = UidlState::open(&place).unwrap();
        assert!(plain.locations().is_empty());
        assert!(plain.is_delivered("a") && plain.is_delivered("b"));
        assert!(plain.interrupted().is_empty());
    }
}
