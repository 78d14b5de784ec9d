//! Binary-level tests: the real `popfetch` against a real Dovecot, and against a
//! scripted server for what Dovecot cannot be made to do.

mod support;

mod cli_errors;
mod crash_safety;
mod delivery;
mod dovecot_sync;
mod hostile_server;
mod identity;
mod interop;
mod policies;
mod security;
mod ux;
