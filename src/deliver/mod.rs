//! Delivery targets: where a fetched message goes. A target names the location of a
//! delivery before its first byte is written, so the state can record the intent, and
//! can later tell whether a location holds a completed delivery (crash recovery).
//! Targets read the message as a stream and never see the connection it comes from.

pub mod maildir;

use std::io::{self, Read, Write};
use std::path::PathBuf;

pub use maildir::MaildirTarget;

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The local side failed: disk full, permissions, I/O error.
    #[error("cannot deliver into {path}")]
    Local { path: PathBuf, source: io::Error },
    /// The message stream failed (the connection broke); nothing was delivered.
    #[error("the message could not be read from the server")]
    Source(#[source] io::Error),
}

/// A place messages can be delivered to.
pub trait Target {
    /// Picks the location of the next delivery, without touching the disk.
    fn reserve(&mut self) -> String;
    /// Delivers `message` to `location` durably and returns its size. On error,
    /// nothing is left at `location`.
    fn deliver(&mut self, location: &str, message: &mut dyn Read) -> Result<u64, DeliverError>;
    /// Whether `location` holds a completed delivery.
    fn holds(&self, location: &str) -> Result<bool, DeliverError>;
    /// Removes whatever an interrupted delivery to `location` left behind.
    fn discard(&self, location: &str) -> Result<(), DeliverError>;
}

/// Copies a message with a large buffer, telling read failures (the server) from
/// write failures (the target) apart.
pub(crate) fn copy_message(
    message: &mut dyn Read,
    out: &mut dyn Write,
    local: impl Fn(io::Error) -> DeliverError,
) -> Result<u64, DeliverError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match message.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DeliverError::Source(e)),
        };
        out.write_all(&buf[..n]).map_err(&local)?;
        total += n as u64;
    }
}
