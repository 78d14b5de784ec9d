//! Pure parsers for what a POP3 server says: status lines (RFC 1939 §3), extended
//! response codes (RFC 2449 §8, RFC 3206), CAPA lines (RFC 2449 §6), scan listings
//! (RFC 1939 §5) and the APOP timestamp of the greeting (RFC 1939 §7).

pub(crate) use crate::text::escape;

use super::Error;

/// Longest status line we accept. RFC 2449 §4 caps responses at 512 octets including
/// CRLF; real servers sometimes exceed that, so we allow slack but never grow without
/// bound on a hostile peer.
pub(crate) const MAX_LINE: usize = 4096;

/// An extended response code (RFC 2449 §8). Only the ones that change what we do are
/// named; anything else is kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RespCode {
    /// RFC 3206 §4: the credentials were wrong.
    Auth,
    /// RFC 2449 §8.1.1: another session holds the maildrop.
    InUse,
    /// RFC 2449 §8.1.2: the user logged in too recently.
    LoginDelay,
    /// RFC 3206 §5: a temporary server-side problem.
    SysTemp,
    /// RFC 3206 §5: a permanent server-side problem.
    SysPerm,
    Other(String),
}

impl RespCode {
    fn parse(code: &str) -> RespCode {
        match code.to_ascii_uppercase().as_str() {
            "AUTH" => RespCode::Auth,
            "IN-USE" => RespCode::InUse,
            "LOGIN-DELAY" => RespCode::LoginDelay,
            "SYS/TEMP" => RespCode::SysTemp,
            "SYS/PERM" => RespCode::SysPerm,
            _ => RespCode::Other(code.to_string()),
        }
    }

    /// Codes that mean "try again later" rather than "something is wrong".
    pub(crate) fn is_temporary(&self) -> bool {
        matches!(
            self,
            RespCode::InUse | RespCode::LoginDelay | RespCode::SysTemp
        )
    }
}

/// One status line: `+OK text` or `-ERR [CODE] text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub ok: bool,
    pub code: Option<RespCode>,
    /// The server's text, escaped for display (see [`escape`]).
    pub text: String,
    /// The raw text, kept for the APOP timestamp and for CAPA-less servers.
    pub raw: Vec<u8>,
}

/// Parses a status line without its line ending.
pub(crate) fn parse_status(line: &[u8]) -> Result<Status, Error> {
    let (ok, rest) = if let Some(rest) = strip_keyword(line, b"+OK") {
        (true, rest)
    } else if let Some(rest) = strip_keyword(line, b"-ERR") {
        (false, rest)
    } else {
        return Err(Error::Protocol(format!(
            "expected +OK or -ERR, got \"{}\"",
            escape(line)
        )));
    };
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let mut code = None;
    if rest.first() == Some(&b'[') {
        if let Some(end) = rest.iter().position(|&b| b == b']') {
            code = Some(RespCode::parse(&String::from_utf8_lossy(&rest[1..end])));
        }
    }
    Ok(Status {
        ok,
        code,
        text: escape(rest),
        raw: rest.to_vec(),
    })
}

/// `+OK` must be followed by a space or the end of the line; `+OKAY` is not `+OK`.
fn strip_keyword<'a>(line: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(keyword)?;
    (rest.is_empty() || rest[0] == b' ').then_some(rest)
}

/// A line of a `UIDL` listing: message number and unique-id (RFC 1939 §7).
pub(crate) fn parse_uidl_line(line: &[u8]) -> Result<(u32, String), Error> {
    let (num, uid) = split_pair(line, "UIDL")?;
    // RFC 1939 §7: 1 to 70 characters in 0x21..0x7E. Some servers exceed 70; we take
    // up to 512 but never spaces or control bytes, which could corrupt the state file.
    if uid.is_empty() || uid.len() > 512 || !uid.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(Error::Protocol(format!(
            "invalid unique-id in UIDL line \"{}\"",
            escape(line)
        )));
    }
    // Checked above to be printable ASCII, so valid UTF-8.
    let uid = std::str::from_utf8(uid).map_err(|_| Error::Protocol("invalid unique-id".into()))?;
    Ok((num, uid.to_owned()))
}

/// A line of a `LIST` scan listing: message number and size in octets (RFC 1939 §5).
pub(crate) fn parse_list_line(line: &[u8]) -> Result<(u32, u64), Error> {
    let (num, size) = split_pair(line, "LIST")?;
    // RFC 1939 §5 allows extra text after the size; keep only the number.
    let digits: &[u8] = size.split(|&b| b == b' ').next().unwrap_or_default();
    let size = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Error::Protocol(format!("invalid size in LIST line \"{}\"", escape(line)))
        })?;
    Ok((num, size))
}

fn split_pair<'a>(line: &'a [u8], what: &str) -> Result<(u32, &'a [u8]), Error> {
    let bad = || Error::Protocol(format!("malformed {what} line \"{}\"", escape(line)));
    let space = memchr::memchr(b' ', line).ok_or_else(bad)?;
    let num = std::str::from_utf8(&line[..space])
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|&n| n > 0)
        .ok_or_else(bad)?;
    let rest = &line[space + 1..];
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    Ok((num, rest))
}

/// The APOP timestamp of a greeting (RFC 1939 §7), but only when it is a well-formed
/// msg-id (RFC 5322 §3.6.4). A looser check let a man in the middle pick the challenge
/// and recover the password's MD5 three characters at a time (CVE-2007-1558).
pub(crate) fn apop_timestamp(greeting: &[u8]) -> Option<&str> {
    let start = greeting.iter().position(|&b| b == b'<')?;
    let len = greeting[start..].iter().position(|&b| b == b'>')?;
    let stamp = &greeting[start..=start + len];
    let inner = &stamp[1..stamp.len() - 1];
    let at = inner.iter().position(|&b| b == b'@')?;
    let valid_char = |b: &u8| (0x21..=0x7e).contains(b) && !b"<>@\\\"()[],;:".contains(b);
    let (left, right) = (&inner[..at], &inner[at + 1..]);
    let ok = !left.is_empty()
        && !right.is_empty()
        && left.iter().all(valid_char)
        && right.iter().all(valid_char);
    if ok {
        std::str::from_utf8(stamp).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_and_err_lines() {
        let s = parse_status(b"+OK 2 messages").unwrap();
        assert!(s.ok);
        assert_eq!(s.text, "2 messages");
        assert_eq!(s.code, None);
        let s = parse_status(b"+OK").unwrap();
        assert!(s.ok && s.text.is_empty());
        let s = parse_status(b"-ERR [IN-USE] mailbox locked").unwrap();
        assert!(!s.ok);
        assert_eq!(s.code, Some(RespCode::InUse));
        assert!(s.code.unwrap().is_temporary());
        let s = parse_status(b"-ERR [SYS/TEMP] later").unwrap();
        assert_eq!(s.code, Some(RespCode::SysTemp));
        let s = parse_status(b"-ERR [AUTH] bad password").unwrap();
        assert_eq!(s.code, Some(RespCode::Auth));
        assert!(!RespCode::Auth.is_temporary());
    }

    #[test]
    fn rejects_garbage_status() {
        assert!(parse_status(b"+OKAY").is_err());
        assert!(parse_status(b"* OK imap").is_err());
        assert!(parse_status(b"").is_err());
    }

    #[test]
    fn escapes_control_bytes() {
        assert_eq!(escape(b"hi\x1b[31m\xff\\"), "hi\\x1b[31m\\xff\\\\");
        let long = vec![b'a'; 1000];
        assert!(escape(&long).len() < 210);
    }

    #[test]
    fn listings() {
        assert_eq!(parse_uidl_line(b"1 abc").unwrap(), (1, "abc".into()));
        assert_eq!(parse_list_line(b"3 1200").unwrap(), (3, 1200));
        assert_eq!(parse_list_line(b"3 1200 extra").unwrap(), (3, 1200));
        assert!(parse_uidl_line(b"1 ").is_err());
        assert!(parse_uidl_line(b"0 abc").is_err());
        assert!(parse_uidl_line(b"x abc").is_err());
        assert!(parse_uidl_line(b"1 a\x01b").is_err());
        assert!(parse_list_line(b"1 big").is_err());
    }

    #[test]
    fn apop_timestamp_needs_msg_id_syntax() {
        assert_eq!(
            apop_timestamp(b"POP3 ready <1896.697170952@dbc.mtview.ca.us>"),
            Some("<1896.697170952@dbc.mtview.ca.us>")
        );
        assert_eq!(apop_timestamp(b"ready"), None);
        assert_eq!(apop_timestamp(b"ready <no-at-sign>"), None);
        assert_eq!(apop_timestamp(b"ready <a\x01b@c>"), None);
        assert_eq!(apop_timestamp(b"ready <@c>"), None);
        assert_eq!(apop_timestamp(b"ready <a@b@c>"), None);
    }
}
