//! Binary-level tests: the real `popfetch` against a real Dovecot, and against a
//! scripted server for what Dovecot cannot be made to do.

mod support;

mod adopt;
mod cli_errors;
mod cli_ux;
mod config_checks;
mod crash_safety;
mod delivery;
mod dovecot_sync;
mod fuzz;
mod glance;
mod hostile_server;
mod identity;
mod import_config;
mod interop;
mod net;
mod oauth;
mod oauth_harness;
mod policies;
mod routes;
mod scram_plus;
mod security;
mod service;
mod state_files;
mod targets;
mod units;
mod ux;
