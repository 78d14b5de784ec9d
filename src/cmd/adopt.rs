//! `popfetch adopt ACCOUNT (--all | --before DATE)`: records the messages on
//! the server as delivered without downloading them, for a mailbox already read
//! elsewhere, so that the first sync fetches only what comes after. What it
//! records are adopted records: they keep a message from being fetched, and never
//! ground a DELE (see [`crate::sync::state::Place`]).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Result};

use crate::config::Account;
use crate::pop3::{Flow, ListedMessage, Trace};
use crate::sync::connect;
use crate::sync::lock::AccountLock;
use crate::sync::policy::Known;
use crate::sync::preview::{human_size, Fields};
use crate::sync::state::{Ledger, Place, UidlState};

/// Which messages to adopt.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Which {
    All,
    /// Those whose Date: is before this (Unix seconds).
    Before(i64),
}

/// How to go about it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asked {
    pub which: Which,
    /// Record without asking.
    pub yes: bool,
    /// Show, record nothing.
    pub dry_run: bool,
}

/// What the server holds, as adopt sorts it.
#[derive(Debug, Default)]
struct Survey {
    /// To record: unique-id and listed size.
    chosen: Vec<(String, u64)>,
    /// Dated on or after `--before`.
    newer: usize,
    /// Without a Date: that parses: left for the sync to fetch.
    undated: usize,
    /// Under a unique-id the listing repeats: left to the sync, which tells
    /// such messages apart.
    repeated: usize,
    /// Already in the state.
    known: usize,
}

/// Reads `--before`: a day (`2024-06-01`, midnight UTC) or an RFC 3339 time.
pub(crate) fn parse_before(text: &str) -> Result<i64, String> {
    if let Ok(day) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_time(chrono::NaiveTime::MIN).and_utc().timestamp());
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp())
        .map_err(|_| format!("{text:?} is not a day (2024-06-01) or an RFC 3339 time"))
}

/// Adopts the messages of `account` that `asked` picks; returns how many were
/// recorded. Holds the account's lock throughout, so no sync fetches meanwhile.
pub(crate) fn adopt(
    account: &Account,
    asked: Asked,
    trace: Option<Trace>,
    out: &mut dyn Write,
) -> Result<usize> {
    crate::sys::durable::create_dir_all(&account.state_dir)?;
    let place = Place::of(account);
    let _lock = AccountLock::acquire(&place.lock())?;
    // A dry run only reads the state: nothing created, compacted or adopted.
    let located = account.policy.until_deleted_locally;
    let mut state = (!asked.dry_run)
        .then(|| UidlState::open_located(&place, located))
        .transpose()?;
    let peeked = asked.dry_run.then(|| UidlState::peek(&place)).transpose()?;
    let known: &dyn Known = match (&state, &peeked) {
        (Some(state), _) => state,
        (None, Some(peeked)) => peeked,
        (None, None) => unreachable!("one of them is read"),
    };
    let mut session = connect::open_session(account, trace)?;
    let listing = connect::listing(&mut session, None, &|w| {
        eprintln!("popfetch: account \"{}\": {w}", account.name);
    })?;
    let survey = survey(&mut session, listing, known, asked.which)?;
    session.quit()?;
    let name = &account.name;
    let bytes: u64 = survey.chosen.iter().map(|(_, size)| size).sum();
    let which = match asked.which {
        Which::All => String::new(),
        Which::Before(t) => format!(
            ", dated before {}",
            chrono::DateTime::from_timestamp(t, 0).map_or_else(
                || t.to_string(),
                |t| t.format("%Y-%m-%d %H:%M UTC").to_string()
            )
        ),
    };
    writeln!(
        out,
        "{name}: {} message(s) ({}){which} to record as delivered without downloading them",
        survey.chosen.len(),
        human_size(bytes)
    )?;
    let mut rest = Vec::new();
    if survey.newer > 0 {
        rest.push(format!("{} newer", survey.newer));
    }
    if survey.undated > 0 {
        rest.push(format!("{} without a readable Date:", survey.undated));
    }
    if survey.repeated > 0 {
        rest.push(format!(
            "{} under unique-ids the server repeats",
            survey.repeated
        ));
    }
    if !rest.is_empty() {
        writeln!(
            out,
            "{name}: {} stay new: the next sync fetches them",
            rest.join(" and ")
        )?;
    }
    if survey.known > 0 {
        writeln!(out, "{name}: {} already known", survey.known)?;
    }
    if survey.chosen.is_empty() {
        return Ok(0);
    }
    if asked.dry_run {
        writeln!(out, "{name}: dry run, nothing recorded")?;
        return Ok(0);
    }
    if !asked.yes {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            bail!(NoAnswer);
        }
        eprint!("Record them? [y/N]: ");
        let mut answer = String::new();
        stdin.lock().read_line(&mut answer)?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            writeln!(out, "{name}: nothing recorded")?;
            return Ok(0);
        }
    }
    let Some(state) = state.as_mut() else {
        return Ok(0);
    };
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    for (uid, _) in &survey.chosen {
        state.record_adopted(uid, now)?;
    }
    state.sync()?;
    writeln!(
        out,
        "{name}: recorded {} message(s); the next sync fetches only the others",
        survey.chosen.len()
    )?;
    Ok(survey.chosen.len())
}

/// Asked at no terminal, without `--yes`.
#[derive(Debug, thiserror::Error)]
#[error("adopt asks before it records, and there is no terminal to ask at; add --yes to record without asking, or --dry-run to only see")]
pub(crate) struct NoAnswer;

/// Sorts the listing: messages already known; with `--before`, each new one by
/// its Date: from `TOP n 0`, pipelined. A unique-id the listing repeats is
/// left to the sync, which tells such messages apart.
fn survey<S: crate::pop3::Wire>(
    session: &mut crate::pop3::Session<S>,
    listing: Vec<ListedMessage>,
    known: &dyn Known,
    which: Which,
) -> Result<Survey> {
    let repeated: foldhash::HashSet<&str> =
        crate::pop3::repeated_uids(listing.iter().map(|m| m.uid.as_str()))
            .into_iter()
            .collect();
    let mut survey = Survey::default();
    let mut new = Vec::new();
    for message in &listing {
        if !known.records(&message.uid).is_empty() {
            survey.known += 1;
        } else if repeated.contains(message.uid.as_str()) {
            survey.repeated += 1;
        } else {
            new.push(message);
        }
    }
    let before = match which {
        Which::All => {
            survey.chosen = new.iter().map(|m| (m.uid.clone(), m.size)).collect();
            return Ok(survey);
        }
        Which::Before(before) => before,
    };
    let asked: Vec<(u32, u64)> = new.iter().map(|m| (m.num, m.size)).collect();
    let mut each = new.iter();
    connect::headers(session, &asked, |_, head| {
        let Some(message) = each.next() else {
            return Flow::Stop;
        };
        let date = head.ok().and_then(|head| {
            let raw = Fields::of(head).date?;
            mailparse::dateparse(&raw).ok().filter(|&t| t > 0)
        });
        match date {
            Some(t) if t < before => survey.chosen.push((message.uid.clone(), message.size)),
            Some(_) => survey.newer += 1,
            None => survey.undated += 1,
        }
        Flow::Continue
    })?;
    Ok(survey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_takes_a_day_or_a_time() {
        assert_eq!(parse_before("1970-01-02"), Ok(86_400));
        assert_eq!(parse_before("1970-01-01T01:00:00+01:00"), Ok(0));
        assert!(parse_before("yesterday")
            .unwrap_err()
            .contains("is not a day"));
    }
}
