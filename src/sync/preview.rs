//! What `popfetch list` and `popfetch sync --dry-run` show: one line per message on
//! the server with its number, size, fate, date, sender and subject (headers from
//! TOP, RFC 2047 words decoded, broken charsets tolerated), or the same as JSON.

use anyhow::Result;
use serde::Serialize;

use crate::config::Account;
use crate::pop3::{Flow, Trace};
use crate::sync::connect::{self, open_session};
use crate::sync::policy::{self, Action, SessionPlan};
use crate::sync::state::{Place, UidlState};

/// One message as `list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Entry {
    pub number: u32,
    pub size: u64,
    pub uid: String,
    /// "new", "delivered", "delete", "skip"
    pub state: String,
    /// Why it will be deleted or skipped, or what happens after delivery.
    pub reason: Option<String>,
    /// The Date header in RFC 3339, in UTC with its zone ("Z"), when it parses.
    pub date: Option<String>,
    /// The Date header as sent, when it does not parse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_header: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
}

/// Lists the messages on the server of one account with what a sync would do with
/// each, changing nothing anywhere.
pub(crate) fn list_account(
    account: &Account,
    trace: Option<Trace>,
    warn: &dyn Fn(&str),
) -> Result<Vec<Entry>> {
    let state = UidlState::peek(&Place::of(account))?;
    let mut session = open_session(account, trace)?;
    let now = now();
    let listing = connect::listing(&mut session, None, warn)?;
    let probes = connect::probe(&mut session, &listing, &state, &account.policy, now, warn)?;
    let plan = policy::plan(listing, &probes, &state, &account.policy, now);
    let mut entries = entries(&plan, &state);
    let messages: Vec<(u32, u64)> = entries.iter().map(|e| (e.number, e.size)).collect();
    let mut each = entries.iter_mut();
    // In order, one entry per message asked; a server without TOP still gets its
    // list, without the header columns.
    connect::headers(&mut session, &messages, |_, head| {
        if let (Some(entry), Ok(head)) = (each.next(), head) {
            describe_headers(entry, head);
        }
        Flow::Continue
    })?;
    session.quit()?;
    Ok(entries)
}

/// The entries of a plan, without header columns.
pub(crate) fn entries(plan: &SessionPlan, known: &dyn policy::Known) -> Vec<Entry> {
    plan.messages
        .iter()
        .map(|(message, action)| {
            let delivered = !known.records(&message.uid).is_empty();
            let (state, reason) = match action {
                Action::Fetch if delivered && plan.fetch_all => {
                    ("new", Some("fetched again (fetch_all)".to_string()))
                }
                // Its unique-id was delivered, but no record proves this is the
                // message delivered (a reused unique-id, or changed headers).
                Action::Fetch if delivered => (
                    "new",
                    Some(
                        "fetched again: not the message delivered under this unique-id".to_string(),
                    ),
                ),
                Action::Fetch if plan.delete_after_delivery => {
                    ("new", Some("deleted after delivery".to_string()))
                }
                Action::Fetch => ("new", None),
                Action::Keep => ("delivered", None),
                Action::Delete(reason) => ("delete", Some(reason.to_string())),
                Action::Skip(reason) => ("skip", Some(reason.to_string())),
            };
            Entry {
                number: message.num,
                size: message.size,
                uid: message.uid.clone(),
                state: state.to_string(),
                reason,
                date: None,
                date_header: None,
                from: None,
                subject: None,
            }
        })
        .collect()
}

/// Fills the date, sender and subject from a header block.
pub(crate) fn describe_headers(entry: &mut Entry, head: &[u8]) {
    Headline::of(head).fill(entry);
}

/// What `list` shows of a message's headers: its date, sender and subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Headline {
    date: Option<String>,
    date_header: Option<String>,
    from: Option<String>,
    subject: Option<String>,
}

/// The most kept of one header's value, in characters.
const FIELD_MAX: usize = 512;

/// From:, Subject: and Date: as a header block has them, RFC 2047 words decoded
/// and printable, at most [`FIELD_MAX`] characters each; `None` for one that is
/// absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fields {
    pub from: Option<String>,
    pub subject: Option<String>,
    pub date: Option<String>,
}

impl Fields {
    /// The fields of a header block; all `None` when it does not parse.
    pub(crate) fn of(head: &[u8]) -> Fields {
        let Ok((headers, _)) = mailparse::parse_headers(head) else {
            return Fields::default();
        };
        // Bounded: a server's 60 KiB Subject is not worth keeping whole.
        let value = |name: &str| {
            headers
                .iter()
                .find(|h| h.get_key_ref().eq_ignore_ascii_case(name))
                .map(|h| printable(&h.get_value()).chars().take(FIELD_MAX).collect())
        };
        Fields {
            from: value("From"),
            subject: value("Subject"),
            date: value("Date"),
        }
    }
}

impl Headline {
    /// The headline of a header block; empty when it does not parse.
    pub(crate) fn of(head: &[u8]) -> Headline {
        let Fields {
            from,
            subject,
            date,
        } = Fields::of(head);
        let mut headline = Headline {
            subject,
            from,
            ..Headline::default()
        };
        if let Some(raw) = date {
            match mailparse::dateparse(&raw)
                .ok()
                .filter(|&t| t > 0)
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            {
                Some(t) => {
                    headline.date = Some(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                }
                None => headline.date_header = Some(raw),
            }
        }
        headline
    }

    /// Sets the entry's header columns.
    pub(crate) fn fill(self, entry: &mut Entry) {
        entry.date = self.date;
        entry.date_header = self.date_header;
        entry.from = self.from;
        entry.subject = self.subject;
    }
}

/// Decoded header text may hold anything a sender chose, escape sequences included:
/// control characters become "?" so nothing can drive the user's terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// The table `list` and `sync --dry-run` print: number, size in server octets,
/// action with its reason, date (UTC), sender and subject. Given a terminal width,
/// the sender and then the subject are cut to fit; the action and its reason never
/// are, since they say what will happen to the mail.
pub(crate) fn table(entries: &[Entry], width: Option<usize>) -> String {
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            let action = match &e.reason {
                Some(reason) => format!("{} ({reason})", e.state),
                None => e.state.clone(),
            };
            let date = match (&e.date, &e.date_header) {
                (Some(date), _) => chrono::DateTime::parse_from_rfc3339(date)
                    .map_or(date.clone(), |t| t.format("%Y-%m-%d %H:%MZ").to_string()),
                (None, Some(raw)) => clip(raw, 17),
                (None, None) => "-".to_string(),
            };
            [
                e.number.to_string(),
                human_size(e.size),
                action,
                date,
                e.from.clone().unwrap_or_else(|| "-".into()),
                e.subject.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let widest = |column: usize| {
        rows.iter()
            .map(|r| r[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (number, size, action, date) = (widest(0).max(3), widest(1).max(4), widest(2), widest(3));
    let mut from = widest(4).min(30);
    let mut subject = widest(5);
    if let Some(width) = width {
        // Fixed columns and the gaps between all six.
        let fixed = number + size + action + date + 2 * 5;
        let room = width.saturating_sub(fixed);
        if from + subject > room {
            // The subject gives way first, down to what the sender leaves it;
            // then both share what is left, the sender a third.
            subject = room.saturating_sub(from).max(room * 2 / 3);
            from = room.saturating_sub(subject);
        }
    }
    let mut out = String::new();
    for r in rows {
        let line = format!(
            "{:>number$}  {:>size$}  {:<action$}  {:<date$}  {:<from$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            clip(&r[4], from),
            clip(&r[5], subject),
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

/// 1234 → "1.2K", in powers of 1024.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["", "K", "M", "G"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}")
    } else {
        format!("{size:.1}{}", UNITS[unit])
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            number: 1,
            size: 10,
            uid: "u".into(),
            state: "new".into(),
            reason: None,
            date: None,
            date_header: None,
            from: None,
            subject: None,
        }
    }

    #[test]
    fn the_table_fits_the_terminal_and_never_cuts_the_reason() {
        let mut e = entry();
        e.state = "skip".into();
        e.reason = Some("larger than max_size (10M)".into());
        e.date = Some("2003-07-01T08:52:37Z".into());
        e.from = Some("A Very Long Sender Name <somebody@example.org>".into());
        e.subject = Some("s".repeat(200));
        for width in [80, 120] {
            let table = table(std::slice::from_ref(&e), Some(width));
            let line = table.lines().next().unwrap();
            assert!(line.contains("skip (larger than max_size (10M))"), "{line}");
            assert!(line.contains("2003-07-01 08:52Z"), "{line}");
            assert!(line.chars().count() <= width, "{width}: {line}");
        }
        let wide = table(std::slice::from_ref(&e), None);
        assert!(wide.contains(&"s".repeat(200)), "no terminal, nothing cut");
    }

    #[test]
    fn encoded_words_are_decoded() {
        let mut e = entry();
        describe_headers(
            &mut e,
            b"Subject: =?UTF-8?B?w6l0w6k=?= =?ISO-8859-1?Q?caf=E9?=\nFrom: =?utf-8?q?J=C3=B6rg?= <j@x>\nDate: Tue, 1 Jul 2003 10:52:37 +0200\n\n",
        );
        assert_eq!(e.subject.as_deref(), Some("étécafé"));
        assert_eq!(e.from.as_deref(), Some("Jörg <j@x>"));
        assert_eq!(e.date.as_deref(), Some("2003-07-01T08:52:37Z"));
    }

    #[test]
    fn broken_and_hostile_headers_never_crash() {
        let mut e = entry();
        describe_headers(
            &mut e,
            b"Subject: =?x-unknown?B?////?= \x1b[31mred\xff\nDate: yesterday-ish\n\n",
        );
        let subject = e.subject.unwrap();
        assert!(!subject.contains('\x1b'), "{subject:?}");
        assert_eq!(e.date, None);
        assert_eq!(e.date_header.as_deref(), Some("yesterday-ish"));
        let mut e = entry();
        describe_headers(&mut e, b"");
        assert_eq!(e.subject, None);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(999), "999");
        assert_eq!(human_size(1536), "1.5K");
        assert_eq!(human_size(10 << 20), "10.0M");
    }
}
