//! popfetch: a careful POP3 mail fetcher. The binary is a thin layer over these
//! rooms, each grouped by concern, whose imports point down only:
//!
//! - `cmd`: what each subcommand does and prints, the exit codes and the docs;
//! - `sync`: the session story (connect, log in, list, plan, fetch, deliver,
//!   record, delete), its policy, state and lock;
//! - `config`: the configuration file and the secrets it names;
//! - `deliver`: the delivery targets, one file per kind;
//! - `sys`: helper commands, durable writes, Ctrl-C, shell-like expansion;
//! - `imap`: the IMAP protocol a target appends with (pure core, blocking client);
//! - `pop3`: the protocol (pure core, blocking client, network), at the bottom.

#![warn(unreachable_pub)]

mod cmd;
mod config;
mod deliver;
mod imap;
mod net;
#[allow(dead_code)]
mod oauth;
mod pop3;
mod secret;
mod smtp;
mod sync;
mod sys;
mod text;

pub use cmd::docs::render as render_docs;
pub use cmd::{command, run};
