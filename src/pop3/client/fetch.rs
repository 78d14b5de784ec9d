//! Fetching within a session: RETR (RFC 1939 §5) and TOP (RFC 1939 §7), each
//! through the pipeline and each followed by a `LIST n` fence that proves its reply
//! is the one asked for, with the body streamed to its consumer.

use std::io::{self, Read};

use super::body::Body;
use super::connection::Connection;
use super::session::Session;
use crate::net::Wire;
use crate::pop3::proto::command::Command;
use crate::pop3::proto::identity::{fits, HeadHasher, Identity};
use crate::pop3::proto::pipeline::Flow;
use crate::pop3::proto::response::Status;
use crate::pop3::proto::Error;

impl<S: Wire> Session<S> {
    /// Retrieves messages, given as (number, listed size), in order, handing each body
    /// to `each` as a stream; a message the server refuses comes as its status. With
    /// PIPELINING, RETRs are in flight up to a window of messages and of listed bytes
    /// (see `proto::pipeline`). After `Flow::Stop`, outstanding replies are read and
    /// skipped so the session stays usable for DELE and QUIT.
    ///
    /// Each reply is checked against what was asked before its body ends: one reply
    /// too many or too few (a lying or broken server) would otherwise shift every
    /// later body onto the next message's unique-id. The body must fit the listed
    /// size (see [`fits`]), and every RETR is followed by `LIST n` for the same
    /// message (pipelined with it where allowed), whose reply must be `+OK n size`
    /// with the listed size: a RETR reply is never that, so a reply out of place is
    /// caught at the message it displaced. A body that does not fit ends in a read
    /// error instead of its end, so no target keeps it, and `retrieve` returns a
    /// protocol error without reading further.
    pub(crate) fn retrieve(
        &mut self,
        messages: &[(u32, u64)],
        mut each: impl FnMut(u32, Result<&mut dyn Retrieved, Status>) -> Flow,
    ) -> Result<(), Error> {
        let pipelining = self.pipelining;
        self.pipelined(
            "RETR",
            messages,
            |&(_, size)| size,
            |conn, &(num, _)| {
                conn.queue(Command::Retr(num))?;
                if pipelining {
                    conn.queue(Command::ListOne(num))?;
                }
                Ok(())
            },
            |conn, &(num, listed), stopped| {
                let status = conn.read_status("RETR")?;
                if !status.ok {
                    conn.io.get_mut().clear_due();
                    conn.fence("RETR", num, listed, pipelining)?;
                    return Ok(if stopped {
                        Flow::Stop
                    } else {
                        each(num, Err(status))
                    });
                }
                let mut reply = Reply {
                    conn,
                    body: Body::default(),
                    fence_sent: pipelining,
                    num,
                    listed,
                    bytes: 0,
                    lines: 0,
                    head: HeadHasher::default(),
                    end: None,
                };
                let flow = if stopped {
                    Flow::Stop
                } else {
                    each(num, Ok(&mut reply))
                };
                reply.finish()?;
                Ok(flow)
            },
        )
    }

    /// `TOP n 0` (RFC 1939 §7) for each of `messages` (number, listed size), through
    /// the pipeline: `read` makes what it needs of each header block as it streams
    /// by, and `each` gets that, or the server's status where it refused, only once
    /// the message's `LIST n` fence has proved the reply to be that message's (see
    /// [`Session::retrieve`]): a header block that a reply out of place shifted onto
    /// the next message could otherwise pass for that message's, have it deleted
    /// unfetched, judged by a filter or shown under another's number. After
    /// `Flow::Stop`, the replies owed are read and skipped.
    pub(crate) fn tops<T>(
        &mut self,
        messages: &[(u32, u64)],
        mut read: impl FnMut(&mut dyn Read) -> T,
        mut each: impl FnMut(&(u32, u64), Result<T, Status>) -> Flow,
    ) -> Result<(), Error> {
        let pipelining = self.pipelining;
        self.pipelined(
            "TOP",
            messages,
            |_| 0,
            |conn, &(num, _)| {
                conn.queue(Command::Top(num, 0))?;
                if pipelining {
                    conn.queue(Command::ListOne(num))?;
                }
                Ok(())
            },
            |conn, message, stopped| {
                let status = conn.read_status("TOP")?;
                let value = match (status.ok, stopped) {
                    (true, false) => Some(conn.read_body("TOP", &mut read)?),
                    (true, true) => conn.read_body("TOP", |_| None)?,
                    (false, _) => None,
                };
                conn.fence("TOP", message.0, message.1, pipelining)?;
                if stopped {
                    return Ok(Flow::Stop);
                }
                Ok(each(message, value.ok_or(status)))
            },
        )
    }
}

/// A RETR body as `retrieve` hands it over.
pub(crate) trait Retrieved: Read {
    /// The message's listed size and header digest, once its body was read to the
    /// end and the reply found to be the one asked for.
    fn identity(&self) -> Option<Identity>;
}

/// A RETR reply being read: counted, its header section hashed, and checked at its
/// end (see [`Session::retrieve`]).
struct Reply<'a, S: Wire> {
    conn: &'a mut Connection<S>,
    body: Body,
    /// `LIST n` went out with the RETR; if not, it is sent at the end of the body.
    fence_sent: bool,
    num: u32,
    listed: u64,
    bytes: u64,
    lines: u64,
    head: HeadHasher,
    /// Set at the end of the body: the message's identity, or why the reply is not
    /// the one asked for.
    end: Option<Result<Identity, Error>>,
}

impl<S: Wire> Reply<'_, S> {
    /// Checks the reply at the end of its body.
    fn check(&mut self) -> Result<Identity, Error> {
        if !fits(self.listed, self.bytes, self.lines) {
            return Err(Error::Protocol(format!(
                "the reply to RETR {} has {} octets, but the server listed {}; it may be another message's, so nothing from it is kept",
                self.num,
                self.bytes + self.lines,
                self.listed
            )));
        }
        self.conn
            .fence("RETR", self.num, self.listed, self.fence_sent)?;
        Ok(Identity {
            size: self.listed,
            digest: std::mem::take(&mut self.head).finish(),
        })
    }

    /// After the consumer is done: reads what it left and checks the reply.
    fn finish(&mut self) -> Result<(), Error> {
        if self.end.is_none() {
            if let Some(kind) = self.body.failure() {
                return Err(Error::io("RETR", io::Error::from(kind)));
            }
            let mut scratch = [0u8; 8192];
            loop {
                match self.read(&mut scratch) {
                    Ok(0) => break,
                    Ok(_) => {}
                    // The check failed: its error is in `end`.
                    Err(_) if self.end.is_some() => break,
                    Err(e) => return Err(Error::io("RETR", e)),
                }
            }
        }
        match self.end.take() {
            Some(Err(err)) => Err(err),
            end => {
                self.end = end;
                Ok(())
            }
        }
    }
}

impl<S: Wire> Read for Reply<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // An empty buffer reads nothing; it must not pass for the end of the body.
        if buf.is_empty() {
            return Ok(0);
        }
        if self.end.is_none() {
            let n = self.body.read_from(&mut self.conn.io, buf)?;
            if n > 0 {
                let read = &buf[..n];
                self.bytes += n as u64;
                self.lines += memchr::memchr_iter(b'\n', read).count() as u64;
                self.head.update(read);
                return Ok(n);
            }
            self.end = Some(self.check());
        }
        match &self.end {
            Some(Err(err)) => Err(io::Error::new(io::ErrorKind::InvalidData, err.to_string())),
            _ => Ok(0),
        }
    }
}

impl<S: Wire> Retrieved for Reply<'_, S> {
    fn identity(&self) -> Option<Identity> {
        match self.end {
            Some(Ok(identity)) => Some(identity),
            _ => None,
        }
    }
}
