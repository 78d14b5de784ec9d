//! `smtp:HOST[:PORT]`: delivery into an MTA (RFC 5321), fetchmail's default path,
//! so that the mail server's filters and aliases apply. STARTTLS where offered,
//! required unless the MTA is on this machine; AUTH with `smtp_user`. The
//! conversation and what its replies mean are the relay's (`relay.rs`).

use std::fmt;

use crate::smtp::Dialect;

use super::relay::{self, Endpoint, Relay};
use super::{Context, DeliverError, Delivery, Kind, Security, Spec, Target};

/// `smtp:HOST[:PORT]`.
pub(crate) const KIND: Kind = Kind {
    name: "smtp",
    takes: "HOST[:PORT]",
    parse: |rest, env| {
        let endpoint = Endpoint::parse_tcp(rest, false)
            .map_err(|why| env.invalid(format!("{why}; use smtp:HOST or smtp:HOST:PORT")))?;
        Ok(Delivery::new(Smtp(endpoint)))
    },
};

#[derive(Debug)]
struct Smtp(Endpoint);

impl fmt::Display for Smtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", KIND.name, self.0)
    }
}

/// 25 (RFC 5321 §4.5.4.2 relaying), or 465 for TLS from the first byte (RFC 8314
/// §3.3).
fn default_port(security: Security) -> u16 {
    match security {
        Security::Implicit => 465,
        Security::Starttls | Security::Plain => 25,
    }
}

impl Spec for Smtp {
    fn open(&self, context: &Context) -> Result<Box<dyn Target>, DeliverError> {
        let settings = relay::Settings {
            dialect: Dialect::Smtp,
            endpoint: &self.0,
            default_port,
            login: true,
        };
        Ok(Box::new(Relay::open(&settings, context)?))
    }

    fn keyring_entry(&self, context: &Context) -> Option<String> {
        let user = context.smtp_user?;
        Some(format!("{user}@{}", relay::host_of(&self.0)))
    }
}
