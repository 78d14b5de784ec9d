//! A blocking IMAP4rev1 client over any `Read + Write` stream, for appending
//! messages: a [`Client`] greets, learns the capabilities and runs STARTTLS
//! (RFC 3501 §6.2.1); only logging in makes it a [`Session`], which creates,
//! examines and searches folders and appends to them.

mod conn;

use std::io::{Read, Write};

use base64::Engine;

use super::proto::command::{self, Arg};
use super::proto::response::{self, Response, Status, StatusLine};
use super::Error;
use conn::{Conn, Data};

/// What the server said it can do, upper-cased (RFC 3501 §7.2.1).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Capabilities(Vec<String>);

impl Capabilities {
    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.iter().any(|c| c == name)
    }
}

/// A connection not logged in yet.
pub(crate) struct Client<S> {
    conn: Conn<S>,
    capabilities: Capabilities,
    /// The greeting was PREAUTH: logged in already (RFC 3501 §7.1.4).
    preauth: bool,
}

impl<S: Read + Write> Client<S> {
    /// Reads the server's greeting (RFC 3501 §7.1) and its capabilities.
    pub(crate) fn greet(stream: S) -> Result<Client<S>, Error> {
        let mut conn = Conn::new(stream);
        let line = match conn.read_response()? {
            Response::Condition(line) => line,
            _ => return Err(Error::NoGreeting),
        };
        let preauth = match line.status {
            Status::Ok => false,
            Status::Preauth => true,
            Status::Bye => return Err(Error::Bye(line.text)),
            _ => return Err(Error::NoGreeting),
        };
        let mut client = Client {
            conn,
            capabilities: Capabilities::default(),
            preauth,
        };
        match line.code.filter(|c| c.is("CAPABILITY")) {
            Some(code) => client.set(response::capabilities(code.args.as_bytes())),
            None => client.capability()?,
        }
        Ok(client)
    }

    #[cfg(test)]
    pub(crate) fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Logged in by the greeting: no password is needed.
    pub(crate) fn is_preauth(&self) -> bool {
        self.preauth
    }

    fn set(&mut self, list: Vec<String>) {
        self.capabilities = Capabilities(list);
        self.conn.literal_plus = self.capabilities.has("LITERAL+");
    }

    /// Asks for the capabilities again.
    pub(crate) fn capability(&mut self) -> Result<(), Error> {
        let list = capability(&mut self.conn)?;
        self.set(list);
        Ok(())
    }

    /// Asks to start TLS (RFC 3501 §6.2.1); the caller then runs the handshake
    /// with [`Client::upgrade`]. Never a fallback: not offered is an error.
    pub(crate) fn starttls(&mut self) -> Result<(), Error> {
        if !self.capabilities.has("STARTTLS") {
            return Err(Error::NoStarttls);
        }
        let mut data = Data::default();
        let tag = self.conn.send("STARTTLS", &[], &mut data)?;
        self.conn.complete(&tag, "STARTTLS", &mut data)?;
        if self.conn.has_unread() {
            return Err(Error::Injected);
        }
        Ok(())
    }

    /// Runs `secure` over the stream (the TLS handshake after STARTTLS), then
    /// asks for the capabilities again: those said in clear count no more
    /// (RFC 3501 §6.2.1).
    pub(crate) fn upgrade<E: From<Error>>(
        self,
        secure: impl FnOnce(S) -> Result<S, E>,
    ) -> Result<Client<S>, E> {
        let Client { conn, preauth, .. } = self;
        let mut client = Client {
            conn: conn.map_stream(secure)?,
            capabilities: Capabilities::default(),
            preauth,
        };
        client.capability()?;
        Ok(client)
    }

    /// Logs in: AUTHENTICATE PLAIN (RFC 4616; its initial response in the command
    /// with SASL-IR, RFC 4959) when offered, else LOGIN unless LOGINDISABLED.
    /// `password` is never kept.
    pub(crate) fn login(mut self, user: &str, password: &str) -> Result<Session<S>, Error> {
        if self.preauth {
            return Ok(self.into_session());
        }
        let mut data = Data::default();
        if self.capabilities.has("AUTH=PLAIN") {
            let mut plain = Vec::with_capacity(user.len() + password.len() + 2);
            plain.push(0);
            plain.extend_from_slice(user.as_bytes());
            plain.push(0);
            plain.extend_from_slice(password.as_bytes());
            let encoded = base64::engine::general_purpose::STANDARD.encode(&plain);
            let tag = if self.capabilities.has("SASL-IR") {
                self.conn.send(
                    "AUTHENTICATE",
                    &[Arg::Text(format!("PLAIN {encoded}"))],
                    &mut data,
                )?
            } else {
                let tag =
                    self.conn
                        .send("AUTHENTICATE", &[Arg::Text("PLAIN".into())], &mut data)?;
                self.conn.wait_continue(&tag, "AUTHENTICATE", &mut data)?;
                self.conn.write(format!("{encoded}\r\n").as_bytes())?;
                self.conn.flush()?;
                tag
            };
            self.conn.complete(&tag, "AUTHENTICATE", &mut data)?;
        } else if self.capabilities.has("LOGINDISABLED") {
            return Err(Error::LoginDisabled);
        } else {
            let args = [
                command::astring(user.as_bytes()),
                command::astring(password.as_bytes()),
            ];
            let tag = self.conn.send("LOGIN", &args, &mut data)?;
            self.conn.complete(&tag, "LOGIN", &mut data)?;
        }
        // What is offered may grow after login (RFC 3501 §6.2.3): the OK's code
        // says so, or we ask.
        match data.capabilities {
            Some(list) => self.set(list),
            None => self.capability()?,
        }
        Ok(self.into_session())
    }

    fn into_session(self) -> Session<S> {
        Session {
            conn: self.conn,
            capabilities: self.capabilities,
        }
    }
}

fn capability<S: Read + Write>(conn: &mut Conn<S>) -> Result<Vec<String>, Error> {
    let mut data = Data::default();
    let tag = conn.send("CAPABILITY", &[], &mut data)?;
    conn.complete(&tag, "CAPABILITY", &mut data)?;
    data.capabilities.ok_or(Error::NoCapabilities)
}

/// A message to append: its bytes (CRLF line endings), their exact number, and
/// the INTERNALDATE to give it.
pub(crate) struct Outgoing<'a> {
    pub body: &'a mut dyn Read,
    pub size: u64,
    /// `date-time` of RFC 3501 §9 (see [`command::date_time`]).
    pub date: Option<String>,
}

/// A logged-in connection.
pub(crate) struct Session<S> {
    conn: Conn<S>,
    capabilities: Capabilities,
}

impl<S: Read + Write> Session<S> {
    pub(crate) fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// What the client wrote, in tests.
    #[cfg(test)]
    pub(crate) fn stream(&self) -> &S {
        self.conn.stream()
    }

    /// Runs a command without literals to its end.
    fn simple(&mut self, command: &'static str, args: &[Arg]) -> Result<Data, Error> {
        let mut data = Data::default();
        let tag = self.conn.send(command, args, &mut data)?;
        self.conn.complete(&tag, command, &mut data)?;
        Ok(data)
    }

    /// Whether the folder (its wire name, modified UTF-7) exists: STATUS succeeds
    /// on it (RFC 3501 §6.3.10). A NO says it does not, or cannot be seen.
    pub(crate) fn exists(&mut self, folder: &str) -> Result<bool, Error> {
        let args = [
            command::astring(folder.as_bytes()),
            Arg::Text("(UIDVALIDITY)".into()),
        ];
        match self.simple("STATUS", &args) {
            Ok(_) => Ok(true),
            Err(Error::Refused { line, .. }) if line.status == Status::No => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The size and the Message-ID header field of the message with this UID in
    /// the examined folder (RFC 3501 §6.4.8 UID FETCH, §6.4.5 BODY.PEEK, which
    /// leaves its \Seen flag alone).
    pub(crate) fn uid_fetch_id(&mut self, uid: u32) -> Result<Vec<response::Fetched>, Error> {
        let args = [
            Arg::Text("FETCH".into()),
            Arg::Text(uid.to_string()),
            Arg::Text("(RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])".into()),
        ];
        Ok(self.simple("UID", &args)?.fetched)
    }

    /// The server's hierarchy delimiter: `LIST "" ""` (RFC 3501 §6.3.8) answers
    /// with it alone; `None` for a flat namespace.
    pub(crate) fn delimiter(&mut self) -> Result<Option<u8>, Error> {
        let empty = command::astring(b"");
        let data = self.simple("LIST", &[empty.clone(), empty])?;
        Ok(data.delimiter.flatten())
    }

    /// Creates a folder (RFC 3501 §6.3.3); one that exists already
    /// (`[ALREADYEXISTS]`, RFC 5530) is no error.
    pub(crate) fn create(&mut self, folder: &str) -> Result<(), Error> {
        match self.simple("CREATE", &[command::astring(folder.as_bytes())]) {
            Err(Error::Refused { line, .. })
                if line.code.as_ref().is_some_and(|c| c.is("ALREADYEXISTS")) =>
            {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    /// Selects a folder read-only (RFC 3501 §6.3.2) and returns its UIDVALIDITY.
    pub(crate) fn examine(&mut self, folder: &str) -> Result<Option<u32>, Error> {
        let data = self.simple("EXAMINE", &[command::astring(folder.as_bytes())])?;
        Ok(data.uid_validity)
    }

    /// `UID SEARCH` (RFC 3501 §6.4.4, §6.4.8) in the examined folder: the UIDs
    /// of what matches `criteria`.
    pub(crate) fn uid_search(&mut self, criteria: &[Arg]) -> Result<Vec<u32>, Error> {
        let mut args = vec![Arg::Text("SEARCH".into())];
        args.extend_from_slice(criteria);
        let data = self.simple("UID", &args)?;
        Ok(data.found)
    }

    /// Appends messages to a folder in one command, without flags (MULTIAPPEND,
    /// RFC 3502): all of them or none (§6.3.11). The OK's APPENDUID (RFC 4315)
    /// says where each landed; `None` for each where it did not.
    pub(crate) fn append_all(
        &mut self,
        folder: &str,
        messages: &mut [Outgoing<'_>],
    ) -> Result<Vec<Option<(u32, u32)>>, Error> {
        let mut data = Data::default();
        let tag = self.conn.tag();
        self.conn
            .write(format!("{tag} APPEND {}", mailbox(folder)?).as_bytes())?;
        for message in messages.iter_mut() {
            self.write_message(&tag, message, &mut data)?;
        }
        self.conn.write(b"\r\n")?;
        self.conn.flush()?;
        let line = self.conn.complete(&tag, "APPEND", &mut data)?;
        let landed = line
            .code
            .as_ref()
            .and_then(|code| response::append_uid(code, messages.len()));
        Ok(match landed {
            Some((validity, uids)) => uids.into_iter().map(|uid| Some((validity, uid))).collect(),
            None => vec![None; messages.len()],
        })
    }

    /// Appends each message with its own APPEND, without flags, all written
    /// before the replies are read when LITERAL+ (RFC 7888) spares waiting for
    /// each `+`. Returns each message's own outcome, in order: where it landed
    /// (APPENDUID, RFC 4315) or the server's refusal. A failure of the connection
    /// ends the list: the outcome of that message and of those after it is not
    /// known.
    pub(crate) fn append_each(
        &mut self,
        folder: &str,
        messages: &mut [Outgoing<'_>],
    ) -> Vec<Result<Option<(u32, u32)>, Error>> {
        let mailbox = match mailbox(folder) {
            Ok(mailbox) => mailbox,
            Err(e) => return vec![Err(e)],
        };
        let pipelined = self.conn.literal_plus;
        let mut data = Data::default();
        let mut waiting = Vec::new();
        let mut outcomes = Vec::with_capacity(messages.len());
        for message in messages.iter_mut() {
            let tag = self.conn.tag();
            let sent = self
                .conn
                .write(format!("{tag} APPEND {mailbox}").as_bytes())
                .and_then(|()| self.write_message(&tag, message, &mut data))
                .and_then(|()| self.conn.write(b"\r\n"))
                .and_then(|()| self.conn.flush());
            match sent {
                Ok(()) if pipelined => waiting.push(tag),
                Ok(()) => outcomes.push(self.conn.complete(&tag, "APPEND", &mut data)),
                // Refused at the `+` (RFC 3501 §7.5): that command is over and
                // the next message may still go.
                Err(e @ Error::Refused { .. }) => outcomes.push(Err(e)),
                Err(e) => {
                    outcomes.extend(self.replies(waiting, &mut data));
                    outcomes.push(Err(e));
                    return landed(outcomes);
                }
            }
            if outcomes
                .last()
                .is_some_and(|o| o.as_ref().is_err_and(|e| !e.is_refusal()))
            {
                return landed(outcomes);
            }
        }
        outcomes.extend(self.replies(waiting, &mut data));
        landed(outcomes)
    }

    /// The replies to pipelined APPENDs, in order, up to the first failure of
    /// the connection.
    fn replies(&mut self, tags: Vec<String>, data: &mut Data) -> Vec<Result<StatusLine, Error>> {
        let mut replies = Vec::with_capacity(tags.len());
        for tag in tags {
            let reply = self.conn.complete(&tag, "APPEND", data);
            let broken = reply.as_ref().is_err_and(|e| !e.is_refusal());
            replies.push(reply);
            if broken {
                break;
            }
        }
        replies
    }

    /// ` [date-time] {size}` and the body: one message of an APPEND.
    fn write_message(
        &mut self,
        tag: &str,
        message: &mut Outgoing<'_>,
        data: &mut Data,
    ) -> Result<(), Error> {
        if let Some(date) = &message.date {
            self.conn.write(b" ")?;
            self.conn.write(date.as_bytes())?;
        }
        self.conn.write(b" ")?;
        self.conn.start_literal(tag, "APPEND", message.size, data)?;
        self.conn.write_body(message.body, message.size)
    }

    /// Says goodbye (RFC 3501 §6.1.3).
    pub(crate) fn logout(&mut self) -> Result<(), Error> {
        let mut data = Data::default();
        let tag = self.conn.send("LOGOUT", &[], &mut data)?;
        match self.conn.complete(&tag, "LOGOUT", &mut data) {
            // The BYE before the OK is what LOGOUT asks for.
            Err(Error::Bye(_)) | Err(Error::Closed) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

/// A folder's wire name as an astring in the command line: a name in modified
/// UTF-7 is 7-bit and printable, so never needs a literal.
fn mailbox(folder: &str) -> Result<String, Error> {
    match command::astring(folder.as_bytes()) {
        Arg::Text(text) => Ok(text),
        Arg::Literal(_) => Err(Error::FolderName),
    }
}

/// Each outcome with the APPENDUID of its OK (RFC 4315), up to the first
/// failure of the connection, which ends the list.
fn landed(outcomes: Vec<Result<StatusLine, Error>>) -> Vec<Result<Option<(u32, u32)>, Error>> {
    let mut landed = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        let broken = outcome.as_ref().is_err_and(|e| !e.is_refusal());
        landed.push(outcome.map(|line| {
            line.code
                .as_ref()
                .and_then(|code| response::append_uid(code, 1))
                .map(|(validity, uids)| (validity, uids[0]))
        }));
        if broken {
            break;
        }
    }
    landed
}

#[cfg(test)]
mod tests;
