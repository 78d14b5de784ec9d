//! Binary-level tests: the real `popfetch` against a real Dovecot, and against a
//! scripted server for what Dovecot cannot be made to do.

mod support;

mod cli_errors;
mod crash_safety;
mod delivery;
mod dovecot_sync;
mod fuzz;
mod hostile_server;
mod interop;
mod policies;
mod security;
mod ux;
