//! One journal line: the records (`I`, `D`, `A`, `F`, and `L` for adopted ones)
//! parsed from and rendered to text, and the checksum that seals each line.

use crate::sync::state::identity::{Identity, Record as Delivered};

/// A journal record, borrowed from its line (`L` is a prefix, read apart).
pub(super) enum Record<'a> {
    Intent(&'a str, &'a str, Option<Identity>),
    Delivered(&'a str, Delivered),
    Abandoned(&'a str),
    Forgotten(&'a str, Option<Identity>),
}

/// Whether an intent's location can only name something inside its target: a
/// file name of one component, or an mbox mark. Each target checks its own form
/// again before it touches anything (issue 15, bug 8).
pub(super) fn is_plain_location(location: &str) -> bool {
    !location.is_empty() && location != "." && location != ".." && !location.contains(['/', '\0'])
}

/// A `D` line: the identity, when known, as two trailing fields, so that a record
/// without one reads as before.
pub(super) fn delivered_line(uid: &str, first_seen: u64, id: Option<Identity>) -> String {
    match id {
        Some(id) => format!("D {uid} {first_seen} {} {}", id.size, id.hex()),
        None => format!("D {uid} {first_seen}"),
    }
}

/// An `I` line, with the identity as two trailing fields when known.
pub(super) fn intent_line(uid: &str, location: &str, id: Option<Identity>) -> String {
    match id {
        Some(id) => format!("I {uid} {location} {} {}", id.size, id.hex()),
        None => format!("I {uid} {location}"),
    }
}

/// A record with its checksum and newline.
pub(super) fn seal(record: &str) -> String {
    format!("{record}\t{:08x}\n", crc32fast::hash(record.as_bytes()))
}

/// The record of a sealed line, if its checksum matches.
pub(super) fn checked(line: &[u8]) -> Option<&str> {
    let tab = memchr::memrchr(b'\t', line)?;
    let (record, crc) = (&line[..tab], &line[tab + 1..]);
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if crc32fast::hash(record) != crc {
        return None;
    }
    std::str::from_utf8(record).ok()
}

/// The record of a line's text, or `None` if it is not one.
pub(super) fn parse_record(record: &str) -> Option<Record<'_>> {
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

    #[test]
    fn a_sealed_line_reads_back_and_damage_does_not() {
        let line = seal("D u1 5");
        assert_eq!(
            line,
            format!("D u1 5\t{:08x}\n", crc32fast::hash(b"D u1 5"))
        );
        let body = line.trim_end_matches('\n').as_bytes();
        assert_eq!(checked(body), Some("D u1 5"));
        assert_eq!(
            checked(&line.replace("u1", "u2").as_bytes()[..body.len()]),
            None
        );
        assert!(matches!(
            parse_record("D u1 5"),
            Some(Record::Delivered(
                "u1",
                Delivered {
                    first_seen: 5,
                    id: None
                }
            ))
        ));
        // An identity is two fields, both or neither.
        assert!(parse_record("D u1 5 10").is_none());
        assert!(parse_record("A u1 x").is_none());
        assert!(parse_record("X u1").is_none());
    }
}
