//! The target shared by `lmtp:` and `smtp:`: a connection to a mail server, opened
//! once per session and secured as the account says, and one mail transaction per
//! message. A message is delivered when the server answers 2xx to its data (for
//! LMTP, the reply for its one recipient, RFC 2033 §4.2); a 4xx leaves it on the
//! POP3 server for the next run, a 5xx too, with the server's text.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::net::{self, Stream, TlsConfig, TlsConfigError};
use crate::smtp::{self, Client, Dialect, Reply, SendError};

use super::{
    envelope, Announce, Class, Context, DeliverError, Recovered, Security, Target, TargetError,
};

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Unix(PathBuf),
    /// A port of `None` is the protocol's default, chosen at open.
    Tcp {
        host: String,
        port: Option<u16>,
    },
}

impl Endpoint {
    /// `HOST:PORT`, `[IPV6]:PORT`, or (without `port_required`) `HOST` alone.
    pub(crate) fn parse_tcp(text: &str, port_required: bool) -> Result<Endpoint, String> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("\"{text}\" opens a [ it does not close"))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(format!("\"{text}\" has \"{after}\" after the address")),
                },
            }
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        let valid_host = !host.is_empty()
            && !host.contains(['/', ':', '@', '[', ']'])
            && !host.chars().any(|c| c.is_whitespace() || c.is_control());
        if !valid_host && host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("\"{host}\" is not a host name or address"));
        }
        let port = match port {
            None if port_required => return Err(format!("\"{text}\" names no port")),
            None => None,
            Some(port) => Some(
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("\"{port}\" is not a port number"))?,
            ),
        };
        Ok(Endpoint::Tcp {
            host: host.to_string(),
            port,
        })
    }

    /// Whether the server is on this machine: a unix socket, `localhost` or a
    /// loopback address. Mail and logins may go there without TLS.
    fn is_local(&self) -> bool {
        match self {
            Endpoint::Unix(_) => true,
            Endpoint::Tcp { host, .. } => net::names_loopback(host),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp { host, port } => {
                if host.contains(':') {
                    write!(f, "[{host}]")?;
                } else {
                    write!(f, "{host}")?;
                }
                match port {
                    Some(port) => write!(f, ":{port}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The connection under the conversation: a unix socket, or TCP with or without
/// TLS.
enum Link {
    Unix(UnixStream),
    Net(Stream),
}

impl Link {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        match self {
            Link::Unix(s) => s.set_read_timeout(Some(timeout)),
            Link::Net(s) => s.set_read_timeout(timeout),
        }
    }
}

/// How long a reply may take once the connection is set up: RFC 5321 §4.5.3.2
/// asks a client to wait up to 10 minutes for the reply to the end of the data
/// (§4.5.3.2.6), while the server scans and stores the message. Giving up sooner
/// would count as not delivered a message the server then takes: a duplicate on
/// every run.
const REPLY_PATIENCE: Duration = Duration::from_secs(600);

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Unix(s) => s.read(buf),
            Link::Net(s) => s.read(buf),
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Unix(s) => s.write(buf),
            Link::Net(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Link::Unix(s) => s.flush(),
            Link::Net(s) => s.flush(),
        }
    }
}

/// A failure of an LMTP or SMTP target. `server` reads "the LMTP server
/// /run/dovecot/lmtp", "the SMTP server mx:25".
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    #[error("{server}: {source}")]
    TlsSetup {
        server: String,
        source: TlsConfigError,
    },
    #[error("cannot reach {server}{hint}")]
    Connect {
        server: String,
        hint: &'static str,
        source: net::Error,
    },
    #[error("cannot connect to {server}: {source}")]
    Socket { server: String, source: io::Error },
    #[error("{server} offers no STARTTLS, and mail goes to it only over TLS {why}; set smtp_tls = \"implicit\" if it takes TLS from the first byte")]
    NoStartTls { server: String, why: &'static str },
    #[error("smtp_tls = \"none\" would send mail in the clear to {server}, which is not on this machine; use \"starttls\" or \"implicit\"")]
    Cleartext { server: String },
    #[error(
        "{server} offers no AUTH, so smtp_user cannot log in; remove smtp_user or check the server"
    )]
    NoAuth { server: String },
    #[error("{server} refused the login of {user}: {}; check smtp_user and its password", reply.shown())]
    Login {
        server: String,
        user: String,
        reply: Reply,
    },
    #[error("{server} failed: {source}")]
    Conversation { server: String, source: smtp::Error },
    #[error("{server} deferred the message ({}); it stays on the POP3 server and the next run tries again", reply.shown())]
    Deferred { server: String, reply: Reply },
    #[error("{server} rejected the message ({}); it stays on the POP3 server", reply.shown())]
    Rejected { server: String, reply: Reply },
    #[error("the connection to {server} was lost earlier in this run")]
    Lost { server: String },
}

impl TargetError for RelayError {
    fn class(&self) -> Class {
        match self {
            RelayError::TlsSetup { .. }
            | RelayError::Cleartext { .. }
            | RelayError::NoAuth { .. } => Class::Config,
            RelayError::Connect {
                source: net::Error::Timeout(_),
                ..
            } => Class::Temporary,
            // The proxy turned its login down: credentials, as the server's.
            RelayError::Connect {
                source: net::Error::ProxyLogin { .. },
                ..
            } => Class::Auth,
            RelayError::Connect { .. }
            | RelayError::Socket { .. }
            | RelayError::NoStartTls { .. } => Class::Unavailable,
            RelayError::Login { .. } => Class::Auth,
            RelayError::Conversation { source, .. } => match source {
                smtp::Error::Io(_) => Class::Temporary,
                smtp::Error::NoMechanism(_) => Class::Config,
                smtp::Error::Protocol(_) => Class::Failed,
                smtp::Error::Refused { reply, .. } if reply.is_transient() => Class::Temporary,
                smtp::Error::Refused { .. } => Class::Failed,
            },
            RelayError::Deferred { .. } | RelayError::Lost { .. } => Class::Temporary,
            RelayError::Rejected { .. } => Class::Failed,
        }
    }

    fn is_per_message(&self) -> bool {
        matches!(
            self,
            RelayError::Deferred { .. } | RelayError::Rejected { .. }
        )
    }
}

/// The location recorded for a delivery to a mail server: it cannot be asked
/// afterwards whether a message arrived, so recovery counts it as not delivered
/// (a kill between the server's 2xx and the state's record delivers it twice).
fn location(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Lmtp => "lmtp",
        Dialect::Smtp => "smtp",
    }
}

/// An open LMTP or SMTP target.
pub(crate) struct Relay {
    client: Option<Client<Link>>,
    dialect: Dialect,
    server: String,
    recipient: String,
    /// The listed size of the next message, for SIZE (RFC 1870).
    expected: Option<u64>,
}

/// What `open` needs besides the context.
pub(crate) struct Settings<'a> {
    pub dialect: Dialect,
    pub endpoint: &'a Endpoint,
    /// Used when the endpoint names none: 25, or 465 with implicit TLS.
    pub default_port: fn(Security) -> u16,
    /// Whether the account's `smtp_user` logs in here.
    pub login: bool,
}

impl Relay {
    pub(crate) fn open(settings: &Settings, context: &Context) -> Result<Relay, DeliverError> {
        let endpoint = settings.endpoint;
        let dialect = settings.dialect;
        let server = format!(
            "the {} server {endpoint}",
            match dialect {
                Dialect::Lmtp => "LMTP",
                Dialect::Smtp => "SMTP",
            }
        );
        let local = endpoint.is_local();
        let conversation = |source| RelayError::Conversation {
            server: server.clone(),
            source,
        };
        let mut client = match endpoint {
            Endpoint::Unix(path) => {
                let socket = unix(path, context.timeout).map_err(|source| RelayError::Socket {
                    server: server.clone(),
                    source,
                })?;
                let mut client =
                    Client::greet(Link::Unix(socket), dialect).map_err(conversation)?;
                client.hello(&hostname()).map_err(conversation)?;
                client
            }
            Endpoint::Tcp { host, port } => {
                // LMTP (RFC 2033 §1) is for a mail store on this machine or the
                // user's own network, and carries no password: TLS only when asked.
                // SMTP mail leaves this machine only under TLS.
                let security = match (dialect, context.smtp.chosen) {
                    (Dialect::Lmtp, false) => Security::Plain,
                    _ => context.smtp.security,
                };
                if security == Security::Plain && !local && dialect == Dialect::Smtp {
                    return Err(RelayError::Cleartext { server }.into());
                }
                let tls =
                    TlsConfig::new(&context.smtp.tls).map_err(|source| RelayError::TlsSetup {
                        server: server.clone(),
                        source,
                    })?;
                let port = port.unwrap_or((settings.default_port)(security));
                let unreachable = |source| {
                    let untrusted = matches!(
                        source,
                        net::Error::Certificate { .. } | net::Error::Tls { .. }
                    );
                    RelayError::Connect {
                        server: server.clone(),
                        // A local MTA's certificate is often Debian's snakeoil one,
                        // and TLS buys nothing on loopback.
                        hint: if untrusted && local {
                            " (it is on this machine: smtp_tls = \"none\" skips TLS, or smtp_tls_ca_file trusts its CA)"
                        } else {
                            ""
                        },
                        source,
                    }
                };
                // A server on this machine is never reached through the proxy.
                let route = if local {
                    net::Route::default()
                } else {
                    context.secrets.route()?
                };
                let mut stream =
                    Stream::connect_by(host, port, context.timeout, &route).map_err(unreachable)?;
                // "On this machine" is what the connection reached, not what the
                // name promised.
                let local = local && stream.reaches_loopback();
                if security == Security::Plain && !local && dialect == Dialect::Smtp {
                    return Err(RelayError::Cleartext { server }.into());
                }
                if security == Security::Implicit {
                    stream = stream.secure(&tls, host).map_err(unreachable)?;
                }
                let mut client = Client::greet(Link::Net(stream), dialect).map_err(conversation)?;
                client.hello(&hostname()).map_err(conversation)?;
                if security == Security::Starttls {
                    if client.extensions().starttls {
                        let Link::Net(plain) = client.start_tls().map_err(conversation)? else {
                            unreachable!("a TCP endpoint has a TCP link")
                        };
                        let secured = plain.secure(&tls, host).map_err(unreachable)?;
                        client = Client::resume(Link::Net(secured), dialect);
                        client.hello(&hostname()).map_err(conversation)?;
                    } else if !local || context.smtp.chosen {
                        // Used in plain only on this machine, and only when the
                        // account did not ask for STARTTLS itself.
                        let why = if local {
                            "since smtp_tls = \"starttls\" asks for it (remove the line to accept plain SMTP on this machine)"
                        } else {
                            "since it is not on this machine"
                        };
                        return Err(RelayError::NoStartTls { server, why }.into());
                    }
                }
                client
            }
        };
        if let (true, Some(user)) = (settings.login, context.smtp_user) {
            if client.extensions().auth.is_empty() {
                return Err(RelayError::NoAuth { server }.into());
            }
            let entry = format!("{user}@{}", host_of(endpoint));
            let password = context
                .secrets
                .password("smtp", &entry)
                .map_err(DeliverError::from)?;
            if let Err(e) = client.auth(user, &password) {
                return Err(match e {
                    // 454 (RFC 4954 §6): the server cannot check now, not a wrong password.
                    smtp::Error::Refused { reply, .. } if !reply.is_transient() => {
                        RelayError::Login {
                            server,
                            user: user.to_string(),
                            reply,
                        }
                    }
                    other => conversation(other),
                }
                .into());
            }
        }
        client
            .stream_mut()
            .set_read_timeout(context.timeout.max(REPLY_PATIENCE))
            .map_err(|e| conversation(smtp::Error::Io(e)))?;
        Ok(Relay {
            client: Some(client),
            dialect,
            server,
            recipient: context.recipient.to_string(),
            expected: None,
        })
    }
}

/// Whether a sender taken from the headers can stand in MAIL FROM as it is: one
/// `local@domain` (RFC 5321 §4.1.2) without the characters that end or quote a
/// path. Anything else goes as the null path `<>`, which every server takes,
/// rather than be refused on every run.
fn is_mailbox(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let domain_ok = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    let local_ok = !local.is_empty() && !local.bytes().any(|b| b"<>()[]\\,;:\" ".contains(&b));
    domain_ok && local_ok
}

/// The host part of a TCP endpoint, for a keyring entry.
pub(crate) fn host_of(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Unix(path) => path.display().to_string(),
        Endpoint::Tcp { host, .. } => host.clone(),
    }
}

fn unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let socket = UnixStream::connect(path)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    Ok(socket)
}

/// This machine's name for EHLO and LHLO (RFC 5321 §4.1.1.1 wants a domain or an
/// address literal; a name with other characters is replaced by `localhost`).
fn hostname() -> String {
    let name = gethostname::gethostname().to_string_lossy().into_owned();
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if plain {
        name
    } else {
        "localhost".into()
    }
}

impl Target for Relay {
    fn expect(&mut self, listed_size: u64) {
        self.expected = Some(listed_size);
    }

    fn deliver(&mut self, message: &mut dyn Read, announce: Announce) -> Result<u64, DeliverError> {
        let Some(client) = self.client.as_mut() else {
            return Err(RelayError::Lost {
                server: self.server.clone(),
            }
            .into());
        };
        let head = envelope::read_head(message).map_err(DeliverError::Source)?;
        let sender = envelope::address(&head)
            .filter(|a| is_mailbox(a))
            .unwrap_or_default();
        announce(location(self.dialect)).map_err(DeliverError::State)?;
        let mut whole = io::Cursor::new(head).chain(message);
        let sent = client.send(&sender, &self.recipient, &mut whole, self.expected.take());
        match sent {
            Ok(bytes) => Ok(bytes),
            Err(SendError::Source(e)) => {
                // The data was never ended: closing the connection makes the server
                // drop the transaction.
                self.client = None;
                Err(DeliverError::Source(e))
            }
            Err(SendError::Server(smtp::Error::Refused { reply, .. })) => {
                let server = self.server.clone();
                Err(if reply.is_transient() {
                    RelayError::Deferred { server, reply }
                } else {
                    RelayError::Rejected { server, reply }
                }
                .into())
            }
            Err(SendError::Server(source)) => {
                self.client = None;
                Err(RelayError::Conversation {
                    server: self.server.clone(),
                    source,
                }
                .into())
            }
        }
    }

    fn recovers(&self) -> bool {
        false
    }

    fn recover(&mut self, location_found: &str) -> Result<Recovered, DeliverError> {
        if location_found != location(self.dialect) {
            return Err(DeliverError::BadLocation {
                target: PathBuf::from(&self.server),
                location: location_found.to_string(),
            });
        }
        Ok(Recovered::NotDelivered)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            client.quit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_show() {
        for (text, shown) in [
            ("127.0.0.1:24", "127.0.0.1:24"),
            ("mail.example:2525", "mail.example:2525"),
            ("[::1]:24", "[::1]:24"),
        ] {
            assert_eq!(Endpoint::parse_tcp(text, true).unwrap().to_string(), shown);
        }
        assert_eq!(
            Endpoint::parse_tcp("mx", false).unwrap(),
            Endpoint::Tcp {
                host: "mx".into(),
                port: None
            }
        );
        for bad in [
            "mx", ":24", "a b:24", "mx:0", "mx:x", "[::1", "[::1]x", "u@mx:25",
        ] {
            assert!(Endpoint::parse_tcp(bad, true).is_err(), "{bad}");
        }
        assert!(Endpoint::parse_tcp("localhost:24", true)
            .unwrap()
            .is_local());
        assert!(Endpoint::parse_tcp("[::1]:24", true).unwrap().is_local());
        assert!(Endpoint::parse_tcp("127.0.0.2:24", true)
            .unwrap()
            .is_local());
        assert!(!Endpoint::parse_tcp("10.0.0.1:24", true).unwrap().is_local());
    }

    #[test]
    fn replies_sort_into_classes() {
        let reply = |code| Reply {
            code,
            lines: vec![b"text".to_vec()],
        };
        let server = String::from("s");
        let deferred = RelayError::Deferred {
            server: server.clone(),
            reply: reply(452),
        };
        assert_eq!(deferred.class(), Class::Temporary);
        assert!(deferred.is_per_message());
        let rejected = RelayError::Rejected {
            server,
            reply: reply(550),
        };
        assert_eq!(rejected.class(), Class::Failed);
        assert!(rejected.to_string().contains("550 text"));
    }

    /// A one-connection SMTP server on loopback answering `replies` in turn, one
    /// per line it reads after its greeting.
    fn scripted(replies: &'static [&'static str]) -> (u16, std::thread::JoinHandle<String>) {
        use std::io::BufRead;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            let mut reader = io::BufReader::new(socket.try_clone().unwrap());
            let mut writer = socket;
            writer.write_all(b"220 scripted\r\n").unwrap();
            let mut heard = String::new();
            for reply in replies {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                heard.push_str(&line);
                writer.write_all(reply.as_bytes()).unwrap();
            }
            heard
        });
        (port, server)
    }

    fn context_with(security: Security, chosen: bool) -> Context<'static> {
        let mut context = super::super::test_context();
        context.smtp.security = security;
        context.smtp.chosen = chosen;
        context
    }

    fn open(
        kind: Dialect,
        host: &str,
        port: u16,
        context: &Context,
    ) -> Result<Relay, DeliverError> {
        let endpoint = Endpoint::Tcp {
            host: host.into(),
            port: Some(port),
        };
        let settings = Settings {
            dialect: kind,
            endpoint: &endpoint,
            default_port: |_| 25,
            login: true,
        };
        Relay::open(&settings, context)
    }

    fn relay_error(result: Result<Relay, DeliverError>) -> RelayError {
        let err = result.err().expect("an error");
        let DeliverError::Target(kind) = err else {
            panic!("{err:?}")
        };
        *(kind.0 as Box<dyn std::error::Error>)
            .downcast::<RelayError>()
            .unwrap()
    }

    #[test]
    fn no_starttls_is_plain_on_this_machine_and_refused_off_it() {
        let (port, server) = scripted(&["250 mx\r\n", "221 bye\r\n"]);
        let relay = open(
            Dialect::Smtp,
            "127.0.0.1",
            port,
            &context_with(Security::Starttls, false),
        );
        drop(relay.unwrap());
        assert_eq!(
            server.join().unwrap(),
            "EHLO ".to_string() + &hostname() + "\r\nQUIT\r\n"
        );
        // Asked for in so many words: refused on this machine too.
        let (port, _server) = scripted(&["250 mx\r\n", "221 bye\r\n"]);
        let err = relay_error(open(
            Dialect::Smtp,
            "127.0.0.1",
            port,
            &context_with(Security::Starttls, true),
        ));
        assert!(matches!(err, RelayError::NoStartTls { .. }), "{err}");

        // 0.0.0.0 reaches the loopback listener on Linux but is not a loopback
        // address, so it stands in for a server elsewhere.
        if cfg!(target_os = "linux") {
            let (port, server) = scripted(&["250 mx\r\n"]);
            let err = relay_error(open(
                Dialect::Smtp,
                "0.0.0.0",
                port,
                &context_with(Security::Starttls, false),
            ));
            assert!(matches!(err, RelayError::NoStartTls { .. }), "{err}");
            assert_eq!(err.class(), Class::Unavailable);
            server.join().unwrap();
            let err = relay_error(open(
                Dialect::Smtp,
                "0.0.0.0",
                1,
                &context_with(Security::Plain, true),
            ));
            assert!(matches!(err, RelayError::Cleartext { .. }), "{err}");
            assert_eq!(err.class(), Class::Config);
        }
    }

    #[test]
    fn lmtp_uses_tls_only_when_asked() {
        let (port, server) = scripted(&["250-lmtp\r\n250 STARTTLS\r\n", "221 bye\r\n"]);
        drop(
            open(
                Dialect::Lmtp,
                "127.0.0.1",
                port,
                &context_with(Security::Starttls, false),
            )
            .unwrap(),
        );
        assert!(server.join().unwrap().starts_with("LHLO "));
        // Asked for: the test's server then fails the handshake, and nothing is sent.
        let (port, server) = scripted(&["250-lmtp\r\n250 STARTTLS\r\n", "220 go\r\n"]);
        let err = relay_error(open(
            Dialect::Lmtp,
            "127.0.0.1",
            port,
            &context_with(Security::Starttls, true),
        ));
        assert!(matches!(err, RelayError::Connect { .. }), "{err}");
        assert!(server.join().unwrap().ends_with("STARTTLS\r\n"));
    }

    #[test]
    fn only_a_plain_mailbox_is_a_sender() {
        for good in ["a@b.example", "first.last+tag@x-y.example", "u@[127.0.0.1]"] {
            assert!(is_mailbox(good), "{good}");
        }
        for bad in [
            "foo", "@b", "a@", "a@b>x", "a<b@c", "a@b c", "\"q\"@x", "a,b@c",
        ] {
            assert!(!is_mailbox(bad), "{bad}");
        }
    }

    #[test]
    fn only_its_own_location_is_recovered() {
        assert_eq!(location(Dialect::Lmtp), "lmtp");
        assert_eq!(location(Dialect::Smtp), "smtp");
    }
}
