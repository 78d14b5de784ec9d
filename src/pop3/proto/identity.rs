//! What tells one message from another beyond its unique-id: its listed size and a
//! digest of its header section, taken while a RETR or TOP reply streams through;
//! and whether a RETR reply fits the size the server listed for the message asked
//! for.

use sha2::{Digest, Sha256};

/// A message's listed size (octets, as LIST gives it, RFC 1939 §5) and a digest of
/// its header section (RFC 5322 §2.1: every line up to and including the first empty
/// one, or the whole message if there is none), in the form a multi-line response
/// reads (dot-unstuffed, CRLF as LF). RETR and `TOP n 0` give the same header
/// section (RFC 1939 §7), so the digest taken while a body streams through at
/// delivery can be taken again later from TOP, without fetching the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Identity {
    pub size: u64,
    pub digest: [u8; 16],
}

impl Identity {
    /// The digest as 32 hex digits, as the state writes it.
    pub(crate) fn hex(&self) -> String {
        self.digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads back `size` and 32 hex digits.
    pub(crate) fn parse(size: &str, hex: &str) -> Option<Identity> {
        let size = size.parse().ok()?;
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut digest = [0u8; 16];
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Identity { size, digest })
    }
}

/// Hashes the header section of a message as its body streams through, keeping
/// nothing but the hash state.
#[derive(Clone)]
pub(crate) struct HeadHasher {
    sha: Sha256,
    /// The empty line that ends the header section has been seen.
    ended: bool,
    /// The next byte starts a line.
    at_line_start: bool,
}

impl Default for HeadHasher {
    fn default() -> Self {
        HeadHasher {
            sha: Sha256::new(),
            ended: false,
            at_line_start: true,
        }
    }
}

impl HeadHasher {
    /// Feeds the next bytes of the message.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        if self.ended {
            return;
        }
        let mut end = bytes.len();
        let mut at_line_start = self.at_line_start;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                if at_line_start {
                    end = i + 1;
                    self.ended = true;
                    break;
                }
                at_line_start = true;
            } else {
                at_line_start = false;
            }
        }
        self.at_line_start = at_line_start;
        self.sha.update(&bytes[..end]);
    }

    pub(crate) fn finish(self) -> [u8; 16] {
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&self.sha.finalize()[..16]);
        digest
    }
}

/// Whether a RETR body of `bytes` octets in `lines` lines (as read: CRLF as LF)
/// fits the `listed` size of the message asked for.
///
/// RFC 1939 §5 makes LIST give the exact size with CRLF line ends, which the body
/// has as `bytes + lines`; servers that store LF and count it list `bytes` (an exact
/// count either way, as Dovecot and Cyrus give). Some servers list an estimate
/// (Exchange computes it from its own store, and it is off by a few percent); a
/// quarter of the size and a KiB either way covers those. The check is not what
/// proves a reply belongs to the message asked for — the LIST fence after each
/// RETR does that (see `Session::retrieve`) — it stops at once a reply that is
/// plainly another message's, before a target may keep it.
pub(crate) fn fits(listed: u64, bytes: u64, lines: u64) -> bool {
    let slack = 1024 + listed / 4;
    let (low, high) = (bytes, bytes + lines);
    listed.saturating_add(slack) >= low && listed <= high.saturating_add(slack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(chunks: &[&[u8]]) -> [u8; 16] {
        let mut h = HeadHasher::default();
        for c in chunks {
            h.update(c);
        }
        h.finish()
    }

    #[test]
    fn the_header_section_is_hashed_however_the_body_is_cut() {
        let whole = digest_of(&[b"Subject: a\nFrom: b\n\nbody\n"]);
        assert_eq!(
            whole,
            digest_of(&[b"Subject: a\nFrom: b\n", b"\n", b"other"])
        );
        assert_eq!(whole, digest_of(&[b"Subject: a\nFr", b"om: b\n\n"]));
        assert_eq!(whole, digest_of(&[b"Subject: a\nFrom: b\n\n"]));
        assert_ne!(whole, digest_of(&[b"Subject: b\nFrom: b\n\nbody\n"]));
        // No body: the whole message is its header section.
        assert_eq!(
            digest_of(&[b"Subject: a\n"]),
            digest_of(&[b"Subj", b"ect: a\n"])
        );
    }

    #[test]
    fn identity_round_trips_through_text() {
        let id = Identity {
            size: 1234,
            digest: digest_of(&[b"X: y\n\n"]),
        };
        assert_eq!(Identity::parse("1234", &id.hex()), Some(id));
        assert_eq!(Identity::parse("12x", &id.hex()), None);
        assert_eq!(Identity::parse("1", "abc"), None);
    }

    #[test]
    fn sizes_fit_within_line_ends_and_estimates() {
        // 10 lines, 100 bytes as read: exact CRLF count, LF count, an estimate.
        assert!(fits(110, 100, 10));
        assert!(fits(100, 100, 10));
        assert!(fits(1200, 1100, 10));
        // Another message's reply: much smaller or much larger.
        assert!(!fits(100_000, 20_000, 400));
        assert!(!fits(5_000, 40_000, 500));
        assert!(!fits(0, 5_000, 10));
    }
}
