//! The `.synced` witness beside the journal: the epoch, length and line count of
//! the journal as of its last fsync, so that a journal cut short at a line
//! boundary, which has no torn tail to tell, is refused (issue 15, bug 7).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::record::{checked, seal};
use super::UidlState;

/// The witness: epoch, length and lines of the journal as of its last fsync.
pub(super) struct Synced {
    pub(super) epoch: u64,
    pub(super) len: u64,
    pub(super) lines: u64,
}

impl Synced {
    pub(super) fn read(path: &Path) -> Option<Synced> {
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

impl UidlState {
    /// Tells the witness how long the journal is now. Called only once that length
    /// is durable. A witness that cannot be written stays behind the journal, which
    /// only weakens the check, so a failure here is not an error.
    pub(super) fn witness(&mut self) {
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::temp_state;
    use super::super::StateError;
    use super::*;
    use crate::sync::state::Ledger;

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
        fs::write(&path, &whole[..usize::try_from(synced.len).unwrap() - 10]).unwrap();
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
}
