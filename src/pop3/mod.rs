//! POP3 (RFC 1939) with CAPA and PIPELINING (RFC 2449) and STLS (RFC 2595), in
//! two layers whose arrows point down only: `proto`, the pure protocol core, and
//! `client`, the blocking conversation over any [`Wire`]; below them both, the
//! shared `crate::net` holds the real TCP and TLS streams. None of it knows of
//! delivery, state or configuration.

mod client;
pub(crate) mod proto;

pub(crate) use crate::net::Wire;
pub(crate) use client::{Client, Credentials, Glimpse, Retrieved, Session, Trace};
pub(crate) use proto::capabilities::Capabilities;
pub(crate) use proto::error::{Error, ErrorKind};
pub(crate) use proto::listing::{join, repeated_uids, ListedMessage, Listing};
pub(crate) use proto::pipeline::{Flow, WINDOW};
pub(crate) use proto::response::{RespCode, Status};
pub(crate) use proto::sasl::{ChannelBinding, Mechanism, Peer};
