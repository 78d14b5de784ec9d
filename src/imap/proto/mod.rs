//! The IMAP4rev1 protocol without I/O: responses parsed (`response`), command
//! arguments written (`command`), mailbox names encoded (`utf7`).

pub(crate) mod command;
pub(crate) mod response;
pub(crate) mod utf7;
