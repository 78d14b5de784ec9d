//! The line connection under a POP3 conversation: buffered reads, batched writes,
//! an optional trace, and the rule that after any error nothing more is sent.

use std::io::{self, BufRead, BufReader, Read};

use super::body::DotReader;
use crate::net::Wire;

use crate::pop3::proto::capabilities::MAX_CAPA_LINES;
use crate::pop3::proto::command::Command;
use crate::pop3::proto::listing::{LineBudget, MAX_LISTING_LINE};
use crate::pop3::proto::response::{escape, parse_list_line, parse_status, Status, MAX_LINE};
use crate::pop3::proto::Error;

/// Read buffer size: large reads keep system calls and TLS records few.
pub(super) const READ_BUFFER: usize = 64 * 1024;

/// Receives one line per command sent and status received; passwords never reach it.
pub(crate) type Trace = Box<dyn FnMut(&str) + Send>;

/// The wire: buffered reads, batched writes, optional trace.
pub(super) struct Connection<S> {
    pub(super) io: BufReader<S>,
    out: Vec<u8>,
    pub(super) trace: Option<Trace>,
    /// Set by any I/O or protocol error: where the conversation stands is then
    /// unknown, so nothing more is sent, not even QUIT (a timed-out server would
    /// make QUIT wait a second timeout), and the connection is only closed.
    broken: Option<String>,
}

impl<S: Wire> Connection<S> {
    pub(super) fn new(stream: S, trace: Option<Trace>) -> Self {
        Connection {
            io: BufReader::with_capacity(READ_BUFFER, stream),
            out: Vec::new(),
            trace,
            broken: None,
        }
    }

    /// Marks the connection unusable when `result` is an error; see `broken`.
    pub(super) fn check<T>(&mut self, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(e) = &result {
            if self.broken.is_none() {
                self.broken = Some(e.to_string());
            }
        }
        result
    }

    /// Refuses to go on over a broken connection.
    pub(super) fn usable(&self, phase: &'static str) -> Result<(), Error> {
        match &self.broken {
            None => Ok(()),
            Some(why) => Err(Error::Unusable {
                phase,
                why: why.clone(),
            }),
        }
    }

    pub(super) fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace(&line());
        }
    }

    /// Adds a command to the outgoing batch without sending it.
    pub(super) fn queue(&mut self, cmd: Command) -> Result<(), Error> {
        cmd.encode(&mut self.out)?;
        self.note(|| format!("> {}", cmd.redacted()));
        Ok(())
    }

    /// Sends the batch in one write.
    pub(super) fn flush(&mut self, phase: &'static str) -> Result<(), Error> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.usable(phase)?;
        let stream = self.io.get_mut();
        let written = stream
            .write_all(&self.out)
            .and_then(|()| stream.flush())
            .map_err(|e| Error::io(phase, e));
        self.check(written)?;
        self.out.clear();
        Ok(())
    }

    pub(super) fn send(&mut self, cmd: Command) -> Result<(), Error> {
        self.queue(cmd)?;
        self.flush(cmd.name())
    }

    /// One line without its CRLF, bounded by [`MAX_LINE`].
    pub(super) fn read_line(&mut self, phase: &'static str) -> Result<Vec<u8>, Error> {
        let mut line = Vec::new();
        self.read_line_into(phase, &mut line)?;
        Ok(line)
    }

    /// Reads one line into `line`, replacing what it held.
    fn read_line_into(&mut self, phase: &'static str, line: &mut Vec<u8>) -> Result<(), Error> {
        self.read_bounded(phase, line, MAX_LINE)
    }

    /// Reads one line of at most `max` bytes into `line`; an error marks the
    /// connection unusable.
    fn read_bounded(
        &mut self,
        phase: &'static str,
        line: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), Error> {
        self.usable(phase)?;
        let read = read_line_from(&mut self.io, phase, line, max);
        self.check(read)
    }

    pub(super) fn read_status(&mut self, phase: &'static str) -> Result<Status, Error> {
        let line = self.read_line(phase)?;
        let status = parse_status(&line);
        let status = self.check(status)?;
        self.note(|| {
            let word = if status.ok { "+OK" } else { "-ERR" };
            format!("< {word} {}", status.text).trim_end().to_string()
        });
        Ok(status)
    }

    pub(super) fn expect_ok(&mut self, phase: &'static str) -> Result<Status, Error> {
        let status = self.read_status(phase)?;
        if status.ok {
            Ok(status)
        } else {
            Err(Error::Server {
                command: phase,
                code: status.code,
                text: status.text,
            })
        }
    }

    /// A short multi-line response (CAPA) as unstuffed lines, at most
    /// [`MAX_CAPA_LINES`] of them.
    pub(super) fn read_lines(&mut self, phase: &'static str) -> Result<Vec<Vec<u8>>, Error> {
        let mut lines = Vec::new();
        let budget = LineBudget::new(MAX_CAPA_LINES, usize::MAX);
        self.each_line(phase, MAX_LINE, budget, |line| {
            lines.push(line.to_vec());
            Ok(())
        })?;
        Ok(lines)
    }

    /// A listing (UIDL, LIST: one line per message), bounded by `budget` (see
    /// [`LineBudget::listing`]).
    pub(super) fn each_listed(
        &mut self,
        phase: &'static str,
        budget: LineBudget,
        each: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.each_line(phase, MAX_LISTING_LINE, budget, each)
    }

    /// Hands each unstuffed line of a multi-line response to `each`, through one
    /// reused buffer; a line past `budget` ends the session with a protocol error.
    fn each_line(
        &mut self,
        phase: &'static str,
        max_line: usize,
        mut budget: LineBudget,
        mut each: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut line = Vec::new();
        loop {
            self.read_bounded(phase, &mut line, max_line)?;
            let unstuffed = match line.strip_prefix(b".") {
                Some([]) => return Ok(()),
                Some(unstuffed) => unstuffed,
                None => &line,
            };
            let counted = budget.take(phase, line.len());
            self.check(counted)?;
            let handled = each(unstuffed);
            self.check(handled)?;
        }
    }

    /// Streams a multi-line body to `consume`, then skips whatever it left unread.
    pub(super) fn read_body<T>(
        &mut self,
        phase: &'static str,
        consume: impl FnOnce(&mut dyn Read) -> T,
    ) -> Result<T, Error> {
        self.usable(phase)?;
        let mut body = DotReader::new(&mut self.io);
        let result = consume(&mut body);
        let read = match body.failure() {
            Some(kind) => Err(Error::io(phase, io::Error::from(kind))),
            None => body.drain().map_err(|e| Error::io(phase, e)),
        };
        self.check(read)?;
        Ok(result)
    }

    /// Reads the reply to the `LIST n` that follows each RETR and TOP (sending it
    /// first when it did not go out with its command): it must be `+OK n size` with
    /// the listed size. A reply out of place (one too many or too few from a lying
    /// or broken server) is caught at the message it displaced, before anything
    /// from it is kept.
    pub(super) fn fence(
        &mut self,
        after: &str,
        num: u32,
        listed: u64,
        sent: bool,
    ) -> Result<(), Error> {
        if !sent {
            self.send(Command::ListOne(num))?;
        }
        let line = self.read_line("LIST")?;
        self.note(|| format!("< {}", escape(&line)));
        let fits = parse_status(&line)
            .ok()
            .filter(|status| status.ok)
            .and_then(|status| parse_list_line(status.text.as_bytes()).ok())
            == Some((num, listed));
        if fits {
            return Ok(());
        }
        self.check(Err(Error::Protocol(format!(
            "the server's replies are out of step: after {after} {num}, LIST {num} was answered \"{}\"; nothing from that reply is kept",
            escape(&line)
        ))))
    }
}

/// Reads one line without its CRLF into `line`, bounded by `max` bytes.
fn read_line_from<R: BufRead>(
    io: &mut R,
    phase: &'static str,
    line: &mut Vec<u8>,
    max: usize,
) -> Result<(), Error> {
    line.clear();
    loop {
        let buf = match io.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(phase, e)),
        };
        if buf.is_empty() {
            return Err(Error::Lost {
                phase,
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ),
            });
        }
        let (take, end) = match memchr::memchr(b'\n', buf) {
            Some(p) => (p + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        io.consume(take);
        if line.len() > max {
            return Err(Error::Protocol(format!(
                "the server sent a line longer than {max} bytes during {phase}"
            )));
        }
        if end {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(());
        }
    }
}
