//! POP3 (RFC 1939) with CAPA and PIPELINING (RFC 2449) and STLS (RFC 2595), in
//! three layers whose arrows point down only: `proto`, the pure protocol core;
//! `client`, the blocking conversation over any [`Wire`]; and `net` below, the real
//! TCP and TLS streams. None of it knows of delivery, state or configuration.

mod client;
mod error;
pub mod net;
pub mod proto;
mod text;

#[cfg(test)]
pub(crate) mod mock;

pub use client::{Client, Credentials, Retrieved, Session, Trace};
pub use error::{Error, ErrorKind};
pub use net::Wire;
pub use proto::capabilities::Capabilities;
pub use proto::listing::{join, repeated_uids, ListedMessage, Listing};
pub use proto::pipeline::Flow;
pub use proto::response::{RespCode, Status};
pub use proto::sasl::{Mechanism, Peer};
