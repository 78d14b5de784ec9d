//! Delivery into a folder of an IMAP server (`imap://USER@HOST[:PORT]/FOLDER`):
//! each message is spooled with CRLF line endings and staged; `flush` appends
//! the batch (RFC 3501 §6.3.11; several messages in one command with
//! MULTIAPPEND, RFC 3502) and learns from APPENDUID (RFC 4315) where each
//! landed. Recovery asks the server: the UID if it was told, else a SEARCH for
//! the Message-ID and the exact size.

mod location;
mod spool;

use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;

use super::{
    Announce, Class, Context, DeliverError, Delivery, Env, Kind, Landed, Recovered, Security, Spec,
    Target, TargetError,
};
use crate::imap::proto::command::{self, date_time, Arg};
use crate::imap::proto::utf7;
use crate::imap::{Client, Error as ProtocolError, Outgoing, Session};
use crate::net::{self, Stream, TlsConfig, TlsConfigError};
use location::Location;
use spool::{SpoolError, Spooled};

/// How many of a recovery search's hits are fetched and compared: more than one
/// same-sized message with the same Message-ID is a copy anyway.
const MAX_CHECKED: usize = 8;

/// `imap://USER@HOST[:PORT]/FOLDER`.
pub(crate) const KIND: Kind = Kind {
    name: "imap",
    takes: "//USER@HOST[:PORT]/FOLDER",
    parse: |rest, env| Ok(Delivery::new(parse(rest, env)?)),
};

/// Where messages go: a folder of a user's mailbox on a server.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImapSpec {
    user: String,
    host: String,
    /// Unset: 993 with implicit TLS, else 143.
    port: Option<u16>,
    /// As written, in UTF-8; `INBOX` when none is.
    folder: String,
}

fn parse(rest: &str, env: &Env) -> Result<ImapSpec, String> {
    let err = |why: &str| env.invalid(format!("{why}; use \"imap://USER@HOST[:PORT]/FOLDER\""));
    let rest = rest
        .strip_prefix("//")
        .ok_or_else(|| err("no \"//\" after \"imap:\""))?;
    let (authority, folder) = rest.split_once('/').unwrap_or((rest, ""));
    // A user that is an email address may keep its '@': the last one ends it.
    let (user, server) = authority
        .rsplit_once('@')
        .ok_or_else(|| err("no USER@ before the host"))?;
    let user = percent_decode(user).ok_or_else(|| err("the user is not percent-encoded UTF-8"))?;
    let (host, port) = match server.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| err("no ']' after the IPv6 address"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| err("junk after ']'"))?,
                    ),
                ),
            }
        }
        None => match server.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (server, None),
        },
    };
    let port = match port {
        None => None,
        Some(port) => Some(
            port.parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| err("the port is not a number from 1 to 65535"))?,
        ),
    };
    if user.is_empty() || user.contains(['\r', '\n', '\0']) {
        return Err(err("no user"));
    }
    let bad_host = |c: char| c.is_whitespace() || c.is_control() || "/@[]%".contains(c);
    if host.is_empty()
        || host.contains(bad_host)
        || (host.contains(':') && !server.starts_with('['))
    {
        return Err(err("no host name or address"));
    }
    if folder.contains(|c: char| c.is_control()) {
        return Err(err("a control character in the folder"));
    }
    let folder = if folder.is_empty() { "INBOX" } else { folder };
    Ok(ImapSpec {
        user,
        host: host.to_string(),
        port,
        folder: folder.to_string(),
    })
}

/// `%XX` decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The user as a URL writes it (RFC 3986 §3.2.1): what would end it or read as
/// an escape, percent-encoded.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl fmt::Display for ImapSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}@", KIND.name, percent_encode(&self.user))?;
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, "/{}", self.folder)
    }
}

impl ImapSpec {
    fn entry(&self) -> String {
        format!("{}@{}", self.user, self.host)
    }
}

impl ImapSpec {
    /// Connects and secures the connection as `imap_tls` says: TLS from the
    /// first byte, or STARTTLS required (never a cleartext fallback), or none
    /// only to this machine. Returns the client greeted, and HOST:PORT.
    fn connect(
        &self,
        context: &Context,
        route: &net::Route,
    ) -> Result<(Client<Stream>, String), ImapError> {
        let security = context.imap.security;
        if security == Security::Plain && !net::names_loopback(&self.host) {
            return Err(ImapError::Cleartext {
                server: self.host.clone(),
            });
        }
        let port = self.port.unwrap_or(match security {
            Security::Implicit => 993,
            _ => 143,
        });
        let server = format!("{}:{port}", self.host);
        let failed = |e: Setup| e.into_error(&server, &self.user);
        let tls = match security {
            Security::Plain => None,
            _ => Some(TlsConfig::new(&context.imap.tls).map_err(ImapError::Tls)?),
        };
        let mut stream = Stream::connect_by(&self.host, port, context.timeout, route)
            .map_err(|e| failed(Setup::Net(e)))?;
        // The name said loopback; so must the address it led to, before a
        // password goes out in the clear.
        let landed_local = stream.reaches_loopback();
        if security == Security::Plain && !landed_local {
            return Err(ImapError::Cleartext {
                server: self.host.clone(),
            });
        }
        if let (Security::Implicit, Some(tls)) = (security, &tls) {
            stream = stream
                .secure(tls, &self.host)
                .map_err(|e| failed(Setup::Net(e)))?;
        }
        let mut client = Client::greet(stream).map_err(|e| failed(Setup::Imap(e)))?;
        if let (Security::Starttls, Some(tls)) = (security, &tls) {
            client.starttls().map_err(|e| failed(Setup::Imap(e)))?;
            client = client
                .upgrade(|plain| plain.secure(tls, &self.host).map_err(Setup::Net))
                .map_err(failed)?;
        }
        Ok((client, server))
    }
}

impl Spec for ImapSpec {
    fn open(&self, context: &Context) -> Result<Box<dyn Target>, DeliverError> {
        // A server on this machine is never reached through the proxy.
        let route = if net::names_loopback(&self.host) {
            net::Route::default()
        } else {
            context.secrets.route()?
        };
        let (client, server) = self.connect(context, &route)?;
        // Asked for only when the server wants a login.
        let password = if client.is_preauth() {
            String::new()
        } else {
            context.secrets.password("imap", &self.entry())?
        };
        let session = client
            .login(&self.user, &password)
            .map_err(|e| Setup::Login(e).into_error(&server, &self.user))?;
        drop(password);
        Ok(Box::new(ImapTarget::start(session, self.clone(), server)?))
    }

    fn keyring_entry(&self, _context: &Context) -> Option<String> {
        Some(self.entry())
    }
}

/// What failed before the target was ready.
enum Setup {
    Net(net::Error),
    Imap(ProtocolError),
    Login(ProtocolError),
}

impl From<ProtocolError> for Setup {
    fn from(e: ProtocolError) -> Setup {
        Setup::Imap(e)
    }
}

impl Setup {
    fn into_error(self, server: &str, user: &str) -> ImapError {
        let server = server.to_string();
        match self {
            Setup::Net(source) => ImapError::Connect { server, source },
            // A server down for now ([UNAVAILABLE], RFC 5530) is not a wrong password.
            Setup::Login(source @ ProtocolError::Refused { .. }) if is_temporary(&source) => {
                ImapError::Conversation { server, source }
            }
            Setup::Login(ProtocolError::Refused { line, command }) => ImapError::Login {
                server,
                user: user.to_string(),
                reason: ProtocolError::Refused { command, line }.to_string(),
            },
            Setup::Imap(source) | Setup::Login(source) => {
                ImapError::Conversation { server, source }
            }
        }
    }
}

/// An IMAP target's failure, naming the server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImapError {
    #[error("imap_tls = \"none\" would send the password to {server} in clear; only localhost is allowed that: set imap_tls = \"implicit\" or \"starttls\"")]
    Cleartext { server: String },
    #[error("the TLS settings of the IMAP target are wrong (imap_tls_ca_file)")]
    Tls(#[source] TlsConfigError),
    #[error("cannot reach the IMAP server {server}")]
    Connect {
        server: String,
        #[source]
        source: net::Error,
    },
    #[error("the IMAP server {server} refused the login of {user}: {reason}; check imap_password or imap_password_command")]
    Login {
        server: String,
        user: String,
        reason: String,
    },
    #[error("the IMAP server {server} failed")]
    Conversation {
        server: String,
        #[source]
        source: ProtocolError,
    },
    #[error("the IMAP server {server} cannot create the folder {folder}: {reason}")]
    Create {
        server: String,
        folder: String,
        reason: String,
    },
    #[error("the IMAP server {server} refused to append to {folder}: {reason}")]
    Refused {
        server: String,
        folder: String,
        reason: String,
        temporary: bool,
    },
    #[error("the connection to the IMAP server {server} was lost earlier in this run")]
    Lost { server: String },
    #[error("cannot spool a message for the IMAP server")]
    Spool(#[source] std::io::Error),
}

impl TargetError for ImapError {
    fn class(&self) -> Class {
        match self {
            ImapError::Cleartext { .. } | ImapError::Tls(_) => Class::Config,
            // As for the POP3 server: a refused login 77, an unreachable or
            // untrusted server 69, a timeout 75.
            ImapError::Login { .. } => Class::Auth,
            ImapError::Connect { source, .. } => match source {
                net::Error::Timeout(_) => Class::Temporary,
                net::Error::ProxyLogin { .. } => Class::Auth,
                _ => Class::Unavailable,
            },
            ImapError::Conversation { source, .. } => match source {
                ProtocolError::Io(_) | ProtocolError::Closed | ProtocolError::Bye(_) => {
                    Class::Temporary
                }
                ProtocolError::NoStarttls => Class::Unavailable,
                ProtocolError::LoginDisabled => Class::Config,
                refused if is_temporary(refused) => Class::Temporary,
                _ => Class::Failed,
            },
            ImapError::Create { .. } | ImapError::Spool(_) => Class::Failed,
            ImapError::Refused { temporary, .. } => {
                if *temporary {
                    Class::Temporary
                } else {
                    Class::Failed
                }
            }
            ImapError::Lost { .. } => Class::Temporary,
        }
    }

    fn is_per_message(&self) -> bool {
        matches!(self, ImapError::Refused { .. })
    }
}

/// Response codes that say a refusal may pass (RFC 5530 §3): a full quota, a
/// folder in use, a server down or failing for now. Not [LIMIT]: a message over
/// a size limit would be retried for ever without a word.
const TEMPORARY_CODES: &[&str] = &["OVERQUOTA", "INUSE", "UNAVAILABLE", "SERVERBUG"];

/// Whether a refusal carries a code of [`TEMPORARY_CODES`].
fn is_temporary(e: &ProtocolError) -> bool {
    matches!(e, ProtocolError::Refused { line, .. }
        if line.code.as_ref().is_some_and(|c| TEMPORARY_CODES.iter().any(|t| c.is(t))))
}

/// A message staged for the next flush: its bytes and the location announced.
struct Staged {
    spooled: Spooled,
    location: Location,
}

impl Staged {
    /// Its location once appended: with the UID where the server said it.
    fn landed(self, place: Option<(u32, u32)>) -> Option<String> {
        place.map(|landed| {
            Location {
                landed: Some(landed),
                ..self.location
            }
            .to_string()
        })
    }
}

/// An open IMAP session appending to one folder.
pub(crate) struct ImapTarget<S: Read + Write> {
    /// `None` once the connection failed: its state is unknown.
    session: Option<Session<S>>,
    spec: ImapSpec,
    /// HOST:PORT, for messages.
    server: String,
    /// The folder's wire name (modified UTF-7).
    wire: String,
    staged: Vec<Staged>,
    landed: Vec<Landed>,
    /// The folder's UIDVALIDITY, once examined for recovery.
    examined: Option<Option<u32>>,
}

impl<S: Read + Write> ImapTarget<S> {
    /// Takes a logged-in session; creates the folder if it does not exist.
    fn start(session: Session<S>, spec: ImapSpec, server: String) -> Result<Self, ImapError> {
        let mut target = ImapTarget {
            session: Some(session),
            wire: utf7::encode(&spec.folder),
            spec,
            server,
            staged: Vec::new(),
            landed: Vec::new(),
            examined: None,
        };
        // "/" in FOLDER separates levels, as in a URL; the server may use
        // another delimiter (Dovecot's Maildir layout has ".").
        if target.spec.folder.contains('/') {
            match target.run(|s| s.delimiter()) {
                Ok(Some(d)) if d != b'/' && d.is_ascii() => {
                    let local = target.spec.folder.replace('/', &char::from(d).to_string());
                    target.wire = utf7::encode(&local);
                }
                Ok(_) => {}
                Err(e) => return Err(target.broken(e)),
            }
        }
        let wire = target.wire.clone();
        let exists = match target.run(|s| s.exists(&wire)) {
            Ok(exists) => exists,
            Err(e) => return Err(target.broken(e)),
        };
        if !exists {
            target.create()?;
        }
        Ok(target)
    }

    /// Runs a step of the conversation; a failure other than a refusal leaves
    /// the connection unusable.
    fn run<T>(
        &mut self,
        step: impl FnOnce(&mut Session<S>) -> Result<T, ProtocolError>,
    ) -> Result<T, ProtocolError> {
        let session = self.session.as_mut().ok_or(ProtocolError::Closed)?;
        let result = step(session);
        if let Err(e) = &result {
            if !e.is_refusal() {
                self.session = None;
            }
        }
        result
    }

    fn broken(&self, source: ProtocolError) -> ImapError {
        match (&self.session, source) {
            (None, ProtocolError::Closed) => ImapError::Lost {
                server: self.server.clone(),
            },
            (_, source) => ImapError::Conversation {
                server: self.server.clone(),
                source,
            },
        }
    }

    fn create(&mut self) -> Result<(), ImapError> {
        let wire = self.wire.clone();
        self.run(|s| s.create(&wire)).map_err(|e| match e {
            ProtocolError::Refused { .. } => ImapError::Create {
                server: self.server.clone(),
                folder: self.spec.folder.clone(),
                reason: e.to_string(),
            },
            e => self.broken(e),
        })
    }

    /// Appends the staged messages `which` in one MULTIAPPEND command (RFC
    /// 3502): all or none.
    fn append_all(
        &mut self,
        staged: &mut [Staged],
    ) -> Result<Vec<Option<(u32, u32)>>, ProtocolError> {
        let mut outgoing = outgoing(staged.iter_mut())?;
        let wire = self.wire.clone();
        self.run(|s| s.append_all(&wire, &mut outgoing))
    }

    /// Appends the staged messages `which`, each with its own APPEND: each
    /// one's outcome, in order, up to a failure of the connection.
    fn append_each<'a>(
        &mut self,
        which: impl Iterator<Item = &'a mut Staged>,
    ) -> Vec<Result<Option<(u32, u32)>, ProtocolError>> {
        let mut outgoing = match outgoing(which) {
            Ok(outgoing) => outgoing,
            Err(e) => return vec![Err(e)],
        };
        let wire = self.wire.clone();
        let Some(session) = self.session.as_mut() else {
            return vec![Err(ProtocolError::Closed)];
        };
        let outcomes = session.append_each(&wire, &mut outgoing);
        if outcomes
            .last()
            .is_some_and(|o| o.as_ref().is_err_and(|e| !e.is_refusal()))
        {
            self.session = None;
        }
        outcomes
    }

    fn refused(&self, e: ProtocolError) -> ImapError {
        match e {
            ProtocolError::Refused { .. } => ImapError::Refused {
                server: self.server.clone(),
                folder: self.spec.folder.clone(),
                temporary: is_temporary(&e),
                reason: e.to_string(),
            },
            e => self.broken(e),
        }
    }

    /// Whether the message is in the folder: by its UID if the server said it
    /// and the folder is the same (RFC 3501 §2.3.1.1), else by its Message-ID
    /// and exact size.
    fn holds(&mut self, location: &Location) -> Result<bool, ProtocolError> {
        let validity = match self.examined {
            Some(validity) => validity,
            None => {
                let wire = self.wire.clone();
                let validity = self.run(|s| s.examine(&wire))?;
                self.examined = Some(validity);
                validity
            }
        };
        if let Some((v, uid)) = location.landed {
            if validity == Some(v) {
                let criteria = [Arg::Text("UID".into()), Arg::Text(uid.to_string())];
                if !self.run(|s| s.uid_search(&criteria))?.is_empty() {
                    return Ok(true);
                }
            }
        }
        // Without a Message-ID a size alone proves nothing: not delivered, so
        // fetched again (a duplicate at worst).
        let Some(id) = &location.id else {
            return Ok(false);
        };
        // RFC822.SIZE counts the CRLF bytes appended: LARGER and SMALLER
        // (RFC 3501 §6.4.4) pin it exactly.
        let mut criteria = vec![
            Arg::Text("HEADER".into()),
            Arg::Text("Message-ID".into()),
            command::astring(id.as_bytes()),
        ];
        if location.size > 0 {
            criteria.push(Arg::Text(format!("LARGER {}", location.size - 1)));
        }
        criteria.push(Arg::Text(format!("SMALLER {}", location.size + 1)));
        let found = self.run(|s| s.uid_search(&criteria))?;
        // A server's search may be looser than asked (full-text indexes match
        // words, not the field): each hit is fetched and compared exactly, since
        // a false "delivered" would DELE a message that is nowhere.
        for uid in found.into_iter().take(MAX_CHECKED) {
            let fetched = self.run(|s| s.uid_fetch_id(uid))?;
            let same = fetched.iter().any(|f| {
                f.size == Some(location.size)
                    && f.header
                        .as_deref()
                        .and_then(spool::message_id)
                        .is_some_and(|got| got == *id)
            });
            if same {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl<S: Read + Write> Target for ImapTarget<S> {
    fn deliver(&mut self, message: &mut dyn Read, announce: Announce) -> Result<u64, DeliverError> {
        let spooled = spool::spool(message).map_err(|e| match e {
            SpoolError::Read(e) => DeliverError::Source(e),
            SpoolError::Write(e) => ImapError::Spool(e).into(),
        })?;
        let location = Location {
            size: spooled.size,
            id: spooled.message_id.clone(),
            landed: None,
        };
        announce(&location.to_string()).map_err(DeliverError::State)?;
        let size = spooled.size;
        self.staged.push(Staged { spooled, location });
        Ok(size)
    }

    fn stages(&self) -> bool {
        true
    }

    fn unstage(&mut self) {
        self.staged.pop();
    }

    fn flush(&mut self) -> Result<(), DeliverError> {
        self.landed.clear();
        let mut staged = std::mem::take(&mut self.staged);
        if staged.is_empty() {
            return Ok(());
        }
        let multi = staged.len() > 1
            && self
                .session
                .as_ref()
                .is_some_and(|s| s.capabilities().has("MULTIAPPEND"));
        let mut outcomes = if multi {
            match self.append_all(&mut staged) {
                Ok(places) => places.into_iter().map(Ok).collect(),
                // MULTIAPPEND is all or none (RFC 3502 §6.3.11): nothing landed.
                // Refused for now, the batch stays for the next run; refused for
                // good, one message may have spoilt it (NO [LIMIT] for its size),
                // so each goes alone and only that one stays on the POP3 server.
                Err(e @ ProtocolError::Refused { .. }) if is_temporary(&e) => {
                    return Err(self.refused(e).into())
                }
                Err(ProtocolError::Refused { .. }) => self.append_each(staged.iter_mut()),
                // Whether the batch landed is not known: recovery asks.
                Err(e) => return Err(self.broken(e).into()),
            }
        } else {
            self.append_each(staged.iter_mut())
        };
        // The folder went away since `open` (RFC 3501 §6.3.11): made again, once,
        // and what it refused for that sent again.
        let gone: Vec<usize> = (0..outcomes.len())
            .filter(|&i| matches!(&outcomes[i], Err(e) if is_trycreate(e)))
            .collect();
        let mut uncreated = None;
        if !gone.is_empty() {
            match self.create() {
                Ok(()) => {
                    let again = self.append_each(
                        staged
                            .iter_mut()
                            .enumerate()
                            .filter(|(i, _)| gone.contains(i))
                            .map(|(_, one)| one),
                    );
                    let mut again = again.into_iter();
                    for &i in &gone {
                        outcomes[i] = again.next().unwrap_or(Err(ProtocolError::Closed));
                    }
                }
                Err(e) => uncreated = Some(e.to_string()),
            }
        }
        let mut outcomes = outcomes.into_iter();
        let server = self.server.clone();
        for (i, one) in staged.into_iter().enumerate() {
            let outcome = outcomes.next();
            if let (Some(reason), true) = (&uncreated, gone.contains(&i)) {
                self.landed.push(Err(ImapError::Create {
                    server: server.clone(),
                    folder: self.spec.folder.clone(),
                    reason: reason.clone(),
                }
                .into()));
                continue;
            }
            let landed = match outcome {
                Some(Ok(place)) => Ok(one.landed(place)),
                Some(Err(e @ ProtocolError::Refused { .. })) => Err(self.refused(e).into()),
                // The connection failed: whether it landed is not known, and
                // recovery asks the server on the next run.
                Some(Err(e)) => Err(self.broken(e).into()),
                None => Err(ImapError::Lost {
                    server: server.clone(),
                }
                .into()),
            };
            self.landed.push(landed);
        }
        Ok(())
    }

    fn landed(&mut self) -> Vec<Landed> {
        std::mem::take(&mut self.landed)
    }

    fn recover(&mut self, text: &str) -> Result<Recovered, DeliverError> {
        let Some(location) = Location::parse(text) else {
            return Err(DeliverError::BadLocation {
                target: PathBuf::from(self.spec.to_string()),
                location: text.to_string(),
            });
        };
        match self.holds(&location) {
            Ok(true) => Ok(Recovered::Delivered),
            Ok(false) => Ok(Recovered::NotDelivered),
            Err(e) => Err(self.broken(e).into()),
        }
    }
}

impl<S: Read + Write> Drop for ImapTarget<S> {
    fn drop(&mut self) {
        if let Some(session) = &mut self.session {
            let _ = session.logout();
        }
    }
}

/// The staged messages as an APPEND sends them, each from its first byte.
fn outgoing<'a>(
    which: impl Iterator<Item = &'a mut Staged>,
) -> Result<Vec<Outgoing<'a>>, ProtocolError> {
    which
        .map(|one| {
            one.spooled.rewind().map_err(ProtocolError::Io)?;
            Ok(Outgoing {
                size: one.spooled.size,
                date: one.spooled.date.map(date_time),
                body: &mut one.spooled.file,
            })
        })
        .collect()
}

/// `NO [TRYCREATE]`: the folder does not exist (RFC 3501 §6.3.11).
fn is_trycreate(e: &ProtocolError) -> bool {
    matches!(e, ProtocolError::Refused { line, .. }
        if line.code.as_ref().is_some_and(|c| c.is("TRYCREATE")))
}

#[cfg(test)]
mod tests;
