//! popfetch: a careful POP3 mail fetcher. The binary is a thin layer over these
//! rooms, each grouped by concern, whose imports point down only:
//!
//! - `cmd`: what each subcommand does and prints, the exit codes and the docs;
//! - `sync`: the session story (connect, log in, list, plan, fetch, deliver,
//!   record, delete), its policy, state and lock;
//! - `migrate`: fetchmail's, mpop's and getmail's configurations read and
//!   written as popfetch's;
//! - `config`: the configuration file and the secrets it names;
//! - `oauth`: OAuth 2.0 providers, logins, token requests and the token store;
//! - `deliver`: the delivery targets, one file per kind;
//! - `pop3`: the protocol (pure core, blocking client);
//! - `sys`: helper commands, durable writes, Ctrl-C, shell-like expansion;
//! - `imap`, `smtp`: the protocols the targets deliver with;
//! - `net`: TCP and TLS under every protocol;
//! - `secret`, `text`: a secret that never shows, and server text made safe to
//!   print, at the bottom.

#![warn(unreachable_pub)]

mod cmd;
mod config;
mod deliver;
mod imap;
mod migrate;
mod net;
mod oauth;
mod pop3;
mod secret;
mod smtp;
mod sync;
mod sys;
mod text;

pub use cmd::docs::render as render_docs;
pub use cmd::{command, run};
