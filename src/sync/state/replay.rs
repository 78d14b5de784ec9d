//! Reading a journal back: its header checked (magic, format, mailbox, epoch) and
//! every record applied in order, a torn last line set apart, and any other damage
//! refused rather than guessed at.

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
    /// Applies every line of the journal.
    pub(super) fn replay(&mut self, text: &[u8]) -> Result<Replayed, StateError> {
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
        // Where deliveries landed: each `D` of this mailbox's own paired with the
        // `I` before it, when the account keeps them (see `located`).
        let mut located = self.recorded.located.take();
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
