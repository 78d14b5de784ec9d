//! What can go wrong in a POP3 conversation, with the server's words kept apart from
//! local causes and a kind that says whether to retry.

use std::io;

use super::response::RespCode;
use crate::net;

/// How an error should be treated by whoever runs the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The server cannot be reached or secured: connect, DNS, TLS or certificate.
    Unavailable,
    /// Try again later: timeouts, dropped connections, [IN-USE], [LOGIN-DELAY], [SYS/TEMP].
    Temporary,
    /// The server broke the protocol or refused a command we rely on.
    Protocol,
    /// The server rejected the credentials.
    Auth,
    /// Our own settings make the session impossible (bad argument, refused cleartext).
    Config,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Reaching or securing the server failed (see [`net::Error`]).
    #[error(transparent)]
    Net(net::Error),
    #[error("the server speaks TLS where a POP3 greeting should be")]
    TlsNotGreeting,
    #[error(
        "the server does not offer STLS, so the session ends before anything is sent in cleartext"
    )]
    StlsUnavailable,
    #[error(
        "the server refused STLS ({0}), so the session ends before anything is sent in cleartext"
    )]
    StlsRefused(String),
    #[error("the server sent data between its STLS reply and the TLS handshake (response injection); refusing the session")]
    StlsInjection,
    #[error("timed out waiting for the server during {0}; the next run tries again")]
    Timeout(&'static str),
    #[error("the connection to the server was lost during {phase}")]
    Lost {
        phase: &'static str,
        source: io::Error,
    },
    #[error("{command} failed: the server said \"{text}\"")]
    Server {
        command: &'static str,
        code: Option<RespCode>,
        text: String,
    },
    #[error("login rejected by the server: \"{text}\"; check user, password and auth")]
    Auth {
        code: Option<RespCode>,
        text: String,
    },
    /// A SCRAM -PLUS mechanism refused for its binding type: on its client-first
    /// message, before any proof (RFC 5802 §7), or with a server-error saying the
    /// type is not taken.
    #[error("the server refused {mechanism}'s channel binding (\"{text}\"): it may not take tls-server-end-point (RFC 5929), the only type popfetch can offer")]
    BindingRefused {
        mechanism: &'static str,
        code: Option<RespCode>,
        text: String,
    },
    /// The server's view of the TLS session differs from ours (RFC 5802 §6).
    #[error("{mechanism} failed: {why}; a man in the middle may be relaying the connection with a certificate this machine trusts")]
    BindingMismatch {
        mechanism: &'static str,
        why: &'static str,
    },
    /// Channel binding is impossible here: no TLS, or a certificate without a
    /// binding (RFC 5929 §4.1).
    #[error("channel binding: {0}")]
    ChannelBinding(String),
    #[error("{phase} not sent: the connection was already unusable ({why})")]
    Unusable { phase: &'static str, why: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{0}")]
    Refused(String),
}

impl Error {
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Error::Net(net::Error::Timeout(_)) => ErrorKind::Temporary,
            // The proxy turned down its login: credentials to fix, like the server's.
            Error::Net(net::Error::ProxyLogin { .. }) => ErrorKind::Auth,
            Error::Net(_)
            | Error::TlsNotGreeting
            | Error::StlsUnavailable
            | Error::StlsRefused(_) => ErrorKind::Unavailable,
            Error::Timeout(_) | Error::Lost { .. } | Error::Unusable { .. } => ErrorKind::Temporary,
            Error::StlsInjection | Error::Protocol(_) => ErrorKind::Protocol,
            Error::Server { code, .. } => match code {
                Some(c) if c.is_temporary() => ErrorKind::Temporary,
                Some(RespCode::Auth) => ErrorKind::Auth,
                _ => ErrorKind::Protocol,
            },
            Error::Auth { code, .. } | Error::BindingRefused { code, .. } => match code {
                Some(c) if c.is_temporary() => ErrorKind::Temporary,
                _ => ErrorKind::Auth,
            },
            Error::BindingMismatch { .. } => ErrorKind::Auth,
            Error::Refused(_) | Error::ChannelBinding(_) => ErrorKind::Config,
        }
    }

    /// Wraps an I/O error from the connection, naming the phase it happened in.
    pub(crate) fn io(phase: &'static str, source: io::Error) -> Error {
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout(phase),
            _ => Error::Lost { phase, source },
        }
    }
}

/// The network's errors as the session reports them.
impl From<net::Error> for Error {
    fn from(e: net::Error) -> Error {
        match e {
            // The session's own timeout says the next run tries again.
            net::Error::Timeout(phase) => Error::Timeout(phase),
            e => Error::Net(e),
        }
    }
}
