//! The POP3 protocol core, pure data with no I/O: commands and their wire form,
//! replies and their parsers, the multi-line decoder, SASL exchanges, capabilities,
//! the listing, the pipeline's bookkeeping, and the conversation's error type. Everything here is tested as plain
//! values; the client drives it over a stream.

pub(crate) mod capabilities;
pub(crate) mod command;
pub(crate) mod error;
pub(crate) mod identity;
pub(crate) mod listing;
pub(crate) mod multiline;
pub(crate) mod pipeline;
pub(crate) mod response;
pub(crate) mod sasl;

pub(crate) use error::Error;
