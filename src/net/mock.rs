//! A canned server for the protocol clients' tests (POP3, SMTP, IMAP): reads
//! come from a script, writes are recorded.

use std::io::{self, Cursor, Read, Write};

use super::Wire;

pub(crate) struct MockStream {
    input: Cursor<Vec<u8>>,
    written: Vec<u8>,
    /// Where `written` stood at each flush: the client's batches end there.
    flushed_at: Vec<usize>,
    /// What the client said is due, as `Wire` hears it; None for a `clear_due`.
    pub due: Vec<Option<u64>>,
}

impl MockStream {
    pub(crate) fn new(server: &str) -> Self {
        MockStream {
            input: Cursor::new(server.as_bytes().to_vec()),
            written: Vec::new(),
            flushed_at: Vec::new(),
            due: Vec::new(),
        }
    }

    /// Replaces what the server will say next (after a simulated TLS upgrade).
    pub(crate) fn feed(&mut self, server: &str) {
        self.input = Cursor::new(server.as_bytes().to_vec());
    }

    pub(crate) fn written(&self) -> &str {
        std::str::from_utf8(&self.written).unwrap()
    }

    /// What was written, cut into the batches the client flushed.
    pub(crate) fn batches(&self) -> Vec<&str> {
        let mut start = 0;
        let mut batches = Vec::new();
        for &end in &self.flushed_at {
            if end > start {
                batches.push(&self.written()[start..end]);
            }
            start = end;
        }
        batches
    }

    /// The last `n` batches the client flushed.
    pub(crate) fn last_batches(&self, n: usize) -> Vec<&str> {
        let batches = self.batches();
        batches[batches.len().saturating_sub(n)..].to_vec()
    }
}

impl Read for MockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for MockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flushed_at.push(self.written.len());
        Ok(())
    }
}

/// A reader that hands out at most `step` bytes a read, to split input anywhere (as
/// TLS records and TCP segments do).
pub(crate) struct Trickle<'a> {
    pub data: &'a [u8],
    pub step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

impl Wire for MockStream {
    fn due(&mut self, bytes: u64) {
        self.due.push(Some(bytes));
    }

    fn clear_due(&mut self) {
        self.due.push(None);
    }
}
