//! Compaction: the journal rewritten atomically as one line per live record under
//! a new epoch, when it is damaged at the tail, in an old format, or has grown
//! well past its live records. Deliveries are written in the compact `d` form,
//! counting from the header's base time.

use std::io::{self, Write};

use super::journal::open_append;
use super::record::{compact_line, intent_line, seal};
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
        // The least first-seen time: every offset from it is small and positive.
        let base = (self.recorded.delivered.by_uid.values())
            .flat_map(|records| records.iter().map(|r| r.first_seen))
            .min()
            .unwrap_or(0);
        let header = format!("{MAGIC} {VERSION} {mailbox} {epoch:016x} {base}");
        let lines =
            durable::replace_with(&self.path, |out| write_snapshot(out, &header, base, self))
                .map_err(io_err)?;
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

/// Writes a snapshot of `state` into `out`, line by line (never the whole of it in
/// memory: issue 22); returns how many lines it wrote. In the order of the map,
/// not sorted: a replay reads the lines of different unique-ids in any order, and
/// a sorted list of every record would cost memory at a run's peak.
fn write_snapshot(
    out: &mut dyn Write,
    header: &str,
    base: u64,
    state: &UidlState,
) -> io::Result<usize> {
    let mut lines = 0;
    let mut put = |record: &str| {
        lines += 1;
        out.write_all(seal(record).as_bytes())
    };
    put(header)?;
    let mark = |uid: &str| {
        if state.recorded.adopted.contains(uid) {
            "L "
        } else {
            ""
        }
    };
    for (uid, records) in &state.recorded.delivered.by_uid {
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
                put(&intent_line(uid, location, record.id))?;
            }
            let line = compact_line(uid, record.first_seen, base, record.id);
            put(&format!("{}{line}", mark(uid)))?;
        }
    }
    for (uid, (location, id)) in &state.pending {
        put(&format!(
            "{}{}",
            mark(uid),
            intent_line(uid, location, None)
        ))?;
        if id.is_some() {
            let line = intent_line(uid, location, *id);
            put(&format!("{}{line}", mark(uid)))?;
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use crate::sync::policy::Known;
    use crate::sync::state::identity::{Identity, Record};
    use crate::sync::state::Ledger;
    use std::fs;

    impl Record {
        fn new(first_seen: u64, id: Identity) -> Record {
            Record {
                first_seen,
                id: Some(id),
            }
        }
    }

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

    /// The header's base is the least first-seen time, and each compact record
    /// counts from it: times far apart, and the same times again after a second
    /// compaction under another base.
    #[test]
    fn compact_records_count_from_the_headers_base() {
        let (_dir, place) = temp_state();
        let path = place.path();
        let id = |tag| Identity {
            size: 2000 + u64::from(tag),
            digest: [tag; 16],
        };
        let times = [1_764_547_200, 1_764_547_200 + 86_400 * 400, 1_000, u64::MAX];
        let mut s = UidlState::open(&place).unwrap();
        for (i, time) in times.iter().enumerate() {
            s.record_delivered(&format!("u{i}"), *time, Some(id(i as u8)))
                .unwrap();
        }
        s.record_adopted("a", 999).unwrap();
        s.compact().unwrap();
        drop(s);
        let header = |path: &std::path::Path| {
            let text = fs::read_to_string(path).unwrap();
            let line = text.lines().next().unwrap().split('\t').next().unwrap();
            line.rsplit(' ').next().unwrap().to_string()
        };
        assert_eq!(header(&path), "999");
        let mut s = UidlState::open(&place).unwrap();
        for (i, time) in times.iter().enumerate() {
            assert_eq!(
                s.records(&format!("u{i}")),
                [Record::new(*time, id(i as u8))]
            );
        }
        assert_eq!(s.first_seen("a"), Some(999));
        // Without the earliest two, the base moves up; the times stay.
        s.forget(&["a".into(), "u2".into()]).unwrap();
        s.compact().unwrap();
        drop(s);
        assert_eq!(header(&path), "1764547200");
        let s = UidlState::open(&place).unwrap();
        assert_eq!(s.records("u1"), [Record::new(times[1], id(1))]);
        assert_eq!(s.records("u3"), [Record::new(u64::MAX, id(3))]);
        assert_eq!(s.delivered_uids().count(), 3);
        // An empty state has base 0.
        let mut s = s;
        s.forget(&["u0".into(), "u1".into(), "u3".into()]).unwrap();
        s.compact().unwrap();
        assert_eq!(header(&path), "0");
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
