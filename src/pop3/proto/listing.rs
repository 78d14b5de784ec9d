//! The server's listing of a mailbox (UIDL and LIST, RFC 1939 §7 and §5): the
//! messages it names, how they are joined by number, and the bounds that keep a
//! hostile server's endless listing from growing our memory.

use super::Error;

/// Listing lines at most in one UIDL or LIST reply: a bound on what a server
/// answering with an endless stream of well-formed lines can make us hold.
pub(crate) const MAX_LISTED: usize = 1 << 20;

/// What one UIDL or LIST reply may cost in memory: each line's text plus
/// [`LISTED_ENTRY_COST`] for the entry that holds it. 24 MiB holds some 280,000
/// messages with Dovecot's 16-character unique-ids, and keeps a whole run well
/// under 64 MiB however long a hostile server goes on.
pub(crate) const MAX_LISTING_BYTES: usize = 24 << 20;

/// What a listed message costs beyond its line's text: its entry (number, size and
/// the unique-id's string header) and the allocator's share.
pub(crate) const LISTED_ENTRY_COST: usize = 64;

/// A listing line at most: RFC 2449 §4 caps a response line at 512 octets, and a
/// UIDL line (a number and at most 70 characters) needs far less.
pub(crate) const MAX_LISTING_LINE: usize = 512;

/// A message in the server's listing: number, size and unique-id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedMessage {
    pub num: u32,
    /// As LIST counts it; 0 for a message whose size was not asked (see
    /// `Session::listing_sized`).
    pub size: u64,
    pub uid: String,
}

/// The server's listing: with unique-ids, or (RFC 1939 makes UIDL optional)
/// message numbers and sizes only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Listing {
    WithUids(Vec<ListedMessage>),
    SizesOnly(Vec<(u32, u64)>),
}

/// Counts the lines of one multi-line reply against its bounds.
#[derive(Debug)]
pub(crate) struct LineBudget {
    lines: usize,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
}

impl LineBudget {
    /// At most `max_lines` lines costing `max_bytes` in all (see
    /// [`LISTED_ENTRY_COST`]).
    pub(crate) fn new(max_lines: usize, max_bytes: usize) -> Self {
        LineBudget {
            lines: 0,
            bytes: 0,
            max_lines,
            max_bytes,
        }
    }

    /// A listing of at most `expected` lines (UIDL's count, when LIST follows it).
    pub(crate) fn listing(expected: usize) -> Self {
        Self::new(expected.min(MAX_LISTED), MAX_LISTING_BYTES)
    }

    /// Counts one more line of `len` bytes; refuses it past the bounds.
    pub(crate) fn take(&mut self, phase: &str, len: usize) -> Result<(), Error> {
        self.lines += 1;
        self.bytes = self.bytes.saturating_add(len + LISTED_ENTRY_COST);
        if self.lines > self.max_lines {
            return Err(Error::Protocol(format!(
                "the server's {phase} reply goes on past {} lines; ending the session",
                self.lines - 1
            )));
        }
        if self.bytes > self.max_bytes {
            return Err(Error::Protocol(format!(
                "the server's {phase} reply goes on past {} MiB after {} lines; ending the session",
                self.max_bytes >> 20,
                self.lines - 1
            )));
        }
        Ok(())
    }
}

/// The message number that UIDL names twice, if any: sizes are matched to
/// unique-ids by number, so it must not repeat.
pub(crate) fn repeated_number(uids: &[(u32, String)]) -> Option<u32> {
    if uids.windows(2).all(|w| w[0].0 < w[1].0) {
        return None;
    }
    let mut nums: Vec<u32> = uids.iter().map(|&(num, _)| num).collect();
    nums.sort_unstable();
    nums.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

/// Joins unique-ids and sizes by message number; they must name the same messages.
/// Unique-ids may still repeat here (see [`repeated_uids`]).
pub(crate) fn join(
    uids: Vec<(u32, String)>,
    sizes: &[(u32, u64)],
) -> Result<Vec<ListedMessage>, Error> {
    // Servers list both in the same ascending order: pair them up directly.
    let aligned = uids.len() == sizes.len()
        && uids.iter().zip(sizes).all(|(u, s)| u.0 == s.0)
        && sizes.windows(2).all(|w| w[0].0 < w[1].0);
    if aligned {
        return Ok(uids
            .into_iter()
            .zip(sizes)
            .map(|((num, uid), &(_, size))| ListedMessage { num, size, uid })
            .collect());
    }
    let mut sizes: std::collections::BTreeMap<u32, u64> = sizes.iter().copied().collect();
    let mut messages = Vec::with_capacity(uids.len());
    for (num, uid) in uids {
        let size = sizes.remove(&num).ok_or_else(|| {
            Error::Protocol(format!("UIDL names message {num}, which LIST does not"))
        })?;
        messages.push(ListedMessage { num, size, uid });
    }
    if let Some((num, _)) = sizes.first_key_value() {
        return Err(Error::Protocol(format!(
            "LIST names message {num}, which UIDL does not"
        )));
    }
    messages.sort_by_key(|m| m.num);
    Ok(messages)
}

/// Each of `uids` with its size from `sizes` (number and size, for some of the same
/// messages in the same order); the others get size 0.
pub(crate) fn with_sizes(uids: Vec<(u32, String)>, sizes: Vec<(u32, u64)>) -> Vec<ListedMessage> {
    let mut sizes = sizes.into_iter().peekable();
    uids.into_iter()
        .map(|(num, uid)| {
            let size = sizes
                .next_if(|&(n, _)| n == num)
                .map_or(0, |(_, size)| size);
            ListedMessage { num, size, uid }
        })
        .collect()
}

/// The unique-ids that occur more than once among `uids`.
pub(crate) fn repeated_uids<'a>(uids: impl Iterator<Item = &'a str>) -> foldhash::HashSet<&'a str> {
    // Sorted rather than hashed: a vector of references takes a third of the memory
    // of a set of them (a sync of 100,000 asks this at its peak, issue 22), and
    // servers list unique-ids mostly in order, which the sort finds at once.
    let mut sorted: Vec<&str> = uids.collect();
    sorted.sort_unstable();
    sorted
        .windows(2)
        .filter(|pair| pair[0] == pair[1])
        .map(|pair| pair[0])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_the_line_past_either_bound() {
        let mut lines = LineBudget::new(2, usize::MAX);
        assert!(lines.take("UIDL", 10).is_ok() && lines.take("UIDL", 10).is_ok());
        let err = lines.take("UIDL", 10).unwrap_err().to_string();
        assert!(err.contains("past 2 lines"), "{err}");
        let mut bytes = LineBudget::new(usize::MAX, 2 * LISTED_ENTRY_COST + 5);
        assert!(bytes.take("LIST", 2).is_ok() && bytes.take("LIST", 3).is_ok());
        assert!(bytes.take("LIST", 1).is_err());
    }

    #[test]
    fn a_repeated_number_is_found_in_any_order() {
        let uids = |nums: &[u32]| {
            nums.iter()
                .map(|&n| (n, format!("u{n}")))
                .collect::<Vec<_>>()
        };
        assert_eq!(repeated_number(&uids(&[1, 2, 3])), None);
        assert_eq!(repeated_number(&uids(&[3, 1, 2])), None);
        assert_eq!(repeated_number(&uids(&[2, 1, 2])), Some(2));
    }

    #[test]
    fn sizes_go_to_the_numbers_they_name_and_the_rest_get_zero() {
        let uids = vec![(1, "a".to_string()), (2, "b".into()), (3, "c".into())];
        let listed = with_sizes(uids, vec![(2, 20)]);
        let sizes: Vec<u64> = listed.iter().map(|m| m.size).collect();
        assert_eq!(sizes, [0, 20, 0]);
    }
}
