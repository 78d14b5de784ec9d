//! The blocking SMTP/LMTP conversation over any byte stream: the greeting, EHLO or
//! LHLO, STARTTLS's first half, AUTH, and one mail transaction per message, its
//! commands pipelined (RFC 2920) where offered and its body streamed.

use std::io::{self, BufRead, BufReader, Read, Write};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::proto::{parse_line, path, DataEncoder, Extensions, Line, Reply, MAX_LINE, MAX_LINES};

/// Which of the two protocols: they differ in the greeting verb and in LMTP's one
/// reply per recipient after the data (RFC 2033 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Smtp,
    Lmtp,
}

/// What can go wrong in the conversation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("the connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    /// A reply other than the one hoped for.
    #[error("the server refused {step}: {}", reply.shown())]
    Refused { step: &'static str, reply: Reply },
    /// AUTH offers neither PLAIN nor LOGIN (RFC 4954 §4).
    #[error("it offers AUTH {} only, and popfetch logs in with PLAIN or LOGIN", .0.join(" "))]
    NoMechanism(Vec<String>),
}

/// A failed transaction: the message could not be read, or the server failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// Reading the message failed; the data was not ended, so the server drops the
    /// transaction when the connection closes. The client is unusable.
    #[error("the message could not be read")]
    Source(#[source] io::Error),
    #[error(transparent)]
    Server(#[from] Error),
}

/// The bytes written at a time while streaming a message.
const CHUNK: usize = 64 * 1024;

/// A conversation with an SMTP or LMTP server.
pub(crate) struct Client<S: Read + Write> {
    reader: BufReader<S>,
    dialect: Dialect,
    extensions: Extensions,
}

impl<S: Read + Write> Client<S> {
    /// Reads the server's greeting: 220, else the server does not take mail now.
    pub(crate) fn greet(stream: S, dialect: Dialect) -> Result<Client<S>, Error> {
        let mut client = Client {
            reader: BufReader::with_capacity(16 * 1024, stream),
            dialect,
            extensions: Extensions::default(),
        };
        let greeting = client.read_reply()?;
        if greeting.code != 220 {
            return Err(Error::Refused {
                step: "the connection",
                reply: greeting,
            });
        }
        Ok(client)
    }

    /// Goes on over a stream that STARTTLS secured: no greeting comes, and what
    /// was learnt before it is forgotten (RFC 3207 §4.2).
    pub(crate) fn resume(stream: S, dialect: Dialect) -> Client<S> {
        Client {
            reader: BufReader::with_capacity(16 * 1024, stream),
            dialect,
            extensions: Extensions::default(),
        }
    }

    /// Says LHLO or EHLO (RFC 5321 §4.1.1.1) and reads the extensions offered.
    /// An SMTP server that does not know EHLO is greeted with HELO.
    pub(crate) fn hello(&mut self, name: &str) -> Result<(), Error> {
        let verb = match self.dialect {
            Dialect::Smtp => "EHLO",
            Dialect::Lmtp => "LHLO",
        };
        let reply = self.command(&format!("{verb} {name}\r\n"))?;
        if reply.is_positive() {
            self.extensions = Extensions::of(&reply);
            return Ok(());
        }
        if self.dialect == Dialect::Smtp && reply.code / 100 == 5 {
            let reply = self.command(&format!("HELO {name}\r\n"))?;
            if reply.is_positive() {
                self.extensions = Extensions::default();
                return Ok(());
            }
            return Err(Error::Refused {
                step: "HELO",
                reply,
            });
        }
        Err(Error::Refused { step: verb, reply })
    }

    /// The stream under the conversation, to adjust its timeouts.
    pub(crate) fn stream_mut(&mut self) -> &mut S {
        self.reader.get_mut()
    }

    pub(crate) fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Asks for TLS (RFC 3207 §4) and hands back the stream for the handshake.
    /// Bytes the server sent after its 220 would be read as if they came through
    /// TLS, so they end the conversation instead (the command injection of
    /// CVE-2011-0411).
    pub(crate) fn start_tls(mut self) -> Result<S, Error> {
        let reply = self.command("STARTTLS\r\n")?;
        if reply.code != 220 {
            return Err(Error::Refused {
                step: "STARTTLS",
                reply,
            });
        }
        if !self.reader.buffer().is_empty() {
            return Err(Error::Protocol(
                "it sent more after agreeing to STARTTLS".into(),
            ));
        }
        Ok(self.reader.into_inner())
    }

    /// Logs in (RFC 4954) with PLAIN where offered, else LOGIN. The password never
    /// appears in an error: a refusal shows the server's reply only.
    pub(crate) fn auth(&mut self, user: &str, password: &str) -> Result<(), Error> {
        let offered = |name: &str| self.extensions.auth.iter().any(|m| m == name);
        if !offered("PLAIN") && !offered("LOGIN") {
            return Err(Error::NoMechanism(self.extensions.auth.clone()));
        }
        let reply = if offered("PLAIN") {
            let token = BASE64.encode(format!("\0{user}\0{password}"));
            self.command(&format!("AUTH PLAIN {token}\r\n"))?
        } else {
            let mut reply = self.command("AUTH LOGIN\r\n")?;
            for answer in [user, password] {
                if reply.code != 334 {
                    break;
                }
                reply = self.command(&format!("{}\r\n", BASE64.encode(answer)))?;
            }
            reply
        };
        if reply.code == 235 {
            Ok(())
        } else {
            Err(Error::Refused {
                step: "the login",
                reply,
            })
        }
    }

    /// One mail transaction (RFC 5321 §3.3): MAIL, RCPT and DATA, in one write where
    /// the server pipelines; then the message, encoded as it is read; then the
    /// server's verdict on it (LMTP's reply for the one recipient). Returns the
    /// bytes read from `message`. `size` is the size the message is expected to
    /// have (RFC 1870 §6 asks for an estimate where the exact size is unknown).
    pub(crate) fn send(
        &mut self,
        sender: &str,
        recipient: &str,
        message: &mut dyn Read,
        size: Option<u64>,
    ) -> Result<u64, SendError> {
        let mut mail = format!("MAIL FROM:{}", path(sender));
        if self.extensions.eight_bit {
            mail.push_str(" BODY=8BITMIME");
        }
        if let (Some(size), Some(_)) = (size, self.extensions.size) {
            mail.push_str(&format!(" SIZE={size}"));
        }
        mail.push_str("\r\n");
        let commands = [
            ("MAIL FROM", mail),
            ("RCPT TO", format!("RCPT TO:{}\r\n", path(recipient))),
            ("DATA", "DATA\r\n".to_string()),
        ];
        let mut refused = None;
        if self.extensions.pipelining {
            let all: String = commands.iter().map(|(_, c)| c.as_str()).collect();
            self.write(all.as_bytes())?;
            for (step, _) in &commands {
                let reply = self.read_reply()?;
                let wanted = if *step == "DATA" { 354 } else { 250 };
                if reply.code / 100 != wanted / 100 && refused.is_none() {
                    refused = Some(Error::Refused { step, reply });
                } else if *step == "DATA" && reply.code == 354 && refused.is_some() {
                    // RFC 2920 §3.1: a server may still ask for the data; end it empty.
                    self.command(".\r\n")?;
                }
            }
        } else {
            for (step, command) in &commands {
                let reply = self.command(command)?;
                let wanted = if *step == "DATA" { 354 } else { 250 };
                if reply.code / 100 != wanted / 100 {
                    refused = Some(Error::Refused { step, reply });
                    break;
                }
            }
        }
        if let Some(refused) = refused {
            self.reset();
            return Err(refused.into());
        }
        let taken = self.data(message)?;
        let verdict = self.read_reply()?;
        if verdict.is_positive() {
            Ok(taken)
        } else {
            self.reset();
            Err(Error::Refused {
                step: "the message",
                reply: verdict,
            }
            .into())
        }
    }

    /// Streams the message as DATA, ending it with "." only once it was read whole.
    fn data(&mut self, message: &mut dyn Read) -> Result<u64, SendError> {
        let mut encoder = DataEncoder::default();
        let mut input = vec![0; CHUNK];
        let mut out = Vec::with_capacity(CHUNK + CHUNK / 8);
        loop {
            let n = match message.read(&mut input) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SendError::Source(e)),
            };
            encoder.encode(&input[..n], &mut out);
            if out.len() >= CHUNK {
                self.write(&out)?;
                out.clear();
            }
        }
        encoder.finish(&mut out);
        self.write(&out)?;
        Ok(encoder.taken)
    }

    /// Ends a failed transaction so the next can start (RFC 5321 §4.1.1.5); a
    /// failure here surfaces with the next command.
    fn reset(&mut self) {
        let _ = self.command("RSET\r\n");
    }

    /// Says goodbye (RFC 5321 §4.1.1.10), not waiting long for the answer.
    pub(crate) fn quit(mut self) {
        let _ = self.command("QUIT\r\n");
    }

    fn command(&mut self, line: &str) -> Result<Reply, Error> {
        self.write(line.as_bytes())?;
        self.read_reply()
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let stream = self.reader.get_mut();
        stream.write_all(bytes)?;
        stream.flush()?;
        Ok(())
    }

    /// Reads one reply, its lines bounded in length and number.
    fn read_reply(&mut self) -> Result<Reply, Error> {
        let mut lines = Vec::new();
        loop {
            if lines.len() == MAX_LINES {
                return Err(Error::Protocol(format!(
                    "a reply ran over {MAX_LINES} lines"
                )));
            }
            let line = self.read_line()?;
            match parse_line(&line) {
                Some(Line::More(_, text)) => lines.push(text.to_vec()),
                Some(Line::Last(code, text)) => {
                    lines.push(text.to_vec());
                    return Ok(Reply { code, lines });
                }
                None => {
                    return Err(Error::Protocol(format!(
                        "it sent \"{}\", not a reply",
                        crate::text::escape(&line)
                    )))
                }
            }
        }
    }

    /// One line without its CRLF (a bare LF is taken too), at most [`MAX_LINE`].
    fn read_line(&mut self) -> Result<Vec<u8>, Error> {
        let mut line = Vec::new();
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if available.is_empty() {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
            let (take, done) = match memchr::memchr(b'\n', available) {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            if line.len() + take > MAX_LINE + 2 {
                return Err(Error::Protocol(format!(
                    "a reply line ran over {MAX_LINE} bytes"
                )));
            }
            line.extend_from_slice(&available[..take]);
            self.reader.consume(take);
            if done {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::mock::MockStream;

    fn client(server: &str, dialect: Dialect) -> Client<MockStream> {
        let mut client = Client::greet(MockStream::new(server), dialect).unwrap();
        client.hello("me").unwrap();
        client
    }

    fn written(client: Client<MockStream>) -> String {
        client.reader.into_inner().written().to_string()
    }

    #[test]
    fn a_pipelined_lmtp_transaction_is_two_writes() {
        let server = "220 hi\r\n250-lmtp\r\n250-PIPELINING\r\n250 8BITMIME\r\n\
                      250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 <alice> saved\r\n";
        let mut c = client(server, Dialect::Lmtp);
        let n = c
            .send("a@b", "alice", &mut &b"Subject: x\n\n.dot\n"[..], Some(20))
            .unwrap();
        assert_eq!(n, 17);
        assert_eq!(
            written(c),
            "LHLO me\r\nMAIL FROM:<a@b> BODY=8BITMIME\r\nRCPT TO:<alice>\r\nDATA\r\n\
             Subject: x\r\n\r\n..dot\r\n.\r\n"
        );
    }

    #[test]
    fn without_pipelining_each_command_waits_and_a_refusal_resets() {
        let server =
            "220 hi\r\n250-mx\r\n250 SIZE 100\r\n250 ok\r\n550 5.1.1 no such user\r\n250 reset\r\n";
        let mut c = client(server, Dialect::Smtp);
        let err = c.send("", "bob", &mut &b"x\n"[..], Some(3)).unwrap_err();
        match err {
            SendError::Server(Error::Refused { step, reply }) => {
                assert_eq!(step, "RCPT TO");
                assert_eq!(reply.code, 550);
                assert_eq!(reply.shown(), "550 5.1.1 no such user");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            written(c),
            "EHLO me\r\nMAIL FROM:<> SIZE=3\r\nRCPT TO:<bob>\r\nRSET\r\n"
        );
    }

    #[test]
    fn a_deferred_message_is_transient() {
        let server =
            "220 hi\r\n250 mx\r\n250 ok\r\n250 ok\r\n354 go\r\n452 4.2.2 quota\r\n250 reset\r\n";
        let mut c = client(server, Dialect::Lmtp);
        let err = c.send("a@b", "alice", &mut &b"x\n"[..], None).unwrap_err();
        let SendError::Server(Error::Refused { step, reply }) = err else {
            panic!("{err:?}")
        };
        assert_eq!(step, "the message");
        assert!(reply.is_transient());
    }

    #[test]
    fn a_broken_source_never_ends_the_data() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
            }
        }
        let server = "220 hi\r\n250 mx\r\n250 ok\r\n250 ok\r\n354 go\r\n";
        let mut c = client(server, Dialect::Smtp);
        let err = c.send("a@b", "alice", &mut Broken, None).unwrap_err();
        assert!(matches!(err, SendError::Source(_)));
        assert!(!written(c).contains("\r\n.\r\n"));
    }

    #[test]
    fn hostile_replies_are_bounded() {
        let long = format!("220 {}\r\n", "x".repeat(MAX_LINE + 10));
        assert!(matches!(
            Client::greet(MockStream::new(&long), Dialect::Smtp),
            Err(Error::Protocol(_))
        ));
        let many = "220-x\r\n".repeat(MAX_LINES + 1);
        assert!(matches!(
            Client::greet(MockStream::new(&many), Dialect::Smtp),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            Client::greet(MockStream::new("hello\r\n"), Dialect::Smtp),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            Client::greet(MockStream::new("554 go away\r\n"), Dialect::Smtp),
            Err(Error::Refused { .. })
        ));
    }

    #[test]
    fn starttls_refuses_injected_bytes_and_auth_hides_the_password() {
        let c = client(
            "220 hi\r\n250 STARTTLS\r\n220 go\r\n250 injected\r\n",
            Dialect::Smtp,
        );
        assert!(matches!(c.start_tls(), Err(Error::Protocol(_))));
        let mut c = client("220 hi\r\n250-mx\r\n250 AUTH LOGIN\r\n334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n535 5.7.8 no\r\n", Dialect::Smtp);
        let err = c.auth("u", "secret").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(written(c).ends_with("AUTH LOGIN\r\ndQ==\r\nc2VjcmV0\r\n"));
        let mut c = client(
            "220 hi\r\n250-mx\r\n250 AUTH CRAM-MD5 GSSAPI\r\n",
            Dialect::Smtp,
        );
        let err = c.auth("u", "secret").unwrap_err();
        assert!(matches!(err, Error::NoMechanism(_)), "{err}");
        assert!(err.to_string().contains("CRAM-MD5 GSSAPI"), "{err}");
        let mut c = client(
            "220 hi\r\n250-mx\r\n250 AUTH PLAIN\r\n454 4.7.0 try later\r\n",
            Dialect::Smtp,
        );
        let Err(Error::Refused { reply, .. }) = c.auth("u", "secret") else {
            panic!("a refusal")
        };
        assert!(reply.is_transient());
    }
}
