//! Shared test helpers: a temporary home to run popfetch in, a Dovecot started on
//! loopback with its own config, a scripted POP3 server and an OAuth2 server.

#![allow(dead_code)]

pub mod daemon;
pub mod dovecot;
pub mod exim;
pub mod home;
pub mod mailstore;
pub mod mbox;
pub mod oauth;
pub mod proxy;
pub mod scripted;
pub mod servers;
pub mod socks;
pub mod tmpfs;

pub use dovecot::Dovecot;
pub use exim::Exim;
pub use home::Home;
pub use mailstore::MailStore;
pub use scripted::{Scripted, Step};
