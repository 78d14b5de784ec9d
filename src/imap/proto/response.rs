//! Server responses (RFC 3501 §7): one response line, its literals already read,
//! parsed into what the client acts on. Pure: no I/O.

use crate::text::escape;

/// Whether a command succeeded (RFC 3501 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    No,
    Bad,
    /// Untagged only: the greeting of a connection already logged in.
    Preauth,
    /// Untagged only: the server is closing the connection.
    Bye,
}

/// A response code in brackets (RFC 3501 §7.1, RFC 4315, RFC 5530): its name in
/// upper case and what follows the name, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Code {
    pub name: String,
    pub args: String,
}

impl Code {
    pub(crate) fn is(&self, name: &str) -> bool {
        self.name == name
    }
}

/// A status response: tagged, or untagged (`* OK …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatusLine {
    pub status: Status,
    pub code: Option<Code>,
    /// The human-readable text, escaped for showing.
    pub text: String,
}

/// One response from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Response {
    /// `+ text`: go on with the literal or the SASL exchange (RFC 3501 §7.5).
    Continue(String),
    /// `TAG OK|NO|BAD [code] text`: the command with this tag completed.
    Tagged { tag: String, line: StatusLine },
    /// `* OK|NO|BAD|PREAUTH|BYE [code] text`.
    Condition(StatusLine),
    /// `* CAPABILITY …`, upper-cased (RFC 3501 §7.2.1).
    Capability(Vec<String>),
    /// `* SEARCH n…` (RFC 3501 §7.2.5).
    Search(Vec<u32>),
    /// `* LIST (flags) "d" name` (RFC 3501 §7.2.2): the hierarchy delimiter,
    /// `None` for NIL (a flat namespace).
    List(Option<u8>),
    /// `* n FETCH (… RFC822.SIZE s BODY[…] {k}…)` (RFC 3501 §7.4.2): a message's
    /// size and the header fields asked for, where present.
    Fetch(Fetched),
    /// Anything else (`* 3 EXISTS`, `* FLAGS …`, `* STATUS …`): not needed here.
    Other,
}

/// What a FETCH response said of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fetched {
    pub size: Option<u64>,
    /// The header fields of `BODY[HEADER.FIELDS (…)]`, as the literal held them.
    pub header: Option<Vec<u8>>,
}

/// The server said something this client cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server sent a response that is not IMAP: \"{0}\"")]
pub(crate) struct Malformed(pub String);

fn malformed(line: &[u8]) -> Malformed {
    Malformed(escape(line))
}

/// Parses one response line (without its CRLF; the literals of untagged data
/// inline).
pub(crate) fn parse(line: &[u8]) -> Result<Response, Malformed> {
    if line == b"+" || line.starts_with(b"+ ") {
        return Ok(Response::Continue(escape(
            line.get(2..).unwrap_or_default(),
        )));
    }
    let (first, rest) = split_word(line);
    if first.is_empty() {
        return Err(malformed(line));
    }
    if first == b"*" {
        return untagged(rest).ok_or_else(|| malformed(line));
    }
    // A tag is any atom but "+" and "*" (RFC 3501 §9, `tag`).
    let tag = std::str::from_utf8(first).map_err(|_| malformed(line))?;
    let status = status_line(rest).ok_or_else(|| malformed(line))?;
    if matches!(status.status, Status::Preauth | Status::Bye) {
        return Err(malformed(line));
    }
    Ok(Response::Tagged {
        tag: tag.to_string(),
        line: status,
    })
}

/// Splits at the first space: the word and what follows it.
fn split_word(line: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b' ', line) {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[]),
    }
}

fn untagged(rest: &[u8]) -> Option<Response> {
    let (word, after) = split_word(rest);
    let upper = word.to_ascii_uppercase();
    match upper.as_slice() {
        b"OK" | b"NO" | b"BAD" | b"PREAUTH" | b"BYE" => status_line(rest).map(Response::Condition),
        b"CAPABILITY" => Some(Response::Capability(capabilities(after))),
        b"SEARCH" => search(after).map(Response::Search),
        b"LIST" => list_delimiter(after).map(Response::List),
        _ if word.iter().all(u8::is_ascii_digit)
            && after.len() >= 6
            && after[..6].eq_ignore_ascii_case(b"FETCH ") =>
        {
            Some(Response::Fetch(fetched(&after[6..])))
        }
        _ => Some(Response::Other),
    }
}

/// `OK [code] text` and the like.
fn status_line(rest: &[u8]) -> Option<StatusLine> {
    let (word, after) = split_word(rest);
    let status = match word.to_ascii_uppercase().as_slice() {
        b"OK" => Status::Ok,
        b"NO" => Status::No,
        b"BAD" => Status::Bad,
        b"PREAUTH" => Status::Preauth,
        b"BYE" => Status::Bye,
        _ => return None,
    };
    let (code, text) = match after.strip_prefix(b"[") {
        Some(inside) => {
            let end = memchr::memchr(b']', inside)?;
            let (name, args) = split_word(&inside[..end]);
            let code = Code {
                name: escape(name).to_ascii_uppercase(),
                args: escape(args),
            };
            let text = &inside[end + 1..];
            (Some(code), text.strip_prefix(b" ").unwrap_or(text))
        }
        None => (None, after),
    };
    Some(StatusLine {
        status,
        code,
        text: escape(text),
    })
}

/// RFC822.SIZE and the first `BODY[…] {n}` literal of a FETCH's data, its
/// literal inline (see `Conn::read_response`). Anything else is left alone.
fn fetched(data: &[u8]) -> Fetched {
    let mut found = Fetched::default();
    let upper = data.to_ascii_uppercase();
    if let Some(at) = memchr::memmem::find(&upper, b"RFC822.SIZE ") {
        let digits: Vec<u8> = data[at + 12..]
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        found.size = std::str::from_utf8(&digits)
            .ok()
            .and_then(|d| d.parse().ok());
    }
    if let Some(at) = memchr::memmem::find(&upper, b"BODY[") {
        let rest = &data[at..];
        let literal = memchr::memchr(b']', rest)
            .and_then(|end| rest[end + 1..].strip_prefix(b" {"))
            .and_then(|after| {
                let close = memchr::memchr(b'}', after)?;
                let n: usize = std::str::from_utf8(&after[..close]).ok()?.parse().ok()?;
                after.get(close + 1..close + 1 + n)
            });
        found.header = literal.map(<[u8]>::to_vec);
    }
    found
}

/// The delimiter of a LIST response: after the flags, `NIL` or a quoted char
/// (`"\\"` for a backslash).
fn list_delimiter(rest: &[u8]) -> Option<Option<u8>> {
    let flags_end = memchr::memchr(b')', rest.strip_prefix(b"(")?)? + 1;
    let after = rest[flags_end + 1..].strip_prefix(b" ")?;
    if after.len() >= 3 && after[..3].eq_ignore_ascii_case(b"NIL") {
        return Some(None);
    }
    match after {
        [b'"', b'\\', d, b'"', ..] | [b'"', d, b'"', ..] if *d != b'"' => Some(Some(*d)),
        _ => None,
    }
}

/// Capability names, upper-cased: they are case-insensitive atoms.
pub(crate) fn capabilities(list: &[u8]) -> Vec<String> {
    list.split(|&b| b == b' ')
        .filter(|word| !word.is_empty())
        .map(|word| escape(word).to_ascii_uppercase())
        .collect()
}

/// The numbers of a SEARCH response; a trailing `(MODSEQ n)` (RFC 7162) is left out.
fn search(list: &[u8]) -> Option<Vec<u32>> {
    let mut found = Vec::new();
    for word in list.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
        if word.starts_with(b"(") {
            break;
        }
        found.push(number(word)?);
    }
    Some(found)
}

/// A non-zero 32-bit number (RFC 3501 §9, `nz-number`).
fn number(word: &[u8]) -> Option<u32> {
    if word.is_empty() || !word.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(word)
        .ok()?
        .parse()
        .ok()
        .filter(|&n| n != 0)
}

/// `[APPENDUID uidvalidity uid-set]` (RFC 4315 §3): the folder's UIDVALIDITY and
/// the UIDs of the appended messages, in the order they were appended, at most
/// `count` of them; `None` unless exactly `count`.
pub(crate) fn append_uid(code: &Code, count: usize) -> Option<(u32, Vec<u32>)> {
    if !code.is("APPENDUID") {
        return None;
    }
    let (validity, set) = code.args.split_once(' ')?;
    let validity = number(validity.as_bytes())?;
    let mut uids = Vec::new();
    for part in set.trim().split(',') {
        let (low, high) = match part.split_once(':') {
            Some((a, b)) => (number(a.as_bytes())?, number(b.as_bytes())?),
            None => {
                let n = number(part.as_bytes())?;
                (n, n)
            }
        };
        let (low, high) = (low.min(high), low.max(high));
        // Bounded by what was appended, not by what the server claims.
        let remaining = count - uids.len();
        if u64::from(high - low) + 1 > remaining as u64 {
            return None;
        }
        uids.extend(low..=high);
    }
    (uids.len() == count).then_some((validity, uids))
}

/// `[UIDVALIDITY n]` (RFC 3501 §7.1).
pub(crate) fn uid_validity(code: &Code) -> Option<u32> {
    code.is("UIDVALIDITY")
        .then(|| number(code.args.trim().as_bytes()))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged(line: &str) -> StatusLine {
        match parse(line.as_bytes()).unwrap() {
            Response::Tagged { line, .. } => line,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_status_lines_and_codes() {
        let ok = tagged("a1 OK [APPENDUID 38505 3955] APPEND completed");
        assert_eq!(ok.status, Status::Ok);
        let code = ok.code.unwrap();
        assert_eq!(append_uid(&code, 1), Some((38505, vec![3955])));
        assert_eq!(append_uid(&code, 2), None);
        assert_eq!(ok.text, "APPEND completed");
        let no = tagged("a2 no [OVERQUOTA] Quota exceeded\x1b[31m");
        assert_eq!(no.status, Status::No);
        assert!(no.code.unwrap().is("OVERQUOTA"));
        assert_eq!(no.text, "Quota exceeded\\x1b[31m");
        assert_eq!(tagged("a3 BAD").text, "");
        assert_eq!(
            parse(b"* OK [UIDVALIDITY 3857529045] UIDs valid").unwrap(),
            Response::Condition(StatusLine {
                status: Status::Ok,
                code: Some(Code {
                    name: "UIDVALIDITY".into(),
                    args: "3857529045".into()
                }),
                text: "UIDs valid".into()
            })
        );
        let Response::Condition(line) = parse(b"* OK [UIDVALIDITY 7] x").unwrap() else {
            panic!()
        };
        assert_eq!(uid_validity(&line.code.unwrap()), Some(7));
    }

    #[test]
    fn reads_data() {
        assert_eq!(
            parse(b"* CAPABILITY IMAP4rev1 literal+ AUTH=PLAIN").unwrap(),
            Response::Capability(vec![
                "IMAP4REV1".into(),
                "LITERAL+".into(),
                "AUTH=PLAIN".into()
            ])
        );
        assert_eq!(parse(b"* SEARCH").unwrap(), Response::Search(vec![]));
        assert_eq!(
            parse(b"* SEARCH 2 84 882 (MODSEQ 9)").unwrap(),
            Response::Search(vec![2, 84, 882])
        );
        assert_eq!(parse(b"* 23 EXISTS").unwrap(), Response::Other);
        assert_eq!(
            parse(b"+ Ready").unwrap(),
            Response::Continue("Ready".into())
        );
        assert_eq!(parse(b"+").unwrap(), Response::Continue(String::new()));
    }

    #[test]
    fn refuses_what_is_not_imap() {
        for bad in [
            &b""[..],
            b" OK x",
            b"a1 MAYBE",
            b"a1 BYE x",
            b"* SEARCH 1 x",
            b"* OK [UIDVALIDITY 1 unterminated",
            b"\xff OK",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn append_uid_sets_are_expanded_in_order_and_bounded() {
        let code = |args: &str| Code {
            name: "APPENDUID".into(),
            args: args.into(),
        };
        assert_eq!(append_uid(&code("1 3:5"), 3), Some((1, vec![3, 4, 5])));
        assert_eq!(append_uid(&code("1 5:3"), 3), Some((1, vec![3, 4, 5])));
        assert_eq!(append_uid(&code("1 3,7:8"), 3), Some((1, vec![3, 7, 8])));
        assert_eq!(append_uid(&code("1 1:4294967295"), 3), None);
        assert_eq!(append_uid(&code("1 3:4"), 3), None);
        assert_eq!(append_uid(&code("1 0"), 1), None);
        assert_eq!(append_uid(&code("x 3"), 1), None);
        assert_eq!(append_uid(&code("1"), 1), None);
    }

    #[test]
    fn list_gives_the_delimiter() {
        assert_eq!(
            parse(br#"* LIST (\Noselect) "." """#).unwrap(),
            Response::List(Some(b'.'))
        );
        assert_eq!(
            parse(br#"* LIST (\Noselect \HasChildren) "/" """#).unwrap(),
            Response::List(Some(b'/'))
        );
        assert_eq!(
            parse(br#"* LIST () "\\" """#).unwrap(),
            Response::List(Some(b'\\'))
        );
        assert_eq!(parse(br#"* list () NIL """#).unwrap(), Response::List(None));
        assert!(parse(br#"* LIST "." """#).is_err());
    }

    #[test]
    fn fetch_gives_the_size_and_the_header_fields() {
        let line = b"* 3 FETCH (UID 20 RFC822.SIZE 54 BODY[HEADER.FIELDS (MESSAGE-ID)] {19}Message-ID: <a@b>\r\n)";
        let Response::Fetch(found) = parse(line).unwrap() else {
            panic!("a FETCH")
        };
        assert_eq!(found.size, Some(54));
        assert_eq!(found.header.as_deref(), Some(&b"Message-ID: <a@b>\r\n"[..]));
        let Response::Fetch(found) = parse(b"* 3 FETCH (UID 20 BODY[X] {999}short)").unwrap()
        else {
            panic!("a FETCH")
        };
        assert_eq!(found, Fetched::default());
        assert_eq!(parse(b"* 3 EXISTS").unwrap(), Response::Other);
    }
}
