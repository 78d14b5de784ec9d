//! The account's rules about what to fetch and what to leave on the server, as the
//! configuration resolves them (`keep`, `delete_after`, `fetch_all`, `max_size`,
//! `max_messages`), and the parsers of their duration and size values.

use std::time::Duration;

/// What to do with a message that is over `max_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SizeAction {
    /// Leave it on the server, unfetched.
    #[default]
    Skip,
    /// Delete it from the server without fetching it.
    Delete,
}

/// The account's rules about what to fetch and what to leave on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Policy {
    /// Leave messages on the server after delivering them.
    pub keep: bool,
    /// With `keep`, delete each once its file is gone from the Maildir.
    pub until_deleted_locally: bool,
    /// With `keep`, delete messages first seen longer ago than this.
    pub delete_after: Option<Duration>,
    /// Fetch messages already delivered too (to re-archive a mailbox).
    pub fetch_all: bool,
    /// Messages larger than this (in octets, as LIST counts them) are not fetched.
    pub max_size: Option<u64>,
    pub max_size_action: SizeAction,
    /// Fetch at most this many messages per run, oldest first.
    pub max_messages: Option<usize>,
    /// With `keep`: how long a mailbox found unchanged may go without a full
    /// listing (see `sync::glance`).
    pub full_listing: Duration,
}

/// Splits "30 d" or "30d" into the number and its unit (trimmed, maybe empty).
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit.trim()))
}

/// Parses "30d", "12h", "90m", "45s", "2w". The unit is required: getmail's
/// `delete_after` counts days, so a bare "30" would mean different things to
/// different readers.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = number_and_unit(text)?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    number.checked_mul(seconds).map(Duration::from_secs)
}

/// Parses "10M", "512K", "1G", "2000" (bytes; K, M, G are powers of 1024).
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let (number, unit) = number_and_unit(text)?;
    let factor = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" => 1 << 10,
        "M" | "MB" => 1 << 20,
        "G" | "GB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        const DAY: u64 = 86_400;
        assert_eq!(parse_duration("30d"), Some(Duration::from_secs(30 * DAY)));
        assert_eq!(parse_duration("2w"), Some(Duration::from_secs(14 * DAY)));
        assert_eq!(parse_duration("90"), None, "a bare number has no unit");
        assert_eq!(parse_duration("5y"), None);
        assert_eq!(parse_duration("d"), None);
        assert_eq!(parse_size("10M"), Some(10 << 20));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("big"), None);
    }
}
