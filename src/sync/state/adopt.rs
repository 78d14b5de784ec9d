//! Adoption of a format-1 state (`STATE_DIR/NAME.state`, written by an older
//! popfetch per account, naming no mailbox): its records are taken over as `L`
//! records, which keep messages from being fetched again but never ground a DELE.

use std::path::PathBuf;

use super::open::read_existing;
use super::{Place, StateError, UidlState};

/// A state file of an older popfetch taken over by its mailbox, said once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Adoption {
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

impl UidlState {
    /// The state of `place` when it has no journal of its own: the format-1 file
    /// of its account, adopted, else nothing.
    pub(super) fn adopt(place: &Place) -> Result<UidlState, StateError> {
        let path = place.path();
        let mut state = UidlState::empty(&path, Some(place));
        let Some(legacy) = &place.legacy else {
            return Ok(state);
        };
        let Some(text) = read_existing(legacy)? else {
            return Ok(state);
        };
        let mut old = UidlState::empty(legacy, None);
        // Format 1 only: no popfetch writes a newer format under an account's name.
        if old.replay(&text, None)?.version != 1 {
            return Ok(state);
        }
        state.adoption = Some(Adoption {
            from: legacy.clone(),
            to: path,
            messages: old.recorded.delivered.count(),
        });
        state.recorded = old.recorded;
        state.pending = old.pending;
        Ok(state)
    }

    /// The format-1 file this open adopted, for a one-time notice.
    pub(crate) fn adoption(&self) -> Option<&Adoption> {
        self.adoption.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use crate::sync::state::Ledger;
    use std::fs;

    use super::super::record::seal;
    use super::super::tests::temp_state;
    use super::*;

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
        use crate::sync::policy::Known;
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
            text.starts_with("popfetch-state 3 me@pop.example:995 "),
            "{text}"
        );
        // Compacted: u1's first sighting is the base time.
        let header = text.lines().next().unwrap().split('\t').next().unwrap();
        assert!(header.ends_with(" 5"), "{header}");
        assert!(text.contains("L d u1 0\t"), "{text}");

        // A delivery of this mailbox's own makes the record its own, also across a
        // compaction.
        let mut s = s;
        s.record_delivered("u1", 9, None).unwrap();
        s.compact().unwrap();
        drop(s);
        let s = UidlState::open(&place).unwrap();
        assert!(s.own("u1") && s.first_seen("u1") == Some(5));
    }
}
