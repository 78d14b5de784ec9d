//! `popfetch import-state`: reads the UID lists of fetchmail (`.fetchids`), mpop (its
//! uidls file) and getmail (`oldmail-HOST-PORT-USER`) and records those messages as
//! delivered, so that switching tools does not download a mailbox again.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::config::Account;
use crate::sync::lock::AccountLock;
use crate::sync::state::{Ledger, Place, UidlState};

pub(crate) use crate::migrate::Tool;

/// Records every UID in `path` as delivered for `account`; returns how many were new.
/// `key` (USER@HOST) takes another mailbox's list from a file that holds several.
pub(crate) fn import(
    account: &Account,
    tool: Tool,
    key: Option<&str>,
    path: &Path,
) -> Result<usize> {
    let (user, host) = match key {
        Some(key) => key
            .rsplit_once('@')
            .filter(|(u, h)| !u.is_empty() && !h.is_empty())
            .with_context(|| format!("--key {key:?}: give it as USER@HOST"))?,
        None => (account.user.as_str(), account.host.as_str()),
    };
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let uids = uids(tool, &text, user, host).with_context(|| {
        format!(
            "{} is not a {tool} UID list for {user}@{host}",
            path.display()
        )
    })?;
    crate::sys::durable::create_dir_all(&account.state_dir)
        .with_context(|| format!("cannot create {}", account.state_dir.display()))?;
    let _lock = AccountLock::acquire(&Place::of(account).lock())?;
    let located = account.policy.until_deleted_locally;
    let mut state = UidlState::open_located(&Place::of(account), located)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut added = 0;
    for uid in uids {
        if !state.is_delivered(&uid) {
            // Another tool's word, not a session of this mailbox: it keeps the
            // message from being fetched, but never grounds a DELE.
            state.record_adopted(&uid, now)?;
            added += 1;
        }
    }
    state.sync()?;
    Ok(added)
}

/// The UIDs of `user` at `host` in a tool's file.
pub(crate) fn uids(tool: Tool, text: &[u8], user: &str, host: &str) -> Result<Vec<String>> {
    let text = String::from_utf8_lossy(text);
    let uids: Vec<String> = match tool {
        // fetchmail: "user@host UID" per line.
        Tool::Fetchmail => {
            let owner = format!("{user}@{host}");
            text.lines()
                .filter_map(|line| line.split_once(' '))
                .filter(|(who, _)| who.eq_ignore_ascii_case(&owner))
                .map(|(_, uid)| uid.trim().to_string())
                .collect()
        }
        // mpop: "#" comments; " COUNT HOST USER" opens a list of COUNT UIDs.
        Tool::Mpop => {
            let mut out = Vec::new();
            let mut lines = text.lines().filter(|l| !l.starts_with('#'));
            while let Some(line) = lines.next() {
                let Some(header) = line.strip_prefix(' ') else {
                    bail!("unexpected line {line:?}");
                };
                let mut words = header.split(' ');
                let count: usize = words
                    .next()
                    .and_then(|n| n.parse().ok())
                    .context("bad list header")?;
                let (list_host, list_user) =
                    (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let list: Vec<&str> = lines.by_ref().take(count).collect();
                if list_host.eq_ignore_ascii_case(host) && list_user == user {
                    out.extend(list.iter().map(|uid| uid.to_string()));
                }
            }
            out
        }
        // getmail: "UID\0TIMESTAMP" per line; the file is already per account.
        Tool::Getmail => text
            .lines()
            .filter_map(|line| line.split('\0').next())
            .filter(|uid| !uid.is_empty())
            .map(str::to_string)
            .collect(),
    };
    if let Some(bad) = uids
        .iter()
        .find(|u| u.is_empty() || !u.bytes().all(|b| (0x21..=0x7e).contains(&b)))
    {
        bail!("{bad:?} is not a POP3 unique-id");
    }
    if uids.is_empty() {
        let held = owners(tool, &text);
        if held.is_empty() {
            bail!("it holds no UIDs for this account");
        }
        bail!(
            "it holds no UIDs for this account, only for {}; to take one of those, add --key USER@HOST",
            held.join(", ")
        );
    }
    Ok(uids)
}

/// The mailboxes (user@host) a fetchmail or mpop file holds lists for, sorted and
/// made printable; getmail keeps one file per mailbox.
fn owners(tool: Tool, text: &str) -> Vec<String> {
    let mut owners: Vec<String> = match tool {
        Tool::Fetchmail => text
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(who, _)| who.to_string())
            .collect(),
        Tool::Mpop => text
            .lines()
            .filter_map(|line| line.strip_prefix(' '))
            .filter_map(|header| {
                let mut words = header.split(' ').skip(1);
                let host = words.next()?;
                Some(format!("{}@{host}", words.next()?))
            })
            .collect(),
        Tool::Getmail => Vec::new(),
    };
    owners.sort();
    owners.dedup();
    owners
        .into_iter()
        .map(|o| {
            o.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_formats() {
        let fetchmail =
            b"alice@127.0.0.1 000000016b0266ef\nbob@127.0.0.1 other\nalice@127.0.0.1 2\n";
        assert_eq!(
            uids(Tool::Fetchmail, fetchmail, "alice", "127.0.0.1").unwrap(),
            ["000000016b0266ef", "2"]
        );
        let mpop = b"# This file was generated by mpop version 1.4.18.\n#\n 1 other.example alice\nx\n 2 127.0.0.1 alice\nu1\nu2\n";
        assert_eq!(
            uids(Tool::Mpop, mpop, "alice", "127.0.0.1").unwrap(),
            ["u1", "u2"]
        );
        let getmail = b"000000016b0266ef\x001795322673\nabc\x001\n";
        assert_eq!(
            uids(Tool::Getmail, getmail, "alice", "h").unwrap(),
            ["000000016b0266ef", "abc"]
        );
    }

    #[test]
    fn a_foreign_file_names_the_mailboxes_it_holds() {
        let err = uids(Tool::Fetchmail, b"bob@h x\ncarol@k y\n", "alice", "h").unwrap_err();
        assert!(
            err.to_string().contains("only for bob@h, carol@k")
                && err.to_string().contains("--key"),
            "{err}"
        );
        let mpop = b" 1 other.example bob\nx\n";
        let err = uids(Tool::Mpop, mpop, "alice", "h").unwrap_err();
        assert!(err.to_string().contains("bob@other.example"), "{err}");
        assert_eq!(Tool::Mpop.to_string(), "mpop");
    }

    #[test]
    fn foreign_or_empty_files_are_refused() {
        assert!(uids(Tool::Fetchmail, b"bob@h x\n", "alice", "h").is_err());
        assert!(uids(Tool::Mpop, b"garbage\n", "alice", "h").is_err());
        assert!(uids(Tool::Getmail, b"a b\x001\n", "alice", "h").is_err());
    }
}
