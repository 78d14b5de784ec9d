//! Appending to the journal durably: one write per sealed line, a failed write cut
//! back off, and an fsync that the caller asks for before anything depends on it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::record::seal;
use super::{StateError, UidlState};

impl UidlState {
    pub(super) fn append(&mut self, record: &str) -> Result<(), StateError> {
        let line = seal(record);
        let journal = self.journal.as_mut().expect("a state opened for writing");
        // One write per line, so a killed process leaves whole lines or a torn tail.
        if let Err(source) = journal.write_all(line.as_bytes()) {
            // A full disk may have taken part of the line; cut it off, or the next
            // record would be glued to it and the journal would read as damaged.
            let _ = journal.set_len(self.len);
            return Err(StateError::Io {
                action: "write",
                path: self.path.clone(),
                source,
            });
        }
        self.len += line.len() as u64;
        self.lines += 1;
        self.unsynced = true;
        Ok(())
    }

    /// Makes every record so far durable.
    pub(crate) fn sync_journal(&mut self) -> Result<(), StateError> {
        if let (true, Some(journal)) = (self.unsynced, &self.journal) {
            journal.sync_data().map_err(|source| StateError::Io {
                action: "write",
                path: self.path.clone(),
                source,
            })?;
            self.unsynced = false;
            self.witness();
        }
        Ok(())
    }
}

pub(super) fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).open(path)
}
