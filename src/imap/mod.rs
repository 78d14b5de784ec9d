//! IMAP4rev1 (RFC 3501), as much as appending fetched messages to a folder takes:
//! the protocol without I/O (`proto`) and a blocking client over any stream
//! (`client`). Its errors speak of the conversation only; the delivery target
//! names the server and says what to do.

pub(crate) mod client;
pub(crate) mod proto;

use std::io;

use proto::response::{Malformed, Status, StatusLine};

pub(crate) use client::{Client, Outgoing, Session};

/// What can go wrong in a conversation with an IMAP server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("the connection failed")]
    Io(#[source] io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server closed the connection: {0}")]
    Bye(String),
    #[error("the server did not greet as an IMAP server")]
    NoGreeting,
    #[error("the server did not say its capabilities")]
    NoCapabilities,
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error("the server sent a line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("the server sent a literal of {0} bytes where none so large is due")]
    LiteralTooLarge(u64),
    #[error("the server sent too many responses to one command")]
    TooManyResponses,
    #[error("the server does not offer STARTTLS")]
    NoStarttls,
    #[error("the server sent data after its STARTTLS reply, before the TLS handshake (an injection attempt?)")]
    Injected,
    #[error(
        "the server refuses logins in this state (LOGINDISABLED) and offers no AUTHENTICATE PLAIN"
    )]
    LoginDisabled,
    #[error("the folder name cannot be written in an IMAP command")]
    FolderName,
    /// A NO or BAD (RFC 3501 §7.1.2, §7.1.3).
    #[error("{command} was refused: {}", refusal(line))]
    Refused {
        command: &'static str,
        line: StatusLine,
    },
}

impl Error {
    /// A server's NO or BAD to one command, after which the conversation goes on;
    /// every other error leaves the connection unusable.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(self, Error::Refused { .. })
    }
}

/// `NO [CODE] text`, escaped.
fn refusal(line: &StatusLine) -> String {
    let status = match line.status {
        Status::Bad => "BAD",
        _ => "NO",
    };
    match &line.code {
        Some(code) => format!("{status} [{}] {}", code.name, line.text),
        None => format!("{status} {}", line.text),
    }
}
