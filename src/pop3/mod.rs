//! A blocking POP3 client (RFC 1939) with CAPA and PIPELINING (RFC 2449) and STLS
//! (RFC 2595). Everything here is generic over `Wire` (`Read + Write`, and a hint of
//! the bytes on their way) and knows nothing of delivery or state; `net`
//! below supplies the real TCP and TLS streams.

mod client;
mod command;
mod error;
pub mod multiline;
pub mod net;
pub mod response;
pub mod sasl;

#[cfg(test)]
pub(crate) mod mock;

pub use client::{
    join, repeated_uids, Capabilities, Client, Credentials, Flow, ListedMessage, Listing,
    LoginFailed, Retrieved, Session, Trace,
};
pub use error::{Error, ErrorKind};
pub use net::Wire;
pub use response::{RespCode, Status};
pub use sasl::{Mechanism, Peer};
