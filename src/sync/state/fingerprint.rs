//! What tells, without reading it, that a journal is the very file a glance was
//! taken over: its length and a checksum of its header line.
//!
//! The journal only grows by appending (a sync, `import-state`, `adopt`), which
//! changes its length, and every rewrite (compaction, a new format) puts a new
//! random epoch into its header. So the same header and the same length mean no line was
//! added, removed or rewritten since: no delivery interrupted, no record
//! adopted, none forgotten. A journal cut short changes the length.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The journal's length and the CRC32 of its header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Fingerprint {
    pub len: u64,
    pub header: u32,
}

/// The header line is short; a longer first line is not one popfetch wrote.
const HEADER_MAX: usize = 512;

/// The fingerprint of the journal at `path`, if it can be read.
pub(crate) fn of(path: &Path) -> Option<Fingerprint> {
    let file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut head = Vec::with_capacity(HEADER_MAX);
    file.take(HEADER_MAX as u64).read_to_end(&mut head).ok()?;
    let end = memchr::memchr(b'\n', &head)?;
    Some(Fingerprint {
        len,
        header: crc32fast::hash(&head[..end]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_or_a_new_header_changes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        assert_eq!(of(&path), None);
        std::fs::write(&path, "popfetch-state 3 m 01\tcrc\nD u 1\tcrc\n").unwrap();
        let before = of(&path).unwrap();
        assert_eq!(of(&path), Some(before));
        std::fs::write(
            &path,
            "popfetch-state 3 m 01\tcrc\nD u 1\tcrc\nD v 1\tcrc\n",
        )
        .unwrap();
        assert_ne!(of(&path), Some(before));
        // The same length under another epoch.
        std::fs::write(&path, "popfetch-state 3 m 02\tcrc\nD u 1\tcrc\n").unwrap();
        assert_ne!(of(&path), Some(before));
        // No header line at all.
        std::fs::write(&path, "x".repeat(600)).unwrap();
        assert_eq!(of(&path), None);
    }
}
