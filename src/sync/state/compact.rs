//! Compaction: the journal rewritten atomically as one line per live record under
//! a new epoch, when it is damaged at the tail, in an old format, or has grown
//! well past its live records.

use std::io;
use std::path::Path;

use super::journal::open_append;
use super::record::{delivered_line, intent_line, seal};
use super::{StateError, UidlState, MAGIC, VERSION};
use crate::sys::durable;

impl UidlState {
    /// Whether the journal holds many more lines than live records: a run that
    /// delivered N messages appended 2N (an intent and a delivery each).
    pub(super) fn bloated(&self) -> bool {
        // A kept location is a second line (its intent) beside its record.
        let located = self.recorded.located.as_ref().map_or(0, |l| l.count());
        let live = self.recorded.delivered.count() + self.pending.len() + located;
        self.lines > live + live / 2 + 1000
    }

    /// Compacts the journal if it has grown well past its live records, so that the
    /// next run reads one short line per message. The journal is valid either way,
    /// so a failure here (a full disk) changes nothing and is left to the next open.
    pub(crate) fn compact_if_bloated(&mut self) {
        if self.journal.is_some() && self.bloated() {
            let _ = self.compact();
        }
    }

    /// Rewrites the journal as a snapshot of the live records, atomically.
    pub(super) fn compact(&mut self) -> Result<(), StateError> {
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

/// Writes a snapshot of `state` atomically; returns how many lines it holds.
fn write_snapshot(path: &Path, header: &str, state: &UidlState) -> io::Result<usize> {
    let mut text = seal(header);
    let mark = |uid: &str| {
        if state.recorded.adopted.contains(uid) {
            "L "
        } else {
            ""
        }
    };
    let mut uids: Vec<_> = state.recorded.delivered.by_uid.iter().collect();
    uids.sort_by(|a, b| a.0.cmp(b.0));
    for (uid, records) in uids {
        for record in records {
            // The intent before its delivery: where it landed, read back by replay.
            let location = record.id.and_then(|id| {
                state
                    .recorded
                    .located
                    .as_ref()
                    .and_then(|located| located.of(uid, id))
            });
            if let Some(location) = location {
                text.push_str(&seal(&intent_line(uid, location, record.id)));
            }
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
    durable::replace(path, text.as_bytes())?;
    Ok(memchr::memchr_iter(b'\n', text.as_bytes()).count())
}

#[cfg(test)]
mod tests {
    use crate::sync::state::Ledger;
    use std::fs;

    use super::super::tests::temp_state;
    use super::*;

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
}
