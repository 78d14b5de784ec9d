//! The pure core of SMTP (RFC 5321) and LMTP (RFC 2033): replies parsed from their
//! lines, the EHLO/LHLO keywords that change what the client does, and the DATA
//! encoding of a message (CRLF lines, dot-stuffing). No I/O.

use crate::text::escape;

/// The longest reply line accepted. RFC 5321 §4.5.3.1.5 caps it at 512 octets;
/// real servers exceed that a little, a hostile one without end.
pub(crate) const MAX_LINE: usize = 8192;

/// The most lines one reply may have (an EHLO reply lists a dozen keywords).
pub(crate) const MAX_LINES: usize = 256;

/// One reply: its code and its text, the lines joined by spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub code: u16,
    /// Each line's text after the code, raw.
    pub lines: Vec<Vec<u8>>,
}

/// What a reply line is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// `ddd-text`: more lines follow.
    More(u16, &'a [u8]),
    /// `ddd text` or `ddd`: the last line.
    Last(u16, &'a [u8]),
}

/// Parses one reply line, without its CRLF (RFC 5321 §4.2).
pub(crate) fn parse_line(line: &[u8]) -> Option<Line<'_>> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&digits[0]) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match line.get(3) {
        None => Some(Line::Last(code, b"")),
        Some(b' ') => Some(Line::Last(code, &line[4..])),
        Some(b'-') => Some(Line::More(code, &line[4..])),
        Some(_) => None,
    }
}

impl Reply {
    /// 2xx.
    pub(crate) fn is_positive(&self) -> bool {
        self.code / 100 == 2
    }

    /// 4xx: the server may take it later.
    pub(crate) fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }

    /// The code and text, escaped, as one line for a message.
    pub(crate) fn shown(&self) -> String {
        let text: Vec<String> = self.lines.iter().map(|l| escape(l)).collect();
        let text = text.join(" ");
        if text.is_empty() {
            self.code.to_string()
        } else {
            format!("{} {text}", self.code)
        }
    }
}

/// The EHLO/LHLO keywords the client uses (RFC 5321 §4.1.1.1).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Extensions {
    /// RFC 2920.
    pub pipelining: bool,
    /// RFC 6152.
    pub eight_bit: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 1870: the largest message the server takes; 0 for no limit.
    pub size: Option<u64>,
    /// RFC 4954: the SASL mechanisms offered, upper case.
    pub auth: Vec<String>,
}

impl Extensions {
    /// Reads the keywords of an EHLO or LHLO reply: every line after the first.
    pub(crate) fn of(reply: &Reply) -> Extensions {
        let mut found = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let text = String::from_utf8_lossy(line).to_ascii_uppercase();
            let mut words = text.split_ascii_whitespace();
            match words.next() {
                Some("PIPELINING") => found.pipelining = true,
                Some("8BITMIME") => found.eight_bit = true,
                Some("STARTTLS") => found.starttls = true,
                Some("SIZE") => {
                    found.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0))
                }
                Some("AUTH") => found.auth.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        found
    }
}

/// A reverse or forward path, `<address>`; the null path `<>` for no address.
/// The address comes from a message's headers (see `deliver::envelope`), already
/// one printable token.
pub(crate) fn path(address: &str) -> String {
    format!("<{address}>")
}

/// Encodes a message for DATA (RFC 5321 §4.5.2 and §2.3.8), chunk by chunk: each
/// line ends in CRLF, a line that starts with "." gets one more, and a CR not
/// followed by LF ends a line too, since SMTP allows CR and LF only together
/// (a bare CR could otherwise end the data early on a server that takes it for a
/// line end). The message as decoded from POP3 has LF line ends.
#[derive(Debug)]
pub(crate) struct DataEncoder {
    /// At the start of a line.
    line_start: bool,
    /// The last byte was a CR, not yet known to be bare.
    after_cr: bool,
    /// Bytes in, for the caller's count.
    pub taken: u64,
}

impl Default for DataEncoder {
    fn default() -> Self {
        DataEncoder {
            line_start: true,
            after_cr: false,
            taken: 0,
        }
    }
}

impl DataEncoder {
    /// Appends the encoding of `input` to `out`.
    pub(crate) fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.taken += input.len() as u64;
        out.reserve(input.len() + input.len() / 32 + 4);
        let mut rest = input;
        while !rest.is_empty() {
            if self.after_cr {
                // A CR then a LF is one line end (CRLF kept by the decoder); else
                // the CR was bare and ends its line.
                self.after_cr = false;
                out.extend_from_slice(b"\r\n");
                self.line_start = true;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            if self.line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            self.line_start = false;
            match memchr::memchr2(b'\n', b'\r', rest) {
                Some(i) => {
                    out.extend_from_slice(&rest[..i]);
                    if rest[i] == b'\n' {
                        out.extend_from_slice(b"\r\n");
                        self.line_start = true;
                    } else {
                        self.after_cr = true;
                    }
                    rest = &rest[i + 1..];
                }
                None => {
                    out.extend_from_slice(rest);
                    rest = &[];
                }
            }
        }
    }

    /// The end of the data: the last line ended, then ".".
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if self.after_cr || !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        self.after_cr = false;
        self.line_start = true;
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_in(chunks: &[&[u8]]) -> Vec<u8> {
        let mut encoder = DataEncoder::default();
        let mut out = Vec::new();
        for chunk in chunks {
            encoder.encode(chunk, &mut out);
        }
        encoder.finish(&mut out);
        out
    }

    #[test]
    fn lines_get_crlf_and_dots_are_stuffed() {
        assert_eq!(
            encode_in(&[b"a\n.b\n..\n.\n"]),
            b"a\r\n..b\r\n...\r\n..\r\n.\r\n"
        );
        assert_eq!(encode_in(&[b""]), b".\r\n");
        assert_eq!(encode_in(&[b"no end"]), b"no end\r\n.\r\n");
        assert_eq!(encode_in(&[b"From x\n\n"]), b"From x\r\n\r\n.\r\n");
    }

    #[test]
    fn bare_cr_ends_a_line_and_crlf_stays_one() {
        assert_eq!(encode_in(&[b"a\rb\n"]), b"a\r\nb\r\n.\r\n");
        assert_eq!(encode_in(&[b"a\r\n.x\n"]), b"a\r\n..x\r\n.\r\n");
        assert_eq!(encode_in(&[b"a\r.\r\n"]), b"a\r\n..\r\n.\r\n");
        assert_eq!(encode_in(&[b"end\r"]), b"end\r\n.\r\n");
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let message = b"x\n.a\r\n\r.b\rc\n\n..\nlast".to_vec();
        let whole = encode_in(&[&message]);
        for cut in 0..message.len() {
            let (a, b) = message.split_at(cut);
            assert_eq!(encode_in(&[a, b]), whole, "cut at {cut}");
        }
        // The result never holds a CR or LF outside a CRLF, nor "\r\n.\r\n" early.
        let body = &whole[..whole.len() - 3];
        assert!(memchr::memmem::find(body, b"\r\n.\r\n").is_none());
        for (i, &b) in body.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(body.get(i + 1), Some(&b'\n')),
                b'\n' => assert_eq!(body[i - 1], b'\r'),
                _ => {}
            }
        }
    }

    #[test]
    fn reply_lines_and_keywords() {
        assert_eq!(
            parse_line(b"250-PIPELINING"),
            Some(Line::More(250, b"PIPELINING"))
        );
        assert_eq!(parse_line(b"354 go"), Some(Line::Last(354, b"go")));
        assert_eq!(parse_line(b"221"), Some(Line::Last(221, b"")));
        for bad in [&b"25"[..], b"abc def", b"250x", b"650 no", b""] {
            assert_eq!(parse_line(bad), None);
        }
        let reply = Reply {
            code: 250,
            lines: [
                "mx",
                "PIPELINING",
                "8bitmime",
                "SIZE 1000",
                "AUTH PLAIN login",
                "STARTTLS",
            ]
            .iter()
            .map(|l| l.as_bytes().to_vec())
            .collect(),
        };
        let found = Extensions::of(&reply);
        assert!(found.pipelining && found.eight_bit && found.starttls);
        assert_eq!(found.size, Some(1000));
        assert_eq!(found.auth, ["PLAIN", "LOGIN"]);
        assert_eq!(
            reply.shown(),
            "250 mx PIPELINING 8bitmime SIZE 1000 AUTH PLAIN login STARTTLS"
        );
    }
}
