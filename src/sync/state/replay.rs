//! Reading a journal back: its header checked (magic, format, mailbox, epoch) and
//! every record applied in order, a torn last line set apart, and any other damage
//! refused rather than guessed at.

use std::sync::atomic::{AtomicBool, Ordering};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use super::known::{Deliveries, Records};
use super::record::{checked, is_plain_location, parse_record, Record};
use super::{StateError, UidlState, MAGIC, VERSION};
use crate::sync::state::identity::{Identity, Record as Delivered};

/// What the header and the shape of a journal said.
pub(super) struct Replayed {
    pub(super) version: u32,
    pub(super) mailbox: Option<String>,
    pub(super) epoch: u64,
    /// A partial last line.
    pub(super) torn: bool,
    /// Length up to the last whole line.
    pub(super) whole: u64,
}

impl UidlState {
    /// Applies every line of the journal, unless `stop` is set meanwhile
    /// ([`StateError::Stopped`]; looked at every few thousand lines).
    pub(super) fn replay(
        &mut self,
        text: &[u8],
        stop: Option<&AtomicBool>,
    ) -> Result<Replayed, StateError> {
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
        let (mailbox, epoch, base) = if version >= 2 {
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
            // Format 3: the base time that the compact `d` records count from.
            let base = if version >= 3 {
                let base = words.next().and_then(|b| b.parse::<u64>().ok());
                Some(base.ok_or_else(|| damaged(1, "the header names no base time"))?)
            } else {
                None
            };
            (Some(mailbox.to_string()), epoch, base)
        } else {
            (None, 0, None)
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
        // Where deliveries landed: each `D` of this mailbox's own paired with the
        // `I` before it, when the account keeps them (see `located`).
        let mut located = self.recorded.located.take();
        for (index, line) in lines.iter().enumerate().skip(1) {
            if index % 4096 == 0 && stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
                return Err(StateError::Stopped);
            }
            let record = checked(line).ok_or_else(|| damaged(index + 1, "bad checksum"))?;
            let (record, prefixed) = match record.strip_prefix("L ") {
                Some(inner) if version >= 2 => (inner, true),
                _ => (record, false),
            };
            let marked = prefixed || all_adopted;
            let parsed = parse_record(record, base)
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
                        let announced = pending.remove(uid);
                        // By identity too, as `UidlState::apply` pairs them.
                        if let (Some(located), Some((location, Some(announced))), Some(id)) =
                            (&mut located, announced, record.id)
                        {
                            if announced == id {
                                located.insert(uid, id, location);
                            }
                        }
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
                    if let Some(located) = &mut located {
                        located.forget(uid, id);
                    }
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
        self.recorded.delivered = records;
        self.recorded.located = located;
        self.pending = pending
            .into_iter()
            .map(|(uid, (location, id))| (uid.to_owned(), (location.to_owned(), id)))
            .collect();
        self.recorded.adopted = adopted.into_iter().map(str::to_owned).collect();
        self.lines = lines.len();
        Ok(Replayed {
            version,
            mailbox,
            epoch,
            torn,
            whole: start as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::sync::state::Ledger;
    use std::fs::{self, OpenOptions};
    use std::io::Write;

    use super::super::record::seal;
    use super::super::tests::temp_state;
    use super::*;

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

    /// A format-2 file (long `D` lines, no base time) opens as it did, and is
    /// rewritten at once in format 3, in compact `d` lines that read back the same.
    #[test]
    fn a_format_2_file_opens_and_is_rewritten_compactly() {
        use crate::sync::policy::Known;
        let (_dir, place) = temp_state();
        let path = place.path();
        let id = Identity {
            size: 2048,
            digest: [0x5a; 16],
        };
        let old = [
            "popfetch-state 2 me@pop.example:995 00000000000000ab".to_string(),
            format!("D 0000000169f1a2b3 1764547260 2048 {}", id.hex()),
            "D no-identity 1764547200".to_string(),
            "L D adopted 1764547300".to_string(),
            "I open 1795333438.M1P2Q3.host".to_string(),
        ];
        fs::write(&path, old.iter().map(|r| seal(r)).collect::<String>()).unwrap();
        let check = |s: &UidlState| {
            assert_eq!(
                s.records("0000000169f1a2b3"),
                [Delivered {
                    first_seen: 1_764_547_260,
                    id: Some(id)
                }]
            );
            assert_eq!(s.first_seen("no-identity"), Some(1_764_547_200));
            assert!(s.own("no-identity") && !s.own("adopted"));
            assert_eq!(s.first_seen("adopted"), Some(1_764_547_300));
            assert_eq!(s.interrupted()[0].location, "1795333438.M1P2Q3.host");
        };
        let s = UidlState::open(&place).unwrap();
        check(&s);
        drop(s);
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.split('\t').next().unwrap())
            .collect();
        assert!(
            lines[0].starts_with("popfetch-state 3 me@pop.example:995 ")
                && lines[0].ends_with(" 1764547200"),
            "{text}"
        );
        let mut compact = lines[1..].to_vec();
        compact.sort_unstable();
        assert_eq!(
            compact,
            [
                "I open 1795333438.M1P2Q3.host",
                "L d adopted 100",
                "d 0000000169f1a2b3 60 2048 WlpaWlpaWlpaWlpaWlpaWg",
                "d no-identity 0",
            ]
        );
        check(&UidlState::open(&place).unwrap());
    }

    /// A compact line is sealed like any other: damage to one in the middle of the
    /// journal is refused, one torn at the end is ignored, and one in a file of a
    /// format without a base time is not a record.
    #[test]
    fn a_damaged_compact_line_is_refused() {
        let (_dir, place) = temp_state();
        let path = place.path();
        let id = Identity {
            size: 2048,
            digest: [7; 16],
        };
        let mut s = UidlState::open(&place).unwrap();
        s.record_delivered("u1", 1_764_547_200, Some(id)).unwrap();
        s.record_delivered("u2", 1_764_547_201, Some(id)).unwrap();
        s.compact().unwrap();
        drop(s);
        let whole = fs::read_to_string(&path).unwrap();
        assert_eq!(whole.matches("\nd u").count(), 2, "{whole}");
        // One character changed in the first record's digest.
        let at = whole.find("\nd u").unwrap() + 13;
        let mut damaged = whole.clone().into_bytes();
        damaged[at] = if damaged[at] == b'A' { b'B' } else { b'A' };
        fs::write(&path, &damaged).unwrap();
        let err = UidlState::open(&place).err().unwrap();
        assert!(matches!(err, StateError::Damaged { line: 2, .. }), "{err}");
        // A torn compact line at the end: the rest reads, and it is compacted away.
        fs::write(&path, &whole).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"d u3 5 2048 BwcHBwcHBw").unwrap();
        let s = UidlState::open(&place).unwrap();
        assert!(s.is_delivered("u1") && s.is_delivered("u2") && !s.is_delivered("u3"));
        assert_eq!(s.first_seen("u2"), Some(1_764_547_201));
        drop(s);
        assert!(fs::read_to_string(&path).unwrap().ends_with('\n'));
        // A format-2 header has no base: a `d` line under it is damage, not a guess.
        let v2 = [
            "popfetch-state 2 me@pop.example:995 00000000000000ab",
            "d u1 0",
        ];
        fs::write(&path, v2.iter().map(|r| seal(r)).collect::<String>()).unwrap();
        let _ = fs::remove_file(place.witness());
        let err = UidlState::open(&place).err().unwrap();
        assert!(matches!(err, StateError::Damaged { line: 2, .. }), "{err}");
        // And a format-3 header must name its base.
        let v3 = ["popfetch-state 3 me@pop.example:995 00000000000000ab"];
        fs::write(&path, v3.iter().map(|r| seal(r)).collect::<String>()).unwrap();
        let err = UidlState::open(&place).err().unwrap();
        assert!(matches!(err, StateError::Damaged { line: 1, .. }), "{err}");
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
