//! Copying a message stream in large batches, telling a failed read (the source,
//! usually the server) from a failed write (the destination) apart.

use std::io::{self, Read, Write};

/// The batch: a write per batch, not per read.
const BATCH: usize = 64 * 1024;

/// Which side of a copy failed.
#[derive(Debug)]
pub(crate) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `from` to `to` and returns how many bytes it copied.
///
/// The buffer is filled before each write: over TLS a read yields one record (some
/// 4 KiB from Dovecot), and a write per record costs a system call and, in the page
/// cache or a pipe, a partly written page each time.
pub(crate) fn batched(from: &mut dyn Read, to: &mut dyn Write) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; BATCH];
    let mut total = 0u64;
    loop {
        let mut filled = 0;
        let mut ended = false;
        while filled < buf.len() {
            match from.read(&mut buf[filled..]) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyError::Read(e)),
            }
        }
        if filled > 0 {
            to.write_all(&buf[..filled]).map_err(CopyError::Write)?;
            total += filled as u64;
        }
        if ended {
            return Ok(total);
        }
    }
}
