//! A connection in the AUTHORIZATION state (RFC 1939 §4): the greeting, CAPA,
//! STLS (RFC 2595 §4) and login by USER/PASS, APOP (RFC 1939 §7) or SASL (RFC 5034).
//! Only a successful login turns a [`Client`] into a [`Session`], so no mailbox
//! command can be sent before it.

use std::io::{self, BufRead};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use md5::{Digest, Md5};

use super::connection::{Connection, Trace};
use super::session::Session;
use crate::net::Wire;
use crate::pop3::proto::capabilities::Capabilities;
use crate::pop3::proto::command::Command;
use crate::pop3::proto::response::{apop_timestamp, parse_status, Status};
use crate::pop3::proto::sasl::{ChannelBinding, Exchange, Mechanism, Peer};
use crate::pop3::proto::Error;

/// A round trip at least this long (timed on CAPA) makes UIDL and LIST go out
/// together: waiting for the unique-ids before asking for sizes would cost more
/// than the server spends listing sizes nobody needs (some 15 ms for 20,000
/// messages in Dovecot). Below it, LIST is asked only for what the plan needs.
pub(super) const SLOW_PATH: Duration = Duration::from_millis(10);

/// How to log in: RFC 1939 §7, or SASL (RFC 5034).
#[derive(Clone)]
pub(crate) enum Credentials<'a> {
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
        /// For SCRAM: the GS2 channel binding (RFC 5802 §6).
        binding: ChannelBinding,
    },
}

/// RFC 5034 §4: an AUTH command with its initial response must fit in this many
/// octets; a longer response waits for the server's empty challenge.
const MAX_AUTH_LINE: usize = 255;

/// A bound on challenge rounds, so a hostile server cannot keep us answering.
const MAX_SASL_ROUNDS: usize = 10;

/// A connection in the AUTHORIZATION state.
pub(crate) struct Client<S> {
    pub(super) conn: Connection<S>,
    greeting: Status,
    caps: Option<Capabilities>,
    /// How long CAPA took to answer: the path's round trip, near enough.
    pub(super) round_trip: Option<Duration>,
}

impl<S: Wire> Client<S> {
    /// Reads the greeting (RFC 1939 §4) from a fresh connection.
    pub(crate) fn new(stream: S, trace: Option<Trace>) -> Result<Self, Error> {
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

    pub(crate) fn greeting(&self) -> &Status {
        &self.greeting
    }

    /// The stream under the conversation, for a report of its TLS session.
    pub(crate) fn stream(&self) -> &S {
        self.conn.io.get_ref()
    }

    /// Adds a line to the trace, if there is one.
    pub(crate) fn note(&mut self, line: &str) {
        self.conn.note(|| line.to_string());
    }

    /// Whether CAPA's round trip was at least [`SLOW_PATH`].
    fn slow_path(&self) -> bool {
        self.round_trip.is_some_and(|t| t >= SLOW_PATH)
    }

    /// Asks CAPA once (RFC 2449 §5). A server that answers -ERR has no capabilities.
    pub(crate) fn capabilities(&mut self) -> Result<&Capabilities, Error> {
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
    pub(crate) fn starttls(
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
    pub(crate) fn login(mut self, creds: Credentials) -> Result<Session<S>, Box<LoginFailed<S>>> {
        if let Err(error) = self.authenticate(creds) {
            return Err(Box::new(LoginFailed {
                error,
                client: self,
            }));
        }
        let caps = self.caps.take().unwrap_or_default();
        let slow_path = self.slow_path();
        let mut session = Session::new(self.conn, caps.pipelining, slow_path);
        session.login_delay = caps.login_delay;
        Ok(session)
    }

    pub(super) fn authenticate(&mut self, creds: Credentials) -> Result<(), Error> {
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
                    Error::Refused("the server greeting has no valid APOP timestamp".into())
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
                binding,
            } => return self.sasl(Exchange::new(mechanism, user, secret, peer, binding)),
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
                } else if exchange.mechanism().binds_channel() && !exchange.past_client_first() {
                    // Refused on its GS2 header, before any proof: the binding
                    // type, not the password (RFC 5802 §7).
                    Err(Error::BindingRefused {
                        mechanism: name,
                        code: status.code,
                        text: status.text,
                    })
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
    pub(crate) fn quit(mut self) -> Result<(), Error> {
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
pub(crate) struct LoginFailed<S> {
    pub error: Error,
    pub client: Client<S>,
}
