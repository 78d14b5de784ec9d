//! A message made ready for APPEND: spooled with CRLF line endings (the form
//! IMAP literals carry, RFC 3501 §2.3.1 — and the server's own bytes again, as
//! POP3 sent them), its exact size, and from its header the Message-ID that
//! recovery searches for and the date to give as its INTERNALDATE.

use std::io::{self, Read, Seek, SeekFrom, Write};

use chrono::{DateTime, Utc};
use tempfile::SpooledTempFile;

/// Messages up to this size stay in memory.
const IN_MEMORY: usize = 1 << 20;
/// How much of the header is looked at for the Message-ID and the dates.
const MAX_HEADER: usize = 64 * 1024;
/// The longest Message-ID kept. A SEARCH HEADER matches substrings (RFC 3501
/// §6.4.4), so a cut one still finds its message.
pub(super) const MAX_ID: usize = 200;

pub(super) struct Spooled {
    pub file: SpooledTempFile,
    /// Bytes, CRLF counted as two: the RFC822.SIZE the server will report.
    pub size: u64,
    pub message_id: Option<String>,
    /// When the message arrived: the date of its first (topmost, so last added)
    /// Received header, else its Date.
    pub date: Option<DateTime<Utc>>,
}

impl Spooled {
    /// Back to the first byte, to be sent (again).
    pub(super) fn rewind(&mut self) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0)).map(|_| ())
    }
}

/// Why a message could not be spooled.
pub(super) enum SpoolError {
    /// The message stream failed.
    Read(io::Error),
    /// The spool (a temporary file beyond 1 MiB) failed.
    Write(io::Error),
}

/// Reads a message with LF line endings (a lone CR may occur, a CRLF cannot)
/// into a spool, each LF written as CRLF.
pub(super) fn spool(message: &mut dyn Read) -> Result<Spooled, SpoolError> {
    let mut file = tempfile::spooled_tempfile(IN_MEMORY);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(2 * chunk.len());
    let mut head = Vec::new();
    let mut head_done = false;
    let mut size = 0u64;
    loop {
        let n = match message.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SpoolError::Read(e)),
        };
        let bytes = &chunk[..n];
        if !head_done {
            let from = head.len().saturating_sub(1);
            head.extend_from_slice(&bytes[..bytes.len().min(MAX_HEADER - head.len())]);
            let blank = memchr::memmem::find(&head[from..], b"\n\n").map(|i| from + i);
            if head.starts_with(b"\n") || blank.is_some() || head.len() >= MAX_HEADER {
                head.truncate(blank.map_or(head.len(), |i| i + 1));
                head_done = true;
            }
        }
        out.clear();
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', bytes) {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(b"\r\n");
            start = i + 1;
        }
        out.extend_from_slice(&bytes[start..]);
        file.write_all(&out).map_err(SpoolError::Write)?;
        size += out.len() as u64;
    }
    let (message_id, date) = read_head(&head);
    let mut spooled = Spooled {
        file,
        size,
        message_id,
        date,
    };
    spooled.rewind().map_err(SpoolError::Write)?;
    Ok(spooled)
}

/// The Message-ID and the arrival date a header tells, if it tells them.
fn read_head(head: &[u8]) -> (Option<String>, Option<DateTime<Utc>>) {
    let Ok((headers, _)) = mailparse::parse_headers(head) else {
        return (None, None);
    };
    let value = |name: &str| {
        headers
            .iter()
            .find(|h| h.get_key_ref().eq_ignore_ascii_case(name))
            .map(|h| h.get_value())
    };
    let message_id = value("Message-ID").and_then(|id| plain_id(id.trim()));
    // A Received header ends with "; date" (RFC 5322 §3.6.7).
    let received = value("Received")
        .and_then(|r| r.rsplit_once(';').map(|(_, date)| date.trim().to_string()))
        .and_then(|date| parse_date(&date));
    let date = received.or_else(|| value("Date").and_then(|d| parse_date(d.trim())));
    (message_id, date)
}

/// The Message-ID of a header block (the FETCH of a recovery's hit), in the form
/// a location keeps it.
pub(super) fn message_id(header: &[u8]) -> Option<String> {
    let (headers, _) = mailparse::parse_headers(header).ok()?;
    let id = headers
        .iter()
        .find(|h| h.get_key_ref().eq_ignore_ascii_case("Message-ID"))?
        .get_value();
    plain_id(id.trim())
}

/// A Message-ID fit for a quoted string in SEARCH: printable ASCII without
/// spaces, cut at [`MAX_ID`] bytes.
fn plain_id(id: &str) -> Option<String> {
    let plain = !id.is_empty() && id.bytes().all(|b| (0x21..0x7f).contains(&b));
    plain.then(|| id[..id.len().min(MAX_ID)].to_string())
}

/// A date an INTERNALDATE can carry: years 1970 to 9999. (`dateparse` reads
/// what it cannot understand as 0, the epoch: no date either.)
fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let seconds = mailparse::dateparse(text).ok().filter(|&s| s > 0)?;
    DateTime::from_timestamp(seconds, 0).filter(|d| d.format("%Y").to_string().len() == 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::mock::Trickle;

    fn spooled(message: &[u8], step: usize) -> (Spooled, Vec<u8>) {
        let mut s = spool(&mut Trickle {
            data: message,
            step,
        })
        .ok()
        .unwrap();
        let mut bytes = Vec::new();
        s.file.read_to_end(&mut bytes).unwrap();
        (s, bytes)
    }

    #[test]
    fn lines_end_in_crlf_and_the_header_is_read() {
        let message = b"Received: from a by b;\n\tMon, 2 Nov 2026 10:00:00 +0100\n\
            Received: from c by d; Sun, 1 Nov 2026 09:00:00 +0000\n\
            Date: Sat, 31 Oct 2026 09:00:00 +0000\n\
            Message-ID:\n <abc@example.org>\n\nbody\rx\nend\n";
        for step in [1, 7, 4096] {
            let (s, bytes) = spooled(message, step);
            let expected = String::from_utf8_lossy(message).replace('\n', "\r\n");
            assert_eq!(String::from_utf8_lossy(&bytes), expected);
            assert_eq!(s.size, bytes.len() as u64);
            assert_eq!(s.message_id.as_deref(), Some("<abc@example.org>"));
            assert_eq!(s.date.unwrap().to_rfc3339(), "2026-11-02T09:00:00+00:00");
        }
    }

    #[test]
    fn what_the_header_lacks_is_none() {
        let (s, _) = spooled(
            b"Date: Sat, 31 Oct 2026 09:00:00 +0000\n\nMessage-ID: <no>\n",
            3,
        );
        assert_eq!(s.message_id, None);
        assert_eq!(s.date.unwrap().to_rfc3339(), "2026-10-31T09:00:00+00:00");
        let (s, _) = spooled(b"Message-ID: <a b>\nDate: garbage\n\n", 100);
        assert_eq!((s.message_id, s.date), (None, None));
        let (s, bytes) = spooled(b"", 100);
        assert_eq!((s.size, bytes.len()), (0, 0));
        let long = format!("Message-ID: <{}>\n\n", "x".repeat(1000));
        let (s, _) = spooled(long.as_bytes(), 100);
        assert_eq!(s.message_id.unwrap().len(), MAX_ID);
    }

    #[test]
    fn a_huge_header_is_looked_at_only_so_far() {
        let mut message = b"Message-ID: <early@x>\n".to_vec();
        message.extend(std::iter::repeat_n(b"X-Pad: yyyyyyyy\n".to_vec(), 10_000).flatten());
        let (s, bytes) = spooled(&message, 65536);
        assert_eq!(s.size, bytes.len() as u64);
        assert_eq!(s.size, message.len() as u64 + 10_001);
        // The cut header may not parse; nothing else is lost.
        let _ = s.message_id;
    }

    #[test]
    fn a_failed_read_is_the_source_s() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("reset"))
            }
        }
        assert!(matches!(spool(&mut Broken), Err(SpoolError::Read(_))));
    }
}
