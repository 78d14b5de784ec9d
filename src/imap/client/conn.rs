//! One IMAP connection: responses read through a bounded buffer (a line or a
//! literal over its bound is an error, not memory growth), commands tagged and
//! written with their literals (synchronizing, or LITERAL+ of RFC 7888), and a
//! command's untagged data collected until its tagged completion.

use std::io::{self, Read, Write};

use super::super::proto::command::Arg;
use super::super::proto::response::{self, Response, Status, StatusLine};
use super::super::Error;
use crate::text::escape;

/// The longest response line read (a CAPABILITY line, a SEARCH result are far
/// shorter).
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// The largest literal in a response: nothing this client asks for comes as a
/// large literal (it never fetches a message), so anything big is hostile.
pub(crate) const MAX_LITERAL: usize = 64 * 1024;
/// The most untagged responses one command may bring before its completion.
const MAX_UNTAGGED: usize = 100_000;
/// The most UIDs of a SEARCH kept.
const MAX_FOUND: usize = 10_000;

/// What a command's untagged responses said, as far as this client cares.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Data {
    /// `* CAPABILITY …`, or a `[CAPABILITY …]` code.
    pub capabilities: Option<Vec<String>>,
    /// `* SEARCH …`: what matched.
    pub found: Vec<u32>,
    /// `* OK [UIDVALIDITY n]` of SELECT or EXAMINE.
    pub uid_validity: Option<u32>,
    /// `* LIST`'s hierarchy delimiter, once one came (`Some(None)`: NIL).
    pub delimiter: Option<Option<u8>>,
    /// `* n FETCH`: what each said, at most [`MAX_FOUND`].
    pub fetched: Vec<response::Fetched>,
}

pub(crate) struct Conn<S> {
    stream: S,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    next_tag: u32,
    /// The server accepts non-synchronizing literals (RFC 7888 LITERAL+).
    pub literal_plus: bool,
}

impl<S: Read + Write> Conn<S> {
    pub(crate) fn new(stream: S) -> Conn<S> {
        Conn {
            stream,
            buf: vec![0; 16 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            next_tag: 0,
            literal_plus: false,
        }
    }

    /// The same connection over a new stream made from the old one (the TLS
    /// handshake after STARTTLS); nothing read ahead is kept, tags go on.
    pub(crate) fn map_stream<E>(self, f: impl FnOnce(S) -> Result<S, E>) -> Result<Conn<S>, E> {
        Ok(Conn {
            stream: f(self.stream)?,
            start: 0,
            end: 0,
            ..self
        })
    }

    #[cfg(test)]
    pub(crate) fn into_stream_for_test(self) -> S {
        self.stream
    }

    #[cfg(test)]
    pub(crate) fn stream(&self) -> &S {
        &self.stream
    }

    /// Whether the server sent bytes not read yet: after a STARTTLS reply that is
    /// an attack (plaintext injected before the handshake, CVE-2011-0411).
    pub(crate) fn has_unread(&self) -> bool {
        self.start < self.end
    }

    /// A fresh tag.
    pub(crate) fn tag(&mut self) -> String {
        self.next_tag += 1;
        format!("a{}", self.next_tag)
    }

    fn fill(&mut self) -> Result<(), Error> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            }
        };
        if n == 0 {
            return Err(Error::Closed);
        }
        self.end += n;
        Ok(())
    }

    /// Reads one line, without its CRLF (a bare LF is taken too).
    fn read_line(&mut self) -> Result<Vec<u8>, Error> {
        let mut line = Vec::new();
        loop {
            let window = &self.buf[self.start..self.end];
            if let Some(i) = memchr::memchr(b'\n', window) {
                line.extend_from_slice(&window[..i]);
                self.start += i + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > MAX_LINE {
                    return Err(Error::LineTooLong(MAX_LINE));
                }
                return Ok(line);
            }
            line.extend_from_slice(window);
            self.start = self.end;
            if line.len() > MAX_LINE {
                return Err(Error::LineTooLong(MAX_LINE));
            }
            self.fill()?;
        }
    }

    fn read_exact(&mut self, mut n: usize, into: &mut Vec<u8>) -> Result<(), Error> {
        while n > 0 {
            if self.start == self.end {
                self.fill()?;
            }
            let take = n.min(self.end - self.start);
            into.extend_from_slice(&self.buf[self.start..self.start + take]);
            self.start += take;
            n -= take;
        }
        Ok(())
    }

    /// Reads one response, with the literals of untagged data inline (RFC 3501
    /// §4.3: a line ending in `{n}` goes on after n bytes).
    pub(crate) fn read_response(&mut self) -> Result<Response, Error> {
        let mut whole = self.read_line()?;
        if is_untagged_data(&whole) {
            while let Some(n) = literal_at_end(&whole) {
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= MAX_LITERAL && whole.len() + n <= 2 * MAX_LINE)
                    .ok_or(Error::LiteralTooLarge(n))?;
                self.read_exact(n, &mut whole)?;
                let more = self.read_line()?;
                if whole.len() + more.len() > 2 * MAX_LINE {
                    return Err(Error::LineTooLong(MAX_LINE));
                }
                whole.extend_from_slice(&more);
            }
        }
        Ok(response::parse(&whole)?)
    }

    /// Writes bytes, unbuffered: commands are written whole and then flushed.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.stream.write_all(bytes).map_err(Error::Io)
    }

    pub(crate) fn flush(&mut self) -> Result<(), Error> {
        self.stream.flush().map_err(Error::Io)
    }

    /// Copies exactly `size` bytes of `body` to the server (a literal's content).
    pub(crate) fn write_body(&mut self, body: &mut dyn Read, size: u64) -> Result<(), Error> {
        let mut chunk = vec![0u8; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
            let n = body.read(&mut chunk[..want]).map_err(Error::Io)?;
            if n == 0 {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the spooled message is shorter than its size",
                )));
            }
            self.write(&chunk[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Announces a literal of `size` bytes: without LITERAL+ waits for the
    /// server's `+` (RFC 3501 §7.5); a tagged reply instead refuses the command.
    pub(crate) fn start_literal(
        &mut self,
        tag: &str,
        command: &'static str,
        size: u64,
        data: &mut Data,
    ) -> Result<(), Error> {
        if self.literal_plus {
            return self.write(format!("{{{size}+}}\r\n").as_bytes());
        }
        self.write(format!("{{{size}}}\r\n").as_bytes())?;
        self.flush()?;
        self.wait_continue(tag, command, data)
    }

    /// Reads until the server's `+`.
    pub(crate) fn wait_continue(
        &mut self,
        tag: &str,
        command: &'static str,
        data: &mut Data,
    ) -> Result<(), Error> {
        for _ in 0..MAX_UNTAGGED {
            match self.read_response()? {
                Response::Continue(_) => return Ok(()),
                Response::Tagged { tag: t, line } if t == tag => {
                    return Err(refused(command, line));
                }
                other => self.note(other, data)?,
            }
        }
        Err(Error::TooManyResponses)
    }

    /// Writes a whole command, its literals included, and flushes it.
    pub(crate) fn send(
        &mut self,
        command: &'static str,
        args: &[Arg],
        data: &mut Data,
    ) -> Result<String, Error> {
        let tag = self.tag();
        let mut line = format!("{tag} {command}");
        for arg in args {
            line.push(' ');
            match arg {
                Arg::Text(text) => line.push_str(text),
                Arg::Literal(bytes) => {
                    self.write(line.as_bytes())?;
                    line.clear();
                    self.start_literal(&tag, command, bytes.len() as u64, data)?;
                    self.write(bytes)?;
                }
            }
        }
        line.push_str("\r\n");
        self.write(line.as_bytes())?;
        self.flush()?;
        Ok(tag)
    }

    /// Reads until the completion of `tag`, collecting untagged data; a NO or BAD
    /// is an error naming `command`.
    pub(crate) fn complete(
        &mut self,
        tag: &str,
        command: &'static str,
        data: &mut Data,
    ) -> Result<StatusLine, Error> {
        for _ in 0..MAX_UNTAGGED {
            match self.read_response()? {
                Response::Tagged { tag: t, line } if t == tag => {
                    if let Some(code) = line.code.as_ref().filter(|c| c.is("CAPABILITY")) {
                        data.capabilities = Some(response::capabilities(code.args.as_bytes()));
                    }
                    return match line.status {
                        Status::Ok => Ok(line),
                        _ => Err(refused(command, line)),
                    };
                }
                Response::Tagged { tag: t, .. } => {
                    return Err(Error::Malformed(response::Malformed(format!(
                        "a reply to a command never sent ({})",
                        escape(t.as_bytes())
                    ))))
                }
                Response::Continue(text) => {
                    return Err(Error::Malformed(response::Malformed(format!("+ {text}"))))
                }
                other => self.note(other, data)?,
            }
        }
        Err(Error::TooManyResponses)
    }

    /// Takes in an untagged response.
    fn note(&mut self, response: Response, data: &mut Data) -> Result<(), Error> {
        match response {
            Response::Capability(list) => data.capabilities = Some(list),
            Response::Fetch(found) if data.fetched.len() < MAX_FOUND => data.fetched.push(found),
            Response::Fetch(_) => {}
            Response::List(delimiter) => {
                data.delimiter.get_or_insert(delimiter);
            }
            Response::Search(found) => {
                let room = MAX_FOUND.saturating_sub(data.found.len());
                data.found.extend(found.into_iter().take(room));
            }
            Response::Condition(line) => match line.status {
                Status::Bye => return Err(Error::Bye(line.text)),
                _ => {
                    if let Some(code) = &line.code {
                        if let Some(v) = response::uid_validity(code) {
                            data.uid_validity = Some(v);
                        }
                        if code.is("CAPABILITY") {
                            data.capabilities = Some(response::capabilities(code.args.as_bytes()));
                        }
                    }
                }
            },
            _ => {}
        }
        Ok(())
    }
}

pub(crate) fn refused(command: &'static str, line: StatusLine) -> Error {
    Error::Refused { command, line }
}

/// An untagged response other than a status one: only these carry literals.
fn is_untagged_data(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"* ") else {
        return false;
    };
    let word = rest.split(|&b| b == b' ').next().unwrap_or_default();
    !matches!(
        word.to_ascii_uppercase().as_slice(),
        b"OK" | b"NO" | b"BAD" | b"BYE" | b"PREAUTH"
    )
}

/// The n of a line ending in `{n}` (RFC 3501 §9, `literal`).
fn literal_at_end(line: &[u8]) -> Option<u64> {
    let inner = line.strip_suffix(b"}")?;
    let open = memchr::memrchr(b'{', inner)?;
    let digits = &inner[open + 1..];
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::mock::MockStream;

    #[test]
    fn literals_of_untagged_data_are_read_inline() {
        let mut conn = Conn::new(MockStream::new(
            "* STATUS {5}\r\na b\r\n (MESSAGES 1)\r\n* SEARCH 4\r\n",
        ));
        assert_eq!(conn.read_response().unwrap(), Response::Other);
        assert_eq!(conn.read_response().unwrap(), Response::Search(vec![4]));
        assert!(matches!(conn.read_response(), Err(Error::Closed)));
    }

    #[test]
    fn a_hostile_endless_line_is_an_error_not_memory() {
        struct Endless;
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                buf.fill(b'x');
                Ok(buf.len())
            }
        }
        impl Write for Endless {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut conn = Conn::new(Endless);
        assert!(matches!(conn.read_response(), Err(Error::LineTooLong(_))));
        let mut conn = Conn::new(MockStream::new("* 1 FETCH (BODY[] {99999999}\r\n"));
        assert!(matches!(
            conn.read_response(),
            Err(Error::LiteralTooLarge(99_999_999))
        ));
    }

    #[test]
    fn literal_markers() {
        assert_eq!(literal_at_end(b"* X {12}"), Some(12));
        assert_eq!(literal_at_end(b"* X {}"), None);
        assert_eq!(literal_at_end(b"* X {1a}"), None);
        assert_eq!(literal_at_end(b"* X {99999999999999999999}"), None);
        assert!(!is_untagged_data(b"* OK {5}"));
        assert!(is_untagged_data(b"* LIST () \"/\" {5}"));
    }
}
