//! The locations an IMAP target records (one word, no '/', see the state's
//! `is_plain_location`): `imap.SIZE[.ID]` announced before the APPEND, and
//! `imap.SIZE.[ID].UIDVALIDITY.UID` once the server said where it landed
//! (RFC 4315). SIZE is the RFC822.SIZE, ID the Message-ID in unpadded
//! base64url: what a SEARCH finds the message by (RFC 3501 §6.4.4).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::spool::MAX_ID;

const PREFIX: &str = "imap.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Location {
    pub size: u64,
    /// The Message-ID: printable ASCII, at most `MAX_ID` bytes.
    pub id: Option<String>,
    /// UIDVALIDITY and UID.
    pub landed: Option<(u32, u32)>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.id.as_deref().map(|id| URL_SAFE_NO_PAD.encode(id));
        write!(f, "{PREFIX}{}", self.size)?;
        match (id, self.landed) {
            (id, Some((validity, uid))) => {
                write!(f, ".{}.{validity}.{uid}", id.unwrap_or_default())
            }
            (Some(id), None) => write!(f, ".{id}"),
            (None, None) => Ok(()),
        }
    }
}

impl Location {
    /// Reads back a location [`Location`] shows; `None` for anything else.
    pub(super) fn parse(text: &str) -> Option<Location> {
        let parts: Vec<&str> = text.strip_prefix(PREFIX)?.split('.').collect();
        let size = number(parts[0])?;
        let id = |part: &str| -> Option<Option<String>> {
            if part.is_empty() {
                return Some(None);
            }
            let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
            let plain = bytes.len() <= MAX_ID && bytes.iter().all(|b| (0x21..0x7f).contains(b));
            plain
                .then(|| String::from_utf8(bytes).ok())
                .flatten()
                .map(Some)
        };
        let nz = |part: &str| {
            number(part)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|&n| n > 0)
        };
        match parts[1..] {
            [] => Some(Location {
                size,
                id: None,
                landed: None,
            }),
            [encoded] if !encoded.is_empty() => Some(Location {
                size,
                id: id(encoded)?,
                landed: None,
            }),
            [encoded, validity, uid] => Some(Location {
                size,
                id: id(encoded)?,
                landed: Some((nz(validity)?, nz(uid)?)),
            }),
            _ => None,
        }
    }
}

fn number(text: &str) -> Option<u64> {
    let digits = !text.is_empty() && text.len() <= 19 && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_shows() {
        let id = Some("<a.b@example.org>".to_string());
        for (location, shown) in [
            (
                Location {
                    size: 12,
                    id: None,
                    landed: None,
                },
                "imap.12",
            ),
            (
                Location {
                    size: 12,
                    id: id.clone(),
                    landed: None,
                },
                "imap.12.PGEuYkBleGFtcGxlLm9yZz4",
            ),
            (
                Location {
                    size: 12,
                    id: id.clone(),
                    landed: Some((7, 9)),
                },
                "imap.12.PGEuYkBleGFtcGxlLm9yZz4.7.9",
            ),
            (
                Location {
                    size: 0,
                    id: None,
                    landed: Some((7, 9)),
                },
                "imap.0..7.9",
            ),
        ] {
            assert_eq!(location.to_string(), shown);
            assert_eq!(Location::parse(shown), Some(location));
            assert!(!shown.contains(['/', ' ', '\0']));
        }
    }

    #[test]
    fn refuses_what_it_does_not_write() {
        for bad in [
            "",
            "imap.",
            "imap.x",
            "imap.-1",
            "imap.12.",
            "imap.12.!!",
            "imap.12.PGE.7",
            "imap.12.PGE.0.9",
            "imap.12.PGE.7.99999999999",
            "imap.12.PGE.7.9.1",
            "1.M1P1Q1.host",
            "imap.12.AAAA", // decodes to NUL bytes
        ] {
            assert_eq!(Location::parse(bad), None, "{bad:?}");
        }
    }
}
