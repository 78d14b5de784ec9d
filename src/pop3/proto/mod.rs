//! The POP3 protocol core, pure data with no I/O: commands and their wire form,
//! replies and their parsers, the multi-line decoder, SASL exchanges, capabilities,
//! the listing and the pipeline's bookkeeping. Everything here is tested as plain
//! values; the client drives it over a stream.

pub mod capabilities;
pub mod command;
pub mod identity;
pub mod listing;
pub mod multiline;
pub mod pipeline;
pub mod response;
pub mod sasl;

pub use super::error::Error;
