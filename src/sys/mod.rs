//! What popfetch asks of the operating system beyond plain files and sockets: the
//! one runner for helper commands, durable writes, copies in batches of few system
//! calls, and Ctrl-C.

pub mod child;
pub mod copy;
pub mod durable;
pub mod expand;
pub mod interrupt;
