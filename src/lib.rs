//! popfetch: a careful POP3 mail fetcher. The binary is a thin layer over these
//! modules; `sync` tells the story of a session and the others each own one concern.

pub mod auth;
pub mod child;
pub mod cli;
pub mod config;
pub mod connect;
pub mod copy;
pub mod deliver;
pub mod docs;
pub mod durable;
pub mod exit;
pub mod filter;
pub mod identity;
pub mod import;
pub mod init;
pub mod interrupt;
pub mod lock;
pub mod policy;
pub mod pop3;
pub mod preview;
pub mod probe;
pub mod secret;
pub mod state;
pub mod sync;
pub mod ui;
