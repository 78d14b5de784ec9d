//! What popfetch asks of the operating system beyond plain files and sockets: the
//! one runner for helper commands, durable writes, copies in batches of few system
//! calls, and Ctrl-C.

pub(crate) mod child;
pub(crate) mod copy;
pub(crate) mod durable;
pub(crate) mod expand;
pub(crate) mod interrupt;
