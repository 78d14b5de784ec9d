//! What popfetch asks of the operating system beyond plain files and sockets: the
//! one runner for helper commands, durable writes, and Ctrl-C.

pub mod child;
pub mod durable;
pub mod interrupt;
