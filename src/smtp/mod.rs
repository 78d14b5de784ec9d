//! SMTP (RFC 5321) and LMTP (RFC 2033), the client side only, for handing fetched
//! mail to a mail server: `proto`, the pure core (replies, extensions, the DATA
//! encoding), and `client`, the blocking conversation over any stream. The
//! transport (TCP, TLS) is `crate::net`'s; the policy of when to use TLS and what a
//! reply means for a message is the delivery target's.

mod client;
mod proto;

pub(crate) use client::{Client, Dialect, Error, SendError};
pub(crate) use proto::Reply;
