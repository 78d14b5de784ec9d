//! One journal line: the records (`I`, `D` and its compact form `d`, `A`, `F`, and
//! `L` for adopted ones) parsed from and rendered to text, and the checksum that
//! seals each line.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

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

/// A `d` line, the compact form of a `D` line that only a compaction writes (issue
/// 22: at most 64 bytes a message with Dovecot's 16-character unique-ids): the
/// first-seen time as an offset from `base`, the header's base time, and the
/// digest in base64 (22 characters instead of 32).
pub(super) fn compact_line(uid: &str, first_seen: u64, base: u64, id: Option<Identity>) -> String {
    // Compaction takes the least first-seen time as its base: never below it.
    let offset = first_seen.saturating_sub(base);
    match id {
        Some(id) => format!(
            "d {uid} {offset} {} {}",
            id.size,
            URL_SAFE_NO_PAD.encode(id.digest)
        ),
        None => format!("d {uid} {offset}"),
    }
}

/// Reads back the size and base64 digest of a `d` line.
fn compact_identity(size: &str, digest: &str) -> Option<Identity> {
    let size = size.parse().ok()?;
    let mut bytes = [0u8; 16];
    // 22 characters are 16 bytes; the engine refuses non-canonical trailing bits,
    // so each digest has one spelling, as in hex.
    if digest.len() != 22 || URL_SAFE_NO_PAD.decode_slice(digest, &mut bytes).ok()? != 16 {
        return None;
    }
    Some(Identity {
        size,
        digest: bytes,
    })
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

/// The record of a line's text, or `None` if it is not one. `base` is the header's
/// base time, which only a format-3 file has, and which a `d` line needs.
pub(super) fn parse_record(record: &str, base: Option<u64>) -> Option<Record<'_>> {
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
        ("d", [Some(offset), size, digest]) => Some(Record::Delivered(
            uid,
            Delivered {
                first_seen: base?.checked_add(offset.parse().ok()?)?,
                id: match (size, digest) {
                    (None, None) => None,
                    (Some(size), Some(digest)) => Some(compact_identity(size, digest)?),
                    _ => return None,
                },
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
            parse_record("D u1 5", None),
            Some(Record::Delivered(
                "u1",
                Delivered {
                    first_seen: 5,
                    id: None
                }
            ))
        ));
        // An identity is two fields, both or neither.
        assert!(parse_record("D u1 5 10", None).is_none());
        assert!(parse_record("A u1 x", None).is_none());
        assert!(parse_record("X u1", None).is_none());
    }

    fn delivered(record: &str, base: Option<u64>) -> Option<(&str, Delivered)> {
        match parse_record(record, base)? {
            Record::Delivered(uid, record) => Some((uid, record)),
            _ => None,
        }
    }

    /// The compact form reads back as the record it was written from, its time
    /// counted from the header's base.
    #[test]
    fn the_compact_form_round_trips() {
        let id = Identity {
            size: 2048,
            digest: *b"\x00\xff\x10abcdefghijklm",
        };
        for (first_seen, base, id) in [
            (1_764_547_200, 1_764_547_200, Some(id)),
            (1_764_547_260, 1_764_547_200, Some(id)),
            (1_764_547_260, 0, None),
            (u64::MAX, 1, Some(id)),
        ] {
            let line = compact_line("0123456789abcdef", first_seen, base, id);
            assert!(line.starts_with("d 0123456789abcdef "), "{line}");
            let (uid, record) = delivered(&line, Some(base)).unwrap();
            assert_eq!(uid, "0123456789abcdef");
            assert_eq!(record, Delivered { first_seen, id }, "{line}");
        }
        let line = compact_line("u", 1_764_547_260, 1_764_547_200, Some(id));
        assert_eq!(line, "d u 60 2048 AP8QYWJjZGVmZ2hpamtsbQ");
        // Another base, another time: the base is part of what the line says.
        assert_eq!(delivered(&line, Some(0)).unwrap().1.first_seen, 60);
        // No base (a format before 3): a `d` line is not a record there.
        assert!(delivered(&line, None).is_none());
        // An offset past the end of time, half an identity, a digest of another
        // length or a non-canonical spelling: not records.
        assert!(delivered("d u 1", Some(u64::MAX)).is_none());
        assert!(delivered("d u 60 2048", Some(0)).is_none());
        assert!(delivered("d u 60 2048 AP8QYWJjZGVmZ2hpamtsb", Some(0)).is_none());
        assert!(delivered("d u 60 2048 AP8QYWJjZGVmZ2hpamtsbR", Some(0)).is_none());
        assert!(delivered("d u 60 2048 AP8QYWJjZGVmZ2hpamts+Q", Some(0)).is_none());
        assert!(delivered("d u x", Some(0)).is_none());
    }

    /// Issue 22's target: a compacted record of a Dovecot message (a 16-character
    /// unique-id, a 4-digit size) with its identity takes at most 64 bytes, sealed,
    /// for a first-seen time up to a day after the base.
    #[test]
    fn a_compacted_dovecot_record_fits_in_64_bytes() {
        let id = Identity {
            size: 9999,
            digest: [0xff; 16],
        };
        let line = seal(&compact_line(
            "00000001692b1c3a",
            1_764_547_200 + 86_399,
            1_764_547_200,
            Some(id),
        ));
        assert!(line.len() <= 64, "{} bytes: {line:?}", line.len());
    }
}
