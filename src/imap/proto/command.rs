//! Command arguments in their wire form (RFC 3501 §4, §9): atoms, quoted strings
//! and literals for astrings, and the INTERNALDATE of APPEND. Pure: no I/O.

use chrono::{DateTime, Utc};

/// One piece of a command line as the client writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Arg {
    /// Written as is: an atom, a quoted string, a number.
    Text(String),
    /// A string that only a literal can carry (8-bit or CR/LF, RFC 3501 §4.3).
    Literal(Vec<u8>),
}

/// An astring (RFC 3501 §9): an atom when it is one, else a quoted string when
/// one can carry it (7-bit, no CR, LF or NUL), else a literal.
pub(crate) fn astring(value: &[u8]) -> Arg {
    if !value.is_empty() && value.iter().all(|&b| is_atom_char(b)) {
        return Arg::Text(String::from_utf8_lossy(value).into_owned());
    }
    match quoted(value) {
        Some(text) => Arg::Text(text),
        None => Arg::Literal(value.to_vec()),
    }
}

/// A quoted string, or `None` when one cannot carry `value`.
pub(crate) fn quoted(value: &[u8]) -> Option<String> {
    let quotable = value
        .iter()
        .all(|&b| b.is_ascii() && !matches!(b, b'\0' | b'\r' | b'\n'));
    if !quotable {
        return None;
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for &b in value {
        if b == b'"' || b == b'\\' {
            out.push('\\');
        }
        out.push(b as char);
    }
    out.push('"');
    Some(out)
}

/// ATOM-CHAR (RFC 3501 §9): printable ASCII but the atom-specials; "]" counts as
/// special here too, as it would close a response code.
fn is_atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !b"(){%*\"\\]".contains(&b)
}

/// An INTERNALDATE for APPEND (RFC 3501 §9, `date-time`), in UTC:
/// `"dd-Mon-yyyy hh:mm:ss +0000"`, the day padded with a space.
pub(crate) fn date_time(at: DateTime<Utc>) -> String {
    at.format("\"%e-%b-%Y %H:%M:%S +0000\"").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn astrings_take_the_plainest_form() {
        let text = |s: &str| Arg::Text(s.to_string());
        assert_eq!(astring(b"INBOX"), text("INBOX"));
        assert_eq!(astring(b"me@example.org"), text("me@example.org"));
        assert_eq!(astring(b""), text("\"\""));
        assert_eq!(astring(b"a b"), text("\"a b\""));
        assert_eq!(astring(b"a\"b\\c"), text(r#""a\"b\\c""#));
        assert_eq!(astring(b"x]"), text("\"x]\""));
        assert_eq!(
            astring(b"p\xc3\xa4ss"),
            Arg::Literal(b"p\xc3\xa4ss".to_vec())
        );
        assert_eq!(astring(b"a\r\nb"), Arg::Literal(b"a\r\nb".to_vec()));
    }

    #[test]
    fn dates_are_fixed_width_utc() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(date_time(at), "\"14-Nov-2023 22:13:20 +0000\"");
        let at = DateTime::from_timestamp(0, 0).unwrap();
        assert_eq!(date_time(at), "\" 1-Jan-1970 00:00:00 +0000\"");
    }
}
