//! Delivery targets: where a fetched message goes. Each target announces the location
//! of a delivery just before its first byte lands, so the state can record the intent,
//! and can later tell whether an announced delivery completed (crash recovery).
//! Targets read the message as a stream and never see the connection it comes from.

pub mod envelope;
pub mod maildir;
pub mod mbox;
pub mod mda;

use std::io::{self, Read, Write};
use std::path::PathBuf;

pub use maildir::MaildirTarget;
pub use mbox::MboxTarget;
pub use mda::MdaTarget;

use crate::copy::CopyError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The local side failed: disk full, permissions, I/O error.
    #[error("cannot deliver into {path}")]
    Local { path: PathBuf, source: io::Error },
    /// The message stream failed (the connection broke); nothing was delivered.
    #[error("the message could not be read from the server")]
    Source(#[source] io::Error),
    /// The intent could not be recorded, so nothing was delivered.
    #[error("cannot record the delivery in the state")]
    State(#[source] StateError),
    #[error(
        "the mbox {path} stayed locked by another program (lock {lock}); the next run tries again"
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("the mbox {path} changed after offset {offset} in a way popfetch cannot account for; check the end of the file by hand")]
    MboxConflict { path: PathBuf, offset: u64 },
    /// A location read back from the state is not one this target writes: the
    /// state is damaged, and nothing is touched (issue 15, bug 8).
    #[error("the state names {location:?} as a delivery into {target}, which is not a location popfetch writes there; the state file is damaged: restore it from a backup or remove that line")]
    BadLocation { target: PathBuf, location: String },
    #[error("the MDA \"{program}\" could not be started")]
    MdaSpawn { program: String, source: io::Error },
    #[error("the MDA \"{program}\" failed ({reason})")]
    MdaFailed { program: String, reason: String },
    #[error("the MDA \"{program}\" deferred the message (exit 75); the next run tries again")]
    MdaDeferred { program: String },
    #[error("the MDA \"{program}\" took longer than mda_timeout ({seconds} s) and was killed")]
    MdaTimeout { program: String, seconds: u64 },
}

impl DeliverError {
    /// Worth retrying later without any change.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            DeliverError::Locked { .. }
                | DeliverError::MdaDeferred { .. }
                | DeliverError::MdaTimeout { .. }
        )
    }

    /// Concerns this one message only: the next message may well be delivered.
    pub fn is_per_message(&self) -> bool {
        matches!(
            self,
            DeliverError::MdaFailed { .. }
                | DeliverError::MdaDeferred { .. }
                | DeliverError::MdaTimeout { .. }
        )
    }
}

/// Called by a target with the location of a delivery before its first byte lands.
pub type Announce<'a> = &'a mut dyn FnMut(&str) -> Result<(), StateError>;

/// What recovery found at the location of an interrupted delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// The delivery completed before the run died.
    Delivered,
    /// It did not; whatever it left has been removed.
    NotDelivered,
}

/// A place messages can be delivered to.
pub trait Target {
    /// Delivers `message` (durably, or staged for `flush` when [`Target::stages`])
    /// and returns how many bytes it took. Calls `announce` once, before anything
    /// is written. On error, nothing is left behind.
    fn deliver(&mut self, message: &mut dyn Read, announce: Announce) -> Result<u64, DeliverError>;

    /// Looks at the location of a delivery that a killed run announced, and cleans
    /// up after it if it did not complete.
    fn recover(&mut self, location: &str) -> Result<Recovered, DeliverError>;

    /// Whether `deliver` only stages a message, which `flush` then commits: the
    /// caller must make the intents durable before `flush`, and may record the
    /// messages as delivered only after it.
    fn stages(&self) -> bool {
        false
    }

    /// Drops the message `deliver` staged last, as if its delivery had failed: it
    /// could not be recorded as the caller needs.
    fn unstage(&mut self) {}

    /// Commits what `deliver` staged and makes every delivery so far durable. On
    /// error, staged messages are dropped; those already placed are found by
    /// recovery. Called before any DELE.
    fn flush(&mut self) -> Result<(), DeliverError> {
        Ok(())
    }
}

/// Copies a message in large batches (see [`crate::copy::batched`]): a failed read
/// is the server's, a failed write the target's, which `local` describes.
pub(crate) fn copy_message(
    message: &mut dyn Read,
    out: &mut dyn Write,
    local: impl Fn(io::Error) -> DeliverError,
) -> Result<u64, DeliverError> {
    crate::copy::batched(message, out).map_err(|e| match e {
        CopyError::Read(e) => DeliverError::Source(e),
        CopyError::Write(e) => local(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pop3::mock::Trickle;

    /// Keeps what is written and the size of each write.
    #[derive(Default)]
    struct Recorder {
        bytes: Vec<u8>,
        writes: Vec<usize>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.bytes.extend_from_slice(buf);
            self.writes.push(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn small_reads_become_whole_buffer_writes() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Recorder::default();
        let mut source = Trickle {
            data: &data,
            step: 4042,
        };
        let n = copy_message(&mut source, &mut out, DeliverError::Source).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(out.bytes, data);
        assert_eq!(out.writes, vec![65536, 65536, 65536, 3392]);
    }
}
