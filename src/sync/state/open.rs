//! Opening the state of a mailbox: its journal read and checked against the
//! header's mailbox and the `.synced` witness, or a format-1 file adopted, and a
//! journal that needs it rewritten or made durable before the session writes.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::journal::open_append;
use super::witness::Synced;
use super::{Place, Snapshot, StateError, UidlState, VERSION};

/// The file's bytes, or `None` if there is no file.
pub(super) fn read_existing(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
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
    pub(super) fn empty(path: &Path, place: Option<&Place>) -> UidlState {
        UidlState {
            path: path.to_path_buf(),
            place: place.cloned(),
            journal: None,
            recorded: Snapshot::default(),
            pending: BTreeMap::new(),
            lines: 0,
            len: 0,
            unsynced: false,
            epoch: 0,
            witness: None,
            adoption: None,
        }
    }

    /// [`UidlState::open`], keeping where each delivery landed when `located`
    /// (`keep = "until-deleted-locally"`): see [`super::Locations`].
    pub(crate) fn open_located(place: &Place, located: bool) -> Result<UidlState, StateError> {
        UidlState::open_with(place, located, None)
    }

    /// [`UidlState::open_located`], unless `stop` is set before the state is
    /// read to its end: then `None`, and nothing changed on disk. For a session
    /// that a glance may find with nothing to do (see `sync`).
    pub(crate) fn open_unless(
        place: &Place,
        located: bool,
        stop: &AtomicBool,
    ) -> Result<Option<UidlState>, StateError> {
        match UidlState::open_with(place, located, Some(stop)) {
            Ok(state) => Ok(Some(state)),
            Err(StateError::Stopped) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Reads the state of `place` without changing anything on disk: no file is
    /// created, adopted or compacted (for `list` and `sync --dry-run`).
    pub(crate) fn peek(place: &Place) -> Result<Snapshot, StateError> {
        Ok(UidlState::read(place, false, None)?.0.recorded)
    }

    /// Reads the state of `place`: its own file, checked against the header's
    /// mailbox and the witness; else the format-1 file of its account, adopted;
    /// else nothing. `unsynced` is set when the file needs a rewrite (a torn tail,
    /// an old format). The witness comes back too, read once for the whole open.
    fn read(
        place: &Place,
        located: bool,
        stop: Option<&AtomicBool>,
    ) -> Result<(UidlState, Option<Synced>), StateError> {
        let path = place.path();
        // The witness first: it only grows after the journal has, so a journal read
        // after it is never shorter than it unless the file was cut.
        let synced = Synced::read(&place.witness());
        let Some(text) = read_existing(&path)? else {
            let mut state = UidlState::adopt(place)?;
            if located {
                // Adopted records are not this mailbox's own: no location of theirs counts.
                state.recorded.located = Some(super::Locations::default());
            }
            return Ok((state, None));
        };
        let mut state = UidlState::empty(&path, Some(place));
        if located {
            state.recorded.located = Some(super::Locations::default());
        }
        let replayed = state.replay(&text, stop)?;
        if let Some(found) = replayed.mailbox.filter(|m| m != place.mailbox()) {
            return Err(StateError::Foreign {
                home: Place::new(&place.dir, found.clone(), None).path(),
                path,
                found,
                expected: place.mailbox().to_string(),
            });
        }
        if let Some(synced) = synced.as_ref().filter(|s| s.epoch == replayed.epoch) {
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
        Ok((state, synced))
    }

    /// Opens the state of `place`, creating an empty one if there is none. A
    /// format-1 state of its account is adopted: see [`UidlState::adoption`].
    #[cfg(test)]
    pub(crate) fn open(place: &Place) -> Result<UidlState, StateError> {
        UidlState::open_with(place, false, None)
    }

    fn open_with(
        place: &Place,
        located: bool,
        stop: Option<&AtomicBool>,
    ) -> Result<UidlState, StateError> {
        let (mut state, synced) = UidlState::read(place, located, stop)?;
        let path = state.path.clone();
        // `unsynced` after `read`: the file is missing, torn, or in an old format.
        let fresh = !path.exists();
        if fresh || state.unsynced || state.bloated() {
            state.unsynced = false;
            state.compact()?;
        } else {
            state.journal = Some(open_append(&path).map_err(|source| StateError::Io {
                action: "open",
                path,
                source,
            })?);
            // A run that ended without its last fsync left a witness behind the
            // journal: make the journal durable and say so, for the next open.
            if synced.is_none_or(|s| s.epoch != state.epoch || s.len != state.len) {
                state.unsynced = true;
                state.sync_journal()?;
            }
        }
        // The old file stays where it is: each mailbox adopts it once (it then has
        // a state of its own), so two that shared an account name before keep
        // apart, instead of the first taking it from the other.
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::super::place::mailbox_key;
    use super::super::tests::temp_state;
    use super::*;
    use crate::sync::state::Ledger;

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
    fn a_stopped_open_reads_no_further_and_changes_nothing() {
        let (_dir, place) = temp_state();
        let mut s = UidlState::open(&place).unwrap();
        for i in 0..10_000 {
            s.record_delivered(&format!("u{i}"), 1, None).unwrap();
        }
        s.sync().unwrap();
        drop(s);
        let before = fs::read(place.path()).unwrap();
        let stop = AtomicBool::new(true);
        assert!(UidlState::open_unless(&place, false, &stop)
            .unwrap()
            .is_none());
        assert_eq!(fs::read(place.path()).unwrap(), before);
        stop.store(false, std::sync::atomic::Ordering::Relaxed);
        let s = UidlState::open_unless(&place, false, &stop)
            .unwrap()
            .unwrap();
        assert_eq!(s.delivered_uids().count(), 10_000);
    }
}
