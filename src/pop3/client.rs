//! The POP3 conversation. A [`Client`] is a connection in the AUTHORIZATION state
//! (RFC 1939 §4); only a successful login turns it into a [`Session`] (TRANSACTION
//! state, RFC 1939 §5), so no mailbox command can be sent before login.
//!
//! A session is called in this order: `listing`, then `retrieve`, then `delete`, then
//! `quit`. Deletions take effect only at QUIT (RFC 1939 §6), so a session dropped
//! without `quit` deletes nothing.

#[cfg(test)]
use std::io::Write;
use std::io::{self, BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use md5::{Digest, Md5};

use super::command::Command;
use super::multiline::DotReader;
use super::net::Wire;
use super::response::{
    apop_timestamp, parse_list_line, parse_status, parse_uidl_line, Status, MAX_LINE,
};
use super::sasl::{Exchange, Mechanism, Peer};
use super::Error;
use crate::identity::{self, HeadHasher, Identity};

/// Read buffer size: large reads keep system calls and TLS records few.
const READ_BUFFER: usize = 64 * 1024;

/// Messages in flight at most when the server allows PIPELINING (RFC 2449 §6.6):
/// one command each, or two for a RETR and its `LIST n` fence. Their text (at most
/// 17 bytes a command, under 9 KiB in all) stays far below any socket buffer, so our
/// writes never block while the server waits for us to read its replies: the
/// deadlock pipelining must avoid.
const WINDOW: usize = 256;

/// Listed message bytes in flight at most, a window's worth of RETRs: enough to
/// keep a 50 ms path busy at 80 MB/s, and a bound on what a stop must drain.
const BYTES_IN_FLIGHT: u64 = 4 << 20;

/// A round trip at least this long (timed on CAPA) makes UIDL and LIST go out
/// together: waiting for the unique-ids before asking for sizes would cost more
/// than the server spends listing sizes nobody needs (some 15 ms for 20,000
/// messages in Dovecot). Below it, LIST is asked only for what the plan needs.
const SLOW_PATH: Duration = Duration::from_millis(10);

/// Listing lines at most in one UIDL or LIST reply: a bound on what a server
/// answering with an endless stream of well-formed lines can make us hold.
const MAX_LISTED: usize = 1 << 20;

/// What one UIDL or LIST reply may cost in memory: each line's text plus
/// [`LISTED_ENTRY_COST`] for the entry that holds it. 24 MiB holds some 280,000
/// messages with Dovecot's 16-character unique-ids, and keeps a whole run well
/// under 64 MiB however long a hostile server goes on.
const MAX_LISTING_BYTES: usize = 24 << 20;

/// What a listed message costs beyond its line's text: its entry (number, size and
/// the unique-id's string header) and the allocator's share.
const LISTED_ENTRY_COST: usize = 64;

/// A listing line at most: RFC 2449 §4 caps a response line at 512 octets, and a
/// UIDL line (a number and at most 70 characters) needs far less.
const MAX_LISTING_LINE: usize = 512;

/// CAPA lines at most: real servers send a dozen or two.
const MAX_CAPA_LINES: usize = 256;

/// Receives one line per command sent and status received; passwords never reach it.
pub type Trace = Box<dyn FnMut(&str) + Send>;

/// What the server said it can do (RFC 2449 §6). Empty when CAPA is not supported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The server answered CAPA at all.
    pub known: bool,
    pub stls: bool,
    pub pipelining: bool,
    pub uidl: bool,
    pub top: bool,
    pub user: bool,
    pub resp_codes: bool,
    /// RFC 6856: the server can send UTF-8 headers unchanged once asked.
    pub utf8: bool,
    pub sasl: Vec<String>,
    /// Every line as the server sent it, escaped, for `probe` to show.
    pub lines: Vec<String>,
}

impl Capabilities {
    fn parse(lines: &[Vec<u8>]) -> Capabilities {
        let mut caps = Capabilities {
            known: true,
            ..Capabilities::default()
        };
        for line in lines {
            caps.lines.push(super::response::escape(line));
            let line = String::from_utf8_lossy(line);
            let mut words = line.split_ascii_whitespace();
            match words.next().map(str::to_ascii_uppercase).as_deref() {
                Some("STLS") => caps.stls = true,
                Some("PIPELINING") => caps.pipelining = true,
                Some("UIDL") => caps.uidl = true,
                Some("TOP") => caps.top = true,
                Some("USER") => caps.user = true,
                Some("RESP-CODES") => caps.resp_codes = true,
                Some("UTF8") => caps.utf8 = true,
                Some("SASL") => caps.sasl = words.map(str::to_ascii_uppercase).collect(),
                _ => {}
            }
        }
        caps
    }
}

/// How to log in: RFC 1939 §7, or SASL (RFC 5034).
#[derive(Clone)]
pub enum Credentials<'a> {
    User {
        user: &'a str,
        password: &'a str,
    },
    Apop {
        user: &'a str,
        password: &'a str,
    },
    Sasl {
        mechanism: Mechanism,
        user: &'a str,
        secret: &'a str,
        peer: Peer,
    },
}

/// RFC 5034 §4: an AUTH command with its initial response must fit in this many
/// octets; a longer response waits for the server's empty challenge.
const MAX_AUTH_LINE: usize = 255;

/// A bound on challenge rounds, so a hostile server cannot keep us answering.
const MAX_SASL_ROUNDS: usize = 10;

/// A message in the server's listing: number, size and unique-id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMessage {
    pub num: u32,
    /// As LIST counts it; 0 for a message whose size was not asked (see
    /// [`Session::listing_sized`]).
    pub size: u64,
    pub uid: String,
}

/// The server's listing: with unique-ids, or (RFC 1939 makes UIDL optional)
/// message numbers and sizes only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    WithUids(Vec<ListedMessage>),
    SizesOnly(Vec<(u32, u64)>),
}

/// Whether `retrieve` should go on after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// The wire: buffered reads, batched writes, optional trace.
struct Connection<S> {
    io: BufReader<S>,
    out: Vec<u8>,
    trace: Option<Trace>,
    /// Set by any I/O or protocol error: where the conversation stands is then
    /// unknown, so nothing more is sent, not even QUIT (a timed-out server would
    /// make QUIT wait a second timeout), and the connection is only closed.
    broken: Option<String>,
}

impl<S: Wire> Connection<S> {
    fn new(stream: S, trace: Option<Trace>) -> Self {
        Connection {
            io: BufReader::with_capacity(READ_BUFFER, stream),
            out: Vec::new(),
            trace,
            broken: None,
        }
    }

    /// Marks the connection unusable when `result` is an error; see `broken`.
    fn check<T>(&mut self, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(e) = &result {
            if self.broken.is_none() {
                self.broken = Some(e.to_string());
            }
        }
        result
    }

    /// Refuses to go on over a broken connection.
    fn usable(&self, phase: &'static str) -> Result<(), Error> {
        match &self.broken {
            None => Ok(()),
            Some(why) => Err(Error::Unusable {
                phase,
                why: why.clone(),
            }),
        }
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace(&line());
        }
    }

    /// Adds a command to the outgoing batch without sending it.
    fn queue(&mut self, cmd: Command) -> Result<(), Error> {
        cmd.encode(&mut self.out)?;
        self.note(|| format!("> {}", cmd.redacted()));
        Ok(())
    }

    /// Sends the batch in one write.
    fn flush(&mut self, phase: &'static str) -> Result<(), Error> {
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

    fn send(&mut self, cmd: Command) -> Result<(), Error> {
        self.queue(cmd)?;
        self.flush(cmd.name())
    }

    /// One line without its CRLF, bounded by [`MAX_LINE`].
    fn read_line(&mut self, phase: &'static str) -> Result<Vec<u8>, Error> {
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

    fn read_status(&mut self, phase: &'static str) -> Result<Status, Error> {
        let line = self.read_line(phase)?;
        let status = parse_status(&line);
        let status = self.check(status)?;
        self.note(|| {
            let word = if status.ok { "+OK" } else { "-ERR" };
            format!("< {word} {}", status.text).trim_end().to_string()
        });
        Ok(status)
    }

    fn expect_ok(&mut self, phase: &'static str) -> Result<Status, Error> {
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
    fn read_lines(&mut self, phase: &'static str) -> Result<Vec<Vec<u8>>, Error> {
        let mut lines = Vec::new();
        self.each_line(phase, MAX_LINE, MAX_CAPA_LINES, usize::MAX, |line| {
            lines.push(line.to_vec());
            Ok(())
        })?;
        Ok(lines)
    }

    /// A listing (UIDL, LIST: one line per message), bounded so that a server
    /// cannot make us hold more than [`MAX_LISTED`] lines of [`MAX_LISTING_LINE`]
    /// bytes, [`MAX_LISTING_BYTES`] in all, or more lines than `expected` allows.
    fn each_listed(
        &mut self,
        phase: &'static str,
        expected: usize,
        each: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.each_line(
            phase,
            MAX_LISTING_LINE,
            expected.min(MAX_LISTED),
            MAX_LISTING_BYTES,
            each,
        )
    }

    /// Hands each unstuffed line of a multi-line response to `each`, through one
    /// reused buffer; more than `max_lines` lines or `max_bytes` bytes end the
    /// session with a protocol error.
    fn each_line(
        &mut self,
        phase: &'static str,
        max_line: usize,
        max_lines: usize,
        max_bytes: usize,
        mut each: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut line = Vec::new();
        let (mut lines, mut bytes) = (0usize, 0usize);
        loop {
            self.read_bounded(phase, &mut line, max_line)?;
            let unstuffed = match line.strip_prefix(b".") {
                Some([]) => return Ok(()),
                Some(unstuffed) => unstuffed,
                None => &line,
            };
            lines += 1;
            bytes = bytes.saturating_add(line.len() + LISTED_ENTRY_COST);
            if lines > max_lines || bytes > max_bytes {
                let e = Error::Protocol(format!(
                    "the server's {phase} reply goes on past {} lines; ending the session",
                    lines - 1
                ));
                return self.check(Err(e));
            }
            let handled = each(unstuffed);
            self.check(handled)?;
        }
    }

    /// Streams a multi-line body to `consume`, then skips whatever it left unread.
    fn read_body<T>(
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

/// A connection in the AUTHORIZATION state.
pub struct Client<S> {
    conn: Connection<S>,
    greeting: Status,
    caps: Option<Capabilities>,
    /// How long CAPA took to answer: the path's round trip, near enough.
    round_trip: Option<Duration>,
}

impl<S: Wire> Client<S> {
    /// Reads the greeting (RFC 1939 §4) from a fresh connection.
    pub fn new(stream: S, trace: Option<Trace>) -> Result<Self, Error> {
        let mut conn = Connection::new(stream, trace);
        // A TLS record (handshake 22 or alert 21, then major version 3) where the
        // greeting should be: the port speaks TLS first (RFC 8446 §5.1).
        let first = match conn.io.fill_buf() {
            Ok(buf) => buf.get(..2).map(<[u8]>::to_vec),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => return Err(Error::io("the greeting", e)),
        };
        if first.is_some_and(|first| matches!(first[..], [21 | 22, 3])) {
            return Err(Error::TlsNotGreeting);
        }
        let greeting = conn.read_status("the greeting")?;
        if !greeting.ok {
            return Err(Error::Server {
                command: "the greeting",
                code: greeting.code,
                text: greeting.text,
            });
        }
        Ok(Client {
            conn,
            greeting,
            caps: None,
            round_trip: None,
        })
    }

    pub fn greeting(&self) -> &Status {
        &self.greeting
    }

    /// The stream under the conversation, for a report of its TLS session.
    pub fn stream(&self) -> &S {
        self.conn.io.get_ref()
    }

    /// Adds a line to the trace, if there is one.
    pub fn note(&mut self, line: &str) {
        self.conn.note(|| line.to_string());
    }

    /// Whether CAPA's round trip was at least [`SLOW_PATH`].
    fn slow_path(&self) -> bool {
        self.round_trip.is_some_and(|t| t >= SLOW_PATH)
    }

    /// Asks CAPA once (RFC 2449 §5). A server that answers -ERR has no capabilities.
    pub fn capabilities(&mut self) -> Result<&Capabilities, Error> {
        if self.caps.is_none() {
            let asked = Instant::now();
            self.conn.send(Command::Capa)?;
            let status = self.conn.read_status("CAPA")?;
            self.round_trip = Some(asked.elapsed());
            let caps = if status.ok {
                Capabilities::parse(&self.conn.read_lines("CAPA")?)
            } else {
                Capabilities::default()
            };
            self.caps = Some(caps);
        }
        Ok(self.caps.get_or_insert_with(Capabilities::default))
    }

    /// Upgrades the connection with STLS (RFC 2595 §4). `handshake` turns the plain
    /// stream into a secure one. Nothing is ever sent in cleartext after a failure here.
    pub fn starttls(
        mut self,
        handshake: impl FnOnce(S) -> Result<S, Error>,
    ) -> Result<Client<S>, Error> {
        let caps = self.capabilities()?;
        if caps.known && !caps.stls {
            return Err(Error::StlsUnavailable);
        }
        let known = caps.known;
        self.conn.send(Command::Stls)?;
        let status = self.conn.read_status("STLS")?;
        if !status.ok {
            return Err(if known {
                Error::StlsRefused(status.text)
            } else {
                Error::StlsUnavailable
            });
        }
        // Anything buffered now was sent before TLS but would be read as if it came
        // after: the response injection of CVE-2011-0411 and CVE-2020-14954.
        if !self.conn.io.buffer().is_empty() {
            return Err(Error::StlsInjection);
        }
        let Connection { io, trace, .. } = self.conn;
        let stream = handshake(io.into_inner())?;
        // RFC 2595 §4: what CAPA said before TLS must be forgotten and asked again.
        Ok(Client {
            conn: Connection::new(stream, trace),
            greeting: self.greeting,
            caps: None,
            round_trip: None,
        })
    }

    /// Logs in. On failure the client comes back with the error, so the caller can
    /// still say QUIT.
    pub fn login(mut self, creds: Credentials) -> Result<Session<S>, Box<LoginFailed<S>>> {
        if let Err(error) = self.authenticate(creds) {
            return Err(Box::new(LoginFailed {
                error,
                client: self,
            }));
        }
        let caps = self.caps.take().unwrap_or_default();
        let slow_path = self.slow_path();
        Ok(Session {
            conn: self.conn,
            pipelining: caps.pipelining,
            slow_path,
        })
    }

    fn authenticate(&mut self, creds: Credentials) -> Result<(), Error> {
        // Without UTF8, a server may replace a message with UTF-8 headers by a notice
        // (Courier does, RFC 6856 §4): ask for messages as they are. A refusal
        // changes nothing.
        if self.caps.as_ref().is_some_and(|c| c.utf8) {
            self.conn.send(Command::Utf8)?;
            self.conn.read_status("UTF8")?;
        }
        let auth_failed = |s: Status| Error::Auth {
            code: s.code,
            text: s.text,
        };
        match creds {
            Credentials::User { user, password } => {
                // RFC 2449 §6.6 allows USER and PASS in one round trip, worth it on
                // a slow path only: Dovecot's login process answers USER and the mail
                // process it hands over to answers PASS, and the second answer waits
                // (Nagle) for our delayed ACK of the first, 40 ms on Linux.
                let pipelining =
                    self.caps.as_ref().is_some_and(|c| c.pipelining) && self.slow_path();
                if pipelining {
                    // A refused USER refuses the PASS after it too; its reply is read
                    // and dropped.
                    self.conn.queue(Command::User(user))?;
                    self.conn.queue(Command::Pass(password))?;
                    self.conn.flush("USER")?;
                    let user = self.conn.read_status("USER")?;
                    let pass = self.conn.read_status("login")?;
                    return match (user.ok, pass.ok) {
                        (true, true) => Ok(()),
                        (false, _) => Err(auth_failed(user)),
                        (true, false) => Err(auth_failed(pass)),
                    };
                }
                self.conn.send(Command::User(user))?;
                let status = self.conn.read_status("USER")?;
                if !status.ok {
                    return Err(auth_failed(status));
                }
                self.conn.send(Command::Pass(password))?;
            }
            Credentials::Apop { user, password } => {
                let stamp = apop_timestamp(&self.greeting.raw).ok_or_else(|| {
                    Error::Refused(
                        "auth = \"apop\", but the server greeting has no valid APOP timestamp"
                            .into(),
                    )
                })?;
                let digest = Md5::digest(format!("{stamp}{password}").as_bytes());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                self.conn.send(Command::Apop(user, &hex))?;
            }
            Credentials::Sasl {
                mechanism,
                user,
                secret,
                peer,
            } => return self.sasl(Exchange::new(mechanism, user, secret, peer)),
        }
        let status = self.conn.read_status("login")?;
        if status.ok {
            Ok(())
        } else {
            Err(auth_failed(status))
        }
    }

    /// Runs a SASL exchange (RFC 5034 §4).
    fn sasl(&mut self, mut exchange: Exchange) -> Result<(), Error> {
        let name = exchange.mechanism().name();
        let mut pending = exchange.initial_response()?.map(|ir| encode(&ir));
        match pending.take() {
            Some(ir) if name.len() + ir.len() + 7 <= MAX_AUTH_LINE => {
                self.conn.send(Command::Auth(name, Some(&ir)))?
            }
            other => {
                pending = other;
                self.conn.send(Command::Auth(name, None))?
            }
        }
        for _ in 0..MAX_SASL_ROUNDS {
            let line = self.conn.read_line("AUTH")?;
            // A challenge is "+" alone or "+ " and base64; "+OK" is the verdict.
            let challenge = match line.strip_prefix(b"+") {
                Some(rest) if rest.is_empty() || rest.starts_with(b" ") => Some(rest),
                _ => None,
            };
            let Some(challenge) = challenge else {
                let status = parse_status(&line)?;
                self.conn
                    .note(|| format!("< {}", if status.ok { "+OK" } else { "-ERR" }));
                return if status.ok {
                    exchange.finish()
                } else {
                    Err(Error::Auth {
                        code: status.code,
                        text: status.text,
                    })
                };
            };
            self.conn.note(|| "< + (challenge)".into());
            let challenge = challenge.strip_prefix(b" ").unwrap_or(challenge);
            let response = match pending.take() {
                Some(initial) => Ok(initial),
                None => BASE64
                    .decode(challenge)
                    .map_err(|_| {
                        Error::Protocol(
                            "the server sent a SASL challenge that is not base64".into(),
                        )
                    })
                    .and_then(|c| exchange.respond(&c))
                    .map(|r| encode(&r)),
            };
            match response {
                Ok(response) => self.conn.send(Command::SaslResponse(&response))?,
                Err(e) => {
                    // RFC 5034 §4: "*" cancels the exchange.
                    let _ = self.conn.send(Command::SaslResponse("*"));
                    return Err(e);
                }
            }
        }
        Err(Error::Protocol(format!(
            "the server sent more than {MAX_SASL_ROUNDS} {name} challenges"
        )))
    }

    /// Ends the conversation politely; over a broken connection, only closes it.
    pub fn quit(mut self) -> Result<(), Error> {
        self.conn.usable("QUIT")?;
        self.conn.send(Command::Quit)?;
        self.conn.expect_ok("QUIT").map(drop)
    }
}

/// SASL responses in base64; an empty one is "=" in an initial response and an
/// empty line otherwise (RFC 5034 §4), which the caller's position decides.
fn encode(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// A refused login: the error, and the client still in the AUTHORIZATION state.
pub struct LoginFailed<S> {
    pub error: Error,
    pub client: Client<S>,
}

/// A logged-in connection in the TRANSACTION state.
pub struct Session<S> {
    conn: Connection<S>,
    pipelining: bool,
    /// The round trip is at least [`SLOW_PATH`].
    slow_path: bool,
}

impl<S: Wire> Session<S> {
    fn window(&self) -> usize {
        if self.pipelining {
            WINDOW
        } else {
            1
        }
    }

    /// STAT (RFC 1939 §5): message count and total size.
    pub fn stat(&mut self) -> Result<(u32, u64), Error> {
        self.conn.send(Command::Stat)?;
        let status = self.conn.expect_ok("STAT")?;
        let mut words = status.text.split(' ');
        let mut number = || words.next().and_then(|w| w.parse::<u64>().ok());
        match (number(), number()) {
            (Some(count), Some(size)) => Ok((count as u32, size)),
            _ => Err(Error::Protocol(format!(
                "malformed STAT reply \"{}\"",
                status.text
            ))),
        }
    }

    /// Every message with its size and unique-id: UIDL and LIST, sent together when
    /// the server allows pipelining. A server without UIDL gives sizes only.
    pub fn listing(&mut self) -> Result<Listing, Error> {
        self.conn.queue(Command::Uidl)?;
        if self.pipelining {
            self.conn.queue(Command::List)?;
        }
        self.conn.flush("UIDL")?;
        let uids = self.read_uids()?;
        if !self.pipelining {
            self.conn.send(Command::List)?;
        }
        let sizes = self.read_sizes(uids.as_ref().map(Vec::len))?;
        match uids {
            Some(uids) => join(uids, &sizes).map(Listing::WithUids),
            None => Ok(Listing::SizesOnly(sizes)),
        }
    }

    /// Every message with its unique-id, and its size where `sized` (given the
    /// unique-id) says it matters or the unique-id repeats; the others have size 0.
    /// The sizes come from `LIST n` for each, pipelined, when they are few, and from
    /// one LIST otherwise; a run with nothing new asks no LIST at all. On a slow
    /// path (see [`SLOW_PATH`]) this is [`listing`](Self::listing). A server without
    /// UIDL gives sizes only.
    pub fn listing_sized(&mut self, sized: &dyn Fn(&str) -> bool) -> Result<Listing, Error> {
        if self.pipelining && self.slow_path {
            return self.listing();
        }
        self.conn.send(Command::Uidl)?;
        let Some(uids) = self.read_uids()? else {
            self.conn.send(Command::List)?;
            return Ok(Listing::SizesOnly(self.read_sizes(None)?));
        };
        // Sizes are matched to unique-ids by message number, so it must not repeat.
        if !uids.windows(2).all(|w| w[0].0 < w[1].0) {
            let mut nums: Vec<u32> = uids.iter().map(|&(num, _)| num).collect();
            nums.sort_unstable();
            if let Some(w) = nums.windows(2).find(|w| w[0] == w[1]) {
                return Err(Error::Protocol(format!(
                    "UIDL names message {} twice",
                    w[0]
                )));
            }
        }
        // A unique-id that repeats is sized whatever `sized` says: telling its
        // messages apart takes their sizes (see `connect::listing`).
        let repeated = repeated_uids(uids.iter().map(|(_, uid)| uid.as_str()));
        let wanted: Vec<u32> = uids
            .iter()
            .filter(|(_, uid)| repeated.contains(uid.as_str()) || sized(uid))
            .map(|&(num, _)| num)
            .collect();
        let sizes = self.sizes_of(&wanted, uids.len())?;
        let mut sizes = sizes.into_iter().peekable();
        let messages = uids
            .into_iter()
            .map(|(num, uid)| {
                let size = sizes
                    .next_if(|&(n, _)| n == num)
                    .map_or(0, |(_, size)| size);
                ListedMessage { num, size, uid }
            })
            .collect();
        Ok(Listing::WithUids(messages))
    }

    /// The unique-id listing, or `None` when the server refuses UIDL.
    fn read_uids(&mut self) -> Result<Option<Vec<(u32, String)>>, Error> {
        if !self.conn.read_status("UIDL")?.ok {
            return Ok(None);
        }
        let mut uids = Vec::new();
        self.conn.each_listed("UIDL", MAX_LISTED, |line| {
            uids.push(parse_uidl_line(line)?);
            Ok(())
        })?;
        Ok(Some(uids))
    }

    /// The reply to a LIST of every message: as many lines as `expected` at most
    /// (UIDL's count, when known, for both list the same messages).
    fn read_sizes(&mut self, expected: Option<usize>) -> Result<Vec<(u32, u64)>, Error> {
        self.conn.expect_ok("LIST")?;
        let mut sizes = Vec::new();
        let expected = expected.unwrap_or(MAX_LISTED);
        self.conn.each_listed("LIST", expected, |line| {
            sizes.push(parse_list_line(line)?);
            Ok(())
        })?;
        Ok(sizes)
    }

    /// The sizes of the messages `nums`, in that order: `LIST n` for each in
    /// pipelined batches when the server allows it and they fit in a window, or one
    /// LIST of everything, kept to `nums`.
    fn sizes_of(&mut self, nums: &[u32], listed: usize) -> Result<Vec<(u32, u64)>, Error> {
        if nums.is_empty() {
            return Ok(Vec::new());
        }
        if self.pipelining && nums.len() <= WINDOW {
            for &num in nums {
                self.conn.queue(Command::ListOne(num))?;
            }
            self.conn.flush("LIST")?;
            let mut sizes = Vec::with_capacity(nums.len());
            for &num in nums {
                let status = self.conn.expect_ok("LIST")?;
                let parsed = parse_list_line(status.text.as_bytes());
                let (listed, size) = self.conn.check(parsed)?;
                if listed != num {
                    return self.conn.check(Err(Error::Protocol(format!(
                        "asked LIST {num}, the server answered for message {listed}"
                    ))));
                }
                sizes.push((num, size));
            }
            return Ok(sizes);
        }
        self.conn.send(Command::List)?;
        let all: foldhash::HashMap<u32, u64> = self.read_sizes(Some(listed))?.into_iter().collect();
        nums.iter()
            .map(|&num| match all.get(&num) {
                Some(&size) => Ok((num, size)),
                None => Err(Error::Protocol(format!(
                    "UIDL names message {num}, which LIST does not"
                ))),
            })
            .collect()
    }

    /// Retrieves messages, given as (number, listed size), in order, handing each body
    /// to `each` as a stream; a message the server refuses comes as its status. With
    /// PIPELINING, RETRs are in flight up to [`WINDOW`] messages and
    /// [`BYTES_IN_FLIGHT`] listed bytes (always at least one). After `Flow::Stop`,
    /// outstanding replies are read and skipped so the session stays usable for DELE
    /// and QUIT.
    ///
    /// Each reply is checked against what was asked before its body ends: one reply
    /// too many or too few (a lying or broken server) would otherwise shift every
    /// later body onto the next message's unique-id. The body must fit the listed
    /// size (see [`identity::fits`]), and every RETR is followed by `LIST n` for the
    /// same message (pipelined with it where allowed), whose reply must be
    /// `+OK n size` with the listed size: a RETR reply is never that, so a reply out
    /// of place is caught at the message it displaced. A body that does not fit ends
    /// in a read error instead of its end, so no target keeps it, and `retrieve`
    /// returns a protocol error without reading further.
    pub fn retrieve(
        &mut self,
        messages: &[(u32, u64)],
        each: impl FnMut(u32, Result<&mut dyn Retrieved, Status>) -> Flow,
    ) -> Result<(), Error> {
        let retrieved = self.retrieve_in_windows(messages, each);
        // What a server overstated must not make a later reply wait.
        self.conn.io.get_mut().clear_due();
        retrieved
    }

    fn retrieve_in_windows(
        &mut self,
        messages: &[(u32, u64)],
        mut each: impl FnMut(u32, Result<&mut dyn Retrieved, Status>) -> Flow,
    ) -> Result<(), Error> {
        let window = self.window();
        let (mut sent, mut done) = (0, 0);
        let mut bytes_in_flight = 0u64;
        let mut stopped = false;
        while done < sent || (!stopped && sent < messages.len()) {
            while !stopped && sent < messages.len() && sent - done < window {
                let (num, size) = messages[sent];
                if sent > done && bytes_in_flight.saturating_add(size) > BYTES_IN_FLIGHT {
                    break;
                }
                self.conn.queue(Command::Retr(num))?;
                if self.pipelining {
                    self.conn.queue(Command::ListOne(num))?;
                }
                self.conn.io.get_mut().due(size);
                bytes_in_flight = bytes_in_flight.saturating_add(size);
                sent += 1;
            }
            self.conn.flush("RETR")?;
            let (num, size) = messages[done];
            bytes_in_flight = bytes_in_flight.saturating_sub(size);
            done += 1;
            let status = self.conn.read_status("RETR")?;
            let fence_sent = self.pipelining;
            let flow = if !status.ok {
                self.conn.io.get_mut().clear_due();
                let Connection { io, trace, .. } = &mut self.conn;
                fence(io, trace, num, size, fence_sent)?;
                if stopped {
                    continue;
                }
                each(num, Err(status))
            } else {
                let Connection { io, trace, .. } = &mut self.conn;
                let mut reply = Reply {
                    body: DotReader::new(io),
                    trace,
                    fence_sent,
                    num,
                    listed: size,
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
                flow
            };
            stopped |= flow == Flow::Stop;
            if done == sent {
                self.conn.io.get_mut().clear_due();
            }
        }
        Ok(())
    }

    /// TOP (RFC 1939 §7): the headers and `lines` body lines of a message, streamed.
    pub fn top<T>(
        &mut self,
        num: u32,
        lines: u32,
        consume: impl FnOnce(&mut dyn Read) -> T,
    ) -> Result<T, Error> {
        self.conn.send(Command::Top(num, lines))?;
        self.conn.expect_ok("TOP")?;
        self.conn.read_body("TOP", consume)
    }

    /// `TOP n 0` (RFC 1939 §7) for each of `messages` (number, listed size),
    /// pipelined in windows where the server allows it: each header block is handed
    /// to `each` as a stream, or `None` where the server refused it. Each TOP is
    /// followed by a `LIST n` fence, as each RETR is (see [`Session::retrieve`]): a
    /// header block that a reply out of place shifted onto the next message could
    /// pass for that message's and have it deleted unfetched.
    pub fn tops(
        &mut self,
        messages: &[(u32, u64)],
        mut each: impl FnMut(u32, Option<&mut dyn Read>),
    ) -> Result<(), Error> {
        for batch in messages.chunks(self.window()) {
            for &(num, _) in batch {
                self.conn.queue(Command::Top(num, 0))?;
                if self.pipelining {
                    self.conn.queue(Command::ListOne(num))?;
                }
            }
            self.conn.flush("TOP")?;
            for &(num, size) in batch {
                if self.conn.read_status("TOP")?.ok {
                    self.conn.read_body("TOP", |head| each(num, Some(head)))?;
                } else {
                    each(num, None);
                }
                let Connection { io, trace, .. } = &mut self.conn;
                let fenced = fence(io, trace, num, size, self.pipelining);
                self.conn.check(fenced)?;
            }
        }
        Ok(())
    }

    /// Marks messages deleted (RFC 1939 §5); they go at QUIT. Returns the ones the
    /// server refused, which stay on the server.
    pub fn delete(&mut self, nums: &[u32]) -> Result<Vec<(u32, Status)>, Error> {
        let mut refused = Vec::new();
        for batch in nums.chunks(self.window()) {
            for &num in batch {
                self.conn.queue(Command::Dele(num))?;
            }
            self.conn.flush("DELE")?;
            for &num in batch {
                let status = self.conn.read_status("DELE")?;
                if !status.ok {
                    refused.push((num, status));
                }
            }
        }
        Ok(refused)
    }

    /// NOOP (RFC 1939 §5).
    pub fn noop(&mut self) -> Result<(), Error> {
        self.conn.send(Command::Noop)?;
        self.conn.expect_ok("NOOP").map(drop)
    }

    /// RSET (RFC 1939 §5): unmarks every deletion of this session.
    pub fn rset(&mut self) -> Result<(), Error> {
        self.conn.send(Command::Rset)?;
        self.conn.expect_ok("RSET").map(drop)
    }

    /// QUIT (RFC 1939 §6): the server now removes the deleted messages. -ERR here
    /// means some of them were not removed. Over a broken connection nothing is
    /// sent: the connection is closed and the deletions are not made.
    pub fn quit(mut self) -> Result<(), Error> {
        self.conn.usable("QUIT")?;
        self.conn.send(Command::Quit)?;
        self.conn.expect_ok("QUIT").map(drop)
    }
}

/// A RETR body as `retrieve` hands it over.
pub trait Retrieved: Read {
    /// The message's listed size and header digest, once its body was read to the
    /// end and the reply found to be the one asked for.
    fn identity(&self) -> Option<Identity>;
}

/// A RETR reply being read: counted, its header section hashed, and checked at its
/// end (see [`Session::retrieve`]).
struct Reply<'a, S: Wire> {
    body: DotReader<'a, BufReader<S>>,
    trace: &'a mut Option<Trace>,
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
        if !identity::fits(self.listed, self.bytes, self.lines) {
            return Err(Error::Protocol(format!(
                "the reply to RETR {} has {} octets, but the server listed {}; it may be another message's, so nothing from it is kept",
                self.num,
                self.bytes + self.lines,
                self.listed
            )));
        }
        fence(
            self.body.inner(),
            self.trace,
            self.num,
            self.listed,
            self.fence_sent,
        )?;
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
        if self.end.is_none() {
            let n = self.body.read(buf)?;
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

/// Reads the reply to the `LIST n` that follows each RETR (sending it first when it
/// did not go out with the RETR): it must be `+OK n size` with the listed size.
fn fence<S: Wire>(
    io: &mut BufReader<S>,
    trace: &mut Option<Trace>,
    num: u32,
    listed: u64,
    sent: bool,
) -> Result<(), Error> {
    if !sent {
        let mut out = Vec::new();
        Command::ListOne(num).encode(&mut out)?;
        let stream = io.get_mut();
        stream
            .write_all(&out)
            .and_then(|()| stream.flush())
            .map_err(|e| Error::io("LIST", e))?;
        if let Some(trace) = trace {
            trace(&format!("> LIST {num}"));
        }
    }
    let mut line = Vec::new();
    read_line_from(io, "LIST", &mut line, MAX_LINE)?;
    if let Some(trace) = trace {
        trace(&format!("< {}", super::response::escape(&line)));
    }
    let fits = parse_status(&line)
        .ok()
        .filter(|status| status.ok)
        .and_then(|status| parse_list_line(status.text.as_bytes()).ok())
        == Some((num, listed));
    if fits {
        Ok(())
    } else {
        Err(Error::Protocol(format!(
            "the server's replies are out of step: after RETR {num}, LIST {num} was answered \"{}\"; nothing from that reply is kept",
            super::response::escape(&line)
        )))
    }
}

/// Joins unique-ids and sizes by message number; they must name the same messages.
/// Unique-ids may still repeat here (see [`repeated_uids`]).
pub fn join(uids: Vec<(u32, String)>, sizes: &[(u32, u64)]) -> Result<Vec<ListedMessage>, Error> {
    // Servers list both in the same ascending order: pair them up directly.
    let aligned = uids.len() == sizes.len()
        && uids.iter().zip(sizes).all(|(u, s)| u.0 == s.0)
        && sizes.windows(2).all(|w| w[0].0 < w[1].0);
    if aligned {
        return Ok(uids
            .into_iter()
            .zip(sizes)
            .map(|((num, uid), &(_, size))| ListedMessage { num, size, uid })
            .collect());
    }
    let mut sizes: std::collections::BTreeMap<u32, u64> = sizes.iter().copied().collect();
    let mut messages = Vec::with_capacity(uids.len());
    for (num, uid) in uids {
        let size = sizes.remove(&num).ok_or_else(|| {
            Error::Protocol(format!("UIDL names message {num}, which LIST does not"))
        })?;
        messages.push(ListedMessage { num, size, uid });
    }
    if let Some((num, _)) = sizes.first_key_value() {
        return Err(Error::Protocol(format!(
            "LIST names message {num}, which UIDL does not"
        )));
    }
    messages.sort_by_key(|m| m.num);
    Ok(messages)
}

/// The unique-ids that occur more than once among `uids`.
pub fn repeated_uids<'a>(uids: impl Iterator<Item = &'a str>) -> foldhash::HashSet<&'a str> {
    let mut seen =
        foldhash::HashSet::with_capacity_and_hasher(uids.size_hint().0, Default::default());
    uids.filter(|uid| !seen.insert(*uid)).collect()
}

#[cfg(test)]
mod tests {
    use super::super::mock::MockStream;
    use super::*;

    fn client(server: &str) -> Client<MockStream> {
        Client::new(MockStream::new(server), None).unwrap()
    }

    /// Logged in over what looks like a slow path, so that everything that may be
    /// pipelined is.
    fn login(server: &str) -> Session<MockStream> {
        login_over(server, SLOW_PATH)
    }

    /// Logged in over a fast path: nothing pipelined that need not be.
    fn login_fast(server: &str) -> Session<MockStream> {
        login_over(server, Duration::ZERO)
    }

    /// Logged in as if CAPA had taken `round_trip`.
    fn login_over(server: &str, round_trip: Duration) -> Session<MockStream> {
        let mut c = client(server);
        c.capabilities().unwrap();
        c.round_trip = Some(round_trip);
        c.login(Credentials::User {
            user: "u",
            password: "p",
        })
        .map_err(|f| f.error)
        .unwrap()
    }

    const GREETING_AND_CAPA: &str = "+OK hi\r\n+OK\r\nUIDL\r\nPIPELINING\r\nSTLS\r\n.\r\n";

    #[test]
    fn pipelined_session_writes_batches() {
        let server = format!(
            "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n+OK\r\n1 10\r\n2 20\r\n.\r\n\
             +OK\r\n..x\r\n.\r\n+OK 1 10\r\n+OK\r\ny\r\n.\r\n+OK 2 20\r\n+OK\r\n+OK\r\n+OK bye\r\n"
        );
        let mut s = login(&server);
        let Listing::WithUids(list) = s.listing().unwrap() else {
            panic!("UIDL was answered")
        };
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].uid, "b");
        assert_eq!(list[1].size, 20);
        let mut bodies = Vec::new();
        s.retrieve(&[(1, 10), (2, 20)], |_, body| {
            let mut text = String::new();
            body.unwrap().read_to_string(&mut text).unwrap();
            bodies.push(text);
            Flow::Continue
        })
        .unwrap();
        assert_eq!(bodies, [".x\n", "y\n"]);
        assert!(s.delete(&[1, 2]).unwrap().is_empty());
        assert_eq!(
            s.conn.io.get_ref().last_batches(4),
            [
                "USER u\r\nPASS p\r\n",
                "UIDL\r\nLIST\r\n",
                "RETR 1\r\nLIST 1\r\nRETR 2\r\nLIST 2\r\n",
                "DELE 1\r\nDELE 2\r\n"
            ]
        );
        s.quit().unwrap();
    }

    fn uids_and_sizes(listing: Listing) -> Vec<(String, u64)> {
        let Listing::WithUids(list) = listing else {
            panic!("UIDL was answered")
        };
        list.into_iter().map(|m| (m.uid, m.size)).collect()
    }

    #[test]
    fn a_fast_path_logs_in_one_command_at_a_time() {
        let s = login_fast(&format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n"));
        assert_eq!(
            s.conn.io.get_ref().last_batches(2),
            ["USER u\r\n", "PASS p\r\n"]
        );
    }

    #[test]
    fn nothing_new_asks_no_list() {
        let server = format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n");
        let mut s = login_fast(&server);
        let list = uids_and_sizes(s.listing_sized(&|_| false).unwrap());
        assert_eq!(list, [("a".to_string(), 0), ("b".to_string(), 0)]);
        assert_eq!(s.conn.io.get_ref().last_batches(1), ["UIDL\r\n"]);
    }

    #[test]
    fn new_messages_are_sized_one_by_one_in_one_batch() {
        let server = format!(
            "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 b\r\n3 c\r\n.\r\n\
             +OK 2 20\r\n+OK 3 30\r\n"
        );
        let mut s = login_fast(&server);
        let list = uids_and_sizes(s.listing_sized(&|uid| uid != "a").unwrap());
        assert_eq!(
            list,
            [
                ("a".to_string(), 0),
                ("b".to_string(), 20),
                ("c".to_string(), 30)
            ]
        );
        assert_eq!(
            s.conn.io.get_ref().last_batches(2),
            ["UIDL\r\n", "LIST 2\r\nLIST 3\r\n"]
        );
    }

    #[test]
    fn a_list_answer_for_another_message_is_refused() {
        let server =
            format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n+OK 1 10\r\n");
        let mut s = login_fast(&server);
        assert!(matches!(
            s.listing_sized(&|uid| uid == "b"),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn repeated_unique_ids_are_sized_anyway() {
        let server = format!(
            "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 x\r\n3 x\r\n.\r\n\
             +OK 2 20\r\n+OK 3 30\r\n"
        );
        let mut s = login_fast(&server);
        let list = uids_and_sizes(s.listing_sized(&|_| false).unwrap());
        assert_eq!(list[1..], [("x".to_string(), 20), ("x".to_string(), 30)]);
    }

    #[test]
    fn a_slow_path_lists_uids_and_sizes_together() {
        let server =
            format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n1 a\r\n.\r\n+OK\r\n1 10\r\n.\r\n");
        let mut s = login(&server);
        let list = uids_and_sizes(s.listing_sized(&|_| false).unwrap());
        assert_eq!(list, [("a".to_string(), 10)]);
        assert_eq!(s.conn.io.get_ref().last_batches(1), ["UIDL\r\nLIST\r\n"]);
    }

    #[test]
    fn without_pipelining_new_messages_are_sized_by_one_list() {
        let mut s = login_fast(
            "+OK hi\r\n-ERR no CAPA\r\n+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n\
             +OK\r\n1 5\r\n2 7\r\n.\r\n",
        );
        let list = uids_and_sizes(s.listing_sized(&|uid| uid == "b").unwrap());
        assert_eq!(list, [("a".to_string(), 0), ("b".to_string(), 7)]);
        assert!(s.conn.io.get_ref().written().ends_with("UIDL\r\nLIST\r\n"));
    }

    #[test]
    fn a_repeated_message_number_is_refused() {
        let server = format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n2 a\r\n1 b\r\n2 c\r\n.\r\n");
        let mut s = login_fast(&server);
        assert!(matches!(
            s.listing_sized(&|_| false),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn pipelined_login_reads_both_replies_and_reports_the_first_refusal() {
        let server = format!("{GREETING_AND_CAPA}-ERR no such user\r\n-ERR no\r\n+OK\r\n");
        let mut c = client(&server);
        c.capabilities().unwrap();
        c.round_trip = Some(SLOW_PATH);
        let Err(failed) = c.login(Credentials::User {
            user: "u",
            password: "p",
        }) else {
            panic!("login must fail")
        };
        assert!(
            failed.error.to_string().contains("no such user"),
            "{}",
            failed.error
        );
        assert_eq!(
            failed.client.conn.io.get_ref().batches().last(),
            Some(&"USER u\r\nPASS p\r\n")
        );
        // Both replies were consumed: the client is in step for QUIT.
        failed.client.quit().unwrap();
    }

    #[test]
    fn retr_window_is_bounded_by_listed_bytes() {
        let big = BYTES_IN_FLIGHT / 2 + 1;
        // Bodies of the listed size, or they would not fit it.
        let body = |c: &str| c.repeat(big as usize - 2);
        let server = format!(
            "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n{}\r\n.\r\n+OK 1 {big}\r\n\
             +OK\r\n{}\r\n.\r\n+OK 2 {big}\r\n+OK\r\nc\r\n.\r\n+OK 3 1\r\n",
            body("a"),
            body("b")
        );
        let mut s = login(&server);
        s.retrieve(&[(1, big), (2, big), (3, 1)], |_, body| {
            let _ = io::copy(&mut body.unwrap(), &mut io::sink());
            Flow::Continue
        })
        .unwrap();
        // Messages 1 and 2 do not fit in one window together; 3 goes out with 2.
        assert_eq!(
            s.conn.io.get_ref().last_batches(2),
            [
                "RETR 1\r\nLIST 1\r\n",
                "RETR 2\r\nLIST 2\r\nRETR 3\r\nLIST 3\r\n"
            ]
        );
    }

    #[test]
    fn retrieve_says_what_is_due_and_clears_it_on_a_refusal_and_at_the_end() {
        let server = format!(
            "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\na\r\n.\r\n+OK 1 3\r\n-ERR gone\r\n+OK 2 4\r\n\
             +OK\r\nc\r\n.\r\n+OK 3 5\r\n"
        );
        let mut s = login(&server);
        s.retrieve(&[(1, 3), (2, 4), (3, 5)], |_, body| {
            if let Ok(body) = body {
                let _ = io::copy(body, &mut io::sink());
            }
            Flow::Continue
        })
        .unwrap();
        // Each RETR's listed size as it goes out. The refusal of message 2 clears
        // what was said, so that later reads do not wait for its body; so does the
        // end of the window, and the end of `retrieve`.
        assert_eq!(
            s.conn.io.get_ref().due,
            [Some(3), Some(4), Some(5), None, None, None]
        );
    }

    #[test]
    fn stop_drains_outstanding_replies() {
        let server = format!(
            "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\nfirst\r\n.\r\n+OK 1 1\r\n\
             +OK\r\nsecond\r\n.\r\n+OK 2 1\r\n-ERR gone\r\n+OK 3 1\r\n+OK\r\n"
        );
        let mut s = login(&server);
        let mut calls = 0;
        s.retrieve(&[(1, 1), (2, 1), (3, 1)], |_, _| {
            calls += 1;
            Flow::Stop
        })
        .unwrap();
        assert_eq!(calls, 1);
        s.noop().unwrap();
    }

    /// A body as read, with its identity.
    type Body = (String, Option<Identity>);

    /// Reads every body of a retrieve to its end; returns them with their
    /// identities, and what `retrieve` returned.
    fn read_all(
        s: &mut Session<MockStream>,
        messages: &[(u32, u64)],
    ) -> (Vec<Body>, Result<(), Error>) {
        let mut bodies = Vec::new();
        let result = s.retrieve(messages, |_, body| {
            let body = body.unwrap();
            let mut text = String::new();
            match body.read_to_string(&mut text) {
                Ok(_) => bodies.push((text, body.identity())),
                Err(_) => bodies.push(("(refused)".into(), body.identity())),
            }
            Flow::Continue
        });
        (bodies, result)
    }

    #[test]
    fn an_extra_reply_in_a_window_stops_at_the_message_it_displaced() {
        // One reply too many after message 1's: it would pass for message 2's, and
        // message 2's for message 3's.
        let server = format!(
            "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\nA: 1\r\n\r\none\r\n.\r\n+OK 1 16\r\n\
             +OK\r\nA: 1\r\n\r\none\r\n.\r\n\
             +OK\r\nA: 2\r\n\r\ntwo\r\n.\r\n+OK 2 16\r\n+OK\r\nA: 3\r\n\r\nsix\r\n.\r\n+OK 3 16\r\n"
        );
        let mut s = login(&server);
        let (bodies, result) = read_all(&mut s, &[(1, 16), (2, 16), (3, 16)]);
        let err = result.unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");
        assert!(err.to_string().contains("out of step"), "{err}");
        // Message 1 is whole and checked; message 2's body never reached its end.
        assert_eq!(bodies.len(), 2);
        assert!(bodies[0].1.is_some());
        assert_eq!(bodies[1], ("(refused)".to_string(), None));
    }

    #[test]
    fn an_extra_reply_among_tops_stops_before_any_header_is_shifted() {
        // An extra TOP reply after message 1's would pass message 1's headers off
        // as message 2's: the LIST fence after TOP 2 catches it.
        let server = format!(
            "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\nA: 1\r\n\r\n.\r\n+OK 1 16\r\n\
             +OK\r\nA: 1\r\n\r\n.\r\n+OK\r\nA: 2\r\n\r\n.\r\n+OK 2 16\r\n"
        );
        let mut s = login(&server);
        let mut heads = Vec::new();
        let result = s.tops(&[(1, 16), (2, 16)], |num, head| {
            let mut text = String::new();
            head.unwrap().read_to_string(&mut text).unwrap();
            heads.push((num, text));
        });
        let err = result.unwrap_err();
        assert!(err.to_string().contains("out of step"), "{err}");
        // The shifted block was handed on as message 2's, but the fence after it
        // failed, and a failed `tops` leaves the caller nothing to plan with.
        assert_eq!(heads[0], (1, "A: 1\n\n".to_string()));
        assert_eq!(
            s.conn.io.get_ref().last_batches(1),
            ["TOP 1 0\r\nLIST 1\r\nTOP 2 0\r\nLIST 2\r\n"]
        );
    }

    #[test]
    fn a_body_far_from_its_listed_size_is_refused_before_its_end() {
        let server = format!(
            "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\nA: 1\r\n\r\none\r\n.\r\n+OK 1 90000\r\n"
        );
        let mut s = login(&server);
        let (bodies, result) = read_all(&mut s, &[(1, 90_000)]);
        assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");
        assert_eq!(bodies, [("(refused)".to_string(), None)]);
    }

    #[test]
    fn the_identity_is_the_listed_size_and_the_header_digest() {
        let server = format!(
            "{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\nA: 1\r\n\r\none\r\n..two\r\n.\r\n+OK 1 21\r\n"
        );
        let mut s = login(&server);
        let (bodies, result) = read_all(&mut s, &[(1, 21)]);
        result.unwrap();
        let mut head = HeadHasher::default();
        head.update(b"A: 1\n\n");
        let expected = Identity {
            size: 21,
            digest: head.finish(),
        };
        assert_eq!(
            bodies,
            [("A: 1\n\none\n.two\n".to_string(), Some(expected))]
        );
    }

    #[test]
    fn without_pipelining_the_list_fence_follows_each_body() {
        let mut c = client(
            "+OK hi\r\n-ERR no CAPA\r\n+OK\r\n+OK\r\n+OK\r\nx\r\n.\r\n+OK 1 3\r\n+OK\r\ny\r\n.\r\n+OK 2 3\r\n",
        );
        c.capabilities().unwrap();
        let mut s = c
            .login(Credentials::User {
                user: "u",
                password: "p",
            })
            .map_err(|f| f.error)
            .unwrap();
        let (bodies, result) = read_all(&mut s, &[(1, 3), (2, 3)]);
        result.unwrap();
        assert_eq!(bodies.len(), 2);
        assert_eq!(
            s.conn.io.get_ref().last_batches(4),
            ["RETR 1\r\n", "LIST 1\r\n", "RETR 2\r\n", "LIST 2\r\n"]
        );
    }

    #[test]
    fn truncated_body_is_a_lost_connection() {
        let server = format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\npartial\r\n");
        let mut s = login(&server);
        let err = s
            .retrieve(&[(1, 1)], |_, body| {
                let _ = io::copy(&mut body.unwrap(), &mut io::sink());
                Flow::Continue
            })
            .unwrap_err();
        assert!(matches!(err, Error::Lost { .. }), "{err:?}");
    }

    #[test]
    fn without_pipelining_one_command_at_a_time() {
        let mut c = client(
            "+OK hi\r\n-ERR no CAPA\r\n+OK\r\n+OK\r\n+OK\r\n1 a\r\n.\r\n+OK\r\n1 5\r\n.\r\n",
        );
        assert!(!c.capabilities().unwrap().known);
        let mut s = c
            .login(Credentials::User {
                user: "u",
                password: "p",
            })
            .map_err(|f| f.error)
            .unwrap();
        s.listing().unwrap();
        assert!(s.conn.io.get_ref().written().ends_with("UIDL\r\nLIST\r\n"));
    }

    #[test]
    fn listings_in_different_orders_are_joined_by_number() {
        let uids = vec![(2, "b".to_string()), (1, "a".to_string())];
        let joined = join(uids, &[(1, 10), (2, 20)]).unwrap();
        assert_eq!(joined[0].uid, "a");
        assert_eq!(joined[0].size, 10);
        assert_eq!(joined[1].uid, "b");
        assert_eq!(joined[1].size, 20);
        let err = join(vec![(1, "a".to_string())], &[(1, 10), (2, 20)]).unwrap_err();
        assert!(err.to_string().contains("LIST names message 2"), "{err}");
    }

    #[test]
    fn login_failure_keeps_the_client_and_its_code() {
        let mut c = client("+OK hi\r\n-ERR\r\n+OK\r\n-ERR [IN-USE] locked\r\n");
        c.capabilities().unwrap();
        let Err(failed) = c.login(Credentials::User {
            user: "u",
            password: "secret",
        }) else {
            panic!("login should fail");
        };
        assert_eq!(failed.error.kind(), super::super::ErrorKind::Temporary);
        assert!(!failed.error.to_string().contains("secret"));
    }

    #[test]
    fn apop_digest_matches_rfc_example() {
        // RFC 1939 §7's worked example.
        let mut c = client("+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n+OK\r\n");
        c.authenticate(Credentials::Apop {
            user: "mrose",
            password: "tanstaaf",
        })
        .unwrap();
        assert!(c
            .conn
            .io
            .get_ref()
            .written()
            .ends_with("APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"));
    }

    #[test]
    fn apop_without_valid_timestamp_is_refused_before_sending() {
        let mut c = client("+OK ready <bad>\r\n");
        let err = c
            .authenticate(Credentials::Apop {
                user: "u",
                password: "p",
            })
            .unwrap_err();
        assert!(matches!(err, Error::Refused(_)));
        assert!(c.conn.io.get_ref().written().is_empty());
    }

    #[test]
    fn sasl_plain_with_initial_response() {
        let mut c = client("+OK hi\r\n+OK Logged in.\r\n");
        c.authenticate(Credentials::Sasl {
            mechanism: Mechanism::Plain,
            user: "tim",
            secret: "tanstaaf",
            peer: Peer {
                host: "h".into(),
                port: 110,
            },
        })
        .unwrap();
        assert!(c
            .conn
            .io
            .get_ref()
            .written()
            .ends_with("AUTH PLAIN AHRpbQB0YW5zdGFhZg==\r\n"));
    }

    #[test]
    fn sasl_login_answers_challenges_and_cancels_on_garbage() {
        let mut c = client("+OK hi\r\n+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n-ERR [AUTH] no\r\n");
        let creds = Credentials::Sasl {
            mechanism: Mechanism::Login,
            user: "u",
            secret: "p",
            peer: Peer {
                host: "h".into(),
                port: 110,
            },
        };
        let err = c.authenticate(creds.clone()).unwrap_err();
        assert_eq!(err.kind(), super::super::ErrorKind::Auth);
        assert!(c
            .conn
            .io
            .get_ref()
            .written()
            .ends_with("AUTH LOGIN\r\ndQ==\r\ncA==\r\n"));
        let mut c = client("+OK hi\r\n+ !!!\r\n");
        assert!(c.authenticate(creds).is_err());
        assert!(c.conn.io.get_ref().written().ends_with("*\r\n"));
    }

    #[test]
    fn stls_refuses_injected_bytes() {
        let c = client("+OK hi\r\n+OK\r\nSTLS\r\n.\r\n+OK begin\r\n+OK injected\r\n");
        let err = c.starttls(Ok).map(drop).unwrap_err();
        assert!(matches!(err, Error::StlsInjection), "{err:?}");
    }

    #[test]
    fn stls_missing_from_capa_sends_nothing_more() {
        let c = client("+OK hi\r\n+OK\r\nUSER\r\n.\r\n");
        let err = c.starttls(Ok).map(drop).unwrap_err();
        assert!(matches!(err, Error::StlsUnavailable));
    }

    #[test]
    fn stls_forgets_capabilities() {
        let c = client("+OK hi\r\n+OK\r\nSTLS\r\n.\r\n+OK go\r\n");
        let mut c = c
            .starttls(|mut s| {
                s.feed("+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n");
                Ok(s)
            })
            .unwrap();
        let caps = c.capabilities().unwrap();
        assert!(!caps.stls);
        assert_eq!(caps.sasl, ["PLAIN"]);
        assert!(c
            .conn
            .io
            .get_ref()
            .written()
            .ends_with("CAPA\r\nSTLS\r\nCAPA\r\n"));
    }

    #[test]
    fn overlong_line_is_refused() {
        let long = "x".repeat(MAX_LINE + 10);
        let err = Client::new(MockStream::new(&format!("+OK {long}\r\n")), None)
            .map(drop)
            .unwrap_err();
        assert!(matches!(err, Error::Protocol(_)));
    }

    /// A server that says `head`, then sends well-formed listing lines for ever,
    /// counting the bytes it sent; whatever the client writes is kept.
    struct Endless {
        head: io::Cursor<Vec<u8>>,
        next: u64,
        line: Vec<u8>,
        at: usize,
        sent: u64,
        written: Vec<u8>,
    }

    impl Endless {
        fn new(head: &str) -> Endless {
            Endless {
                head: io::Cursor::new(head.as_bytes().to_vec()),
                next: 1,
                line: Vec::new(),
                at: 0,
                sent: 0,
                written: Vec::new(),
            }
        }
    }

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.head.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            let mut n = 0;
            while n < buf.len() {
                if self.at == self.line.len() {
                    self.line = format!("{} {}00\r\n", self.next, self.next).into_bytes();
                    self.next += 1;
                    self.at = 0;
                }
                let take = (self.line.len() - self.at).min(buf.len() - n);
                buf[n..n + take].copy_from_slice(&self.line[self.at..self.at + take]);
                self.at += take;
                n += take;
            }
            self.sent += n as u64;
            Ok(n)
        }
    }

    impl Write for Endless {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Wire for Endless {}

    fn endless_session(head: &str) -> Session<Endless> {
        let mut c = Client::new(Endless::new(head), None).unwrap();
        c.capabilities().unwrap();
        c.round_trip = Some(Duration::ZERO);
        c.login(Credentials::User {
            user: "u",
            password: "p",
        })
        .map_err(|f| f.error)
        .unwrap()
    }

    #[test]
    fn an_endless_uidl_listing_is_refused_early_and_closes_without_quit() {
        let mut s = endless_session(&format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n"));
        let err = s.listing_sized(&|_| true).unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err}");
        assert_eq!(err.kind(), super::super::ErrorKind::Protocol);
        // Refused at the cap, not after whatever the server could send.
        let sent = s.conn.io.get_ref().sent;
        let lines = s.conn.io.get_ref().next - 1;
        assert!(lines <= MAX_LISTED as u64 + (READ_BUFFER as u64), "{lines}");
        assert!(
            sent < (MAX_LISTING_BYTES + 2 * READ_BUFFER) as u64,
            "{sent}"
        );
        let written = s.conn.io.get_ref().written.len();
        assert!(matches!(s.quit(), Err(Error::Unusable { .. })));
        assert_eq!(written, "CAPA\r\nUSER u\r\nPASS p\r\nUIDL\r\n".len());
    }

    #[test]
    fn an_endless_list_is_refused_past_the_uidl_count() {
        let server = format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n+OK\r\n");
        let mut s = endless_session(&server);
        let err = s.listing().unwrap_err();
        assert!(err.to_string().contains("past 2 lines"), "{err}");
        assert!(s.conn.io.get_ref().sent < 2 * READ_BUFFER as u64);
    }

    #[test]
    fn an_endless_capa_is_refused() {
        let mut c = Client::new(Endless::new("+OK hi\r\n+OK\r\n"), None).unwrap();
        let err = c.capabilities().unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("past {MAX_CAPA_LINES} lines")),
            "{err}"
        );
        assert!(c.conn.io.get_ref().sent < 2 * READ_BUFFER as u64);
    }

    #[test]
    fn an_overlong_listing_line_is_refused() {
        let long = "x".repeat(MAX_LISTING_LINE);
        let server = format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\n+OK\r\n1 {long}\r\n.\r\n");
        let mut s = login_fast(&server);
        let err = s.listing_sized(&|_| false).unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err}");
    }

    #[test]
    fn after_a_lost_connection_quit_sends_nothing() {
        // The server goes away after PASS: the login fails, and the polite QUIT
        // that follows must not be sent (a timed-out server would make it wait a
        // second timeout).
        let mut c = client(GREETING_AND_CAPA);
        c.capabilities().unwrap();
        let failed = c
            .login(Credentials::User {
                user: "u",
                password: "p",
            })
            .map(drop)
            .unwrap_err();
        assert!(matches!(failed.error, Error::Lost { .. }));
        let before = failed.client.conn.io.get_ref().written().to_string();
        assert!(before.ends_with("USER u\r\n"), "{before}");
        let mut client = failed.client;
        assert!(matches!(
            client.conn.send(Command::Noop),
            Err(Error::Unusable { .. })
        ));
        assert_eq!(client.conn.io.get_ref().written(), before);
        assert!(matches!(client.quit(), Err(Error::Unusable { .. })));
    }

    #[test]
    fn after_a_garbled_reply_the_session_quits_without_a_word() {
        let server = format!("{GREETING_AND_CAPA}+OK\r\n+OK\r\nnonsense\r\n+OK bye\r\n");
        let mut s = login_fast(&server);
        assert!(matches!(s.stat(), Err(Error::Protocol(_))));
        assert!(matches!(s.quit(), Err(Error::Unusable { .. })));
    }
}
