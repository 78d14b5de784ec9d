//! The blocking POP3 client over any [`Wire`]: the line connection, login in the
//! AUTHORIZATION state, and the TRANSACTION-state session with its pipelined
//! fetching. It drives the pure protocol core and knows nothing of delivery, state
//! or configuration.

mod body;
mod connection;
mod fetch;
mod login;
mod session;

pub(crate) use connection::Trace;
pub(crate) use fetch::Retrieved;
pub(crate) use login::{Client, Credentials};
pub(crate) use session::{Glimpse, Session};

#[cfg(test)]
mod tests;
