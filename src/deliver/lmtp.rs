//! `lmtp:/SOCKET` and `lmtp:HOST:PORT`: delivery into a mail store's LMTP server
//! (RFC 2033), such as Dovecot's, so that its Sieve rules and quotas apply. The
//! conversation and what its replies mean are the relay's (`relay.rs`).

use std::fmt;

use crate::smtp::Dialect;

use super::relay::{self, Endpoint, Relay};
use super::{Context, DeliverError, Delivery, Kind, Security, Spec, Target};

/// `lmtp:/SOCKET` or `lmtp:HOST:PORT`.
pub(crate) const KIND: Kind = Kind {
    name: "lmtp",
    takes: "/SOCKET|HOST:PORT",
    parse: |rest, env| {
        let endpoint = if rest.starts_with('/') || rest.starts_with('~') {
            Endpoint::Unix(env.path(rest)?)
        } else {
            // LMTP has no port of its own: it must not be 25 (RFC 2033 §5).
            Endpoint::parse_tcp(rest, true).map_err(|why| {
                env.invalid(format!("{why}; use lmtp:/PATH/TO/SOCKET or lmtp:HOST:PORT"))
            })?
        };
        Ok(Delivery::new(Lmtp(endpoint)))
    },
};

#[derive(Debug)]
struct Lmtp(Endpoint);

impl fmt::Display for Lmtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", KIND.name, self.0)
    }
}

impl Spec for Lmtp {
    fn open(&self, context: &Context) -> Result<Box<dyn Target>, DeliverError> {
        let settings = relay::Settings {
            dialect: Dialect::Lmtp,
            endpoint: &self.0,
            default_port: |_: Security| 24,
            login: false,
        };
        Ok(Box::new(Relay::open(&settings, context)?))
    }
}
